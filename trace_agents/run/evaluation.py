"""The evaluate stage: every method on the same held-out target seeds, and the rollout-budget curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trace_agents.rollout import turn_limit
from trace_agents.run.config import SEEDS
from trace_agents.run.stages import _openings, build_router
from trace_agents.run.workdir import Run, _policy, load_agent
from trace_agents.stats import paired_difference


def stage_evaluate(
    run: Run,
    synth: Mapping[str, Any],
    train: Mapping[str, Any],
    route: Mapping[str, Any],
    baselines: Mapping[str, Any],
    budget: int,
    model_path: str,
) -> dict[str, Any]:
    """Every method on the same held-out target seeds, the rollout-budget curve, each adapter's
    effect on its capability, and, when the run names τ²-bench data, the real benchmark's tasks.

    Args:
        run: The run: its config, and its directory (evaluations are stored under ``eval/``).
        synth: The synthesize stage's result (the synthetic env of each capability).
        train: The train stage's result (each capability's adapter, the rollouts spent).
        route: The route stage's result (the router's choice and probabilities per held-out seed).
        baselines: The baselines stage's result (the GRPO adapters; GEPA's prompt, or why it was skipped).
        budget: Every rollout TRACE spent (:func:`~trace_agents.run.stages.trace_budget`): the
            ``trace`` method's cost.
        model_path: The base agent (an ``lm`` model or a saved scorer); loaded here once per
            policy, or, when a server plays, only if the τ²-bench router needs it.
    """
    c = run.config

    def own_model() -> tuple[Any, Any]:
        """In-process, each policy has a model of its own (the first gets LoRA layers injected);
        on a server, the adapters are loaded there and nothing is loaded here."""
        return (None, None) if c.vllm_url else load_agent(model_path, c)

    policy = _policy(*own_model(), c)
    gepa_model, gepa_tok = own_model()
    gepa_policy = (
        None
        if "skipped" in baselines["gepa"]
        else _policy(gepa_model, gepa_tok, c, system_prompt=baselines["gepa"]["best_prompt"])
    )
    try:
        return _evaluate_methods(
            run, synth, train, route, baselines, budget, model_path, policy, gepa_policy, plain=(gepa_model, gepa_tok)
        )
    finally:
        if c.vllm_url:
            policy.close()


def _evaluate_methods(
    run: Run,
    synth: Mapping[str, Any],
    train: Mapping[str, Any],
    route: Mapping[str, Any],
    baselines: Mapping[str, Any],
    budget: int,
    model_path: str,
    policy: Any,
    gepa_policy: Any,
    plain: tuple[Any, Any],
) -> dict[str, Any]:
    """``plain``: the base model without LoRA layers (GEPA's, in-process), or (None, None)."""
    from trace_agents import evaluate as ev

    c = run.config
    for cap, path in train["adapters"].items():
        policy.load_adapter(cap, path)
    policy.load_adapter("grpo_target", baselines["grpo_target"]["adapter"])
    policy.load_adapter("single_adapter", baselines["single_adapter"]["adapter"])
    routed = {int(seed): choice for seed, choice in route["choices"].items()}
    if c.top_p > 0:
        routed = _merged_choices(run, policy, route)
    evals = run.dir / "eval"
    evals.mkdir(exist_ok=True)
    seed0, n = SEEDS["heldout"], c.eval_episodes

    def one(name: str, pol: Any, adapter: Any) -> dict[str, Any]:
        summary = ev.evaluate(
            pol,
            c.target,
            n,
            seed0,
            adapter=adapter,
            batch_size=c.batch_size,
            store=evals / f"{name}.jsonl",
            resume=True,
            env_kwargs=turn_limit(c.max_turns),
        )
        run.log(f"evaluate {name}: success {summary['success']:.3f} {summary['ci95']}")
        return summary

    summaries = {
        "base": one("base", policy, None),
        "trace": one("trace", policy, lambda env_id, seed: routed.get(seed)),
        "grpo_target": one("grpo_target", policy, "grpo_target"),
        "single_adapter": one("single_adapter", policy, "single_adapter"),
    }
    if gepa_policy is not None:
        summaries["gepa"] = one("gepa", gepa_policy, None)
    rollouts = {
        "base": 0,
        "trace": budget,
        "grpo_target": baselines["grpo_target"]["rollouts"],
        "single_adapter": baselines["single_adapter"]["rollouts"],
        "gepa": baselines["gepa"]["rollouts"],
    }
    rollouts = {m: n for m, n in rollouts.items() if m in summaries}
    methods = {
        m: {
            "success": s["success"],
            "ci95": list(s["ci95"]),
            "episodes": s["episodes"],
            "rollouts_used": rollouts[m],
            "mean_return": s["mean_return"],
            "well_formed_rate": s["well_formed_rate"],
        }
        for m, s in summaries.items()
    }
    for m, s in summaries.items():
        if m != "base":  # paired on the same held-out seeds
            methods[m]["return_vs_base"] = paired_difference(s["returns"], summaries["base"]["returns"])
    curve = budget_curve(run, policy, gepa_policy, train, baselines, routed, budget, methods)
    effects = adapter_effects(run, policy, synth, train, summaries["base"])
    out: dict[str, Any] = {
        "methods": methods,
        "heldout_seeds": [seed0, seed0 + n - 1],
        "curve": curve,
        "adapters": effects,
    }
    if c.tau2_data not in ("", "none"):  # the real benchmark's tasks, routed by the same router
        tau_id, tau_n, data = "trace/tau2-retail-v0", min(n, 2 if c.quick else 20), {"data_dir": c.tau2_data}
        if plain[0] is None:  # on a server: the router still needs the base model here
            plain = load_agent(model_path, c)
        table = dict(enumerate(build_router(run, synth, *plain).route(_openings(tau_id, 0, tau_n, **data))))
        out["tau2"] = {}
        for name, adapter in (("base", None), ("trace", lambda env_id, seed: table.get(seed))):
            s = ev.evaluate(
                policy,
                tau_id,
                tau_n,
                0,
                adapter=adapter,
                batch_size=c.batch_size,
                store=evals / f"tau2-{name}.jsonl",
                resume=True,
                env_kwargs={**turn_limit(c.max_turns), **data},
            )
            out["tau2"][name] = {"success": s["success"], "ci95": list(s["ci95"]), "episodes": s["episodes"]}
    return out


def _rate(summary: Mapping[str, Any], cap: str) -> dict[str, Any]:
    """A capability's mistake rate in an evaluation summary, with its episodes and 95% Wilson CI."""
    from trace_agents.stats import wilson

    got = summary["capabilities"].get(cap, {"episodes": 0, "mistake_rate": 0.0})
    n = int(got["episodes"])
    wrong = round(got["mistake_rate"] * n)
    return {"mistake_rate": got["mistake_rate"], "episodes": n, "ci95": list(wilson(wrong, n)) if n else None}


def adapter_effects(
    run: Run, policy: Any, synth: Mapping[str, Any], train: Mapping[str, Any], base_target: Mapping[str, Any]
) -> dict[str, Any]:
    """Whether each adapter does its job: its capability's mistake rate, base agent vs adapter, on
    ``curve_episodes`` held-out seeds of the capability's synthetic env and of the target (the
    first of the methods' seeds; the base agent's target rate is read on all of the methods' seeds)."""
    from trace_agents import evaluate as ev

    c = run.config
    evals = run.dir / "eval"
    seed0, n = SEEDS["heldout"], min(c.curve_episodes, c.eval_episodes)
    out = {}
    for cap, env_id in synth.get("envs", {}).items():
        kw = dict(batch_size=c.batch_size, resume=True, progress=False, env_kwargs=turn_limit(c.max_turns))
        base_env = ev.evaluate(policy, env_id, n, seed0, store=evals / f"adapter-{cap}-env-base.jsonl", **kw)
        tuned_env = ev.evaluate(policy, env_id, n, seed0, adapter=cap, store=evals / f"adapter-{cap}-env.jsonl", **kw)
        tuned_target = ev.evaluate(
            policy, c.target, n, seed0, adapter=cap, store=evals / f"adapter-{cap}-target.jsonl", **kw
        )
        out[cap] = {
            "env": env_id,
            "env_base": _rate(base_env, cap),
            "env_adapter": _rate(tuned_env, cap),
            "target_base": _rate(base_target, cap),
            "target_adapter": _rate(tuned_target, cap),
            "env_success": [base_env["success"], tuned_env["success"]],
        }
        run.log(
            f"adapter {cap}: mistake rate on {env_id} {out[cap]['env_base']['mistake_rate']:.3f} -> "
            f"{out[cap]['env_adapter']['mistake_rate']:.3f}, on {c.target} "
            f"{out[cap]['target_base']['mistake_rate']:.3f} -> {out[cap]['target_adapter']['mistake_rate']:.3f}"
        )
    return out


def _merged_choices(run: Run, policy: Any, route: Mapping[str, Any]) -> dict[int, Any]:
    from trace_agents.routing import TopPMerge

    class Fixed:  # the stored probabilities of the route stage
        def probabilities(self, openings: Sequence[Mapping[str, Any]]) -> list[dict[str | None, float]]:
            return [
                {(None if k == "None" else k): v for k, v in route["probabilities"][o["seed"]].items()}
                for o in openings
            ]

    merge = TopPMerge(Fixed(), policy.model, run.config.top_p)  # type: ignore[arg-type]
    seeds = sorted(route["probabilities"])
    return {int(s): choice for s, choice in zip(seeds, merge.route([{"seed": s} for s in seeds]), strict=True)}


def checkpoint_choice(policy: Any, choice: str | None, names: Mapping[str, str], tag: str) -> str | None:
    """The adapter a routed ``choice`` stands for at a checkpoint whose adapters are ``names``
    (capability -> loaded name): that capability's, or for a top-p merge, the same merge of
    the checkpoint's adapters (made once, as ``<merge>-<tag>``)."""
    from trace_agents.routing import add_merge, merge_parts

    parts = merge_parts(choice)
    if parts is None:
        return names.get(choice) if choice else None
    return add_merge(policy.model, [(names[a], w) for a, w in parts], f"{choice}-{tag}")


def budget_curve(
    run: Run,
    policy: Any,
    gepa_policy: Any,
    train: Mapping[str, Any],
    baselines: Mapping[str, Any],
    routed: Mapping[int, Any],
    budget: int,
    methods: Mapping[str, Any],
) -> dict[str, list[list[float]]]:
    """Success and mean return against rollouts used: intermediate checkpoints (and GEPA's best prompt so
    far) plus the ends.

    Args:
        run: The run: its config, and its directory (points are stored under ``eval/``).
        policy: The evaluated policy; each checkpoint's adapter is loaded into it as ``<name>@<step>``.
        gepa_policy: The policy GEPA's prompts are set on (left with the best one); None: no GEPA curve.
        train: The train stage's result (the adapters, whose runs' checkpoints give the points).
        baselines: The baselines stage's result (the GRPO adapters; GEPA's discovery counts,
            scores and prompts).
        routed: The router's choice per held-out seed (a capability, a top-p merge, or None).
        budget: Every rollout TRACE spent (GEPA's budget too): TRACE's curve starts at the part
            spent before training, and GEPA's points sit at even fractions of it.
        methods: The evaluation's table of methods: every curve's end point, and its start
            (the base agent's).
    """
    from trace_agents import evaluate as ev
    from trace_agents.training import checkpoints as saved

    c = run.config
    # The router chose adapters for the evaluation seeds only: the curve uses the first of them.
    seed0, n = SEEDS["heldout"], min(c.curve_episodes, c.eval_episodes)
    base = [methods["base"]["success"], methods["base"]["mean_return"]]
    pre_training = budget - int(train["rollouts"])
    # Points are [rollouts used, success, mean return].
    curve: dict[str, list[list[float]]] = {
        "trace": [[float(pre_training), *base]],
        "grpo_target": [[0.0, *base]],
        "single_adapter": [[0.0, *base]],
    }
    if gepa_policy is not None:
        curve["gepa"] = [[0.0, *base]]
    evals = run.dir / "eval"

    def checkpoints(adapter_dir: str) -> list[tuple[int, Path]]:
        """The run's checkpoints holding an adapter, oldest first, without the last (the final adapter)."""
        found = sorted(
            (step, d) for step, d in saved(Path(adapter_dir).parent) if (d / "adapter_model.safetensors").exists()
        )
        return found[:-1]

    # GRPO on the target and the single adapter: their checkpoints.
    for method in ("grpo_target", "single_adapter"):
        for step, d in checkpoints(baselines[method]["adapter"]):
            name = f"{method}@{step}"
            if name not in policy.adapters:
                policy.load_adapter(name, d)
            s = ev.evaluate(
                policy,
                c.target,
                n,
                seed0,
                adapter=name,
                batch_size=c.batch_size,
                store=evals / "curve.jsonl",
                resume=True,
                progress=False,
                env_kwargs=turn_limit(c.max_turns),
            )
            curve[method].append([float(step * c.rollouts_per_step), s["success"], s["mean_return"]])
    # TRACE: every capability adapter at the same fraction of its steps.
    per_cap = {cap: checkpoints(path) for cap, path in train["adapters"].items()}
    depth = min((len(v) for v in per_cap.values()), default=0)
    for i in range(depth):
        names, used = {}, 0
        for cap, points in per_cap.items():
            step, d = points[i]
            names[cap] = f"{cap}@{step}"
            used += step * c.rollouts_per_step
            if names[cap] not in policy.adapters:
                policy.load_adapter(names[cap], d)
        at_step = {seed: checkpoint_choice(policy, choice, names, f"ckpt{i}") for seed, choice in routed.items()}
        s = ev.evaluate(
            policy,
            c.target,
            n,
            seed0,
            adapter=lambda env_id, seed, at=at_step: at.get(seed),
            batch_size=c.batch_size,
            store=evals / "curve.jsonl",
            resume=True,
            progress=False,
            env_kwargs=turn_limit(c.max_turns),
        )
        curve["trace"].append([float(pre_training + used), s["success"], s["mean_return"]])
    for m in [m for m in curve if m != "gepa"]:
        curve[m].append([float(methods[m]["rollouts_used"]), methods[m]["success"], methods[m]["mean_return"]])
    if gepa_policy is None:
        return curve
    # GEPA: the best prompt discovered within each fraction of the budget.
    gepa = baselines["gepa"]
    counts, scores, prompts = gepa.get("discovery_counts", []), gepa.get("val_scores", []), gepa.get("prompts", [])
    for k in range(1, c.curve_points + 1):
        limit = budget * k / (c.curve_points + 1)
        found = [i for i, cnt in enumerate(counts) if cnt <= limit]
        if not found:
            continue
        best = max(found, key=lambda i: scores[i])
        gepa_policy.system_prompt = prompts[best]
        gepa_policy.forget()
        s = ev.evaluate(
            gepa_policy,
            c.target,
            n,
            seed0,
            batch_size=c.batch_size,
            store=evals / "curve-gepa.jsonl",
            resume=True,
            progress=False,
            env_kwargs=turn_limit(c.max_turns),
        )
        curve["gepa"].append([float(limit), s["success"], s["mean_return"]])
    gepa_policy.system_prompt = gepa["best_prompt"]
    curve["gepa"].append(
        [float(methods["gepa"]["rollouts_used"]), methods["gepa"]["success"], methods["gepa"]["mean_return"]]
    )
    return curve
