"""Renderers: how new text reaches the agent as the observation string.

``chat`` gives the policy, the full tool schemas and role-tagged messages, for chat
LLMs (which usually read ``info["messages"]`` and ``info["tools"]`` through their chat
template instead). ``compact`` is terse for tiny models: tool signatures on one line each
and one-letter role tags.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from trace_envs.world import Tool

_CUT = " …[truncated]"


class Renderer:
    """Turns episode events into observation text, bounded by ``max_chars``."""

    name = "chat"

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._tools_text: tuple[int, str] | None = None  # (id of tool list, rendered text)

    def tools_text(self, tools: Sequence[Tool]) -> str:
        """The tool section, rendered once per tool list: it is the same every reset."""
        if self._tools_text is None or self._tools_text[0] != id(tools):
            self._tools_text = (id(tools), self.render_tools(tools))
        return self._tools_text[1]

    def render_tools(self, tools: Sequence[Tool]) -> str:
        return json.dumps([t.schema for t in tools], separators=(",", ":"))

    def clip(self, text: str) -> str:
        """Cut text longer than ``max_chars``, with a visible marker."""
        if len(text) <= self.max_chars:
            return text
        return text[: self.max_chars - len(_CUT)] + _CUT

    def clip_head(self, head: str, rest: str) -> str:
        """``head + rest`` within ``max_chars``, cutting the head (policy, tools) first: the
        conversation after it is what the agent must act on."""
        room = self.max_chars - len(rest)
        if len(head) <= room:
            return head + rest
        if room > len(_CUT):
            return head[: room - len(_CUT)] + _CUT + rest
        return self.clip(rest)

    def first(self, policy: str, tools: Sequence[Tool], opening: str) -> str:
        return self.clip_head(f"{policy}\n\n# Tools\n{self.tools_text(tools)}", f"\n\n# Conversation\nuser: {opening}")

    def user(self, text: str) -> str:
        return self.clip(f"user: {text}")

    def tool(self, name: str, content: str) -> str:
        return self.clip(f"tool {name}: {content}")


class CompactRenderer(Renderer):
    """Short tags and tool signatures; no policy text."""

    name = "compact"

    def render_tools(self, tools: Sequence[Tool]) -> str:
        return "\n".join(f"{t.name}({', '.join(t.parameters.get('properties', {}))})" for t in tools)

    def first(self, policy: str, tools: Sequence[Tool], opening: str) -> str:
        return self.clip_head(f"tools:\n{self.tools_text(tools)}", f"\nU: {opening}")

    def user(self, text: str) -> str:
        return self.clip(f"U: {text}")

    def tool(self, name: str, content: str) -> str:
        return self.clip(f"T: {content}")


RENDERERS: dict[str, type[Renderer]] = {"chat": Renderer, "compact": CompactRenderer}
