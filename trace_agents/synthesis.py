"""Stage 3 of TRACE: one training env per lacking capability, calibrated to the base agent.

For each selected capability, :func:`synthesize` derives a spec from the target's:

- the same domain and tool subset;
- the capability's task family;
- the reward components and weights of that capability's built-in env, which was
  designed to reward exactly that capability;
- the target's rate of each outcome the family draws at a rate (:data:`TARGET_RATES`: how
  often a request must be refused), when the target's family draws it too.

It fails with a clear error when the target's tools cannot run the family's tasks. The
spec is validated, registered as ``trace/synth-<capability>-<target>-v0`` and saved where
``TRACE_ENV_SPECS`` can point.

:func:`calibrate` then tunes difficulty until group-relative advantages carry signal. The
goal is a base-policy mean reward over B seeds x K rollouts in [0.2, 0.6], with at most
20% of groups all-success and at most 20% all-failure. Difficulty is one scalar
``d`` in [0, 1] that moves the families' documented knobs together:

- ``noise`` = d;
- ``distractor_orders`` and ``distractor_users`` = round(d x upper bound).

Mean reward falls as ``d`` rises, so ``d`` is found by bisection under a rollout budget.
When even ``d = 0`` is too hard, or ``d = 1`` too easy, the calibration says so and keeps
the closest end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from trace_envs.capabilities import BY_NAME as CAPABILITY_RECORDS
from trace_envs.registration import register_spec
from trace_envs.spec import TraceSpec, load_spec
from trace_envs.tasks.base import FAMILIES

DIFFICULTY_KNOBS = ("noise", "distractor_orders", "distractor_users")


class SynthesisError(ValueError):
    """A capability cannot be synthesized for this target."""


def spec_of(env_id: str) -> TraceSpec:
    """The validated spec behind a registered trace env id."""
    from trace_envs.registration import spec_of as registered_spec

    if env_id not in gym.registry:
        raise SynthesisError(f"unknown env id {env_id!r}; register its spec first (TRACE_ENV_SPECS)")
    return registered_spec(env_id)


def synth_id(capability: str, target_id: str) -> str:
    """``trace/synth-<capability>-<target>-v0`` with dashes for underscores."""
    short = re.sub(r"-v\d+$", "", target_id.split("/")[-1])
    return f"trace/synth-{capability.replace('_', '-')}-{short}-v0"


def derive_spec(capability: str, target: TraceSpec, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A spec (JSON data) that trains ``capability`` in the target's domain with the target's tools."""
    # The capability's built-in env: its task family and reward design are what the new env reuses.
    if capability not in CAPABILITY_RECORDS:
        raise SynthesisError(f"no task family for capability {capability!r}; known: {sorted(CAPABILITY_RECORDS)}")
    reference_id = CAPABILITY_RECORDS[capability].env_id
    reference = spec_of(reference_id)
    family = reference.family
    info = FAMILIES[family]
    if target.tools is not None:
        missing = [t for t in info.needs_tools if t not in target.tools]
        if missing:
            raise SynthesisError(
                f"target {target.id} lacks the tools the {family!r} family's tasks call: {missing}. "
                f"Fix: add them to the target spec's domain.tools, or leave {capability} out of the selection"
            )
    if reference.domain != target.domain:
        raise SynthesisError(
            f"the {family!r} family runs on the {reference.domain!r} domain, target {target.id} on {target.domain!r}"
        )
    spec = reference.to_json()
    spec.update(
        id=synth_id(capability, target.id),
        version=1,
        description=f"Synthesized for {capability} on {target.id}: {reference.description}",
        max_turns=max(reference.max_turns, target.max_turns),
    )
    spec["domain"] = {"name": target.domain} | ({"tools": list(target.tools)} if target.tools is not None else {})
    spec["tasks"] = {
        "family": family,
        "params": {**dict(reference.params), **target_rates(family, target), **dict(params or {})},
    }
    spec["observation"] = {"format": target.obs_format, "max_chars": target.max_chars}
    spec["metadata"] = {"synthesized": {"capability": capability, "target": target.id, "reward_from": reference_id}}
    return spec


# Task-family parameters that set how often an outcome is right, rather than how hard a task
# is: a synthesized env takes the target's value, so that what its adapter learns to expect
# (here, how often a request must be refused) is what the target asks of it.
TARGET_RATES = ("refuse_rate",)


