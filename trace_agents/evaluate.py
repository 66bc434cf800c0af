"""Evaluate a policy on an env: success with a 95% Wilson interval, returns, components, annotations.

``trace evaluate --model M [--adapter A] --env ID --episodes N --seed-start S`` prints a
table and writes JSON. ``--model oracle`` evaluates :class:`trace_envs.OraclePolicy`
(optionally with ``--deficits``), which is how ground-truth profiles are checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trace_agents.stats import rounded, summarize_annotations, wilson
from trace_envs.capabilities import REGISTRY

# Whether a finished episode's annotations show a capability's typical mistake, and the env
# that isolates each capability (where its failure profile is read): views of the capability
# registry (trace_envs.capabilities), in its order.
MISTAKES: dict[str, Callable[[Mapping[str, Any]], bool]] = {c.name: c.mistake for c in REGISTRY}
CAPABILITY_ENVS: dict[str, str] = {c.name: c.env_id for c in REGISTRY}


def capability_failures(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per capability: episodes that needed it, and the share of those where its mistake showed."""
    out: dict[str, dict[str, float]] = {}
    for cap, mistake in MISTAKES.items():
        needed = [r["annotations"] for r in records if cap in r["annotations"].get("capabilities", [])]
        wrong = sum(mistake(a) for a in needed)
        out[cap] = {"episodes": len(needed), "mistake_rate": wrong / len(needed) if needed else 0.0}
    return out


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The evaluation summary of finished episode records."""
    n = len(records)
    wins = sum(bool(r["success"]) for r in records)
    steps = sum(r["n_steps"] for r in records)
    fmt = sum(r["annotations"].get("format_errors", 0) for r in records)
    comps: dict[str, float] = {}
    for r in records:
        for k, v in r["return_components"].items():
            comps[k] = comps.get(k, 0.0) + v / max(n, 1)
    lo, hi = wilson(wins, n)
    return {
        "episodes": n,
        "success": wins / n if n else 0.0,
        "ci95": [lo, hi],
        "mean_return": sum(r["return"] for r in records) / n if n else 0.0,
        # Per seed (JSON keys are strings), for paired comparisons of methods on the same seeds.
        "returns": {str(r["seed"]): r["return"] for r in records if "seed" in r},
        "well_formed_rate": 1.0 - fmt / steps if steps else 0.0,
        "components": comps,
        "annotations": summarize_annotations(r["annotations"] for r in records),
        "capabilities": capability_failures(records),
    }


def evaluate(
    policy: Any,
    env_id: str,
    episodes: int = 100,
    seed_start: int = 10_000,
    *,
    adapter: str | Callable[[str, int], str | None] | None = None,
    batch_size: int = 16,
    store: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    env_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Roll out ``episodes`` seeds from ``seed_start`` and summarize them.

    ``adapter`` is one adapter name for every episode, or a function ``(env_id, seed) ->
    name or None`` (a router's decisions). With ``store`` and ``resume=True``, episodes
    already stored are not run again, and the summary covers stored and new ones.

    Args:
        policy: What acts (:func:`trace_agents.rollout.rollout`'s policy protocol).
        env_id: The env to evaluate on.
        episodes: How many episodes: one per seed.
        seed_start: The first seed; the seeds are ``seed_start .. seed_start + episodes - 1``.
        adapter: One adapter name for every episode, a function ``(env_id, seed) -> name or
            None``, or None (or ``""``) for the model as given.
        batch_size: Envs stepping together.
        store: A JSONL file the episodes are appended to; None: nowhere.
        resume: With ``store``, run only the seeds not stored yet and summarize all of them.
        progress: Show a progress bar.
        env_kwargs: ``gym.make`` keyword arguments (e.g. a turn limit), over the policy's own
            ``env_kwargs``; part of each record's key.
    """
    from trace_agents.rollout import rollout
    from trace_agents.trajectories import TrajectoryStore, policy_key

    adapters = adapter if callable(adapter) else ((lambda env, seed: adapter) if adapter else None)
    env_kwargs = {**getattr(policy, "env_kwargs", {}), **(env_kwargs or {})}  # as rollout passes them
    seeds = range(seed_start, seed_start + episodes)
    result = rollout(
        policy,
        env_id,
        seeds,
        batch_size=batch_size,
        store=store,
        resume=resume,
        adapters=adapters,
        progress=progress,
        env_kwargs=dict(env_kwargs or {}),
    )
    records = result.records
    if resume and store is not None:  # the stored episodes of this policy, one per seed, in seed order
        identity = policy.identity()
        keys = {seed: policy_key(identity, adapters(env_id, seed) if adapters else None, env_kwargs) for seed in seeds}
        records = TrajectoryStore(store).select(env_id, seeds, keys)
    summary = summarize(records)
    summary.update(
        env_id=env_id,
        seed_start=seed_start,
        adapter=None if callable(adapter) else adapter,
        policy=policy.identity(),
        timings=result.timings,
    )
    return summary


def profile_agreement(
    deficits: Mapping[str, float], summaries: Sequence[Mapping[str, Any]], min_gap: float = 0.1
) -> dict[str, Any]:
    """Whether measured mistake rates rank the capabilities as the injected deficits do.

    Each capability's rate is read on its own env (:data:`CAPABILITY_ENVS`). A pair of
    capabilities whose deficits differ by at least ``min_gap`` is concordant when the one
    with the larger deficit shows the larger mistake rate; the profile ``follows`` when
    every such pair is concordant. An agent's own errors add to every rate, so levels are
    not compared, only the order.
    """
    by_env = {s["env_id"]: s for s in summaries}
    measured = {
        cap: by_env[env]["capabilities"][cap]["mistake_rate"] for cap, env in CAPABILITY_ENVS.items() if env in by_env
    }
    rates = {cap: float(deficits.get(cap, 0.0)) for cap in measured}
    pairs = [(a, b) for a in measured for b in measured if rates[a] - rates[b] >= min_gap]
    discordant = [f"{a} ({measured[a]:.2f}) <= {b} ({measured[b]:.2f})" for a, b in pairs if measured[a] <= measured[b]]
    return {
        "deficits": rates,
        "measured": measured,
        "pairs": len(pairs),
        "discordant": discordant,
        "follows": bool(pairs) and not discordant,
    }


def format_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table: one row per evaluated env."""
    lines = [
        "| env | episodes | success | 95% CI | mean return | well-formed | mistake rates by capability |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for s in summaries:
        caps = ", ".join(
            f"{c.split('_')[0]} {v['mistake_rate']:.2f} (n={v['episodes']})"
            for c, v in s["capabilities"].items()
            if v["episodes"]
        )
        lines.append(
            f"| `{s['env_id']}` | {s['episodes']} | {s['success']:.3f} | "
            f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] | {s['mean_return']:.3f} | "
            f"{s['well_formed_rate']:.3f} | {caps} |"
        )
    return "\n".join(lines) + "\n"


def to_json(summaries: Sequence[Mapping[str, Any]]) -> str:
    """The summaries as JSON text, numbers rounded to 6 decimals (see :func:`~trace_agents.stats.rounded`)."""
    return json.dumps(rounded(list(summaries)), indent=2) + "\n"


def save(summaries: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write the summaries as JSON (:func:`to_json`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_json(summaries))
    return path
