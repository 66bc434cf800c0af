"""Why TRACE does or does not beat GRPO on the target: routing, merging and each adapter alone.

For each finished ``trace run`` directory, on **development** seeds of the target (by default
5,000,000 on, disjoint from every seed range the pipeline uses, held-out ones included), this
plays the run's base agent with:

- ``routed``: TRACE as the run evaluates it (the run's embedding router, rebuilt from the same
  synthetic openings, picks one adapter per episode from its opening);
- ``top-p 0.9``: the run's router with ``--top-p 0.9`` (the adapters that reach 0.9 of its
  probability, merged with its weights; :class:`trace_agents.routing.TopPMerge`);
- ``merged``: the capability adapters' updates summed with equal weights, for every episode (no
  router: every capability at once);
- each capability adapter alone, for every episode;
- ``base``, ``grpo_target`` and ``single_adapter``, for reference.

Each row gives success (95% Wilson CI), mean return and, per capability, the target's mistake
rate (the capability registry's predicates), plus which adapter the router chose how often. The
episodes are stored under ``--work`` and reused on a second call (``resume``).

    python benchmarks/routing_diagnosis.py runs/s0 runs/s1 runs/s2 --episodes 200
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import git_commit, machine_info  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
DEV_SEEDS = 5_000_000  # disjoint from trace_agents.run.config.SEEDS (the largest range starts at 3,000,000)
MERGED = "merged"


def diagnose_run(run_dir: Path, seed_start: int, episodes: int, work: Path) -> dict[str, Any]:
    """Every variant of one run on the same development seeds (see the module docstring)."""
    from trace_agents import evaluate as ev
    from trace_agents.routing import TopPMerge, add_merge, most_likely
    from trace_agents.run.stages import _openings, build_router, register_specs
    from trace_agents.run.workdir import load_agent

    flags = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    stages = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in (run_dir / "stages").glob("*.json")}
    missing = {"base", "synthesize", "train", "baselines"} - set(stages)
    if missing:
        raise SystemExit(f"{run_dir}: stage(s) {sorted(missing)} not finished; finish the run first")
    if flags.get("router", "embedding") != "embedding":
        raise SystemExit(f"{run_dir}: this diagnosis rebuilds an embedding router; the run used {flags['router']!r}")
    config = SimpleNamespace(
        temperature=flags["temperature"],
        seed=flags["seed"],
        router="embedding",
        router_examples=flags["router_examples"],
    )
    model, tok = load_agent(stages["base"]["model"], config)
    if tok is not None:
        raise SystemExit(f"{run_dir}: an lm run; this diagnosis is for the scorer (a PEFT merge per episode)")
    policy = model
    register_specs(stages["synthesize"])
    caps = list(stages["train"]["adapters"])
    for cap, path in stages["train"]["adapters"].items():
        policy.load_adapter(cap, path)
    for name in ("grpo_target", "single_adapter"):
        policy.load_adapter(name, stages["baselines"][name]["adapter"])
    add_merge(policy.model, [(cap, 1 / len(caps)) for cap in caps], MERGED)

    router = build_router(SimpleNamespace(config=config), stages["synthesize"], model, tok)  # the run's own
    target = flags["target"]
    openings = _openings(target, seed_start, episodes)
    routed = {seed_start + i: c for i, c in enumerate(most_likely(router.probabilities(openings)))}
    top_p = dict(zip(routed, TopPMerge(router, policy.model, 0.9).route(openings), strict=True))

    variants: dict[str, Any] = {
        "base": None,
        "routed": lambda env_id, seed: routed[seed],
        "top-p 0.9": lambda env_id, seed: top_p[seed],
        MERGED: MERGED,
        **{f"{cap} alone": cap for cap in caps},
        "grpo_target": "grpo_target",
        "single_adapter": "single_adapter",
    }
    store = work / run_dir.name
    store.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, adapter in variants.items():
        s = ev.evaluate(
            policy,
            target,
            episodes,
            seed_start,
            adapter=adapter,
            batch_size=flags["batch_size"],
            store=store / f"{name.replace(' ', '-')}.jsonl",
            resume=True,
        )
        rows[name] = {
            "success": s["success"],
            "ci95": list(s["ci95"]),
            "mean_return": s["mean_return"],
            "mistake_rates": {c: v["mistake_rate"] for c, v in sorted(s["capabilities"].items())},
        }
        print(f"{run_dir.name} {name}: success {s['success']:.3f}", file=sys.stderr)
    return {
        "run": str(run_dir),
        "seed": flags["seed"],
        "capabilities": caps,
        "routed_to": dict(collections.Counter(str(c) for c in routed.values())),
        "variants": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# Routing diagnosis: TRACE routed, merged and per adapter",
        "",
        f"Command: `{result['command']}`. Machine: {m['cpu_model']}, {m['cpus_usable']} CPUs, no GPU; "
        f"commit `{result['commit']}`. "
        f"{result['episodes']} development seeds of the target from {result['seed_start']:,} (never used by "
        "the pipeline), sampled at the run's temperature.",
        "",
    ]
    for run in result["runs"]:
        variants = run["variants"]
        caps = sorted({c for v in variants.values() for c in v["mistake_rates"]})
        lines += [
            f"## Run `{run['run']}` (pipeline seed {run['seed']})",
            "",
            "Router's choices on these openings: "
            + ", ".join(f"{k} {v}" for k, v in sorted(run["routed_to"].items(), key=lambda kv: -kv[1]))
            + ".",
            "",
            "| variant | success (95% CI) | mean return | " + " | ".join(f"{c} mistakes" for c in caps) + " |",
            "|---|---|---:|" + "---:|" * len(caps),
        ]
        for name, v in variants.items():
            lo, hi = v["ci95"]
            rates = " | ".join(f"{v['mistake_rates'].get(c, float('nan')):.3f}" for c in caps)
            lines.append(f"| {name} | {v['success']:.3f} [{lo:.3f}, {hi:.3f}] | {v['mean_return']:.3f} | {rates} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished scorer run directories")
    p.add_argument("--episodes", type=int, default=200, help="development seeds per variant (default: 200)")
    p.add_argument("--seed-start", type=int, default=DEV_SEEDS, help=f"first development seed (default: {DEV_SEEDS:,})")
    p.add_argument("--work", type=Path, default=Path("runs/routing-diagnosis"), help="where episodes are stored")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    p.add_argument("--name", default="routing-diagnosis", help="output file stem (default: routing-diagnosis)")
    p.add_argument("--command", default=None, help="the command line, for the record (default: this one)")
    args = p.parse_args(argv)
    for d in args.runs:
        if not (d / "config.json").is_file():
            p.error(f"{d} is not a run directory (no config.json)")
    result = {
        "command": args.command or "python benchmarks/routing_diagnosis.py " + " ".join(sys.argv[1:]),
        "commit": (git_commit() or "unknown")[:12],
        "machine": machine_info(),
        "episodes": args.episodes,
        "seed_start": args.seed_start,
        "runs": [diagnose_run(d, args.seed_start, args.episodes, args.work) for d in args.runs],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.out / f"{args.name}.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
