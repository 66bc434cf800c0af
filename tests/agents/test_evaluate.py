"""Evaluation summaries, Wilson intervals and the `trace evaluate` CLI (with the oracle: no model needed)."""

from __future__ import annotations

import json

import pytest

from trace_agents import evaluate as ev
from trace_agents.cli import main, parse_rates
from trace_agents.rollout import OracleBatch
from trace_agents.stats import paired_difference, summarize_annotations, wilson
from trace_envs.capabilities import REGISTRY


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [(0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (5, 10, 0.2366, 0.7634), (81, 100, 0.7222, 0.8749)],
)
def test_wilson_matches_reference_values(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_of_nothing_is_the_unit_interval() -> None:
    assert wilson(0, 0) == (0.0, 1.0)


def test_paired_difference_uses_only_shared_seeds_and_removes_their_spread() -> None:
    base = {"1": 0.1, "2": 0.5, "3": 0.9, "9": 5.0}
    other = {"1": 0.2, "2": 0.6, "3": 1.1}  # +0.1, +0.1, +0.2 on very different seeds
    out = paired_difference(other, base)
    assert out["pairs"] == 3 and out["mean"] == pytest.approx(0.4 / 3)
    half = 1.959964 * (((0.1 - 0.4 / 3) ** 2 * 2 + (0.2 - 0.4 / 3) ** 2) / 2 / 3) ** 0.5
    assert out["ci95"] == pytest.approx([0.4 / 3 - half, 0.4 / 3 + half])
    assert out["ci95"][0] > 0  # unpaired, the seed spread (0.1..0.9) would swamp it
    assert paired_difference({"1": 1.0}, {"1": 0.5}) == {"mean": 0.5, "ci95": None, "pairs": 1}
    assert paired_difference({}, base)["pairs"] == 0


def test_summaries_keep_each_seeds_return() -> None:
    summary = ev.evaluate(OracleBatch(), "trace/precondition-v0", 3, 10, progress=False)
    assert set(summary["returns"]) == {"10", "11", "12"}
    assert sum(summary["returns"].values()) / 3 == pytest.approx(summary["mean_return"])


def test_summarize_annotations_averages_bools_and_numbers_and_skips_none() -> None:
    out = summarize_annotations([{"a": True, "b": 2, "c": None, "d": "x"}, {"a": False, "b": 4, "c": True}])
    assert out == {"a": 0.5, "b": 3.0, "c": 1.0}


def test_oracle_evaluates_to_full_success() -> None:
    s = ev.evaluate(OracleBatch(), "trace/retail-v0", episodes=30, seed_start=500, progress=False)
    assert s["success"] == 1.0 and s["episodes"] == 30
    assert s["ci95"][0] > 0.85 and s["ci95"][1] == 1.0
    assert s["well_formed_rate"] == 1.0
    assert all(v["mistake_rate"] == 0.0 for v in s["capabilities"].values())
    assert s["components"]["db_match"] == pytest.approx(1.0)


@pytest.mark.parametrize("cap,env_id", [(c.name, c.env_id) for c in REGISTRY])
def test_mistake_rates_follow_injected_deficits(cap: str, env_id: str) -> None:
    s = ev.evaluate(OracleBatch(deficits={cap: 0.5}, seed=3), env_id, episodes=200, seed_start=0, progress=False)
    rate = s["capabilities"][cap]["mistake_rate"]
    assert 0.35 < rate < 0.65, f"{cap}: injected 0.5, measured {rate}"
    others = [v["mistake_rate"] for c, v in s["capabilities"].items() if c != cap and v["episodes"]]
    assert all(r == 0.0 for r in others), s["capabilities"]


def test_cli_evaluates_the_oracle_and_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "eval.json"
    code = main(
        [
            "evaluate",
            "--model",
            "oracle",
            "--env",
            "trace/precondition-v0",
            "trace/multi-step-v0",
            "--episodes",
            "10",
            "--seed-start",
            "7",
            "--deficits",
            "precondition_verification=1.0",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert "`trace/precondition-v0`" in table and "`trace/multi-step-v0`" in table
    data = json.loads(out.read_text())
    assert [d["env_id"] for d in data] == ["trace/precondition-v0", "trace/multi-step-v0"]
    assert data[0]["success"] == 0.0, "a full precondition deficit fails every precondition task"


def test_parse_rates_rejects_malformed_pairs() -> None:
    assert parse_rates("a=0.5, b=1") == {"a": 0.5, "b": 1.0}
    with pytest.raises(Exception, match="capability=rate"):
        parse_rates("a0.5")
    with pytest.raises(Exception, match="must be a number"):
        parse_rates("a=x")


def test_cli_reports_bad_input_without_a_traceback(capsys) -> None:
    assert main(["evaluate", "--model", "oracle", "--env", "trace/retial-v0", "--episodes", "1"]) == 2
    assert "Did you mean" in capsys.readouterr().err
    assert main(["evaluate", "--model", "oracle", "--deficits", "nonsense=0.5", "--episodes", "1"]) == 2


def test_cli_reruns_do_not_duplicate_stored_episodes(tmp_path, capsys) -> None:
    from trace_agents.trajectories import TrajectoryStore

    traj, out = tmp_path / "t.jsonl", tmp_path / "e.json"
    args = [
        "evaluate",
        "--model",
        "oracle",
        "--env",
        "trace/precondition-v0",
        "--episodes",
        "4",
        "--trajectories",
        str(traj),
        "--out",
        str(out),
    ]
    assert main(args) == 0 and main(args) == 0  # the rerun reuses the stored episodes
    assert len(list(TrajectoryStore(traj))) == 4
    collect = [
        "collect",
        "--policy",
        "oracle",
        "--env",
        "trace/precondition-v0",
        "--episodes",
        "4",
        "--seed-start",
        "1000000",
        "--out",
        str(traj),
    ]
    assert main(collect) == 2 and "already holds 4 of these episodes" in capsys.readouterr().err
    assert main([*collect, "--resume"]) == 0 and len(list(TrajectoryStore(traj))) == 4


def test_cli_passes_a_data_dir_to_the_tau2_env_only(tmp_path, capsys, monkeypatch, tau2_dir) -> None:
    monkeypatch.delenv("TAU2_DATA_DIR", raising=False)  # the flag alone must find the data
    out = tmp_path / "e.json"
    assert (
        main(
            [
                "evaluate",
                "--model",
                "oracle",
                "--env",
                "trace/tau2-retail-v0",
                "trace/precondition-v0",
                "--episodes",
                "2",
                "--data-dir",
                str(tau2_dir),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert [s["env_id"] for s in json.loads(out.read_text())] == ["trace/tau2-retail-v0", "trace/precondition-v0"]
    assert (
        main(
            [
                "evaluate",
                "--model",
                "oracle",
                "--env",
                "trace/precondition-v0",
                "--episodes",
                "1",
                "--data-dir",
                str(tau2_dir),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "none of ['trace/precondition-v0'] reads a data directory" in capsys.readouterr().err
