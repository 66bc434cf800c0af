"""A chat model can play the customer through ``gym.make(..., user_model=fn)``."""

from __future__ import annotations

import re

import gymnasium as gym
import pytest

from trace_envs import OraclePolicy
from trace_envs.user import STOP


def fake_llm_user(messages: list[dict[str, str]]) -> str:
    """Stands in for a chat model: reads its brief and the agent's last line."""
    assert messages[0]["role"] == "system" and "customer" in messages[0]["content"]
    brief, last = messages[0]["content"], messages[-1]["content"].lower()
    assert messages[-1]["role"] == "user", "the agent's lines arrive as user turns"
    if "goodbye" in last:
        return f"Bye! {STOP}"
    if "email" in last or "zip" in last:
        email = re.search(r"Your email is (\S+)\.", brief)
        name = re.search(r"You are (\w+) (\w+), zip (\d+)\.", brief)
        return f"It's {email.group(1)}." if email else f"{name.group(1)} {name.group(2)}, zip {name.group(3)}."
    if "shall i proceed" in last:
        return "Yes, go ahead."
    return "Okay, thanks."


def _run(env, oracle) -> dict:
    done, info, obs = False, {}, ""
    while not done:
        obs, reward, terminated, truncated, info = env.step(oracle.act(obs, info))
        done = terminated or truncated
    return info


@pytest.mark.parametrize("seed", range(8))
def test_an_llm_user_can_play_the_customer(seed: int) -> None:
    env = gym.make("trace/retail-v0", user_model=fake_llm_user)
    obs, info = env.reset(seed=seed)
    oracle = OraclePolicy()
    oracle.reset(env)
    info = _run(env, oracle)
    assert info["success"] is True
    assert info["unconfirmed_writes"] == 0, "the model's 'Yes' must count as the user's confirmation"
    assert info["user_errors"] == 0


def test_a_failing_user_model_does_not_crash_the_episode() -> None:
    def broken(messages):
        raise TimeoutError("endpoint down")

    env = gym.make("trace/precondition-v0", user_model=broken)
    env.reset(seed=0)
    oracle = OraclePolicy()
    oracle.reset(env)
    info = _run(env, oracle)
    assert info["user_errors"] > 0
    assert info["ended_by"] in {"max_turns", "user"}
