"""The ``trace-envs`` command line, driven through ``main([...])`` with captured output."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

from trace_envs import OraclePolicy, registered_ids
from trace_envs.cli import build_parser, main
from trace_envs.registration import BUILTIN_SPEC_DIRS

BUILTIN_DIR = next(d for d in BUILTIN_SPEC_DIRS if d.is_dir())
BUILTIN_FILES = sorted(BUILTIN_DIR.glob("*.json"))
PRECONDITION_FILE = BUILTIN_DIR / "precondition-v0.json"
ID = "trace/precondition-v0"


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


def _bad_spec(tmp_path: Path, name: str, edit) -> Path:
    """A copy of the precondition spec with one mistake, written to tmp_path."""
    data = json.loads(PRECONDITION_FILE.read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_every_flag_has_help() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == {"list", "show", "validate", "play", "check", "bench", "tau2-check", "replay"}
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, f"`{name} {action.dest}` has no help text"


def test_help_returns_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "validate" in capsys.readouterr().out


def test_list_shows_every_registered_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for env_id in registered_ids():
        assert env_id in out
    assert "precondition_verification" in out and "max_turns" in out
    assert f"{len(registered_ids())} ids" in out


def test_show_prints_spec_transcript_and_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", ID, "--seed", "3"]) == 0
    out = capsys.readouterr().out
    spec_text = out.split("== spec", 1)[1].split("\n", 1)[1].split("\n\n== first observation", 1)[0]
    assert json.loads(spec_text)["id"] == ID
    assert "== transcript" in out and "assistant -> find_user_id_by" in out
    assert "success: True" in out
    assert "return_components:" in out and "preconditions_checked: true" in out


def test_show_compact_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "trace/tool-calling-v0", "--format", "compact"]) == 0
    out = capsys.readouterr().out
    assert "(compact format;" in out and "\nU: " in out
    assert "success: True" in out


def test_validate_builtin_specs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", *map(str, BUILTIN_FILES)]) == 0
    out = capsys.readouterr().out
    assert out.count("OK ") == len(BUILTIN_FILES)
    assert f"{len(BUILTIN_FILES)} valid, 0 invalid" in out


def test_validate_reports_each_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    misspelt = _bad_spec(tmp_path, "misspelt.json", lambda d: d.__setitem__("rewrd", d.pop("reward")))
    bad_range = _bad_spec(tmp_path, "range.json", lambda d: d["reward"].__setitem__("range", [0.0, 5.0]))
    assert main(["validate", str(misspelt), str(PRECONDITION_FILE), str(bad_range)]) == 1
    out = capsys.readouterr().out
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 2
    assert str(misspelt) in fails[0] and "'rewrd'" in fails[0] and "Did you mean 'reward'" in fails[0]
    assert str(bad_range) in fails[1] and "$.reward.range" in fails[1]
    assert "1 valid, 2 invalid" in out  # one bad file does not hide the others


def test_play_shorthand_and_quit(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _stdin(
        monkeypatch,
        "\n".join(
            [
                "Hello! Could you give me your email?",
                "",
                ":help",
                ':tool get_order_details {"order_id": "#W0"}',
                ":tool get_order_details {not json",
                ":quit",
                "this line is never read",
            ]
        )
        + "\n",
    )
    assert main(["play", "trace/retail-v0", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "> " in out and ":tool NAME {json-args}" in out  # the prompt and :help
    assert "tool get_order_details: Error" in out  # the shorthand became a real tool call
    assert "nothing was sent" in out
    assert "[reward" in out and "quit after 2 turns" in out


def test_play_eof(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _stdin(monkeypatch, "")
    assert main(["play", ID]) == 0
    assert "end of input after 0 turns" in capsys.readouterr().out


def test_play_to_the_end(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env = gym.make(ID)
    env.reset(seed=4)
    oracle = OraclePolicy()
    oracle.reset(env)
    _stdin(monkeypatch, "\n".join(oracle.plan) + "\n")
    assert main(["play", ID, "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "== episode over: terminated" in out
    assert "success: True" in out and "annotations:" in out


@pytest.mark.parametrize("command", ["play", "show"])
def test_bad_task_id_exits_2(command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _stdin(monkeypatch, "")
    assert main([command, ID, "--task-id", "not-a-task"]) == 2
    err = capsys.readouterr().err
    assert "task_id must look like" in err and "Traceback" not in err


def test_check_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", ID, "--episodes", "1"]) == 0
    out = capsys.readouterr().out
    assert f"OK   {ID}" in out and "oracle_returns" in out


def test_check_spec_file(capsys: pytest.CaptureFixture[str]) -> None:
    # The built-in file itself: re-registering it (override=True) leaves the registry as it was.
    assert main(["check", str(PRECONDITION_FILE), "--episodes", "1"]) == 0
    assert f"registered {ID}" in capsys.readouterr().out
    assert ID in registered_ids()


def test_check_fallback_without_testing_module(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "trace_envs.testing", None)  # makes the import fail
    assert main(["check", ID, "--episodes", "2"]) == 0
    assert "fallback" in capsys.readouterr().out


def test_check_invalid_spec_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _bad_spec(tmp_path, "bad.json", lambda d: d["reward"]["components"].__setitem__("db_mach", 1.0))
    assert main(["check", str(bad)]) == 1
    assert "Did you mean 'db_match'" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "trace/precondtion-v0"],
        ["play", "trace/precondtion-v0"],
        ["check", "trace/precondtion-v0"],
        ["bench", "--ids", "trace/precondtion-v0", "--seconds", "0.05"],
    ],
)
def test_unknown_id_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Did you mean `trace/precondition-v0`?" in err
    assert "Traceback" not in err


def test_bench_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--seconds", "0.05", "--ids", ID, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"| `{ID}` |" in out and "single-process, one core" in out
    assert (tmp_path / "envs.md").read_text(encoding="utf-8").startswith("# trace_envs throughput")
    result = json.loads((tmp_path / "envs.json").read_text(encoding="utf-8"))
    assert {"machine", "git_commit", "seconds_per_id", "envs", "skipped", "note"} <= set(result)
    assert {"platform", "python", "cpu_count", "cpu_model", "gymnasium"} <= set(result["machine"])
    row = result["envs"][ID]
    for key in (
        "resets_per_s",
        "oracle_steps_per_s",
        "oracle_step_only_steps_per_s",
        "wrapped_steps_per_s",
        "wrapped_step_only_steps_per_s",
        "adversarial_steps_per_s",
        "peak_mib",
    ):
        assert row[key] > 0, key
    assert row["oracle_success_rate"] == 1.0


def test_python_dash_m() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trace_envs.cli", "list"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert ID in done.stdout


# ---------------------------------------------------------------------- tau2-check and params
@pytest.mark.usefixtures("tau2_dir")
def test_tau2_check_counts_passes(capsys) -> None:
    assert main(["tau2-check", "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "passed 5, failed 0 (of 5 tasks)" in out


def test_tau2_check_without_data_says_how_to_set_it(capsys, monkeypatch) -> None:
    monkeypatch.delenv("TAU2_DATA_DIR", raising=False)
    assert main(["tau2-check"]) == 2
    assert "TAU2_DATA_DIR" in capsys.readouterr().err


@pytest.mark.usefixtures("tau2_dir")
def test_play_a_tau2_task_by_id(capsys, monkeypatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("What is your email?\n:quit\n"))
    assert main(["play", "trace/tau2-retail-v0", "--task-id", "6"]) == 0
    out = capsys.readouterr().out
    assert "user:" in out and "@" in out, out[-500:]


def test_param_overrides_reach_the_family(capsys) -> None:
    assert main(["show", "trace/precondition-v0", "--seed", "3", "--param", "refuse_rate=1.0"]) == 0
    out = capsys.readouterr().out
    assert '"requests_to_refuse": 1' in out or "requests_to_refuse: 1" in out, out[-1500:]


def test_bad_param_is_a_usage_error(capsys) -> None:
    assert main(["show", "trace/precondition-v0", "--param", "refuse_rate"]) == 2
    assert main(["show", "trace/precondition-v0", "--param", "refuse_rat=0.5"]) == 2
    assert "Did you mean 'refuse_rate'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["show", ID, "--seed", "-1"], ["check", ID, "--seed", "-2"], ["tau2-check", "--limit", "-73"]]
)
def test_negative_seeds_and_limits_are_usage_errors(argv, capsys) -> None:
    assert main(argv) == 2  # a gymnasium traceback, or a slice from the end, before
    assert "expected an integer >= 0" in capsys.readouterr().err


def test_agent_cli_counts_and_reports_are_checked(tmp_path, capsys) -> None:
    from trace_agents.cli import main as trace

    assert trace(["evaluate", "--model", "oracle", "--episodes", "0"]) == 2
    assert trace(["collect", "--policy", "oracle", "--episodes", "-1"]) == 2
    assert trace(["collect", "--policy", "oracle", "--batch-size", "0"]) == 2
    assert "expected an integer >= 1" in capsys.readouterr().err
    report = tmp_path / "r.json"
    report.write_text("[1, 2]")
    assert trace(["synthesize", str(report), "--policy", "oracle"]) == 2
    assert "is not a report of trace analyze" in capsys.readouterr().err
