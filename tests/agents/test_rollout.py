"""Vectorized rollouts: batching, records, resume after a real kill -9, deficits, timings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from trace_agents.rollout import OracleBatch, compare_batching, episodes, rollout, turn_limit
from trace_agents.trajectories import FIELDS, TrajectoryStore, policy_key
from trace_envs import RegistrationError, say

IDS = [
    "trace/precondition-v0",
    "trace/multi-step-v0",
    "trace/structured-data-v0",
    "trace/tool-calling-v0",
    "trace/retail-v0",
]


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "created"}


class Counting(OracleBatch):
    """The oracle, counting act_batch calls and their batch sizes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sizes: list[int] = []

    def act_batch(self, infos, adapters=None):
        self.sizes.append(len(infos))
        return super().act_batch(infos, adapters)


class Hello:
    """A fake model: always says hello; takes no adapters and has no begin_episode."""

    def __init__(self) -> None:
        self.calls = 0

    def act_batch(self, infos):
        self.calls += 1
        assert all("messages" in i and "tools" in i for i in infos)
        return [say("hello") for _ in infos]

    def identity(self):
        return {"model": "hello", "adapter": None, "sampling": None}


class Recorder:
    """A fake model that records the adapters it is asked for and sends broken tool calls."""

    def __init__(self) -> None:
        self.adapters: list[str | None] = []

    def act_batch(self, infos, adapters=None):
        self.adapters += adapters
        return ['<tool_call>{"name": "get_order_details", "arguments": </tool_call>' for _ in infos]

    def identity(self):
        return {"model": "recorder", "adapter": None, "sampling": {"temperature": 0.0}}


def test_oracle_rollout_succeeds_with_full_records():
    policy = Counting()
    result = rollout(policy, IDS, 3, batch_size=4, progress=False)
    assert result.n_episodes == 15 and result.skipped == 0
    assert result.success_rate == 1.0 and result.mean_return == pytest.approx(1.0)
    ident = policy.identity()
    assert ident == {"policy": "oracle", "deficits": {}, "seed": 0}
    assert [(r["env_id"], r["seed"]) for r in result.records] == episodes(IDS, 3)  # in episode order
    for r in result.records:
        assert tuple(r) == FIELDS
        assert r["key"] == f"{r['env_id']}|{r['task_id']}|{r['seed']}|{policy_key(ident)}"
        assert r["capability"] and r["spec_version"] >= 1 and r["policy"] == ident and r["adapter"] is None
        assert r["n_steps"] == len(r["steps"]) > 1 and not r["truncated"]
        assert r["return"] == pytest.approx(sum(s["reward"] for s in r["steps"]))
        assert all(set(s) == {"obs", "action", "reward", "components", "parse_error"} for s in r["steps"])
        assert all(s["parse_error"] is None for s in r["steps"])
        assert set(r["steps"][-1]["components"]) == set(r["return_components"])
        ann = r["annotations"]
        assert ann["preconditions_checked"] is True and ann["capabilities"] and ann["turns"] == r["n_steps"]
        assert not {"messages", "tools", "success", "slot", "reward_components"} & set(ann)
    t = result.timings
    assert t["env"] > 0 and t["policy"] > 0 and t["wall"] >= t["env"] + t["policy"]
    assert 0 < t["env_share"] < 1 and 0 < t["policy_share"] < 1
    assert t["steps"] == sum(r["n_steps"] for r in result.records) and t["act_batch_calls"] == len(policy.sizes)
    assert max(policy.sizes) == 4


def test_batch_size_does_not_change_records():
    one = rollout(OracleBatch({"multi_step_completion": 0.5}), IDS[:3], 4, batch_size=1, progress=False)
    eight = rollout(OracleBatch({"multi_step_completion": 0.5}), IDS[:3], 4, batch_size=8, progress=False)
    assert [_strip(r) for r in one.records] == [_strip(r) for r in eight.records]
    assert one.timings["act_batch_calls"] == one.timings["steps"]
    assert one.success_rate < 1.0  # the deficit did bite, so the comparison covers failures too


def test_act_batch_is_called_once_per_round_for_all_slots():
    policy = Counting()
    result = rollout(policy, "trace/retail-v0", 8, batch_size=8, progress=False)
    total_steps = sum(r["n_steps"] for r in result.records)
    assert policy.sizes[0] == 8
    assert len(policy.sizes) == max(r["n_steps"] for r in result.records) < total_steps
    assert sum(policy.sizes) == total_steps


