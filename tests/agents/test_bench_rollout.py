"""benchmarks/bench_rollout.py on a tiny random model: the files it writes and what they say."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path


def _load_bench(repo_root: Path):
    spec = importlib.util.spec_from_file_location("bench_rollout", repo_root / "benchmarks" / "bench_rollout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rollout_benchmark_reports_medians_of_pairs(tmp_path, base, tok, repo_root):
    base.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    bench = _load_bench(repo_root)
    result = bench.run_benchmark(
        str(tmp_path / "model"),
        "trace/precondition-v0",
        episodes=2,
        batch_size=2,
        max_new_tokens=4,
        out_dir=tmp_path / "out",
        repeats=3,
    )
    data = json.loads((tmp_path / "out" / "rollout.json").read_text(encoding="utf-8"))
    assert data == json.loads(json.dumps(result))
    assert len(data["speedups"]) == len(data["timings"]) == 3
    assert data["speedup"] == sorted(data["speedups"])[1]  # the median pair
    assert data["same_records"] is True  # greedy: batching changes no episode
    table = (tmp_path / "out" / "rollout.md").read_text(encoding="utf-8")
    assert "medians of 3 sequential/batched pairs" in table and "| batched (batch 2) |" in table
    for pair in data["timings"]:  # sequential runs make one token per forward pass; batch 2 at most two
        assert bench._tokens_per_forward(pair["sequential"]) == 1.0
        assert 1.0 <= bench._tokens_per_forward(pair["batched"]) <= 2.0
    assert 1.0 <= data["batched_tokens_per_forward"] <= 2.0 and data["mean_prompt_tokens"] > 50
    assert f"{data['batched_tokens_per_forward']:.1f} tokens per forward pass" in table


def test_scorer_benchmark_replays_the_same_episodes_from_a_warm_cache(tmp_path, repo_root):
    import pytest

    pytest.importorskip("peft")
    from trace_agents.scorer.agent import ScorerPolicy
    from trace_agents.scorer.network import ScorerNetConfig

    ScorerPolicy.new(ScorerNetConfig(hidden=16, heads=2), encoder="hashing-16").save_pretrained(tmp_path / "scorer")
    bench = _load_bench(repo_root)
    result = bench.run_scorer_benchmark(
        str(tmp_path / "scorer"),
        "trace/precondition-v0",
        episodes=3,
        batch_size=2,
        out_dir=tmp_path / "out",
        warmup_episodes=2,
    )
    runs = result["runs"]
    assert runs["cold"]["new_texts"] > 0 and runs["warm, same seeds"]["new_texts"] == 0
    assert runs["warm, same seeds"]["steps"] == runs["cold"]["steps"]  # the same episodes, replayed
    table = (tmp_path / "out" / "rollout-scorer.md").read_text(encoding="utf-8")
    assert "| warm, new seeds |" in table and "commit" in table
