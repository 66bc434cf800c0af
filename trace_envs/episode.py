"""The episode log: what happened so far, in the form users and rewards read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trace_envs.db import Database
from trace_envs.tasks.base import Call, Task


@dataclass(slots=True)
class WriteAttempt:
    """One call of a write tool, successful or not."""

    step: int
    call: Call
    ok: bool
    request: int | None  # index of the request it targets, if any
    exact: bool  # equals that request's gold call
    confirmed: bool  # the user said yes to this write before it ran
    authenticated: bool  # the user had been authenticated before it ran


@dataclass
class EpisodeLog:
    """Mutable per-episode state shared by the env, the user and the reward."""

    task: Task
    db: Database
    initial_db: Database
    step: int = 0
    auth_step: int | None = None
    reads: dict[str, int] = field(default_factory=dict)  # Call.key of successful reads -> first step
    writes: list[WriteAttempt] = field(default_factory=list)
    done_writes: set[str] = field(default_factory=set)
    confirmed: set[str] = field(default_factory=set)  # keys of desired writes the user said yes to
    format_errors: int = 0
    tool_errors: int = 0
    stated: list[bool] = field(default_factory=list)  # the user has stated request i
    resolved: list[bool] = field(default_factory=list)
    refused: list[bool] = field(default_factory=list)  # the agent refused request i
    answered: list[bool] = field(default_factory=list)
    # Closed without being completed: an allowed request the agent refused, or a question it
    # answered wrongly. The agent's first decision is final, so the user moves on either way
    # and its reaction does not tell the agent whether it was right.
    closed: list[bool] = field(default_factory=list)
    wrong_answers: int = 0
    handled_step: list[int | None] = field(default_factory=list)  # first write or refusal
    ended_by: str = ""
    last_user_text: str = ""
    agent_texts: list[str] = field(default_factory=list)  # messages the agent sent the user

    def __post_init__(self) -> None:
        n = len(self.task.requests)
        self.stated = [self.task.upfront or i == 0 for i in range(n)]
        self.resolved = [False] * n
        self.refused = [False] * n
        self.answered = [False] * n
        self.closed = [False] * n
        self.handled_step = [None] * n

    def current(self) -> int | None:
        """Index of the first open request (neither resolved nor closed), or None when none is left."""
        for i, (done, closed) in enumerate(zip(self.resolved, self.closed, strict=True)):
            if not (done or closed):
                return i
        return None

    def reads_before(self, request: int, step: int) -> list[str]:
        """Keys of the request's required reads missing before ``step``."""
        missing = []
        for call in self.task.requests[request].required_reads:
            at = self.reads.get(call.key)
            if at is None or at >= step:
                missing.append(call.key)
        return missing

    def request_for(self, call: Call) -> int | None:
        """The request a write call targets, matching ids with or without '#'."""
        args = call.arguments
        target = args.get("order_id") or args.get("user_id")
        if not isinstance(target, str):
            return None
        target = target.lstrip("#")
        for i, req in enumerate(self.task.requests):
            if req.desired is not None and req.desired.name == call.name and req.target.lstrip("#") == target:
                return i
        for i, req in enumerate(self.task.requests):
            if req.desired is not None and req.target.lstrip("#") == target:
                return i
        return None  # a record no request wants written (a question's order, say): an unrelated write

    def mark_handled(self, request: int) -> None:
        """Record the first time a request was acted on or refused."""
        if self.handled_step[request] is None:
            self.handled_step[request] = self.step

    def summary(self) -> dict[str, Any]:
        """Counters for debugging and ``info``."""
        return {"writes": len(self.writes), "reads": len(self.reads), "format_errors": self.format_errors}
