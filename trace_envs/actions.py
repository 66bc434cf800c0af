"""Parsing agent text into tool calls or messages, and building actions.

An action is one assistant turn as text. A tool call is
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (the Hermes/Qwen format
TRL's chat templates produce) or a bare JSON object of that shape; anything else is a
message to the user. Parsing never raises: malformed input comes back as a
:class:`Parsed` with ``error`` set, which the env turns into an error tool result and a
``format_error`` term.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from trace_envs._json import loads

MAX_ACTION_CHARS = 16_384
_OPEN, _CLOSE = "<tool_call>", "</tool_call>"


@dataclass(frozen=True, slots=True)
class Parsed:
    """The result of parsing one action."""

    kind: str  # "tool", "message" or "error"
    text: str = ""  # the message, or the raw tool-call text
    name: str = ""
    arguments: Any = None
    error: str = ""


def _error(text: str, why: str) -> Parsed:
    return Parsed("error", text=text, error=why)


def _decode(payload: str, raw: str) -> Parsed:
    try:
        obj = loads(payload)
    except (ValueError, RecursionError) as exc:
        return _error(raw, f"tool call is not valid JSON ({type(exc).__name__}: {str(exc)[:120]})")
    if not isinstance(obj, dict):
        return _error(raw, f"tool call must be a JSON object, got {type(obj).__name__}")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return _error(raw, 'tool call needs a string "name"')
    args = obj.get("arguments", {})
    if isinstance(args, str):  # OpenAI-style: arguments as a JSON string
        try:
            args = loads(args) if args.strip() else {}
        except (ValueError, RecursionError):
            return _error(raw, f'"arguments" of {name!r} is a string that is not valid JSON')
    if not isinstance(args, dict):
        return _error(raw, f'"arguments" of {name!r} must be a JSON object, got {type(args).__name__}')
    extra = set(obj) - {"name", "arguments"}
    if extra:
        return _error(raw, f"tool call has unexpected keys {sorted(extra)}; use only name and arguments")
    return Parsed("tool", text=raw, name=name, arguments=args)


def parse_action(action: Any) -> Parsed:
    """Classify one assistant turn as a tool call, a message, or a format error."""
    if not isinstance(action, str):
        return _error(repr(action)[:200], f"action must be a str, got {type(action).__name__}")
    if len(action) > MAX_ACTION_CHARS:
        return _error(action[:200], f"action is {len(action)} characters; the limit is {MAX_ACTION_CHARS}")
    if "\x00" in action:
        return _error(action[:200].replace("\x00", "\\0"), "action contains NUL bytes")
    try:
        action.encode("utf-8")
    except UnicodeEncodeError:
        return _error(action.encode("utf-8", "replace").decode()[:200], "action is not valid unicode (lone surrogate)")
    start = action.find(_OPEN)
    if start >= 0:
        end = action.find(_CLOSE, start)
        payload = action[start + len(_OPEN) : end if end >= 0 else len(action)]
        if action.find(_OPEN, start + 1) >= 0:
            return _error(action, "one tool call per turn: found several <tool_call> blocks")
        return _decode(payload.strip(), action)
    text = action.strip()
    if not text:
        return _error(action, "empty action: say something or call a tool")
    if text[0] == "{" and text[-1] == "}":
        parsed = _decode(text, action)
        if parsed.kind == "tool" or '"name"' in text:
            return parsed
    return Parsed("message", text=text)


def tool_call(name: str, /, **arguments: Any) -> str:
    """The action text that calls ``name`` with ``arguments``."""
    # "<" escaped as \u003c (valid JSON) so a value holding "</tool_call>" cannot end the block.
    payload = json.dumps({"name": name, "arguments": arguments}).replace("<", "\\u003c")
    return f"{_OPEN}{payload}{_CLOSE}"


def say(text: str) -> str:
    """The action text that sends ``text`` to the user."""
    return text
