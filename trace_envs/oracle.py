"""OraclePolicy: solves every task from its gold, or makes known mistakes on purpose.

With ``deficits={capability: p}`` the oracle makes that capability's typical mistake
with probability ``p`` wherever the task exercises the capability:

- ``precondition_verification``: skip the deciding reads and act, even when policy
  forbids the request;
- ``structured_data_reasoning``: pick a plausible wrong record (or state a wrong amount);
- ``tool_calling_precision``: call with a wrong argument format or value;
- ``multi_step_completion``: stop after the first request.

Mistakes are drawn from ``Random(f"{seed}:{task_id}")``, so an episode's mistakes do not
depend on which other episodes ran. Demonstrations with known deficits give the
bootstrapped base agent weaknesses that later analysis must recover.
"""

from __future__ import annotations

from collections.abc import Mapping
from random import Random
from typing import Any

from trace_envs.actions import say, tool_call
from trace_envs.tasks.base import CAPABILITIES, Call, Task

PRE, DATA, TOOLS, MULTI = CAPABILITIES
_WRITES = frozenset(
    {
        "cancel_pending_order",
        "modify_pending_order_address",
        "modify_pending_order_items",
        "modify_pending_order_payment",
        "modify_user_address",
        "return_delivered_order_items",
        "exchange_delivered_order_items",
    }
)

ASK_IDENTITY = (
    "I'd be happy to help. First, I need to verify your identity: "
    "please tell me your email address, or your name and zip code."
)
GOODBYE = "Thank you for contacting us. Have a great day, goodbye!"


def _call(c: Call) -> str:
    return tool_call(c.name, **c.arguments)


class OraclePolicy:
    """A scripted agent built from the task's gold; optionally with capability deficits."""

    def __init__(self, deficits: Mapping[str, float] | None = None, seed: int = 0) -> None:
        deficits = dict(deficits or {})
        for cap, p in deficits.items():
            if cap not in CAPABILITIES:
                raise ValueError(f"unknown capability {cap!r} in deficits; expected one of {list(CAPABILITIES)}")
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"deficit probability for {cap!r} must be in [0, 1], got {p!r}")
        self.deficits = {c: float(deficits.get(c, 0.0)) for c in CAPABILITIES}
        self.seed = seed
        self.plan: list[str] = []
        self.mistakes: dict[str, int] = {}
        self._next = 0

    def _roll(self, rng: Random, cap: str) -> bool:
        # Always draw, so one deficit's rate does not shift the others' draws.
        hit = rng.random() < self.deficits[cap]
        if hit:
            self.mistakes[cap] = self.mistakes.get(cap, 0) + 1
        return hit

    def reset(self, env: Any) -> None:
        """Plan the episode that ``env`` (already reset) is about to run."""
        task = getattr(env, "unwrapped", env).task
        if task is None:
            raise RuntimeError("reset the env before resetting the oracle")
        self.plan = self.make_plan(task)
        self._next = 0

    @staticmethod
    def _authenticate(task: Task) -> list[str]:
        u = task.user
        if not u.user_id:
            return []
        if u.auth == "email":
            return [tool_call("find_user_id_by_email", email=u.email)]
        return [tool_call("find_user_id_by_name_zip", first_name=u.first_name, last_name=u.last_name, zip=u.zip)]

    def _benchmark_plan(self, task: Task) -> list[str]:
        """Follow a benchmark task's gold actions through the conversation."""
        plan = [say(ASK_IDENTITY), *self._authenticate(task)]
        if task.communicate:
            plan.append(say("Here is the information you asked for: " + "; ".join(task.communicate) + "."))
        proposals = {r.desired.key: r.describe for r in task.requests if r.desired is not None}
        for call in task.gold_actions:
            if call.key in proposals:
                plan += [
                    say(f"To confirm, I will {proposals[call.key]}. Shall I proceed?"),
                    _call(call),
                    say("It's done. Is there anything else?"),
                ]
            elif call.name not in _WRITES:  # a gold write the tools refuse is not replayed
                plan.append(_call(call))
        plan.append(say(GOODBYE))
        return plan

    def make_plan(self, task: Task) -> list[str]:
        """The full list of actions for ``task``."""
        rng = Random(f"{self.seed}:{task.task_id}")
        self.mistakes = {}
        if task.benchmark:
            return self._benchmark_plan(task)
        plan = [say(ASK_IDENTITY), *self._authenticate(task)]
        stop_early = len(task.requests) > 1 and self._roll(rng, MULTI)
        listed = False  # product ids the conversation has not shown come from list_all_product_types
        for i, req in enumerate(task.requests):
            if stop_early and i == 1:
                break
            if (
                not listed
                and req.answer is not None
                and any(c.name == "get_product_details" for c in req.required_reads)
            ):
                plan.append(tool_call("list_all_product_types"))
                listed = True
            skip = PRE in req.capabilities and self._roll(rng, PRE)
            wrong_record = DATA in req.capabilities and self._roll(rng, DATA) and req.wrong_record is not None
            wrong_format = TOOLS in req.capabilities and self._roll(rng, TOOLS) and req.wrong_format is not None
            if req.answer is not None:
                plan += [_call(c) for c in req.required_reads]
                value = req.wrong_record if wrong_record else req.answer
                plan.append(say(f"{req.describe.replace(req.answer, str(value))} Anything else I can check?"))
                continue
            if not skip:
                plan += [_call(c) for c in req.required_reads]
            if req.refuse and not skip:
                plan.append(say(f"I'm sorry, but I cannot {req.describe}: {req.refusal_reason}."))
                continue
            call = req.desired
            if wrong_record:
                call = req.wrong_record
            if wrong_format:
                call = req.wrong_format
            plan.append(say(f"To confirm, I will {req.describe}. Shall I proceed?"))
            plan.append(_call(call))
            plan.append(say("It's done. Is there anything else?"))
        plan.append(say(GOODBYE))
        return plan

    def act(self, obs: str, info: Mapping[str, Any] | None = None) -> str:
        """The next action of the plan (a goodbye once the plan is spent)."""
        if self._next < len(self.plan):
            self._next += 1
            return self.plan[self._next - 1]
        return say(GOODBYE)
