"""The simulated customer.

:class:`ScriptedUser` is deterministic and cheap. It reads the agent's message for a few
cues (a question about identity or details, a proposal awaiting confirmation, a refusal,
an answer, a goodbye) and replies from the task's goal:

- it reveals its identity and request details when asked;
- it says "yes" only to a proposal that names every value of a write it wants, and "no"
  to any other proposed write;
- it moves to its next request when the current one is resolved (a gold write done, a
  forbidden request refused, a question answered) and ends when all are, or when the
  agent says goodbye;
- the agent's first decision on a request is final: an allowed request it refuses, or a
  question it answers wrongly (or with several amounts), is closed undone and the user
  moves on just as after a right decision, so its reaction never tells the agent whether
  it was right.

Any other user (an LLM, a human) implements the :class:`User` protocol.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from trace_envs.episode import EpisodeLog
from trace_envs.reward import said_all
from trace_envs.tasks.base import Call, Task

STOP = "###STOP###"

# Each cue is a set of literal keywords plus, where word boundaries matter, a regex that
# confirms a keyword hit. Substring tests are C-speed; the regex runs only on a hit. Both
# run on the lower-cased message (re.IGNORECASE is about 3x slower in Python's re).
_CUES: dict[str, tuple[tuple[str, ...], re.Pattern | None]] = {
    "identity": (
        (
            "email",
            "e-mail",
            "zip",
            "your name",
            "your full name",
            "identif",
            "verif",
            "authenticat",
            "locate your account",
        ),
        None,
    ),
    "confirm": (
        (
            "confirm",
            "proceed",
            "shall i",
            "should i",
            "go ahead",
            "would you like me",
            "do you want me",
            "ok to",
            "okay to",
            "is that correct",
            "is this correct",
        ),
        re.compile(
            r"\b(?:confirm|proceed|shall i|should i|go ahead|would you like me|do you want me"
            r"|ok to|okay to|is that correct|is this correct)\b"
        ),
    ),
    "write": (
        ("cancel", "return", "exchange", "modify", "change", "update", "ship", "refund", "replace"),
        re.compile(r"\b(?:cancel|return|exchange|modify|change|update|ship|refund|replace)"),
    ),
    "refusal": (
        (
            "cannot",
            "can't",
            "can not",
            "unable",
            "not able",
            "not possible",
            "not allowed",
            "not eligible",
            "must decline",
            "won't be able",
        ),
        re.compile(
            r"\b(?:cannot|can't|can not|unable|not able|not possible|not allowed|not eligible"
            r"|must decline|won't be able)\b"
        ),
    ),
    "farewell": (
        ("bye", "have a "),
        re.compile(r"\b(?:goodbye|good bye|bye|have a (?:great|nice|good|wonderful) day)\b"),
    ),
    "order_q": (("order id", "order number", "which order"), None),
}


def proposes(found: frozenset[str]) -> bool:
    """Whether a message with these cues proposes a write for the user to confirm."""
    return "confirm" in found and "write" in found


def cues(lower: str) -> frozenset[str]:
    """The names of the cues present in a lower-cased agent message."""
    found = set()
    for name, (keywords, pattern) in _CUES.items():
        if any(k in lower for k in keywords) and (pattern is None or pattern.search(lower)):
            found.add(name)
    return frozenset(found)


# Amounts: "$54", "54.20", "$1,204.5"; bare integers are ids, not answers. One pass over each
# digit run (an alternation that retried "\d[\d,]*\.\d+" at every digit was quadratic).
_NUMBER = re.compile(r"(\$\s?)?(\d[\d,]*)(\.\d+)?")


@runtime_checkable
class User(Protocol):
    """Anything that can play the customer."""

    def opening(self, log: EpisodeLog) -> str:
        """The first user message of the episode."""

    def respond(self, text: str, log: EpisodeLog) -> tuple[str, bool]:
        """Reply to an agent message; True as the second item ends the conversation."""


def salient_values(call: Call) -> tuple[str, ...]:
    """The values a proposal must name for the user to recognise the write (lower case)."""
    out: list[str] = []
    for key, value in call.arguments.items():
        if key == "user_id":
            continue  # agents rarely read ids of the customer back to them
        values = value if isinstance(value, list) else [value]
        out.extend(str(v).lower() for v in values if str(v))
    return tuple(out)


def _numbers(text: str) -> list[float]:
    out = []
    for dollar, whole, frac in _NUMBER.findall(text):
        if not (dollar or frac):
            continue  # a bare integer: an id
        try:
            out.append(float(whole.replace(",", "") + frac))
        except ValueError:
            pass
    return out


class ScriptedUser:
    """A deterministic customer driven by the task's requests."""

    def __init__(self, task: Task) -> None:
        self.task = task
        # Precompute what each request's proposal must mention.
        self._salient = [salient_values(r.desired) if r.desired else () for r in task.requests]
        self._asked = 0  # identity questions so far

    def identity(self) -> str:
        """How the user identifies: email or name plus zip, whichever it knows.

        A user who knows both (``fallback``) adds name and zip when asked a second time,
        as a customer would after their email was not found.
        """
        u = self.task.user
        self._asked += 1
        name_zip = f"I'm {u.first_name} {u.last_name}, zip code {u.zip}."
        if u.auth == "email":
            return f"My email is {u.email}." + (f" Or try: {name_zip}" if u.fallback and self._asked > 1 else "")
        return name_zip

    def opening(self, log: EpisodeLog) -> str:
        return self.task.opening

    # -- resolution -------------------------------------------------------------------
    def _update(self, text: str, lower: str, found: frozenset[str], log: EpisodeLog) -> None:
        """Mark the requests this message (or earlier writes) resolved or closed."""
        reqs = self.task.requests
        current = log.current()
        # A message that proposes a write is a proposal, even if it hedges ("I cannot promise ...").
        refusal = "refusal" in found and not proposes(found)
        numbers: list[float] | None = None
        for i, req in enumerate(reqs):
            if log.resolved[i] or not log.stated[i]:
                continue
            if req.answer is not None:
                if log.closed[i]:
                    continue  # answered wrongly before: the first answer is final
                numbers = _numbers(text) if numbers is None else numbers
                want = float(req.answer)
                if numbers and all(abs(x - want) < 0.005 for x in numbers):  # the answer, and nothing else
                    log.answered[i] = log.resolved[i] = True
                    log.mark_handled(i)
                elif numbers and i == current:
                    log.wrong_answers += 1
                    log.closed[i] = True  # no guessing, no list of candidates: the user moves on
                    log.mark_handled(i)  # answered, wrongly: a reasoning slip, not a skipped request
                continue
            if req.gold is not None and req.gold.key in log.done_writes:
                log.resolved[i] = True
                continue
            if log.closed[i]:
                continue
            if req.kind == "inform":
                if said_all(log, req.expects):
                    log.resolved[i] = True
                    log.mark_handled(i)
                continue
            if req.kind == "chat":
                continue  # nothing to resolve: the agent closes the conversation
            about_it = i == current or req.target.lower().lstrip("#") in lower
            if refusal and about_it:
                if req.refuse:
                    log.refused[i] = log.resolved[i] = True
                    log.mark_handled(i)
                elif i == current:  # an allowed request refused: closed, not done
                    log.closed[i] = True
                    log.mark_handled(i)

    def observe(self, text: str, log: EpisodeLog) -> None:
        """Track what an agent message resolved, without replying (another user replies)."""
        lower = text.lower()
        self._update(text, lower, cues(lower), log)

    def accept(self, text: str, log: EpisodeLog) -> None:
        """Another user said yes to ``text``: record the write it proposed as confirmed."""
        lower = text.lower()
        found = cues(lower)
        if proposes(found):
            self._confirm(lower, log)

    def brief(self) -> str:
        """The customer's goal and identity, as instructions for a learned or LLM user."""
        t = self.task
        u = t.user
        who = (
            f"Your email is {u.email}." if u.auth == "email" else f"You are {u.first_name} {u.last_name}, zip {u.zip}."
        )
        goals = " ".join(f"({i}) {r.text}" for i, r in enumerate(t.requests, 1) if r.text) or t.opening
        return (
            f"You are a customer talking to a store's support agent. {who} What you want: {goals} "
            f"Answer the agent's questions, say yes only to actions you asked for, and write {STOP} when done."
        )

    # -- the reply --------------------------------------------------------------------
    def respond(self, text: str, log: EpisodeLog) -> tuple[str, bool]:
        lower = text.lower()
        found = cues(lower)
        before = log.current()
        self._update(text, lower, found, log)
        now = log.current()
        if now is None:
            return f"Thanks, that's everything I needed. {STOP}", True
        if "farewell" in found:
            return f"Okay, bye. {STOP}", True
        parts: list[str] = []
        if now != before and not log.stated[now]:
            log.stated[now] = True
            return f"Thank you. One more thing: {self.task.requests[now].text}", False
        if "identity" in found:
            parts.append(self.identity())
        if proposes(found):
            parts.append(self._confirm(lower, log))
        if "order_q" in found:
            order_id = self.task.requests[now].facts.get("order_id")
            if order_id:
                parts.append(f"The order id is {order_id}.")
        if not parts:
            if self.task.upfront:
                parts.append("Please go ahead with what I asked for.")
            else:
                parts.append(f"Can you help me with this? {self.task.requests[now].text}")
        return " ".join(parts), False

    def _confirm(self, lower: str, log: EpisodeLog) -> str:
        for i, req in enumerate(self.task.requests):
            if log.resolved[i] or not log.stated[i] or req.desired is None:
                continue
            if all(v in lower for v in self._salient[i]):
                log.confirmed.add(req.desired.key)
                return "Yes, please go ahead."
        return "No, that's not what I asked for."