def test_sequential_and_compare_batching():
    seq = rollout(Counting(), "trace/precondition-v0", [5, 6], sequential=True, batch_size=8, progress=False)
    assert seq.timings["batch_size"] == 1
    report = compare_batching(OracleBatch(), IDS[:2], 4, batch_size=4)
    assert report["same_records"] is True and report["episodes"] == 8
    assert report["sequential"]["act_batch_calls"] > report["batched"]["act_batch_calls"]
    assert report["speedup"] > 0
    assert "policy_stats" not in report["batched"]  # the oracle keeps no stats


class WithStats(OracleBatch):
    """The oracle with an HFPolicy-style ``stats`` dict that counts rows and calls."""

    def __init__(self) -> None:
        super().__init__()
        self.stats = {"rows": 0, "calls": 0}

    def act_batch(self, infos, adapters=None):
        self.stats["rows"] += len(infos)
        self.stats["calls"] += 1
        return super().act_batch(infos, adapters)


def test_compare_batching_reports_each_runs_policy_stats():
    policy = WithStats()
    report = compare_batching(policy, IDS[:2], 3, batch_size=3)
    seq, bat = report["sequential"], report["batched"]
    assert seq["policy_stats"]["rows"] == bat["policy_stats"]["rows"] == seq["steps"]  # one row per step, each run
    assert (
        seq["policy_stats"]["calls"] == seq["act_batch_calls"]
        and bat["policy_stats"]["calls"] == bat["act_batch_calls"]
    )
    assert policy.stats["rows"] == 2 * seq["steps"]  # deltas, not running totals


def test_precondition_deficit_shows_in_annotations():
    deficit = OracleBatch({"precondition_verification": 1.0}, seed=3)
    result = rollout(deficit, "trace/precondition-v0", 6, batch_size=3, progress=False)
    assert all(r["annotations"]["preconditions_checked"] is False for r in result.records)
    assert all(r["annotations"]["missing_reads"] or r["annotations"]["violating_writes"] for r in result.records)
    assert result.success_rate == 0.0
    assert result.records[0]["policy"]["deficits"] == {"precondition_verification": 1.0}
    clean = rollout(OracleBatch(), "trace/precondition-v0", 6, batch_size=3, progress=False)
    assert {r["key"] for r in clean.records}.isdisjoint(r["key"] for r in result.records)


def test_fake_policy_without_begin_episode_or_adapters(tmp_path):
    policy = Hello()
    result = rollout(policy, "trace/precondition-v0", 3, batch_size=3, store=tmp_path / "h.jsonl")
    assert result.success_rate == 0.0 and result.n_episodes == 3
    for r in result.records:
        assert all(s["action"] == say("hello") for s in r["steps"])
        assert r["truncated"] == (r["annotations"]["ended_by"] == "max_turns")
    assert policy.calls == max(r["n_steps"] for r in result.records)
    assert len(TrajectoryStore(tmp_path / "h.jsonl")) == 3


def test_adapters_are_passed_per_episode_and_keyed():
    policy = Recorder()
    result = rollout(
        policy,
        "trace/precondition-v0",
        4,
        batch_size=4,
        progress=False,
        adapters=lambda env_id, seed: f"lora-{seed % 2}" if seed else None,
    )
    assert [r["adapter"] for r in result.records] == [None, "lora-1", "lora-0", "lora-1"]
    assert policy.adapters[:4] == [None, "lora-1", "lora-0", "lora-1"]
    assert len({r["key"].rsplit("|", 1)[1] for r in result.records}) == 3  # the adapter is part of the key
    steps = [s for r in result.records for s in r["steps"]]
    assert all(s["parse_error"] for s in steps)
    assert all(r["annotations"]["format_errors"] == r["n_steps"] for r in result.records)


