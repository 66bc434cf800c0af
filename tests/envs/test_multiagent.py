"""PettingZoo dual control: api_test, seed_test, and full episodes driven by code on both sides."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest
from pettingzoo.test import api_test, seed_test

from trace_envs import OraclePolicy, multiagent
from trace_envs.user import STOP


def _quiet(fn, *args, **kwargs):
    # PettingZoo's checkers recommend Box/Discrete spaces and numbered agent names; for
    # text agents named "assistant"/"user" those are advice, not failures. The env's own
    # warnings about what the checkers send (reset options={"options": 1}, actions for a
    # scripted user) are attributed to the checkers' calls, so they are ignored here too.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pettingzoo\..*")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("scripted", [True, False], ids=["scripted-user", "learner-user"])
def test_api(registered_id: str, scripted: bool) -> None:
    _quiet(api_test, multiagent.make(registered_id, scripted_user=scripted), num_cycles=200)


@pytest.mark.parametrize("scripted", [True, False], ids=["scripted-user", "learner-user"])
def test_seed(scripted: bool) -> None:
    _quiet(seed_test, lambda: multiagent.make("trace/retail-v0", scripted_user=scripted), num_cycles=100)


def _play(env, assistant, user) -> dict[str, float]:
    returns = dict.fromkeys(env.possible_agents, 0.0)
    last_info = {}
    for agent in env.agent_iter(max_iter=1000):
        obs, reward, terminated, truncated, info = env.last()
        returns[agent] += reward
        last_info = info or last_info
        if terminated or truncated:
            env.step(None)
        else:
            env.step(assistant(obs) if agent == "assistant" else user(obs))
    assert not env.agents, "every agent must be removed once the episode ends"
    return returns | {"success": last_info.get("success")}


def _rule_user(task):
    """A hand-written customer: identity when asked, yes to proposals, stop at goodbye."""
    u = task.user

    def reply(obs: str) -> str:
        text = obs.lower()
        if "goodbye" in text:
            return f"Thanks, bye! {STOP}"
        if "email" in text or "zip" in text:
            return f"My email is {u.email}." if u.auth == "email" else f"{u.first_name} {u.last_name}, {u.zip}"
        if "shall i proceed" in text:
            return "Yes, please."
        return "Okay."

    return reply


@pytest.mark.parametrize("seed", range(5))
def test_full_episode_with_both_sides_driven_by_code(seed: int) -> None:
    env = multiagent.make("trace/retail-v0", scripted_user=False)
    env.reset(seed=seed)
    oracle = OraclePolicy()
    oracle.reset(env.env)
    result = _play(env, lambda obs: oracle.act(obs), _rule_user(env.env.task))
    assert result["success"] is True
    assert result["assistant"] == pytest.approx(result["user"]), "rewards are shared"
    assert result["assistant"] == pytest.approx(env.env.trace_spec.range[1])


@pytest.mark.parametrize("seed", range(5))
def test_scripted_user_side_matches_the_gym_env(seed: int) -> None:
    env = multiagent.make("trace/precondition-v0")
    env.reset(seed=seed)
    oracle = OraclePolicy()
    oracle.reset(env.env)
    result = _play(env, lambda obs: oracle.act(obs), lambda obs: None)

    single = gym.make("trace/precondition-v0")
    obs, info = single.reset(seed=seed)
    oracle.reset(single)
    total, done = 0.0, False
    while not done:
        obs, r, term, trunc, info = single.step(oracle.act(obs, info))
        total, done = total + r, term or trunc
    assert result["assistant"] == pytest.approx(total)
    assert result["success"] == info["success"]


def test_a_silent_learner_user_does_not_resolve_anything() -> None:
    env = multiagent.make("trace/retail-v0", scripted_user=False)
    env.reset(seed=3)
    oracle = OraclePolicy()
    oracle.reset(env.env)
    # The user never says yes: the oracle acts anyway, so writes are unconfirmed.
    result = _play(env, lambda obs: oracle.act(obs), lambda obs: "Hmm.")
    log = env.env.log
    assert log.confirmed == set()
    assert all(not w.confirmed for w in log.writes)
    assert result["assistant"] == pytest.approx(result["user"])


def test_unknown_id_gets_a_did_you_mean() -> None:
    with pytest.raises(KeyError, match="Did you mean `trace/retail-v0`"):
        multiagent.make("trace/retial-v0")


def test_a_message_after_a_bad_action_clears_its_parse_error_and_user_text_is_capped() -> None:
    from trace_envs.actions import MAX_ACTION_CHARS

    env = multiagent.make("trace/retail-v0", scripted_user=False)
    env.reset(seed=0)
    env.step('<tool_call>{"name": oops</tool_call>')  # the assistant's malformed call
    assert "parse_error" in env.infos["assistant"]
    env.step("Hello, how can I help?")  # a message: the user answers next
    assert "parse_error" not in env.infos["assistant"] and "parse_error" not in env.infos["user"]
    env.step("x" * (3 * MAX_ACTION_CHARS))  # the learner user's reply
    assert len(env.env.log.last_user_text) <= MAX_ACTION_CHARS
