"""The stages before evaluation: base, collect, analyze, synthesize, train, route and baselines.

Each takes the :class:`~trace_agents.run.workdir.Run` and the earlier stages' results and
returns its own (JSON), which :meth:`Run.stage` stores as ``stages/<stage>.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from trace_agents.rollout import turn_limit
from trace_agents.run.config import SEEDS
from trace_agents.run.workdir import Run, _policy


def stage_base(run: Run) -> dict[str, Any]:
    c = run.config
    if c.model:
        return {"model": c.model, "bootstrapped": False}
    if c.agent == "scorer":
        from trace_agents.scorer.bootstrap import ScorerBootstrapConfig
        from trace_agents.scorer.bootstrap import run as bootstrap_scorer

        kw = {"out": str(run.dir / "bootstrap"), "seed": c.seed, "temperature": c.temperature}
        if c.quick:
            kw.update(demos=40, epochs=2.0, eval_episodes=4, eval_envs=[c.target])
        report = bootstrap_scorer(ScorerBootstrapConfig(**kw))
        return {"model": report["model_dir"], "bootstrapped": True, "bootstrap_checks": report["checks"]}
    from trace_agents.bootstrap import BootstrapConfig
    from trace_agents.bootstrap import run as bootstrap

    kw: dict[str, Any] = {"out": str(run.dir / "bootstrap"), "seed": c.seed}
    if c.quick:
        kw.update(demos=40, max_steps=12, eval_episodes=2, eval_envs=[c.target], max_new_tokens=c.max_new_tokens)
    report = bootstrap(BootstrapConfig(**kw))
    return {
        "model": report["model_dir"],
        "bootstrapped": True,
        "bootstrap_checks": report["checks"],
        "copy_probe": report.get("copy_probe"),
    }


def stage_collect(run: Run, model: Any, tok: Any) -> dict[str, Any]:
    from trace_agents.rollout import rollout
    from trace_agents.trajectories import TrajectoryStore

    c = run.config
    path = run.dir / "collect.jsonl"
    seeds = range(SEEDS["collect"], SEEDS["collect"] + c.collect_episodes)
    result = rollout(
        _policy(model, tok, c),
        c.target,
        seeds,
        batch_size=c.batch_size,
        store=path,
        resume=True,
        env_kwargs=turn_limit(c.max_turns),
    )
    records = TrajectoryStore(path).select(c.target, seeds)
    return {
        "trajectories": str(path),
        "episodes": len(records),
        "rollouts": len(records),
        "success": sum(r["success"] for r in records) / len(records),
        "ran_now": result.n_episodes,
    }


def stage_analyze(run: Run, collect: Mapping[str, Any]) -> dict[str, Any]:
    from trace_agents import analysis
    from trace_agents.trajectories import TrajectoryStore

    c = run.config
    records = TrajectoryStore(collect["trajectories"]).select(
        c.target, range(SEEDS["collect"], SEEDS["collect"] + c.collect_episodes)
    )
    report = analysis.analyze(records, thresholds=replace(c.thresholds, seed=c.seed))
    selected = list(report["selected"])[: c.max_capabilities]
    forced = []
    if len(selected) < c.min_capabilities:  # the report ranks the rest by gap x coverage
        rest = [cap for cap in report["capabilities"] if cap not in selected]
        forced = rest[: c.min_capabilities - len(selected)]
    report["selected_by_analysis"] = list(report["selected"])
    report["selected"] = selected + forced
    report["forced"] = forced
    paths = analysis.write_report(report, run.dir / "analysis.json")
    return {
        "selected": report["selected"],
        "forced": forced,
        "by_analysis": report["selected_by_analysis"],
        "paths": {k: str(v) for k, v in paths.items()},
    }


def stage_synthesize(run: Run, analyze: Mapping[str, Any], model: Any, tok: Any) -> dict[str, Any]:
    from trace_agents import synthesis as sy

    c = run.config
    report = {"selected": analyze["selected"]}
    results = sy.synthesize(
        report,
        c.target,
        run.dir / "specs",
        probe=sy.rollout_probe(_policy(model, tok, c), batch_size=c.batch_size, env_kwargs=turn_limit(c.max_turns)),
        config=c.calibration,
    )
    rollouts = sum((r["calibration"] or {}).get("rollouts_used", 0) for r in results)
    return {
        "envs": {r["capability"]: r["id"] for r in results},
        "paths": {r["capability"]: r["path"] for r in results},
        "calibration": {r["capability"]: r["calibration"] for r in results},
        "rollouts": rollouts,
    }


def register_specs(synth: Mapping[str, Any]) -> None:
    """Register the run's synthetic envs in this process (a resumed run needs them again)."""
    from trace_envs import register_spec

    for path in synth.get("paths", {}).values():
        register_spec(path, override=True)


