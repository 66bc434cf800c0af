"""Helpers shared by the task families: set up the user, distractors, and finish a Task."""

from __future__ import annotations

from collections.abc import Mapping
from random import Random
from typing import Any

from trace_envs.domains.retail.data import STATUSES, RetailBuilder
from trace_envs.tasks.base import Request, Task, UserProfile
from trace_envs.tasks.requests import Ctx

OPENERS = ("Hi!", "Hello.", "Hi there,", "Good morning.")


def start(rng: Random, params: Mapping[str, Any], precise: bool = False) -> Ctx:
    """A builder with the episode's user, ready for request generators."""
    b = RetailBuilder(rng, variants_per_product=int(params.get("variants_per_product", 8)))
    user = b.user()
    return Ctx(rng=rng, b=b, user=user, noise=float(params.get("noise", 0.0)), precise=precise)


def add_distractors(c: Ctx, params: Mapping[str, Any]) -> None:
    """Extra orders of the user and other users, so the right record must be picked."""
    for _ in range(int(params.get("distractor_orders", 2))):
        c.b.order(c.user, c.rng.choice(STATUSES), n_items=c.rng.randint(1, 3))
    for _ in range(int(params.get("distractor_users", 1))):
        other = c.b.user()
        c.b.order(other, c.rng.choice(STATUSES))


def finish(
    c: Ctx, family: str, seed: int, requests: list[Request], params: Mapping[str, Any], upfront: bool = False
) -> Task:
    """Shuffle the user's order list and wrap everything in a Task.

    Args:
        c: The episode's context from :func:`start`; its rng also draws the user's way of
            authenticating and the opening's greeting.
        family: The family's name, in the task id (``f"{family}-{seed}"``) and ``source``.
        seed: The task seed, for the task id only.
        requests: The user's requests, in order; the first is stated in the opening.
        params: The family's params, stored on the task.
        upfront: State every request in the opening (when there are several); otherwise the
            user brings up the others one at a time.
    """
    c.rng.shuffle(c.user["orders"])
    u = c.user
    profile = UserProfile(
        user_id=u["user_id"],
        first_name=u["name"]["first_name"],
        last_name=u["name"]["last_name"],
        zip=u["address"]["zip"],
        email=u["email"],
        auth=c.rng.choice(["email", "name_zip"]),
    )
    hello = c.rng.choice(OPENERS)
    if upfront and len(requests) > 1:
        listed = " ".join(f"({i}) {r.text}" for i, r in enumerate(requests, 1))
        opening = f"{hello} I need help with {len(requests)} things. {listed}"
    else:
        opening = f"{hello} {requests[0].text}"
    return Task(
        task_id=f"{family}-{seed}",
        family=family,
        tables=c.b.tables(),
        user=profile,
        requests=requests,
        upfront=upfront,
        opening=opening,
        params=dict(params),
        source={"family": family, "seed": seed},
    )


def pick_kind(rng: Random, kinds: list[str]) -> str:
    """One request kind, uniformly."""
    return rng.choice(list(kinds))
