"""The settings of ``trace run``: :class:`RunConfig`, composed of the stages' own configs.

:class:`RunConfig` holds the analysis thresholds (:class:`~trace_agents.analysis.ThresholdsConfig`),
the calibration settings (:class:`~trace_agents.synthesis.CalibrationConfig`) and the GRPO
settings (:class:`GRPOConfig`) as nested fields, not copies of their fields. The command
line stays flat: a nested field's metadata ``flags`` maps each of its flags to the nested
field it sets (``--calibration-seeds`` sets ``calibration.seeds``, ``--steps-per-adapter``
sets ``grpo.max_steps``), and :meth:`RunConfig.flags` / :meth:`RunConfig.from_flags` go
between the two. ``config.json`` in a run directory holds the flat flags.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from trace_agents.analysis import ThresholdsConfig
from trace_agents.synthesis import CalibrationConfig
from trace_agents.training import GRPOConfig

SEEDS = {
    "collect": 10_000,
    "train": 100_000,
    "grpo_target": 200_000,
    "gepa": 300_000,
    "router_fit": 400_000,
    "router_test": 450_000,
    "heldout": 3_000_000,
}
METHODS = ("base", "trace", "grpo_target", "single_adapter", "gepa")


def _calibration() -> CalibrationConfig:
    return CalibrationConfig(seeds=4, rollouts=4, max_probes=3)


def _grpo() -> GRPOConfig:
    return GRPOConfig(max_steps=6)


@dataclass
class RunConfig:
    """Settings of ``trace run``; every flag is a CLI flag. ``--quick`` shrinks them for CI.

    ``grpo`` is the template of every GRPO run (the capability adapters and the baselines):
    the run sets each one's ``out``, ``env_ids``, ``seed_start``, ``save_steps`` and (for the
    baselines) ``max_steps``, and its ``temperature``, ``max_new_tokens``,
    ``rollout_batch_size``, ``seed``, ``max_turns`` and ``vllm_url`` from the run's own
    fields, so that every stage samples alike. The thresholds' ``seed`` is the run's.
    """

    name: str = field(default="default", metadata={"help": "run name: artefacts go to <runs-dir>/<name>/"})
    runs_dir: str = field(default="runs", metadata={"help": "parent directory of runs"})
    agent: str = field(
        default="",
        metadata={
            "help": "agent kind: scorer (chooses among admissible actions; trains on CPU) or lm (generates text; "
            "for real models, --model Qwen/...). Default: the kind of --model, else scorer. Each kind has "
            "its own defaults for the flags you leave unset (see docs/pipeline.md)"
        },
    )
    model: str | None = field(
        default=None,
        metadata={"help": "base agent: a saved scorer or HF model directory, or an HF id; default: bootstrap one"},
    )
    target: str = field(default="trace/retail-v0", metadata={"help": "target env id"})
    collect_episodes: int = field(default=60, metadata={"help": "base-agent episodes on the target for analysis"})
    min_capabilities: int = field(
        default=1,
        metadata={
            "help": "train at least this many capabilities: when fewer pass selection, the next ranked by "
            "gap x coverage (ER- minus ER+, times coverage) are added (marked 'forced' in the report)"
        },
    )
    max_capabilities: int = field(default=3, metadata={"help": "train at most this many capabilities"})
    thresholds: ThresholdsConfig = field(default_factory=ThresholdsConfig, metadata={"flags": {}})
    calibration: CalibrationConfig = field(
        default_factory=_calibration,
        metadata={
            "flags": {
                "calibration_seeds": ("seeds", "B: seeds per calibration probe"),
                "calibration_rollouts": ("rollouts", "K: rollouts per calibration seed"),
                "calibration_probes": ("max_probes", "bisection steps at most per capability"),
            }
        },
    )
    grpo: GRPOConfig = field(
        default_factory=_grpo,
        metadata={
            "flags": {
                "steps_per_adapter": ("max_steps", "GRPO steps per capability adapter"),
                "num_generations": ("num_generations", "GRPO group size K"),
                "groups_per_step": ("groups_per_step", "GRPO tasks per step"),
                "learning_rate": ("learning_rate", "LoRA learning rate"),
                "lora_r": ("lora_r", "LoRA rank"),
            }
        },
    )
    max_new_tokens: int = field(default=160, metadata={"help": "longest agent turn in tokens"})
    router: str = field(default="embedding", metadata={"help": "embedding (kNN over openings) or label (scoring)"})
    router_examples: int = field(default=16, metadata={"help": "example openings per synthetic env for the router"})
    top_p: float = field(default=0.0, metadata={"help": "merge adapters up to this router mass (0: no merging)"})
    eval_episodes: int = field(default=40, metadata={"help": "held-out target episodes per method"})
    curve_points: int = field(default=2, metadata={"help": "intermediate budget points per method on the curve"})
    curve_episodes: int = field(
        default=20, metadata={"help": "held-out episodes per intermediate curve point (at most eval_episodes)"}
    )
    gepa_minibatch: int = field(default=3, metadata={"help": "GEPA reflection minibatch"})
    gepa_tasks: int = field(default=8, metadata={"help": "GEPA train/val tasks on the target"})
    max_turns: int = field(default=0, metadata={"help": "override every env's turn limit (0: each spec's own)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the agent"})
    batch_size: int = field(default=16, metadata={"help": "episodes generated for at once"})
    seed: int = field(default=0, metadata={"help": "seed of sampling, training and resampling"})
    vllm_url: str = field(
        default="",
        metadata={
            "help": "play every episode on this vLLM server serving --model (collection, calibration, GRPO "
            "rollouts, GEPA, evaluation; the router and GEPA's reflection stay here; empty: all "
            "in-process); a run may resume with another"
        },
    )
    tau2_data: str = field(
        default="",
        metadata={
            "help": "τ²-bench data directory: also evaluate base and TRACE on trace/tau2-retail-v0 tasks "
            "(default: $TAU2_DATA_DIR when set; 'none': skip). config.json records the directory used"
        },
    )
    quick: bool = field(default=False, metadata={"help": "the CI-sized run (a few minutes on 2 CPU cores)"})

    def __post_init__(self) -> None:
        check_flags(self.flags())

    # ------------------------------------------------------------ the flat view (CLI, config.json)
    def flags(self) -> dict[str, Any]:
        """Every flag and its value, in the order of the fields (nested configs flattened)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            mapping = f.metadata.get("flags")
            if mapping is None:
                out[f.name] = getattr(self, f.name)
            else:
                nested = getattr(self, f.name)
                out.update((flag, getattr(nested, attr)) for flag, (attr, _) in mapping.items())
        return out

    def with_flags(self, **flags: Any) -> RunConfig:
        """A copy with these flags changed; nested configs keep their other fields."""
        known = self.flags()
        unknown = [k for k in flags if k not in known]
        if unknown:
            raise TypeError(f"RunConfig has no flag {unknown[0]!r}")
        check_flags({**known, **flags})  # before a nested config's own check, so errors name the flag
        changes: dict[str, Any] = {}
        for f in fields(self):
            mapping = f.metadata.get("flags")
            if mapping is None:
                if f.name in flags:
                    changes[f.name] = flags[f.name]
                continue
            sub = {attr: flags[flag] for flag, (attr, _) in mapping.items() if flag in flags}
            if sub:
                changes[f.name] = replace(getattr(self, f.name), **sub)
        return replace(self, **changes)

    @classmethod
    def from_flags(cls, **flags: Any) -> RunConfig:
        """The config the command line ``--flag value ...`` gives (nested configs at their run defaults)."""
        return cls().with_flags(**flags)

    # ------------------------------------------------------------ derived
    @property
    def dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def rollouts_per_step(self) -> int:
        return self.grpo.rollouts_per_step


