"""The GEPA baseline: reflective evolution of the agent's system prompt, with the real ``gepa`` library.

>>> result = run_gepa(policy, train_tasks, budget=200, reflection_lm=LocalReflection(model, tokenizer))
>>> result["best_prompt"], result["rollouts_used"]

:class:`EnvPromptAdapter` is GEPA's ``GEPAAdapter`` for our envs. A candidate is
``{"system_prompt": text}``; :meth:`~EnvPromptAdapter.evaluate` plays each task (an
``(env_id, seed)`` pair) with :class:`~trace_agents.policy.HFPolicy` carrying that prompt
before the env's system message, and scores it by the episode's return. The reflective
dataset holds the failed (or lowest-scoring) episodes: the task, the agent's actions, and
feedback written from the env's reward components and annotations (reads it skipped,
format errors, requests left unaddressed).

Budget: GEPA counts *metric calls*, one per evaluated task, which here is one env
episode, and the adapter counts the episodes it really ran; that count is what the
comparison charges. GEPA checks its ``max_metric_calls`` only between iterations, and an
iteration scores two minibatches (the current prompt and the proposed one) plus, when the
proposal wins, every validation task: up to ``2 * minibatch + len(tasks)`` episodes. So
:func:`run_gepa` gives GEPA the budget less that much (plus one), and a run never goes past
the budget, like the GRPO baselines (one proposal per iteration, no merges). It may end up
to that much under it.

The reflection LM is any ``messages -> text`` callable: :class:`LocalReflection` runs the
same local model (a tiny model cannot reflect usefully: its proposals are rarely better
prompts, and the report says so), and :class:`trace_agents.judge.OpenAIChat` reaches any
OpenAI-compatible endpoint for users who have a real model.

GEPA can persist its state in a ``run_dir``, but it does so with pickle; this project
never unpickles files, so the GEPA stage is not resumed mid-way: an interrupted GEPA
stage starts over, and its finished result is saved as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from trace_agents.rollout import rollout

COMPONENT = "system_prompt"
SEED_PROMPT = "You are a careful customer-support agent. Follow the store policy and use the tools."
Chat = Callable[[list[dict[str, str]]], str]


def _require_gepa() -> Any:
    try:
        import gepa
    except ImportError:
        raise ImportError("the GEPA baseline needs the gepa library: pip install 'trace-rl[gepa]'") from None
    return gepa


def feedback(record: Mapping[str, Any]) -> str:
    """What went wrong in one episode, in words, from its return, components and annotations."""
    from trace_envs.reward import COMPONENTS

    parts = [f"The episode {'succeeded' if record['success'] else 'failed'} with return {record['return']:.2f}."]
    comps = {k: v for k, v in sorted(record.get("return_components", {}).items()) if isinstance(v, (int, float))}
    # The shaped components (format_error, turn_cost) are penalties: full marks is 0, not 1.
    penalty = {k for k in comps if k in COMPONENTS and COMPONENTS[k].shaped}
    weak = [k for k, v in comps.items() if k not in penalty and v < 1]
    if weak:
        parts.append("Reward components below full marks: " + ", ".join(f"{k}={comps[k]:.2f}" for k in weak) + ".")
    paid = [k for k in sorted(penalty) if comps[k] > 0]
    if paid:
        parts.append("Penalties paid (0 is none): " + ", ".join(f"{k}={comps[k]:.2f}" for k in paid) + ".")
    notes = record.get("annotations", {})
    for key in ("missing_reads", "requests_unaddressed", "wrong_records", "format_errors"):
        value = notes.get(key)
        if value:
            parts.append(f"{key.replace('_', ' ')}: {value}.")
    if notes.get("preconditions_checked") is False:
        parts.append("It acted without checking the preconditions first.")
    errors = [s["parse_error"] for s in record.get("steps", []) if s.get("parse_error")]
    if errors:
        parts.append(f"{len(errors)} action(s) could not be parsed, e.g.: {errors[0][:160]}")
    return " ".join(parts)


def transcript(record: Mapping[str, Any], max_chars: int = 1200) -> str:
    """The agent's actions, one per line, cut to ``max_chars``."""
    text = "\n".join(f"- {s['action'][:240]}" for s in record.get("steps", []))
    return text if len(text) <= max_chars else text[:max_chars] + "\n..."


