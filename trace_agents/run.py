"""``trace run``: the whole TRACE loop, and the baselines at the same rollout budget, into ``runs/<name>/``.

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

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from trace_agents import require_train_extra
from trace_agents.rollout import turn_limit
from trace_agents.stats import paired_difference

SEEDS = {"collect": 10_000, "train": 100_000, "grpo_target": 200_000, "gepa": 300_000, "router_fit": 400_000,
         "router_test": 450_000, "heldout": 3_000_000}
METHODS = ("base", "trace", "grpo_target", "single_adapter", "gepa")


@dataclass
class RunConfig:
    """Settings of ``trace run``; every field is a CLI flag. ``--quick`` shrinks them for CI."""

    name: str = field(default="default", metadata={"help": "run name: artefacts go to <runs-dir>/<name>/"})
    runs_dir: str = field(default="runs", metadata={"help": "parent directory of runs"})
    model: str | None = field(default=None, metadata={"help": "base model (HF dir or id); default: bootstrap"})
    target: str = field(default="trace/retail-v0", metadata={"help": "target env id"})
    collect_episodes: int = field(default=60, metadata={"help": "base-agent episodes on the target for analysis"})
    min_capabilities: int = field(default=1, metadata={
        "help": "train at least this many capabilities: when fewer pass selection, the next ranked by "
                "gap x coverage (ER- minus ER+, times coverage) are added (marked 'forced' in the report)"})
    max_capabilities: int = field(default=3, metadata={"help": "train at most this many capabilities"})
    calibration_seeds: int = field(default=4, metadata={"help": "B: seeds per calibration probe"})
    calibration_rollouts: int = field(default=4, metadata={"help": "K: rollouts per calibration seed"})
    calibration_probes: int = field(default=3, metadata={"help": "bisection steps at most per capability"})
    steps_per_adapter: int = field(default=6, metadata={"help": "GRPO steps per capability adapter"})
    num_generations: int = field(default=4, metadata={"help": "GRPO group size K"})
    groups_per_step: int = field(default=2, metadata={"help": "GRPO tasks per step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "LoRA learning rate"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    max_new_tokens: int = field(default=160, metadata={"help": "longest agent turn in tokens"})
    router: str = field(default="embedding", metadata={"help": "embedding (kNN over openings) or label (scoring)"})
    router_examples: int = field(default=16, metadata={"help": "example openings per synthetic env for the router"})
    top_p: float = field(default=0.0, metadata={"help": "merge adapters up to this router mass (0: no merging)"})
    eval_episodes: int = field(default=40, metadata={"help": "held-out target episodes per method"})
    curve_points: int = field(default=2, metadata={"help": "intermediate budget points per method on the curve"})
    curve_episodes: int = field(default=20, metadata={
        "help": "held-out episodes per intermediate curve point (at most eval_episodes)"})
    gepa_minibatch: int = field(default=3, metadata={"help": "GEPA reflection minibatch"})
    gepa_tasks: int = field(default=8, metadata={"help": "GEPA train/val tasks on the target"})
    max_turns: int = field(default=0, metadata={"help": "override every env's turn limit (0: each spec's own)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the agent"})
    batch_size: int = field(default=16, metadata={"help": "episodes generated for at once"})
    seed: int = field(default=0, metadata={"help": "seed of sampling, training and resampling"})
    vllm_url: str = field(default="", metadata={
        "help": "play every episode on this vLLM server serving --model (collection, calibration, GRPO "
                "rollouts, GEPA, evaluation; the router and GEPA's reflection stay here; empty: all "
                "in-process); a run may resume with another"})
    quick: bool = field(default=False, metadata={"help": "the CI-sized run (a few minutes on 2 CPU cores)"})

    def __post_init__(self) -> None:
        if self.router not in ("embedding", "label"):
            raise ValueError(f"router must be 'embedding' or 'label', got {self.router!r}")
        if not 0 <= self.top_p <= 1:
            raise ValueError(f"top_p must be in [0, 1], got {self.top_p}")
        for name in ("collect_episodes", "min_capabilities", "max_capabilities", "steps_per_adapter",
                     "eval_episodes", "gepa_tasks", "batch_size", "router_examples", "groups_per_step",
                     "calibration_seeds", "calibration_rollouts", "calibration_probes", "curve_episodes",
                     "gepa_minibatch", "max_new_tokens", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise ValueError("num_generations must be >= 2")
        if self.max_turns < 0 or self.curve_points < 0:
            raise ValueError(f"max_turns and curve_points must be >= 0, got {self.max_turns} and {self.curve_points}")
        from trace_envs.registration import check_id

        check_id(self.target)  # before the base agent is bootstrapped, not after
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0: GRPO samples its rollouts with it, got {self.temperature}")
        if self.min_capabilities > self.max_capabilities:
            raise ValueError(f"min_capabilities ({self.min_capabilities}) must be <= max_capabilities "
                             f"({self.max_capabilities})")
        if self.vllm_url and not self.model:
            raise ValueError("--vllm-url needs --model, the base model the server already serves (a run cannot "
                             "serve the model it bootstraps: run trace bootstrap first)")
        if self.vllm_url and self.top_p > 0:
            raise ValueError("--top-p merging builds the merged adapters in-process; it does not go with "
                             "--vllm-url (use --top-p 0)")

    @property
    def dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def rollouts_per_step(self) -> int:
        return self.num_generations * self.groups_per_step


# The CI-sized run. Its base agent has had a few SFT steps, so it rambles until the spec's
# turn limit: short turns (max_new_tokens) and few episodes keep that cheap.
QUICK = dict(collect_episodes=8, calibration_seeds=2, calibration_rollouts=2, calibration_probes=1,
             max_capabilities=1, steps_per_adapter=1, num_generations=2, groups_per_step=2, max_new_tokens=16,
             router_examples=4, eval_episodes=6, curve_points=1, curve_episodes=4, gepa_tasks=2, gepa_minibatch=1,
             max_turns=10,
             batch_size=8)


def quick(config: RunConfig) -> RunConfig:
    """``config`` shrunk to the CI-sized run (fields left at their defaults only)."""
    defaults = RunConfig()
    changes = {k: v for k, v in QUICK.items() if getattr(config, k) == getattr(defaults, k)}
    return replace(config, quick=True, **changes)


# ---------------------------------------------------------------- plumbing
# Settings that say where work runs, not what it computes: a run may resume with others.
_TRANSPORT = frozenset({"vllm_url"})


class Run:
    """One run directory: stage markers, JSON artefacts and the log."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.dir = config.dir
        (self.dir / "stages").mkdir(parents=True, exist_ok=True)
        saved = self.dir / "config.json"
        mine = asdict(config)
        if saved.exists():
            before = json.loads(saved.read_text(encoding="utf-8"))
            changed = sorted(k for k in mine if k in before and before[k] != mine[k] and k not in _TRANSPORT)
            if changed:
                raise ValueError(f"{self.dir} holds a run with other settings ({', '.join(changed)}); resume it "
                                 f"with the same flags or choose another --name")
        saved.write_text(json.dumps(mine, indent=2) + "\n", encoding="utf-8")

    def done(self, stage: str) -> dict[str, Any] | None:
        path = self.dir / "stages" / f"{stage}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def finish(self, stage: str, result: Mapping[str, Any]) -> dict[str, Any]:
        path = self.dir / "stages" / f"{stage}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)  # atomic: a stage is done or not
        return dict(result)

    def log(self, message: str) -> None:
        line = f"[run {time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        with open(self.dir / "run.log", "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def stage(self, name: str, fn: Any) -> dict[str, Any]:
        found = self.done(name)
        if found is not None:
            self.log(f"{name}: done before, skipped")
            return found
        t = time.perf_counter()
        self.log(f"{name}: start")
        result = fn()
        result["seconds"] = round(time.perf_counter() - t, 1)
        self.log(f"{name}: done in {result['seconds']:.0f} s")
        return self.finish(name, result)


