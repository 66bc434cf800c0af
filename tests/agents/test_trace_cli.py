"""The ``trace`` command line's first ten minutes (issue 16, section 3): model paths, JSON output, help text."""

from __future__ import annotations

import argparse
import json

import pytest

from trace_agents import models
from trace_agents.cli import build_parser, main

ID = "trace/precondition-v0"
ORACLE = ["--model", "oracle", "--env", ID, "--episodes", "3"]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _floats(value):
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _floats(v)
    elif isinstance(value, list):
        for v in value:
            yield from _floats(v)


# ---------------------------------------------------------------- --model that is a path
@pytest.mark.parametrize(
    ("name", "is_path"),
    [
        ("runs/bootstrap/model", True),
        ("runs/model", True),
        ("./model", True),
        ("../model", True),
        ("~/model", True),
        ("/models/base", True),
        ("org/name/", True),
        ("Qwen/Qwen3-8B", False),
        ("gpt2", False),
        ("oracle", False),
    ],
)
def test_looks_like_path(name: str, is_path: bool, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # runs/model is a path here; Qwen/ does not exist, so Qwen/Qwen3-8B is a hub id
    assert models.looks_like_path(name) is is_path


def test_resolve_keeps_hub_ids_and_expands_local_paths(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "model").mkdir()
    assert models.resolve("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"
    assert models.resolve("~/model") == str(tmp_path / "model")
    with pytest.raises(FileNotFoundError, match=r"no such model directory: ~/other \(run `trace bootstrap` first"):
        models.resolve("~/other")


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--model", "runs/bootstrap/model", "--episodes", "1"],
        ["evaluate", "--model", "runs/model", "--episodes", "1"],
        ["collect", "--model", "./model", "--episodes", "1"],
        ["train", "--model", "~/model"],
        ["bootstrap", "--model", "a/b/c", "--out", "out"],
    ],
)
def test_a_missing_model_path_fails_at_once_without_the_hub(argv, tmp_path, monkeypatch, capsys) -> None:
    import transformers

    def hub(*args, **kwargs):
        raise AssertionError(f"from_pretrained{args} called")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "runs").mkdir()
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", hub)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", hub)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"no such model directory: {argv[2]} (run `trace bootstrap` first, or pass a hub id)" in err


# ---------------------------------------------------------------- JSON output and --out -
def test_evaluate_json_prints_the_summary_and_still_writes_out(tmp_path, capsys) -> None:
    out = tmp_path / "e.json"
    assert main(["evaluate", *ORACLE, "--json", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert printed == json.loads(out.read_text()) and printed[0]["env_id"] == ID
    assert f"`{ID}`" in captured.err and "wrote" in captured.err  # the table, for people, goes to stderr


def test_evaluate_out_dash_prints_and_writes_nothing(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", *ORACLE, "--out", "-"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["episodes"] == 3
    assert not any(tmp_path.iterdir())


def test_collect_out_dash_prints_json_lines(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["collect", "--policy", "oracle", "--env", ID, "--episodes", "2", "--out", "-"]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["seed"] for r in records] == [0, 1] and "2 episodes" in captured.err
    assert not any(tmp_path.iterdir())
    assert main(["collect", "--policy", "oracle", "--episodes", "2", "--out", "-", "--resume"]) == 2
    assert "does not go with --out -" in capsys.readouterr().err


def test_analyze_out_dash_prints_the_report(tmp_path, capsys) -> None:
    traj = tmp_path / "t.jsonl"
    assert main(["collect", "--policy", "oracle", "--env", ID, "--episodes", "6", "--out", str(traj)]) == 0
    capsys.readouterr()
    assert main(["analyze", str(traj), "--out", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl"]


# ---------------------------------------------------------------- printed numbers
def test_evaluate_json_has_no_float_noise(tmp_path) -> None:
    out = tmp_path / "e.json"
    assert main(["evaluate", *ORACLE, "--out", str(out)]) == 0
    text = out.read_text()
    assert "0.99999999" not in text, text  # an oracle's return of 1, summed from float components
    assert all(x == round(x, 6) for x in _floats(json.loads(text)))


# ---------------------------------------------------------------- help text
def test_top_level_help_gives_the_description_once(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.count("the TRACE pipeline from the command line") == 1
    assert "trace evaluate --model M" in out


def test_help_shows_percent_signs_once() -> None:
    text = _subparsers()["evaluate"].format_help()
    assert "95%" in text and "%%" not in text


def test_help_mentions_only_flags_the_subcommand_has() -> None:
    for name, sub in _subparsers().items():
        flags = {flag for action in sub._actions for flag in action.option_strings}
        if "--adapter" in sub.format_help():
            assert "--adapter" in flags, f"`trace {name} --help` mentions --adapter, which it does not take"


def test_help_gives_each_default_once_and_never_none() -> None:
    for name, sub in _subparsers().items():
        for action in sub._actions:
            text = action.help or ""
            assert "(default: None)" not in text and "(default: )" not in text, f"trace {name}: {text}"
            assert text.count("default:") <= 1, f"trace {name}: {text}"


# ---------------------------------------------------------------- analyze: one policy at a time
def test_analyze_refuses_a_mix_of_policies_and_names_them(tmp_path, capsys) -> None:
    traj, out = tmp_path / "t.jsonl", tmp_path / "r.json"
    collect = ["collect", "--policy", "oracle", "--env", ID, "--episodes", "6", "--out", str(traj)]
    assert main(collect) == 0
    assert main([*collect, "--deficits", "precondition_verification=1.0"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(traj), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds the episodes of 2 policies" in err and "--policy ID" in err
    ids = [line.split()[0] for line in err.splitlines()[1:]]
    assert len(ids) == 2 and "deficits precondition_verification=1.0 (6 episodes)" in err
    assert not out.exists()
    assert main(["analyze", str(traj), "--policy", ids[1][:6], "--out", str(out)]) == 0
    assert json.loads(out.read_text())["episodes"] == 6
    assert main(["analyze", str(traj), "--policy", "nope", "--out", str(out)]) == 2
    assert "'nope' matches 0 of the 2 policies" in capsys.readouterr().err


def test_tau2_data_errors_word_the_fix_for_the_command_line(tmp_path, capsys, monkeypatch):
    from trace_agents.cli import main

    monkeypatch.delenv("TAU2_DATA_DIR", raising=False)
    assert (
        main(
            [
                "evaluate",
                "--model",
                "oracle",
                "--env",
                "trace/tau2-retail-v0",
                "--data-dir",
                str(tmp_path),
                "--episodes",
                "1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--data-dir" in err and "data_dir=" not in err, err
