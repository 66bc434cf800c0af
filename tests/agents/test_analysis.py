"""Capability analysis: rule labels, ER+/ER-/coverage, resampled selection, ground-truth recovery, CLI."""

from __future__ import annotations

import json
import random

import pytest

from trace_agents import analysis as an
from trace_agents.cli import main
from trace_agents.rollout import OracleBatch, rollout
from trace_envs import CAPABILITIES

L, P, N = an.Label.LACKING, an.Label.PRESENT, an.Label.NA


def test_rule_labels_follow_annotations() -> None:
    rec = {
        "annotations": {
            "capabilities": ["precondition_verification", "multi_step_completion"],
            "preconditions_checked": False,
            "missing_reads": ["get_order_details"],
            "requests_unaddressed": 0,
            "requests_completed": 1,
            "requests_total": 2,
        }
    }
    lab = an.RuleLabeler()
    assert lab.label(rec, "precondition_verification")[0] is L
    assert "missing_reads" in lab.label(rec, "precondition_verification")[1]
    assert lab.label(rec, "multi_step_completion")[0] is P, "attempted wrongly is not skipped"
    assert lab.label(rec, "tool_calling_precision")[0] is N
    with pytest.raises(ValueError, match="no env annotations"):
        lab.label({"task_id": "t1"}, "precondition_verification")
    with pytest.raises(ValueError, match="knows"):
        lab.label(rec, "charm")


def test_stats_and_thresholds() -> None:
    labels = [{"c": L}, {"c": L}, {"c": P}, {"c": P}, {"c": N}]
    ok = [False, False, True, False, False]
    s = an.capability_stats(labels, ok, "c")
    assert s["er_plus"] == 0.0 and s["er_minus"] == pytest.approx(2 / 3) and s["coverage"] == pytest.approx(2 / 4)
    rep = an.select(labels, ok, ["c"], an.Thresholds(rho=0.6, delta=0.2))
    assert rep["selected"] == [], "coverage 0.5 is below rho 0.6"
    rep = an.select(labels * 20, ok * 20, ["c"], an.Thresholds(rho=0.1, delta=0.2))
    assert rep["selected"] == ["c"] and rep["capabilities"]["c"]["votes"] == 10
    # The same mistake rate in successes as in failures explains nothing.
    even = [{"c": L}, {"c": P}] * 20
    assert an.select(even, [True, True, False, False] * 10, ["c"])["selected"] == []
    with pytest.raises(ValueError, match="s <= R"):
        an.Thresholds(s=11, R=10)


@pytest.mark.parametrize("ok", [[True] * 6, [False] * 6])
def test_no_failures_or_no_successes(ok) -> None:
    labels = [{"c": L, "d": N}] * 6
    rep = an.select(labels, ok, ["c", "d"])
    d = rep["capabilities"]["d"]
    assert d["er_minus"] is None and d["er_plus"] is None and d["coverage"] == 0.0  # undefined, not zero
    # Without a success there is nothing to contrast with: ER- alone decides, and the report says so.
    assert rep["selected"] == ([] if all(ok) else ["c"])
    assert rep["capabilities"]["c"]["contrasted"] is all(ok)
    if not all(ok):
        assert rep["capabilities"]["c"]["gap"] == 1.0 and "ER+ is undefined" in an.format_table(rep)


def test_a_resample_that_loses_the_only_applicable_success_does_not_vote() -> None:
    # One success shows the mistake and half the failures do: the gap is negative on the whole
    # sample. A resample without that success must not pass on ER- alone (it did, 37% of the time).
    labels = [{"c": L}] + [{"c": L}, {"c": P}] * 10
    ok = [True] + [False] * 20
    rep = an.select(labels, ok, ["c"], an.Thresholds(R=200, s=100))
    row = rep["capabilities"]["c"]
    assert row["contrasted"] and row["gap"] == pytest.approx(-0.5) and row["votes"] == 0


