"""Customer service: the mixed target task that needs one to four capabilities.

A conversation holds 1 to ``max_requests`` requests of every kind: some forbidden by
policy, some worded loosely, some needing a record chosen under constraints, some
questions. Every task records which capabilities it exercises.
"""

from __future__ import annotations

from collections.abc import Mapping
from random import Random
from typing import Any

from trace_envs.tasks import requests as rq
from trace_envs.tasks.base import Task, register_family
from trace_envs.tasks.common import add_distractors, finish, start

NAME = "customer_service"
DEFAULTS = {
    "min_requests": 1,
    "max_requests": 3,
    "refuse_rate": 0.25,  # requests that policy forbids
    "precise_rate": 0.35,  # requests worded loosely (tool-calling precision)
    "pick_rate": 0.35,  # requests that need a record picked under constraints
    "distractor_orders": 2,
    "distractor_users": 1,
    "noise": 0.0,
}
HELP = {
    "min_requests": "fewest requests per conversation (1..5)",
    "max_requests": "most requests per conversation (1..5)",
    "refuse_rate": "probability a write must be refused (0..1)",
    "precise_rate": "probability a request is worded loosely (0..1)",
    "pick_rate": "probability a request needs a record picked from JSON (0..1)",
    "distractor_orders": "extra orders of the user (0..10)",
    "distractor_users": "extra users with orders (0..10)",
    "noise": "probability of paraphrased user wording (0..1)",
}

_PLAIN = ["cancel", "modify_address", "exchange", "modify_items", "return"]
_LOOSE = ["cancel", "modify_address", "return"]


def _one(c, rng: Random, params: Mapping[str, Any]):
    if rng.random() < params["pick_rate"]:
        c.precise = False
        return rng.choice(
            [
                rq.question,
                lambda c: rq.return_items(c, allowed=True, pick="priciest"),
                lambda c: rq.swap_items(c, allowed=True, delivered=rng.random() < 0.5, pick="cheapest"),
            ]
        )(c)
    c.precise = rng.random() < params["precise_rate"]
    allowed = rng.random() >= params["refuse_rate"]
    if c.precise:
        return rq.KINDS[rng.choice(_LOOSE)](c, allowed=allowed)
    return rq.KINDS[rng.choice(_PLAIN)](c, allowed=allowed)


def generate(rng: Random, params: Mapping[str, Any], seed: int = 0) -> Task:
    """A mixed conversation; several requests are stated up front."""
    c = start(rng, params)
    add_distractors(c, params)
    n = rng.randint(int(params["min_requests"]), int(params["max_requests"]))
    requests = [_one(c, rng, params) for _ in range(n)]
    return finish(c, NAME, seed, requests, params, upfront=n > 1)


NEEDS_TOOLS = rq.needs_tools(("cancel", "modify_address", "exchange", "modify_items", "return"))

register_family(
    NAME,
    generate,
    DEFAULTS,
    HELP,
    capability=None,
    needs_tools=NEEDS_TOOLS,
    bounds={
        "min_requests": (1, 5),
        "max_requests": (1, 5),
        "refuse_rate": (0, 1),
        "precise_rate": (0, 1),
        "pick_rate": (0, 1),
        "distractor_orders": (0, 10),
        "distractor_users": (0, 10),
        "noise": (0, 1),
    },
    choices={},
)
