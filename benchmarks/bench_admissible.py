"""How complete and how small the admissible-action lists are, per env id.

Run from the repository root::

    .venv/bin/python benchmarks/bench_admissible.py                      # every registered id, 100 seeds
    TAU2_DATA_DIR=DIR .venv/bin/python benchmarks/bench_admissible.py    # with trace/tau2-retail-v0

For each id, :func:`trace_envs.testing.admissible_coverage` plays the oracle (with no
deficits) on seeds ``0..N-1`` (every task of the τ²-bench env) and checks at each step
whether its action is in the list exactly or by an equivalent (an action leaving the same
requests resolved, refused, answered and confirmed, the same writes and reads). It writes
``<out>/admissible.json`` (every number, the misses by tool or message and examples, the
machine and the commit) and ``<out>/admissible.md`` (a table).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or loaded by path
import gymnasium as gym
from machine import git_commit, machine_info  # noqa: E402

from trace_envs import TraceError, registered_ids
from trace_envs.testing import admissible_coverage

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def coverage_of(env_id: str, seeds: int) -> dict[str, Any]:
    """The coverage record of one id (every task of an env whose family has task ids)."""
    env = gym.make(env_id)
    family = env.unwrapped.family
    if family.by_id is not None:  # a benchmark's fixed task list: play every task once
        from trace_envs.tasks import tau2

        seeds = len(tau2.task_ids(env.unwrapped.trace_spec.params))
    return {"seeds": seeds, **admissible_coverage(env, range(seeds))}


def markdown(result: dict[str, Any]) -> str:
    """The coverage table."""
    m = result["machine"]
    lines = [
        "# Admissible actions: oracle coverage and list sizes",
        "",
        f"Machine: {m['platform']}, {m.get('cpu_model') or m.get('machine')}, {m['cpu_count']} CPUs; "
        f"commit `{(result['git_commit'] or 'unknown')[:12]}`; {result['created']}. "
        f"Command: `{result['command']}`.",
        "",
        "Coverage: the share of the oracle's steps whose action is listed, exactly or by an equivalent "
        "(see `trace_envs.testing.equivalent_action`). Sizes over every step the oracle played.",
        "",
        "| id | seeds | steps | exact | equivalent | missed | coverage | size median/p90/max | misses (most common) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for env_id, r in result["envs"].items():
        misses = ", ".join(f"{k} {v}" for k, v in list(r["misses"].items())[:6]) or "none"
        lines.append(
            f"| `{env_id}` | {r['seeds']} | {r['steps']} | {r['exact']} | {r['equivalent']} | {r['missed']} "
            f"| {r['coverage']:.1%} | {r['size_median']}/{r['size_p90']}/{r['size_max']} | {misses} |"
        )
    for env_id, why in result["skipped"].items():
        lines.append(f"| `{env_id}` | skipped: {why[:140]} | | | | | | | |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: measure, write admissible.json and admissible.md, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", nargs="+", metavar="ID", help="env ids (default: every registered id)")
    parser.add_argument("--seeds", type=int, default=100, help="seeds per synthetic env (default: 100)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"output directory (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    envs, skipped = {}, {}
    for env_id in args.ids or registered_ids():
        try:
            envs[env_id] = coverage_of(env_id, args.seeds)
        except TraceError as exc:  # e.g. the τ²-bench env without its data
            skipped[env_id] = f"{type(exc).__name__}: {exc}"
    result = {
        "benchmark": "admissible actions",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_admissible.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "git_commit": git_commit(),
        "envs": envs,
        "skipped": skipped,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "admissible.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "admissible.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
