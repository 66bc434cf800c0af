"""Declarative reward components.

Every component maps the episode log to a value in [0, 1]; a spec gives each a weight
(negative for penalties) and the reward is ``sum(weight * value)``. *Shaped* components
(``format_error``, ``turn_cost``) are paid per step as their value changes; the others
are paid at the end of the episode. So the return always equals the weighted sum of the
final values, and lies in ``[sum of negative weights, sum of positive weights]``, which
each spec declares as its range.

At the end of an episode :func:`annotate` also produces the capability annotations that
analysis needs (which reads preceded which write, violating writes, exact arguments,
chosen records, requests done).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from trace_envs.db import Database
from trace_envs.episode import EpisodeLog


@dataclass(frozen=True)
class End:
    """What is computed once when an episode ends."""

    gold_db: Database
    db_diff: dict[str, list[str]]

    @property
    def db_match(self) -> bool:
        return not self.db_diff


@dataclass(frozen=True)
class Component:
    """One reward term."""

    name: str
    value: Callable[[EpisodeLog, End | None], float]
    shaped: bool
    help: str


def _frac(num: int, den: int) -> float:
    return 1.0 if den == 0 else num / den


def _gold_writes_done(log: EpisodeLog, end: End | None) -> float:
    gold = log.task.gold_calls
    return _frac(sum(c.key in log.done_writes for c in gold), len(gold))


def said_all(log: EpisodeLog, strings: tuple[str, ...]) -> bool:
    """True when every string appeared in some agent message (case- and comma-insensitive)."""
    said = [t.lower().replace(",", "") for t in log.agent_texts]
    return all(any(s.lower().replace(",", "") in t for t in said) for s in strings)


def _answer_match(log: EpisodeLog, end: End | None) -> float:
    qs = [i for i, r in enumerate(log.task.requests) if r.answer is not None]
    return _frac(sum(log.answered[i] for i in qs), len(qs))


def _read_before_write(log: EpisodeLog, end: End | None) -> float:
    reqs = [i for i, r in enumerate(log.task.requests) if r.required_reads and r.answer is None]
    ok = 0
    for i in reqs:
        at = log.handled_step[i]
        if at is not None and not log.reads_before(i, at):
            ok += 1
    return _frac(ok, len(reqs))


def _violations(log: EpisodeLog) -> int:
    reqs = log.task.requests
    return sum(1 for w in log.writes if w.request is None or reqs[w.request].refuse)


def _no_write_on_refusal(log: EpisodeLog, end: End | None) -> float:
    return 0.0 if _violations(log) else 1.0


def _requests_completed(log: EpisodeLog, end: End | None) -> float:
    return _frac(sum(log.resolved), len(log.resolved))


def _confirmed_writes(log: EpisodeLog, end: End | None) -> float:
    ok = [w for w in log.writes if w.ok]
    return _frac(sum(w.confirmed for w in ok), len(ok))


def _arg_precision(log: EpisodeLog, end: End | None) -> float:
    mine = [w for w in log.writes if w.request is not None and not log.task.requests[w.request].refuse]
    return _frac(sum(w.exact for w in mine), len(mine))


def _format_error(log: EpisodeLog, end: End | None) -> float:
    return min(1.0, 0.25 * log.format_errors)


def turn_budget(log: EpisodeLog) -> int:
    """Turns an efficient agent needs, with slack; ``turn_cost`` charges turns beyond it."""
    return 8 + 7 * len(log.task.requests)


def _turn_cost(log: EpisodeLog, end: End | None) -> float:
    budget = turn_budget(log)
    return min(1.0, max(0, log.step - budget) / budget)


def _db_match(log: EpisodeLog, end: End | None) -> float:
    return 0.0 if end is None else float(end.db_match)


def communicated(log: EpisodeLog) -> list[bool]:
    """For each string the task says must be communicated: did an agent message hold it?"""
    return [said_all(log, (s,)) for s in log.task.communicate]


def _communicate_info(log: EpisodeLog, end: End | None) -> float:
    found = communicated(log)
    return _frac(sum(found), len(found))


def _benchmark_outcome(log: EpisodeLog, end: End | None) -> float:
    # τ²-bench's offline rule: the DB check, times COMMUNICATE when the task's basis lists it.
    # NL_ASSERTION needs an LLM judge: reported as not evaluated, never counted as passed.
    ok = end is not None and end.db_match
    if "COMMUNICATE" in log.task.reward_basis:
        ok = ok and all(communicated(log))
    return float(ok)


COMPONENTS: dict[str, Component] = {c.name: c for c in [
    Component("db_match", _db_match, False, "1 if the final database equals the gold database"),
    Component("gold_writes_done", _gold_writes_done, False, "share of gold writes executed exactly"),
    Component("answer_match", _answer_match, False, "share of questions answered with the right value"),
    Component("read_before_write", _read_before_write, False,
              "share of requests whose deciding records were read before the write or refusal"),
    Component("no_write_on_refusal", _no_write_on_refusal, False,
              "1 if no write targeted a forbidden request or an unrelated record"),
    Component("requests_completed", _requests_completed, False, "share of requests resolved"),
    Component("confirmed_writes", _confirmed_writes, False, "share of writes the user confirmed first"),
    Component("arg_precision", _arg_precision, False, "share of write calls with exactly the gold arguments"),
    Component("communicate_info", _communicate_info, False, "share of the task's communicate_info strings said"),
    Component("benchmark_outcome", _benchmark_outcome, False,
              "τ²-bench's offline rule: db_match, times communicate_info when the reward basis lists COMMUNICATE"),
    Component("format_error", _format_error, True, "0.25 per unparseable or ill-typed action, capped at 1"),
    Component("turn_cost", _turn_cost, True, "turns beyond the task's budget, as a share of it, capped at 1"),
]}


def reward_range(weights: Mapping[str, float]) -> tuple[float, float]:
    """The exact [min, max] of the return for these weights."""
    lo = sum(w for w in weights.values() if w < 0)
    hi = sum(w for w in weights.values() if w > 0)
    return round(lo, 10), round(hi, 10)


_RECORD_ARGS = frozenset({"item_ids", "new_item_ids", "payment_method_id"})


def _chose_other_record(w, gold) -> bool:
    """An inexact write that is well formed but names other records than the gold one.

    It succeeded, or it differs from the gold call only in well-typed record ids (for
    example an unavailable variant): a reasoning slip, not a formatting one.
    """
    if w.ok:
        return True
    if gold is None:  # the request wants no write at all
        return False
    args, want = w.call.arguments, gold.arguments
    if set(args) != set(want):
        return False
    differing = [k for k in want if args[k] != want[k]]
    return bool(differing) and all(k in _RECORD_ARGS and type(args[k]) is type(want[k]) for k in differing)


def _benchmark_notes(log: EpisodeLog) -> dict[str, Any]:
    notes = log.task.notes
    return {
        "reward_basis": list(log.task.reward_basis),
        "communicate_info": {s: ok for s, ok in zip(log.task.communicate, communicated(log), strict=True)},
        "nl_assertions": {"evaluated": False, "count": len(notes.get("nl_assertions", ()))},
    }


def annotate(log: EpisodeLog, end: End) -> dict[str, Any]:
    """Capability annotations for the finished episode (JSON-serializable)."""
    reqs = log.task.requests
    handled = [i for i in range(len(reqs)) if log.handled_step[i] is not None]
    missing = sorted({k for i in handled for k in log.reads_before(i, log.handled_step[i])})
    unauth = sum(1 for w in log.writes if not w.authenticated)
    mine = [w for w in log.writes if w.request is not None and not reqs[w.request].refuse]
    wrong_records = sum(1 for w in mine if not w.exact and _chose_other_record(w, reqs[w.request].gold))
    imprecise = sum(1 for w in mine if not w.exact) - wrong_records
    # Each annotation uses only its own evidence, so one capability's slip (say, stopping
    # early) does not show up as another's (say, unchecked preconditions).
    picks = [i for i, r in enumerate(reqs) if "structured_data_reasoning" in r.capabilities]
    record_ok = None
    if any(log.handled_step[i] is not None for i in picks) or wrong_records or log.wrong_answers:
        record_ok = wrong_records == 0 and log.wrong_answers == 0
    violating = _violations(log)
    declined = sum(1 for i, r in enumerate(reqs) if log.closed[i] and r.answer is None)
    return {
        "capabilities": list(log.task.capabilities),
        "requests_total": len(reqs),
        "requests_completed": sum(log.resolved),
        "requests_refused": sum(log.refused),
        # Left untouched: never acted on, refused, answered or resolved. Only this shows a
        # skipped request; a request attempted wrongly is another capability's slip.
        "requests_unaddressed": sum(1 for i, r in enumerate(reqs) if log.handled_step[i] is None
                                    and not log.resolved[i] and r.kind != "chat"),
        "requests_to_refuse": sum(r.refuse for r in reqs),
        "requests_declined": declined,  # allowed requests the agent refused
        # What the agent did at all: a capability it never exercised shows neither way.
        "requests_handled": len(handled),
        "request_writes": len(mine),
        "authenticated": log.auth_step is not None,
        # Refusing what is allowed misjudges the preconditions as much as writing what is not.
        "preconditions_checked": not missing and unauth == 0 and violating == 0 and declined == 0,
        "missing_reads": missing,
        "unauthenticated_writes": unauth,
        "violating_writes": violating,
        "unconfirmed_writes": sum(1 for w in log.writes if w.ok and not w.confirmed),
        "args_exact": imprecise == 0,
        "imprecise_calls": imprecise,
        "record_choice_correct": record_ok,
        "wrong_records": wrong_records,
        "wrong_answers": log.wrong_answers,
        "format_errors": log.format_errors,
        "tool_errors": log.tool_errors,
        "db_diff": {k: v for k, v in end.db_diff.items()},
        "ended_by": log.ended_by,
        **(_benchmark_notes(log) if log.task.benchmark else {}),
        "turns": log.step,
    }