def target_rates(family: str, target: TraceSpec) -> dict[str, Any]:
    """The :data:`TARGET_RATES` that ``family`` shares with the target's family, at the target's
    values (within ``family``'s bounds). Trained at the precondition env's own refuse_rate (0.5),
    the precondition adapter refused allowed requests of ``trace/retail-v0`` (0.25) more often
    than the base agent did (docs/results.md, "Why TRACE does not beat GRPO on the target")."""
    mine, theirs = FAMILIES[family], FAMILIES.get(target.family)
    if theirs is None:
        return {}
    values = {**theirs.defaults, **dict(target.params)}
    out = {}
    for name in TARGET_RATES:
        if name in mine.defaults and name in values:
            lo, hi = mine.bounds.get(name, (values[name], values[name]))
            out[name] = min(max(values[name], lo), hi)
    return out


def difficulty_params(family: str, d: float) -> dict[str, Any]:
    """The family's difficulty knobs at level ``d`` in [0, 1]."""
    if not 0 <= d <= 1:
        raise ValueError(f"difficulty must be in [0, 1], got {d}")
    bounds = FAMILIES[family].bounds
    out: dict[str, Any] = {}
    for knob in DIFFICULTY_KNOBS:
        if knob in bounds:
            lo, hi = bounds[knob]
            value = lo + d * (hi - lo)
            out[knob] = round(value) if isinstance(FAMILIES[family].defaults.get(knob), int) else round(value, 4)
    return out


@dataclass(frozen=True)
class CalibrationConfig:
    """The band, the group sizes and the rollout budget of :func:`calibrate`."""

    band: tuple[float, float] = (0.2, 0.6)
    max_all_success: float = 0.2
    max_all_failure: float = 0.2
    seeds: int = field(default=8, metadata={"help": "B: seeds per probe"})
    rollouts: int = field(default=4, metadata={"help": "K: rollouts per seed (a GRPO group)"})
    max_probes: int = field(default=6, metadata={"help": "bisection steps at most"})
    seed_start: int = 500_000

    def __post_init__(self) -> None:
        lo, hi = self.band
        if not (0 <= lo < hi) or self.seeds < 1 or self.rollouts < 2 or self.max_probes < 1:
            raise ValueError("need 0 <= band[0] < band[1], seeds >= 1, rollouts >= 2 and max_probes >= 1")


# probe(spec_json, seeds, rollouts) -> one list of K (return, success) pairs per seed
Probe = Callable[[dict[str, Any], Sequence[int], int], list[list[tuple[float, bool]]]]


def probe_stats(groups: Sequence[Sequence[tuple[float, bool]]]) -> dict[str, float]:
    """Mean return and the shares of all-success and all-failure groups."""
    returns = [r for g in groups for r, _ in g]
    return {
        "mean_reward": sum(returns) / len(returns) if returns else 0.0,
        "all_success": sum(all(ok for _, ok in g) for g in groups) / len(groups) if groups else 0.0,
        "all_failure": sum(not any(ok for _, ok in g) for g in groups) / len(groups) if groups else 0.0,
        "episodes": len(returns),
    }


