"""Classic RL on the admissible actions: MaskablePPO against random and the oracle, per env.

Run from the repository root (needs ``pip install -e ".[classic]"``; CPU only)::

    .venv/bin/python benchmarks/bench_classic_rl.py                       # the capability envs and retail
    .venv/bin/python benchmarks/bench_classic_rl.py --ids trace/retail-v0 --steps 5000 --seeds 1

For each env id it measures, on the same held-out task seeds (``--eval-episodes`` of them,
10000 on; training draws its tasks from the env's RNG):

- **MaskablePPO**: ``examples/sb3_maskable_ppo.py``'s agent (sb3-contrib's MaskablePPO with
  ``MultiInputPolicy`` on :class:`trace_envs.wrappers.DiscreteActions`), trained for
  ``--steps`` env steps from each of ``--seeds`` seeds (0, 1, ...), evaluated greedily at
  ``--points`` evenly spaced moments (the learning curve; step 0 is the untrained policy)
  and at the end (the table);
- **random admissible**: a uniformly random valid action each turn (one run per seed);
- **oracle**: :class:`trace_envs.OraclePolicy` on the text env, which solves every task from
  its gold (an upper bound, not a learner).

Return is the episode's summed reward; success is ``info["success"]``. Each PPO row gives
the mean over seeds and the range. The reading under the table names, per env, how many
training episodes succeeded (what PPO had to reinforce), and the trained agents' most common
held-out episodes as sequences of action kinds (a tool's name, or the kind of message) with
their success rates.

It writes ``<out>/classic_rl.json`` (every number, the machine, the commit and the command),
``<out>/classic_rl.md`` (the table, and per env what the agent learned and what it did not,
read from those numbers) and ``<out>/classic_rl.png`` (learning curves, matplotlib).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or loaded by path
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import gymnasium as gym
import numpy as np
from machine import git_commit, machine_info  # noqa: E402
from sb3_maskable_ppo import (  # noqa: E402
    EVAL_SEED,
    PPO_SETTINGS,
    evaluate,
    make_env,
    model_policy,
    random_admissible,
    train,
)

from trace_envs import OraclePolicy
from trace_envs.actions import parse_action
from trace_envs.registration import check_id
from trace_envs.wrappers import DiscreteActions

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
DEFAULT_IDS = (
    "trace/precondition-v0",
    "trace/structured-data-v0",
    "trace/tool-calling-v0",
    "trace/multi-step-v0",
    "trace/retail-v0",  # all four capabilities in one env
)
RESULT_FILES = ("classic_rl.json", "classic_rl.md", "classic_rl.png")
# Messages by their opening words (the admissible list's templates), for the episode summaries.
_MESSAGE_KINDS = (
    ("to confirm", "propose"),
    ("i'm sorry", "refuse"),
    ("could you", "ask identity"),
    ("is there anything", "anything else"),
    ("thank you for contacting", "goodbye"),
    ("the amount", "answer"),
)
LEARNS = 0.10  # success above random, in every seed, that counts as learning


def action_kind(action: str) -> str:
    """A short name for an action: the tool it calls, or the kind of message."""
    parsed = parse_action(action)
    if parsed.kind == "tool":
        return parsed.name
    text = parsed.text.lower()
    return next((kind for start, kind in _MESSAGE_KINDS if text.startswith(start)), "message" if text else "empty")


def runs_of(kinds: Sequence[str]) -> str:
    """Action kinds joined by arrows, a repeated kind once with its count: ``a → b ×3``."""
    out: list[list[Any]] = []
    for kind in kinds:
        if out and out[-1][0] == kind:
            out[-1][1] += 1
        else:
            out.append([kind, 1])
    return " → ".join(kind if n == 1 else f"{kind} ×{n}" for kind, n in out)


def episodes_of(env: DiscreteActions, act: Any, seeds: Sequence[int], run: int = 0) -> dict[str, Any]:
    """:func:`evaluate` one episode per seed, and what the episodes were.

    Adds ``episodes`` (the most played episodes as action kinds: how many times each was played
    and how many of those succeeded; the rest as ``"(other)"``), ``unauthenticated_successes``
    (successful episodes that never called a ``find_user_id_*`` tool, which the policy's
    "authenticate first" forbids), the mean episode length and the candidate list sizes.
    ``run`` varies the policy's RNG.
    """
    shapes: dict[str, list[int]] = {}
    sizes: list[int] = []
    kinds: list[str] = []

    def recording(obs: dict[str, np.ndarray], env: DiscreteActions, rng: np.random.Generator) -> int:
        index = act(obs, env, rng)
        sizes.append(len(env.actions))
        kinds.append(action_kind(env.actions[index]) if index < len(env.actions) else "invalid")
        return index

    returns, successes, unauthenticated, steps = [], [], 0, 0
    for seed in seeds:  # one at a time, to cut the kinds into episodes
        kinds.clear()
        result = evaluate(env, recording, [seed], rng_seed=[run, seed])
        returns.append(result["return"])
        successes.append(result["success"])
        shape = shapes.setdefault(runs_of(kinds), [0, 0])
        shape[0] += 1
        shape[1] += int(result["success"])
        unauthenticated += int(result["success"] and not any(k.startswith("find_user_id") for k in kinds))
        steps += len(kinds)
    return {
        "return": float(np.mean(returns)),
        "success": float(np.mean(successes)),
        "unauthenticated_successes": unauthenticated,
        "mean_steps": steps / len(seeds),
        "list_size_median": float(np.median(sizes)),
        "list_size_max": int(max(sizes)),
        "episodes": dict(sorted(shapes.items(), key=lambda kv: -kv[1][0])),
    }


def most_common(shapes: dict[str, list[int]], keep: int = 10) -> dict[str, list[int]]:
    """The ``keep`` most played episodes with their [count, successes]; the rest summed as ``"(other)"``."""
    ranked = sorted(shapes.items(), key=lambda kv: -kv[1][0])
    kept = dict(ranked[:keep])
    if len(ranked) > keep:
        kept["(other)"] = [sum(c for _, (c, _) in ranked[keep:]), sum(w for _, (_, w) in ranked[keep:])]
    return kept


def oracle(env_id: str, seeds: Sequence[int]) -> dict[str, float]:
    """The oracle's mean return, success and episode length on the text env."""
    env = gym.make(env_id)
    policy = OraclePolicy()
    returns, successes, steps = [], [], 0
    for seed in seeds:
        obs, info = env.reset(seed=int(seed))
        policy.reset(env)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
            total += float(reward)
            steps += 1
            done = terminated or truncated
        returns.append(total)
        successes.append(bool(info["success"]))
    return {"return": float(np.mean(returns)), "success": float(np.mean(successes)), "mean_steps": steps / len(seeds)}


