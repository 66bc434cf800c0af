"""An LLM judge for capability analysis, following the TRACE paper's protocol.

1. **Discovery.** :meth:`JudgeLabeler.discover` shows the judge a sample of trajectories,
   failures first, and asks for at most N snake_case capabilities with descriptions.
2. **Labelling.** Every (trajectory, capability) pair is labelled in K independent runs.
3. **Aggregation.** The runs are majority-voted. Ties go to the less severe label
   (NA < PRESENT < LACKING), so a split judge does not invent a lack. Replies that cannot
   be parsed abstain.

The judge is any ``chat(messages) -> str``. :class:`HFChat` wraps a local transformers
model; :class:`OpenAIChat` calls any OpenAI-compatible ``/chat/completions`` endpoint
(vLLM, TGI, a hosted API). The prompts are files in ``trace_agents/prompts/``, with
``$name`` placeholders.

>>> judge = JudgeLabeler(OpenAIChat("http://localhost:8000/v1", model="Qwen/Qwen3-8B"), runs=3)
>>> caps = judge.discover(records, n=6)
>>> report = analyze(records, labeler=judge, capabilities=caps)
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from string import Template
from typing import Any

from trace_agents.analysis import Label

Chat = Callable[[list[dict[str, str]]], str]
_SNAKE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
_LABEL = re.compile(r"LABEL:\s*(NA|PRESENT|LACKING)\b", re.IGNORECASE)
_EVIDENCE = re.compile(r"EVIDENCE:\s*(.+)", re.IGNORECASE)
_SEVERITY = {Label.NA: 0, Label.PRESENT: 1, Label.LACKING: 2}


def prompt(name: str) -> Template:
    """The packaged prompt ``trace_agents/prompts/<name>.md``."""
    return Template(resources.files("trace_agents").joinpath("prompts", f"{name}.md").read_text(encoding="utf-8"))


def render_trajectory(record: Mapping[str, Any], max_chars: int = 6000) -> str:
    """A trajectory as numbered env/agent lines (what the agent saw, then did), the middle elided past ``max_chars``."""
    lines = []
    for i, step in enumerate(record.get("steps", [])):
        lines.append(f"[{i}] ENV: {step.get('obs', '')}")
        lines.append(f"[{i}] AGENT: {step.get('action', '')}")
    text = "\n".join(lines)
    if len(text) > max_chars:
        half = max_chars // 2
        text = text[:half] + "\n[... elided ...]\n" + text[-half:]
    return text


class JudgeLabeler:
    """A :class:`trace_agents.analysis.Labeler` backed by a chat model."""

    def __init__(
        self, chat: Chat, capabilities: Mapping[str, str] | None = None, runs: int = 3, max_chars: int = 6000
    ) -> None:
        if runs < 1:
            raise ValueError(f"runs must be >= 1, got {runs}")
        if runs > 1 and getattr(chat, "temperature", None) == 0:
            import warnings

            warnings.warn(
                f"{runs} labelling runs of a greedy judge (temperature 0) repeat one answer: the vote "
                f"means nothing; sample (temperature > 0) or use runs=1",
                stacklevel=2,
            )
        self.chat = chat
        self.capabilities: dict[str, str] = dict(capabilities or {})
        self.runs = runs
        self.max_chars = max_chars

    def discover(self, records: Sequence[Mapping[str, Any]], n: int = 6, sample: int = 8) -> dict[str, str]:
        """Ask the judge for at most ``n`` capabilities; they become this labeler's definitions."""
        if not records:
            raise ValueError("discovery needs trajectories")
        shown = sorted(records, key=lambda r: bool(r.get("success")))[:sample]
        body = "\n\n".join(
            f"## Episode {i} ({'success' if r.get('success') else 'failure'})\n"
            + render_trajectory(r, self.max_chars // max(len(shown), 1) * 2)
            for i, r in enumerate(shown)
        )
        reply = self.chat([{"role": "user", "content": prompt("discover").substitute(n=n, trajectories=body)}])
        found = parse_capabilities(reply)[:n]
        if not found:
            raise ValueError(f"the judge proposed no capability; its reply began: {reply[:200]!r}")
        self.capabilities.update(found)
        return dict(found)

    def label(self, trajectory: Mapping[str, Any], capability: str) -> tuple[Label, str]:
        if capability not in self.capabilities:
            raise ValueError(f"no definition for {capability!r}; call discover() or pass capabilities=")
        text = prompt("label").substitute(
            capability=capability,
            description=self.capabilities[capability],
            outcome="success" if trajectory.get("success") else "failure",
            trajectory=render_trajectory(trajectory, self.max_chars),
        )
        votes: list[tuple[Label, str]] = []
        for _ in range(self.runs):
            parsed = parse_label(self.chat([{"role": "user", "content": text}]))
            if parsed is not None:
                votes.append(parsed)
        return aggregate(votes)


def parse_capabilities(reply: str) -> list[tuple[str, str]]:
    """``[(name, description)]`` from the judge's JSON list (the first ``[...]`` in the reply)."""
    start, end = reply.find("["), reply.rfind("]")
    if start < 0 or end <= start:
        return []
    try:
        items = json.loads(reply[start : end + 1])
    except ValueError:
        return []
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Mapping):
            name, desc = str(item.get("name", "")).strip(), str(item.get("description", "")).strip()
            if _SNAKE.match(name) and desc and name not in dict(out):
                out.append((name, desc))
    return out


