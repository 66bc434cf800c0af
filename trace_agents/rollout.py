"""Vectorized rollouts: many episodes over a pool of env slots, one batched policy call per step.

>>> from trace_agents.rollout import OracleBatch, rollout
>>> result = rollout(OracleBatch(), "trace/precondition-v0", 8, batch_size=4, progress=False)
>>> result.success_rate
1.0

Every step round asks the policy for the next action of every active slot at once
(``policy.act_batch``), steps each env, and refills a slot with the next ``(env_id,
seed)`` as soon as its episode ends, so the batch stays full. Finished episodes go to the
:class:`~trace_agents.trajectories.TrajectoryStore` after each round that finished any;
``resume=True`` skips the episodes already stored, so a rerun after a crash neither loses
nor duplicates one.

## The policy protocol
- ``act_batch(infos, adapters=None) -> list[str]``: one action per info. Each info is the
  env's latest info (``"messages"``, ``"tools"``, ...) plus ``"slot"``, the index of the
  env slot it came from. ``adapters`` (one per info) is passed only when the rollout was
  given an ``adapters`` function.
- ``identity() -> dict``: JSON-able; hashed into each record's key.
- optional ``begin_episode(slot, env)``: called after ``env.reset`` when ``slot`` starts
  an episode.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym

import trace_envs
from trace_agents.trajectories import (
    Step,
    Trajectory,
    TrajectoryStore,
    from_episode,
    policy_key,
    split_key,
)
from trace_envs import OraclePolicy

AdapterFunc = Callable[[str, int], "str | None"]  # (env_id, seed) -> adapter name or None


class Policy(Protocol):
    """What :func:`rollout` drives (``begin_episode(slot, env)`` is optional)."""

    def act_batch(self, infos: list[dict[str, Any]], adapters: list[str | None] | None = None) -> list[str]:
        """One action per info."""

    def identity(self) -> dict[str, Any]:
        """A JSON-able description: model, adapter, sampling."""


@dataclass
class RolloutResult:
    """What one :func:`rollout` call ran (episodes skipped by ``resume`` are not in it)."""

    records: list[Trajectory]
    skipped: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    final_infos: list[dict[str, Any]] | None = None  # with keep_infos=True: each episode's last info

    @property
    def n_episodes(self) -> int:
        """Episodes run by this call."""
        return len(self.records)

    @property
    def success_rate(self) -> float:
        """Share of this call's episodes that succeeded (0.0 when none ran)."""
        return sum(r["success"] for r in self.records) / len(self.records) if self.records else 0.0

    @property
    def mean_return(self) -> float:
        """Mean episode return (0.0 when none ran)."""
        return sum(r["return"] for r in self.records) / len(self.records) if self.records else 0.0


class OracleBatch:
    """:class:`trace_envs.OraclePolicy` behind the batch protocol: one oracle per env slot."""

    def __init__(self, deficits: Mapping[str, float] | None = None, seed: int = 0) -> None:
        self.deficits = dict(deficits or {})
        self.seed = seed
        OraclePolicy(self.deficits, seed)  # validate now, not at the first episode
        self._oracles: dict[int, OraclePolicy] = {}

    def begin_episode(self, slot: int, env: Any) -> None:
        """Plan the episode ``env`` (already reset) is starting in ``slot``."""
        oracle = self._oracles.get(slot)
        if oracle is None:
            oracle = self._oracles[slot] = OraclePolicy(self.deficits, self.seed)
        oracle.reset(env)

    def act_batch(self, infos: list[dict[str, Any]], adapters: list[str | None] | None = None) -> list[str]:
        """The next planned action for each info's slot (adapters are ignored)."""
        actions = []
        for i, info in enumerate(infos):
            slot = info.get("slot", i)
            oracle = self._oracles.get(slot)
            if oracle is None:
                raise RuntimeError(
                    f"OracleBatch has no episode in slot {slot}: call begin_episode(slot, env) after each env.reset"
                )
            actions.append(oracle.act("", info))
        return actions

    def identity(self) -> dict[str, Any]:
        """``{"policy": "oracle", "deficits": ..., "seed": ...}`` (only the nonzero deficits)."""
        return {
            "policy": "oracle",
            "deficits": {k: v for k, v in sorted(self.deficits.items()) if v},
            "seed": self.seed,
        }