def test_bad_arguments_raise_clearly():
    with pytest.raises(RegistrationError, match="Did you mean `trace/precondition-v0`"):
        rollout(OracleBatch(), "trace/precondtion-v0", 1, progress=False)
    with pytest.raises(ValueError, match="resume=True needs a store"):
        rollout(OracleBatch(), IDS[0], 1, resume=True, progress=False)
    with pytest.raises(ValueError, match="duplicate"):
        rollout(OracleBatch(), IDS[0], [1, 1], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        rollout(OracleBatch(), IDS[0], 1, batch_size=0, progress=False)

    class Short(OracleBatch):
        def act_batch(self, infos, adapters=None):
            return super().act_batch(infos, adapters)[:-1]

    with pytest.raises(ValueError, match="returned 1 actions for 2 infos"):
        rollout(Short(), IDS[0], 2, batch_size=2, progress=False)


def test_pairs_repeats_and_final_infos(tmp_path):
    """GRPO's groups: explicit (env_id, seed) pairs, K episodes each, with each episode's last info."""
    pairs = [(IDS[0], 3), (IDS[1], 5)]
    assert episodes(pairs, None) == pairs
    result = rollout(
        OracleBatch(deficits={"precondition_verification": 0.5}),
        pairs,
        None,
        repeats=3,
        keep_infos=True,
        batch_size=4,
        progress=False,
    )
    assert [(r["env_id"], r["seed"]) for r in result.records] == [pairs[0]] * 3 + [pairs[1]] * 3
    assert len(result.final_infos) == 6
    for record, info in zip(result.records, result.final_infos, strict=True):
        assert info["messages"][-1]["role"] in ("assistant", "user", "tool")
        assert sum(m["role"] == "assistant" for m in info["messages"]) == record["n_steps"]
    assert rollout(OracleBatch(), pairs, None, progress=False).final_infos is None
    with pytest.raises(ValueError, match="cannot go to a store"):
        rollout(OracleBatch(), pairs, None, repeats=2, store=tmp_path / "t.jsonl", progress=False)
    with pytest.raises(ValueError, match="repeats"):
        rollout(OracleBatch(), pairs, None, repeats=0, progress=False)
    with pytest.raises(TypeError, match="pairs"):
        rollout(OracleBatch(), IDS[0], None, progress=False)


def test_resume_skips_stored_episodes(tmp_path):
    path = tmp_path / "r.jsonl"
    first = rollout(OracleBatch(), IDS[:2], 3, store=path, progress=False)
    again = rollout(OracleBatch(), IDS[:2], 5, store=path, resume=True, progress=False)
    assert first.n_episodes == 6 and again.skipped == 6 and again.n_episodes == 4
    keys = [r["key"] for r in TrajectoryStore(path)]
    assert len(keys) == len(set(keys)) == 10
    # another policy identity is another set of episodes
    other = rollout(OracleBatch(seed=1), IDS[:2], 3, store=path, resume=True, progress=False)
    assert other.skipped == 0 and other.n_episodes == 6
    # Other env settings are other episodes: a turn limit is part of the key.
    cut = rollout(OracleBatch(), IDS[:2], 3, store=path, resume=True, progress=False, env_kwargs={"max_turns": 4})
    assert cut.skipped == 0 and cut.n_episodes == 6
    assert (
        rollout(OracleBatch(), IDS[:2], 3, store=path, resume=True, progress=False, env_kwargs={"max_turns": 4}).skipped
        == 6
    )
    # Without resume, running stored episodes again would duplicate their keys: refused, nothing written.
    size = path.stat().st_size
    with pytest.raises(ValueError, match="already holds 6 of these episodes"):
        rollout(OracleBatch(), IDS[:2], 3, store=path, progress=False)
    assert path.stat().st_size == size


_CHILD = textwrap.dedent("""
    import sys, time
    from trace_agents.rollout import OracleBatch, rollout

    class Slow(OracleBatch):  # same identity as OracleBatch(), so the same keys
        def act_batch(self, infos, adapters=None):
            time.sleep(0.004)
            return super().act_batch(infos, adapters)

    rollout(Slow(), sys.argv[1].split(","), int(sys.argv[2]), batch_size=2, store=sys.argv[3], progress=False)
""")


def test_kill_9_then_resume_completes_the_set(tmp_path, repo_root):
    ids, n = IDS[:2], 60
    path = tmp_path / "killed.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, ",".join(ids), str(n), str(path)],
        cwd=repo_root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            if path.exists() and path.read_bytes().count(b"\n") >= 8:
                break
            time.sleep(0.005)
        assert child.poll() is None, f"the child ended before it was killed: {child.stderr.read().decode()[-2000:]}"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()

    store = TrajectoryStore(path)
    partial = list(store)  # no crash; at most a torn last line, skipped
    assert 8 <= len(partial) < n * len(ids)
    assert all(tuple(r) == FIELDS for r in partial)

    clean = {r["key"]: r for r in rollout(OracleBatch(), ids, n, batch_size=8, progress=False).records}
    resumed = rollout(OracleBatch(), ids, n, batch_size=8, store=store, resume=True, progress=False)
    assert resumed.skipped == len(partial) and resumed.n_episodes == len(clean) - len(partial)

    keys = [r["key"] for r in store]
    assert len(keys) == len(set(keys)) and set(keys) == set(clean)
    assert store.torn_lines == 0
    for r in store:
        want = clean[r["key"]]
        assert (r["success"], r["return"], r["steps"], r["annotations"]) == (
            want["success"],
            want["return"],
            want["steps"],
            want["annotations"],
        )


def test_turn_limit_overrides_every_env_or_nothing():
    assert turn_limit(0) == {}
    result = rollout(Hello(), "trace/precondition-v0", 2, batch_size=2, progress=False, env_kwargs=turn_limit(2))
    assert all(r["n_steps"] <= 2 and r["truncated"] for r in result.records)
