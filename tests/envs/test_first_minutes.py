"""A newcomer's first ten minutes (issue 16, sections 2 and 3): what works from any clone,
and the friction points a new user hits, each with a clear behaviour or message."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import pytest
from hypothesis import find, settings
from hypothesis.errors import NoSuchExample

from trace_envs import (
    OraclePolicy,
    RegistrationError,
    SpecError,
    multiagent,
    register_spec,
    registered_ids,
    registration,
)
from trace_envs.cli import main
from trace_envs.registration import BUILTIN_SPEC_DIRS
from trace_envs.testing import specs

BUILTIN_DIR = next(d for d in BUILTIN_SPEC_DIRS if d.is_dir())
BASE = json.loads((BUILTIN_DIR / "precondition-v0.json").read_text(encoding="utf-8"))
ID = "trace/precondition-v0"
TAU2 = "trace/tau2-retail-v0"


@pytest.fixture
def no_tau2_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a user's clone: no τ²-bench data anywhere."""
    monkeypatch.delenv("TAU2_DATA_DIR", raising=False)


@pytest.fixture
def scratch_ids() -> list[str]:
    """Ids a test registers; removed afterwards."""
    ids: list[str] = []
    yield ids
    for env_id in ids:
        gym.registry.pop(env_id, None)
        registration._OURS.pop(env_id, None)


def _oracle_episode(env, seed: int = 0) -> list[str]:
    """Play one oracle episode; the actions taken."""
    obs, info = env.reset(seed=seed)
    oracle = OraclePolicy()
    oracle.reset(env)
    actions, done = [], False
    while not done:
        actions.append(oracle.act(obs, info))
        obs, _, terminated, truncated, info = env.step(actions[-1])
        done = terminated or truncated
    return actions


# ---------------------------------------------------------------------------- specs() from any clone
def test_specs_draws_only_families_that_load_here(no_tau2_data) -> None:
    with pytest.raises(NoSuchExample):
        find(
            specs(),
            lambda spec: spec["tasks"]["family"] == "tau2",
            settings=settings(max_examples=50, database=None, derandomize=True),
        )


def test_specs_refuses_a_named_family_that_cannot_load_here(no_tau2_data) -> None:
    with pytest.raises(ValueError, match=r"\['tau2'\] cannot make tasks here: .*TAU2_DATA_DIR"):
        specs(families=["tau2", "precondition"])


# ---------------------------------------------------------------------------- τ²-bench data message
def test_missing_tau2_data_says_where_it_comes_from(no_tau2_data) -> None:
    with pytest.raises(SpecError) as info:
        gym.make(TAU2).reset(seed=0)
    message = str(info.value)
    for part in ("tau2-bench", "data/tau2", "data_dir=", "TAU2_DATA_DIR", "domains/retail/db.json", "tasks.json"):
        assert part in message, f"{part!r} not in: {message}"
    assert "shared" not in message and "--data-dir" not in message, message


def test_missing_tau2_data_on_the_command_line_names_the_flag(no_tau2_data, capsys) -> None:
    assert main(["show", TAU2]) == 2
    err = capsys.readouterr().err
    assert "--data-dir" in err and "data/tau2" in err and "tau2-bench" in err, err
    assert "data_dir=" not in err and "shared" not in err, err


def test_an_incomplete_tau2_dir_names_the_missing_file(tmp_path: Path) -> None:
    retail = tmp_path / "domains" / "retail"
    retail.mkdir(parents=True)
    (retail / "db.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        gym.make(TAU2, data_dir=tmp_path).reset(seed=0)
    assert str(retail / "tasks.json") in str(info.value), str(info.value)
    assert str(retail / "db.json") not in str(info.value).split("Fix:")[0], "db.json is there"


# ---------------------------------------------------------------------------- registration
def test_trace_env_specs_takes_files_and_warns_about_missing_paths(tmp_path: Path, monkeypatch) -> None:
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(copy.deepcopy(BASE) | {"id": "user/one-file-v0"}), encoding="utf-8")
    missing = tmp_path / "no-such-dir"
    monkeypatch.setenv("TRACE_ENV_SPECS", os.pathsep.join([str(mine), str(missing)]))
    monkeypatch.setattr(registration, "SKIPPED", {})
    with pytest.warns(RuntimeWarning, match=re.escape(str(missing))):
        files = registration.spec_files()
    assert mine.resolve() in files
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registration.spec_files()  # warned once per process, not at every registration
    assert str(missing) in registration.SKIPPED