class EnvPromptAdapter:
    """GEPA's adapter over the project's envs (see the module docstring)."""

    # GEPA reads this attribute: None means "use GEPA's own reflective proposer".
    propose_new_texts = None

    def __init__(
        self, policy: Any, batch_size: int = 16, max_examples: int = 3, env_kwargs: Mapping[str, Any] | None = None
    ) -> None:
        if not hasattr(policy, "system_prompt"):
            raise TypeError("the GEPA baseline needs a policy with a system_prompt attribute (HFPolicy)")
        self.policy, self.batch_size, self.max_examples = policy, batch_size, max_examples
        self.env_kwargs = dict(env_kwargs or {})
        self.rollouts = 0

    def evaluate(self, batch: list[tuple[str, int]], candidate: dict[str, str], capture_traces: bool = False) -> Any:
        _require_gepa()
        from gepa.core.adapter import EvaluationBatch

        self.policy.system_prompt = candidate[COMPONENT]
        self.policy.forget()
        records = []
        # GEPA may ask for one task twice in a batch; each asks for its own episode.
        for chunk in _distinct_chunks(batch):
            records += rollout(
                self.policy, chunk, None, batch_size=self.batch_size, progress=False, env_kwargs=self.env_kwargs
            ).records
        self.rollouts += len(records)
        by_pair: dict[tuple[str, int], list[Any]] = {}
        for r in records:
            by_pair.setdefault((r["env_id"], r["seed"]), []).append(r)
        ordered = [by_pair[(e, int(s))].pop(0) for e, s in batch]
        scores = [float(r["return"]) for r in ordered]
        outputs = [{"success": bool(r["success"]), "return": float(r["return"])} for r in ordered]
        return EvaluationBatch(outputs=outputs, scores=scores, trajectories=ordered if capture_traces else None)

    def make_reflective_dataset(
        self, candidate: dict[str, str], eval_batch: Any, components_to_update: list[str]
    ) -> dict[str, list[dict[str, Any]]]:
        records = list(eval_batch.trajectories or [])
        worst = sorted(records, key=lambda r: (r["success"], r["return"]))[: self.max_examples]
        examples = [
            {
                "Inputs": {"task": _first_user_message(r)},
                "Generated Outputs": transcript(r),
                "Feedback": feedback(r),
            }
            for r in worst
        ]
        return {c: examples for c in components_to_update}


def _distinct_chunks(batch: Sequence[tuple[str, int]]) -> list[list[tuple[str, int]]]:
    """Split ``batch`` into runs without repeated pairs (a rollout runs each pair once)."""
    chunks: list[list[tuple[str, int]]] = []
    for pair in batch:
        pair = (pair[0], int(pair[1]))
        for chunk in chunks:
            if pair not in chunk:
                chunk.append(pair)
                break
        else:
            chunks.append([pair])
    return chunks


def _first_user_message(record: Mapping[str, Any]) -> str:
    steps = record.get("steps", [])
    obs = steps[0]["obs"] if steps else ""
    return obs.rsplit("U: ", 1)[-1][:600] if "U: " in obs else obs[-600:]


class LocalReflection:
    """GEPA's reflection LM over a local model: greedy, prompts cut to the model's context."""

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int = 256) -> None:
        from trace_agents.judge import HFChat

        self.chat = HFChat(model, tokenizer, max_new_tokens=max_new_tokens)
        self.limit = int(getattr(model.config, "max_position_embeddings", 4096)) - max_new_tokens
        self.tokenizer = tokenizer
        self.calls = 0

    def __call__(self, prompt: str | list[dict[str, Any]]) -> str:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        text = messages[-1]["content"]
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        keep = self.limit - 64
        if len(ids) > keep:  # GEPA puts the current instruction first and what to write last: cut the middle
            head = keep // 2
            messages[-1] = {
                **messages[-1],
                "content": self.tokenizer.decode(ids[:head])
                + "\n...\n"
                + self.tokenizer.decode(ids[len(ids) - (keep - head) :]),
            }
        self.calls += 1
        return self.chat(messages)


