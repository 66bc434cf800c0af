"""Registry-wide checks: every registered id keeps the API contract of docs/envs.md
("The API every env keeps"). Tests taking ``registered_id`` run once per registered id
(tests/conftest.py parametrizes them; an id whose data is absent is skipped, with the reason)."""

from __future__ import annotations

import copy
import dataclasses
import json
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

import trace_envs
from trace_envs import CAPABILITIES, OraclePolicy, ResetNeeded, TraceEnv, load_spec, say, tool_call
from trace_envs.capabilities import REGISTRY
from trace_envs.registration import BUILTIN_SPEC_DIRS
from trace_envs.testing import check_text_env

ALL_IDS = trace_envs.registered_ids()

BUILTIN_DIR = next(d for d in BUILTIN_SPEC_DIRS if d.is_dir())
BUILTIN_FILES = sorted(BUILTIN_DIR.glob("*.json"))
TOL = 1e-6
ORACLE_SEEDS = range(100)
DEFICIT_SEEDS = range(60)

# How each capability's slip shows in the end-of-episode annotations: the registry's predicates,
# the ones evaluation and analysis read.
FLAGGED = {c.name: c.mistake for c in REGISTRY}


def _spec(env_id: str) -> trace_envs.TraceSpec:
    return load_spec(gym.spec(env_id).kwargs["spec"])


CAPABILITY_IDS = [i for i in ALL_IDS if _spec(i).capability in CAPABILITIES]


def _play(env, seed: int, policy: OraclePolicy) -> tuple[list[str], list[float], dict, float]:
    """One oracle episode: observations, rewards, the last info and the return."""
    obs, info = env.reset(seed=seed)
    policy.reset(env)
    observations, rewards = [obs], []
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
        observations.append(obs)
        rewards.append(reward)
        done = terminated or truncated
    return observations, rewards, info, sum(rewards)


def _continue(env, actions: list[str]) -> list[tuple]:
    """Step ``actions`` (stopping when the episode ends); the full step results."""
    out = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append(
            (
                obs,
                reward,
                terminated,
                truncated,
                info["reward_components"],
                info.get("return_components"),
                info["messages"],
            )
        )
        if terminated or truncated:
            break
    return out