@dataclass
class _Episode:
    index: int
    env_id: str
    seed: int
    adapter: str | None
    env: gym.Env
    obs: str
    info: dict[str, Any]
    steps: list[Step] = field(default_factory=list)


def turn_limit(max_turns: int) -> dict[str, Any]:
    """Env kwargs that override every env's turn limit; none for 0 (each spec keeps its own)."""
    return {"max_turns": max_turns} if max_turns else {}


def episodes(
    env_ids: str | Sequence[str] | Sequence[tuple[str, int]], seeds: Iterable[int] | int | None
) -> list[tuple[str, int]]:
    """The ``(env_id, seed)`` pairs a rollout runs: ids × seeds (an int ``n`` means seeds ``0..n-1``).

    With ``seeds=None``, ``env_ids`` is the list of ``(env_id, seed)`` pairs itself.
    A pair may appear once: it names one episode (and one record key) per policy.
    """
    if seeds is None:
        if isinstance(env_ids, str) or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in env_ids):
            raise TypeError("with seeds=None, pass (env_id, seed) pairs as env_ids")
        pairs = [(str(e), int(s)) for e, s in env_ids]
    else:
        ids = [env_ids] if isinstance(env_ids, str) else list(env_ids)
        if isinstance(seeds, bool):
            raise TypeError("seeds must be an int count or an iterable of ints, got a bool")
        seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
        pairs = [(env_id, seed) for env_id in ids for seed in seed_list]
    if len(set(pairs)) != len(pairs):
        dups = sorted({p for p in pairs if pairs.count(p) > 1})[:3]
        raise ValueError(
            f"duplicate (env_id, seed) pairs, e.g. {dups}: each pair is one episode with one record "
            f"key; pass distinct env ids and seeds"
        )
    return pairs


def _progress_bar(total: int, progress: bool, desc: str) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the bar is a nicety: run without it
        return None
    # disable=None: tqdm turns itself off when stderr is not a TTY (logs, CI).
    return tqdm(total=total, desc=desc, unit="ep", disable=None if progress else True, dynamic_ncols=True)


