"""Tool-calling precision: turn loose user wording into the exactly right call.

Users drop the '#' of order ids, paraphrase the cancel reason, list several items at
once and dictate addresses in one line. The agent must emit the exact tool name, enum
strings, id formats, list arguments and string types.
"""

from __future__ import annotations

from collections.abc import Mapping
from random import Random
from typing import Any

from trace_envs.tasks.base import Task, register_family
from trace_envs.tasks.common import add_distractors, finish, pick_kind, start
from trace_envs.tasks.requests import KINDS, needs_tools

NAME = "tool_calling"
DEFAULTS = {
    "distractor_orders": 1,
    "distractor_users": 1,
    "noise": 0.0,
    "kinds": ["cancel", "modify_address", "update_user_address", "return"],
}
HELP = {
    "distractor_orders": "extra orders of the user (0..10)",
    "distractor_users": "extra users with orders (0..10)",
    "noise": "probability of paraphrased user wording (0..1)",
    "kinds": "request kinds to draw from",
}


def generate(rng: Random, params: Mapping[str, Any], seed: int = 0) -> Task:
    """One allowed write, worded loosely."""
    c = start(rng, params, precise=True)
    add_distractors(c, params)
    req = KINDS[pick_kind(rng, params["kinds"])](c, allowed=True)
    return finish(c, NAME, seed, [req], params)


NEEDS_TOOLS = needs_tools(DEFAULTS["kinds"])  # the kinds it draws unless a spec narrows them

register_family(
    NAME,
    generate,
    DEFAULTS,
    HELP,
    capability="tool_calling_precision",
    needs_tools=NEEDS_TOOLS,
    bounds={"distractor_orders": (0, 10), "distractor_users": (0, 10), "noise": (0, 1)},
    choices={"kinds": tuple(KINDS)},
)
