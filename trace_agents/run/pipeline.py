"""The whole loop: every stage in order, resumable, then the report."""

from __future__ import annotations

import time
from typing import Any

from trace_agents import require_train_extra
from trace_agents.run.config import RunConfig, resolve
from trace_agents.run.evaluation import stage_evaluate
from trace_agents.run.report import write_report
from trace_agents.run.stages import (
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
from trace_agents.run.workdir import Run, load_agent


def run(config: RunConfig) -> dict[str, Any]:
    """Run (or resume) every stage; returns ``results.json``'s content."""
    require_train_extra("peft")
    config = resolve(config)
    t0 = time.perf_counter()
    r = Run(config)
    stages: dict[str, Any] = {}
    stages["base"] = r.stage("base", lambda: stage_base(r))
    model_path = stages["base"]["model"]
    model, tok = load_agent(model_path, config)
    stages["collect"] = r.stage("collect", lambda: stage_collect(r, model, tok))
    stages["analyze"] = r.stage("analyze", lambda: stage_analyze(r, stages["collect"]))
    stages["synthesize"] = r.stage("synthesize", lambda: stage_synthesize(r, stages["analyze"], model, tok))
    register_specs(stages["synthesize"])
    stages["train"] = r.stage("train", lambda: stage_train(r, stages["synthesize"], model_path))
    stages["route"] = r.stage("route", lambda: stage_route(r, stages["synthesize"], model, tok))
    budget = trace_budget(stages["collect"], stages["synthesize"], stages["train"])
    stages["budget"] = {
        "trace": budget,
        "collect": stages["collect"]["rollouts"],
        "calibration": stages["synthesize"]["rollouts"],
        "training": stages["train"]["rollouts"],
    }
    stages["baselines"] = r.stage("baselines", lambda: stage_baselines(r, stages["synthesize"], budget, model_path))
    stages["evaluate"] = r.stage(
        "evaluate",
        lambda: stage_evaluate(
            r, stages["synthesize"], stages["train"], stages["route"], stages["baselines"], budget, model_path
        ),
    )
    results = write_report(r, stages)
    r.log(f"wrote {r.dir / 'report.md'} and results.json ({time.perf_counter() - t0:.0f} s this call)")
    return results