def _callback(every: int, probe: Any, record: dict[str, Any]) -> Any:
    """An sb3 callback: ``probe(model, steps)`` at the start and each ``every`` env steps, and
    the training episodes counted in ``record`` (episodes, successes, first_success_step)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Probe(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next = every

        def _on_training_start(self) -> None:
            probe(self.model, 0)

        def _on_step(self) -> bool:
            for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
                if done:
                    record["episodes"] += 1
                    if info.get("success"):
                        record["successes"] += 1
                        record["first_success_step"] = record["first_success_step"] or self.num_timesteps
            if self.num_timesteps >= self.next:
                probe(self.model, self.num_timesteps)
                self.next += every
            return True

    return Probe()


def ppo_run(
    env_id: str, seed: int, steps: int, points: int, seeds: Sequence[int], max_actions: int, dim: int
) -> dict[str, Any]:
    """Train one MaskablePPO agent: its training episodes, learning curve and final evaluation on ``seeds``."""
    env = make_env(env_id, max_actions, dim)
    curve: list[dict[str, float]] = []
    training = {"episodes": 0, "successes": 0, "first_success_step": None}

    def probe(model: Any, at: int) -> None:
        if at < steps:  # the last point is the final evaluation
            curve.append({"steps": at, **evaluate(env, model_policy(model), seeds)})

    start = time.perf_counter()
    model = train(
        env_id,
        steps,
        seed,
        max_actions=max_actions,
        dim=dim,
        callback=_callback(max(1, steps // max(1, points - 1)), probe, training),
    )
    seconds = time.perf_counter() - start  # includes the curve's evaluations
    final = episodes_of(env, model_policy(model), seeds)
    curve.append({"steps": model.num_timesteps, "return": final["return"], "success": final["success"]})
    return {
        "seed": seed,
        "seconds": seconds,
        "steps": model.num_timesteps,
        "training": training,
        **final,
        "curve": curve,
    }


def verdict(ppo: list[dict[str, Any]], rand: dict[str, Any], orc: dict[str, float]) -> tuple[str, str]:
    """(learns / partly / no, a sentence of evidence) from the measured success rates."""
    above = [r["success"] - rand["success"] for r in ppo]
    mean = float(np.mean([r["success"] for r in ppo]))
    if all(a >= LEARNS for a in above):
        word = "learns"
    elif any(a >= LEARNS for a in above):
        word = "partly"
    else:
        word = "no"
    gap = orc["success"] - mean
    text = (
        f"success {mean:.0%} (seeds {min(r['success'] for r in ppo):.0%} to {max(r['success'] for r in ppo):.0%})"
        f" against random {rand['success']:.0%} and oracle {orc['success']:.0%}"
        + (f", {gap:.0%} below the oracle" if gap > 0.05 else ", as good as the oracle")
    )
    return word, text


def run_benchmark(
    ids: Sequence[str] = DEFAULT_IDS,
    steps: int = 20_000,
    seeds: int = 3,
    eval_episodes: int = 100,
    points: int = 5,
    max_actions: int = 128,
    dim: int = 128,
    out_dir: str | Path = DEFAULT_OUT,
    command: str = "",
) -> dict[str, Any]:
    """Measure every id; write the JSON, markdown and plot; return the JSON's contents."""
    started = _dt.datetime.now(_dt.timezone.utc)
    eval_seeds = list(range(EVAL_SEED, EVAL_SEED + eval_episodes))
    envs: dict[str, Any] = {}
    for env_id in ids:
        check_id(env_id)
        print(f"[classic_rl] {env_id}: oracle and random", flush=True)
        orc = oracle(env_id, eval_seeds)
        env = make_env(env_id, max_actions, dim)
        randoms = [episodes_of(env, random_admissible, eval_seeds, run=run) for run in range(seeds)]
        rand = {
            "return": float(np.mean([r["return"] for r in randoms])),
            "success": float(np.mean([r["success"] for r in randoms])),
            "list_size_median": randoms[0]["list_size_median"],
            "list_size_max": randoms[0]["list_size_max"],
            "runs": randoms,
        }
        runs = []
        for seed in range(seeds):
            print(f"[classic_rl] {env_id}: MaskablePPO seed {seed}, {steps} steps", flush=True)
            runs.append(ppo_run(env_id, seed, steps, points, eval_seeds, max_actions, dim))
            print(
                f"[classic_rl]   return {runs[-1]['return']:.3f}, success {runs[-1]['success']:.0%}, "
                f"{runs[-1]['seconds']:.0f} s",
                flush=True,
            )
        word, evidence = verdict(runs, rand, orc)
        ppo_episodes = most_common(pooled(runs))  # pooled before each run's list is cut
        for run in runs + randoms:
            run["episodes"] = most_common(run["episodes"])
        envs[env_id] = {
            "oracle": orc,
            "random": rand,
            "ppo": runs,
            "ppo_episodes": ppo_episodes,
            "verdict": word,
            "evidence": evidence,
        }
    result = {
        "benchmark": "classic_rl",
        "started": started.isoformat(timespec="seconds"),
        "seconds": (_dt.datetime.now(_dt.timezone.utc) - started).total_seconds(),
        "machine": machine_info(),
        "commit": git_commit(),
        "command": command,
        "settings": {
            "steps": steps,
            "seeds": seeds,
            "eval_episodes": eval_episodes,
            "eval_seeds_from": EVAL_SEED,
            "points": points,
            "max_actions": max_actions,
            "dim": dim,
            "policy": "MultiInputPolicy",
            "ppo": PPO_SETTINGS,
            "learns_margin": LEARNS,
        },
        "envs": envs,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILES[0]).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (out / RESULT_FILES[1]).write_text(markdown(result), encoding="utf-8")
    plot(result, out / RESULT_FILES[2])
    return result


