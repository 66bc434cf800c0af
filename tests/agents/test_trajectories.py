"""TrajectoryStore: append-only JSONL that survives torn writes, and the record helpers."""

from __future__ import annotations

import json
import os

import pytest

from trace_agents.rollout import OracleBatch, rollout
from trace_agents.trajectories import (
    FIELDS,
    TrajectoryStore,
    TrajectoryStoreError,
    decode_row,
    episode_key,
    policy_key,
    split_key,
)


def _record(i: int) -> dict:
    return {
        "key": f"trace/x-v0|x-{i}|{i}|abc",
        "env_id": "trace/x-v0",
        "seed": i,
        "steps": [{"obs": "o" * i}],
        "return": float(i),
        "success": i % 2 == 0,
    }


@pytest.fixture
def store(tmp_path) -> TrajectoryStore:
    s = TrajectoryStore(tmp_path / "traj.jsonl")
    s.append([_record(0), _record(1)])
    s.append([_record(2)])
    return s


def test_append_and_read_back(store):
    assert [r["seed"] for r in store] == [0, 1, 2]
    assert store.keys() == {_record(i)["key"] for i in range(3)}
    assert len(store) == 3 and store.torn_lines == 0
    assert store.path.read_bytes().count(b"\n") == 3


def test_missing_file_reads_empty(tmp_path):
    s = TrajectoryStore(tmp_path / "none.jsonl")
    assert list(s) == [] and s.keys() == set() and s.torn_lines == 0
    assert s.append([]) == 0 and not s.path.exists()


def test_one_fsync_per_append_call(store, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    store.append([_record(i) for i in range(3, 10)])
    assert len(synced) == 1
    assert len(store) == 10


def test_torn_last_line_is_skipped_then_repaired(store):
    whole = store.path.read_bytes()
    half = json.dumps(_record(3)).encode()[:25]
    with open(store.path, "ab") as f:
        f.write(half)
    assert [r["seed"] for r in store.read()] == [0, 1, 2]
    assert store.torn_lines == 1
    store.append([_record(4)])
    assert store.torn_lines == 0
    assert [r["seed"] for r in store] == [0, 1, 2, 4]
    assert store.path.read_bytes().startswith(whole)  # nothing valid was lost
    assert half not in store.path.read_bytes()


def test_torn_line_with_newline_is_also_repaired(store):
    with open(store.path, "ab") as f:
        f.write(b'{"key": "trace/x-v0|x-9|9|abc", "ste\n')
    assert len(store) == 3 and store.torn_lines == 1
    assert store.repair() > 0
    assert store.torn_lines == 0 and len(store) == 3


def test_whole_last_record_without_newline_is_kept(store):
    with open(store.path, "ab") as f:
        f.write(json.dumps(_record(3)).encode())  # crash just before the newline
    assert [r["seed"] for r in store] == [0, 1, 2, 3] and store.torn_lines == 0
    store.append([_record(4)])
    assert [r["seed"] for r in store] == [0, 1, 2, 3, 4]


def test_corrupt_middle_line_raises_with_its_number(store):
    lines = store.path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1][:10] + b"\n"
    store.path.write_bytes(b"".join(lines))
    with pytest.raises(TrajectoryStoreError, match=r"line 2 is not valid JSON") as err:
        list(store)
    assert isinstance(err.value, ValueError)
    assert str(store.path) in str(err.value)


def test_middle_line_that_is_not_an_object_raises(store):
    lines = store.path.read_bytes().splitlines(keepends=True)
    lines.insert(1, b"[1, 2]\n")
    store.path.write_bytes(b"".join(lines))
    with pytest.raises(TrajectoryStoreError, match=r"line 2: expected a JSON object, got list"):
        store.keys()


def test_long_torn_tail_is_found_across_chunks(tmp_path):
    s = TrajectoryStore(tmp_path / "long.jsonl")
    s.append([_record(1), {**_record(2), "steps": [{"obs": "x" * 200_000}]}])
    with open(s.path, "ab") as f:
        f.write(json.dumps({**_record(3), "steps": [{"obs": "y" * 150_000}]}).encode()[:-3])
    assert s.torn_lines == 1 and len(s) == 2
    s.append([_record(4)])
    assert [r["seed"] for r in s] == [1, 2, 4]
    assert len(list(s)[1]["steps"][0]["obs"]) == 200_000


