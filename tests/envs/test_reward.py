"""Spec version 3 rewards: credit only for evidence of competence, never for doing nothing."""

from __future__ import annotations

import statistics

import gymnasium as gym
import pytest

from trace_envs import OraclePolicy, TraceEnv, say, tool_call
from trace_envs.reward import COMPONENTS, Component, earned
from trace_envs.tasks.base import CAPABILITIES
from trace_envs.testing import check_text_env, trivial_policies

SYNTHETIC = [
    "trace/precondition-v0",
    "trace/structured-data-v0",
    "trace/tool-calling-v0",
    "trace/multi-step-v0",
    "trace/retail-v0",
]
SEEDS = range(100)


def play(env, policy, seed: int) -> tuple[float, dict]:
    obs, info = env.reset(seed=seed)
    policy.reset(env)
    total = 0.0
    while True:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
        total += reward
        if terminated or truncated:
            return total, info


def mean_return(env, policy, seeds=SEEDS) -> float:
    return statistics.mean(play(env, policy, s)[0] for s in seeds)


@pytest.mark.parametrize("name", sorted(trivial_policies()))
def test_trivial_policies_earn_nothing(registered_id: str, name: str) -> None:
    env = gym.make(registered_id)
    policy = trivial_policies()[name]
    if registered_id == "trace/tau2-retail-v0":
        # The benchmark's own rule: a task with no gold write passes by doing nothing, as in
        # τ²-bench. A known property, reported in benchmarks/results/envs.md, not a bound.
        returns = [play(env, policy, s)[0] for s in range(20)]
        assert all(r in (0.0, 1.0) for r in returns)
        return
    assert mean_return(env, policy) <= 0.05


@pytest.mark.parametrize("env_id", SYNTHETIC)
def test_goodbye_earns_zero_on_every_outcome_component(env_id: str) -> None:
    env = gym.make(env_id)
    for seed in range(20):
        _, info = play(env, trivial_policies()["goodbye"], seed)
        outcome = {k: v for k, v in info["return_components"].items() if not COMPONENTS[k].shaped}
        assert outcome and all(v == 0.0 for v in outcome.values()), (seed, outcome)


@pytest.mark.parametrize("env_id", SYNTHETIC)
def test_trivial_policies_score_below_every_deficit_profile_that_succeeds(env_id: str) -> None:
    env = gym.make(env_id)
    best_trivial = max(mean_return(env, p, range(30)) for p in trivial_policies().values())
    for cap in CAPABILITIES:
        for p in (0.5, 1.0):
            oracle = OraclePolicy({cap: p})
            results = [play(env, oracle, s) for s in range(30)]
            if any(info["success"] for _, info in results):
                assert statistics.mean(r for r, _ in results) > best_trivial, (cap, p)


@pytest.mark.parametrize("env_id", SYNTHETIC)
def test_full_deficits_still_drop_success(env_id: str) -> None:
    env = gym.make(env_id)
    capability = env.unwrapped.trace_spec.capability  # the env's own capability must matter
    deficits = {capability: 1.0} if capability in CAPABILITIES else dict.fromkeys(CAPABILITIES, 1.0)
    results = [play(env, OraclePolicy(deficits), s) for s in range(30)]
    assert not any(info["success"] for _, info in results)
    assert statistics.mean(r for r, _ in [play(env, OraclePolicy(), s) for s in range(30)]) == pytest.approx(1.0)


def _task_with(env, want) -> int:
    for seed in range(500):
        env.reset(seed=seed)
        if any(want(r) for r in env.unwrapped.task.requests):
            return seed
    raise AssertionError("no such task in 500 seeds")


def _authenticate(task) -> list[str]:
    u = task.user
    if u.auth == "email":
        return [tool_call("find_user_id_by_email", email=u.email)]
    return [tool_call("find_user_id_by_name_zip", first_name=u.first_name, last_name=u.last_name, zip=u.zip)]