def check_flags(flags: Mapping[str, Any]) -> None:
    """Refuse settings that cannot run, naming the flag (a ``ValueError``)."""
    if flags["router"] not in ("embedding", "label"):
        raise ValueError(f"router must be 'embedding' or 'label', got {flags['router']!r}")
    if not 0 <= flags["top_p"] <= 1:
        raise ValueError(f"top_p must be in [0, 1], got {flags['top_p']}")
    for name in (
        "collect_episodes",
        "min_capabilities",
        "max_capabilities",
        "steps_per_adapter",
        "eval_episodes",
        "gepa_tasks",
        "batch_size",
        "router_examples",
        "groups_per_step",
        "calibration_seeds",
        "calibration_rollouts",
        "calibration_probes",
        "curve_episodes",
        "gepa_minibatch",
        "max_new_tokens",
        "lora_r",
    ):
        if flags[name] < 1:
            raise ValueError(f"{name} must be >= 1, got {flags[name]}")
    if flags["num_generations"] < 2:
        raise ValueError("num_generations must be >= 2")
    if flags["max_turns"] < 0 or flags["curve_points"] < 0:
        raise ValueError(
            f"max_turns and curve_points must be >= 0, got {flags['max_turns']} and {flags['curve_points']}"
        )
    from trace_envs.registration import check_id

    check_id(flags["target"])  # before the base agent is bootstrapped, not after
    if flags["temperature"] <= 0:
        raise ValueError(f"temperature must be > 0: GRPO samples its rollouts with it, got {flags['temperature']}")
    if flags["min_capabilities"] > flags["max_capabilities"]:
        raise ValueError(
            f"min_capabilities ({flags['min_capabilities']}) must be <= max_capabilities ({flags['max_capabilities']})"
        )
    if flags["vllm_url"] and not flags["model"]:
        raise ValueError(
            "--vllm-url needs --model, the base model the server already serves (a run cannot "
            "serve the model it bootstraps: run trace bootstrap first)"
        )
    if flags["tau2_data"] not in ("", "none") and not Path(flags["tau2_data"]).is_dir():
        raise ValueError(
            f"tau2_data {flags['tau2_data']!r} is not a directory: pass a τ²-bench data/tau2 directory, or 'none'"
        )
    if flags["agent"] not in ("", "scorer", "lm"):
        raise ValueError(f"agent must be 'scorer' or 'lm', got {flags['agent']!r}")
    if flags["agent"] == "scorer" and flags["router"] == "label":
        raise ValueError(
            "--router label scores capability names with a generative base model; the scorer has "
            "none: use --router embedding (or --agent lm)"
        )
    if flags["agent"] == "scorer" and flags["vllm_url"]:
        raise ValueError("--vllm-url serves a generative model; the scorer runs in-process (drop --vllm-url)")
    if flags["vllm_url"] and flags["top_p"] > 0:
        raise ValueError(
            "--top-p merging builds the merged adapters in-process; it does not go with --vllm-url (use --top-p 0)"
        )


