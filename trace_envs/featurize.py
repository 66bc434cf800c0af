"""Fixed-size numeric features of a conversation and its candidate actions, for classic RL.

:class:`HashingFeaturizer` turns ``info["messages"]`` (the OpenAI-format history) and a list
of candidate action strings into a ``dict`` of ``float32`` arrays that a classic policy (an
MLP, a DQN, a DRRN-style scorer) can read. It is what
:class:`trace_envs.wrappers.DiscreteActions` uses unless given another featurizer.

Text features are hashed n-grams:

1. lower-case the text and replace every digit with ``0``, so ids and amounts keep their
   shape (``#W5853735`` becomes ``#w0000000``, ``17.81`` becomes ``00.00``) but do not
   grow the vocabulary;
2. split into tokens ``#?\\w+`` (words, with a leading ``#`` kept: ``#w0000000`` and
   ``w0000000`` differ, as they do to the env);
3. hash every unigram and bigram (``"status delivered"``) with CRC-32 (``zlib.crc32`` of
   the UTF-8 bytes, modulo ``dim``) and set that coordinate to 1.

CRC-32 is fixed by the standard, so the same text gives the same vector in every process
and on every machine (Python's ``hash()`` is salted per process and would not).

Because masking hides which id is which, each candidate row also carries *relational*
features: whether the action's values (its tokens that contain a digit, such as order
ids, zips, amounts and emails) were seen in the latest user message, anywhere the
customer spoke, in the latest tool result or in any tool result, and whether the same
action was already taken. They let a policy prefer "read the order the customer named"
without learning any particular id.

Only numpy (which gymnasium brings) is needed. Per-string results are kept in an LRU
cache, since most candidates repeat from one step to the next.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
from gymnasium import spaces

from trace_envs.actions import parse_action

__all__ = ["ACTION_EXTRAS", "PROGRESS", "Featurizer", "HashingFeaturizer"]

_DIGITS = str.maketrans("0123456789", "0000000000")
_TOKEN = re.compile(r"#?\w+")
_VALUE = re.compile(r"[\w#@.+-]*\d[\w#@.+-]*")  # a token with a digit: ids, zips, amounts, emails

#: The per-candidate features after the hashed text, in order (``actions[i, dim + k]``).
ACTION_EXTRAS: tuple[str, ...] = (
    "present",  # 1 for a real candidate, 0 for a padding row (every padding row is all 0)
    "tool_call",  # 1 if the action calls a tool, 0 if it is a message to the customer
    "taken",  # 1 if exactly this action (same tool and arguments, or same text) was already taken
    "taken_failed",  # 1 if it was taken and its tool result was an error
    "tool_used",  # 1 if a call to the same tool was already made (any arguments)
    "values_in_last_user",  # share of the action's values found in the latest user message
    "values_in_user",  # ... in any user message
    "values_in_last_tool",  # ... in the latest tool result
    "values_in_tool",  # ... in any tool result
    "no_values",  # 1 if the action contains no value (no token with a digit)
)
#: The conversation's progress features (``progress[k]``), each in [0, 1].
PROGRESS: tuple[str, ...] = (
    "agent_turns",  # agent turns so far / 32, at most 1
    "tool_calls",  # tool calls so far / 16, at most 1
    "messages",  # messages to the customer so far / 16, at most 1
    "errors",  # error tool results so far / 4, at most 1
    "after_tool",  # 1 if the latest event is a tool result, 0 if it is the customer's reply
    "last_tool_error",  # 1 if the latest tool result is an error
    "candidates",  # number of candidate actions / max_actions
    "bias",  # always 1
)
_TEXT_KEYS = ("last_user", "last_tool", "customer", "agent")


class Featurizer(Protocol):
    """What :class:`~trace_envs.wrappers.DiscreteActions` needs from a featurizer."""

    def space(self, max_actions: int) -> spaces.Dict:
        """The observation space of :meth:`features` for lists of at most ``max_actions``."""

    def features(
        self, messages: Sequence[Mapping[str, Any]], actions: Sequence[str], max_actions: int
    ) -> dict[str, np.ndarray]:
        """Fixed-shape arrays for the history ``messages`` and the candidate ``actions``."""


class _Entry(NamedTuple):
    vector: np.ndarray  # hashed n-grams, read-only
    values: frozenset[str]  # tokens with a digit
    key: str  # the action's identity: "call:<name><canonical arguments>" or "say:<text>"
    tool: str | None  # the tool it calls, None for a message


def _values(text: str) -> frozenset[str]:
    """The tokens of ``text`` that contain a digit, trailing punctuation stripped."""
    return frozenset(v.rstrip(".-+") for v in _VALUE.findall(text))


def _call_key(name: str, arguments: Any) -> str:
    """A call's identity: its name and its arguments as canonical JSON."""
    if isinstance(arguments, str):
        return _history_call_key(name, arguments)
    return "call:" + name + json.dumps(arguments, sort_keys=True, ensure_ascii=False)