def run_gepa(
    policy: Any,
    tasks: Sequence[tuple[str, int]],
    budget: int,
    reflection_lm: Chat,
    *,
    seed_prompt: str = SEED_PROMPT,
    minibatch: int = 3,
    seed: int = 0,
    batch_size: int = 16,
    log_path: Any = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evolve the system prompt on ``tasks`` with at most ``budget`` episodes; returns the result as JSON data.

    GEPA's progress lines go to ``log_path`` when given (else they are dropped).

    Args:
        policy: The agent whose ``system_prompt`` is evolved (:class:`~trace_agents.policy.HFPolicy`
            or :class:`~trace_agents.endpoint.EndpointPolicy`); it is left carrying the best
            prompt (GEPA's scoring sets each candidate's on it in turn).
        tasks: ``(env_id, seed)`` pairs, GEPA's training and validation set alike.
        budget: The most episodes the run may play; at least ``len(tasks)`` (scoring the seed
            prompt takes that many).
        reflection_lm: ``messages -> text``: the model that reads failures and proposes
            prompts (:class:`LocalReflection`, :class:`~trace_agents.judge.OpenAIChat`).
        seed_prompt: The prompt GEPA starts from.
        minibatch: Tasks per reflection minibatch; a larger one leaves GEPA less of the budget.
        seed: GEPA's random seed (its sampling of minibatches and of candidates).
        batch_size: Envs stepping together when a candidate is scored.
        log_path: A file GEPA's progress lines are appended to; None: dropped.
        env_kwargs: ``gym.make`` keyword arguments for every episode (e.g. a turn limit).
    """
    gepa = _require_gepa()
    if budget < len(tasks):
        raise ValueError(
            f"a GEPA budget of {budget} episodes cannot even score the seed prompt on "
            f"{len(tasks)} tasks; give more budget or fewer tasks"
        )
    adapter = EnvPromptAdapter(policy, batch_size=batch_size, env_kwargs=env_kwargs)
    trainset = [(e, int(s)) for e, s in tasks]
    # The last iteration may run past GEPA's limit by one iteration's episodes (module docstring).
    limit = max(budget - (2 * minibatch + len(tasks) - 1), len(tasks))
    result = gepa.optimize(
        seed_candidate={COMPONENT: seed_prompt},
        trainset=trainset,
        valset=trainset,
        adapter=adapter,
        reflection_lm=reflection_lm,
        max_metric_calls=limit,
        reflection_minibatch_size=minibatch,
        seed=seed,
        raise_on_exception=False,
        display_progress_bar=False,
        track_best_outputs=False,
        logger=_FileLogger(log_path),
    )
    best = result.best_candidate[COMPONENT] if isinstance(result.best_candidate, dict) else str(result.best_candidate)
    policy.system_prompt = best
    scores = [float(s) for s in result.val_aggregate_scores]
    return {
        "best_prompt": best,
        "seed_prompt": seed_prompt,
        "candidates": len(result.candidates),
        "val_scores": scores,
        "best_val_score": max(scores) if scores else None,
        "prompts": [c[COMPONENT] for c in result.candidates],
        "discovery_counts": [int(n) for n in result.discovery_eval_counts],
        "rollouts_used": adapter.rollouts,
        "metric_calls": result.total_metric_calls,
        "reflection_calls": getattr(reflection_lm, "calls", None),
    }


class _FileLogger:
    """GEPA's logger protocol (``log(message)``), appending to a file or dropping the lines."""

    def __init__(self, path: Any = None) -> None:
        self.path = path

    def log(self, *args: Any, **kwargs: Any) -> None:
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(" ".join(str(a) for a in args) + "\n")


def save_json(data: Mapping[str, Any], path: Any) -> None:
    """Write ``data`` as indented JSON (the GEPA stage's resumable artefact)."""
    from pathlib import Path

    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