# ---------------------------------------------------------------------------- gymnasium compatibility
def test_check_env_passes_without_warnings(registered_id: str) -> None:
    env = gym.make(registered_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    assert not caught, f"check_env warned on {registered_id}: {[str(w.message) for w in caught]}"


def test_make_works_after_importing_only_gymnasium(registered_id: str, tmp_path: Path) -> None:
    # The .pth start-up hook must register ids when gymnasium is imported; trace_envs is never imported here.
    code = (
        "import sys, gymnasium as gym\n"
        "env = gym.make(sys.argv[1])\n"
        "obs, info = env.reset(seed=0)\n"
        "assert isinstance(obs, str) and obs, obs\n"
        "assert info['env_id'] == sys.argv[1], info['env_id']\n"
        "print('made', info['env_id'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code, registered_id],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"gym.make({registered_id!r}) after `import gymnasium` failed:\n{done.stderr[-3000:]}"
    assert f"made {registered_id}" in done.stdout


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec(registered_id: str, mode: str) -> None:
    single = [gym.make(registered_id) for _ in range(2)]
    expected_reset = [e.reset(seed=i)[0] for i, e in enumerate(single)]
    acts = (say("hello"), tool_call("get_order_details", order_id="#W0000000"))
    expected_step = [e.step(a) for e, a in zip(single, acts, strict=True)]
    vec = gym.make_vec(registered_id, num_envs=2, vectorization_mode=mode)
    try:
        obs, infos = vec.reset(seed=0)
        assert len(obs) == 2 and all(isinstance(o, str) for o in obs), f"{mode} reset gave {type(obs)}"
        assert list(infos["env_id"]) == [registered_id, registered_id]
        for i in range(2):
            assert obs[i] == expected_reset[i], (
                f"make_vec({mode}) reset observation {i} differs from a single env's: got {len(obs[i])} chars "
                f"starting {obs[i][:60]!r}, expected {len(expected_reset[i])} chars starting "
                f"{expected_reset[i][:60]!r}. (AsyncVectorEnv with shared_memory=True reads Text observations from "
                f"shared memory once, at construction, so every observation is the zeroed buffer decoded)"
            )
        obs, rewards, terminated, truncated, infos = vec.step(acts)
        assert isinstance(rewards, np.ndarray) and rewards.shape == (2,) and np.isfinite(rewards).all()
        assert not terminated.any() and not truncated.any()
        for i in range(2):
            assert obs[i] == expected_step[i][0], (
                f"make_vec({mode}) step observation {i} is {obs[i][:60]!r}, expected {expected_step[i][0][:60]!r}"
            )
            assert rewards[i] == expected_step[i][1]
    finally:
        vec.close()


def test_make_vec_async_without_shared_memory(registered_id: str) -> None:
    # The workaround for the shared-memory snapshot above; it must give the single env's observations.
    expected = gym.make(registered_id).reset(seed=0)[0]
    vec = gym.make_vec(registered_id, num_envs=2, vectorization_mode="async", vector_kwargs={"shared_memory": False})
    try:
        obs, _ = vec.reset(seed=0)
        assert obs[0] == expected
        obs, rewards, _, _, _ = vec.step((say("hello"), tool_call("unknown_tool_Ω", x=1)))
        assert obs[1].startswith("tool unknown_tool_Ω") or "unknown_tool_Ω" in obs[1], obs[1][:200]
        assert np.isfinite(rewards).all()
    finally:
        vec.close()


# ---------------------------------------------------------------------------- copies
def test_pickle_and_deepcopy_fresh(registered_id: str) -> None:
    env = gym.make(registered_id)
    copies = [pickle.loads(pickle.dumps(env)), copy.deepcopy(env)]
    base = _play(env, 7, OraclePolicy())
    for other in copies:
        got = _play(other, 7, OraclePolicy())
        assert got[0] == base[0] and got[1] == base[1], f"a fresh copy of {registered_id} plays seed 7 differently"


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_copy_mid_episode_continues_identically(registered_id: str, how: str) -> None:
    env = gym.make(registered_id)
    env.reset(seed=3)
    oracle = OraclePolicy()
    oracle.reset(env)
    plan = list(oracle.plan)
    cut = len(plan) // 2
    for action in plan[:cut]:
        env.step(action)
    other = pickle.loads(pickle.dumps(env)) if how == "pickle" else copy.deepcopy(env)
    rest = plan[cut:] + [say("goodbye")]
    original, copied = _continue(env, rest), _continue(other, rest)
    assert original == copied, f"{how} copy of {registered_id} taken at step {cut} continued differently"
    assert original[-1][2] or original[-1][3], "the continued episode should end"


# ---------------------------------------------------------------------------- determinism
_HASH_CODE = """
import hashlib, json
import gymnasium as gym
import trace_envs

def oracle_hash(env_id):
    env = gym.make(env_id)
    oracle = trace_envs.OraclePolicy()
    h = hashlib.sha256()
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        oracle.reset(env)
        h.update(obs.encode("utf-8", "surrogatepass"))
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(oracle.act(obs, info))
            h.update(obs.encode("utf-8", "surrogatepass") + repr(reward).encode())
            done = terminated or truncated
        h.update(json.dumps(info["return_components"], sort_keys=True).encode())
    return h.hexdigest()
"""


def _hash_in_process(env_id: str) -> str:
    namespace: dict = {}
    exec(_HASH_CODE, namespace)  # the very code the subprocesses run
    return namespace["oracle_hash"](env_id)


@pytest.fixture(scope="module")
def subprocess_hashes(runnable_ids: list[str]) -> list[dict[str, str]]:
    """Oracle-run hashes of every id, from two processes with different hash seeds."""
    code = _HASH_CODE + "import sys\nprint(json.dumps({i: oracle_hash(i) for i in sys.argv[1:]}))\n"
    out = []
    for hash_seed in ("1", "987654"):
        done = subprocess.run(
            [sys.executable, "-c", code, *runnable_ids],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def test_determinism_across_processes(registered_id: str, subprocess_hashes: list[dict[str, str]]) -> None:
    here = _hash_in_process(registered_id)
    assert here == _hash_in_process(registered_id), f"{registered_id} is not deterministic within one process"
    for i, hashes in enumerate(subprocess_hashes):
        assert hashes[registered_id] == here, (
            f"{registered_id}: subprocess {i} (other PYTHONHASHSEED) saw other obs/rewards"
        )


def test_reset_with_task_id_reproduces_the_task(registered_id: str) -> None:
    env = gym.make(registered_id)
    for seed in (0, 11, 12345):
        obs, info = env.reset(seed=seed)
        gold = env.unwrapped.task.gold_calls
        again, info2 = env.reset(seed=seed + 1, options={"task_id": info["task_id"]})
        assert info2["task_id"] == info["task_id"]
        assert again == obs and info2["messages"] == info["messages"], (
            f"{registered_id}: reset(options={{'task_id': {info['task_id']!r}}}) gave another task than seed {seed}"
        )
        assert env.unwrapped.task.gold_calls == gold


def test_reset_with_a_bad_task_id_raises(registered_id: str) -> None:
    env = gym.make(registered_id)
    with pytest.raises(ValueError, match="task_id"):
        env.reset(options={"task_id": "no-such-task"})


def _restore_in_place(live: dict, saved: dict) -> None:
    """Give ``live`` back the content of ``saved`` without replacing dicts others may share."""
    for key in [k for k in live if k not in saved]:
        del live[key]
    for key, value in saved.items():
        if isinstance(value, dict) and isinstance(live.get(key), dict):
            _restore_in_place(live[key], value)
        else:
            live[key] = copy.deepcopy(value)


def test_info_tools_do_not_alias_shared_state(registered_id: str) -> None:
    # info["tools"] goes to chat templates and schema rewriters; editing it must not change how this or
    # any other env in the process validates calls (today it hands out the domain's cached Tool.parameters).
    env, other = gym.make(registered_id), gym.make(registered_id)
    _, info = env.reset(seed=0)
    shared = {name: tool.parameters for name, tool in env.unwrapped.domain.tools.items()}
    saved = copy.deepcopy(shared)
    before = json.dumps(other.unwrapped.tool_schemas, sort_keys=True)
    try:
        for schema in info["tools"]:
            params = schema["function"]["parameters"]
            for prop in params.get("properties", {}).values():
                prop["type"] = "integer"
            params["required"] = ["__nothing__"]
        after = json.dumps(gym.make(registered_id).unwrapped.tool_schemas, sort_keys=True)
    finally:  # put the shared dicts back in place, so that later tests see the real schemas
        for name, params in shared.items():
            _restore_in_place(params, saved[name])
    assert json.dumps(other.unwrapped.tool_schemas, sort_keys=True) == before, "the restore failed"
    assert after == before, (
        f"{registered_id}: editing info['tools'] changed the tool schemas of every env in the process "
        f"(Tool.schema returns the domain's shared parameters dict; copy it)"
    )


# ---------------------------------------------------------------------------- oracle
def test_oracle_succeeds_with_the_declared_max(registered_id: str) -> None:
    env = gym.make(registered_id)
    spec = env.unwrapped.trace_spec
    oracle = OraclePolicy()
    failures, off_max = [], []
    for seed in ORACLE_SEEDS:
        _, _, info, total = _play(env, seed, oracle)
        if not info["success"]:
            failures.append((seed, info["return_components"]))
        if abs(total - spec.range[1]) > TOL:
            off_max.append((seed, total))
    assert not failures, f"{registered_id}: the oracle failed on {len(failures)} seeds, e.g. {failures[:3]}"
    assert not off_max, f"{registered_id}: oracle returns differ from the declared max {spec.range[1]}: {off_max[:5]}"


@pytest.mark.parametrize("env_id", ["trace/retail-v0", "trace/structured-data-v0"], ids=str)
def test_oracle_reads_only_product_ids_the_conversation_showed(env_id: str) -> None:
    """Demonstrations teach what an agent can do: an id it passes must have been said or returned before."""
    env = gym.make(env_id)
    oracle = OraclePolicy()
    checked = 0
    for seed in range(60):
        _, _, info, _ = _play(env, seed, oracle)
        seen = ""
        for message in info["messages"]:
            for call in message.get("tool_calls") or []:
                if call["function"]["name"] == "get_product_details":
                    checked += 1
                    product_id = json.loads(call["function"]["arguments"])["product_id"]
                    assert product_id in seen, f"seed {seed}: {call} before the id was shown"
            seen += json.dumps(message)
    assert checked >= 5


def test_the_schema_and_the_builtin_envs_follow_the_capability_registry() -> None:
    # The spec schema is data for any JSON Schema validator, so it spells the names out; it must
    # list the registry's, in order, plus "target".
    assert trace_envs.spec.schema()["properties"]["capability"]["enum"] == [*CAPABILITIES, "target"]
    for cap in REGISTRY:  # each capability's env is registered and trains that capability
        assert _spec(cap.env_id).capability == cap.name


@pytest.mark.parametrize("env_id", CAPABILITY_IDS, ids=str)
def test_full_deficit_fails_the_capability(env_id: str) -> None:
    env = gym.make(env_id)
    cap = env.unwrapped.trace_spec.capability
    flagged = FLAGGED[cap]
    weak = OraclePolicy(deficits={cap: 1.0})
    clean = OraclePolicy()
    successes, unflagged, false_alarms = 0, [], []
    for seed in DEFICIT_SEEDS:
        _, _, info, _ = _play(env, seed, weak)
        successes += info["success"]
        if not info["success"] and not flagged(info):
            unflagged.append(seed)
        _, _, info, _ = _play(env, seed, clean)
        if flagged(info):
            false_alarms.append(seed)
    rate = successes / len(DEFICIT_SEEDS)
    assert rate < 0.5, f"{env_id}: with a full {cap} deficit the oracle still succeeds {rate:.0%} of the time"
    assert not unflagged, f"{env_id}: failed episodes not flagged by the {cap} annotation: seeds {unflagged[:10]}"
    assert not false_alarms, f"{env_id}: the {cap} annotation flags the clean oracle on seeds {false_alarms[:10]}"


@pytest.mark.parametrize("cap", CAPABILITIES)
def test_recorded_oracle_mistakes_are_flagged(registered_id: str, cap: str) -> None:
    # OraclePolicy.mistakes says which slips an episode contains; the annotation must show each one.
    env = gym.make(registered_id)
    weak = OraclePolicy(deficits={cap: 1.0})
    missed = []
    for seed in range(100):
        _, _, info, _ = _play(env, seed, weak)
        if weak.mistakes.get(cap) and not FLAGGED[cap](info):
            task = env.unwrapped.task
            missed.append(
                (
                    seed,
                    [
                        (r.kind, r.capabilities, "refuse" if r.refuse else "allowed")
                        for r in task.requests
                        if cap in r.capabilities
                    ],
                )
            )
    assert not missed, (
        f"{registered_id}: OraclePolicy recorded a {cap} mistake that the annotations do not show on "
        f"{len(missed)}/100 seeds (the oracle counts a slip it never makes, or the task tags a "
        f"request with {cap} that cannot exercise it); e.g. {missed[:2]}"
    )


# ---------------------------------------------------------------------------- caller bugs
def test_step_before_reset_raises(registered_id: str) -> None:
    env = gym.make(registered_id)
    with pytest.raises(ResetNeeded, match="reset"):
        env.unwrapped.step(say("hello"))


def test_step_after_the_end_raises(registered_id: str) -> None:
    env = gym.make(registered_id)
    _play(env, 0, OraclePolicy())
    with pytest.raises(ResetNeeded, match="over"):
        env.unwrapped.step(say("hello"))
    with pytest.raises(ResetNeeded):
        env.step(say("hello"))  # through the wrappers too
    env.reset(seed=1)
    env.step(say("hello"))  # and a reset makes it usable again


# ---------------------------------------------------------------------------- spec files
@pytest.mark.parametrize("path", BUILTIN_FILES, ids=lambda p: p.name)
def test_spec_json_round_trip(path: Path) -> None:
    spec = load_spec(path)
    data = spec.to_json()
    json.dumps(data)  # pure JSON data
    reloaded = load_spec(data)
    assert reloaded.to_json() == data
    assert dataclasses.replace(reloaded, source=spec.source) == spec, "the round trip changed the spec's content"
    assert reloaded == spec, (
        f"load_spec(spec.to_json()) != spec for {path.name}: only `source` differs "
        f"({reloaded.source!r} vs {spec.source!r}); TraceSpec.source should be field(compare=False), as the "
        f"to_json docstring promises equality"
    )


def test_builtin_files_are_registered() -> None:
    ids = {json.loads(p.read_text())["id"] for p in BUILTIN_FILES}
    assert ids <= set(ALL_IDS), f"built-in specs not registered: {sorted(ids - set(ALL_IDS))}"


# ---------------------------------------------------------------------------- the public test kit
def test_check_text_env_passes(registered_id: str) -> None:
    summary = check_text_env(gym.make(registered_id), episodes=3, seed=0)
    assert summary["env_id"] == registered_id and summary["oracle_success"] == 3
    assert summary["adversarial_steps"] > 0
    raw = check_text_env(TraceEnv(gym.spec(registered_id).kwargs["spec"]), episodes=1, seed=17)
    assert raw["seeds"] == [17]


def test_check_text_env_reports_a_broken_env() -> None:
    # Two turns are too few for the oracle: the checker must say so rather than pass.
    data = _spec(ALL_IDS[0]).to_json() | {"id": "testing/too-short-v0", "max_turns": 2}
    with pytest.raises(AssertionError, match="oracle"):
        check_text_env(TraceEnv(data), episodes=1)


def test_check_text_env_rejects_other_envs() -> None:
    with pytest.raises(TypeError, match="TraceEnv"):
        check_text_env(gym.make("CartPole-v1"))


def test_max_turns_override_truncates_and_still_scores() -> None:
    import trace_envs

    env = trace_envs.make("trace/retail-v0", max_turns=3)
    env.reset(seed=0)
    for step in range(1, 4):
        _, _, terminated, truncated, info = env.step("Hmm, let me think.")
        assert not terminated
        assert truncated == (step == 3)
    assert info["ended_by"] == "max_turns" and "success" in info and "episode_return" in info
    with pytest.raises(ValueError, match="max_turns"):
        trace_envs.make("trace/retail-v0", max_turns=0)