def _policy(model: Any, tokenizer: Any, config: RunConfig, *, system_prompt: str | None = None) -> Any:
    """The agent every stage plays with: ``model`` in-process, or ``config.model`` on ``config.vllm_url``
    (``model`` may then be None)."""
    if config.vllm_url:
        return _served_policy(config, system_prompt)
    from trace_agents.policy import HFPolicy

    return HFPolicy(model, tokenizer, temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                    seed=config.seed, system_prompt=system_prompt)


def _served_policy(config: RunConfig, system_prompt: str | None) -> Any:
    """An :class:`~trace_agents.endpoint.EndpointPolicy` on the base model the server lists (checked
    against ``config.model``), with this run's adapters loaded under names of its own (runs
    sharing a server do not collide)."""
    import hashlib
    import warnings

    from trace_agents.endpoint import VLLM_ROLLOUTS, EndpointPolicy, served_base_model

    base = served_base_model(config.vllm_url)
    served, ours = str(base.get("root") or base["id"]), str(config.model)
    local = Path(served).exists(), Path(ours).exists()
    if all(local) and Path(served).resolve() != Path(ours).resolve() or not any(local) and served != ours:
        raise ValueError(f"the server at {config.vllm_url} serves {served}, but this run's base model is {ours}: "
                         f"serve {ours} there (the adapters are trained on it)")
    if any(local) and not all(local):
        warnings.warn(f"cannot tell whether {served}, served at {config.vllm_url}, is this run's base model {ours} "
                      f"(one is a local path, the other is not)", stacklevel=2)
    run_id = hashlib.sha1(str(config.dir.resolve()).encode()).hexdigest()[:8]
    return EndpointPolicy(config.vllm_url, str(base["id"]), obs_format="compact", temperature=config.temperature,
                          max_tokens=config.max_new_tokens, seed=config.seed, system_prompt=system_prompt,
                          adapter_prefix=f"trace-{run_id}:", name=ours, extra_body=VLLM_ROLLOUTS)


