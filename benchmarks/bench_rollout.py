"""Rollout throughput: batched vs sequential generation with the same model and seeds.

Runs the same ``--episodes`` seeds of ``--env`` in one process, with a batch of one env
and with ``--batch-size`` envs generated for at once, ``--repeats`` pairs in turn, using
greedy decoding so both runs play the same episodes. Reports the medians of episodes/s
for each and of their ratio (and every pair's ratio), the env's share
of rollout wall time (reset + step), and whether the records matched exactly (batched
left-padded generation can differ in the last float bits; the share that matched is
reported, not asserted). Writes ``results/rollout.{json,md}``. Numbers are reported,
never asserted in tests.

    python benchmarks/bench_rollout.py --model runs/bootstrap/model --episodes 16

``--agent scorer`` measures the scorer agent instead (``--model`` a saved scorer): episodes/s
from a cold embedding cache, warm on the same seeds (the same episodes replayed: every text
cached) and warm on new seeds (the steady state of a long run: the cache holds what earlier
episodes showed), with the share of time in the encoder, the features and the network.
Writes ``results/rollout-scorer.{json,md}``.

    python benchmarks/bench_rollout.py --agent scorer --model runs/default/bootstrap/model --episodes 200
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or loaded by path
from machine import git_commit, machine_info  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def run_benchmark(
    model: str | None = None,
    env_id: str = "trace/retail-v0",
    episodes: int = 16,
    batch_size: int = 16,
    seed_start: int = 2_000_000,
    max_new_tokens: int = 96,
    out_dir: str | Path = DEFAULT_OUT,
    repeats: int = 3,
) -> dict[str, Any]:
    """Measure ``repeats`` sequential/batched pairs, one after the other, and write the results.

    The headline numbers are the medians over the pairs: a noisy machine moves single
    runs by several percent either way.
    """
    import statistics

    import torch

    from trace_agents.models import tiny_preset
    from trace_agents.policy import HFPolicy
    from trace_agents.rollout import compare_batching

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    torch.set_num_threads(torch.get_num_threads())
    source = model or str(tiny_preset())
    policy = HFPolicy.from_pretrained(source, temperature=0.0, max_new_tokens=max_new_tokens)
    results = []
    for _ in range(repeats):
        policy.forget()
        results.append(
            compare_batching(policy, env_id, range(seed_start, seed_start + episodes), batch_size=batch_size)
        )
    pairs = [(r["sequential"], r["batched"]) for r in results]
    median = statistics.median
    out = {
        "model": source,
        "env_id": env_id,
        "episodes": episodes,
        "batch_size": batch_size,
        "repeats": repeats,
        "sequential_episodes_per_s": median(s["episodes_per_s"] for s, _ in pairs),
        "batched_episodes_per_s": median(b["episodes_per_s"] for _, b in pairs),
        "speedup": median(r["speedup"] for r in results),
        "speedups": [r["speedup"] for r in results],
        "env_share_batched": median(b["env_share"] for _, b in pairs),
        "env_share_sequential": median(s["env_share"] for s, _ in pairs),
        "policy_share_batched": median(b["policy_share"] for _, b in pairs),
        "same_records": all(r["same_records"] for r in results),
        # Why the speedup is what it is: how full the batched forward passes were, and how
        # long the prompts (the KV cache every decode step reads) were.
        "batched_tokens_per_forward": median(_tokens_per_forward(b) for _, b in pairs),
        "mean_prompt_tokens": median(_mean_prompt(b) for _, b in pairs),
        "timings": [{"sequential": s, "batched": b} for s, b in pairs],
        "torch_threads": torch.get_num_threads(),
        "machine": machine_info(),
        "git_commit": git_commit(),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "rollout.json").write_text(json.dumps(out, indent=2) + "\n")
    (out_dir / "rollout.md").write_text(markdown(out))
    return out


def run_scorer_benchmark(
    model: str | None = None,
    env_id: str = "trace/retail-v0",
    episodes: int = 200,
    batch_size: int = 32,
    seed_start: int = 2_000_000,
    out_dir: str | Path = DEFAULT_OUT,
    warmup_episodes: int = 1000,
) -> dict[str, Any]:
    """The scorer's episodes/s: cold cache, warm on the same seeds, warm on new seeds (after ``warmup_episodes``)."""
    import time

    import torch

    from trace_agents.rollout import rollout
    from trace_agents.scorer.agent import ScorerPolicy
    from trace_agents.scorer.text import EmbeddingCache

    def fresh() -> ScorerPolicy:
        policy = ScorerPolicy.from_pretrained(model) if model else ScorerPolicy.new()
        policy.cache = EmbeddingCache(policy.cache.embed)  # empty: the cold run pays every encoding
        return policy

    policy = fresh()
    encoder_seconds = [0.0]
    embed = policy.cache.embed

    def timed(texts: Any) -> Any:
        t = time.perf_counter()
        try:
            return embed(texts)
        finally:
            encoder_seconds[0] += time.perf_counter() - t

    policy.cache.embed = timed
    seeds = range(seed_start, seed_start + episodes)
    runs: dict[str, Any] = {}

    def measure(name: str, seed_range: range) -> None:
        encoder_seconds[0] = 0.0
        misses = policy.cache.misses
        policy._generator.manual_seed(0)  # the same draws: replaying seeds replays the episodes
        r = rollout(policy, env_id, seed_range, batch_size=batch_size, progress=False)
        t = r.timings
        runs[name] = {
            "episodes_per_s": t["episodes_per_s"],
            "steps_per_s": t["steps_per_s"],
            "wall_s": t["wall"],
            "encoder_share": encoder_seconds[0] / t["wall"],
            "policy_share": t["policy_share"],
            "env_share": t["env_share"],
            "new_texts": policy.cache.misses - misses,
            "steps": t["steps"],
            "success": r.success_rate,
        }

    measure("cold", seeds)
    measure("warm, same seeds", seeds)
    warm_from = seed_start + episodes
    rollout(policy, env_id, range(warm_from, warm_from + warmup_episodes), batch_size=batch_size, progress=False)
    measure("warm, new seeds", range(warm_from + warmup_episodes, warm_from + warmup_episodes + episodes))
    out = {
        "agent": "scorer",
        "model": model or "random init",
        "env_id": env_id,
        "episodes": episodes,
        "batch_size": batch_size,
        "warmup_episodes": warmup_episodes,
        "runs": runs,
        "cached_texts": len(policy.cache),
        "torch_threads": torch.get_num_threads(),
        "machine": machine_info(),
        "git_commit": git_commit(),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "rollout-scorer.json").write_text(json.dumps(out, indent=2) + "\n")
    (out_dir / "rollout-scorer.md").write_text(scorer_markdown(out))
    return out