@functools.lru_cache(maxsize=4096)
def _history_call_key(name: str, arguments: str) -> str:
    """:func:`_call_key` of a call in the history, whose arguments are a JSON string (cached)."""
    try:
        return _call_key(name, json.loads(arguments))
    except (ValueError, RecursionError):
        return "call:" + name + arguments


class HashingFeaturizer:
    """Hashed n-grams of the conversation and of each candidate action (see the module docstring).

    The observation (:meth:`space`) is a ``Dict`` of ``Box(0, 1, float32)`` arrays:

    - ``last_user`` ``(dim,)``: hashed n-grams of the latest user message;
    - ``last_tool`` ``(dim,)``: of the latest tool result (zeros before the first);
    - ``customer`` ``(dim,)``: of every user message so far (the customer's requests and answers);
    - ``agent`` ``(dim,)``: of every agent action so far (messages and tool calls, arguments included);
    - ``progress`` ``(8,)``: counters and flags, named in :data:`PROGRESS`;
    - ``actions`` ``(max_actions, dim + 10)``: row ``i`` is candidate ``i``'s hashed n-grams
      followed by the features named in :data:`ACTION_EXTRAS`; rows past the list are zero.

    ``dim`` sets the hashed width (default 256), ``ngrams`` the n-gram orders (default 1 and 2),
    ``cache_size`` how many strings' features are remembered (least recently used dropped).
    """

    def __init__(self, dim: int = 256, ngrams: Sequence[int] = (1, 2), cache_size: int = 8192) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 8:
            raise ValueError(f"dim must be an integer >= 8, got {dim!r}")
        orders = tuple(ngrams)
        if not orders or any(not isinstance(n, int) or n < 1 for n in orders):
            raise ValueError(f"ngrams must be positive integers, e.g. (1, 2), got {ngrams!r}")
        if not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size must be an integer >= 0, got {cache_size!r}")
        self.dim, self.ngrams, self.cache_size = dim, orders, cache_size
        self._cache: OrderedDict[str, _Entry] = OrderedDict()

    def __repr__(self) -> str:
        return f"HashingFeaturizer(dim={self.dim}, ngrams={self.ngrams}, cache_size={self.cache_size})"

    # The cache is a speed-up, not state: copies (pickle, async vector envs) start empty.
    def __getstate__(self) -> dict[str, Any]:
        return {"dim": self.dim, "ngrams": self.ngrams, "cache_size": self.cache_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    @property
    def action_dim(self) -> int:
        """The width of one candidate's row."""
        return self.dim + len(ACTION_EXTRAS)

    def space(self, max_actions: int) -> spaces.Dict:
        """The observation space for lists of at most ``max_actions`` candidates."""

        def box(*shape: int) -> spaces.Box:
            return spaces.Box(0.0, 1.0, shape=shape, dtype=np.float32)

        return spaces.Dict(
            {
                **{k: box(self.dim) for k in _TEXT_KEYS},
                "progress": box(len(PROGRESS)),
                "actions": box(max_actions, self.action_dim),
            }
        )

    def text(self, text: str) -> np.ndarray:
        """The hashed n-gram vector of ``text`` (read-only; cached)."""
        return self._entry(text)[0]

    def _entry(self, text: str) -> _Entry:
        """What is known of one string, from the cache when possible."""
        hit = self._cache.get(text)
        if hit is not None:
            self._cache.move_to_end(text)
            return hit
        tokens = _TOKEN.findall(text.lower().translate(_DIGITS))
        vec = np.zeros(self.dim, dtype=np.float32)
        for n in self.ngrams:
            grams = tokens if n == 1 else [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
            if grams:
                vec[[zlib.crc32(g.encode()) % self.dim for g in grams]] = 1.0
        vec.flags.writeable = False
        parsed = parse_action(text)
        key = _call_key(parsed.name, parsed.arguments) if parsed.kind == "tool" else "say:" + parsed.text
        entry = _Entry(vec, _values(text), key, parsed.name if parsed.kind == "tool" else None)
        if self.cache_size:
            self._cache[text] = entry
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return entry

    def features(
        self, messages: Sequence[Mapping[str, Any]], actions: Sequence[str], max_actions: int
    ) -> dict[str, np.ndarray]:
        """The observation for history ``messages`` and candidates ``actions`` (at most ``max_actions``)."""
        if len(actions) > max_actions:
            raise ValueError(f"{len(actions)} candidate actions do not fit max_actions={max_actions}")
        dim = self.dim
        out = {k: np.zeros(dim, dtype=np.float32) for k in _TEXT_KEYS}
        last_user = last_tool = ""
        user_values: set[str] = set()
        tool_values: set[str] = set()
        taken: dict[str, bool] = {}  # action key -> whether its result was an error
        tools_used: set[str] = set()
        pending: str | None = None  # the key of the call whose result comes next
        turns = calls = said = errors = 0
        after_tool = last_error = False
        for m in messages:
            role, content = m.get("role"), m.get("content") or ""
            if role == "user":
                last_user, after_tool, pending = content, False, None
                out["customer"] += self.text(content)
                user_values |= self._entry(content)[1]
            elif role == "tool":
                last_tool, after_tool = content, True
                last_error = content.startswith("Error")
                errors += last_error
                out["last_tool"] = self.text(content)
                tool_values |= self._entry(content)[1]
                if pending is not None:
                    taken[pending] = taken.get(pending, False) or last_error
                    pending = None
            elif role == "assistant":
                turns += 1
                for call in m.get("tool_calls") or ():
                    function = call.get("function", {})
                    name = function.get("name", "")
                    pending = _call_key(name, function.get("arguments", "{}"))
                    taken.setdefault(pending, False)
                    tools_used.add(name)
                    out["agent"] += self.text(f'{{"name": "{name}", "arguments": {function.get("arguments", "")}}}')
                    calls += 1
                if not m.get("tool_calls"):
                    said += 1
                    pending = "say:" + content  # a format error's text gets an error result next
                    out["agent"] += self.text(content)
        for k in ("customer", "agent"):
            np.minimum(out[k], 1.0, out=out[k])
        out["last_user"] = self.text(last_user).copy()
        out["last_tool"] = out["last_tool"].copy()
        last_user_values = self._entry(last_user)[1]
        last_tool_values = self._entry(last_tool)[1]
        out["progress"] = np.array(
            [
                min(turns / 32, 1.0),
                min(calls / 16, 1.0),
                min(said / 16, 1.0),
                min(errors / 4, 1.0),
                after_tool,
                last_error,
                len(actions) / max_actions,
                1.0,
            ],
            dtype=np.float32,
        )
        rows = np.zeros((max_actions, self.action_dim), dtype=np.float32)
        for i, action in enumerate(actions):
            vec, values, key, tool = self._entry(action)
            rows[i, :dim] = vec
            extras = [1.0, tool is not None, key in taken, taken.get(key, False), tool in tools_used]
            if values:
                n = len(values)
                extras += [
                    len(values & last_user_values) / n,
                    len(values & user_values) / n,
                    len(values & last_tool_values) / n,
                    len(values & tool_values) / n,
                    0.0,
                ]
            else:
                extras += [0.0, 0.0, 0.0, 0.0, 1.0]
            rows[i, dim:] = extras
        out["actions"] = rows
        return out