def _grpo(run: Run, name: str, env_ids: Sequence[str], steps: int, seed_start: int, model_path: str) -> dict[str, Any]:
    from trace_agents.training import train_adapter

    c = run.config
    out = run.dir / "adapters" / name
    summary_path = out / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text(encoding="utf-8"))
    save_steps = max(1, steps // (c.curve_points + 1))
    # The run's GRPO template, for this adapter, sampling as every other stage does.
    settings = replace(
        c.grpo,
        out=str(out),
        env_ids=list(env_ids),
        seed_start=seed_start,
        max_steps=steps,
        max_new_tokens=c.max_new_tokens,
        temperature=c.temperature,
        rollout_batch_size=c.batch_size,
        save_steps=save_steps,
        seed=c.seed,
        max_turns=c.max_turns,
        vllm_url=c.vllm_url,
    )
    run.log(f"train {name}: {steps} GRPO steps on {', '.join(env_ids)}")
    return train_adapter(settings, model_path, resume=(out / "log.jsonl").exists())


def stage_train(run: Run, synth: Mapping[str, Any], model_path: str) -> dict[str, Any]:
    c = run.config
    adapters = {
        cap: _grpo(run, cap, [env_id], c.grpo.max_steps, SEEDS["train"], model_path)
        for cap, env_id in synth["envs"].items()
    }
    return {
        "adapters": {cap: s["adapter"] for cap, s in adapters.items()},
        "rollouts": sum(s["rollouts_used"] for s in adapters.values()),
        "per_adapter": {cap: s["rollouts_used"] for cap, s in adapters.items()},
    }


def _openings(env_id: str, start: int, n: int, **env_kwargs: Any) -> list[dict[str, Any]]:
    from trace_agents.routing import example_openings

    return example_openings(env_id, range(start, start + n), **env_kwargs)


def build_router(run: Run, synth: Mapping[str, Any], model: Any, tok: Any) -> Any:
    from trace_agents import routing

    c = run.config
    if c.router == "label":
        descriptions = {cap: routing.describe(cap) for cap in synth["envs"]}
        return routing.LabelScoringRouter(model, tok, descriptions, allow_none=False)
    # A scorer's router reads openings with the scorer's own encoder; an lm's, MiniLM or its hidden states.
    embed = model.cache.embed if tok is None and hasattr(model, "cache") else routing.default_embedder(model, tok)
    router = routing.EmbeddingRouter(embed, k=5)
    for cap, env_id in synth["envs"].items():
        router.fit(_openings(env_id, SEEDS["router_fit"], c.router_examples), cap)
    return router


def stage_route(run: Run, synth: Mapping[str, Any], model: Any, tok: Any) -> dict[str, Any]:
    from trace_agents.routing import most_likely, routing_accuracy

    c = run.config
    router = build_router(run, synth, model, tok)
    truth = {cap: _openings(env_id, SEEDS["router_test"], c.router_examples) for cap, env_id in synth["envs"].items()}
    accuracy = routing_accuracy(router, truth)
    heldout = _openings(c.target, SEEDS["heldout"], c.eval_episodes)
    probs = router.probabilities(heldout)  # once: the choices are the most likely of these
    choices = most_likely(probs)
    return {
        "router": c.router,
        "embedder": getattr(getattr(router, "embed", None), "name", None),
        "accuracy": accuracy,
        "choices": {str(SEEDS["heldout"] + i): ch for i, ch in enumerate(choices)},
        "probabilities": {str(SEEDS["heldout"] + i): {str(k): v for k, v in p.items()} for i, p in enumerate(probs)},
    }


def trace_budget(collect: Mapping[str, Any], synth: Mapping[str, Any], train: Mapping[str, Any]) -> int:
    """Every episode TRACE played: analysis, calibration and GRPO."""
    return int(collect["rollouts"]) + int(synth["rollouts"]) + int(train["rollouts"])


def baseline_steps(budget: int, rollouts_per_step: int) -> int:
    """GRPO steps that fit in ``budget`` episodes (at least one)."""
    return max(1, budget // rollouts_per_step)


def stage_baselines(run: Run, synth: Mapping[str, Any], budget: int, model_path: str) -> dict[str, Any]:
    """The baselines on TRACE's budget: GRPO on the target, one adapter on every synthetic env,
    and GEPA (``lm`` agents only).

    Args:
        run: The run: its config, and its directory (each baseline's artefacts go in it).
        synth: The synthesize stage's result (the synthetic envs the single adapter trains on).
        budget: Every rollout TRACE spent (:func:`trace_budget`): what each baseline may spend.
        model_path: The base agent (a model directory or id, or a saved scorer); each baseline
            loads it afresh (GEPA too: the prompt is the only thing it may change).
    """
    c = run.config
    steps = baseline_steps(budget, c.rollouts_per_step)
    target = _grpo(run, "grpo_target", [c.target], steps, SEEDS["grpo_target"], model_path)
    single = _grpo(run, "single_adapter", list(synth["envs"].values()), steps, SEEDS["train"], model_path)
    gepa = (
        _gepa(run, budget, model_path)
        if c.agent != "scorer"
        else {
            "skipped": "GEPA evolves the agent's prompt; a scorer has no prompt, so GEPA is an lm-only baseline",
            "rollouts": 0,
        }
    )
    return {
        "budget": budget,
        "steps": steps,
        "grpo_target": {"adapter": target["adapter"], "rollouts": target["rollouts_used"]},
        "single_adapter": {"adapter": single["adapter"], "rollouts": single["rollouts_used"]},
        "gepa": gepa,
    }


def _gepa(run: Run, budget: int, model_path: str) -> dict[str, Any]:
    from trace_agents.baselines import LocalReflection, run_gepa, save_json
    from trace_agents.models import load

    c = run.config
    path = run.dir / "gepa.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    model, tok = load(model_path)  # a model of its own: the prompt is the only thing GEPA changes
    tasks = [(c.target, SEEDS["gepa"] + i) for i in range(c.gepa_tasks)]
    run.log(f"gepa: budget {budget} episodes on {len(tasks)} target tasks")
    result = run_gepa(
        _policy(model, tok, c),
        tasks,
        budget,
        LocalReflection(model, tok),
        minibatch=c.gepa_minibatch,
        seed=c.seed,
        batch_size=c.batch_size,
        log_path=run.dir / "gepa.log",
        env_kwargs=turn_limit(c.max_turns),
    )
    result["rollouts"] = result["rollouts_used"]
    save_json(result, path)
    return result
