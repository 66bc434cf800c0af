"""Declarative reward components.

Every component maps the episode log to a value in [0, 1]; a spec gives each a weight
(negative for penalties) and the reward is ``sum(weight * value)``. *Shaped* components
(``format_error``, ``turn_cost``) are paid per step as their value changes; the others
are paid at the end of the episode. So the return always equals the weighted sum of the
final values, and lies in ``[sum of negative weights, sum of positive weights]``, which
each spec declares as its range.

## Credit only for competence (spec version 3)

A component pays only for evidence that the agent did the task; doing nothing earns 0.

- A request is *earned* when its gold outcome was reached the right way: its gold write
  executed exactly; a forbidden request refused *after* the reads that decide it (a
  refusal without them is a guess); a question answered with the right value; the
  strings of an ``inform`` request said. :func:`earned` computes this.
- Each outcome component judges a *domain* of the task (its questions, its requests to
  refuse, the agent's writes, ...). When the domain is empty in a task, the component
  has nothing of its own to judge and pays the share of requests earned instead
  (:func:`progress`), never a free 1: its weight goes to finishing the task.
- Partial progress stays paid, so the reward stays dense: the share of requests earned,
  deciding records read even before acting (half credit), the right writes confirmed.

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


def earned(log: EpisodeLog) -> list[bool]:
    """For each request: was its gold outcome reached, the right way (see the module docstring)?"""
    out = []
    for i, req in enumerate(log.task.requests):
        if req.answer is not None:
            ok = log.answered[i]
        elif req.gold is not None:
            ok = req.gold.key in log.done_writes
        elif req.refuse:
            at = log.handled_step[i]
            ok = log.refused[i] and at is not None and not log.reads_before(i, at)
        elif req.kind == "chat":  # nothing to do (τ²-bench): closing the conversation is the task
            ok = log.ended_by == "user"
        else:  # "inform": the strings were said
            ok = log.resolved[i]
        out.append(ok)
    return out


def progress(log: EpisodeLog) -> float:
    """The share of requests earned: 0 when nothing was done, 1 when everything was."""
    done = earned(log)
    return sum(done) / len(done) if done else 0.0


def _share(log: EpisodeLog, hits: list[float]) -> float:
    """The mean of ``hits``; a component with nothing to judge pays :func:`progress`."""
    return sum(hits) / len(hits) if hits else progress(log)


def _gold_writes_done(log: EpisodeLog, end: End | None) -> float:
    return _share(log, [c.key in log.done_writes for c in log.task.gold_calls])


def said_all(log: EpisodeLog, strings: tuple[str, ...]) -> bool:
    """True when every string appeared in some agent message (case- and comma-insensitive)."""
    said = [t.lower().replace(",", "") for t in log.agent_texts]
    return all(any(s.lower().replace(",", "") in t for t in said) for s in strings)


def _answer_match(log: EpisodeLog, end: End | None) -> float:
    return _share(log, [log.answered[i] for i, r in enumerate(log.task.requests) if r.answer is not None])


def _read_before_write(log: EpisodeLog, end: End | None) -> float:
    hits = []
    for i, req in enumerate(log.task.requests):
        if not req.required_reads or req.answer is not None:
            continue
        at = log.handled_step[i]
        if at is not None:  # acted on or refused: were the deciding records read first?
            hits.append(0.0 if log.reads_before(i, at) else 1.0)
        else:  # not acted on yet: half credit for having read what decides it
            hits.append(0.0 if log.reads_before(i, log.step + 1) else 0.5)
    return _share(log, hits)


def _violations(log: EpisodeLog) -> int:
    reqs = log.task.requests
    return sum(1 for w in log.writes if w.request is None or reqs[w.request].refuse)


def _no_write_on_refusal(log: EpisodeLog, end: End | None) -> float:
    if _violations(log):
        return 0.0
    done = earned(log)
    return _share(log, [done[i] for i, r in enumerate(log.task.requests) if r.refuse])


def _requests_completed(log: EpisodeLog, end: End | None) -> float:
    return progress(log)


def _confirmed_writes(log: EpisodeLog, end: End | None) -> float:
    return _share(log, [w.confirmed for w in log.writes if w.ok])


def _arg_precision(log: EpisodeLog, end: End | None) -> float:
    reqs = log.task.requests
    return _share(log, [w.exact for w in log.writes if w.request is not None and not reqs[w.request].refuse])


def _format_error(log: EpisodeLog, end: End | None) -> float:
    return min(1.0, 0.25 * log.format_errors)


def turn_budget(log: EpisodeLog) -> int:
    """Turns an efficient agent needs, with slack; ``turn_cost`` charges turns beyond it."""
    return 8 + 7 * len(log.task.requests)


def _turn_cost(log: EpisodeLog, end: End | None) -> float:
    budget = turn_budget(log)
    return min(1.0, max(0, log.step - budget) / budget)


def _db_match(log: EpisodeLog, end: End | None) -> float:
    if end is None or not end.db_match:
        return 0.0
    reqs = log.task.requests
    if not any(r.gold is not None or r.refuse for r in reqs):
        return progress(log)  # nothing for the DB rule to decide: questions or messages only
    # An unchanged record is credited only where the agent refused it for the right reason.
    done = earned(log)
    return float(all(done[i] for i, r in enumerate(reqs) if r.refuse))


def communicated(log: EpisodeLog) -> list[bool]:
    """For each string the task says must be communicated: did an agent message hold it?"""
    return [said_all(log, (s,)) for s in log.task.communicate]


def _communicate_info(log: EpisodeLog, end: End | None) -> float:
    return _share(log, communicated(log))


def _benchmark_outcome(log: EpisodeLog, end: End | None) -> float:
    # τ²-bench's offline rule: the DB check, times COMMUNICATE when the task's basis lists it.
    # NL_ASSERTION needs an LLM judge: reported as not evaluated, never counted as passed.
    ok = end is not None and end.db_match
    if "COMMUNICATE" in log.task.reward_basis:
        ok = ok and all(communicated(log))
    return float(ok)


# Each help says what the component judges; "else progress" marks the rule for a task where
# that domain is empty (see the module docstring).
COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in [
        Component(
            "db_match",
            _db_match,
            False,
            "1 if the final DB equals the gold DB and every request to refuse was refused after its deciding "
            "reads; with no write or refusal in the task, progress (and 0 on any DB change)",
        ),
        Component("gold_writes_done", _gold_writes_done, False, "share of gold writes executed exactly; else progress"),
        Component(
            "answer_match", _answer_match, False, "share of questions answered with the right value; else progress"
        ),
        Component(
            "read_before_write",
            _read_before_write,
            False,
            "per request with deciding reads: 1 if they came before its write or refusal, 0.5 if read but "
            "not yet acted on; else progress",
        ),
        Component(
            "no_write_on_refusal",
            _no_write_on_refusal,
            False,
            "0 after any write to a forbidden request or an unrelated record; otherwise the share of requests "
            "to refuse refused after their deciding reads; else progress",
        ),
        Component(
            "requests_completed",
            _requests_completed,
            False,
            "progress: the share of requests earned (gold write done, refused after the deciding reads, "
            "answered right, information said)",
        ),
        Component(
            "confirmed_writes",
            _confirmed_writes,
            False,
            "share of successful writes the user confirmed first; else progress",
        ),
        Component(
            "arg_precision",
            _arg_precision,
            False,
            "share of writes on allowed requests with exactly the gold arguments; else progress",
        ),
        Component(
            "communicate_info",
            _communicate_info,
            False,
            "share of the task's communicate_info strings said; else progress",
        ),
        Component(
            "benchmark_outcome",
            _benchmark_outcome,
            False,
            "τ²-bench's offline rule: db_match, times communicate_info when the reward basis lists COMMUNICATE "
            "(the benchmark's own rule: a task with no gold write passes by doing nothing, as in τ²-bench)",
        ),
        Component("format_error", _format_error, True, "0.25 per unparseable or ill-typed action, capped at 1"),
        Component("turn_cost", _turn_cost, True, "turns beyond the task's budget, as a share of it, capped at 1"),
    ]
}


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
        "requests_unaddressed": sum(
            1 for i, r in enumerate(reqs) if log.handled_step[i] is None and not log.resolved[i] and r.kind != "chat"
        ),
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
