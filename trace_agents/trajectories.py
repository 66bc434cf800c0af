"""Trajectories: one finished episode per JSONL line, in an append-only, crash-safe store.

## Record schema
Each line is one JSON object (a :class:`Trajectory`), keys in this order:

- ``key``: ``f"{env_id}|{task_id}|{seed}|{policy_key}"``, unique per episode; see
  :func:`policy_key`. Resuming skips episodes whose key is already stored.
- ``env_id``, ``spec_version``, ``capability``: the spec (``env.unwrapped.trace_spec``).
- ``seed``: the seed passed to ``env.reset``; ``task_id``: ``env.unwrapped.task.task_id``.
- ``policy``: the policy's ``identity()`` dict; ``adapter``: the LoRA adapter used for
  this episode, or ``None``.
- ``steps``: one :class:`Step` per agent turn: ``obs`` (the observation the action
  answered), ``action``, ``reward``, ``components`` (that step's
  ``info["reward_components"]``) and ``parse_error`` (``None`` when the action parsed).
- ``return``: the episode return (``info["episode_return"]``, else the sum of rewards);
  ``success``: ``info["success"]`` (``False`` when the episode was cut before the env
  scored it); ``return_components``: the final component values.
- ``annotations``: every key of the final info that is an episode annotation, i.e. the
  output of ``trace_envs.reward.annotate`` (``capabilities``, ``preconditions_checked``,
  ``missing_reads``, ...) and whatever else the env adds at the end (``user_errors``).
- ``n_steps``, ``truncated`` (cut by the turn limit rather than ended), ``created``
  (ISO 8601 time, UTC).

## Durability
:meth:`TrajectoryStore.append` writes a whole batch with one ``write`` and then
``flush`` + ``os.fsync``, so a crash loses at most the batch in flight. A crash in the
middle of a write (``kill -9``) can leave a torn last line: readers skip it (see
:attr:`TrajectoryStore.torn_lines`) and the next append truncates it first. A bad line
anywhere else is real corruption and raises :class:`TrajectoryStoreError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypedDict

import orjson

from trace_envs import TraceError

# Keys of the final info that describe the step or the episode's identity and outcome,
# not the episode's behaviour; everything else there is an annotation.
NOT_ANNOTATIONS = frozenset(
    {
        "env_id",
        "spec_version",
        "capability",
        "task_id",
        "seed",
        "tools",
        "step",
        "messages",
        "reward_components",
        "return_components",
        "success",
        "episode_return",
        "parse_error",
        "slot",
    }
)
# Nested fields that to_dataset stores as JSON text (their shapes differ between specs).
JSON_FIELDS = ("policy", "steps", "annotations", "return_components")
_TAIL_CHUNK = 1 << 16


class TrajectoryStoreError(TraceError, ValueError):
    """A trajectory file is corrupt somewhere other than a torn last line."""


class Step(TypedDict):
    """One agent turn."""

    obs: str
    action: str
    reward: float
    components: dict[str, float]
    parse_error: str | None


# The functional form, because "return" is a keyword. See the module docstring for each field.
Trajectory = TypedDict(
    "Trajectory",
    {
        "key": str,
        "env_id": str,
        "spec_version": int,
        "capability": str,
        "seed": int,
        "task_id": str,
        "policy": dict[str, Any],
        "adapter": "str | None",
        "steps": list[Step],
        "return": float,
        "success": bool,
        "annotations": dict[str, Any],
        "return_components": dict[str, float],
        "n_steps": int,
        "truncated": bool,
        "created": str,
    },
)
Trajectory.__doc__ = "One finished episode, as stored on one JSONL line (see the module docstring)."


FIELDS = (
    "key",
    "env_id",
    "spec_version",
    "capability",
    "seed",
    "task_id",
    "policy",
    "adapter",
    "steps",
    "return",
    "success",
    "annotations",
    "return_components",
    "n_steps",
    "truncated",
    "created",
)


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None, as orjson writes them (the stdlib would write
    bare ``NaN``, which no strict JSON reader takes back)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _encode(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits, non-string keys, lone surrogates: the stdlib takes them
        text = json.dumps(_finite(value), separators=(",", ":"), ensure_ascii=False)
        # A lone surrogate (a server's "\ud83d" decoded by json.loads) has no UTF-8: it becomes "?",
        # so the episode is stored and read back instead of failing every resume at the same point.
        return text.encode("utf-8", "replace")


def policy_key(
    identity: Mapping[str, Any], adapter: str | None = None, env_kwargs: Mapping[str, Any] | None = None
) -> str:
    """A short stable hash of a policy's identity, the episode's adapter and the env settings
    it played under (``gym.make`` kwargs such as ``max_turns``; none leaves the key as before).

    The adapter is part of it because one policy with another adapter is another agent, and
    the settings because an episode cut at 10 turns is not one cut at 60.
    """
    what: dict[str, Any] = {"identity": identity, "adapter": adapter}
    if env_kwargs:
        what["env_kwargs"] = dict(env_kwargs)
    text = json.dumps(what, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def weights_id(path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """``(path, digest)`` naming a model or adapter in a policy's identity.

    A local directory is named by its resolved path (however it was spelled) and a short
    digest of its config and the first MiB and size of each weight file, so weights
    retrained in place are another agent; anything else (a hub id) is kept as given.
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        return str(path), None
    h = hashlib.sha256()
    for f in sorted(p.glob("*")):
        if f.name in ("config.json", "adapter_config.json") or f.suffix == ".safetensors":
            with open(f, "rb") as fh:
                h.update(f"{f.name}:{f.stat().st_size}:".encode() + fh.read(1 << 20))
    return str(p.resolve()), h.hexdigest()[:12]


