"""Tasks and the task-family registry.

A *task family* is a seeded generator, ``generate(rng, params, seed) -> Task`` (the
:class:`Family` protocol), registered by name with :func:`register_family`. A :class:`Task`
is pure data: the initial tables, who the user is, and an ordered list of
:class:`Request` objects. Each request carries everything the scripted user, the reward
and the oracle need: the write the user wants, the write that should happen (none when
policy forbids it), the reads that decide it, and the expected answer of a question.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from random import Random
from typing import Any, Protocol

from trace_envs._json import canonical
from trace_envs.capabilities import CAPABILITIES  # the canonical order (re-exported)


class Call:
    """A tool call: a name and JSON arguments (treat as immutable)."""

    __slots__ = ("name", "arguments", "_key")

    def __init__(self, name: str, arguments: Mapping[str, Any]) -> None:
        self.name = name
        self.arguments = arguments
        self._key: str | None = None

    @property
    def key(self) -> str:
        """Canonical text used to compare calls (computed once: it is on the hot path)."""
        if self._key is None:
            self._key = self.name + canonical(self.arguments)
        return self._key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Call) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Call({self.name!r}, {dict(self.arguments)!r})"

    def __getstate__(self) -> tuple:
        return (self.name, self.arguments)

    def __setstate__(self, state: tuple) -> None:
        self.name, self.arguments = state
        self._key = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": dict(self.arguments)}


@dataclass
class Request:
    """One thing the user wants done or answered."""

    kind: str  # e.g. "cancel", "return", "exchange", "modify_address", "question"
    text: str  # how the user states it
    capabilities: tuple[str, ...]
    desired: Call | None = None  # the write the user asks for (and will confirm)
    refuse: bool = False  # policy forbids ``desired``: the agent must refuse
    refusal_reason: str = ""
    required_reads: tuple[Call, ...] = ()  # reads that must precede the write or refusal
    answer: str | None = None  # expected answer of a question ("12.50" or a word)
    target: str = ""  # the record the request is about (order id or user id)
    facts: Mapping[str, str] = field(default_factory=dict)  # what the user reveals when asked
    # Plausible mistakes, precomputed so the oracle stays fast and reproducible.
    wrong_record: Call | str | None = None  # structured data: a plausible wrong choice
    wrong_format: Call | None = None  # tool calling: the same call, badly formatted
    describe: str = ""  # the action in words, as an agent would propose it
    expects: tuple[str, ...] = ()  # kind "inform": strings the agent must say (all of them)

    @property
    def gold(self) -> Call | None:
        """The write that should happen: ``desired`` unless policy forbids it."""
        return None if self.refuse else self.desired


@dataclass(frozen=True)
class UserProfile:
    """Who the simulated user is and how they identify."""

    user_id: str
    first_name: str
    last_name: str
    zip: str
    email: str
    auth: str = "email"  # "email" or "name_zip": what the user can tell
    fallback: bool = False  # asked again, the user also gives name + zip


@dataclass
class Task:
    """One episode's world and goal; pure data."""

    task_id: str
    family: str
    tables: dict[str, dict[str, Any]]
    user: UserProfile
    requests: list[Request]
    upfront: bool = False  # the user states every request in the opening message
    opening: str = ""  # the user's first message
    params: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict)  # family, seed, difficulty
    # Benchmark tasks (τ²-bench) carry their own scoring inputs and policy text.
    communicate: tuple[str, ...] = ()  # strings the agent must say
    reward_basis: tuple[str, ...] = ("DB",)
    gold_actions: tuple[Call, ...] = ()  # every gold call, reads included, in order
    policy: str = ""  # overrides the domain's policy when set
    benchmark: str = ""  # "tau2" for benchmark tasks: their scoring notes go in info
    notes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def capabilities(self) -> tuple[str, ...]:
        """The capabilities this task exercises, in canonical order."""
        caps = {c for r in self.requests for c in r.capabilities}
        if len(self.requests) > 1:
            caps.add("multi_step_completion")
        return tuple(c for c in CAPABILITIES if c in caps)

    @property
    def gold_calls(self) -> list[Call]:
        """Every write that should happen, in order."""
        return [r.gold for r in self.requests if r.gold is not None]