def parse_label(reply: str) -> tuple[Label, str] | None:
    """``(label, evidence)`` from a ``LABEL:``/``EVIDENCE:`` reply, or None when there is no label."""
    m = _LABEL.search(reply)
    if m is None:
        return None
    ev = _EVIDENCE.search(reply)
    return Label(m.group(1).upper()), (ev.group(1).strip() if ev else "")


def aggregate(votes: Sequence[tuple[Label, str]]) -> tuple[Label, str]:
    """Majority label; ties go to the less severe one; the evidence of its first vote."""
    if not votes:
        return Label.NA, "the judge gave no parseable label"
    counts = Counter(label for label, _ in votes)
    top = max(counts.values())
    winner = min((lab for lab, c in counts.items() if c == top), key=_SEVERITY.__getitem__)
    evidence = next(e for lab, e in votes if lab is winner)
    return winner, f"{counts[winner]}/{len(votes)} runs: {evidence}"


class HFChat:
    """A local transformers chat model as a judge (greedy unless ``temperature`` > 0)."""

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int = 256, temperature: float = 0.0) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.temperature = max_new_tokens, temperature

    def __call__(self, messages: list[dict[str, str]]) -> str:
        import torch

        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            out = self.model.generate(
                **{k: v.to(device) for k, v in ids.items()},
                max_new_tokens=self.max_new_tokens,
                do_sample=self.temperature > 0,
                **({"temperature": self.temperature} if self.temperature > 0 else {}),
            )
        return self.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


class OpenAIChat:
    """An OpenAI-compatible endpoint: ``POST {base_url}/chat/completions``; the key from ``$OPENAI_API_KEY``.

    Args:
        base_url: The server's OpenAI-compatible base URL, ending in ``/v1``.
        model: The served model's name.
        api_key: The bearer key; None reads ``$OPENAI_API_KEY``, and ``""`` sends no key.
        temperature: Sampling temperature, sent as is (0: greedy).
        max_tokens: The most tokens of one answer.
        timeout: Seconds to wait for one response.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 256,
        timeout: float = 60.0,
    ) -> None:
        self.base_url, self.model, self.api_key = base_url, model, api_key
        self.temperature, self.max_tokens, self.timeout = temperature, max_tokens, timeout

    def __call__(self, messages: list[dict[str, str]]) -> str:
        from trace_agents.endpoint import chat_completion

        body = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        return str(chat_completion(self.base_url, body, self.api_key, self.timeout).get("content") or "")