def episode_key(env_id: str, task_id: str, seed: int, policy_key: str) -> str:
    """The record key: ``env_id|task_id|seed|policy_key``."""
    return f"{env_id}|{task_id}|{seed}|{policy_key}"


def split_key(key: str) -> tuple[str, str, int, str]:
    """``(env_id, task_id, seed, policy_key)`` from a record key."""
    env_id, rest = key.split("|", 1)  # env ids cannot hold "|"; task ids might, so split from both ends
    task_id, seed, pkey = rest.rsplit("|", 2)
    return env_id, task_id, int(seed), pkey


def from_episode(
    env: Any,
    *,
    seed: int,
    policy: Mapping[str, Any],
    adapter: str | None,
    steps: list[Step],
    final_info: Mapping[str, Any],
    truncated: bool,
    created: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> Trajectory:
    """Build the record of a finished episode of ``env`` (a TraceEnv, wrapped or not).

    Args:
        env: The env the episode ran in, still holding it (its spec and task are read).
        seed: The seed the episode was reset with (part of the key).
        policy: The policy's :meth:`identity`, stored as the record's ``policy``.
        adapter: The adapter the episode ran with; None: the base model.
        steps: The episode's steps, in order.
        final_info: The last step's info: the return (``episode_return``; else the sum of the
            step rewards), ``success`` and ``return_components``; its keys outside
            :data:`NOT_ANNOTATIONS` are the annotations.
        truncated: Whether the turn limit ended the episode (rather than the conversation).
        created: An ISO-8601 timestamp; None: now (UTC, seconds).
        env_kwargs: The ``gym.make`` keyword arguments the env was made with (part of the key).
    """
    base = getattr(env, "unwrapped", env)
    spec, task = base.trace_spec, base.task
    identity = dict(policy)
    ret = final_info.get("episode_return")
    if ret is None:
        ret = sum(s["reward"] for s in steps)
    record = {
        "key": episode_key(spec.id, task.task_id, seed, policy_key(identity, adapter, env_kwargs)),
        "env_id": spec.id,
        "spec_version": spec.version,
        "capability": spec.capability,
        "seed": seed,
        "task_id": task.task_id,
        "policy": identity,
        "adapter": adapter,
        "steps": steps,
        "return": float(ret),
        "success": bool(final_info.get("success", False)),
        "annotations": {k: v for k, v in final_info.items() if k not in NOT_ANNOTATIONS},
        "return_components": dict(final_info.get("return_components", {})),
        "n_steps": len(steps),
        "truncated": bool(truncated),
        "created": created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return record  # type: ignore[return-value]


class TrajectoryStore:
    """An append-only JSONL file of :class:`Trajectory` records.

    One writer at a time. Reading is streaming and never modifies the file; appending
    repairs a torn last line first.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"TrajectoryStore({str(self.path)!r})"

    # ------------------------------------------------------------------ tail
    def _last_line(self, f: Any, size: int) -> tuple[int, bytes]:
        """``(offset, bytes)`` of the last line of an open binary file (newline included)."""
        end = size - 1 if size else 0  # ignore the final newline when looking for the previous one
        pos = end
        while pos > 0:
            start = max(0, pos - _TAIL_CHUNK)
            f.seek(start)
            cut = f.read(pos - start).rfind(b"\n")
            if cut >= 0:
                pos = start + cut + 1
                break
            pos = start
        f.seek(pos)
        return pos, f.read()

    def _torn_tail(self) -> tuple[int, bool] | None:
        """Where the torn last line starts and whether a valid one lacks only its newline; None if clean."""
        if not self.path.exists():
            return None
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return None
            pos, line = self._last_line(f, size)
        if not line.strip():
            return None
        try:
            valid = isinstance(orjson.loads(line), dict)
        except orjson.JSONDecodeError:
            valid = False
        if valid:
            return None if line.endswith(b"\n") else (pos, True)
        return pos, False

    @property
    def torn_lines(self) -> int:
        """1 when the last line is torn (read skips it, the next append removes it), else 0."""
        tail = self._torn_tail()
        return int(tail is not None and not tail[1])

    def repair(self) -> int:
        """Remove a torn last line (or end a whole but unterminated one); returns bytes removed."""
        tail = self._torn_tail()
        if tail is None:
            return 0
        pos, whole = tail
        with open(self.path, "r+b") as f:
            if whole:  # a complete record missing only its newline: keep it
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
                removed = 0
            else:
                removed = os.fstat(f.fileno()).st_size - pos
                f.truncate(pos)
            f.flush()
            os.fsync(f.fileno())
        return removed

    # ------------------------------------------------------------------ write
    def append(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Append records, one line each, with a single write and fsync; returns how many."""
        lines = [_encode(dict(r)) + b"\n" for r in records]
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repair()
        with open(self.path, "ab") as f:
            f.write(b"".join(lines))
            f.flush()
            os.fsync(f.fileno())
        return len(lines)

    # ------------------------------------------------------------------ read
    def __iter__(self) -> Iterator[Trajectory]:
        return self.read()

    def read(self) -> Iterator[Trajectory]:
        """Yield every record; a torn last line is skipped, a bad line elsewhere raises."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            prev: bytes | None = None
            number = 0
            for line in f:
                if prev is not None:
                    record = self._decode(prev, number, last=False)
                    if record is not None:
                        yield record
                number += 1
                prev = line
            if prev is not None:
                record = self._decode(prev, number, last=True)
                if record is not None:
                    yield record

    def _decode(self, line: bytes, number: int, *, last: bool) -> Any:
        if not line.strip():
            return None  # a blank line carries nothing
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if last:
                return None  # torn by a crash mid-write: counted by torn_lines
            raise TrajectoryStoreError(
                f"{self.path}: line {number} is not valid JSON ({exc}); only the last "
                f"line may be torn, so the file is corrupt there"
            ) from None
        if not isinstance(record, dict):
            if last:
                return None
            raise TrajectoryStoreError(
                f"{self.path}: line {number}: expected a JSON object, got {type(record).__name__}"
            )
        return record

    def records(self) -> list[Trajectory]:
        """Every record, as a list."""
        return list(self.read())

    def keys(self) -> set[str]:
        """The keys of every stored episode (for resuming)."""
        return {r["key"] for r in self.read()}

    def select(self, env_id: str, seeds: Iterable[int], keys: Mapping[int, str] | None = None) -> list[Trajectory]:
        """The stored episode of each of ``seeds`` of ``env_id``, in seed order (seeds not stored are left out).

        ``keys`` maps a seed to the :func:`policy_key` its record must carry, so one file
        can hold several policies' episodes; without it any policy's record counts.
        """
        seeds = list(seeds)
        wanted = set(seeds)
        by_seed: dict[int, Trajectory] = {}
        for record in self.read():
            env, _task, seed, key = split_key(record["key"])
            if env == env_id and seed in wanted and (keys is None or keys.get(seed) == key):
                by_seed[seed] = record
        return [by_seed[s] for s in seeds if s in by_seed]

    def __len__(self) -> int:
        return sum(1 for _ in self.read())

    # ------------------------------------------------------------------ export
    def to_dataset(self) -> Any:
        """The records as a ``datasets.Dataset``, one row per episode.

        Scalar fields are columns as they are. The nested fields ``policy``, ``steps``,
        ``annotations`` and ``return_components`` hold JSON text (their shapes differ
        between specs, which Arrow's fixed schema cannot hold); decode them with
        ``json.loads``, or use :func:`decode_row`.
        """
        from trace_agents import require_train_extra

        require_train_extra("datasets")
        import datasets

        columns: dict[str, list[Any]] = {name: [] for name in FIELDS}
        for record in self.read():
            for name in FIELDS:
                value = record.get(name)
                columns[name].append(_encode(value).decode() if name in JSON_FIELDS else value)
        features = datasets.Features(
            {
                "key": datasets.Value("string"),
                "env_id": datasets.Value("string"),
                "spec_version": datasets.Value("int64"),
                "capability": datasets.Value("string"),
                "seed": datasets.Value("int64"),
                "task_id": datasets.Value("string"),
                "policy": datasets.Value("string"),
                "adapter": datasets.Value("string"),
                "steps": datasets.Value("string"),
                "return": datasets.Value("float64"),
                "success": datasets.Value("bool"),
                "annotations": datasets.Value("string"),
                "return_components": datasets.Value("string"),
                "n_steps": datasets.Value("int64"),
                "truncated": datasets.Value("bool"),
                "created": datasets.Value("string"),
            }
        )
        return datasets.Dataset.from_dict(columns, features=features)


def decode_row(row: Mapping[str, Any]) -> Trajectory:
    """A :meth:`TrajectoryStore.to_dataset` row back as a record (its JSON fields decoded)."""
    out = dict(row)
    for name in JSON_FIELDS:
        if isinstance(out.get(name), str):
            out[name] = json.loads(out[name])
    return out  # type: ignore[return-value]
