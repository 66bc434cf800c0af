"""MaskablePPO on DiscreteActions, end to end: the example and the benchmark run (mechanics only;
whether the agent learns is measured in benchmarks/results/classic_rl.md, not asserted here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sb3_contrib", reason='needs the classic extra: pip install -e ".[classic]"')

ENV = "trace/precondition-v0"


def load(root: Path, path: str):
    """A script of the repository as a module (examples/ and benchmarks/ are not packages)."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, root / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def sb3_logdir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pytest temporary folder for stable-baselines3's logger (without SB3_LOGDIR it makes /tmp/SB3-<date>)."""
    logdir = tmp_path_factory.mktemp("sb3-log")  # not in tmp_path: a test lists what its benchmark wrote there
    monkeypatch.setenv("SB3_LOGDIR", str(logdir))
    return logdir


@pytest.fixture(scope="module")
def example(repo_root: Path):
    """examples/sb3_maskable_ppo.py, loaded as a module."""
    return load(repo_root, "examples/sb3_maskable_ppo.py")


def test_maskable_ppo_trains_and_acts_within_the_mask(example) -> None:
    import torch

    torch.manual_seed(0)
    model = example.maskable_ppo()(
        "MultiInputPolicy", example.make_env(ENV, dim=32), seed=0, device="cpu", **example.PPO_SETTINGS
    )
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=example.PPO_SETTINGS["n_steps"])
    assert model.num_timesteps == example.PPO_SETTINGS["n_steps"]
    changed = [not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True)]
    assert all(changed), "one PPO update should change every policy weight"

    env = example.make_env(ENV, dim=32)
    chosen = []
    policy = example.model_policy(model)

    def checked(obs, env, rng):
        index = policy(obs, env, rng)
        chosen.append(bool(env.action_masks()[index]))
        return index

    result = example.evaluate(env, checked, range(example.EVAL_SEED, example.EVAL_SEED + 3))
    assert chosen and all(chosen), "the greedy policy chose a masked-out action"
    assert set(result) == {"return", "success"} and 0.0 <= result["success"] <= 1.0
    assert np.isfinite(result["return"])


def test_example_main_prints_both_policies(example, capsys) -> None:
    example.main(["--steps", "512", "--eval-episodes", "2", "--dim", "32"])
    out = capsys.readouterr().out
    assert "trained MaskablePPO on trace/precondition-v0 for 512 steps" in out
    assert "MaskablePPO: return" in out and "random admissible: return" in out


def test_benchmark_writes_its_files(tmp_path, repo_root) -> None:
    bench = load(repo_root, "benchmarks/bench_classic_rl.py")
    result = bench.run_benchmark(
        [ENV], steps=512, seeds=1, eval_episodes=2, points=2, dim=32, out_dir=tmp_path, command="test"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(bench.RESULT_FILES)
    saved = json.loads((tmp_path / "classic_rl.json").read_text())
    assert saved == json.loads(json.dumps(result))  # what it returns is what it wrote
    row = saved["envs"][ENV]
    assert set(row) == {"oracle", "random", "ppo", "ppo_episodes", "verdict", "evidence"}
    assert row["oracle"]["success"] == 1.0  # the oracle solves every task
    assert [p["steps"] for p in row["ppo"][0]["curve"]] == [0, 512]
    assert row["verdict"] in {"learns", "partly", "no"}
    assert f"`{ENV}`" in (tmp_path / "classic_rl.md").read_text()
    assert saved["machine"]["cpu_count"] and saved["settings"]["steps"] == 512