def test_refusing_a_pending_return_after_reading_the_order_is_a_success() -> None:
    # A refund to the gift card needs the user's record only when the return goes ahead;
    # order status alone decides a refusal (it failed with missing_reads: get_user_details).
    env = TraceEnv("env_specs/precondition-v0.json", n_requests=1)
    seed = _task_with(
        env,
        lambda r: r.kind == "return" and r.refuse and r.desired.arguments["payment_method_id"].startswith("gift_card"),
    )
    env.reset(seed=seed)
    task = env.unwrapped.task
    (req,) = task.requests
    plan = [
        say("Could you tell me your email, or your name and zip code?"),
        *_authenticate(task),
        tool_call("get_order_details", order_id=req.target),
        say(f"I'm sorry, but I cannot return items from order {req.target}: it is not delivered yet."),
    ]
    for action in plan:
        *_, terminated, truncated, info = env.step(action)
    if not (terminated or truncated):
        _, _, _, _, info = env.step(say("Goodbye!"))
    assert info["missing_reads"] == [] and info["preconditions_checked"], info["missing_reads"]
    assert info["success"], info["return_components"]


def test_a_refusal_without_the_deciding_read_is_a_guess_and_earns_nothing() -> None:
    env = TraceEnv("env_specs/precondition-v0.json", n_requests=1)
    seed = _task_with(env, lambda r: r.refuse)
    env.reset(seed=seed)
    task = env.unwrapped.task
    for action in [
        say("Your email or name and zip, please?"),
        *_authenticate(task),
        say("I'm sorry, but I cannot do that."),
        say("Goodbye!"),
    ]:
        *_, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert earned(env.unwrapped.log) == [False]
    assert not info["success"]
    assert sum(v for k, v in info["return_components"].items() if not COMPONENTS[k].shaped) == 0.0


def test_reading_the_deciding_record_without_acting_earns_half_its_read_credit() -> None:
    env = TraceEnv("env_specs/precondition-v0.json", n_requests=1)
    seed = _task_with(env, lambda r: r.kind == "cancel")
    env.reset(seed=seed)
    task = env.unwrapped.task
    (req,) = task.requests
    for action in [
        say("Your email or name and zip, please?"),
        *_authenticate(task),
        tool_call("get_order_details", order_id=req.target),
        say("Goodbye!"),
    ]:
        *_, terminated, truncated, info = env.step(action)
    assert info["return_components"]["read_before_write"] == 0.5
    assert info["return_components"]["db_match"] == 0.0 and not info["success"]


def test_a_component_with_nothing_to_judge_pays_progress_not_one() -> None:
    # structured-data's answer_match on a task without a question: the share of requests
    # earned (0 for doing nothing, 1 for the oracle), where it used to pay a free 1.
    env = gym.make("trace/structured-data-v0")
    seed = _task_with(env, lambda r: r.answer is None)
    env.reset(seed=seed)
    if any(r.answer is not None for r in env.unwrapped.task.requests):
        pytest.skip("the task also has a question")
    _, info = play(env, trivial_policies()["goodbye"], seed)
    assert info["return_components"]["answer_match"] == 0.0
    _, info = play(env, OraclePolicy(), seed)
    assert info["return_components"]["answer_match"] == 1.0


def test_check_text_env_flags_a_reward_that_pays_for_doing_nothing(monkeypatch) -> None:
    # The version-2 rule for answer_match: a task without questions paid a free 1.
    old = Component(
        "answer_match",
        lambda log, end: 1.0 if not any(r.answer for r in log.task.requests) else float(all(log.answered)),
        False,
        "vacuous",
    )
    monkeypatch.setitem(COMPONENTS, "answer_match", old)
    spec = TraceEnv("env_specs/precondition-v0.json").trace_spec.to_json()
    spec["id"] = "testing/vacuous-v0"
    spec["reward"] = {
        "components": {"db_match": 0.5, "answer_match": 0.5},
        "range": [0.0, 1.0],
        "success": ["db_match"],
    }
    env = TraceEnv(spec)
    with pytest.raises(AssertionError, match="trivial policy 'goodbye'.*answer_match"):
        check_text_env(env, episodes=2)
    assert check_text_env(env, episodes=1, trivial_bound=None)["trivial_returns"] == {}
