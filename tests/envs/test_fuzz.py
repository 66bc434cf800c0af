"""Property tests: bad agent output never raises, rewards stay finite and in range, specs() specs work."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import gymnasium as gym
import pytest
from hypothesis import given
from hypothesis import strategies as st

import trace_envs
from trace_envs import OraclePolicy, TraceEnv, load_spec, parse_action, say, tool_call
from trace_envs.actions import MAX_ACTION_CHARS
from trace_envs.testing import INFO_KEYS, actions, adversarial_actions, specs, tool_calls

ALL_IDS = trace_envs.registered_ids()

TOL = 1e-6
_ENVS: dict[str, gym.Env] = {}
GOODBYE = say("Thank you, goodbye!")


def _env(env_id: str) -> gym.Env:
    """One env per id for the whole module: examples reset it, which is what users do too."""
    if env_id not in _ENVS:
        _ENVS[env_id] = gym.make(env_id)
    return _ENVS[env_id]


def _tool_schemas(env_id: str) -> list[dict]:
    return _env(env_id).unwrapped.tool_schemas


def _check_step(spec, where: str, obs, reward, terminated, truncated, info, action: str) -> None:
    assert isinstance(obs, str) and len(obs) <= spec.max_chars, f"{where}: bad observation {type(obs)}"
    assert isinstance(reward, float | int) and math.isfinite(reward), f"{where}: reward {reward!r}"
    assert isinstance(terminated, bool) and isinstance(truncated, bool)
    missing = [k for k in INFO_KEYS if k not in info]
    assert not missing, f"{where}: info lacks {missing}"
    assert set(info["reward_components"]) == set(spec.weights)
    assert abs(sum(info["reward_components"].values()) - reward) <= TOL
    if parse_action(action).kind == "error":
        assert info.get("parse_error"), f"{where}: format error without info['parse_error'] for {action[:80]!r}"


def _run(env, seed: int, moves: list[str]) -> None:
    """Play ``moves`` (then a goodbye) and check every step and the return."""
    spec = env.unwrapped.trace_spec
    lo, hi = spec.range
    obs, info = env.reset(seed=seed)
    total = 0.0
    done = False
    for i, action in enumerate([*moves, GOODBYE]):
        where = f"{spec.id} seed {seed} step {i + 1} ({action[:60]!r})"
        obs, reward, terminated, truncated, info = env.step(action)
        _check_step(spec, where, obs, reward, terminated, truncated, info, action)
        total += reward
        assert lo - TOL <= total <= hi + TOL, f"{where}: running return {total} left the range [{lo}, {hi}]"
        done = terminated or truncated
        if done:
            break
    assert done, f"{spec.id}: a goodbye did not end the episode"
    assert "success" in info and "return_components" in info, f"{spec.id}: the last info lacks the end keys"
    weighted = sum(spec.weights[n] * info["return_components"][n] for n in spec.weights)
    assert abs(weighted - total) <= TOL, f"{spec.id}: return {total} != weighted sum of return_components {weighted}"


@given(data=st.data())
def test_action_sequences_never_raise(registered_id: str, data) -> None:
    env = _env(registered_id)
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    moves = data.draw(st.lists(actions(_tool_schemas(registered_id)), min_size=1, max_size=12), label="actions")
    _run(env, seed, moves)


@given(data=st.data())
def test_adversarial_actions_after_oracle_steps(registered_id: str, data) -> None:
    # Hostile turns in the middle of a good conversation, not only at its start.
    env = _env(registered_id)
    seed = data.draw(st.integers(0, 10_000), label="seed")
    env.reset(seed=seed)
    oracle = OraclePolicy()
    oracle.reset(env)
    prefix = oracle.plan[: data.draw(st.integers(0, len(oracle.plan) - 1), label="prefix")]
    hostile = data.draw(st.lists(adversarial_actions(), min_size=1, max_size=6), label="hostile")
    _run(env, seed, [*prefix, *hostile])


@given(data=st.data())
def test_tool_calls_with_wrong_values(registered_id: str, data) -> None:
    env = _env(registered_id)
    call = data.draw(tool_calls(_tool_schemas(registered_id)), label="call")
    parsed = parse_action(call)
    assert parsed.kind == "tool", f"tool_calls() drew {call[:100]!r}, which parses as {parsed}"
    env.reset(seed=data.draw(st.integers(0, 1000), label="seed"))
    obs, reward, terminated, truncated, info = env.step(call)
    assert math.isfinite(reward)
    assert obs.startswith("tool ") or obs.startswith("T: "), obs[:100]


def test_non_string_actions_are_format_errors(registered_id: str) -> None:
    env = _env(registered_id)
    moves = [None, b"bytes", 123, 1.5, ["a"], {"name": "get_order_details", "arguments": {}}, object()]
    env.reset(seed=0)
    for action in moves:
        obs, reward, terminated, truncated, info = env.step(action)
        assert math.isfinite(reward) and info.get("parse_error"), f"{action!r}: {info.get('parse_error')!r}"
        assert "must be a str" in info["parse_error"]
        if terminated or truncated:
            break


# ---------------------------------------------------------------------------- parse_action
@given(st.text())
def test_parse_action_never_raises_on_text(text: str) -> None:
    parsed = parse_action(text)
    assert parsed.kind in ("tool", "message", "error")
    assert (parsed.kind == "error") == bool(parsed.error)


@given(
    st.one_of(
        st.binary().map(lambda b: b.decode("latin-1")),
        st.binary().map(lambda b: b.decode("utf-8", "surrogateescape")),
        st.text(st.characters(categories=["Cs", "Cc", "Co", "Cn"])),
        adversarial_actions(),
    )
)
def test_parse_action_never_raises_on_binary_ish(text: str) -> None:
    parsed = parse_action(text)
    assert parsed.kind in ("tool", "message", "error")
    if len(text) > MAX_ACTION_CHARS or "\x00" in text:
        assert parsed.kind == "error"


def test_parse_action_rejects_non_strings() -> None:
    for value in (None, 3, b"bytes", ["a"], {"name": "x"}):
        assert parse_action(value).kind == "error"


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()),
    lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(), kids, max_size=3)),
    max_leaves=10,
)
NO_TAGS = st.text(min_size=1).filter(lambda s: "<tool_call>" not in s and "</tool_call>" not in s)


@given(
    name=NO_TAGS,
    arguments=st.dictionaries(NO_TAGS, JSON_VALUES.filter(lambda v: "tool_call>" not in json.dumps(v)), max_size=4),
)
def test_tool_call_builder_output_parses_as_a_tool(name: str, arguments: dict) -> None:
    parsed = parse_action(tool_call(name, **arguments))
    assert parsed.kind == "tool", parsed
    assert parsed.name == name and parsed.arguments == arguments


@pytest.mark.parametrize("value", ["see </tool_call> here", "<tool_call>", "a</tool_call><tool_call>b"])
def test_tool_call_builder_escapes_the_tags(value: str) -> None:
    # tool_call() is the public builder: its output must parse back whatever the values hold.
    action = tool_call("calculate", expression=value)
    parsed = parse_action(action)
    assert parsed.kind == "tool" and parsed.arguments == {"expression": value}, (
        f"tool_call('calculate', expression={value!r}) gives {action!r}, which parses as {parsed.kind}: "
        f"{parsed.error}. tool_call should escape '<' in the JSON (e.g. as \\u003c)"
    )


# ---------------------------------------------------------------------------- specs()
@given(spec=specs())
def test_specs_strategy_gives_loadable_working_specs(spec: dict) -> None:
    loaded = load_spec(spec)
    assert load_spec(loaded.to_json()).to_json() == loaded.to_json()
    env = TraceEnv(spec)
    obs, info = env.reset(seed=0)
    assert isinstance(obs, str) and len(obs) <= loaded.max_chars
    assert info["env_id"] == spec["id"] and set(info["reward_components"]) == set(spec["reward"]["components"])
    oracle = OraclePolicy()
    oracle.reset(env)
    lo, hi = loaded.range
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(oracle.act(obs, info))
        assert math.isfinite(reward)
        total += reward
        done = terminated or truncated
    assert lo - TOL <= total <= hi + TOL, f"return {total} outside [{lo}, {hi}] for {spec}"
    assert isinstance(info["success"], bool)


@given(spec=specs(families=["precondition"]), moves=st.lists(adversarial_actions(), max_size=5))
def test_specs_strategy_envs_survive_adversarial_actions(spec: dict, moves: list[str]) -> None:
    _run(TraceEnv(spec), 1, moves)


def test_specs_strategy_rejects_unknown_families() -> None:
    with pytest.raises(ValueError, match="unknown task families"):
        specs(families=["precondtion"])


def test_testing_module_needs_neither_pytest_nor_hypothesis_to_import() -> None:
    code = (
        "import sys\n"
        "sys.modules['hypothesis'] = None  # as if it were not installed\n"
        "import trace_envs.testing as t\n"
        "assert 'pytest' not in sys.modules, 'trace_envs.testing imported pytest'\n"
        "try:\n"
        "    t.adversarial_actions()\n"
        "except ImportError as exc:\n"
        "    assert 'pip install \"trace-rl[dev]\"' in str(exc), str(exc)\n"
        "else:\n"
        "    raise SystemExit('no ImportError without hypothesis')\n"
        "import gymnasium as gym\n"
        "print(t.check_text_env(gym.make('trace/precondition-v0'), episodes=1)['env_id'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trace/precondition-v0" in done.stdout
