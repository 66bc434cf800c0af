"""The registry of trace env ids, backed by Gymnasium's.

Built-in specs live in ``env_specs/`` (``trace_envs/specs`` in a wheel); directories
listed in ``TRACE_ENV_SPECS`` (``os.pathsep``-separated) add user specs. Registering only
reads each file's id and turn limit, so it is cheap enough to run when gymnasium is
imported; full validation happens when the env is made (and in ``trace-envs validate``).
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym

from trace_envs.errors import RegistrationError, SpecError

ENTRY_POINT = "trace_envs.env:TraceEnv"
_PACKAGE = Path(__file__).resolve().parent
# Checkout layout first (env_specs/ beside the package), then the wheel's copy.
BUILTIN_SPEC_DIRS = (_PACKAGE.parent / "env_specs", _PACKAGE / "specs")

_OURS: dict[str, Path | None] = {}  # id -> file it came from (None for dicts)


def spec_dirs() -> list[Path]:
    """The directories specs are loaded from, built-ins first."""
    builtin = next((d for d in BUILTIN_SPEC_DIRS if d.is_dir()), None)
    dirs = [builtin] if builtin else []
    for part in os.environ.get("TRACE_ENV_SPECS", "").split(os.pathsep):
        if part.strip():
            dirs.append(Path(part).expanduser())
    return dirs


def spec_files() -> list[Path]:
    """Every spec file in :func:`spec_dirs`, sorted per directory."""
    return [f for d in spec_dirs() if d.is_dir() for f in sorted(d.glob("*.json"))]


def register_spec(spec: str | Path | Mapping[str, Any], *, validate: bool = True, override: bool = False) -> str:
    """Register one spec (a path or a dict) with Gymnasium; returns its id."""
    from trace_envs.spec import load_spec

    path = None if isinstance(spec, Mapping) else Path(spec)
    if validate:
        data = load_spec(spec).to_json()
    elif path is not None:
        data = json.loads(path.read_text(encoding="utf-8"))
    else:
        data = dict(spec)
    env_id = data.get("id")
    if not isinstance(env_id, str):
        raise SpecError(f"{path or '<dict>'}: $.id: missing or not a string. Fix: add an id like 'trace/my-env-v0'")
    if env_id in gym.registry and not override:
        if _OURS.get(env_id, object()) == path and path is not None:
            return env_id  # the same file registered twice (e.g. hook and import): fine
        raise RegistrationError(f"environment {env_id!r} is already registered (from {_OURS.get(env_id)}); "
                                f"pass override=True to replace it or change the spec's id")
    kwargs: dict[str, Any] = {"spec": str(path) if path is not None else data}
    gym.register(id=env_id, entry_point=ENTRY_POINT, kwargs=kwargs,
                 max_episode_steps=int(data.get("max_turns", 50)), disable_env_checker=False,
                 order_enforce=True)
    _OURS[env_id] = path
    return env_id


def register_envs() -> list[str]:
    """Register every spec file from the built-in and user directories (idempotent)."""
    ids = []
    for f in spec_files():
        try:
            ids.append(register_spec(f, validate=False))
        except RegistrationError:
            continue
    return ids


def registered_ids() -> list[str]:
    """Ids registered by trace_envs, sorted."""
    return sorted(_OURS)


def check_id(env_id: str) -> str:
    """Return ``env_id`` if registered, else raise with a did-you-mean."""
    if env_id in gym.registry:
        return env_id
    close = difflib.get_close_matches(env_id, list(gym.registry), n=1)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    raise RegistrationError(f"Environment `{env_id}` doesn't exist.{hint}")


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make`` with a did-you-mean for unknown ids."""
    return gym.make(check_id(env_id), **kwargs)