# The CI-sized run. Its base agent has had a few SFT steps, so it rambles until the spec's
# turn limit: short turns (max_new_tokens) and few episodes keep that cheap.
QUICK = dict(
    collect_episodes=8,
    calibration_seeds=2,
    calibration_rollouts=2,
    calibration_probes=1,
    max_capabilities=1,
    steps_per_adapter=1,
    num_generations=2,
    groups_per_step=2,
    max_new_tokens=16,
    router_examples=4,
    eval_episodes=6,
    curve_points=1,
    curve_episodes=4,
    gepa_tasks=2,
    gepa_minibatch=1,
    max_turns=10,
    batch_size=8,
)


# The scorer plays thousands of episodes in minutes, so its run spends a budget RL can move a
# policy with: GRPO groups of 8, 8 tasks a step, and 200 held-out episodes per method.
SCORER = dict(
    collect_episodes=200,
    calibration_seeds=8,
    calibration_rollouts=4,
    calibration_probes=3,
    steps_per_adapter=20,
    num_generations=8,
    groups_per_step=8,
    learning_rate=3e-3,
    router_examples=32,
    eval_episodes=200,
    curve_points=3,
    curve_episodes=100,
    batch_size=32,
)
QUICK_SCORER = dict(
    collect_episodes=16,
    calibration_seeds=2,
    calibration_rollouts=2,
    calibration_probes=1,
    max_capabilities=1,
    steps_per_adapter=2,
    num_generations=4,
    groups_per_step=2,
    learning_rate=3e-3,
    router_examples=4,
    eval_episodes=16,
    curve_points=1,
    curve_episodes=8,
    batch_size=16,
)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "scorer": {"full": SCORER, "quick": QUICK_SCORER},
    "lm": {"full": {}, "quick": QUICK},
}


def agent_kind(config: RunConfig) -> str:
    """The run's agent kind: ``--agent``, else the kind of ``--model``, else ``scorer``."""
    from trace_agents.scorer.agent import is_scorer

    if not config.model:
        return config.agent or "scorer"
    kind = "scorer" if is_scorer(config.model) else "lm"
    if config.agent and config.agent != kind:
        raise ValueError(
            f"--agent {config.agent} but --model {config.model} is a saved {kind} agent; drop --agent "
            f"or pass a {config.agent} model"
        )
    return kind


def resolve(config: RunConfig) -> RunConfig:
    """``config`` with every input explicit: its agent kind, that kind's defaults (and ``--quick``'s)
    for the flags left unset, and the τ²-bench directory (``$TAU2_DATA_DIR`` read here, once, so
    that ``config.json`` records it)."""
    kind = agent_kind(config)
    defaults, mine = RunConfig().flags(), config.flags()
    preset = {**PRESETS[kind]["full"], **(PRESETS[kind]["quick"] if config.quick else {})}
    changes = {k: v for k, v in preset.items() if mine[k] == defaults[k]}
    tau2 = config.tau2_data or os.environ.get("TAU2_DATA_DIR") or "none"
    return config.with_flags(agent=kind, tau2_data=tau2, **changes)


def quick(config: RunConfig) -> RunConfig:
    """``config`` shrunk to the CI-sized run of its agent kind (flags left at their defaults only)."""
    return resolve(replace(config, quick=True))


__all__ = [
    "METHODS",
    "PRESETS",
    "QUICK",
    "QUICK_SCORER",
    "SCORER",
    "SEEDS",
    "GRPOConfig",
    "RunConfig",
    "agent_kind",
    "check_flags",
    "quick",
    "resolve",
]