# ---------------------------------------------------------------- stages
def stage_base(run: Run) -> dict[str, Any]:
    c = run.config
    if c.model:
        return {"model": c.model, "bootstrapped": False}
    from trace_agents.bootstrap import BootstrapConfig
    from trace_agents.bootstrap import run as bootstrap

    kw: dict[str, Any] = {"out": str(run.dir / "bootstrap"), "seed": c.seed}
    if c.quick:
        kw.update(demos=40, max_steps=12, eval_episodes=2, eval_envs=[c.target], max_new_tokens=c.max_new_tokens)
    report = bootstrap(BootstrapConfig(**kw))
    return {"model": report["model_dir"], "bootstrapped": True, "bootstrap_checks": report["checks"],
            "copy_probe": report.get("copy_probe")}


def stage_collect(run: Run, model: Any, tok: Any) -> dict[str, Any]:
    from trace_agents.rollout import rollout
    from trace_agents.trajectories import TrajectoryStore

    c = run.config
    path = run.dir / "collect.jsonl"
    seeds = range(SEEDS["collect"], SEEDS["collect"] + c.collect_episodes)
    result = rollout(_policy(model, tok, c), c.target, seeds, batch_size=c.batch_size, store=path, resume=True,
                     env_kwargs=turn_limit(c.max_turns))
    records = TrajectoryStore(path).select(c.target, seeds)
    return {"trajectories": str(path), "episodes": len(records), "rollouts": len(records),
            "success": sum(r["success"] for r in records) / len(records), "ran_now": result.n_episodes}


def stage_analyze(run: Run, collect: Mapping[str, Any]) -> dict[str, Any]:
    from trace_agents import analysis
    from trace_agents.trajectories import TrajectoryStore

    c = run.config
    records = TrajectoryStore(collect["trajectories"]).select(
        c.target, range(SEEDS["collect"], SEEDS["collect"] + c.collect_episodes))
    report = analysis.analyze(records, thresholds=analysis.Thresholds(seed=c.seed))
    selected = list(report["selected"])[:c.max_capabilities]
    forced = []
    if len(selected) < c.min_capabilities:  # the report ranks the rest by gap x coverage
        rest = [cap for cap in report["capabilities"] if cap not in selected]
        forced = rest[:c.min_capabilities - len(selected)]
    report["selected_by_analysis"] = list(report["selected"])
    report["selected"] = selected + forced
    report["forced"] = forced
    paths = analysis.write_report(report, run.dir / "analysis.json")
    return {"selected": report["selected"], "forced": forced, "by_analysis": report["selected_by_analysis"],
            "paths": {k: str(v) for k, v in paths.items()}}


def stage_synthesize(run: Run, analyze: Mapping[str, Any], model: Any, tok: Any) -> dict[str, Any]:
    from trace_agents import synthesis as sy

    c = run.config
    report = {"selected": analyze["selected"]}
    config = sy.CalibrationConfig(seeds=c.calibration_seeds, rollouts=c.calibration_rollouts,
                                  max_probes=c.calibration_probes)
    results = sy.synthesize(report, c.target, run.dir / "specs",
                            probe=sy.rollout_probe(_policy(model, tok, c), batch_size=c.batch_size,
                                                   env_kwargs=turn_limit(c.max_turns)), config=config)
    rollouts = sum((r["calibration"] or {}).get("rollouts_used", 0) for r in results)
    return {"envs": {r["capability"]: r["id"] for r in results}, "paths": {r["capability"]: r["path"] for r in results},
            "calibration": {r["capability"]: r["calibration"] for r in results}, "rollouts": rollouts}


def register_specs(synth: Mapping[str, Any]) -> None:
    """Register the run's synthetic envs in this process (a resumed run needs them again)."""
    from trace_envs import register_spec

    for path in synth.get("paths", {}).values():
        register_spec(path, override=True)