class Family(Protocol):
    """A task family's generator: the one signature every family module's ``generate`` has.

    Args:
        rng: The only source of randomness, seeded by the env from the episode's task seed;
            the same seed must give the same task.
        params: The spec's ``tasks.params`` over the family's registered defaults (every
            key the family reads is in its ``defaults``, already checked against ``bounds``
            and ``choices``).
        seed: The task seed itself, for the task id (``f"{family}-{seed}"``); draw nothing from it.

    Returns:
        The task: initial tables, the user, and the requests in order.
    """

    def __call__(self, rng: Random, params: Mapping[str, Any], seed: int = 0) -> Task: ...


@dataclass(frozen=True)
class FamilyInfo:
    """A registered task family: its generator and documented params with defaults."""

    name: str
    generate: Family
    defaults: Mapping[str, Any]
    help: Mapping[str, str]
    capability: str | None
    needs_tools: tuple[str, ...] = ()  # tools the family's gold solutions call
    by_id: Callable[[str, Mapping[str, Any]], Task] | None = None  # task ids that are not "<family>-<seed>"
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # numeric params: [lo, hi]
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # list params: allowed items
    # Family-specific rules between params: (key, what is wrong, how to fix it) per problem.
    check: Callable[[Mapping[str, Any]], list[tuple[str, str, str]]] | None = None

    def check_params(self, params: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        """Problems with param values, as (key, what is wrong, how to fix it)."""
        problems = []
        for key, (lo, hi) in self.bounds.items():
            value = params.get(key)
            if isinstance(value, (int, float)) and not lo <= value <= hi:
                problems.append((key, f"{value!r} is outside [{lo}, {hi}]", f"use a value in [{lo}, {hi}]"))
        for key, allowed in self.choices.items():
            value = params.get(key)
            if isinstance(value, list):
                if not value:
                    problems.append((key, "the list is empty", f"name at least one of {list(allowed)}"))
                for item in value:
                    if item not in allowed:
                        close = difflib.get_close_matches(str(item), allowed, n=1)
                        hint = f" Did you mean {close[0]!r}?" if close else ""
                        problems.append((key, f"unknown item {item!r}", f"use items of {list(allowed)}.{hint}"))
        lo_key, hi_key = "min_requests", "max_requests"
        if lo_key in params and hi_key in params and params[lo_key] > params[hi_key]:
            problems.append(
                (
                    lo_key,
                    f"min_requests {params[lo_key]} > max_requests {params[hi_key]}",
                    "make min_requests <= max_requests",
                )
            )
        if self.check is not None and not problems:
            problems += self.check(params)
        return problems


FAMILIES: dict[str, FamilyInfo] = {}


def register_family(
    name: str,
    generate: Family,
    defaults: Mapping[str, Any],
    help: Mapping[str, str],
    capability: str | None,
    needs_tools: tuple[str, ...] = (),
    by_id: Callable[[str, Mapping[str, Any]], Task] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    choices: Mapping[str, tuple[str, ...]] | None = None,
    check: Callable[[Mapping[str, Any]], list[tuple[str, str, str]]] | None = None,
) -> None:
    """Register a task family, so that a spec's ``tasks.family`` can name it.

    Args:
        name: The name specs use (``"precondition"``); registering it again replaces it.
        generate: The generator (:class:`Family`): ``generate(rng, params, seed) -> Task``.
        defaults: Every param the family reads, with its default; a spec's ``tasks.params``
            may set only these keys (an unknown key is a spec error with a did-you-mean).
        help: One line per param (its meaning and range), quoted by spec errors about it.
        capability: The capability its requests exercise (a name in
            :data:`trace_envs.capabilities.CAPABILITIES`), or None for a mixed target family.
        needs_tools: The tools its gold solutions call; a spec whose tool subset leaves one
            out is refused.
        by_id: Builds a task from a task id that is not ``"<family>-<seed>"`` (benchmark
            tasks named by their own ids); None: ids are seeds.
        bounds: ``[lo, hi]`` of numeric params, checked when a spec is loaded.
        choices: The allowed items of list params, checked likewise.
        check: Rules between params, after ``bounds`` and ``choices`` pass: returns
            ``(key, what is wrong, how to fix it)`` per problem.
    """
    FAMILIES[name] = FamilyInfo(
        name,
        generate,
        dict(defaults),
        dict(help),
        capability,
        tuple(needs_tools),
        by_id,
        dict(bounds or {}),
        dict(choices or {}),
        check,
    )


def get_family(name: str) -> FamilyInfo:
    """The family registered under ``name``, with a did-you-mean on failure."""
    try:
        return FAMILIES[name]
    except KeyError:
        close = difflib.get_close_matches(name, FAMILIES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown task family {name!r}.{hint} Known: {sorted(FAMILIES)}") from None