UserModel = Callable[[list[dict[str, str]]], str]
"""Plays the customer: OpenAI-format messages seen from the user's side -> the reply text.

The system message holds the customer's brief; the agent's messages arrive as ``user``
turns and the customer's own earlier lines as ``assistant`` turns. Wrap a local HF chat
model or an OpenAI-compatible endpoint in such a function.
"""

_YES = re.compile(r"^\W*(?:yes|yeah|yep|sure|ok(?:ay)?|please do|go ahead)\b")


class ExternalUser:
    """A customer whose lines come from outside: a :data:`UserModel`, or a learner's text.

    The scripted user still does the bookkeeping (which requests the agent resolved, which
    proposals were accepted), so rewards and annotations mean the same as with the
    scripted customer. A reply containing ``###STOP###`` ends the conversation. A model
    that fails or returns a non-string counts in ``user_errors`` and the customer asks
    the agent to repeat, so a flaky endpoint does not end a long rollout.
    """

    def __init__(self, scripted: ScriptedUser, model: UserModel | None = None) -> None:
        self.scripted = scripted
        self.model = model
        self.reply: str | None = None  # set by a driver (e.g. the PettingZoo user agent)
        self.history: list[dict[str, str]] = []
        self.errors = 0

    def opening(self, log: EpisodeLog) -> str:
        opening = self.scripted.opening(log)
        self.history = [{"role": "system", "content": self.scripted.brief()}, {"role": "assistant", "content": opening}]
        return opening

    def _next_line(self, text: str) -> str:
        if self.model is None:
            reply, self.reply = self.reply or "", None
            return reply
        try:
            reply = self.model(self.history)
        except Exception:  # an endpoint failure must not crash the agent's episode
            reply = None
        if not isinstance(reply, str):
            self.errors += 1
            return "Sorry, could you say that again?"
        return reply

    def respond(self, text: str, log: EpisodeLog) -> tuple[str, bool]:
        self.scripted.observe(text, log)
        self.history.append({"role": "user", "content": text})
        reply = self._next_line(text)
        self.history.append({"role": "assistant", "content": reply})
        if _YES.search(reply.lower()):
            self.scripted.accept(text, log)  # the customer agreed to what the agent proposed
        return reply, STOP in reply
