"""Worlds: a database plus a toolkit.

A :class:`Tool` couples an OpenAI-style function schema with a pure Python
implementation ``fn(db, **arguments)``. Implementations return a JSON-serializable
result or raise :class:`~trace_envs.errors.ToolError`; the env turns both into the tool
message the agent sees. Arguments are checked against the schema *before* ``fn`` runs
(:func:`check_arguments`), so implementations may trust their argument types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ToolKind = Literal["read", "write", "generic", "terminal"]
TOOL_KINDS: tuple[str, ...] = ("read", "write", "generic", "terminal")

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


@dataclass(frozen=True)
class Tool:
    """One tool the agent can call."""

    name: str
    kind: ToolKind
    description: str
    parameters: Mapping[str, Any]  # a JSON Schema "object" for the arguments
    fn: Callable[..., Any] = field(repr=False, compare=False)

    @property
    def schema(self) -> dict[str, Any]:
        """The OpenAI function-calling schema the agent sees."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def _type_ok(value: Any, expected: str) -> bool:
    if expected in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _JSON_TYPES[expected])


def check_arguments(tool: Tool, arguments: Any) -> str | None:
    """Return why ``arguments`` do not fit the tool's schema, or None when they do."""
    if not isinstance(arguments, dict):
        return f"arguments must be a JSON object, got {type(arguments).__name__}"
    props: Mapping[str, Any] = tool.parameters.get("properties", {})
    missing = [name for name in tool.parameters.get("required", ()) if name not in arguments]
    if missing:
        return f"missing required argument(s) for {tool.name}: {', '.join(missing)}"
    for name, value in arguments.items():
        prop = props.get(name)
        if prop is None:
            return f"unexpected argument {name!r} for {tool.name}; expected {sorted(props)}"
        expected = prop.get("type")
        if expected and not _type_ok(value, expected):
            return f"argument {name!r} of {tool.name} must be of type {expected}, got {type(value).__name__}"
        if expected == "array":
            item_type = prop.get("items", {}).get("type")
            if item_type and not all(_type_ok(v, item_type) for v in value):
                return f"every element of {name!r} must be of type {item_type}"
        enum = prop.get("enum")
        if enum is not None and value not in enum:
            return f"argument {name!r} must be one of {enum}, got {value!r}"
    return None


@dataclass(frozen=True)
class Domain:
    """A named toolkit and the policy text the agent is given."""

    name: str
    tools: Mapping[str, Tool]
    policy: str

    def subset(self, names: list[str] | None) -> dict[str, Tool]:
        """The tools named (all when ``names`` is None), in the given order."""
        if names is None:
            return dict(self.tools)
        return {n: self.tools[n] for n in names}


_DOMAINS: dict[str, Callable[[], Domain]] = {}
_DOMAIN_CACHE: dict[str, Domain] = {}


def register_domain(name: str, factory: Callable[[], Domain]) -> None:
    """Register a domain under ``name``; the factory runs once, on first use."""
    _DOMAINS[name] = factory


def get_domain(name: str) -> Domain:
    """The domain registered under ``name``."""
    if name not in _DOMAIN_CACHE:
        _DOMAIN_CACHE[name] = _DOMAINS[name]()
    return _DOMAIN_CACHE[name]


def domain_names() -> list[str]:
    """Names of every registered domain."""
    return sorted(_DOMAINS)