def test_trace_env_specs_file_registers_through_the_start_up_hook(tmp_path: Path) -> None:
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(copy.deepcopy(BASE) | {"id": "user/one-file-v0"}), encoding="utf-8")
    code = "import gymnasium as gym; print(gym.make('user/one-file-v0').reset(seed=0)[1]['env_id'])"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TRACE_ENV_SPECS": str(mine)},
    )
    assert done.returncode == 0 and "user/one-file-v0" in done.stdout, done.stderr[-3000:]


def test_a_duplicate_dict_spec_says_where_the_first_came_from(scratch_ids: list[str]) -> None:
    data = copy.deepcopy(BASE) | {"id": "testing/dict-twice-v0"}
    scratch_ids.append(register_spec(data))
    with pytest.raises(RegistrationError, match=r"already registered \(from a dict spec\)"):
        register_spec(data)


# ---------------------------------------------------------------------------- render_mode="human"
def test_human_render_mode_prints_the_ansi_transcript(capsys) -> None:
    ansi = gym.make(ID, render_mode="ansi")
    actions = _oracle_episode(ansi)
    expected = ansi.unwrapped.render()
    human = gym.make(ID, render_mode="human")
    human.reset(seed=0)
    for action in actions:
        human.step(action)
        assert human.render() is None  # printed already: nothing new to show
    assert capsys.readouterr().out == expected + "\n"


# ---------------------------------------------------------------------------- reset options
def test_a_misspelt_reset_option_is_an_error_listing_the_valid_ones() -> None:
    env = gym.make(ID)
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['taskid'\].*\['task_id'\].*'task_id'\?"):
        env.reset(options={"taskid": 3})
    env.reset(options={})  # an empty dict (gymnasium's check_env passes one) is fine


def test_the_pettingzoo_env_warns_about_unknown_reset_options() -> None:
    # PettingZoo's api_test resets with options={"options": 1}, so this env warns where TraceEnv raises.
    env = multiagent.make(ID)
    with pytest.warns(UserWarning, match=r"option\(s\) \['taskid'\] ignored; the valid options are \['task_id'\]"):
        env.reset(seed=0, options={"taskid": 3})
    env.reset(options={"task_id": "precondition-4"})
    assert env.infos["assistant"]["task_id"] == "precondition-4"


# ---------------------------------------------------------------------------- PettingZoo
def test_an_ignored_user_action_warns_once() -> None:
    env = multiagent.make(ID)  # scripted_user=True
    env.reset(seed=0)
    env.step("Hello, how can I help?")
    with pytest.warns(UserWarning, match="scripted_user=False"):
        env.step("I am the user agent")
    env.step("Please tell me your email.")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.step("ignored again, without a second warning")
        env.step("Anything else?")
        env.step(None)  # None is the documented action for the scripted side


