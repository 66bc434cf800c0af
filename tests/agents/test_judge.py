"""The LLM judge: packaged prompts, discovery, K-run labelling with majority aggregation, endpoints."""

from __future__ import annotations

import json

import pytest

from trace_agents import analysis as an
from trace_agents import judge as jd
from trace_agents.rollout import OracleBatch, rollout

L, P, N = an.Label.LACKING, an.Label.PRESENT, an.Label.NA


class Canned:
    """A fake chat model: replies in turn from a list (cycling), and records the prompts."""

    def __init__(self, replies):
        self.replies, self.prompts = list(replies), []

    def __call__(self, messages):
        self.prompts.append(messages[-1]["content"])
        return self.replies[(len(self.prompts) - 1) % len(self.replies)]


@pytest.fixture(scope="module")
def records():
    return rollout(
        OracleBatch(deficits={"precondition_verification": 0.5}, seed=0), "trace/retail-v0", range(6), progress=False
    ).records


def test_prompts_are_package_files():
    text = jd.prompt("label").template
    assert "$capability" in text and "LABEL:" in text
    assert "$trajectories" in jd.prompt("discover").template


def test_discovery_parses_snake_case_capabilities(records):
    reply = (
        'Here you go:\n[{"name": "verify_order_status", "description": "Reads the order before writing."},'
        ' {"name": "Bad Name", "description": "x"}, {"name": "copy_ids", "description": "Copies ids."},'
        ' {"name": "third_one", "description": "y"}]'
    )
    judge = jd.JudgeLabeler(Canned([reply]))
    caps = judge.discover(records, n=2)
    assert caps == {"verify_order_status": "Reads the order before writing.", "copy_ids": "Copies ids."}
    assert "failure" in judge.chat.prompts[0] and "at most 2" in judge.chat.prompts[0]
    with pytest.raises(ValueError, match="no capability"):
        jd.JudgeLabeler(Canned(["I cannot help."])).discover(records)


def test_labels_are_majority_voted_over_runs(records):
    replies = [
        "LABEL: LACKING\nEVIDENCE: wrote before reading",
        "LABEL: PRESENT\nEVIDENCE: read first",
        "LABEL: lacking\nEVIDENCE: no read",
    ]
    judge = jd.JudgeLabeler(Canned(replies), {"verify": "Reads first."}, runs=3)
    label, evidence = judge.label(records[0], "verify")
    assert label is L and evidence.startswith("2/3 runs: wrote before reading")
    assert len(judge.chat.prompts) == 3 and "Reads first." in judge.chat.prompts[0]
    with pytest.raises(ValueError, match="no definition"):
        judge.label(records[0], "unknown")


def test_aggregation_edge_cases():
    assert jd.aggregate([]) == (N, "the judge gave no parseable label")
    assert jd.aggregate([(L, "a"), (P, "b")])[0] is P, "a tie goes to the less severe label"
    assert jd.parse_label("no idea") is None
    assert jd.parse_label("LABEL: NA") == (N, "")


def test_judge_drives_the_analysis(records):
    judge = jd.JudgeLabeler(Canned(["LABEL: LACKING\nEVIDENCE: x"]), {"c": "d"}, runs=1)
    report = an.analyze(records, labeler=judge, capabilities=["c"])
    assert report["labeler"] == "JudgeLabeler" and report["capabilities"]["c"]["er_plus"] == 1.0


def test_openai_compatible_endpoint(fake_endpoint):
    with fake_endpoint(lambda request: "LABEL: NA\nEVIDENCE: none") as (url, seen):
        chat = jd.OpenAIChat(url, model="m", api_key="k")
        assert chat([{"role": "user", "content": "hi"}]).startswith("LABEL: NA")
        assert seen[0][0] == "/v1/chat/completions" and seen[0][1]["model"] == "m"
    with pytest.raises(RuntimeError, match="failed"):
        jd.OpenAIChat("http://127.0.0.1:9/v1", model="m", timeout=2)([{"role": "user", "content": "x"}])


def test_hf_chat_runs_a_local_model(records):
    pytest.importorskip("torch")
    from trace_agents import models

    tok = models.build_tokenizer(models.corpus(8), vocab_size=600)
    model = models.build_model(
        tok, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64
    )
    with pytest.warns(UserWarning, match="repeat one answer"):  # two greedy runs: one answer twice
        jd.JudgeLabeler(jd.HFChat(model, tok), {"c": "d"}, runs=2)
    judge = jd.JudgeLabeler(jd.HFChat(model, tok, max_new_tokens=6, temperature=0.8), {"c": "d"}, runs=2)
    label, evidence = judge.label(records[0], "c")
    assert label in (N, P, L) and isinstance(evidence, str)


def test_analyze_cli_with_a_judge_endpoint(tmp_path, capsys, fake_endpoint):
    from trace_agents.cli import main

    def reply(request):
        text = request["messages"][-1]["content"]
        if "Propose at most" in text:
            return '[{"name": "check_status_first", "description": "Reads the order before a write."}]'
        return "LABEL: LACKING\nEVIDENCE: x" if "outcome: failure" in text else "LABEL: PRESENT"

    traj = tmp_path / "t.jsonl"
    assert (
        main(
            [
                "collect",
                "--policy",
                "oracle",
                "--deficits",
                "precondition_verification=0.6",
                "--episodes",
                "30",
                "--out",
                str(traj),
            ]
        )
        == 0
    )
    out = tmp_path / "r.json"
    with fake_endpoint(reply) as (url, seen):
        assert main(["analyze", str(traj), "--out", str(out), "--judge-runs", "1", "--judge-url", url]) == 0
        assert {r["temperature"] for _, r in seen} == {0.0}  # one run: greedy
        seen.clear()
        assert (
            main(["analyze", str(traj), "--out", str(tmp_path / "r3.json"), "--judge-runs", "3", "--judge-url", url])
            == 0
        )
        assert {r["temperature"] for _, r in seen} == {0.7}  # several runs: sampled, so they are independent
    report = json.loads(out.read_text())
    assert report["labeler"] == "JudgeLabeler" and report["selected"] == ["check_status_first"]
    assert "the judge proposed: check_status_first" in capsys.readouterr().out