def _grpo(run: Run, name: str, env_ids: Sequence[str], steps: int, seed_start: int, model_path: str
          ) -> dict[str, Any]:
    from trace_agents.training import GRPOSettings, train_adapter

    c = run.config
    out = run.dir / "adapters" / name
    summary_path = out / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text(encoding="utf-8"))
    save_steps = max(1, steps // (c.curve_points + 1))
    settings = GRPOSettings(out=str(out), env_ids=list(env_ids), seed_start=seed_start, max_steps=steps,
                            num_generations=c.num_generations, groups_per_step=c.groups_per_step,
                            learning_rate=c.learning_rate, lora_r=c.lora_r, max_new_tokens=c.max_new_tokens,
                            temperature=c.temperature, rollout_batch_size=c.batch_size, save_steps=save_steps,
                            seed=c.seed, max_turns=c.max_turns, vllm_url=c.vllm_url)
    run.log(f"train {name}: {steps} GRPO steps on {', '.join(env_ids)}")
    return train_adapter(settings, model_path, resume=(out / "log.jsonl").exists())


def stage_train(run: Run, synth: Mapping[str, Any], model_path: str) -> dict[str, Any]:
    c = run.config
    adapters = {cap: _grpo(run, cap, [env_id], c.steps_per_adapter, SEEDS["train"], model_path)
                for cap, env_id in synth["envs"].items()}
    return {"adapters": {cap: s["adapter"] for cap, s in adapters.items()},
            "rollouts": sum(s["rollouts_used"] for s in adapters.values()),
            "per_adapter": {cap: s["rollouts_used"] for cap, s in adapters.items()}}


def _openings(env_id: str, start: int, n: int) -> list[dict[str, Any]]:
    from trace_agents.routing import example_openings

    return example_openings(env_id, range(start, start + n))


def build_router(run: Run, synth: Mapping[str, Any], model: Any, tok: Any) -> Any:
    from trace_agents import routing

    c = run.config
    if c.router == "label":
        descriptions = {cap: routing.describe(cap) for cap in synth["envs"]}
        return routing.LabelScoringRouter(model, tok, descriptions, allow_none=False)
    router = routing.EmbeddingRouter(routing.default_embedder(model, tok), k=5)
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
    return {"router": c.router, "embedder": getattr(getattr(router, "embed", None), "name", None),
            "accuracy": accuracy, "choices": {str(SEEDS["heldout"] + i): ch for i, ch in enumerate(choices)},
            "probabilities": {str(SEEDS["heldout"] + i): {str(k): v for k, v in p.items()}
                              for i, p in enumerate(probs)}}


def trace_budget(collect: Mapping[str, Any], synth: Mapping[str, Any], train: Mapping[str, Any]) -> int:
    """Every episode TRACE played: analysis, calibration and GRPO."""
    return int(collect["rollouts"]) + int(synth["rollouts"]) + int(train["rollouts"])


def baseline_steps(budget: int, rollouts_per_step: int) -> int:
    """GRPO steps that fit in ``budget`` episodes (at least one)."""
    return max(1, budget // rollouts_per_step)


def stage_baselines(run: Run, synth: Mapping[str, Any], budget: int, model_path: str, model: Any, tok: Any
                    ) -> dict[str, Any]:
    c = run.config
    steps = baseline_steps(budget, c.rollouts_per_step)
    target = _grpo(run, "grpo_target", [c.target], steps, SEEDS["grpo_target"], model_path)
    single = _grpo(run, "single_adapter", list(synth["envs"].values()), steps, SEEDS["train"], model_path)
    gepa = _gepa(run, budget, model_path)
    return {"budget": budget, "steps": steps,
            "grpo_target": {"adapter": target["adapter"], "rollouts": target["rollouts_used"]},
            "single_adapter": {"adapter": single["adapter"], "rollouts": single["rollouts_used"]},
            "gepa": gepa}


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
    result = run_gepa(_policy(model, tok, c), tasks, budget, LocalReflection(model, tok), minibatch=c.gepa_minibatch,
                      seed=c.seed, batch_size=c.batch_size, log_path=run.dir / "gepa.log",
                      env_kwargs=turn_limit(c.max_turns))
    result["rollouts"] = result["rollouts_used"]
    save_json(result, path)
    return result


def stage_evaluate(run: Run, synth: Mapping[str, Any], train: Mapping[str, Any], route: Mapping[str, Any],
                   baselines: Mapping[str, Any], budget: int, model_path: str) -> dict[str, Any]:
    from trace_agents.models import load

    c = run.config

    def own_model() -> tuple[Any, Any]:
        """In-process, each policy has a model of its own (the first gets LoRA layers injected);
        on a server, the adapters are loaded there and nothing is loaded here."""
        return (None, None) if c.vllm_url else load(model_path)

    policy = _policy(*own_model(), c)
    gepa_model, gepa_tok = own_model()
    gepa_policy = _policy(gepa_model, gepa_tok, c, system_prompt=baselines["gepa"]["best_prompt"])
    try:
        return _evaluate_methods(run, synth, train, route, baselines, budget, model_path, policy, gepa_policy,
                                 plain=(gepa_model, gepa_tok))
    finally:
        if c.vllm_url:
            policy.close()


def _evaluate_methods(run: Run, synth: Mapping[str, Any], train: Mapping[str, Any], route: Mapping[str, Any],
                      baselines: Mapping[str, Any], budget: int, model_path: str, policy: Any, gepa_policy: Any,
                      plain: tuple[Any, Any]) -> dict[str, Any]:
    """``plain``: the base model without LoRA layers (GEPA's, in-process), or (None, None)."""
    from trace_agents import evaluate as ev
    from trace_agents.models import load

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
        summary = ev.evaluate(pol, c.target, n, seed0, adapter=adapter, batch_size=c.batch_size,
                              store=evals / f"{name}.jsonl", resume=True, env_kwargs=turn_limit(c.max_turns))
        run.log(f"evaluate {name}: success {summary['success']:.3f} {summary['ci95']}")
        return summary

    summaries = {
        "base": one("base", policy, None),
        "trace": one("trace", policy, lambda env_id, seed: routed.get(seed)),
        "grpo_target": one("grpo_target", policy, "grpo_target"),
        "single_adapter": one("single_adapter", policy, "single_adapter"),
        "gepa": one("gepa", gepa_policy, None),
    }
    rollouts = {"base": 0, "trace": budget, "grpo_target": baselines["grpo_target"]["rollouts"],
                "single_adapter": baselines["single_adapter"]["rollouts"], "gepa": baselines["gepa"]["rollouts"]}
    methods = {m: {"success": s["success"], "ci95": list(s["ci95"]), "episodes": s["episodes"],
                   "rollouts_used": rollouts[m], "mean_return": s["mean_return"],
                   "well_formed_rate": s["well_formed_rate"]} for m, s in summaries.items()}
    for m, s in summaries.items():
        if m != "base":  # paired on the same held-out seeds
            methods[m]["return_vs_base"] = paired_difference(s["returns"], summaries["base"]["returns"])
    curve = budget_curve(run, policy, gepa_policy, train, baselines, routed, budget, methods)
    out: dict[str, Any] = {"methods": methods, "heldout_seeds": [seed0, seed0 + n - 1], "curve": curve}
    if os.environ.get("TAU2_DATA_DIR"):  # the real benchmark's tasks, routed by the same router
        tau_id, tau_n = "trace/tau2-retail-v0", min(n, 2 if c.quick else 20)
        if plain[0] is None:  # on a server: the router still needs the base model here
            plain = load(model_path)
        table = dict(enumerate(build_router(run, synth, *plain).route(_openings(tau_id, 0, tau_n))))
        out["tau2"] = {}
        for name, adapter in (("base", None), ("trace", lambda env_id, seed: table.get(seed))):
            s = ev.evaluate(policy, tau_id, tau_n, 0, adapter=adapter, batch_size=c.batch_size,
                            store=evals / f"tau2-{name}.jsonl", resume=True, env_kwargs=turn_limit(c.max_turns))
            out["tau2"][name] = {"success": s["success"], "ci95": list(s["ci95"]), "episodes": s["episodes"]}
    return out


def _merged_choices(run: Run, policy: Any, route: Mapping[str, Any]) -> dict[int, Any]:
    from trace_agents.routing import TopPMerge

    class Fixed:  # the stored probabilities of the route stage
        def probabilities(self, openings: Sequence[Mapping[str, Any]]) -> list[dict[str | None, float]]:
            return [{(None if k == "None" else k): v for k, v in route["probabilities"][o["seed"]].items()}
                    for o in openings]

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


def budget_curve(run: Run, policy: Any, gepa_policy: Any, train: Mapping[str, Any], baselines: Mapping[str, Any],
                 routed: Mapping[int, Any], budget: int, methods: Mapping[str, Any]) -> dict[str, list[list[float]]]:
    """Success and mean return against rollouts used: intermediate checkpoints (and GEPA's best prompt so
    far) plus the ends."""
    from trace_agents import evaluate as ev
    from trace_agents.training import checkpoints as saved

    c = run.config
    # The router chose adapters for the evaluation seeds only: the curve uses the first of them.
    seed0, n = SEEDS["heldout"], min(c.curve_episodes, c.eval_episodes)
    base = [methods["base"]["success"], methods["base"]["mean_return"]]
    pre_training = budget - int(train["rollouts"])
    # Points are [rollouts used, success, mean return].
    curve: dict[str, list[list[float]]] = {
        "trace": [[float(pre_training), *base]], "grpo_target": [[0.0, *base]], "gepa": [[0.0, *base]]}
    evals = run.dir / "eval"

    def checkpoints(adapter_dir: str) -> list[tuple[int, Path]]:
        """The run's checkpoints holding an adapter, oldest first, without the last (the final adapter)."""
        found = sorted((step, d) for step, d in saved(Path(adapter_dir).parent)
                       if (d / "adapter_model.safetensors").exists())
        return found[:-1]

    # GRPO on the target: its checkpoints.
    for step, d in checkpoints(baselines["grpo_target"]["adapter"]):
        name = f"grpo_target@{step}"
        if name not in policy.adapters:
            policy.load_adapter(name, d)
        s = ev.evaluate(policy, c.target, n, seed0, adapter=name, batch_size=c.batch_size,
                        store=evals / "curve.jsonl", resume=True, progress=False, env_kwargs=turn_limit(c.max_turns))
        curve["grpo_target"].append([float(step * c.rollouts_per_step), s["success"], s["mean_return"]])
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
        s = ev.evaluate(policy, c.target, n, seed0, adapter=lambda env_id, seed, at=at_step: at.get(seed),
                        batch_size=c.batch_size, store=evals / "curve.jsonl", resume=True, progress=False,
                        env_kwargs=turn_limit(c.max_turns))
        curve["trace"].append([float(pre_training + used), s["success"], s["mean_return"]])
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
        s = ev.evaluate(gepa_policy, c.target, n, seed0, batch_size=c.batch_size, store=evals / "curve-gepa.jsonl",
                        resume=True, progress=False, env_kwargs=turn_limit(c.max_turns))
        curve["gepa"].append([float(limit), s["success"], s["mean_return"]])
    gepa_policy.system_prompt = gepa["best_prompt"]
    for m in ("trace", "grpo_target", "gepa"):
        curve[m].append([float(methods[m]["rollouts_used"]), methods[m]["success"], methods[m]["mean_return"]])
    return curve


# ---------------------------------------------------------------- report
def write_report(run: Run, stages: Mapping[str, Any]) -> dict[str, Any]:
    c = run.config
    evaluation = stages["evaluate"]
    results = {"methods": evaluation["methods"], "heldout_seeds": evaluation["heldout_seeds"],
               "target": c.target, "budget": stages["budget"], "curve": evaluation["curve"]}
    if "tau2" in evaluation:
        results["tau2"] = evaluation["tau2"]
    (run.dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    plots = {
        "success": plot_success(evaluation["methods"], run.dir / "success.png"),
        "curve": plot_curve(evaluation["curve"], run.dir / "budget_curve.png"),
        "routing": plot_confusion(stages["route"]["accuracy"]["confusion"], run.dir / "routing_confusion.png"),
    }
    analysis_png = stages["analyze"]["paths"].get("png")
    (run.dir / "report.md").write_text(format_report(run, stages, results, plots, analysis_png), encoding="utf-8")
    return results


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_success(methods: Mapping[str, Mapping[str, Any]], path: Path) -> str | None:
    plt = _plt()
    if plt is None:
        return None
    names = list(methods)
    y = [methods[m]["success"] for m in names]
    lo = [y[i] - methods[m]["ci95"][0] for i, m in enumerate(names)]
    hi = [methods[m]["ci95"][1] - y[i] for i, m in enumerate(names)]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(names, y, yerr=[lo, hi], capsize=4, color=["#888888", "#d62728", "#1f77b4", "#9467bd", "#2ca02c"][:len(y)])
    ax.set_ylabel("held-out success (95% CI)")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_curve(curve: Mapping[str, Sequence[Sequence[float]]], path: Path) -> str | None:
    plt = _plt()
    if plt is None:
        return None
    fig, (ax, ax_ret) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, points in curve.items():
        pts = sorted(points)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        with_return = [p for p in pts if len(p) > 2]
        ax_ret.plot([p[0] for p in with_return], [p[2] for p in with_return], marker="o", label=name)
    ax.set_xlabel("env rollouts used")
    ax.set_ylabel("held-out success")
    ax.set_ylim(-0.03, 1)
    ax_ret.set_xlabel("env rollouts used")
    ax_ret.set_ylabel("held-out mean return")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_confusion(confusion: Mapping[str, Mapping[str, int]], path: Path) -> str | None:
    plt = _plt()
    if plt is None or not confusion:
        return None
    rows = list(confusion)
    cols = sorted({k for r in confusion.values() for k in r}, key=lambda k: (k not in rows, rows.index(k) if k in rows
                                                                             else 0, k))
    data = [[confusion[r].get(k, 0) for k in cols] for r in rows]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(cols), 1.2 + 0.6 * len(rows)))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(cols)), [k.replace("_", "\n") for k in cols], fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    for i, row in enumerate(data):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    ax.set_xlabel("routed to")
    ax.set_ylabel("true env")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _signed(diff: Mapping[str, Any]) -> str:
    """``+0.053 [+0.027, +0.079]`` from a :func:`~trace_agents.stats.paired_difference`."""
    ci = diff.get("ci95")
    return f"{diff['mean']:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")