# ---------------------------------------------------------------------------- trace-envs list/validate/check/bench
def test_list_json(capsys) -> None:
    assert main(["list", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["id"] for e in entries] == registered_ids()
    row = next(e for e in entries if e["id"] == ID)
    assert row["family"] == "precondition" and row["max_turns"] == BASE["max_turns"]


def test_validate_without_arguments_validates_every_registered_spec(capsys) -> None:
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    for env_id in registered_ids():
        assert f"({env_id})" in out
    assert f"{len(registered_ids())} valid, 0 invalid" in out


def test_check_without_arguments_checks_every_id(capsys) -> None:
    assert main(["check", "--episodes", "1"]) == 0
    out = capsys.readouterr().out
    for env_id in registered_ids():
        assert re.search(rf"^(OK  |SKIP) {re.escape(env_id)}\b", out, re.M), f"{env_id} not checked: {out[-2000:]}"
    assert "0 failed" in out


def test_check_without_data_skips_the_tau2_env_and_names_the_flag(no_tau2_data, capsys) -> None:
    assert main(["check", "--episodes", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^SKIP {re.escape(TAU2)}: .*--data-dir", out, re.M), out[-2000:]
    assert main(["check", TAU2, "--episodes", "1"]) == 1  # named: missing data is a failure


def test_bench_leaves_the_committed_results_alone_without_out(tmp_path: Path, monkeypatch, capsys) -> None:
    from trace_envs import cli

    bench = cli._load_bench()
    monkeypatch.setattr(bench, "DEFAULT_OUT", tmp_path / "results")  # stands in for benchmarks/results
    assert main(["bench", "--seconds", "0.05", "--ids", ID]) == 0
    out = capsys.readouterr().out
    assert f"| `{ID}` |" in out and "--out" in out
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------------------- trace-envs replay
@pytest.fixture(scope="module")
def trajectories(tmp_path_factory) -> Path:
    """Two oracle episodes stored by the agents pipeline's own writer."""
    from trace_agents.rollout import OracleBatch, rollout

    path = tmp_path_factory.mktemp("replay") / "trajectories.jsonl"
    rollout(OracleBatch({"precondition_verification": 1.0}), ID, [0, 1], store=path, progress=False)
    return path


def test_replay_prints_every_episode_with_its_reward_breakdown(trajectories: Path, capsys) -> None:
    records = [json.loads(line) for line in trajectories.read_text(encoding="utf-8").splitlines()]
    assert main(["replay", str(trajectories)]) == 0
    out = capsys.readouterr().out
    for i, record in enumerate(records):
        assert f"== episode {i} (line {i + 1}): {ID} task {record['task_id']}, seed {record['seed']}" in out
        assert f"assistant: {record['steps'][1]['action']}" in out
    assert out.count("== result ==") == 2 and out.count("return_components:") == 2
    assert f"success: {records[0]['success']}" in out and "missing_reads" in out
    # The opening keeps its conversation (the customer's request) when its policy and tools are cut.
    first_obs = records[0]["steps"][0]["obs"]
    assert first_obs[-200:] in out and "--full prints them" in out


def test_replay_one_episode(trajectories: Path, capsys) -> None:
    assert main(["replay", str(trajectories), "--episode", "1"]) == 0
    out = capsys.readouterr().out
    assert "== episode 1 (line 2)" in out and "== episode 0" not in out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--episode", "2"], "--episode 2 is out of range: {path} holds 2 episodes (0 to 1)"),
        ([], "no such trajectory file: {missing}"),
    ],
)
def test_replay_errors(trajectories: Path, tmp_path: Path, capsys, argv: list[str], says: str) -> None:
    missing = tmp_path / "none.jsonl"
    path = missing if not argv else trajectories
    assert main(["replay", str(path), *argv]) == 2
    assert says.format(path=trajectories, missing=missing) in capsys.readouterr().err


def test_replay_names_a_bad_line(trajectories: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    lines = trajectories.read_text(encoding="utf-8").splitlines()
    bad.write_text("\n".join([lines[0], "{not json", lines[1]]) + "\n", encoding="utf-8")
    assert main(["replay", str(bad)]) == 2
    assert f"{bad}: line 2 is not valid JSON" in capsys.readouterr().err
    bad.write_text('{"a": 1}\n', encoding="utf-8")
    assert main(["replay", str(bad)]) == 2
    assert "line 1 is not a trajectory" in capsys.readouterr().err
