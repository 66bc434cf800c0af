"""Trivial policies: public baselines that show no competence and so must earn (almost) nothing.

Each has the :class:`~trace_envs.OraclePolicy` interface (``reset(env)`` per episode, then
``act(obs, info) -> str``). A reward that pays any of them more than a little pays for
something other than doing the task, which an RL algorithm will find. On every built-in
synthetic env each scores at most 0.05 mean return (``tests/envs/test_reward.py``, and the
trivial rows of ``benchmarks/results/envs.md``); :func:`trace_envs.testing.check_text_env`
checks the same bound on users' own specs.

- ``goodbye``: says goodbye on its first turn;
- ``empty``: sends empty text every turn;
- ``refuse_all``: asks who the customer is, authenticates them, then refuses every request;
- ``transfer``: transfers to a human agent at once;
- ``random_tool``: a random, schema-valid tool call every turn (random values of the right types).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from random import Random
from typing import Any

from trace_envs.actions import say, tool_call
from trace_envs.admissible import _EMAIL, _NAME_ZIP  # how customers give their identity: one place

__all__ = ["TrivialPolicy", "trivial_policies"]

ASK_IDENTITY = "Hello! To get started, could you tell me your email address, or your name and zip code?"
REFUSAL = "I'm sorry, but I cannot help with that request."


class TrivialPolicy:
    """Base class: per-episode state and the OraclePolicy interface."""

    name = "trivial"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.turn = 0
        self.rng = Random(seed)

    def reset(self, env: Any) -> None:
        """Start an episode on ``env`` (already reset)."""
        task = getattr(getattr(env, "unwrapped", env), "task", None)
        self.turn = 0
        self.rng = Random(f"{self.seed}:{getattr(task, 'task_id', '')}")

    def act(self, obs: str, info: Mapping[str, Any] | None = None) -> str:
        """The next action."""
        self.turn += 1
        return self._act(obs, info or {})

    def _act(self, obs: str, info: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"


class Goodbye(TrivialPolicy):
    """Says goodbye on its first turn."""

    name = "goodbye"

    def _act(self, obs: str, info: Mapping[str, Any]) -> str:
        return say("Thank you for contacting us. Goodbye!")


class Empty(TrivialPolicy):
    """Sends empty text every turn."""

    name = "empty"

    def _act(self, obs: str, info: Mapping[str, Any]) -> str:
        return ""


class RefuseAll(TrivialPolicy):
    """Authenticates the customer from what they say, then refuses every request without a look."""

    name = "refuse_all"

    def _act(self, obs: str, info: Mapping[str, Any]) -> str:
        if self.turn == 1:
            return say(ASK_IDENTITY)
        if self.turn == 2:
            said = " ".join(m.get("content") or "" for m in info.get("messages", ()) if m.get("role") == "user")
            if m := _EMAIL.search(said):
                return tool_call("find_user_id_by_email", email=m.group(0))
            if m := _NAME_ZIP.search(said):
                return tool_call(
                    "find_user_id_by_name_zip", first_name=m.group(1), last_name=m.group(2), zip=m.group(3)
                )
        return say(REFUSAL)


class Transfer(TrivialPolicy):
    """Transfers to a human agent at once."""

    name = "transfer"

    def _act(self, obs: str, info: Mapping[str, Any]) -> str:
        return tool_call("transfer_to_human_agents", summary="The customer needs help.")


class RandomTool(TrivialPolicy):
    """A random, schema-valid call of a random tool every turn."""

    name = "random_tool"

    def _value(self, schema: Mapping[str, Any]) -> Any:
        rng = self.rng
        if "enum" in schema:
            return rng.choice(schema["enum"])
        kind = schema.get("type", "string")
        if kind == "array":
            return [self._value(schema.get("items", {})) for _ in range(rng.randint(1, 2))]
        if kind == "integer":
            return rng.randint(0, 100)
        if kind == "number":
            return round(rng.uniform(0, 1000), 2)
        if kind == "boolean":
            return rng.random() < 0.5
        return rng.choice(["#W", "", "item ", "user_"]) + str(rng.randint(0, 9_999_999))

    def _act(self, obs: str, info: Mapping[str, Any]) -> str:
        tools: Sequence[Mapping[str, Any]] = info.get("tools") or ()
        if not tools:
            return say("Goodbye!")
        fn = self.rng.choice(list(tools))["function"]
        params = fn.get("parameters", {})
        props = params.get("properties", {})
        return tool_call(fn["name"], **{k: self._value(props[k]) for k in props})


def trivial_policies(seed: int = 0) -> dict[str, TrivialPolicy]:
    """The trivial baselines by name: ``goodbye``, ``empty``, ``refuse_all``, ``transfer``, ``random_tool``."""
    return {cls.name: cls(seed) for cls in (Goodbye, Empty, RefuseAll, Transfer, RandomTool)}
