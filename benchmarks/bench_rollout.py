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


def run_benchmark(model: str | None = None, env_id: str = "trace/retail-v0", episodes: int = 16,
                  batch_size: int = 16, seed_start: int = 2_000_000, max_new_tokens: int = 96,
                  out_dir: str | Path = DEFAULT_OUT, repeats: int = 3) -> dict[str, Any]:
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
        results.append(compare_batching(policy, env_id, range(seed_start, seed_start + episodes),
                                        batch_size=batch_size))
    pairs = [(r["sequential"], r["batched"]) for r in results]
    median = statistics.median
    out = {
        "model": source, "env_id": env_id, "episodes": episodes, "batch_size": batch_size, "repeats": repeats,
        "sequential_episodes_per_s": median(s["episodes_per_s"] for s, _ in pairs),
        "batched_episodes_per_s": median(b["episodes_per_s"] for _, b in pairs),
        "speedup": median(r["speedup"] for r in results), "speedups": [r["speedup"] for r in results],
        "env_share_batched": median(b["env_share"] for _, b in pairs),
        "env_share_sequential": median(s["env_share"] for s, _ in pairs),
        "policy_share_batched": median(b["policy_share"] for _, b in pairs),
        "same_records": all(r["same_records"] for r in results),
        # Why the speedup is what it is: how full the batched forward passes were, and how
        # long the prompts (the KV cache every decode step reads) were.
        "batched_tokens_per_forward": median(_tokens_per_forward(b) for _, b in pairs),
        "mean_prompt_tokens": median(_mean_prompt(b) for _, b in pairs),
        "timings": [{"sequential": s, "batched": b} for s, b in pairs], "torch_threads": torch.get_num_threads(),
        "machine": machine_info(), "git_commit": git_commit(),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "rollout.json").write_text(json.dumps(out, indent=2) + "\n")
    (out_dir / "rollout.md").write_text(markdown(out))
    return out


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
    p.add_argument("--model", default=None, help="HF model dir (default: the tiny preset, random weights)")
    p.add_argument("--env", default="trace/retail-v0", help="env id (default: trace/retail-v0)")
    p.add_argument("--episodes", type=int, default=16, help="episodes per run (default: 16)")
    p.add_argument("--batch-size", type=int, default=16, help="batched run's batch size (default: 16)")
    p.add_argument("--seed-start", type=int, default=2_000_000, help="first seed (default: 2000000)")
    p.add_argument("--max-new-tokens", type=int, default=96, help="generation cap per turn (default: 96)")
    p.add_argument("--repeats", type=int, default=3,
                   help="sequential/batched pairs measured; medians are reported (default: 3)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output directory")
    a = p.parse_args(argv)
    r = run_benchmark(a.model, a.env, a.episodes, a.batch_size, a.seed_start, a.max_new_tokens, a.out, a.repeats)
    print(markdown(r), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