def _copy_note(probe: Mapping[str, Any] | None) -> str:
    """What the bootstrap's copy probe says about a base agent that never succeeds ('' without one)."""
    if not probe or probe.get("continuation_accuracy") is None:
        return ""
    return (f" Its copy probe (bootstrap report) gets {probe['continuation_accuracy']:.3f} of the digits after an "
            "id's first right, where chance is about 0.1: an agent that cannot copy the ids its tool calls need "
            "cannot succeed.")


def findings(results: Mapping[str, Any], stages: Mapping[str, Any]) -> list[str]:
    """Plain statements of what the numbers show (no tuning happens on these seeds)."""
    m = results["methods"]
    out = []
    t, b = m["trace"], m["base"]
    verdict = "above" if t["success"] > b["success"] else ("equal to" if t["success"] == b["success"] else "below")
    sig = "the 95% CIs overlap" if _overlap(t["ci95"], b["ci95"]) else "the 95% CIs do not overlap"
    out.append(f"TRACE is {verdict} the base agent on held-out seeds ({t['success']:.3f} vs {b['success']:.3f}; {sig}).")
    for other in ("grpo_target", "single_adapter", "gepa"):
        o = m[other]
        rel = "above" if t["success"] > o["success"] else ("equal to" if t["success"] == o["success"] else "below")
        out.append(f"TRACE is {rel} {other} ({t['success']:.3f} vs {o['success']:.3f} at "
                   f"{t['rollouts_used']} vs {o['rollouts_used']} rollouts; "
                   f"{'CIs overlap' if _overlap(t['ci95'], o['ci95']) else 'CIs do not overlap'}).")
    returns = ", ".join(f"{k} {v['mean_return']:.3f}" for k, v in m.items())
    out.append(f"Mean return (the dense signal GRPO optimizes): {returns}.")
    paired = [f"{k} {_signed(v['return_vs_base'])}" for k, v in m.items() if v.get("return_vs_base")]
    if paired:
        out.append("Mean return minus the base agent's, paired on the same seeds (95% CI): " + ", ".join(paired) + ".")
    analyze = stages["analyze"]
    if analyze.get("forced"):
        out.append(f"No capability (or too few) passed selection; trained the next ranked by gap x coverage "
                   f"instead: {', '.join(analyze['forced'])}.")
    if stages.get("collect", {}).get("success") == 0:
        out.append("No collected episode succeeded, so analysis had no success to contrast with: capabilities "
                   "were selected on ER- (their share of failures) alone.")
    for cap, cal in (stages["synthesize"].get("calibration") or {}).items():
        if cal and cal.get("status") != "in_band":
            out.append(f"Calibration of {cap} ended {cal.get('status')}: its env is outside the reward band, so "
                       f"GRPO groups there carry less signal.")
    acc = stages["route"]["accuracy"]["accuracy"]
    out.append(f"Routing accuracy on held-out synthetic openings: {acc:.2f}.")
    if b["success"] == 0 and t["success"] == 0:
        out.append("The base agent never succeeds on the target, so success cannot separate the methods; compare "
                   "mean returns." + _copy_note(stages.get("base", {}).get("copy_probe")))
    return out


