"""The scripted customer cannot be gamed: its reactions do not reveal whether the agent decided
right, a question takes one answer, and a write on a question's order ends the episode cleanly.

Each agent here reads what the task needs but never decides; it must not beat chance."""

from __future__ import annotations

import re

import gymnasium as gym
import pytest

from trace_envs import OraclePolicy, say, tool_call
from trace_envs.oracle import _call

SEEDS = range(60)


def _finish(env, info, done):
    if not done:
        *_, info = env.step(say("Goodbye, have a great day!"))
    return info


def refuse_then_comply(env, seed):
    """Says "I cannot" to everything and acts if the customer pushes back (it used to, only when allowed)."""
    _, info = env.reset(seed=seed)
    done = False
    for req in env.unwrapped.task.requests:
        for call in req.required_reads:
            _, _, te, tr, info = env.step(_call(call))
        obs, _, te, tr, info = env.step(say("I am sorry, I cannot do that."))
        if te or tr:
            return _finish(env, info, True)
        if "check again" in obs:
            env.step(say(f"To confirm, I will {req.describe}. Shall I proceed?"))
            _, _, te, tr, info = env.step(_call(req.desired))
            if te or tr:
                return _finish(env, info, True)
    return _finish(env, info, done)


def hedge(env, seed):
    """One message that refuses and proposes at once, then writes if the customer says yes."""
    _, info = env.reset(seed=seed)
    for req in env.unwrapped.task.requests:
        for call in req.required_reads:
            env.step(_call(call))
        obs, _, te, tr, info = env.step(
            say(f"I cannot promise anything yet. To confirm, I will {req.describe}. Shall I proceed?")
        )
        if te or tr:
            return _finish(env, info, True)
        if obs.startswith("user: Yes"):
            _, _, te, tr, info = env.step(_call(req.desired))
            if te or tr:
                return _finish(env, info, True)
    return _finish(env, info, False)


@pytest.mark.parametrize("agent", [refuse_then_comply, hedge])
def test_undecided_agents_do_not_beat_chance_on_preconditions(agent):
    env = gym.make("trace/precondition-v0")
    wins = sum(bool(agent(env, seed)["success"]) for seed in SEEDS)
    assert wins <= 0.75 * len(SEEDS), f"{agent.__name__} won {wins}/{len(SEEDS)} without deciding"  # was 60/60


def _first_seed(env, wanted):
    """The first seed whose task's first request is ``wanted``."""
    for seed in range(200):
        env.reset(seed=seed)
        if wanted(env.unwrapped.task.requests[0]):
            return seed
    raise AssertionError("no such task in 200 seeds")


def test_the_customer_reacts_alike_to_right_and_wrong_refusals():
    env = gym.make("trace/precondition-v0")
    replies = {}
    for forbidden in (True, False):
        env.reset(seed=_first_seed(env, lambda r, f=forbidden: r.refuse is f and len(env.unwrapped.task.requests) == 1))
        for call in env.unwrapped.task.requests[0].required_reads:
            env.step(_call(call))
        obs, _, te, tr, info = env.step(say("I am sorry, I cannot do that."))
        replies[forbidden] = obs
        info = _finish(env, info, te or tr)
        if not forbidden:  # the allowed request is closed undone, as a precondition misjudgment
            assert not info["success"] and info["requests_declined"] == 1 and not info["preconditions_checked"]
    assert replies[True] == replies[False]  # it used to push back ("check again?") only when allowed


def test_a_question_takes_one_answer_and_only_the_answer():
    env = gym.make("trace/structured-data-v0")
    tasks = []
    for seed in range(80):
        env.reset(seed=seed)
        if env.unwrapped.task.requests[0].answer is not None:
            tasks.append(seed)
    listing = guessing = 0
    for seed in tasks[:20]:
        env.reset(seed=seed)
        req = env.unwrapped.task.requests[0]
        if any(c.name == "get_product_details" for c in req.required_reads):
            env.step(tool_call("list_all_product_types"))
        for call in req.required_reads:
            obs, *_ = env.step(_call(call))
        prices = sorted({float(p) for p in re.findall(r'"price":\s*([0-9.]+)', obs)})
        obs, _, te, tr, info = env.step(say("The amounts are: " + ", ".join(f"${p:.2f}" for p in prices) + "."))
        listing += bool(_finish(env, info, te or tr)["success"])
        env.reset(seed=seed)
        for call in req.required_reads:
            env.step(_call(call))
        done = False
        for p in [float(req.answer) + 1, float(req.answer)]:  # a wrong guess first, then the right one
            _, _, te, tr, info = env.step(say(f"It is ${p:.2f}."))
            done = te or tr
            if done:
                break
        guessing += bool(_finish(env, info, done)["success"])
    assert tasks and listing == 0 and guessing == 0  # listing won 58/58 before


def test_a_failed_write_on_a_questions_order_does_not_crash_the_episode():
    env = gym.make("trace/structured-data-v0")
    env.reset(seed=_first_seed(env, lambda r: r.answer is not None and r.target.startswith("#W")))
    order = env.unwrapped.task.requests[0].target
    env.step(tool_call("cancel_pending_order", order_id=order, reason="because"))  # an invalid reason: it fails
    info = _finish(env, {}, False)  # raised AttributeError in the annotations
    assert not info["success"] and info["violating_writes"] == 1


def test_the_oracle_still_reaches_the_maximum():
    for env_id in ("trace/precondition-v0", "trace/structured-data-v0", "trace/retail-v0"):
        env = gym.make(env_id)
        for seed in range(15):
            obs, info = env.reset(seed=seed)
            oracle = OraclePolicy()
            oracle.reset(env.unwrapped)
            done = False
            while not done:
                obs, _, te, tr, info = env.step(oracle.act(obs, info))
                done = te or tr
            assert info["success"], (env_id, seed)