def test_keys_and_policy_key_helpers():
    ident = {"policy": "oracle", "deficits": {}, "seed": 0}
    k = policy_key(ident)
    assert k == policy_key(dict(reversed(list(ident.items())))) and len(k) == 12  # order-independent, short
    assert policy_key(ident, "lora-a") != k
    assert policy_key({**ident, "seed": 1}) != k
    assert policy_key(ident, None, {}) == k and policy_key(ident, None, {"max_turns": 4}) != k  # env settings
    key = episode_key("trace/precondition-v0", "precondition-3", 3, k)
    assert key == f"trace/precondition-v0|precondition-3|3|{k}"
    assert split_key(key) == ("trace/precondition-v0", "precondition-3", 3, k)
    assert split_key("trace/a-v0|odd|task|7|abc") == ("trace/a-v0", "odd|task", 7, "abc")


def test_to_dataset_round_trips_rows(tmp_path):
    store = TrajectoryStore(tmp_path / "ds.jsonl")
    result = rollout(
        OracleBatch({"tool_calling_precision": 0.5}),
        ["trace/precondition-v0", "trace/tool-calling-v0"],
        3,
        batch_size=4,
        store=store,
        progress=False,
    )
    ds = store.to_dataset()
    assert ds.num_rows == len(store) == result.n_episodes == 6
    assert set(ds.column_names) == set(FIELDS)
    rows = [decode_row(row) for row in ds]
    assert sorted(rows, key=lambda r: r["key"]) == sorted(store.read(), key=lambda r: r["key"])


def test_select_returns_each_seeds_episode_in_seed_order(store):
    other = {**_record(1), "key": "trace/x-v0|x-1|1|zzz", "return": 99.0}
    store.append([other, {**_record(5), "key": "trace/y-v0|y-5|5|abc", "env_id": "trace/y-v0"}])
    assert [r["seed"] for r in store.select("trace/x-v0", [2, 0, 7])] == [2, 0]  # 7 was never stored
    # Without keys the latest record of a seed wins; with keys only that policy's counts.
    assert store.select("trace/x-v0", [1])[0]["return"] == 99.0
    assert store.select("trace/x-v0", [1], keys={1: "abc"})[0]["return"] == 1.0
    assert store.select("trace/x-v0", [1], keys={1: "nope"}) == []
    assert [r["env_id"] for r in store.select("trace/y-v0", [5])] == ["trace/y-v0"]


def test_a_lone_surrogate_or_nan_is_stored_and_read_back(store):
    """A server's "\\ud83d" reaches an action as a lone surrogate: the store must not fail on it (every
    resume would fail at the same episode), nor write NaN that strict readers refuse."""
    odd = {
        **_record(5),
        "steps": [{"obs": "x", "action": "I will check \ud83d now"}],
        "annotations": {"score": float("nan"), "big": 2**70},
    }
    store.append([odd, _record(6)])
    back = {r["seed"]: r for r in store.records()}
    assert back[5]["steps"][0]["action"] == "I will check ? now"
    assert back[5]["annotations"] == {"score": None, "big": 2**70} and 6 in back


def test_an_endpoint_reply_with_a_lone_surrogate_is_stored(tmp_path, fake_endpoint):
    from trace_agents.endpoint import EndpointPolicy

    path = tmp_path / "s.jsonl"
    with fake_endpoint(lambda request: "I will check \ud83d") as (url, _):
        result = rollout(
            EndpointPolicy(url, "m", temperature=0.0),
            "trace/precondition-v0",
            range(2),
            batch_size=2,
            store=path,
            resume=True,
            progress=False,
            env_kwargs={"max_turns": 2},
        )
    assert result.n_episodes == 2 and len(list(TrajectoryStore(path).records())) == 2


def test_weights_id_names_a_directory_by_where_it_is_and_what_it_holds(tmp_path, monkeypatch):
    from trace_agents.trajectories import weights_id

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights one")
    monkeypatch.chdir(tmp_path)
    same = {weights_id(p) for p in ("m", "./m/", str(model), tmp_path / "m" / ".." / "m")}
    assert len(same) == 1 and next(iter(same))[0] == str(model.resolve())  # however it is spelled
    (model / "model.safetensors").write_bytes(b"weights two")  # retrained in place: another agent
    assert weights_id(model)[1] != next(iter(same))[1]
    assert weights_id("Qwen/Qwen3-8B") == ("Qwen/Qwen3-8B", None)  # a hub id is kept as given
