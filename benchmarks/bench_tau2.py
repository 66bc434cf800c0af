"""Throughput of trace/tau2-retail-v0 against what a naive env would do, side by side.

Run ``python benchmarks/bench_tau2.py --seconds 2`` (data from ``--data-dir``, else
``$TAU2_DATA_DIR``, else ``../shared/tau2`` beside the checkout). Everything runs in one
process, each measurement for ``--seconds`` of wall time; it writes
``benchmarks/results/tau2.json`` and ``tau2.md``. The numbers are never asserted in tests.

What each number means (all are operations per second of wall time, single thread):

- **reset/s**. *Ours*: ``env.unwrapped.reset(options={"task_id": id})`` on the env made by
  ``gym.make("trace/tau2-retail-v0")``, cycling through every task id (tasks are converted
  once and cached, the 2.8 MB database is shared copy-on-write). *Baseline*: what a naive
  env does per episode before anything else: ``copy.deepcopy`` of the whole loaded DB
  (products, users, orders). Nothing else of a reset is in the baseline, so the ratio is
  a lower bound on the speed-up.
- **scoring/s**: scoring one finished episode by τ²-bench's DB rule. The episodes are
  played to the end by the oracle beforehand (one env per task with gold writes); only
  scoring is timed. *Ours*: ``env.unwrapped.gold_db()`` (the gold writes replayed on a
  copy-on-write fork) plus ``trace_envs.db.diff_keys(log.db, gold)``. *Baseline*:
  ``copy.deepcopy`` of the full DB, the gold writes applied with ``RETAIL_TOOLS`` on
  ``Database.from_json(copy)``, then ``==`` of the two full JSON dicts (the gold one and
  the agent's final DB via ``db.to_json()``). Both are checked to agree before timing.
- **read calls/s**: read tools, cycling real ids over ``get_order_details``,
  ``get_user_details``, ``get_product_details`` and ``find_user_id_by_email``.
  *Env step*: ``env.unwrapped.step(tool_call(...))``, the full step path (parse the action
  text, check arguments, run the tool, JSON-encode the result, log the messages, build
  ``info``), resetting when an episode truncates at ``max_turns``; *env step (wrapped)*:
  the same through ``gym.make``'s wrappers. *Bare tool*: ``RETAIL_TOOLS[name].fn(db, **args)``
  on an episode's copy-on-write DB. *Baseline*: a naive tool on a plain dict: a
  ``copy.deepcopy`` of the returned record (so the caller cannot corrupt shared state) and a
  linear scan of the users for ``find_user_id_by_email``. Ratios compare against it.

The issue's targets: reset >= 1,500/s, scoring >= 900/s, read-tool calls >= 60,000/s. The
report says which read-call number (the full env step or the bare tool) meets the last one.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or loaded by path
import gymnasium as gym
from machine import git_commit, machine_info  # noqa: E402

import trace_envs  # noqa: F401  (registers the env ids)
from trace_envs import OraclePolicy, tool_call
from trace_envs.db import Database, Table, diff_keys
from trace_envs.domains.retail.tools import RETAIL_TOOLS
from trace_envs.errors import ToolError
from trace_envs.tasks import tau2

ENV_ID = "trace/tau2-retail-v0"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "tau2"
TARGETS = {"reset": 1500.0, "scoring": 900.0, "read_calls": 60000.0}
N_IDS = 64  # ids per read tool in the cycle


# -- timing -------------------------------------------------------------------------------------
def _rate(run_batch: Callable[[], int], seconds: float) -> dict[str, float]:
    """Call ``run_batch`` (returns how many operations it did) until ``seconds`` pass; at least once."""
    clock = time.perf_counter
    ops = 0
    start = clock()
    deadline = start + seconds
    while True:
        ops += run_batch()
        now = clock()
        if now >= deadline:
            break
    elapsed = now - start
    return {"per_s": ops / elapsed, "ops": ops, "seconds": elapsed}


def _side(ours: dict[str, float], baseline: dict[str, float], target: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"ours": ours, "baseline": baseline, "ratio": ours["per_s"] / baseline["per_s"]}
    if target is not None:
        out["target"] = target
        out["met"] = ours["per_s"] >= target
    return out


# -- machine ------------------------------------------------------------------------------------
# -- the measurements ---------------------------------------------------------------------------
def _make(data_dir: str):
    return gym.make(ENV_ID, data_dir=data_dir)


def bench_reset(data_dir: str, data: tau2.Tau2Data, seconds: float) -> dict[str, Any]:
    env = _make(data_dir).unwrapped
    ids = list(data.by_id)
    for tid in ids:  # warm the per-process task cache, as a long training run would be
        env.reset(options={"task_id": tid})
    options = [{"task_id": tid} for tid in ids]

    def ours() -> int:
        for opt in options:
            env.reset(options=opt)
        return len(options)

    def baseline() -> int:
        copy.deepcopy(data.tables)
        return 1

    return _side(_rate(ours, seconds), _rate(baseline, seconds), TARGETS["reset"])


def _finished_episodes(data_dir: str, data: tau2.Tau2Data) -> list[Any]:
    """One env per task with gold writes, played to the end by the oracle."""
    envs = []
    for tid in data.by_id:
        env = _make(data_dir).unwrapped
        obs, info = env.reset(options={"task_id": tid})
        if not env.task.gold_calls:
            continue
        oracle = OraclePolicy()
        oracle.reset(env)
        for _ in range(env.trace_spec.max_turns):
            obs, _, terminated, truncated, info = env.step(oracle.act(obs, info))
            if terminated or truncated:
                break
        envs.append(env)
    return envs


def _naive_score(env) -> bool:
    gold = Database.from_json(copy.deepcopy(env.task.tables))
    for call in env.task.gold_calls:
        try:
            RETAIL_TOOLS[call.name].fn(gold, **call.arguments)
        except ToolError:
            pass
    return gold.to_json() == env.log.db.to_json()


def bench_scoring(data_dir: str, data: tau2.Tau2Data, seconds: float) -> dict[str, Any]:
    envs = _finished_episodes(data_dir, data)
    ours_says = [not diff_keys(e.log.db, e.gold_db()) for e in envs]
    naive_says = [_naive_score(e) for e in envs]
    agree = ours_says == naive_says

    def ours() -> int:
        for e in envs:
            diff_keys(e.log.db, e.gold_db())
        return len(envs)

    state = {"i": 0}

    def baseline() -> int:
        _naive_score(envs[state["i"] % len(envs)])
        state["i"] += 1
        return 1

    out = _side(_rate(ours, seconds), _rate(baseline, seconds), TARGETS["scoring"])
    out.update(episodes=len(envs), ours_and_baseline_agree=agree, episodes_matching_gold=sum(ours_says))
    return out


def _read_cycle(data: tau2.Tau2Data) -> list[tuple[str, dict[str, str]]]:
    orders = sorted(data.tables["orders"])[:N_IDS]
    users = sorted(data.tables["users"])[:N_IDS]
    products = sorted(data.tables["products"])[:N_IDS]
    emails = [data.tables["users"][u]["email"] for u in users]
    cycle = []
    for k in range(N_IDS):
        cycle.append(("get_order_details", {"order_id": orders[k % len(orders)]}))
        cycle.append(("get_user_details", {"user_id": users[k % len(users)]}))
        cycle.append(("get_product_details", {"product_id": products[k % len(products)]}))
        cycle.append(("find_user_id_by_email", {"email": emails[k % len(emails)]}))
    return cycle


def _naive_tools(tables: dict[str, dict]) -> dict[str, Callable[..., Any]]:
    def find_user_id_by_email(email: str) -> str:
        for uid, user in tables["users"].items():
            if user["email"].lower() == email.lower():
                return uid
        raise KeyError(email)

    return {
        "get_order_details": lambda order_id: copy.deepcopy(tables["orders"][order_id]),
        "get_user_details": lambda user_id: copy.deepcopy(tables["users"][user_id]),
        "get_product_details": lambda product_id: copy.deepcopy(tables["products"][product_id]),
        "find_user_id_by_email": find_user_id_by_email,
    }


def _env_step_rate(env, actions: list[str], seconds: float) -> dict[str, float]:
    env.reset(options={"task_id": "0"})

    def run() -> int:
        step = env.step
        for a in actions:
            _, _, terminated, truncated, _ = step(a)
            if terminated or truncated:
                env.reset(options={"task_id": "0"})
        return len(actions)

    return _rate(run, seconds)


def bench_read_calls(data_dir: str, data: tau2.Tau2Data, seconds: float) -> dict[str, Any]:
    cycle = _read_cycle(data)
    actions = [tool_call(name, **args) for name, args in cycle]
    env_step = _env_step_rate(_make(data_dir).unwrapped, actions, seconds)
    env_step_wrapped = _env_step_rate(_make(data_dir), actions, seconds)

    db = Database({name: Table(records) for name, records in data.tables.items()})
    bare_calls = [(RETAIL_TOOLS[name].fn, args) for name, args in cycle]

    def bare() -> int:
        for fn, args in bare_calls:
            fn(db, **args)
        return len(bare_calls)

    naive_db = copy.deepcopy(data.tables)
    naive = _naive_tools(naive_db)
    naive_calls = [(naive[name], args) for name, args in cycle]

    def baseline() -> int:
        for fn, args in naive_calls:
            fn(**args)
        return len(naive_calls)

    bare_rate = _rate(bare, seconds)
    base = _rate(baseline, seconds)
    target = TARGETS["read_calls"]
    return {
        "env_step": _side(env_step, base, target),
        "env_step_wrapped": _side(env_step_wrapped, base, target),
        "bare_tool": _side(bare_rate, base, target),
        "baseline": base,
        "target": target,
        "met_by": [
            name
            for name, r in (("env_step", env_step), ("env_step_wrapped", env_step_wrapped), ("bare_tool", bare_rate))
            if r["per_s"] >= target
        ],
        "tools": sorted({name for name, _ in cycle}),
    }


# -- report --------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def _row(label: str, side: dict[str, Any], baseline_label: str) -> str:
    met = side.get("met")
    met_s = "" if met is None else ("yes" if met else "**no**")
    target = f"≥ {_fmt(side['target'])}" if "target" in side else ""
    return (
        f"| {label} | {_fmt(side['ours']['per_s'])} | {_fmt(side['baseline']['per_s'])} ({baseline_label}) "
        f"| {side['ratio']:,.1f}x | {target} | {met_s} |"
    )


def to_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    r = result["results"]
    reads = r["read_calls"]
    lines = [
        "# trace/tau2-retail-v0 throughput",
        "",
        f"Commit `{result['git_commit']}`; {m['cpu_model']}, {m['cpu_count']} CPUs; {m['platform']}; "
        f"Python {m['python']} ({m['python_implementation']}); {result['seconds']} s per measurement, one process.",
        "",
        "| measure (per second) | ours | baseline | ratio | target | met |",
        "|---|---:|---:|---:|---:|:---:|",
        _row("reset", r["reset"], "deepcopy of the DB"),
        _row("DB-rule scoring of a finished episode", r["scoring"], "deepcopy + apply + full =="),
        _row("read-tool calls, full env.step", reads["env_step"], "naive tool"),
        _row("read-tool calls, env.step via gym.make wrappers", reads["env_step_wrapped"], "naive tool"),
        _row("read-tool calls, bare tool function", reads["bare_tool"], "naive tool"),
        "",
        f"Scoring: {r['scoring']['episodes']} oracle-finished episodes, ours and baseline agree: "
        f"{r['scoring']['ours_and_baseline_agree']}.",
        f"Read-call target ({_fmt(reads['target'])}/s) met by: "
        + (", ".join(reads["met_by"]) if reads["met_by"] else "none")
        + ".",
        "",
        "Baselines: reset = `copy.deepcopy` of the whole loaded DB per episode; scoring = deepcopy of the DB, "
        "gold writes applied on `Database.from_json(copy)`, `==` of the full JSON dicts; read calls = a plain-dict "
        "tool that deep-copies the returned record and scans users linearly for an email.",
        "",
    ]
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run_benchmark(
    data_dir: str | os.PathLike | None = None, seconds: float = 2.0, out_dir: str | os.PathLike = "benchmarks/results"
) -> dict[str, Any]:
    """Measure reset, scoring and read-call throughput; write tau2.json and tau2.md under ``out_dir``."""
    if data_dir is None:
        data_dir = os.environ.get(tau2.ENV_VAR) or (DEFAULT_DATA if DEFAULT_DATA.is_dir() else None)
    retail = tau2.resolve_data_dir(data_dir)  # a SpecError that says how to point at the data
    data = tau2.load(retail)
    data_dir = str(retail)
    started = time.time()
    results = {
        "reset": bench_reset(data_dir, data, seconds),
        "scoring": bench_scoring(data_dir, data, seconds),
        "read_calls": bench_read_calls(data_dir, data, seconds),
    }
    result = {
        "env_id": ENV_ID,
        "data_dir": data_dir,
        "tasks": len(data.tasks),
        "seconds": seconds,
        "machine": machine_info(),
        "git_commit": git_commit() or "unknown",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_s": time.time() - started,
        "targets": dict(TARGETS),
        "targets_met": {
            "reset": results["reset"]["met"],
            "scoring": results["scoring"]["met"],
            "read_calls": bool(results["read_calls"]["met_by"]),
            "read_calls_met_by": results["read_calls"]["met_by"],
        },
        "results": results,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "tau2.json", json.dumps(result, indent=2) + "\n")
    _write(out / "tau2.md", to_markdown(result))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", default=None, help="τ²-bench data dir (default: $TAU2_DATA_DIR or ../shared/tau2)"
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="wall seconds per measurement (default 2)")
    parser.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"), help="where to write tau2.json/.md")
    args = parser.parse_args(argv)
    result = run_benchmark(args.data_dir, args.seconds, args.out_dir)
    sys.stdout.write(to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