def _pct(x: float) -> str:
    return f"{x:.0%}"


def cycles_of(episode: str, longest: int = 4) -> str:
    """An episode string with repeated runs of up to ``longest`` kinds written once:
    ``a → b → a → b → a → b`` becomes ``(a → b) ×3``."""
    kinds = episode.split(" → ")
    out: list[str] = []
    i = 0
    while i < len(kinds):
        for period in range(2, longest + 1):
            unit = kinds[i : i + period]
            repeats = 1
            while kinds[i + repeats * period : i + (repeats + 1) * period] == unit:
                repeats += 1
            if repeats >= 2 and len(unit) == period:
                out.append(f"({' → '.join(unit)}) ×{repeats}")
                i += repeats * period
                break
        else:
            out.append(kinds[i])
            i += 1
    return " → ".join(out)


def pooled(runs: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    """The runs' ``episodes`` added up: each episode's [count, successes] over all runs."""
    total: dict[str, list[int]] = {}
    for run in runs:
        for shape, (count, wins) in run["episodes"].items():
            both = total.setdefault(shape, [0, 0])
            both[0] += count
            both[1] += wins
    return total


def common_episodes(episodes: dict[str, list[int]], top: int = 3) -> str:
    """The ``top`` most played of ``episodes``, with their shares and success rates, in words."""
    n = sum(c for c, _ in episodes.values())
    best = sorted(((k, v) for k, v in episodes.items() if k != "(other)"), key=lambda kv: -kv[1][0])[:top]
    return "; ".join(
        f"{cycles_of(shape) or '(none)'} ({_pct(c / n)} of episodes, {_pct(w / c)} of them succeed)"
        for shape, (c, w) in best
    )


def why(row: dict[str, Any]) -> str:
    """What the measurements say about why the agent learned this env or not."""
    orc, rand, ppo = row["oracle"], row["random"], row["ppo"]
    episodes = sum(r["training"]["episodes"] for r in ppo)
    wins = sum(r["training"]["successes"] for r in ppo)
    firsts = [r["training"]["first_success_step"] for r in ppo if r["training"]["first_success_step"]]
    training = (
        f"In training, {wins:,} of {episodes:,} episodes succeeded (all seeds)"
        + (f", the first at step {min(firsts):,}" if firsts else "")
        + "."
    )
    task = (
        f"The oracle needs {orc['mean_steps']:.1f} turns on average, each a choice among "
        f"{rand['list_size_median']:.0f} candidates (median; at most {rand['list_size_max']}), and random "
        f"admissible play succeeds in {_pct(rand['success'])} of the tasks."
    )
    share = wins / max(1, episodes)
    if row["verdict"] == "no" and share < 0.01:
        reason = (
            "The reward is paid at the end, for the whole task: with so few successful episodes, PPO has "
            "almost nothing to reinforce within this budget."
        )
    elif row["verdict"] == "no":
        reason = (
            f"{_pct(share)} of the training episodes succeeded, but within this budget the greedy policy "
            f"does not turn them into successes on held-out tasks."
        )
    else:
        reason = "PPO reinforces those successes."
    curves = [[p["success"] for p in r["curve"]] for r in ppo]
    if all(len(c) > 1 for c in curves) and np.mean([c[-1] - c[-2] for c in curves]) >= 0.05:
        reason += " Held-out success was still rising at the end of the budget (see the curve)."
    wins_eval = sum(w for r in ppo for _, w in r["episodes"].values())
    unauth = sum(r["unauthenticated_successes"] for r in ppo)
    auth = (
        f" {unauth} of its {wins_eval} held-out successes never authenticated the customer (no "
        f'find_user_id_* call): the success rule does not check the policy\'s "authenticate first".'
        if unauth
        else ""
    )
    return (
        f"{training} {task} {reason} Greedy held-out episodes (all seeds): "
        f"{common_episodes(row['ppo_episodes'])}.{auth}"
    )


def markdown(result: dict[str, Any]) -> str:
    """The results as markdown: settings, the table, the plot and a reading per env."""
    m, st = result["machine"], result["settings"]
    first = st["eval_seeds_from"]
    lines = [
        "# Classic RL on the admissible actions",
        "",
        f"Machine: {m['platform']}, {m.get('cpu_model') or 'unknown CPU'}, {m['cpu_count']} CPUs "
        f"({m['cpus_usable']} usable, shared with other jobs while this ran); Python {m['python']}, "
        f"gymnasium {m['gymnasium']}; commit `{(result['commit'] or 'unknown')[:12]}`; "
        f"{result['started']}; {result['seconds'] / 60:.0f} min in all.",
        "",
        f"Command: `{result['command']}`",
        "",
        f"MaskablePPO (sb3-contrib, `{st['policy']}`, {', '.join(f'{k} {v}' for k, v in st['ppo'].items())}, "
        f"other settings sb3's defaults, CPU) on `DiscreteActions(gym.make(id), max_actions={st['max_actions']}, "
        f"featurizer=HashingFeaturizer(dim={st['dim']}))`, trained for {st['steps']:,} env steps (rounded up to "
        f"whole rollouts of {st['ppo']['n_steps']}) from each of {st['seeds']} seeds. Every policy is evaluated "
        f"on the same {st['eval_episodes']} held-out tasks (seeds {first} to {first + st['eval_episodes'] - 1}); "
        f"MaskablePPO greedily, "
        f"random admissible once per seed, the oracle (`OraclePolicy`, which reads the task's gold) on the text "
        f'env. "Learns" means success at least {st["learns_margin"]:.0%} above random in every seed '
        f'("partly": in some).',
        "",
        "| env | oracle return / success | random return / success | MaskablePPO return (seeds) "
        "| MaskablePPO success (seeds) | learns? |",
        "|---|---|---|---|---|---|",
    ]
    for env_id, row in result["envs"].items():
        orc, rand, ppo = row["oracle"], row["random"], row["ppo"]
        rets = [r["return"] for r in ppo]
        succ = [r["success"] for r in ppo]
        lines.append(
            f"| `{env_id}` | {orc['return']:.3f} / {_pct(orc['success'])} | {rand['return']:.3f} / "
            f"{_pct(rand['success'])} | {np.mean(rets):.3f} ({min(rets):.3f} to {max(rets):.3f}) | "
            f"{_pct(float(np.mean(succ)))} ({_pct(min(succ))} to {_pct(max(succ))}) | {row['verdict']} |"
        )
    lines += [
        "",
        f"![learning curves]({RESULT_FILES[2]})",
        "",
        "Curves: held-out return and success of the greedy policy during training (mean over seeds, the "
        "band from the worst to the best seed); dashed: random admissible, dotted: the oracle.",
        "",
        "## What the agent learns, and why",
        "",
    ]
    by_verdict = {
        word: [f"`{i}`" for i, row in result["envs"].items() if row["verdict"] == word]
        for word in ("learns", "partly", "no")
    }
    summary = [
        f"{label}: {', '.join(ids)}"
        for label, ids in (
            ("Learned (every seed above random)", by_verdict["learns"]),
            ("learned by some seeds", by_verdict["partly"]),
            (f"not learned in {st['steps']:,} steps", by_verdict["no"]),
        )
        if ids
    ]
    lines += ["; ".join(summary) + ".", ""]
    for env_id, row in result["envs"].items():
        lines.append(f"- `{env_id}` ({row['verdict']}): {row['evidence']}. {why(row)}")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Learning curves: held-out return (top) and success (bottom) per env, against random and the oracle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = list(result["envs"])
    fig, axes = plt.subplots(2, len(ids), figsize=(3.6 * len(ids), 5.4), squeeze=False, sharex="col")
    for col, env_id in enumerate(ids):
        row = result["envs"][env_id]
        for r, metric in enumerate(("return", "success")):
            ax = axes[r][col]
            curves = [run["curve"] for run in row["ppo"]]
            x = [p["steps"] for p in curves[0]]
            ys = np.array([[p[metric] for p in c] for c in curves])
            ax.plot(x, ys.mean(0), color="tab:blue", label="MaskablePPO")
            ax.fill_between(x, ys.min(0), ys.max(0), color="tab:blue", alpha=0.2)
            ax.axhline(row["random"][metric], color="tab:gray", ls="--", label="random admissible")
            ax.axhline(row["oracle"][metric], color="tab:green", ls=":", label="oracle")
            if r == 0:
                ax.set_title(env_id.removeprefix("trace/"), fontsize=10)
            if r == 1:
                ax.set_xlabel("training steps")
                ax.set_ylim(-0.03, 1.03)
            if col == 0:
                ax.set_ylabel(f"held-out {metric}")
    axes[0][0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: run the benchmark and print the markdown."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--ids", nargs="+", metavar="ID", default=list(DEFAULT_IDS), help="env ids to measure")
    parser.add_argument("--steps", type=int, default=20_000, help="training env steps per seed (the budget)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per env (0, 1, ...)")
    parser.add_argument(
        "--eval-episodes",
        type=int,
        default=100,
        help=f"held-out tasks every policy is evaluated on (seeds {EVAL_SEED} on)",
    )
    parser.add_argument("--points", type=int, default=5, help="evaluations along each learning curve, the end included")
    parser.add_argument("--max-actions", type=int, default=128, help="DiscreteActions' max_actions")
    parser.add_argument("--dim", type=int, default=128, help="the featurizer's hashed width")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="directory for classic_rl.{json,md,png}")
    parser.add_argument(
        "--render",
        action="store_true",
        help="only rewrite classic_rl.md and classic_rl.png from the classic_rl.json in --out",
    )
    args = parser.parse_args(argv)
    if args.render:
        out = Path(args.out)
        result = json.loads((out / RESULT_FILES[0]).read_text(encoding="utf-8"))
        (out / RESULT_FILES[1]).write_text(markdown(result), encoding="utf-8")
        plot(result, out / RESULT_FILES[2])
        print(markdown(result), end="")
        return 0
    for name in ("steps", "seeds", "eval_episodes", "points"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    command = " ".join(
        ["python", "benchmarks/bench_classic_rl.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]
    )
    result = run_benchmark(
        args.ids, args.steps, args.seeds, args.eval_episodes, args.points, args.max_actions, args.dim, args.out, command
    )
    print(markdown(result), end="")
    print(f"\nwrote {', '.join(str(Path(args.out) / f) for f in RESULT_FILES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
