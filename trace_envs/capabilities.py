"""The capability registry: one record per capability the built-in envs train and annotate.

Everything that is keyed by a capability name reads it from here: the canonical order
(:data:`CAPABILITIES`, re-exported as ``trace_envs.CAPABILITIES``), the env that isolates
each capability (evaluation, bootstrapping, synthesis), the end-of-episode annotation
fields that carry its evidence, when its typical mistake shows, whether the agent
exercised it at all (analysis), and the description that routers and judges read.

>>> from trace_envs.capabilities import CAPABILITIES, REGISTRY, get
>>> get("tool_calling_precision").env_id
'trace/tool-calling-v0'
>>> [c.name for c in REGISTRY] == list(CAPABILITIES)
True

The predicates read the annotations that :func:`trace_envs.reward.annotate` writes into an
episode's last ``info`` (and that ``trace_agents`` stores as ``record["annotations"]``).
Each reads only its own capability's fields. A missing field (an episode recorded before
the env annotated it) counts as exercised. The spec schema's ``capability`` enum lists the
same names plus ``target`` (a test keeps the two in step). This module is pure data: it
imports nothing from the rest of ``trace_envs``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Annotations = Mapping[str, Any]


@dataclass(frozen=True)
class Capability:
    """One capability: what it means, where it is isolated and how the annotations show it."""

    name: str  # snake_case, as in specs, annotations and deficit profiles
    description: str  # what it means, for routers (label scoring) and judges
    env_id: str  # the built-in env that isolates it: where its failure profile is read
    evidence: tuple[str, ...]  # annotation fields quoted as evidence when labelling it
    mistake: Callable[[Annotations], bool]  # its typical mistake shows in these annotations
    exercised: Callable[[Annotations], bool]  # the agent did something that could show it


REGISTRY: tuple[Capability, ...] = (
    Capability(
        name="precondition_verification",
        description="checking the facts an action depends on (order status, identity, policy rules) before "
        "acting, and refusing when a rule forbids it",
        env_id="trace/precondition-v0",
        evidence=("preconditions_checked", "missing_reads", "violating_writes"),
        mistake=lambda a: not a["preconditions_checked"],
        exercised=lambda a: a.get("requests_handled", 1) > 0,
    ),
    Capability(
        name="structured_data_reasoning",
        description="reading the right record and field out of nested tool results: picking the item, price, "
        "option or payment method the user means",
        env_id="trace/structured-data-v0",
        evidence=("record_choice_correct", "wrong_records", "wrong_answers"),
        mistake=lambda a: a["record_choice_correct"] is False,
        exercised=lambda a: a["record_choice_correct"] is not None,
    ),
    Capability(
        name="tool_calling_precision",
        description="calling tools with exactly the right names, argument names and value formats",
        env_id="trace/tool-calling-v0",
        evidence=("args_exact", "imprecise_calls"),
        mistake=lambda a: not a["args_exact"],
        exercised=lambda a: a.get("request_writes", 1) > 0 or a.get("imprecise_calls", 0) > 0,
    ),
    Capability(
        name="multi_step_completion",
        description="finishing every request of a multi-part task instead of stopping after the first",
        env_id="trace/multi-step-v0",
        evidence=("requests_unaddressed", "requests_completed", "requests_total"),
        mistake=lambda a: a.get("requests_unaddressed", a["requests_total"] - a["requests_completed"]) > 0,
        exercised=lambda a: True,  # stopping early is this capability's own mistake
    ),
)

CAPABILITIES: tuple[str, ...] = tuple(c.name for c in REGISTRY)
BY_NAME: Mapping[str, Capability] = {c.name: c for c in REGISTRY}


def get(name: str) -> Capability:
    """The record of capability ``name``; a ``KeyError`` that lists the known names otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown capability {name!r}; known: {list(CAPABILITIES)}") from None


__all__ = ["BY_NAME", "CAPABILITIES", "REGISTRY", "Capability", "get"]
