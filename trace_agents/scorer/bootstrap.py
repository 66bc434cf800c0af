"""``trace bootstrap --agent scorer``: clone a deficient oracle into a scorer, evaluate it, save it.

The base agent imitates :class:`~trace_envs.OraclePolicy` with the deficit profile
(:data:`trace_agents.bootstrap.DEFAULT_DEFICITS`), on the target and the capability envs,
so its failures should follow the injected deficits. Writes ``OUT/model`` (a saved
:class:`~trace_agents.scorer.agent.ScorerPolicy`), ``OUT/report.json`` and
``OUT/report.md`` with the same evaluation table and acceptance checks as the ``lm`` kind.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trace_agents.bootstrap import (
    CAPABILITY_ENVS,
    DEFAULT_DEFICITS,
    TARGET,
    acceptance,
    check_demonstrations,
    format_checks,
    format_report,
)


@dataclass
class ScorerBootstrapConfig:
    """Settings of ``trace bootstrap --agent scorer``; every field is a CLI flag."""

    out: str = field(default="runs/bootstrap", metadata={"help": "output directory"})
    deficits: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_DEFICITS),
        metadata={"help": "capability=rate pairs for the demonstrations"},
    )
    demos: int = field(default=400, metadata={"help": "demonstration episodes (split over the envs)"})
    target_share: float = field(default=0.5, metadata={"help": "share of demos on the retail target"})
    epochs: float = field(default=8.0, metadata={"help": "passes over the demonstrations' decisions"})
    batch_size: int = field(default=64, metadata={"help": "decisions per optimizer step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak learning rate (cosine decay)"})
    hidden: int = field(default=128, metadata={"help": "width of the scoring network"})
    attention: bool = field(default=True, metadata={"help": "attention across a decision's candidates"})
    near_misses: bool = field(
        default=True,
        metadata={"help": "list near-miss twins (ids without '#', wrong records) so deficits can be expressed"},
    )
    eval_episodes: int = field(default=50, metadata={"help": "held-out episodes per evaluated env"})
    eval_seed_start: int = field(default=1_000_000, metadata={"help": "first held-out seed (demos use 0..)"})
    eval_envs: list[str] = field(
        default_factory=lambda: [TARGET, *CAPABILITY_ENVS], metadata={"help": "envs to evaluate on"}
    )
    eval_batch_size: int = field(default=32, metadata={"help": "episodes played at once in evaluation"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the saved agent"})
    seed: int = field(default=0, metadata={"help": "seed for demos, initialization, training and sampling"})

    def __post_init__(self) -> None:
        from trace_envs.registration import check_id

        check_demonstrations(self.deficits, self.target_share)
        for name in ("demos", "batch_size", "hidden", "eval_episodes", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs <= 0 or self.learning_rate <= 0 or self.temperature < 0:
            raise ValueError(
                f"epochs and learning_rate must be > 0 and temperature >= 0; got {self.epochs}, "
                f"{self.learning_rate} and {self.temperature}"
            )
        for env_id in self.eval_envs:
            check_id(env_id)


def demo_plan(n: int, target_share: float) -> list[tuple[str, int]]:
    """``(env_id, seed)`` of the demos: the target gets ``target_share``, the capability envs the rest."""
    per_cap = min(round(n * (1 - target_share) / len(CAPABILITY_ENVS)), n // len(CAPABILITY_ENVS))
    plan = [(TARGET, s) for s in range(n - per_cap * len(CAPABILITY_ENVS))]
    return plan + [(e, s) for e in CAPABILITY_ENVS for s in range(per_cap)]


def run(config: ScorerBootstrapConfig, progress: bool = True) -> dict[str, Any]:
    """Demonstrate, clone, evaluate and save; returns the report (also ``OUT/report.json``)."""
    from trace_agents import evaluate as ev
    from trace_agents.scorer.agent import ScorerPolicy
    from trace_agents.scorer.clone import clone, demo_decisions
    from trace_agents.scorer.network import ScorerNetConfig

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    demos = demo_decisions(
        demo_plan(config.demos, config.target_share),
        config.deficits,
        seed=config.seed,
        near_misses=config.near_misses,
        progress=progress,
    )
    timings["demos"] = time.perf_counter() - t0
    print(
        f"[bootstrap] {demos.episodes} demonstrations, {len(demos.decisions)} decisions "
        f"({demos.skipped_steps} steps without a listed equivalent skipped); "
        f"oracle success {demos.successes / max(demos.episodes, 1):.3f}"
    )

    t = time.perf_counter()
    policy = ScorerPolicy.new(
        ScorerNetConfig(hidden=config.hidden, attention=config.attention),
        seed=config.seed,
        temperature=config.temperature,
        near_misses=config.near_misses,
    )
    policy.tensors(demos.decisions)  # embeds every distinct text once
    timings["embed"] = time.perf_counter() - t
    t = time.perf_counter()
    log = clone(
        policy,
        demos.decisions,
        demos.labels,
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        progress=progress,
    )
    timings["clone"] = time.perf_counter() - t
    model_dir = out / "model"
    policy.save_pretrained(model_dir)
    policy.source = str(model_dir)

    t = time.perf_counter()
    summaries = [
        ev.evaluate(
            policy,
            env_id,
            config.eval_episodes,
            config.eval_seed_start,
            batch_size=config.eval_batch_size,
            progress=progress,
        )
        for env_id in config.eval_envs
    ]
    timings["evaluate"] = time.perf_counter() - t
    profile = ev.profile_agreement(config.deficits, summaries)
    checks = acceptance(summaries, profile)
    timings["total"] = time.perf_counter() - t0
    report = {
        "agent": "scorer",
        "config": asdict(config),
        "source": "scratch",
        "model_dir": str(model_dir),
        "train_loss": log[-1]["loss"],
        "train_accuracy": log[-1]["accuracy"],
        "clone_log": log,
        "steps": log[-1]["step"],
        "sequences": demos.episodes,
        "decisions": len(demos.decisions),
        "skipped_steps": demos.skipped_steps,
        "demo_success": demos.successes / max(demos.episodes, 1),
        "demo_mistakes": demos.mistakes,
        "embedding_cache": {"texts": len(policy.cache), "hit_rate": policy.cache.hit_rate},
        "evaluation": summaries,
        "profile": profile,
        "checks": checks,
        "copy_probe": None,
        "timings_s": timings,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(format_report(report))
    print(ev.format_table(summaries) + format_checks(checks))
    return report
