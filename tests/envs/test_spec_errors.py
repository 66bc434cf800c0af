"""Bad specs fail with a SpecError naming the file, the JSON path and the fix; the registry is strict."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import gymnasium as gym
import pytest

import trace_envs
from trace_envs import RegistrationError, SpecError, TraceEnv, load_spec, register_spec, registration
from trace_envs.registration import BUILTIN_SPEC_DIRS

BUILTIN_DIR = next(d for d in BUILTIN_SPEC_DIRS if d.is_dir())
BASE = json.loads((BUILTIN_DIR / "precondition-v0.json").read_text())


def _bad(tmp_path: Path, change: Callable[[dict], object], name: str = "bad-spec.json") -> tuple[Path, str]:
    """Write the precondition spec with ``change`` applied; the SpecError message load_spec gives."""
    data = copy.deepcopy(BASE)
    change(data)
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert str(path) in message, f"the message does not name the file: {message}"
    assert "Fix:" in message, f"the message gives no fix: {message}"
    return path, message


def _rename(section: dict, old: str, new: str) -> None:
    section[new] = section.pop(old)


# ---------------------------------------------------------------------------- each mistake
def test_misspelt_top_level_key(tmp_path: Path) -> None:
    _, msg = _bad(tmp_path, lambda d: _rename(d, "max_turns", "max_turn"))
    assert "$" in msg and "'max_turn'" in msg and "Did you mean 'max_turns'?" in msg, msg


def test_misspelt_nested_key(tmp_path: Path) -> None:
    _, msg = _bad(tmp_path, lambda d: _rename(d["reward"], "success", "sucess"))
    assert "$.reward" in msg and "Did you mean 'success'?" in msg, msg


def test_misspelt_family(tmp_path: Path) -> None:
    _, msg = _bad(tmp_path, lambda d: d["tasks"].update(family="precondtion"))
    assert "$.tasks.family" in msg and "'precondtion'" in msg and "Did you mean 'precondition'?" in msg, msg


def test_unknown_tool(tmp_path: Path) -> None:
    tools = ["find_user_id_by_email", "get_order_detail"]
    _, msg = _bad(tmp_path, lambda d: d["domain"].update(tools=tools))
    assert "$.domain.tools[1]" in msg and "Did you mean 'get_order_details'?" in msg, msg


def test_unknown_reward_component(tmp_path: Path) -> None:
    _, msg = _bad(tmp_path, lambda d: _rename(d["reward"]["components"], "db_match", "db_mach"))
    assert "$.reward.components.db_mach" in msg and "Did you mean 'db_match'?" in msg, msg


def test_unknown_family_param(tmp_path: Path) -> None:
    _, msg = _bad(tmp_path, lambda d: d["tasks"]["params"].update(refuse_rat=0.3))
    assert "$.tasks.params.refuse_rat" in msg and "Did you mean 'refuse_rate'?" in msg, msg


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("refuse_rate", "high", "float"),
        ("n_requests", 1.5, "int"),
        ("n_requests", True, "int"),
        ("kinds", "cancel", "list"),
    ],
)
def test_wrong_param_type(tmp_path: Path, param: str, value: object, expected: str) -> None:
    _, msg = _bad(tmp_path, lambda d: d["tasks"]["params"].update({param: value}))
    assert f"$.tasks.params.{param}" in msg and f"expected {expected}" in msg and repr(value) in msg, msg


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("kinds", ["cancl"]),  # KeyError 'cancl' at reset today
        ("kinds", []),  # IndexError at reset
        ("n_requests", 0),  # IndexError at reset
        ("n_requests", -3),
    ],
)
def test_param_values_outside_their_domain(tmp_path: Path, param: str, value: object) -> None:
    # A spec that loads must make an env that resets: values the family cannot use are spec errors too.
    data = copy.deepcopy(BASE)
    data["tasks"]["params"][param] = value
    path = tmp_path / "bad-spec.json"
    path.write_text(json.dumps(data))
    try:
        spec = load_spec(path)
    except SpecError as exc:
        assert str(path) in str(exc) and f"$.tasks.params.{param}" in str(exc), str(exc)
        return
    try:
        TraceEnv(spec).reset(seed=0)
    except Exception as exc:
        pytest.fail(
            f"load_spec accepted tasks.params.{param}={value!r}, but reset raised "
            f"{type(exc).__name__}: {exc}; the spec check should reject it with a SpecError"
        )


def test_wrong_declared_range(tmp_path: Path) -> None:
    _, msg = _bad(tmp_path, lambda d: d["reward"].update(range=[0, 1]))
    assert "$.reward.range" in msg and "[-0.2, 1.0]" in msg, msg


def test_non_finite_weight(tmp_path: Path) -> None:
    # json accepts NaN; a NaN weight makes every return NaN, which the range check does not notice.
    data = copy.deepcopy(BASE)
    data["reward"]["components"]["db_match"] = float("nan")
    data["reward"]["range"] = [-0.2, 0.6]  # what reward_range gives when it skips the NaN
    path = tmp_path / "nan-weight.json"
    path.write_text(json.dumps(data))  # writes the NaN literal
    with pytest.raises(SpecError, match=r"\$\.reward\.components\.db_match"):
        load_spec(path)


def test_success_component_without_positive_weight(tmp_path: Path) -> None:
    _, msg = _bad(tmp_path, lambda d: d["reward"].update(success=["db_match", "format_error"]))
    assert "$.reward.success[1]" in msg and "'format_error'" in msg and "weight > 0" in msg, msg


def test_success_component_that_is_not_a_component(tmp_path: Path) -> None:
    _, msg = _bad(tmp_path, lambda d: d["reward"].update(success=["db_mtch"]))
    assert "$.reward.success[0]" in msg and "Did you mean 'db_match'?" in msg, msg


def test_enum_mistakes_suggest_the_value(tmp_path: Path) -> None:
    _, msg = _bad(tmp_path, lambda d: d["observation"].update(format="chatt"))
    assert "$.observation.format" in msg and "Did you mean 'chat'?" in msg, msg
    _, msg = _bad(tmp_path, lambda d: d.update(capability="precondition"))
    assert "$.capability" in msg and "Did you mean 'precondition_verification'?" in msg, msg


def test_wrong_json_type(tmp_path: Path) -> None:
    _, msg = _bad(tmp_path, lambda d: d.update(max_turns="30"))
    assert "$.max_turns" in msg and "integer" in msg, msg


def test_missing_required_property(tmp_path: Path) -> None:
    _, msg = _bad(tmp_path, lambda d: d.pop("reward"))
    assert "'reward'" in msg and "required" in msg, msg


def test_tool_subset_lacks_a_tool_the_family_needs(tmp_path: Path) -> None:
    _, msg = _bad(tmp_path, lambda d: d["domain"].update(tools=["find_user_id_by_email", "get_order_details"]))
    assert "$.domain.tools" in msg and "needs tools" in msg and "cancel_pending_order" in msg, msg


def test_invalid_json_syntax(tmp_path: Path) -> None:
    path = tmp_path / "syntax.json"
    path.write_text('{\n  "id": "trace/x-v0",\n  "version": 1,,\n}\n')
    with pytest.raises(SpecError) as info:
        load_spec(path)
    msg = str(info.value)
    assert str(path) in msg and "line 3" in msg and "column" in msg and "Fix:" in msg, msg


@pytest.mark.parametrize("text", ["[1, 2]", '"a spec"', "42", "null"])
def test_non_object_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "list.json"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    msg = str(info.value)
    assert str(path) in msg and "$" in msg and "JSON object" in msg and "Fix:" in msg, msg


def test_missing_file() -> None:
    with pytest.raises(SpecError, match="no-such-spec.json"):
        load_spec("/nonexistent/no-such-spec.json")


def test_spec_error_is_a_value_error() -> None:
    assert issubclass(SpecError, ValueError) and issubclass(RegistrationError, KeyError)


# ---------------------------------------------------------------------------- registry
@pytest.fixture
def scratch_ids() -> Iterator[list[str]]:
    """Ids a test registers; removed afterwards so other tests see the built-in registry."""
    ids: list[str] = []
    yield ids
    for env_id in ids:
        gym.registry.pop(env_id, None)
        registration._OURS.pop(env_id, None)


def test_register_duplicate_id(scratch_ids: list[str]) -> None:
    data = copy.deepcopy(BASE) | {"id": "testing/duplicate-v0"}
    scratch_ids.append(register_spec(data))
    assert "testing/duplicate-v0" in trace_envs.registered_ids()
    with pytest.raises(RegistrationError, match="already registered"):
        register_spec(data)
    with pytest.raises(RegistrationError, match="override=True"):
        register_spec(data | {"max_turns": 7})
    assert gym.make("testing/duplicate-v0").unwrapped.trace_spec.max_turns == BASE["max_turns"]


def test_register_override_replaces_quietly(scratch_ids: list[str]) -> None:
    data = copy.deepcopy(BASE) | {"id": "testing/override-v0"}
    scratch_ids.append(register_spec(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert register_spec(data | {"max_turns": 7}, override=True) == "testing/override-v0"
    assert gym.make("testing/override-v0").unwrapped.trace_spec.max_turns == 7
    assert gym.spec("testing/override-v0").max_episode_steps is None  # the env truncates (and scores) itself
    # override=True is the caller's explicit request: gymnasium's "Overriding environment" warning is
    # noise that turns into an error under filterwarnings=error (this project's pytest setting).
    assert not caught, f"register_spec(..., override=True) warned: {[str(w.message) for w in caught]}"


def test_register_a_builtin_id_again(scratch_ids: list[str]) -> None:
    with pytest.raises(RegistrationError, match="trace/precondition-v0"):
        register_spec(copy.deepcopy(BASE))
    # The very same file again is fine: the start-up hook and the import both register it.
    assert register_spec(BUILTIN_DIR / "precondition-v0.json") == "trace/precondition-v0"


def test_register_validates_by_default(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE) | {"id": "testing/invalid-v0"}
    data["tasks"]["family"] = "precondtion"
    path = tmp_path / "invalid.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SpecError, match="Did you mean 'precondition'"):
        register_spec(path)
    assert "testing/invalid-v0" not in trace_envs.registered_ids()


def test_make_suggests_the_nearest_id() -> None:
    with pytest.raises(RegistrationError) as info:
        trace_envs.make("trace/precondtion-v0")
    assert "Did you mean `trace/precondition-v0`?" in str(info.value), str(info.value)


def _run_python(code: str, spec_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=spec_dir,
        env={**os.environ, "TRACE_ENV_SPECS": str(spec_dir)},
    )


def test_trace_env_specs_directory_is_registered(tmp_path: Path) -> None:
    (tmp_path / "mine.json").write_text(json.dumps(copy.deepcopy(BASE) | {"id": "user/my-precondition-v0"}))
    code = (
        "import gymnasium as gym\n"
        "env = gym.make('user/my-precondition-v0')\n"  # through the start-up hook alone
        "obs, info = env.reset(seed=0)\n"
        "assert info['env_id'] == 'user/my-precondition-v0'\n"
        "import trace_envs\n"
        "assert 'user/my-precondition-v0' in trace_envs.registered_ids(), trace_envs.registered_ids()\n"
        "assert 'trace/precondition-v0' in trace_envs.registered_ids()\n"
        "print('ok')\n"
    )
    done = _run_python(code, tmp_path)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


@pytest.mark.parametrize("text", ['{"id": "user/broken-v0", ', "[1, 2]", '{"id": "user/x-v0", "max_turns": "many"}'])
def test_a_broken_user_spec_does_not_break_import(tmp_path: Path, text: str) -> None:
    # One bad file in TRACE_ENV_SPECS must give a SpecError naming it (or be skipped), not a bare
    # JSONDecodeError/AttributeError/ValueError out of `import trace_envs` that hides the file.
    (tmp_path / "a-broken.json").write_text(text)
    (tmp_path / "b-good.json").write_text(json.dumps(copy.deepcopy(BASE) | {"id": "user/good-v0"}))
    code = (
        "import json\n"
        "try:\n"
        "    import trace_envs\n"
        "except Exception as exc:\n"
        "    print('IMPORT-ERROR', type(exc).__name__, exc)\n"
        "else:\n"
        "    print('IDS', json.dumps(trace_envs.registered_ids()))\n"
    )
    out = _run_python(code, tmp_path).stdout
    if out.startswith("IMPORT-ERROR"):
        assert out.startswith("IMPORT-ERROR SpecError") and "a-broken.json" in out, (
            f"`import trace_envs` with a bad file in TRACE_ENV_SPECS raised a bare error that does not name "
            f"the file: {out.strip()[:300]}"
        )
    else:
        assert out.startswith("IDS") and "user/good-v0" in out, out


def test_multi_step_kinds_that_cannot_fill_a_conversation(tmp_path: Path, repo_root: Path) -> None:
    data = json.loads((repo_root / "env_specs" / "multi-step-v0.json").read_text())
    data["tasks"]["params"]["kinds"] = ["update_user_address"]  # used at most once, and 2+ requests are needed
    path = tmp_path / "multi.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SpecError, match=r"\$\.tasks\.params\.kinds: update_user_address alone cannot fill") as info:
        load_spec(path)
    assert str(path) in str(info.value) and "add another kind" in str(info.value)


def test_a_raised_turn_limit_is_not_cut_short_by_a_time_limit_wrapper() -> None:
    env = gym.make("trace/precondition-v0", max_turns=45)  # the spec says 30
    env.reset(seed=0)
    steps, truncated, info = 0, False, {}
    while not truncated:
        _, _, terminated, truncated, info = env.step("hmm, let me think")
        steps += 1
        assert not terminated
    assert steps == 45 and "success" in info  # a TimeLimit at 30 cut it before, unscored


def test_a_user_spec_with_a_malformed_id_is_skipped_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"id": "my env!"}')
    (tmp_path / "unversioned.json").write_text('{"id": "trace/precondition"}')
    code = "import trace_envs; print(len(trace_envs.registered_ids()))"
    out = subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "TRACE_ENV_SPECS": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr  # import died with gymnasium's "Malformed environment ID"
    assert "is not an id like 'namespace/name-v0'" in out.stderr and "bad.json" in out.stderr


def test_a_relative_spec_dir_survives_a_chdir(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "mine.json").write_text(json.dumps({**BASE, "id": "user/mine-v0"}))
    code = (
        "import os, gymnasium as gym, trace_envs; os.chdir('/'); print(gym.make('user/mine-v0').reset(seed=0)[0][:10])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TRACE_ENV_SPECS": "specs"},
    )
    assert out.returncode == 0, out.stderr  # "cannot read the spec" after the chdir before


def test_max_chars_below_the_schema_minimum_is_refused_and_the_opening_survives_clipping() -> None:
    with pytest.raises(SpecError, match="max_chars must be an integer >= 256"):
        gym.make("trace/precondition-v0", max_chars=5)
    for fmt in ("chat", "compact"):
        env = gym.make("trace/precondition-v0", max_chars=300, obs_format=fmt)
        obs, info = env.reset(seed=0)
        opening = info["messages"][-1]["content"]
        assert len(obs) <= 300 and obs.endswith(opening[-40:]), obs  # the policy and tools are cut, not the request


def test_the_check_kit_uses_the_envs_own_turn_limit() -> None:
    from trace_envs.testing import check_text_env

    env = TraceEnv(BUILTIN_DIR / "precondition-v0.json", max_turns=45)  # failed: "outlived max_turns=30"
    assert check_text_env(env, episodes=1)
