"""Precondition verification: read what decides a write before acting, or refuse.

Each task asks for one write (cancel, address change, exchange, item change, return).
With probability ``refuse_rate`` the world makes it forbidden: wrong order status,
someone else's order, or an unavailable variant. The agent must read the order (and the
product, for swaps) before it proposes the write or explains the refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from random import Random
from typing import Any

from trace_envs.tasks.base import Task, register_family
from trace_envs.tasks.common import add_distractors, finish, pick_kind, start
from trace_envs.tasks.requests import KINDS, needs_tools

NAME = "precondition"
DEFAULTS = {
    "refuse_rate": 0.5,  # share of requests that policy forbids
    "n_requests": 1,  # requests per conversation, stated one at a time
    "distractor_orders": 2,  # other orders of the same user
    "distractor_users": 1,  # other users, each with an order
    "noise": 0.0,  # chance of a paraphrased user wording
    "kinds": ["cancel", "modify_address", "exchange", "modify_items", "return"],
}
HELP = {k: "" for k in DEFAULTS} | {
    "refuse_rate": "probability that a request must be refused (0..1)",
    "n_requests": "requests per conversation (1..5)",
    "distractor_orders": "extra orders of the user (0..10)",
    "distractor_users": "extra users with orders (0..10)",
    "noise": "probability of paraphrased user wording (0..1)",
    "kinds": "request kinds to draw from",
}


def generate(rng: Random, params: Mapping[str, Any], seed: int = 0) -> Task:
    """A task with ``n_requests`` writes, each forbidden with probability ``refuse_rate``."""
    c = start(rng, params)
    add_distractors(c, params)
    requests = [
        KINDS[pick_kind(rng, params["kinds"])](c, allowed=rng.random() >= params["refuse_rate"])
        for _ in range(int(params["n_requests"]))
    ]
    return finish(c, NAME, seed, requests, params)


NEEDS_TOOLS = needs_tools(DEFAULTS["kinds"])  # the kinds it draws unless a spec narrows them

register_family(
    NAME,
    generate,
    DEFAULTS,
    HELP,
    capability="precondition_verification",
    needs_tools=NEEDS_TOOLS,
    bounds={
        "refuse_rate": (0, 1),
        "n_requests": (1, 5),
        "distractor_orders": (0, 10),
        "distractor_users": (0, 10),
        "noise": (0, 1),
    },
    choices={"kinds": tuple(KINDS)},
)