def rollout(
    policy: Policy,
    env_ids: str | Sequence[str] | Sequence[tuple[str, int]],
    seeds: Iterable[int] | int | None,
    *,
    batch_size: int = 16,
    store: TrajectoryStore | str | os.PathLike[str] | None = None,
    resume: bool = False,
    adapters: AdapterFunc | None = None,
    progress: bool = True,
    env_kwargs: Mapping[str, Any] | None = None,
    sequential: bool = False,
    repeats: int = 1,
    keep_infos: bool = False,
) -> RolloutResult:
    """Run one episode per ``(env_id, seed)`` with ``batch_size`` envs stepping together.

    ``store`` (a path or store) receives each finished episode; with ``resume=True`` the
    episodes already in it are skipped. ``adapters(env_id, seed)`` picks each episode's
    adapter. ``sequential=True`` runs one env at a time (``batch_size=1``), the baseline
    for measuring what batching gains. Returns the records in episode order and timings
    (seconds): ``wall``, ``env`` (inside ``reset``/``step``), ``policy`` (inside
    ``act_batch`` and ``begin_episode``), ``store``, ``make`` (building envs), their shares of ``wall``, and
    ``steps``, ``act_batch_calls``, ``episodes_per_s``, ``steps_per_s``.

    ``repeats=K`` runs every pair K times in a row (GRPO's group of K rollouts of one
    task); those episodes share a record key, so they cannot go to a store.
    ``keep_infos=True`` also returns each episode's last info (the whole conversation in
    ``"messages"``) in :attr:`RolloutResult.final_infos`. A policy with an ``env_kwargs``
    attribute (the scorer's admissible lists) has it passed to every env, under ``env_kwargs``.

    Args:
        policy: What acts (the module's policy protocol).
        env_ids: One env id, several (each played on every seed), or, with ``seeds=None``,
            the ``(env_id, seed)`` pairs themselves.
        seeds: Reset seeds: an iterable, an int ``n`` for ``0..n-1``, or None (pairs in ``env_ids``).
        batch_size: Envs stepping together, each a slot of one ``act_batch`` call (>= 1).
        store: Where finished episodes are appended (a path or store); None: nowhere. Without
            ``resume``, a store that already holds one of these episodes is refused.
        resume: Skip the episodes ``store`` already holds (same policy, adapter and env kwargs).
        adapters: ``(env_id, seed) -> adapter name or None`` per episode; None: ``act_batch``
            gets no ``adapters`` argument.
        progress: Show a tqdm bar (when stderr is a terminal).
        env_kwargs: ``gym.make`` keyword arguments for every env (e.g. :func:`turn_limit`);
            part of each record's key.
        sequential: One env at a time (``batch_size`` is then 1).
        repeats: Episodes per pair, in a row (>= 1; above 1, no store).
        keep_infos: Also return each episode's last info in ``final_infos``.
    """
    t_start = time.perf_counter()
    # A policy that needs env features (the scorer's admissible lists) names them; the caller's win.
    env_kwargs = {**getattr(policy, "env_kwargs", {}), **(env_kwargs or {})}
    if sequential:
        batch_size = 1
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    if repeats > 1 and store is not None:
        raise ValueError("repeats > 1 runs episodes that share a record key; they cannot go to a store")
    if resume and store is None:
        raise ValueError("resume=True needs a store to resume from; pass store=PATH")
    if isinstance(store, str) or hasattr(store, "__fspath__"):
        store = TrajectoryStore(store)
    todo = [pair for pair in episodes(env_ids, seeds) for _ in range(repeats)]
    for env_id in dict.fromkeys(e for e, _ in todo):
        if env_id not in gym.registry:
            trace_envs.make(env_id)  # raises with a did-you-mean
    identity = policy.identity()
    pick = adapters or (lambda env_id, seed: None)
    plan = [(i, env_id, seed, pick(env_id, seed)) for i, (env_id, seed) in enumerate(todo)]
    skipped = 0
    if store is not None and store.path.exists():
        done = set()
        for key in store.keys():
            env_id, _task, seed, pkey = split_key(key)
            done.add((env_id, seed, pkey))
        keys = {a: policy_key(identity, a, env_kwargs) for a in {a for *_, a in plan}}
        kept = [p for p in plan if (p[1], p[2], keys[p[3]]) not in done]
        if not resume and len(kept) < len(plan):  # appending them again would duplicate their keys
            raise ValueError(
                f"{store.path} already holds {len(plan) - len(kept)} of these episodes (same policy, "
                f"seeds and adapters); resume (--resume) to skip them, or store to another file"
            )
        skipped = len(plan) - len(kept)
        plan = kept

    timings = dict.fromkeys(("env", "policy", "store", "make"), 0.0)
    calls = steps_total = 0
    records: list[tuple[int, Trajectory]] = []
    final_infos: dict[int, dict[str, Any]] = {}
    kwargs = dict(env_kwargs or {})
    pool: list[dict[str, gym.Env]] = [{} for _ in range(min(batch_size, max(len(plan), 1)))]
    slots: list[_Episode | None] = [None] * len(pool)
    queue = iter(plan)
    begin = getattr(policy, "begin_episode", None)
    bar = _progress_bar(len(plan), progress, desc="rollout")

    def fill(slot: int) -> None:
        nxt = next(queue, None)
        if nxt is None:
            slots[slot] = None
            return
        index, env_id, seed, adapter = nxt
        env = pool[slot].get(env_id)
        if env is None:
            t = time.perf_counter()
            env = pool[slot][env_id] = trace_envs.make(env_id, **kwargs)
            timings["make"] += time.perf_counter() - t
        t = time.perf_counter()
        obs, info = env.reset(seed=seed)
        timings["env"] += time.perf_counter() - t
        if begin is not None:
            t = time.perf_counter()
            begin(slot, env)
            timings["policy"] += time.perf_counter() - t
        slots[slot] = _Episode(index, env_id, seed, adapter, env, obs, info)

    try:
        for slot in range(len(slots)):
            fill(slot)
        while True:
            active = [i for i, ep in enumerate(slots) if ep is not None]
            if not active:
                break
            infos = [dict(slots[i].info, slot=i) for i in active]
            t = time.perf_counter()
            if adapters is None:
                actions = policy.act_batch(infos)
            else:
                actions = policy.act_batch(infos, [slots[i].adapter for i in active])
            timings["policy"] += time.perf_counter() - t
            calls += 1
            if len(actions) != len(infos):
                raise ValueError(
                    f"policy.act_batch returned {len(actions)} actions for {len(infos)} infos; "
                    f"it must return one per info"
                )
            finished: list[tuple[int, Trajectory]] = []
            for slot, action in zip(active, actions, strict=True):
                ep = slots[slot]
                if not isinstance(action, str):
                    raise TypeError(
                        f"policy.act_batch must return str actions, got {type(action).__name__} for slot {slot}"
                    )
                t = time.perf_counter()
                obs, reward, terminated, truncated, info = ep.env.step(action)
                timings["env"] += time.perf_counter() - t
                steps_total += 1
                ep.steps.append(
                    {
                        "obs": ep.obs,
                        "action": action,
                        "reward": float(reward),
                        "components": dict(info.get("reward_components", {})),
                        "parse_error": info.get("parse_error"),
                    }
                )
                ep.obs, ep.info = obs, info
                if terminated or truncated:
                    record = from_episode(
                        ep.env,
                        seed=ep.seed,
                        policy=identity,
                        adapter=ep.adapter,
                        steps=ep.steps,
                        final_info=info,
                        truncated=truncated and not terminated,
                        env_kwargs=kwargs,
                    )
                    finished.append((ep.index, record))
                    if keep_infos:
                        final_infos[ep.index] = info
                    fill(slot)
            if finished:
                if store is not None:
                    t = time.perf_counter()
                    store.append(r for _, r in finished)
                    timings["store"] += time.perf_counter() - t
                records.extend(finished)
                if bar is not None:
                    bar.update(len(finished))
    finally:
        if bar is not None:
            bar.close()
        for envs in pool:
            for env in envs.values():
                env.close()

    records.sort(key=lambda pair: pair[0])
    wall = time.perf_counter() - t_start
    timings = {
        "wall": wall,
        **timings,
        "env_share": timings["env"] / wall if wall else 0.0,
        "policy_share": timings["policy"] / wall if wall else 0.0,
        "steps": steps_total,
        "act_batch_calls": calls,
        "batch_size": len(slots),
        "episodes_per_s": len(records) / wall if wall else 0.0,
        "steps_per_s": steps_total / wall if wall else 0.0,
    }
    return RolloutResult(
        records=[r for _, r in records],
        skipped=skipped,
        timings=timings,
        final_infos=[final_infos[i] for i, _ in records] if keep_infos else None,
    )


