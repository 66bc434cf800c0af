"""Multi-step completion: finish every one of several requests in one conversation.

The user states all requests in the opening message and does not repeat them; the agent
must keep track and complete each one before saying goodbye.
"""

from __future__ import annotations

from collections.abc import Mapping
from random import Random
from typing import Any

from trace_envs.tasks.base import Task, register_family
from trace_envs.tasks.common import add_distractors, finish, pick_kind, start
from trace_envs.tasks.requests import KINDS, needs_tools

NAME = "multi_step"
DEFAULTS = {
    "min_requests": 2,
    "max_requests": 5,
    "distractor_orders": 1,
    "distractor_users": 0,
    "noise": 0.0,
    "kinds": ["cancel", "modify_address", "update_user_address", "exchange", "return"],
}
HELP = {
    "min_requests": "fewest requests per conversation (2..5)",
    "max_requests": "most requests per conversation (2..5)",
    "distractor_orders": "extra orders of the user (0..10)",
    "distractor_users": "extra users with orders (0..10)",
    "noise": "probability of paraphrased user wording (0..1)",
    "kinds": "request kinds to draw from (update_user_address is used at most once)",
}


def generate(rng: Random, params: Mapping[str, Any], seed: int = 0) -> Task:
    """2 to 5 allowed requests, all stated up front."""
    c = start(rng, params)
    add_distractors(c, params)
    n = rng.randint(int(params["min_requests"]), int(params["max_requests"]))
    kinds = list(params["kinds"])
    requests = []
    for _ in range(n):
        kind = pick_kind(rng, kinds)
        if kind == "update_user_address":
            kinds.remove(kind)  # two default-address changes would overwrite each other
        requests.append(KINDS[kind](c, allowed=True))
    return finish(c, NAME, seed, requests, params, upfront=True)


NEEDS_TOOLS = needs_tools(DEFAULTS["kinds"])  # the kinds it draws unless a spec narrows them


def check(params: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Every conversation has 2+ requests, and update_user_address fills at most one of them."""
    kinds = params.get("kinds", DEFAULTS["kinds"])
    if isinstance(kinds, list) and kinds and set(kinds) <= {"update_user_address"}:
        return [
            (
                "kinds",
                "update_user_address alone cannot fill 2 or more requests (it is used at most once)",
                f"add another kind, e.g. {[*kinds, 'cancel']}",
            )
        ]
    return []


register_family(
    NAME,
    generate,
    DEFAULTS,
    HELP,
    capability="multi_step_completion",
    needs_tools=NEEDS_TOOLS,
    bounds={
        "min_requests": (2, 5),
        "max_requests": (2, 5),
        "distractor_orders": (0, 10),
        "distractor_users": (0, 10),
        "noise": (0, 1),
    },
    choices={"kinds": tuple(KINDS)},
    check=check,
)
