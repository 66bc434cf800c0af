"""``trace run``: the whole TRACE loop, and the baselines at the same rollout budget, into ``runs/<name>/``.

The package's modules: :mod:`~trace_agents.run.config` (:class:`RunConfig`, which holds the
thresholds, calibration and GRPO configs; the seed ranges), :mod:`~trace_agents.run.workdir`
(the run directory and the agent the stages play with), :mod:`~trace_agents.run.stages`
(base to baselines), :mod:`~trace_agents.run.evaluation` (the evaluate stage and the
rollout-budget curve), :mod:`~trace_agents.run.report` (``report.md``, ``results.json``,
plots) and :mod:`~trace_agents.run.pipeline` (:func:`run`, every stage in order). Every
public name is importable from ``trace_agents.run`` itself.

Stages (each writes its artefacts, then ``stages/<stage>.json``; a rerun skips finished
stages and resumes the one that was interrupted):

1. ``base``: ``trace bootstrap`` (or ``--model``): the agent to improve.
2. ``collect``: base-agent episodes on the target, stored as JSONL (resumable).
3. ``analyze``: ER+/ER−/coverage per capability and the selection (JSON, markdown, PNG).
4. ``synthesize``: one calibrated env per selected capability (spec JSON files).
5. ``train``: one GRPO LoRA adapter per capability env (checkpoints: resumable).
6. ``route``: a router fit on openings of the synthetic envs; its accuracy on held-out
   openings, and its choice for every held-out target task.
7. ``baselines``: GRPO on the target, one adapter on the union of the synthetic envs,
   and GEPA, each with TRACE's total rollout budget.
8. ``evaluate``: every method on the same held-out target seeds (stored episodes:
   resumable), and the rollout-budget curve.
9. ``report``: ``report.md``, ``results.json`` and the PNG plots.

## The budget
TRACE is charged every env episode it plays: the analysis episodes, the calibration
probes and the GRPO rollouts. Each baseline gets that total. GRPO baselines take
``total // rollouts_per_step`` steps (so at most one step's rollouts less); GEPA gets
it less one iteration's worst case (two minibatches and the validation tasks), since it
checks its limit only between iterations, so it never goes past it either; the report
charges what it ran. Opening
an env to read its first message (routing) is not an episode and is not charged.

## Seeds
Every use has its own range, so the held-out target seeds are disjoint from every seed
used before them: bootstrap demos 0.., collect 10 000.., TRACE training 100 000..,
GRPO-on-target 200 000.., GEPA 300 000.., router examples 400 000.. (accuracy 450 000..),
calibration 500 000.., held-out evaluation 3 000 000...
"""

from trace_agents.run.config import (
    METHODS,
    PRESETS,
    QUICK,
    QUICK_SCORER,
    SCORER,
    SEEDS,
    GRPOConfig,
    RunConfig,
    agent_kind,
    check_flags,
    quick,
    resolve,
)

# Private names too (noqa: F401): tests and older callers import them from trace_agents.run.
from trace_agents.run.evaluation import (  # noqa: F401
    _evaluate_methods,
    _merged_choices,
    budget_curve,
    checkpoint_choice,
    stage_evaluate,
)
from trace_agents.run.pipeline import run
from trace_agents.run.report import (
    findings,
    format_report,
    plot_confusion,
    plot_curve,
    plot_success,
    write_report,
)
from trace_agents.run.stages import (  # noqa: F401
    _gepa,
    _grpo,
    _openings,
    baseline_steps,
    build_router,
    register_specs,
    stage_analyze,
    stage_base,
    stage_baselines,
    stage_collect,
    stage_route,
    stage_synthesize,
    stage_train,
    trace_budget,
)
from trace_agents.run.workdir import Run, _policy, _served_policy  # noqa: F401

__all__ = [
    "METHODS",
    "PRESETS",
    "QUICK",
    "QUICK_SCORER",
    "SCORER",
    "SEEDS",
    "GRPOConfig",
    "Run",
    "RunConfig",
    "agent_kind",
    "baseline_steps",
    "budget_curve",
    "build_router",
    "check_flags",
    "checkpoint_choice",
    "findings",
    "format_report",
    "plot_confusion",
    "plot_curve",
    "plot_success",
    "quick",
    "register_specs",
    "resolve",
    "run",
    "stage_analyze",
    "stage_base",
    "stage_baselines",
    "stage_collect",
    "stage_evaluate",
    "stage_route",
    "stage_synthesize",
    "stage_train",
    "trace_budget",
    "write_report",
]