def calibrate(spec: dict[str, Any], probe: Probe, config: CalibrationConfig = CalibrationConfig()) -> dict[str, Any]:
    """Bisect the difficulty of ``spec`` against ``probe``; returns the calibrated spec and the record."""
    family = spec["tasks"]["family"]
    lo_band, hi_band = config.band
    seeds = range(config.seed_start, config.seed_start + config.seeds)
    history: list[dict[str, Any]] = []

    def run(d: float) -> dict[str, Any]:
        candidate = json.loads(json.dumps(spec))
        candidate["tasks"]["params"].update(difficulty_params(family, d))
        stats = probe_stats(probe(candidate, seeds, config.rollouts))
        entry = {"difficulty": d, **stats, "params": difficulty_params(family, d)}
        history.append(entry)
        return entry

    def ok(e: dict[str, Any]) -> bool:
        return (
            lo_band <= e["mean_reward"] <= hi_band
            and e["all_success"] <= config.max_all_success
            and e["all_failure"] <= config.max_all_failure
        )

    target = (lo_band + hi_band) / 2
    easy, hard = 0.0, 1.0
    best = run(easy)
    status = "in_band" if ok(best) else None
    if status is None and not _too_easy(best, config, target):
        status = "too_hard_at_easiest"
    while status is None and len(history) < config.max_probes:
        d = hard if len(history) == 1 else (easy + hard) / 2
        entry = run(d)
        if abs(entry["mean_reward"] - target) < abs(best["mean_reward"] - target):
            best = entry
        if ok(entry):
            best, status = entry, "in_band"
        elif len(history) == 2 and _too_easy(entry, config, target):
            best, status = entry, "too_easy_at_hardest"
        elif _too_easy(entry, config, target):
            easy = d
        else:
            hard = d
    status = status or "budget_exhausted"
    calibrated = json.loads(json.dumps(spec))
    calibrated["tasks"]["params"].update(best["params"])
    record = {
        "status": status,
        "difficulty": best["difficulty"],
        "mean_reward": best["mean_reward"],
        "all_success": best["all_success"],
        "all_failure": best["all_failure"],
        "rollouts_used": sum(e["episodes"] for e in history),
        "config": asdict(config),
        "probes": history,
    }
    calibrated.setdefault("metadata", {})["calibration"] = record
    load_spec(calibrated)  # still a valid spec
    return {"spec": calibrated, "calibration": record}


def _too_easy(entry: Mapping[str, Any], config: CalibrationConfig, target: float) -> bool:
    """Which way to move: group outcomes decide first (they are what GRPO needs), then the reward."""
    if entry["all_failure"] > config.max_all_failure and entry["all_success"] <= config.max_all_success:
        return False
    if entry["all_success"] > config.max_all_success and entry["all_failure"] <= config.max_all_failure:
        return True
    return entry["mean_reward"] > target


def rollout_probe(
    policy: Any, batch_size: int = 16, progress: bool = False, env_kwargs: Mapping[str, Any] | None = None
) -> Probe:
    """A :data:`Probe` that plays ``policy`` (anything :func:`trace_agents.rollout.rollout` drives).

    ``policy`` may also be a function of the rollout index ``k`` that returns a policy, for
    policies whose randomness is fixed per episode seed (``lambda k: OracleBatch(seed=k)``).
    """
    from trace_agents.rollout import rollout

    def probe(spec: dict[str, Any], seeds: Sequence[int], k: int) -> list[list[tuple[float, bool]]]:
        env_id = spec["id"]
        register_spec(spec, override=True)
        # K rollouts of one seed differ only by the policy's sampling: run them as separate
        # calls so each group's episodes share the seed.
        groups: dict[int, list[tuple[float, bool]]] = {s: [] for s in seeds}
        for i in range(k):
            player = policy(i) if callable(policy) and not hasattr(policy, "act_batch") else policy
            result = rollout(
                player, env_id, list(seeds), batch_size=batch_size, progress=progress, env_kwargs=env_kwargs
            )
            for rec in result.records:
                groups[rec["seed"]].append((float(rec["return"]), bool(rec["success"])))
        return [groups[s] for s in seeds]

    return probe


def synthesize(
    report: Mapping[str, Any],
    target_id: str,
    out_dir: str | Path,
    probe: Probe | None = None,
    config: CalibrationConfig = CalibrationConfig(),
) -> list[dict[str, Any]]:
    """Derive, calibrate (when ``probe`` is given), validate, save and register one spec per selection."""
    target = spec_of(target_id)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for capability in report.get("selected", []):
        spec = derive_spec(capability, target)
        calibration = None
        if probe is not None:
            done = calibrate(spec, probe, config)
            spec, calibration = done["spec"], done["calibration"]
        load_spec(spec)
        path = out_dir / (spec["id"].split("/")[-1] + ".json")
        path.write_text(json.dumps(spec, indent=2) + "\n")
        env_id = register_spec(path, override=True)
        results.append({"capability": capability, "id": env_id, "path": str(path), "calibration": calibration})
    return results


__all__ = [
    "CalibrationConfig",
    "SynthesisError",
    "calibrate",
    "derive_spec",
    "difficulty_params",
    "target_rates",
    "probe_stats",
    "rollout_probe",
    "spec_of",
    "synth_id",
    "synthesize",
]
