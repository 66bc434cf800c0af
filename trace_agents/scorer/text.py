"""Texts the scorer embeds: ids masked so that texts recur, and a cache so each is encoded once.

User, order and item ids change every episode, so a cache keyed on raw strings would miss
on almost every step. :func:`mask` replaces every run of digits with ``0``: the candidate
``get_order_details(#W1783950)`` becomes ``get_order_details(#W0)`` in every episode, and
the ids' *relations* (where else they appear) reach the network as numbers instead
(:mod:`trace_agents.scorer.features`).

:class:`EmbeddingCache` maps a masked text to its all-MiniLM-L6-v2 vector. It is bounded
(least recently used texts go first) and can be saved as safetensors plus a JSON list of
its texts, never as a pickle.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_DIGITS = re.compile(r"\d+")
_WORDS = re.compile(r"\w+|[^\w\s]")
MAX_CHARS = 600  # longer texts (whole records) are cut: MiniLM reads 256 tokens at most anyway


def mask(text: str, max_chars: int = MAX_CHARS) -> str:
    """``text`` with every run of digits replaced by ``0`` and cut to ``max_chars``."""
    return _DIGITS.sub("0", text[: max_chars * 2])[:max_chars]


class HashingEmbedder:
    """A deterministic bag-of-words embedder: each word adds a fixed random vector (no model, no download).

    For tests and for machines without the encoder package; it knows no synonyms, so the
    pretrained encoder is the default everywhere else.
    """

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.name = f"hashing-{dim}"
        self._words: dict[str, Any] = {}

    def _word(self, word: str) -> Any:
        import hashlib

        import torch

        v = self._words.get(word)
        if v is None:
            seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            v = self._words[word] = torch.randn(self.dim, generator=torch.Generator().manual_seed(seed))
        return v

    def __call__(self, texts: Sequence[str]) -> Any:
        import torch

        out = torch.zeros(len(texts), self.dim)
        for i, text in enumerate(texts):
            for word in _WORDS.findall(text.lower()):
                out[i] += self._word(word)
            out[i] /= max(float(out[i].norm()), 1e-6)
        return out


class EmbeddingCache:
    """A bounded text -> vector cache in front of an embedding function.

    ``embed(texts)`` returns a ``(len(texts), dim)`` float tensor. :meth:`lookup` encodes
    only the texts it has not seen, in one call, and returns the rows of all of them.
    """

    def __init__(
        self,
        embed: Callable[[Sequence[str]], Any],
        max_items: int = 200_000,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.embed = embed
        self.max_items = max_items
        self.path = Path(path) if path is not None else None
        self._rows: OrderedDict[str, Any] = OrderedDict()
        self.hits = self.misses = 0
        if self.path is not None and (self.path / "texts.json").exists():
            self.load(self.path)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, text: str) -> bool:
        return text in self._rows

    @property
    def hit_rate(self) -> float:
        """Share of looked-up texts that were already cached."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def lookup(self, texts: Sequence[str]) -> Any:
        """``(len(texts), dim)`` vectors, encoding each new distinct text once."""
        import torch

        rows = self._rows
        new = [t for t in dict.fromkeys(texts) if t not in rows]
        self.misses += len(new)
        self.hits += len(texts) - len(new)
        if new:
            new.sort(key=len)  # similar lengths batch together: less padding
            vectors = self.embed(new).detach().to("cpu", torch.float32)
            for t, v in zip(new, vectors, strict=True):
                rows[t] = v
        out = []
        for t in texts:
            rows.move_to_end(t)
            out.append(rows[t])
        while len(rows) > self.max_items:
            rows.popitem(last=False)
        return torch.stack(out) if out else torch.zeros(0)

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write ``texts.json`` and ``vectors.safetensors`` under ``path`` (default: the cache's own)."""
        import torch
        from safetensors.torch import save_file

        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no path: pass one, or build the cache with path=")
        target.mkdir(parents=True, exist_ok=True)
        texts = list(self._rows)
        vectors = torch.stack([self._rows[t] for t in texts]) if texts else torch.zeros(0, 0)
        tmp = target / "vectors.safetensors.tmp"
        save_file({"vectors": vectors.contiguous()}, str(tmp))
        os.replace(tmp, target / "vectors.safetensors")
        tmp_json = target / "texts.json.tmp"
        tmp_json.write_text(json.dumps(texts), encoding="utf-8")
        os.replace(tmp_json, target / "texts.json")
        return target

    def load(self, path: str | os.PathLike[str]) -> int:
        """Add the texts saved under ``path``; returns how many. A torn or mismatched pair is ignored."""
        from safetensors.torch import load_file

        path = Path(path)
        try:
            texts = json.loads((path / "texts.json").read_text(encoding="utf-8"))
            vectors = load_file(str(path / "vectors.safetensors"))["vectors"]
        except (OSError, ValueError, KeyError):
            return 0
        if not isinstance(texts, list) or len(texts) != len(vectors):
            return 0
        for t, v in zip(texts, vectors, strict=True):
            self._rows[t] = v
        return len(texts)
