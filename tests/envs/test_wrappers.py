"""DiscreteActions and its featurizer: Gymnasium's checks, vector envs, copies, masks, determinism."""

from __future__ import annotations

import copy
import hashlib
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from trace_envs import tool_call
from trace_envs.featurize import ACTION_EXTRAS, PROGRESS, HashingFeaturizer
from trace_envs.wrappers import DiscreteActions

ENV = "trace/precondition-v0"
# check_env's advice to check the unwrapped env: the wrapper is what is checked here.
WRAPPED_NOTE = "is different from the unwrapped version"


def random_episode(env: DiscreteActions, seed: int):
    """Play one episode of random admissible actions; yields (obs, info) after reset and every step."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    yield obs, info
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
        done = terminated or truncated
        yield obs, info


def digest(obs: dict[str, np.ndarray]) -> str:
    return hashlib.sha256(b"".join(obs[k].tobytes() for k in sorted(obs))).hexdigest()


def test_check_env(registered_id: str) -> None:
    env = DiscreteActions(gym.make(registered_id))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)  # render modes too: env.spec re-creates the wrapper through gym.make
    unexpected = [str(w.message) for w in caught if WRAPPED_NOTE not in str(w.message)]
    assert not unexpected, f"check_env warned on DiscreteActions({registered_id}): {unexpected}"
    assert env.action_space == gym.spaces.Discrete(128)


def test_mask_matches_the_list_and_the_rows(registered_id: str) -> None:
    env = DiscreteActions(gym.make(registered_id))
    dim = env.featurizer.dim
    for seed in range(3):
        for obs, info in random_episode(env, seed):
            n = len(info["admissible_actions"])
            assert 1 <= n <= env.max_actions
            assert info["admissible_actions"] == env.actions
            mask = info["action_mask"]
            assert mask.dtype == bool and mask.shape == (env.max_actions,)
            assert mask[:n].all() and not mask[n:].any()
            assert np.array_equal(env.action_masks(), mask)
            assert env.observation_space.contains(obs)
            rows = obs["actions"]
            assert (rows[:n, dim + ACTION_EXTRAS.index("present")] == 1).all()
            assert not rows[n:].any(), "padding rows must be zero"


def test_spec_recreates_the_wrapper() -> None:
    env = DiscreteActions(gym.make(ENV), max_actions=64, near_misses=True)
    again = gym.make(env.spec)
    assert isinstance(again, DiscreteActions)
    assert (again.max_actions, again.near_misses) == (64, True)
    assert again.action_space == gym.spaces.Discrete(64)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec(mode: str) -> None:
    vec = gym.make_vec(ENV, num_envs=2, vectorization_mode=mode, wrappers=[DiscreteActions])
    single = DiscreteActions(gym.make(ENV))
    try:
        obs, info = vec.reset(seed=[3, 4])
        assert vec.single_action_space == gym.spaces.Discrete(128)
        assert obs["actions"].shape == (2, 128, single.featurizer.action_dim)
        assert info["action_mask"].shape == (2, 128)
        for i, seed in enumerate((3, 4)):
            expected, expected_info = single.reset(seed=seed)
            assert digest({k: v[i] for k, v in obs.items()}) == digest(expected)
            assert list(info["admissible_actions"][i]) == expected_info["admissible_actions"]
        actions = np.array([int(np.flatnonzero(m)[-1]) for m in info["action_mask"]])
        obs, reward, terminated, truncated, info = vec.step(actions)
        single.reset(seed=4)
        expected, *_ = single.step(actions[1])
        assert digest({k: v[1] for k, v in obs.items()}) == digest(expected)
        assert info["action_mask"].sum(axis=1).tolist() == [len(a) for a in info["admissible_actions"]]
    finally:
        vec.close()


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_copies_continue_the_episode(how: str) -> None:
    env = DiscreteActions(gym.make(ENV))
    env.reset(seed=5)
    env.step(0)
    other = pickle.loads(pickle.dumps(env)) if how == "pickle" else copy.deepcopy(env)
    assert other.actions == env.actions
    assert np.array_equal(other.action_masks(), env.action_masks())
    index = len(env.actions) - 1
    a, ra, *_ = env.step(index)
    b, rb, *_ = other.step(index)
    assert digest(a) == digest(b) and ra == rb


def test_invalid_index_is_an_empty_turn() -> None:
    env = DiscreteActions(gym.make(ENV), max_actions=64)
    _, info = env.reset(seed=0)
    n = len(info["admissible_actions"])
    assert n < 63
    for index in (n, 63, 10_000, -1):
        obs, reward, terminated, truncated, info = env.step(index)
        assert info["invalid_action"] is True
        assert info["parse_error"].startswith("empty action")
        assert info["messages"][-1]["content"].startswith("Error")
        assert reward < 0 and not (terminated or truncated)
        assert env.observation_space.contains(obs)
    obs, reward, terminated, truncated, info = env.step(0)
    assert info["invalid_action"] is False and "parse_error" not in info


def test_max_actions_is_checked() -> None:
    with pytest.raises(ValueError, match="max_actions"):
        DiscreteActions(gym.make(ENV), max_actions=0)


def test_near_misses_add_choosable_twins() -> None:
    plain, twins = DiscreteActions(gym.make(ENV)), DiscreteActions(gym.make(ENV), near_misses=True)
    more = False
    for seed in range(5):
        rng = np.random.default_rng(seed)
        (_, a), (_, b) = plain.reset(seed=seed), twins.reset(seed=seed)
        done = False
        while not done:  # the same actions in both, so the histories stay the same
            assert set(a["admissible_actions"]) <= set(b["admissible_actions"])
            assert b["action_mask"].sum() == len(b["admissible_actions"])
            more |= len(b["admissible_actions"]) > len(a["admissible_actions"])
            action = a["admissible_actions"][int(rng.integers(len(a["admissible_actions"])))]
            *_, a = plain.step(a["admissible_actions"].index(action))
            _, _, terminated, truncated, b = twins.step(b["admissible_actions"].index(action))
            done = terminated or truncated
    assert more, "near_misses=True never listed a twin in 5 episodes"


# -- the featurizer ------------------------------------------------------------------

MESSAGES = [
    {"role": "system", "content": "policy"},
    {"role": "user", "content": "Please cancel order #W1234567, I no longer need it."},
    {"role": "assistant", "content": "Could you please tell me your email address?"},
    {"role": "user", "content": "It is jane.doe1234@example.com."},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_order_details", "arguments": '{"order_id": "#W7654321"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "name": "get_order_details", "content": "Error: order not found"},
]
ACTIONS = [
    tool_call("get_order_details", order_id="#W1234567"),
    tool_call("get_order_details", order_id="#W7654321"),
    tool_call("find_user_id_by_email", email="jane.doe1234@example.com"),
    "Is there anything else I can help you with?",
]
SCRIPT = """
import hashlib, json, sys
sys.path.insert(0, sys.argv[1])  # this test module's directory
from test_wrappers import ACTIONS, MESSAGES, digest
from trace_envs.featurize import HashingFeaturizer
print(digest(HashingFeaturizer(dim=64).features(MESSAGES, ACTIONS, 8)))
"""


def extras(obs: dict[str, np.ndarray], row: int, dim: int) -> dict[str, float]:
    return dict(zip(ACTION_EXTRAS, obs["actions"][row, dim:].tolist(), strict=True))


def test_features_are_deterministic_across_processes(repo_root: Path) -> None:
    here = digest(HashingFeaturizer(dim=64).features(MESSAGES, ACTIONS, 8))
    for hash_seed in ("1", "2"):  # str hashes differ between these processes; the features must not
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(Path(__file__).resolve().parent)],
            cwd=repo_root,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        assert out.stdout.strip() == here


def test_features_shape_and_values() -> None:
    f = HashingFeaturizer(dim=64)
    obs = f.features(MESSAGES, ACTIONS, 8)
    assert f.space(8).contains(obs)
    assert obs["actions"].shape == (8, 64 + len(ACTION_EXTRAS)) and obs["progress"].shape == (len(PROGRESS),)
    named, read, email, message = (extras(obs, i, 64) for i in range(4))
    # the order the customer named: its id was in the first user message, not the latest
    assert named["values_in_user"] == 1 and named["values_in_last_user"] == 0 and named["taken"] == 0
    assert named["tool_used"] == 1  # get_order_details was called, with another id
    # the read already taken, which failed
    assert read["taken"] == 1 and read["taken_failed"] == 1 and read["values_in_last_tool"] == 0
    assert email["values_in_last_user"] == 1 and email["tool_call"] == 1 and email["tool_used"] == 0
    assert message["no_values"] == 1 and message["tool_call"] == 0
    progress = dict(zip(PROGRESS, obs["progress"].tolist(), strict=True))
    assert progress["after_tool"] == 1 and progress["last_tool_error"] == 1
    assert progress["candidates"] == 4 / 8 and progress["bias"] == 1
    assert not obs["actions"][4:].any()


def test_digits_are_masked_and_the_cache_is_bounded() -> None:
    f = HashingFeaturizer(dim=64, cache_size=2)
    assert np.array_equal(f.text("order #W1234567"), f.text("order #W7654321"))
    assert not np.array_equal(f.text("order #W1234567"), f.text("order W1234567"))
    assert not np.array_equal(f.text("status pending"), f.text("status delivered"))
    assert len(f._cache) == 2
    assert pickle.loads(pickle.dumps(f))._cache == {}  # copies start with an empty cache
    with pytest.raises(ValueError, match="max_actions"):
        f.features(MESSAGES, ACTIONS, 3)
    for bad in ({"dim": 4}, {"ngrams": ()}, {"cache_size": -1}):
        with pytest.raises(ValueError):
            HashingFeaturizer(**bad)