def format_report(run: Run, stages: Mapping[str, Any], results: Mapping[str, Any], plots: Mapping[str, Any],
                  analysis_png: str | None) -> str:
    c = run.config
    m = results["methods"]
    lines = [f"# TRACE run `{c.name}`", "",
             f"Target `{c.target}`; held-out seeds {results['heldout_seeds'][0]}–{results['heldout_seeds'][1]} "
             f"({c.eval_episodes} episodes per method); base model `{stages['base']['model']}`"
             + (" (quick CI configuration)" if c.quick else "") + ".", "",
             "## Success by method", "",
             "| method | success | 95% CI | mean return | vs base (paired, 95% CI) | well-formed | episodes "
             "| rollouts used |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in m.items():
        vs = _signed(r["return_vs_base"]) if r.get("return_vs_base") else "–"
        lines.append(f"| {name} | {r['success']:.3f} | [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | "
                     f"{r['mean_return']:.3f} | {vs} | {r['well_formed_rate']:.3f} | {r['episodes']} | "
                     f"{r['rollouts_used']} |")
    if plots.get("success"):
        lines += ["", f"![success by method]({plots['success']})"]
    lines += ["", "## Findings", ""] + [f"- {f}" for f in findings(results, stages)]
    budget = stages["budget"]
    lines += ["", "## Rollout budget", "",
              f"TRACE used {budget['trace']} episodes: {budget['collect']} for analysis, {budget['calibration']} for "
              f"calibration and {budget['training']} for GRPO. Each baseline was given {budget['trace']}."]
    if plots.get("curve"):
        lines += ["", f"![rollout-budget curve]({plots['curve']})"]
    an = stages["analyze"]
    lines += ["", "## Analysis", "", f"Selected by analysis: {', '.join(an['by_analysis']) or 'none'}; trained: "
              f"{', '.join(an['selected'])}."]
    if analysis_png:
        lines += ["", f"![ER+ and ER- per capability]({Path(analysis_png).name})"]
    lines += ["", "## Synthetic envs", "", "| capability | env | calibration | mean reward |", "|---|---|---|---|"]
    for cap, env_id in stages["synthesize"]["envs"].items():
        cal = stages["synthesize"]["calibration"].get(cap) or {}
        lines.append(f"| {cap} | `{env_id}` | {cal.get('status', '-')} | {_fmt(cal.get('mean_reward'))} |")
    route = stages["route"]
    lines += ["", "## Routing", "", f"Router: {route['router']}"
              + (f" ({route['embedder']})" if route.get("embedder") else "")
              + f"; accuracy on held-out synthetic openings {route['accuracy']['accuracy']:.2f} "
                f"(n = {route['accuracy']['n']})."]
    if plots.get("routing"):
        lines += ["", f"![routing confusion]({plots['routing']})"]
    gepa = stages["baselines"]["gepa"]
    lines += ["", "## GEPA", "", f"{gepa['candidates']} candidate prompts, best validation score "
              f"{_fmt(gepa.get('best_val_score'))}. Reflection ran on the local model; a tiny model rarely proposes "
              f"a better prompt, so use an OpenAI-compatible endpoint for a real comparison.", "",
              "Best prompt:", "", "```", gepa["best_prompt"][:1500], "```"]
    if "tau2" in results:
        lines += ["", "## τ²-bench retail", "", "| method | success | 95% CI | episodes |", "|---|---|---|---|"]
        for name, r in results["tau2"].items():
            lines.append(f"| {name} | {r['success']:.3f} | [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | "
                         f"{r['episodes']} |")
    lines += ["", "## Time", "", "| stage | seconds |", "|---|---|"]
    for name, st in stages.items():
        if isinstance(st, Mapping) and "seconds" in st:
            lines.append(f"| {name} | {st['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


# ---------------------------------------------------------------- the pipeline
def run(config: RunConfig) -> dict[str, Any]:
    """Run (or resume) every stage; returns ``results.json``'s content."""
    require_train_extra("trl")
    from trace_agents.models import load

    if config.quick:
        config = quick(config)
    t0 = time.perf_counter()
    r = Run(config)
    stages: dict[str, Any] = {}
    stages["base"] = r.stage("base", lambda: stage_base(r))
    model_path = stages["base"]["model"]
    model, tok = load(model_path)
    stages["collect"] = r.stage("collect", lambda: stage_collect(r, model, tok))
    stages["analyze"] = r.stage("analyze", lambda: stage_analyze(r, stages["collect"]))
    stages["synthesize"] = r.stage("synthesize", lambda: stage_synthesize(r, stages["analyze"], model, tok))
    register_specs(stages["synthesize"])
    stages["train"] = r.stage("train", lambda: stage_train(r, stages["synthesize"], model_path))
    stages["route"] = r.stage("route", lambda: stage_route(r, stages["synthesize"], model, tok))
    budget = trace_budget(stages["collect"], stages["synthesize"], stages["train"])
    stages["budget"] = {"trace": budget, "collect": stages["collect"]["rollouts"],
                        "calibration": stages["synthesize"]["rollouts"], "training": stages["train"]["rollouts"]}
    stages["baselines"] = r.stage("baselines", lambda: stage_baselines(r, stages["synthesize"], budget, model_path,
                                                                       model, tok))
    stages["evaluate"] = r.stage("evaluate", lambda: stage_evaluate(r, stages["synthesize"], stages["train"],
                                                                    stages["route"], stages["baselines"], budget,
                                                                    model_path))
    results = write_report(r, stages)
    r.log(f"wrote {r.dir / 'report.md'} and results.json ({time.perf_counter() - t0:.0f} s this call)")
    return results
