"""Structured data reasoning: pick the right record, id or amount from JSON results.

Requests ask for "the cheapest available <product> with <option> <value>", "the most
expensive item" of an order, an order's total, or the cheapest price in stock. The
catalog is built so that a cheaper but unavailable (or non-matching) variant is a trap.
"""

from __future__ import annotations

from collections.abc import Mapping
from random import Random
from typing import Any

from trace_envs.tasks import requests as rq
from trace_envs.tasks.base import Task, register_family
from trace_envs.tasks.common import add_distractors, finish, start

NAME = "structured_data"
DEFAULTS = {
    "question_rate": 0.3,  # share of requests that are questions rather than writes
    "distractor_orders": 2,
    "distractor_users": 1,
    "variants_per_product": 8,  # more variants, more records to reason over
    "noise": 0.0,
}
HELP = {
    "question_rate": "probability a request is a question answered from tool results (0..1)",
    "distractor_orders": "extra orders of the user (0..10)",
    "distractor_users": "extra users with orders (0..10)",
    "variants_per_product": "variants per product in the catalog (4..12)",
    "noise": "probability of paraphrased user wording (0..1)",
}


def generate(rng: Random, params: Mapping[str, Any], seed: int = 0) -> Task:
    """One request whose right argument or answer must be computed from JSON records."""
    c = start(rng, params)
    add_distractors(c, params)
    roll = rng.random()
    if roll < params["question_rate"]:
        req = rq.question(c)
    elif roll < params["question_rate"] + (1 - params["question_rate"]) / 2:
        req = rq.return_items(c, allowed=True, pick="priciest")
    else:
        req = rq.swap_items(c, allowed=True, delivered=rng.random() < 0.5, pick="cheapest")
    return finish(c, NAME, seed, [req], params)


NEEDS_TOOLS = rq.needs_tools(("exchange", "modify_items", "return"))

register_family(
    NAME,
    generate,
    DEFAULTS,
    HELP,
    capability="structured_data_reasoning",
    needs_tools=NEEDS_TOOLS,
    bounds={
        "question_rate": (0, 1),
        "distractor_orders": (0, 10),
        "distractor_users": (0, 10),
        "variants_per_product": (4, 12),
        "noise": (0, 1),
    },
    choices={},
)
