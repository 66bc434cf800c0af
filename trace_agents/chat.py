"""Env messages -> chat-template messages, the one conversion policies and training share.

The env's ``info["messages"]`` are OpenAI-format: assistant tool calls carry their
arguments as a JSON *string*. Qwen-style templates render ``arguments | tojson``, so here
they become dicts. With ``obs_format="compact"`` (tiny models) the long policy text is
replaced by one line per tool signature, which keeps prompts short.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

TOOL_CLOSE = "</tool_call>"
_THINK = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)


def one_action(text: str) -> str:
    """One action from generated text: up to the end of the first tool call, no think block."""
    text = text.split("<|im_end|>", 1)[0]
    end = text.find(TOOL_CLOSE)
    if end >= 0:
        text = text[: end + len(TOOL_CLOSE)]
    return _THINK.sub("", text, count=1).strip()


def compact_tools(tools: Sequence[Mapping[str, Any]]) -> str:
    """One ``name(arg, ...)`` line per tool schema."""
    lines = []
    for tool in tools:
        fn = tool.get("function", tool)
        args = ", ".join(fn.get("parameters", {}).get("properties", {}))
        lines.append(f"{fn['name']}({args})")
    return "Tools:\n" + "\n".join(lines)


def to_chat(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]], obs_format: str = "chat"
) -> list[dict[str, Any]]:
    """Template-ready messages from env messages (the system message adapted to the format)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m["role"]
        if role == "system":
            content = compact_tools(tools) if obs_format == "compact" else m["content"]
            out.append({"role": "system", "content": content})
        elif role == "assistant" and m.get("tool_calls"):
            calls = []
            for call in m["tool_calls"]:
                fn = call["function"]
                args = fn.get("arguments", {})
                if isinstance(args, str):
                    try:
                        args = json.loads(args) if args else {}
                    except ValueError:
                        args = {"_raw": args}
                calls.append({"type": "function", "function": {"name": fn["name"], "arguments": args}})
            out.append({"role": "assistant", "content": m.get("content") or "", "tool_calls": calls})
        elif role == "tool":
            out.append({"role": "tool", "content": m.get("content", "")})
        else:
            out.append({"role": role, "content": m.get("content", "")})
    return out


def template_tools(tools: Sequence[Mapping[str, Any]], obs_format: str) -> list[Mapping[str, Any]] | None:
    """The ``tools=`` argument for ``apply_chat_template``: full schemas in chat format, none in compact."""
    return list(tools) if obs_format == "chat" else None


def with_system_prompt(messages: list[dict[str, Any]], prompt: str | None) -> list[dict[str, Any]]:
    """``messages`` with ``prompt`` put before the system message (or as one), e.g. a prompt GEPA evolves."""
    if not prompt:
        return messages
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{prompt}\n\n{messages[0]['content']}"}, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]