def compare_batching(
    policy: Policy,
    env_ids: str | Sequence[str],
    seeds: Iterable[int] | int,
    *,
    batch_size: int = 16,
    env_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the same episodes sequentially and batched; returns both timings and the speedup.

    Nothing is stored. The two runs' records are compared too (``same_records``): with a
    deterministic policy batching must not change any episode. A policy with a numeric
    ``stats`` dict (:class:`~trace_agents.policy.HFPolicy`) has each run's change in it
    added to that run's timings under ``"policy_stats"``.
    """
    pairs = episodes(env_ids, seeds)
    ids = list(dict.fromkeys(e for e, _ in pairs))
    seed_list = list(dict.fromkeys(s for _, s in pairs))

    def run(**kw: Any) -> RolloutResult:
        before = dict(getattr(policy, "stats", {}))
        result = rollout(policy, ids, seed_list, progress=False, env_kwargs=env_kwargs, **kw)
        if before:
            result.timings["policy_stats"] = {k: policy.stats[k] - v for k, v in before.items()}
        return result

    seq = run(sequential=True)
    bat = run(batch_size=batch_size)
    strip = ("created",)
    same = [{k: v for k, v in r.items() if k not in strip} for r in seq.records] == [
        {k: v for k, v in r.items() if k not in strip} for r in bat.records
    ]
    return {
        "episodes": len(pairs),
        "batch_size": batch_size,
        "sequential": seq.timings,
        "batched": bat.timings,
        "speedup": seq.timings["wall"] / bat.timings["wall"] if bat.timings["wall"] else 0.0,
        "same_records": same,
    }