def test_a_capability_the_agent_never_exercised_is_not_present() -> None:
    did_nothing = {
        "annotations": {
            "capabilities": list(CAPABILITIES),
            "requests_handled": 0,
            "request_writes": 0,
            "imprecise_calls": 0,
            "preconditions_checked": True,
            "args_exact": True,
            "record_choice_correct": None,
            "requests_unaddressed": 2,
            "requests_completed": 0,
            "requests_total": 2,
        }
    }
    lab = an.RuleLabeler()
    got = {c: lab.label(did_nothing, c) for c in CAPABILITIES}
    assert {c: label for c, (label, _) in got.items()} == {
        "precondition_verification": N,
        "structured_data_reasoning": N,
        "tool_calling_precision": N,
        "multi_step_completion": L,
    }
    assert "never exercised" in got["precondition_verification"][1]
    acted = {**did_nothing["annotations"], "requests_handled": 1, "request_writes": 1}
    assert lab.label({"annotations": acted}, "precondition_verification")[0] is P
    assert lab.label({"annotations": acted}, "tool_calling_precision")[0] is P


def test_plain_string_labels_count_as_labels() -> None:
    s = an.capability_stats([{"c": "LACKING"}, {"c": "NA"}, {"c": "PRESENT"}], [False, False, False], "c")
    assert s["applicable_failures"] == 2 and s["lacking_in_failures"] == 1


def test_analyze_rejects_nothing() -> None:
    with pytest.raises(ValueError, match="no trajectories"):
        an.analyze([])


def _profiles(n: int, seed: int) -> list[dict[str, float]]:
    rng = random.Random(seed)
    return [
        {c: (round(rng.uniform(0.3, 0.8), 2) if rng.random() < 0.5 else 0.0) for c in CAPABILITIES} for _ in range(n)
    ]


@pytest.mark.slow
def test_ground_truth_deficits_are_recovered(short: bool) -> None:
    """OraclePolicy with random deficit profiles on retail-v0: exactly the deficient set is selected."""
    n_profiles = 3 if short else 10
    tp = fp = fn = 0
    for k, profile in enumerate(_profiles(n_profiles, seed=11)):
        result = rollout(
            OracleBatch(deficits=profile, seed=k), "trace/retail-v0", range(k * 1000, k * 1000 + 300), progress=False
        )
        got = set(an.analyze(result.records)["selected"])
        truth = {c for c, r in profile.items() if r > 0}
        tp, fp, fn = tp + len(got & truth), fp + len(got - truth), fn + len(truth - got)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)


def test_collect_then_analyze_cli(tmp_path, capsys) -> None:
    traj = tmp_path / "t.jsonl"
    argv = [
        "collect",
        "--policy",
        "oracle",
        "--deficits",
        "precondition_verification=0.7",
        "--env",
        "trace/retail-v0",
        "--episodes",
        "120",
        "--out",
        str(traj),
    ]
    assert main(argv) == 0
    assert main(argv + ["--resume"]) == 0
    assert "120 already stored" in capsys.readouterr().out
    out = tmp_path / "report.json"
    assert main(["analyze", str(traj), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["selected"] == ["precondition_verification"] and report["episodes"] == 120
    assert out.with_suffix(".md").exists()
    assert "| precondition_verification |" in capsys.readouterr().out
    assert main(["collect", "--episodes", "1"]) == 2, "neither --model nor --policy oracle"


@pytest.mark.usefixtures("tau2_dir")
def test_rule_labels_on_tau2_tasks() -> None:
    """τ²-bench tasks carry capabilities derived from their gold actions, so the rule labeler works there too."""
    records = rollout(OracleBatch(), "trace/tau2-retail-v0", range(20), progress=False).records
    labels = an.label_all(records)
    assert any(row["precondition_verification"] is P for row in labels)
    assert any(row["multi_step_completion"] is P for row in labels) and any(
        row["multi_step_completion"] is N for row in labels
    )
    assert not any(row[c] is L for row in labels for c in CAPABILITIES), "the oracle lacks nothing"


@pytest.mark.parametrize(
    ("cap", "skips"),
    [
        ("multi_step_completion", True),
        ("precondition_verification", False),
        ("tool_calling_precision", False),
        ("structured_data_reasoning", False),
    ],
)
def test_only_stopping_early_leaves_requests_unaddressed(cap, skips) -> None:
    """A slip of another capability fails a request it attempted; only stopping early skips one.

    (Rarely a wrong answer to a question cannot be tied to its request, which then counts as
    unaddressed: 1 of 80 episodes with structured-data slips.)
    """
    records = rollout(OracleBatch(deficits={cap: 1.0}, seed=2), "trace/retail-v0", range(80), progress=False).records
    multi = [r["annotations"] for r in records if r["annotations"]["requests_total"] > 1]
    share = sum(a["requests_unaddressed"] > 0 for a in multi) / len(multi)
    assert share > 0.9 if skips else share < 0.05, (cap, share)
