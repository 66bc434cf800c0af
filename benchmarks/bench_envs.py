"""Throughput and memory of every registered trace env, measured in one process.

Run from the repository root::

    .venv/bin/python benchmarks/bench_envs.py --seconds 2          # every registered id
    .venv/bin/python benchmarks/bench_envs.py --ids trace/precondition-v0 --seconds 0.5
    trace-envs bench --seconds 2                                    # the same, through the CLI

or call :func:`run_benchmark` from Python. It writes ``<out>/envs.json`` (every number,
the machine and the commit) and ``<out>/envs.md`` (a markdown table).

What each number means (per env id; ``S`` is ``--seconds``, the timed budget of one id,
split evenly over the five timed loops):

- **resets/s**: ``reset(seed=i)`` for ``i = 0, 1, ...`` on the unwrapped env, nothing
  else. A reset generates a task, builds its database and renders the first observation.
- **oracle steps/s**: :class:`~trace_envs.OraclePolicy` plays whole episodes (seeds
  0, 1, ...) on the unwrapped env; steps counted over the loop's wall time, which
  includes resets and the oracle's planning. This is what a rollout worker sees.
- **oracle steps/s (step only)**: the same loop, but only the time spent inside
  ``env.step`` is counted: the cost of one env transition.
- **gym.make steps/s** (and step only): the same oracle loop through ``gym.make``'s
  wrappers (``TimeLimit``, ``OrderEnforcing``, ``PassiveEnvChecker``), i.e. their overhead.
- **oracle steps/s, admissible lists on** (and step only): the oracle loop on an env made
  with ``admissible_actions=True`` (see :mod:`trace_envs.admissible`), and the sizes of the
  lists it saw (median, p90, max): the cost of listing the choices for a small or classic
  agent. The step-only rate includes the list the env builds in ``step``; the wall rate
  also the first list, built in ``reset``.
- **adversarial steps/s**: a fixed list of hostile actions (:data:`ADVERSARIAL`: huge
  strings, NUL bytes, ``"[" * 100000``, dunder tool names, wrong types, unknown tools,
  lone surrogates, valid-looking calls with bad ids, ...) cycled on the unwrapped env,
  resetting whenever an episode ends; only step time is counted. ``slowest adversarial``
  names the action with the highest mean step time, to spot a pathological input.
- **peak MiB**: the peak of Python allocations made during the five loops (after the env
  was built and warmed up), from ``tracemalloc``, in a separate, shorter pass so that
  tracing does not distort the timings. Module imports, env construction and data
  cached for the whole process (such as the τ²-bench database) are not included.

Returns (``--return-seeds`` N, default 100, seeds 0..N-1; 0 skips): the mean return and
success rate of the oracle, of the oracle with each capability's deficit (p = 0.5 and 1),
and of the trivial policies of :func:`trace_envs.testing.trivial_policies`, which show no
competence and must earn at most 0.05 on the synthetic envs (the τ²-bench env keeps the
benchmark's own rule, under which a task with no gold write passes by doing nothing).

All loops run in this one process on one core; nothing runs in parallel. The numbers
depend on the machine and its load, so they are reported, never asserted in tests (the
tests only check that the files are written with the expected keys).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or loaded by path
import gymnasium as gym
from machine import git_commit, machine_info  # noqa: E402

from trace_envs import CAPABILITIES, OraclePolicy, TraceError, registered_ids, tool_call
from trace_envs.registration import check_id
from trace_envs.testing import trivial_policies

RESULT_FILES = ("envs.json", "envs.md")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
SINGLE_CORE_NOTE = (
    "Step timings are single-process, one core: every loop runs sequentially in one Python "
    "process, so a vectorized or multi-process rollout scales these per worker."
)
_MIB = 1024 * 1024
_LOOPS = ("resets", "oracle", "wrapped", "admissible", "adversarial")


def _raw_call(name: Any, arguments: Any) -> str:
    """A call built with json.dumps, for shapes ``tool_call`` refuses to build (bad names, non-dict args)."""
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


#: (label, action) pairs cycled by the adversarial loop: fixed, so runs are comparable.
ADVERSARIAL: tuple[tuple[str, str], ...] = (
    ("huge string (100k chars)", "x" * 100_000),
    ("long message (16k chars)", "y" * 16_000),  # under the action limit: reaches the user model
    ("NUL and control bytes", "\x00\x01\x02 binary \x7f\x1b[2J"),
    ("all 256 code points", "".join(map(chr, range(256)))),
    ("'[' * 100000", "[" * 100_000),
    ("tool call of '[' * 16000", "<tool_call>" + "[" * 16_000 + "</tool_call>"),
    ("deeply nested arguments", '{"name": "get_order_details", "arguments": ' + '{"a":' * 900 + "1" + "}" * 901),
    ("dunder tool __class__", tool_call("__class__")),
    ("path-like tool name", _raw_call("../../etc/passwd", {})),
    ("unknown tool", tool_call("delete_all_orders", confirm=True)),
    ("wrong argument type", tool_call("get_order_details", order_id=12345)),
    ("arguments not an object", _raw_call("get_order_details", [1, 2, 3])),
    ("name not a string", _raw_call(5, {})),
    ("extra argument", tool_call("get_order_details", order_id="#W0000000", extra=1)),
    ("empty string", ""),
    ("whitespace only", " \n\t "),
    ("lone surrogate", "\ud800"),
    ("unclosed tool call", '<tool_call>{"name": "get_order_details", "arguments": {"order_id": '),
    ("two tool calls", tool_call("get_order_details", order_id="#W1") * 2),
    ("read with bad order id", tool_call("get_order_details", order_id="#W0000000")),
    ("read with bad user id", tool_call("get_user_details", user_id="nobody_0000")),
    ("write with bad order id", tool_call("cancel_pending_order", order_id="#W9999999", reason="no longer needed")),
    ("calculator bomb", tool_call("calculate", expression="9**9**9")),
)


# ---------------------------------------------------------------------- loops
def _until(budget: float) -> Callable[[int], bool]:
    """A predicate ``more(count)``: true until ``budget`` seconds passed, and always for the first item."""
    end = time.perf_counter() + budget
    return lambda count: count == 0 or time.perf_counter() < end


def reset_loop(env: gym.Env, budget: float) -> dict[str, Any]:
    """Reset with seeds 0, 1, ... for ``budget`` seconds."""
    more = _until(budget)
    resets = 0
    start = time.perf_counter()
    while more(resets):
        env.reset(seed=resets)
        resets += 1
    wall = time.perf_counter() - start
    return {"resets": resets, "wall_s": wall, "resets_per_s": resets / wall}


def oracle_loop(env: gym.Env, budget: float) -> dict[str, Any]:
    """Oracle-played episodes (seeds 0, 1, ...) for ``budget`` seconds; whole episodes only."""
    oracle = OraclePolicy()
    step = env.step
    perf = time.perf_counter
    more = _until(budget)
    steps = episodes = successes = 0
    step_time = 0.0
    sizes: list[int] = []  # admissible list sizes, when the env lists them
    start = perf()
    while more(episodes):
        obs, info = env.reset(seed=episodes)
        oracle.reset(env)
        done = False
        while not done:
            if "admissible_actions" in info:
                sizes.append(len(info["admissible_actions"]))
            action = oracle.act(obs, info)
            t0 = perf()
            obs, _reward, terminated, truncated, info = step(action)
            step_time += perf() - t0
            steps += 1
            done = terminated or truncated
        successes += bool(info.get("success"))
        episodes += 1
    wall = perf() - start
    result = {
        "episodes": episodes,
        "steps": steps,
        "wall_s": wall,
        "step_s": step_time,
        "steps_per_s": steps / wall,
        "step_only_steps_per_s": steps / step_time,
        "mean_episode_steps": steps / episodes,
        "success_rate": successes / episodes,
    }
    if sizes:
        sizes.sort()
        result["list_sizes"] = {"median": sizes[len(sizes) // 2], "p90": sizes[int(0.9 * len(sizes))], "max": sizes[-1]}
    return result


def adversarial_loop(env: gym.Env, budget: float) -> dict[str, Any]:
    """Cycle :data:`ADVERSARIAL` for ``budget`` seconds (at least one full cycle), resetting as episodes end."""
    perf = time.perf_counter
    more = _until(budget)
    n = len(ADVERSARIAL)
    per_action = [0.0] * n
    counts = [0] * n
    steps = resets = 0
    env.reset(seed=0)
    resets += 1
    while more(steps) or steps < n:
        i = steps % n
        t0 = perf()
        _obs, _reward, terminated, truncated, _info = env.step(ADVERSARIAL[i][1])
        per_action[i] += perf() - t0
        counts[i] += 1
        steps += 1
        if terminated or truncated:
            env.reset(seed=resets)
            resets += 1
    step_time = sum(per_action)
    mean_us = {ADVERSARIAL[i][0]: 1e6 * per_action[i] / counts[i] for i in range(n)}
    slowest = max(mean_us, key=mean_us.__getitem__)
    return {
        "steps": steps,
        "resets": resets,
        "step_s": step_time,
        "steps_per_s": steps / step_time,
        "mean_us_by_action": mean_us,
        "slowest_action": slowest,
        "slowest_mean_us": mean_us[slowest],
    }


def _peak_mib(fn: Callable[[], object]) -> float:
    """Peak MiB newly allocated while ``fn`` runs (tracemalloc; coexists with an outer tracer)."""
    outer = tracemalloc.is_tracing()
    if not outer:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return (tracemalloc.get_traced_memory()[1] - base) / _MIB
    finally:
        if not outer:
            tracemalloc.stop()


def return_policies() -> dict[str, Any]:
    """The policies of the returns table, by label: oracle, deficient oracles, trivial baselines."""
    policies: dict[str, Any] = {"oracle": OraclePolicy()}
    for cap in CAPABILITIES:
        for p in (0.5, 1.0):
            policies[f"oracle, {cap} deficit {p:g}"] = OraclePolicy({cap: p})
    policies.update((f"trivial: {name}", policy) for name, policy in trivial_policies().items())
    return policies


def returns_by_policy(env: gym.Env, seeds: int) -> dict[str, dict[str, float]]:
    """Mean return and success rate of each of :func:`return_policies` on seeds ``0..seeds-1``."""
    out = {}
    for label, policy in return_policies().items():
        total = successes = 0.0
        for seed in range(seeds):
            obs, info = env.reset(seed=seed)
            policy.reset(env)
            done = False
            while not done:
                obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
                total += reward
                done = terminated or truncated
            successes += bool(info["success"])
        out[label] = {"mean_return": round(total / seeds, 4), "success_rate": successes / seeds}
    return out


# ---------------------------------------------------------------------- one id
def _make_envs(env_id: str) -> tuple[gym.Env, gym.Env, gym.Env, float]:
    """The unwrapped env, the ``gym.make`` one, an unwrapped one listing admissible actions, and the
    build time of the second, each warmed up by one episode."""
    t0 = time.perf_counter()
    wrapped = gym.make(env_id)
    make_ms = 1e3 * (time.perf_counter() - t0)
    raw = gym.make(env_id).unwrapped
    listing = gym.make(env_id, admissible_actions=True).unwrapped
    # Warm-up: first-call costs (lazy imports, data caches, rendered tool text) stay out of the rates.
    for env in (raw, wrapped, listing):
        oracle_loop(env, 0.0)
    return raw, wrapped, listing, make_ms


def bench_id(env_id: str, seconds: float, return_seeds: int = 0) -> dict[str, Any]:
    """Every number for one id: the timed loops, the separate memory pass, then the returns."""
    raw, wrapped, listing, make_ms = _make_envs(env_id)
    budget = seconds / len(_LOOPS)
    resets = reset_loop(raw, budget)
    oracle = oracle_loop(raw, budget)
    through_make = oracle_loop(wrapped, budget)
    with_lists = oracle_loop(listing, budget)
    adversarial = adversarial_loop(raw, budget)

    # Memory pass: shorter, since tracemalloc slows every allocation several-fold.
    mem_budget = budget / 4
    peaks = {
        "resets": _peak_mib(lambda: reset_loop(raw, mem_budget)),
        "oracle": _peak_mib(lambda: oracle_loop(raw, mem_budget)),
        "wrapped": _peak_mib(lambda: oracle_loop(wrapped, mem_budget)),
        "admissible": _peak_mib(lambda: oracle_loop(listing, mem_budget)),
        "adversarial": _peak_mib(lambda: adversarial_loop(raw, mem_budget)),
    }
    returns = returns_by_policy(raw, return_seeds) if return_seeds else {}
    for env in (raw, wrapped, listing):
        env.close()
    return {
        "returns": returns,
        "make_ms": make_ms,
        "max_turns": raw.trace_spec.max_turns,
        "resets_per_s": resets["resets_per_s"],
        "oracle_steps_per_s": oracle["steps_per_s"],
        "oracle_step_only_steps_per_s": oracle["step_only_steps_per_s"],
        "wrapped_steps_per_s": through_make["steps_per_s"],
        "wrapped_step_only_steps_per_s": through_make["step_only_steps_per_s"],
        "admissible_steps_per_s": with_lists["steps_per_s"],
        "admissible_step_only_steps_per_s": with_lists["step_only_steps_per_s"],
        "admissible_list_sizes": with_lists["list_sizes"],
        "adversarial_steps_per_s": adversarial["steps_per_s"],
        "peak_mib": max(peaks.values()),
        "peak_mib_by_loop": peaks,
        "oracle_success_rate": oracle["success_rate"],
        "loops": {
            "resets": resets,
            "oracle": oracle,
            "wrapped": through_make,
            "admissible": with_lists,
            "adversarial": adversarial,
        },
    }


# ---------------------------------------------------------------------- provenance
# ---------------------------------------------------------------------- the run
def run_benchmark(
    ids: Iterable[str] | None = None,
    seconds: float = 2.0,
    out_dir: str | os.PathLike = "benchmarks/results",
    return_seeds: int = 100,
) -> dict[str, Any]:
    """Benchmark ``ids`` (default: every registered id) for ``seconds`` each; write and return the results."""
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    if return_seeds < 0:
        raise ValueError(f"return_seeds must be >= 0, got {return_seeds!r}")
    ids = [check_id(i) for i in ids] if ids else registered_ids()
    envs: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    started = time.perf_counter()
    for env_id in ids:
        try:
            envs[env_id] = bench_id(env_id, seconds, return_seeds)
        except TraceError as exc:  # e.g. trace/tau2-retail-v0 without TAU2_DATA_DIR: report, go on
            skipped[env_id] = f"{type(exc).__name__}: {exc}"
    result = {
        "benchmark": "trace_envs throughput",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds_per_id": seconds,
        "return_seeds": return_seeds,
        "total_wall_s": time.perf_counter() - started,
        "note": SINGLE_CORE_NOTE,
        "machine": machine_info(),
        "git_commit": git_commit(),
        "adversarial_actions": [label for label, _ in ADVERSARIAL],
        "envs": envs,
        "skipped": skipped,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILES[0]).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / RESULT_FILES[1]).write_text(markdown(result), encoding="utf-8")
    return result


def _rate(x: float) -> str:
    return f"{x:,.0f}"


def markdown(result: dict[str, Any]) -> str:
    """The results as a markdown table with a machine line."""
    m = result["machine"]
    commit = (result.get("git_commit") or "unknown")[:12]
    cpu = m.get("cpu_model") or m.get("machine") or "unknown CPU"
    lines = [
        "# trace_envs throughput",
        "",
        f"Machine: {m['platform']}, {cpu}, {m['cpu_count']} CPUs ({m['cpus_usable']} usable); "
        f"Python {m['python']}, gymnasium {m['gymnasium']}; commit `{commit}`; "
        f"{result['seconds_per_id']:g} s per id; {result['created']}.",
        "",
        f'{SINGLE_CORE_NOTE} Rates are steps (or resets) per second; "step only" counts only the time '
        "inside `env.step`; peak MiB is the tracemalloc peak during the loops, from a separate pass. "
        "See the docstring of `benchmarks/bench_envs.py` for exact definitions.",
        "",
        "| id | resets/s | oracle steps/s | oracle step only | gym.make steps/s | gym.make step only "
        "| oracle steps/s, admissible lists on | lists on, step only | list size median/p90/max "
        "| adversarial steps/s | slowest adversarial action (µs) | peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for env_id, r in result["envs"].items():
        adv = r["loops"]["adversarial"]
        sizes = r["admissible_list_sizes"]
        lines.append(
            f"| `{env_id}` | {_rate(r['resets_per_s'])} | {_rate(r['oracle_steps_per_s'])} "
            f"| {_rate(r['oracle_step_only_steps_per_s'])} | {_rate(r['wrapped_steps_per_s'])} "
            f"| {_rate(r['wrapped_step_only_steps_per_s'])} | {_rate(r['admissible_steps_per_s'])} "
            f"| {_rate(r['admissible_step_only_steps_per_s'])} "
            f"| {sizes['median']}/{sizes['p90']}/{sizes['max']} | {_rate(r['adversarial_steps_per_s'])} "
            f"| {adv['slowest_action']} ({adv['slowest_mean_us']:,.0f}) | {r['peak_mib']:.2f} |"
        )
    for env_id, why in result.get("skipped", {}).items():
        lines.append(f"| `{env_id}` | skipped: {why[:160].replace('|', '/')} | | | | | | | | | | |")
    return "\n".join(lines + returns_markdown(result)) + "\n"


def returns_markdown(result: dict[str, Any]) -> list[str]:
    """The returns table: one row per policy, one column per id (mean return, success rate)."""
    ids = [i for i, r in result["envs"].items() if r.get("returns")]
    if not ids:
        return []
    lines = [
        "",
        f"## Returns ({result['return_seeds']} seeds each)",
        "",
        "Mean return (success rate) per policy. The trivial policies show no competence, so the "
        "synthetic envs pay them at most 0.05; `trace/tau2-retail-v0` keeps τ²-bench's own rule, under "
        "which a task with no gold write passes by doing nothing (a property of the benchmark).",
        "",
        "| policy | " + " | ".join(f"`{i}`" for i in ids) + " |",
        "|---|" + "---:|" * len(ids),
    ]
    for label in result["envs"][ids[0]]["returns"]:
        cells = [result["envs"][i]["returns"][label] for i in ids]
        lines.append(
            f"| {label} | " + " | ".join(f"{c['mean_return']:+.3f} ({c['success_rate']:.0%})" for c in cells) + " |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: run the benchmark and print the markdown table."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ids", nargs="+", metavar="ID", help="env ids to measure (default: every registered id)")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="timed budget per id, split over its five timed loops (default: 2)"
    )
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help=f"directory for envs.json and envs.md (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--return-seeds",
        type=int,
        default=100,
        metavar="N",
        help="seeds for the returns table of the oracle, deficit profiles and trivial policies; "
        "0 skips it (default: 100)",
    )
    args = parser.parse_args(argv)
    result = run_benchmark(args.ids, args.seconds, args.out, args.return_seeds)
    print(markdown(result), end="")
    print(f"\nwrote {Path(args.out) / RESULT_FILES[0]} and {Path(args.out) / RESULT_FILES[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
