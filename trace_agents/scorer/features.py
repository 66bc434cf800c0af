"""What the scorer reads off a conversation: texts to embed and verbatim relations, never judgments.

A decision is the conversation so far and its admissible actions. :class:`Conversation`
reads an episode's messages incrementally (only those added since its last call) and
:meth:`Conversation.decision` turns the candidates into a :class:`Decision`:

**State texts** (ids masked, see :func:`~trace_agents.scorer.text.mask`): the customer's
first message (the request, sentence by sentence), their latest message, the latest tool result, the agent's
last action, and every earlier agent action (averaged). A tool result is read as its
``key=value`` leaves (:func:`pieces`), averaged: short pieces such as ``status=delivered``
recur across episodes, so the cache encodes each once, where whole records never recur.

**State numbers** (:data:`STATE_FEATURES`): turn count, whether the latest message is a
tool result, whether it is an error, how many tool results and customer messages so far,
how many ids the customer wrote that the agent has not used, and how many agent turns
since the customer last wrote.

**Per candidate**: the masked action text (a tool call as its pieces, ``call NAME`` and
each ``key=VALUE``); a *gloss* (the ``key=value`` pieces of the
record its first id was last seen in, such as an order's status); the customer's
*sentences that contain its ids* (so a proposal on order #W1 is read beside "(2) I want to
return the lamp from order #W1"); and the numbers of
:data:`CANDIDATE_FEATURES`, each a relation that can be read verbatim:

- its kind (message or tool call), how many id-like tokens it carries (tokens with a digit);
- where those tokens appear: the customer's words (all, latest), the latest tool result,
  any tool result, the agent's earlier actions;
- which of those ids the agent has not used yet in any earlier action (tool call or message);
- whether it repeats an earlier action exactly, and how often its tool was called before;
- for the records its ids were last seen in: the rank of each numeric field among the
  sibling records of the same tool result (0 = smallest), and the share of the record's
  string values that appear in the customer's words.

None of these says whether a write is permitted, which variant is right, or whether a
request is finished: those are the capabilities, and the agent has to learn them.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trace_agents.scorer.text import mask

STATE_TEXTS = ("first customer message", "latest customer message", "latest tool result", "last agent action")
STATE_FEATURES = (
    "turns / 30",
    "latest message is a tool result",
    "latest tool result is an error",
    "tool results / 20",
    "customer messages / 10",
    "ids in the customer's words the agent has not used / 5",
    "agent turns since the customer's latest message / 5",
)
CANDIDATE_FEATURES = (
    "is a message",
    "is a tool call",
    "id-like tokens / 5",
    "has no id-like token",
    "ids in the customer's words",
    "ids in the customer's latest message",
    "ids in the latest tool result",
    "ids in any tool result",
    "ids in the agent's earlier actions",
    "ids seen anywhere before",
    "repeats an earlier action",
    "earlier calls of its tool / 3",
    "ids with a record",
    "mean numeric rank among sibling records",
    "lowest numeric rank",
    "highest numeric rank",
    "mean share of record values in the customer's words",
    "highest share of record values in the customer's words",
    "ids in the customer's words the agent has not used",
    "ids in the latest tool result the agent has not used",
)
MAX_PIECES = 48
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\s+(?=\(\d+\)\s)")
_ARG = re.compile(r'\S+?=(?:"(?:[^"\\]|\\.)*"|\[[^\]]*\]|\S+)')
_TOKEN = re.compile(r"[#\w.@-]*\d[\w.@-]*")
_NONE = "none"


def id_tokens(text: str) -> set[str]:
    """The id-like tokens of ``text``: maximal runs of word characters (and ``#.@-``) holding a digit."""
    return {t.rstrip(".-") for t in _TOKEN.findall(text)}


@functools.lru_cache(maxsize=65_536)
def parse_candidate(action: str) -> tuple[str, str, str, tuple[str, ...]]:
    """``(kind, canonical, readable, ids)`` of an action: kind is ``tool`` or ``message``.

    ``canonical`` equals :func:`canonical_call` of the same call as the env records it;
    ``readable`` is the short form the encoder sees (``call get_order_details order_id="#W1"``).
    """
    from trace_envs.actions import parse_action

    parsed = parse_action(action)
    if parsed.kind == "tool" and isinstance(parsed.arguments, Mapping):
        args = parsed.arguments
        values = json.dumps(args, ensure_ascii=False)
        return (
            "tool",
            canonical_call(parsed.name, args),
            readable_call(parsed.name, args),
            tuple(sorted(id_tokens(values))),
        )
    text = parsed.text if parsed.kind == "message" else action
    return "message", text, text, tuple(sorted(id_tokens(text)))


def canonical_call(name: str, arguments: Mapping[str, Any]) -> str:
    """One string per distinct call, however its JSON was spaced."""
    return name + json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def readable_call(name: str, arguments: Mapping[str, Any]) -> str:
    """``call NAME key=VALUE ...``, each value as JSON: a string zip and a numeric one, or a list and a
    comma-separated string, read differently (the near-miss twins differ in nothing else)."""
    parts = [f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in arguments.items()]
    return " ".join(["call", name, *parts])


Bag = tuple[str, ...]  # texts whose embeddings are averaged into one vector


def call_pieces(readable: str) -> Bag:
    """A call's masked pieces: ``call NAME`` and each ``key=VALUE`` (the pieces recur; whole calls with
    addresses or names rarely do)."""
    head, _, rest = readable.partition(" ")
    name, _, args = rest.partition(" ")
    parts = [f"{head} {name}"]
    if args:
        parts += [mask(p, 120) for p in _ARG.findall(args)]
    return tuple(parts)


@dataclass
class Decision:
    """One choice among candidates: bags of texts to embed and relation features (see the module docstring)."""

    state_texts: tuple[Bag, ...]
    history: Bag
    state_numbers: tuple[float, ...]
    candidates: list[str]
    candidate_texts: list[Bag]
    gloss_texts: list[Bag]
    context_texts: list[Bag]
    candidate_numbers: list[tuple[float, ...]]


def pieces(value: Any, limit: int = MAX_PIECES) -> Bag:
    """The masked ``key=value`` leaves of a JSON value (the parent key names list items), at most ``limit``."""
    out: list[str] = []

    def walk(node: Any, key: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, str(k) if not id_tokens(str(k)) else key or "id")
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        else:
            out.append(mask(f"{key}={node}" if key else str(node), 80))

    walk(value, "")
    return tuple(dict.fromkeys(out)) or (_NONE,)


def _scalars(record: Mapping[str, Any], depth: int = 2) -> Iterable[tuple[str, Any]]:
    for key, value in record.items():
        if isinstance(value, Mapping):
            if depth > 1:
                yield from ((f"{key}.{k}", v) for k, v in _scalars(value, depth - 1))
        elif not isinstance(value, list):
            yield key, value


@dataclass
class _Record:
    fields: dict[str, Any]
    ranks: tuple[float, ...]  # one per numeric field: rank among sibling records, in [0, 1]
    strings: tuple[str, ...]  # lower-cased string values (not id-like)
    gloss: Bag


def _ranks(record: Mapping[str, Any], siblings: Sequence[Mapping[str, Any]]) -> tuple[float, ...]:
    if len(siblings) < 2:
        return ()
    out = []
    for key, value in record.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        others = [s.get(key) for s in siblings]
        values = [v for v in others if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(values) > 1:
            out.append(sum(v < value for v in values) / (len(values) - 1))
    return tuple(out)


def _record(record: Mapping[str, Any], siblings: Sequence[Mapping[str, Any]], own_key: str = "") -> _Record:
    fields = dict(_scalars(record))
    strings = tuple(v.lower() for v in fields.values() if isinstance(v, str) and v and not id_tokens(v))
    return _Record(fields, _ranks(record, siblings), strings, pieces(record, 24))


def index_records(value: Any) -> dict[str, _Record]:
    """id token -> the smallest record of a tool result that holds it (as a field or as its key)."""
    found: dict[str, _Record] = {}

    def walk(node: Any, siblings: Sequence[Any], own_key: str) -> None:
        if isinstance(node, Mapping):
            rec = None
            for v in node.values():
                if isinstance(v, (str, int)) and not isinstance(v, bool):
                    for tok in id_tokens(str(v)):
                        rec = rec or _record(node, [s for s in siblings if isinstance(s, Mapping)], own_key)
                        found[tok] = rec
            if own_key and id_tokens(own_key):
                rec = rec or _record(node, [s for s in siblings if isinstance(s, Mapping)], own_key)
                for tok in id_tokens(own_key):
                    found[tok] = rec
            children = list(node.values())
            for key, v in node.items():
                if isinstance(v, (Mapping, list)):
                    walk(v, children, str(key))
        elif isinstance(node, list):
            for v in node:
                if isinstance(v, (Mapping, list)):
                    walk(v, node, "")

    walk(value, [value], "")
    return found


class Conversation:
    """One episode's conversation as the scorer sees it; :meth:`update` reads new messages only."""

    def __init__(self) -> None:
        self._seen = 0
        self.first_user: Bag = ()
        self.last_user = ""
        self.last_tool: Bag = (_NONE,)
        self.latest_is_tool = self.latest_is_error = False
        self.turns = self.tool_results = self.user_messages = self.since_user = 0
        self.user_text = ""
        self.user_tokens: set[str] = set()
        self.last_user_tokens: set[str] = set()
        self.tool_tokens: set[str] = set()
        self.last_tool_tokens: set[str] = set()
        self.agent_tokens: set[str] = set()
        self.actions: set[str] = set()  # canonical forms of the agent's earlier actions
        self.history: list[str] = []  # masked readable forms of the agent's earlier actions
        self.tool_calls: Counter[str] = Counter()
        self.records: dict[str, _Record] = {}
        self.sentences: dict[str, list[str]] = {}  # id token -> masked customer sentences that contain it

    def update(self, messages: Sequence[Mapping[str, Any]]) -> Conversation:
        """Read the messages added since the last call; a shorter list starts a new episode."""
        if len(messages) < self._seen:
            self.__init__()
        for m in messages[self._seen :]:
            self._observe(m)
        self._seen = len(messages)
        return self

    def _observe(self, m: Mapping[str, Any]) -> None:
        role = m.get("role")
        content = m.get("content") or ""
        if not isinstance(content, str):
            content = str(content)
        if role == "user":
            self.user_messages += 1
            if not self.first_user:
                # Read sentence by sentence: "(2) I want to return ..." recurs across episodes, the
                # whole opening (its mix of requests) almost never does.
                self.first_user = tuple(mask(x, 300) for x in _SENTENCE.split(content) if x) or (_NONE,)
            self.last_user = mask(content)
            self.user_text += " " + content.lower()
            self.last_user_tokens = id_tokens(content)
            self.user_tokens |= self.last_user_tokens
            for sentence in _SENTENCE.split(content):
                masked = None
                for tok in id_tokens(sentence):
                    masked = masked or mask(sentence, 300)
                    found = self.sentences.setdefault(tok, [])
                    if masked not in found:
                        found.append(masked)
            self.latest_is_tool = self.latest_is_error = False
            self.since_user = 0
        elif role == "tool":
            self.tool_results += 1
            self.latest_is_tool = True
            self.latest_is_error = content.startswith("Error")
            self.last_tool_tokens = id_tokens(content)
            self.tool_tokens |= self.last_tool_tokens
            self.last_tool = (mask(content, 200),)
            if content[:1] in "{[":
                try:
                    value = json.loads(content)
                except ValueError:
                    return
                self.records.update(index_records(value))
                self.last_tool = pieces(value)
        elif role == "assistant":
            self.turns += 1
            self.since_user += 1
            calls = m.get("tool_calls") or []
            for call in calls:
                fn = call.get("function", {})
                name, raw = fn.get("name", ""), fn.get("arguments", "{}")
                try:
                    args = json.loads(raw) if isinstance(raw, str) else dict(raw)
                except ValueError:
                    args = {}
                if not isinstance(args, Mapping):
                    args = {}
                self.actions.add(canonical_call(name, args))
                self.history.append(mask(readable_call(name, args)))
                self.tool_calls[name] += 1
                self.agent_tokens |= id_tokens(json.dumps(args, ensure_ascii=False))
            if not calls:
                self.actions.add(content)
                self.history.append(mask(content))
                self.agent_tokens |= id_tokens(content)

    def decision(self, candidates: Sequence[str]) -> Decision:
        """The :class:`Decision` among ``candidates`` at this point of the conversation."""
        rows, texts, glosses, contexts = [], [], [], []
        seen_tokens = self.user_tokens | self.tool_tokens
        fresh_user = self.user_tokens - self.agent_tokens
        fresh_tool = self.last_tool_tokens - self.agent_tokens
        for c in candidates:
            kind, canonical, readable, ids = parse_candidate(c)
            texts.append(call_pieces(readable) if kind == "tool" else (mask(readable),))
            n = len(ids)

            def share(tokens: set[str], ids: tuple[str, ...] = ids, n: int = n) -> float:
                return sum(t in tokens for t in ids) / n if n else 0.0

            records = [self.records[t] for t in ids if t in self.records]
            ranks = [r for rec in records for r in rec.ranks]
            matches = [
                sum(s in self.user_text for s in rec.strings) / len(rec.strings) for rec in records if rec.strings
            ]
            first = next((self.records[t] for t in parse_order(c, ids) if t in self.records), None)
            glosses.append(first.gloss if first is not None else (_NONE,))
            said = tuple(dict.fromkeys(x for t in ids for x in self.sentences.get(t, ())))
            contexts.append(said or (_NONE,))
            if kind == "tool":
                name = canonical.split("{", 1)[0]
                earlier = self.tool_calls.get(name, 0)
            else:
                earlier = 0
            rows.append(
                (
                    float(kind == "message"),
                    float(kind == "tool"),
                    min(n, 5) / 5,
                    float(n == 0),
                    share(self.user_tokens),
                    share(self.last_user_tokens),
                    share(self.last_tool_tokens),
                    share(self.tool_tokens),
                    share(self.agent_tokens),
                    share(seen_tokens),
                    float(canonical in self.actions),
                    min(earlier, 3) / 3,
                    len(records) / n if n else 0.0,
                    sum(ranks) / len(ranks) if ranks else 0.5,
                    min(ranks) if ranks else 0.5,
                    max(ranks) if ranks else 0.5,
                    sum(matches) / len(matches) if matches else 0.0,
                    max(matches) if matches else 0.0,
                    share(fresh_user),
                    share(fresh_tool),
                )
            )
        state = (
            self.first_user or (_NONE,),
            (self.last_user or _NONE,),
            self.last_tool,
            (self.history[-1] if self.history else _NONE,),
        )
        numbers = (
            min(self.turns, 30) / 30,
            float(self.latest_is_tool),
            float(self.latest_is_error),
            min(self.tool_results, 20) / 20,
            min(self.user_messages, 10) / 10,
            min(len(fresh_user), 5) / 5,
            min(self.since_user, 5) / 5,
        )
        return Decision(state, tuple(self.history), numbers, list(candidates), texts, glosses, contexts, rows)


def parse_order(action: str, ids: tuple[str, ...]) -> list[str]:
    """``ids`` in the order they appear in ``action`` (the first usually names the main record)."""
    return sorted(ids, key=lambda t: action.find(t) if t in action else len(action))