def scorer_markdown(r: dict[str, Any]) -> str:
    """The scorer's results as a markdown table with the machine line."""
    m = r["machine"]
    lines = [
        f"Scorer `{r['model']}` on `{r['env_id']}`, {r['episodes']} episodes per run, batch {r['batch_size']}, "
        f"sampling at the agent's temperature; {m.get('cpu_model')}, {m.get('cpu_count')} CPUs, torch threads "
        f"{r['torch_threads']}; commit `{r['git_commit']}`.",
        "",
        "| run | episodes/s | decisions/s | encoder share | policy share | env share | new texts encoded | success |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, x in r["runs"].items():
        lines.append(
            f"| {name} | {x['episodes_per_s']:.1f} | {x['steps_per_s']:.0f} | {x['encoder_share']:.0%} | "
            f"{x['policy_share']:.0%} | {x['env_share']:.0%} | {x['new_texts']} | {x['success']:.3f} |"
        )
    lines += [
        "",
        f"'warm, new seeds' ran after {r['warmup_episodes']} other episodes had filled the cache "
        f"({r['cached_texts']} texts at the end). The policy share includes the encoder.",
    ]
    return "\n".join(lines) + "\n"


def _tokens_per_forward(timings: dict[str, Any]) -> float:
    """Generated tokens per forward pass (prefills and decode steps each make one token per row)."""
    g = timings["policy_stats"]
    passes = g["prefills"] + g["decode_steps"]
    return g["generated_tokens"] / passes if passes else 0.0


def _mean_prompt(timings: dict[str, Any]) -> float:
    """Prompt tokens per row and call: the context each decode step attends to."""
    g = timings["policy_stats"]
    return g["prompt_tokens"] / g["rows"] if g["rows"] else 0.0


def markdown(r: dict[str, Any]) -> str:
    """The results as a markdown table with the machine line."""
    m = r["machine"]
    return (
        f"Model `{r['model']}` on `{r['env_id']}`, {r['episodes']} episodes, greedy, medians of "
        f"{r['repeats']} sequential/batched pairs; "
        f"{m.get('cpu_model')}, {m.get('cpu_count')} CPUs, torch threads {r['torch_threads']}; "
        f"commit `{r['git_commit']}`.\n\n"
        "| run | episodes/s | env share of wall time |\n|---|---:|---:|\n"
        f"| sequential (batch 1) | {r['sequential_episodes_per_s']:.3f} | {r['env_share_sequential']:.2%} |\n"
        f"| batched (batch {r['batch_size']}) | {r['batched_episodes_per_s']:.3f} | {r['env_share_batched']:.2%} |\n"
        f"\nSpeedup {r['speedup']:.2f}x (pairs: {', '.join(f'{x:.2f}x' for x in r['speedups'])}); "
        f"identical records: {r['same_records']}.\n"
        f"\nBatched decoding produced {r['batched_tokens_per_forward']:.1f} tokens per forward pass "
        f"(batch {r['batch_size']}: a batch decodes until its longest row ends its turn), over prompts of "
        f"{r['mean_prompt_tokens']:.0f} tokens on average (the KV cache each decode step reads).\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--agent",
        choices=["lm", "scorer"],
        default="lm",
        help="lm: batched vs sequential generation; scorer: cold vs warm embedding cache (default: lm)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="HF model dir, or a saved scorer with --agent scorer (default: the tiny preset, random "
        "weights; a randomly initialized scorer)",
    )
    p.add_argument(
        "--warmup-episodes",
        type=int,
        default=1000,
        help="--agent scorer: episodes that fill the cache before the 'warm, new seeds' run",
    )
    p.add_argument("--env", default="trace/retail-v0", help="env id (default: trace/retail-v0)")
    p.add_argument("--episodes", type=int, default=16, help="episodes per run (default: 16)")
    p.add_argument("--batch-size", type=int, default=16, help="batched run's batch size (default: 16)")
    p.add_argument("--seed-start", type=int, default=2_000_000, help="first seed (default: 2000000)")
    p.add_argument("--max-new-tokens", type=int, default=96, help="generation cap per turn (default: 96)")
    p.add_argument(
        "--repeats", type=int, default=3, help="sequential/batched pairs measured; medians are reported (default: 3)"
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output directory")
    a = p.parse_args(argv)
    if a.agent == "scorer":
        r = run_scorer_benchmark(a.model, a.env, a.episodes, a.batch_size, a.seed_start, a.out, a.warmup_episodes)
        print(scorer_markdown(r), end="")
        return 0
    r = run_benchmark(a.model, a.env, a.episodes, a.batch_size, a.seed_start, a.max_new_tokens, a.out, a.repeats)
    print(markdown(r), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
