"""Loading and validating env spec files.

A spec is pure JSON data validated against ``schema/env-spec.schema.json`` (draft
2020-12, ``additionalProperties: false`` everywhere) and then checked for meaning:
known domain, tools, task family, family params and reward components, and a declared
return range equal to the one the weights imply. Every failure raises
:class:`~trace_envs.errors.SpecError` naming the file, the JSON path, what was expected,
what was found, and how to fix it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trace_envs.errors import SpecError

SCHEMA_PATH = Path(__file__).parent / "schema" / "env-spec.schema.json"


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The env-spec JSON Schema."""
    return json.loads(SCHEMA_PATH.read_text())


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema  # imported lazily: registration at start-up must stay cheap

    return jsonschema.Draft202012Validator(schema())


@dataclass(frozen=True)
class TraceSpec:
    """A validated spec; ``params`` has the family defaults filled in."""

    id: str
    version: int
    capability: str
    description: str
    domain: str
    tools: tuple[str, ...] | None
    family: str
    params: Mapping[str, Any]
    user: str
    weights: Mapping[str, float]
    range: tuple[float, float]
    success: tuple[str, ...]
    max_turns: int
    obs_format: str
    max_chars: int
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)
    source: str = field(default="<dict>", compare=False)  # where it came from, not what it is

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON data; ``load_spec(spec.to_json())`` gives an equal spec."""
        out: dict[str, Any] = {
            "id": self.id,
            "version": self.version,
            "capability": self.capability,
            "description": self.description,
            "domain": {"name": self.domain} | ({"tools": list(self.tools)} if self.tools is not None else {}),
            "tasks": {"family": self.family, "params": dict(self.params)},
            "user": {"kind": self.user},
            "reward": {"components": dict(self.weights), "range": list(self.range), "success": list(self.success)},
            "max_turns": self.max_turns,
            "observation": {"format": self.obs_format, "max_chars": self.max_chars},
        }
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


def _path(parts) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _fail(source: str, path: str, what: str, fix: str) -> SpecError:
    return SpecError(f"{source}: {path}: {what}. Fix: {fix}")


def _schema_error(source: str, err) -> SpecError:
    """Turn a jsonschema error into a message with the path, the expectation and a fix."""
    path = _path(err.absolute_path)
    v = err.validator
    if v == "additionalProperties":
        allowed = list(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        hint = _did_you_mean(extra[0], allowed) if extra else ""
        return _fail(
            source,
            path,
            f"unexpected property {extra[0]!r}" if extra else err.message,
            f"remove it or use one of {allowed}.{hint}",
        )
    if v == "required":
        return _fail(source, path, err.message, "add the missing property (see the schema's description)")
    if v == "enum":
        return _fail(
            source,
            path,
            f"expected one of {err.validator_value}, got {err.instance!r}",
            f"use one of the allowed values.{_did_you_mean(err.instance, err.validator_value)}",
        )
    if v == "type":
        got = type(err.instance).__name__
        return _fail(
            source,
            path,
            f"expected {err.validator_value}, got {got} {err.instance!r}"[:300],
            f"give a JSON {err.validator_value}",
        )
    desc = err.schema.get("description", "")
    return _fail(source, path, err.message[:300], desc or "see trace_envs/schema/env-spec.schema.json")


def load_spec(src: str | Path | Mapping[str, Any]) -> TraceSpec:
    """Load and validate a spec from a path or a dict."""
    if isinstance(src, Mapping):
        data, source = dict(src), "<dict>"
    else:
        path = Path(src)
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"{source}: cannot read the spec ({exc.strerror})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(
                f"{source}: line {exc.lineno} column {exc.colno}: invalid JSON ({exc.msg}). "
                f"Fix: correct the JSON syntax"
            ) from None
    if not isinstance(data, dict):
        raise _fail(source, "$", f"expected a JSON object, got {type(data).__name__}", "wrap the spec in {...}")
    errors = sorted(
        _validator().iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path)))
    )
    if errors:
        raise _schema_error(source, errors[0])
    return _check_meaning(data, source)


def _check_meaning(data: dict[str, Any], source: str) -> TraceSpec:
    # Imported here: the registries fill in when the domains and families import.
    from trace_envs.domains import domain_names, get_domain
    from trace_envs.reward import COMPONENTS, reward_range
    from trace_envs.tasks import FAMILIES

    dom = data["domain"]
    if dom["name"] not in domain_names():
        raise _fail(
            source,
            "$.domain.name",
            f"unknown domain {dom['name']!r}",
            f"use one of {domain_names()}.{_did_you_mean(dom['name'], domain_names())}",
        )
    known_tools = get_domain(dom["name"]).tools
    tools = dom.get("tools")
    for i, name in enumerate(tools or []):
        if name not in known_tools:
            raise _fail(
                source,
                f"$.domain.tools[{i}]",
                f"unknown tool {name!r} in domain {dom['name']!r}",
                f"use a tool of the domain.{_did_you_mean(name, known_tools)}",
            )
    fam_name = data["tasks"]["family"]
    if fam_name not in FAMILIES:
        raise _fail(
            source,
            "$.tasks.family",
            f"unknown task family {fam_name!r}",
            f"use one of {sorted(FAMILIES)}.{_did_you_mean(fam_name, FAMILIES)}",
        )
    family = FAMILIES[fam_name]
    params = dict(data["tasks"].get("params", {}))
    for key, value in params.items():
        if key not in family.defaults:
            raise _fail(
                source,
                f"$.tasks.params.{key}",
                f"unknown param {key!r} of family {fam_name!r}",
                f"use one of {sorted(family.defaults)}.{_did_you_mean(key, family.defaults)}",
            )
        default = family.defaults[key]
        if isinstance(default, bool) != isinstance(value, bool) or (
            not isinstance(value, type(default)) and not (isinstance(default, float) and isinstance(value, int))
        ):
            raise _fail(
                source,
                f"$.tasks.params.{key}",
                f"expected {type(default).__name__}, got {value!r}",
                f"give a value like the default {default!r} ({family.help.get(key, '')})",
            )
    for key, problem, fix in family.check_params({**family.defaults, **params}):
        raise _fail(source, f"$.tasks.params.{key}", problem, fix)
    if tools is not None:
        missing = [t for t in family.needs_tools if t not in tools]
        if missing:
            raise _fail(
                source,
                "$.domain.tools",
                f"family {fam_name!r} needs tools {missing}",
                "add them to the tool subset, or pick a family whose tools the target has",
            )
    weights = data["reward"]["components"]
    for name, weight in weights.items():
        if not math.isfinite(weight):
            raise _fail(
                source,
                f"$.reward.components.{name}",
                f"weight must be a finite number, got {weight!r}",
                "give a finite weight (negative for penalties)",
            )
        if name not in COMPONENTS:
            raise _fail(
                source,
                f"$.reward.components.{name}",
                f"unknown reward component {name!r}",
                f"use one of {sorted(COMPONENTS)}.{_did_you_mean(name, COMPONENTS)}",
            )
    positive = [n for n, w in weights.items() if w > 0]
    for i, name in enumerate(data["reward"]["success"]):
        if name not in positive:
            raise _fail(
                source,
                f"$.reward.success[{i}]",
                f"{name!r} is not a component with a positive weight",
                f"list only components of $.reward.components with weight > 0 ({positive})."
                f"{_did_you_mean(name, positive)}",
            )
    lo, hi = reward_range(weights)
    declared = data["reward"]["range"]
    if abs(declared[0] - lo) > 1e-9 or abs(declared[1] - hi) > 1e-9:
        raise _fail(
            source,
            "$.reward.range",
            f"declared {declared}, but the weights give [{lo}, {hi}]",
            f"set range to [{lo}, {hi}] (sums of the negative and of the positive weights)",
        )
    obs = data["observation"]
    return TraceSpec(
        id=data["id"],
        version=data["version"],
        capability=data["capability"],
        description=data["description"],
        domain=dom["name"],
        tools=tuple(tools) if tools is not None else None,
        family=fam_name,
        params={**family.defaults, **params},
        user=data["user"]["kind"],
        weights={k: float(v) for k, v in weights.items()},
        range=(float(lo), float(hi)),
        success=tuple(data["reward"]["success"]),
        max_turns=data["max_turns"],
        obs_format=obs["format"],
        max_chars=obs.get("max_chars", 32768),
        metadata=data.get("metadata", {}),
        source=source,
    )


def with_params(spec: TraceSpec, overrides: Mapping[str, Any]) -> TraceSpec:
    """A copy of ``spec`` with family params overridden (validated like the file's own)."""
    data = spec.to_json()
    # Paths are strings in a spec file; gym.make(..., data_dir=Path(...)) means the same.
    overrides = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in overrides.items()}
    data["tasks"]["params"] = {**data["tasks"]["params"], **overrides}
    checked = load_spec(data)
    return dataclasses.replace(checked, source=spec.source)
