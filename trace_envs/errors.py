"""Exceptions raised by trace_envs.

Every error subclasses both :class:`TraceError` and the matching builtin, so callers can
catch either. Errors caused by *agent text* are never raised out of ``step``; they become
tool results and ``format_error`` terms instead. These exceptions are for caller bugs and
bad specs.
"""

from __future__ import annotations


class TraceError(Exception):
    """Base class of every error raised by trace_envs."""


class SpecError(TraceError, ValueError):
    """A spec file or dict does not satisfy the schema or refers to unknown names."""


class RegistrationError(TraceError, KeyError):
    """An environment id is unknown or registered twice."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class ResetNeeded(TraceError, RuntimeError):
    """``step`` was called before ``reset`` or after the episode ended."""


class ToolError(TraceError):
    """Raised by a tool implementation; the agent sees its message as the tool result."""
