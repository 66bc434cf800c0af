"""benchmarks/bench_tau2.py runs end to end and writes its report (numbers are not asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("tau2_dir")  # skips, saying how to get the data, without it


def _load_bench(repo_root: Path):
    spec = importlib.util.spec_from_file_location("bench_tau2", repo_root / "benchmarks" / "bench_tau2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_benchmark_writes_json_and_markdown(tmp_path, repo_root):
    bench = _load_bench(repo_root)
    result = bench.run_benchmark(seconds=0.05, out_dir=tmp_path)

    data = json.loads((tmp_path / "tau2.json").read_text(encoding="utf-8"))
    assert data == json.loads(json.dumps(result))
    for key in ("env_id", "machine", "git_commit", "seconds", "targets", "targets_met", "results"):
        assert key in data, key
    for key in ("platform", "python", "cpu_count", "cpu_model"):
        assert key in data["machine"], key
    res = data["results"]
    for name in ("reset", "scoring"):
        for key in ("ours", "baseline", "ratio", "target", "met"):
            assert key in res[name], (name, key)
        assert res[name]["ours"]["per_s"] > 0 and res[name]["baseline"]["per_s"] > 0
    assert res["scoring"]["ours_and_baseline_agree"] is True
    assert res["scoring"]["episodes"] == res["scoring"]["episodes_matching_gold"] > 0
    for name in ("env_step", "env_step_wrapped", "bare_tool"):
        for key in ("ours", "baseline", "ratio", "met"):
            assert key in res["read_calls"][name], (name, key)
    assert isinstance(res["read_calls"]["met_by"], list)
    assert not list(tmp_path.glob("*.tmp"))

    md = (tmp_path / "tau2.md").read_text(encoding="utf-8")
    assert "| reset |" in md and "scoring" in md and "bare tool" in md and data["git_commit"] in md
