"""Feature-group ablation of the scorer: clone the same demonstrations with a group of inputs removed.

Each variant is cloned from scratch on the same deficient-oracle demonstrations (the
bootstrap's defaults) with one group of inputs zeroed in training and in evaluation, then
evaluated on the same held-out ``trace/retail-v0`` seeds, sampled at temperature 1 (as
the pipeline evaluates) and greedy. Groups (see docs/pipeline.md#what-the-scorer-reads):

- ``texts``: every embedding (state texts, candidates, glosses, customer sentences);
- ``candidate sentences``: the customer's sentences that contain a candidate's ids;
- ``glosses``: the record pieces of a candidate's first id;
- ``relations``: every per-candidate number (id relations, ranks, value matches...);
- ``state numbers``: the per-decision counters;
- ``attention``: the attention layer across candidates (the network without it).

Writes ``results/scorer-ablation.{json,md}``. Numbers are reported, never asserted.

    python benchmarks/bench_scorer_ablation.py --demos 400 --episodes 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import git_commit, machine_info  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
GROUPS = ("none", "texts", "candidate sentences", "glosses", "relations", "state numbers", "attention")


def _zeroing(group: str) -> Any:
    def apply(batch: dict[str, Any]) -> dict[str, Any]:
        batch = dict(batch)
        if group == "texts":
            batch["state"] = batch["state"] * 0
            batch["candidates"] = batch["candidates"] * 0
        elif group in ("glosses", "candidate sentences"):
            slot = 1 if group == "glosses" else 2
            c = batch["candidates"].clone()
            c[:, :, slot] = 0
            batch["candidates"] = c
        elif group == "relations":
            batch["candidate_numbers"] = batch["candidate_numbers"] * 0
        elif group == "state numbers":
            batch["state_numbers"] = batch["state_numbers"] * 0
        return batch

    return apply


def run_ablation(
    demos: int = 400,
    episodes: int = 200,
    groups: tuple[str, ...] = GROUPS,
    seed: int = 0,
    out_dir: str | Path = DEFAULT_OUT,
) -> dict[str, Any]:
    from trace_agents import evaluate as ev
    from trace_agents.bootstrap import DEFAULT_DEFICITS, TARGET
    from trace_agents.scorer.agent import ScorerPolicy
    from trace_agents.scorer.bootstrap import ScorerBootstrapConfig, demo_plan
    from trace_agents.scorer.clone import clone, demo_decisions
    from trace_agents.scorer.network import ScorerNetConfig

    defaults = ScorerBootstrapConfig(out="unused")
    data = demo_decisions(demo_plan(demos, defaults.target_share), DEFAULT_DEFICITS, seed=seed)
    rows = []
    for group in groups:
        t = time.perf_counter()
        policy = ScorerPolicy.new(ScorerNetConfig(hidden=defaults.hidden, attention=group != "attention"), seed=seed)
        tensors = policy.tensors
        zero = _zeroing(group)
        policy.tensors = lambda decisions, _t=tensors, _z=zero: _z(_t(decisions))  # type: ignore[method-assign]
        log = clone(
            policy,
            data.decisions,
            data.labels,
            epochs=defaults.epochs,
            batch_size=defaults.batch_size,
            learning_rate=defaults.learning_rate,
            seed=seed,
        )
        row: dict[str, Any] = {"removed": group, "train_accuracy": log[-1]["accuracy"]}
        for name, temperature in (("sampled", 1.0), ("greedy", 0.0)):
            policy.temperature = temperature
            s = ev.evaluate(policy, TARGET, episodes, 1_000_000, batch_size=32, progress=False)
            row[name] = {"success": s["success"], "ci95": s["ci95"], "mean_return": s["mean_return"]}
        row["seconds"] = time.perf_counter() - t
        rows.append(row)
        print(
            f"[ablation] {group}: sampled {row['sampled']['success']:.3f}, greedy {row['greedy']['success']:.3f}",
            flush=True,
        )
        out = _write(out_dir, demos, len(data.decisions), episodes, seed, rows)  # after every row: a kill keeps them
    return out


def _write(
    out_dir: str | Path, demos: int, decisions: int, episodes: int, seed: int, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    out = {
        "demos": demos,
        "decisions": decisions,
        "episodes": episodes,
        "seed": seed,
        "rows": rows,
        "machine": machine_info(),
        "git_commit": git_commit(),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scorer-ablation.json").write_text(json.dumps(out, indent=2) + "\n")
    (out_dir / "scorer-ablation.md").write_text(markdown(out))
    return out


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"Scorer feature ablation: each row clones the same {r['demos']} deficient-oracle demonstrations "
        f"({r['decisions']} decisions) with one input group removed, then plays {r['episodes']} held-out "
        f"`trace/retail-v0` seeds (1000000..). {m.get('cpu_model')}, {m.get('cpu_count')} CPUs; commit "
        f"`{r['git_commit']}`. Command: `python benchmarks/bench_scorer_ablation.py --demos {r['demos']} "
        f"--episodes {r['episodes']}`.",
        "",
        "| removed | train accuracy | success, sampled (95% CI) | success, greedy (95% CI) | mean return, sampled |",
        "|---|---:|---|---|---:|",
    ]
    for row in r["rows"]:
        s, g = row["sampled"], row["greedy"]
        lines.append(
            f"| {row['removed']} | {row['train_accuracy']:.3f} | {s['success']:.3f} "
            f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] | {g['success']:.3f} "
            f"[{g['ci95'][0]:.3f}, {g['ci95'][1]:.3f}] | {s['mean_return']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demos", type=int, default=400, help="demonstration episodes (default: 400)")
    p.add_argument("--episodes", type=int, default=200, help="held-out episodes per variant (default: 200)")
    p.add_argument("--groups", nargs="+", default=list(GROUPS), choices=GROUPS, help="variants to run")
    p.add_argument("--seed", type=int, default=0, help="seed of demos, init and sampling (default: 0)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output directory")
    a = p.parse_args(argv)
    r = run_ablation(a.demos, a.episodes, tuple(a.groups), a.seed, a.out)
    print(markdown(r), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
