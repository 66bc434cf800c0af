"""The registry of trace env ids, backed by Gymnasium's.

Built-in specs live in ``env_specs/`` (``trace_envs/specs`` in a wheel); spec files, and
directories of them, listed in ``TRACE_ENV_SPECS`` (``os.pathsep``-separated) add user
specs. Registering only reads each file's id and turn limit, so it is cheap enough to run
when gymnasium is imported; full validation happens when the env is made (and in
``trace-envs validate``).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym

from trace_envs.errors import RegistrationError, SpecError

ENTRY_POINT = "trace_envs.env:TraceEnv"
_PACKAGE = Path(__file__).resolve().parent
# Checkout layout first (env_specs/ beside the package), then the wheel's copy.
BUILTIN_SPEC_DIRS = (_PACKAGE.parent / "env_specs", _PACKAGE / "specs")

# Gymnasium's id grammar: [namespace/]name-vN, the version required.
_ID = re.compile(r"(?:[\w:.-]+/)?[\w:.-]+-v\d+")
_OURS: dict[str, Path | None] = {}  # id -> file it came from (None for dicts)
SKIPPED: dict[str, str] = {}  # spec path -> why it was not registered


def spec_paths() -> list[Path]:
    """Where specs are loaded from: the built-in directory, then each ``TRACE_ENV_SPECS``
    entry (a directory of spec files, or one spec file), resolved."""
    builtin = next((d for d in BUILTIN_SPEC_DIRS if d.is_dir()), None)
    paths = [builtin] if builtin else []
    for part in os.environ.get("TRACE_ENV_SPECS", "").split(os.pathsep):
        if part.strip():
            paths.append(Path(part).expanduser().resolve())  # registered paths must survive a chdir
    return paths


def spec_files() -> list[Path]:
    """Every spec file of :func:`spec_paths`: a directory's ``*.json`` (sorted), a file as it is.

    A path that does not exist is skipped with a warning naming it (once per process).
    """
    files: list[Path] = []
    for path in spec_paths():
        if path.is_dir():
            files.extend(sorted(path.glob("*.json")))
        elif path.is_file():
            files.append(path)
        elif str(path) not in SKIPPED:
            SKIPPED[str(path)] = "no such file or directory"
            warnings.warn(
                f"TRACE_ENV_SPECS names {path}, which does not exist; its specs are not registered. "
                f"Fix: set TRACE_ENV_SPECS to spec files or directories of them, separated by "
                f"{os.pathsep!r}",
                RuntimeWarning,
                stacklevel=3,
            )
    return files


def _origin(env_id: str) -> str:
    """Where a registered id came from, in words."""
    if env_id not in _OURS:
        return "outside trace_envs"
    return str(_OURS[env_id]) if _OURS[env_id] is not None else "a dict spec"


def register_spec(spec: str | Path | Mapping[str, Any], *, validate: bool = True, override: bool = False) -> str:
    """Register one spec (a path or a dict) with Gymnasium; returns its id."""
    from trace_envs.spec import load_spec

    path = None if isinstance(spec, Mapping) else Path(spec).expanduser().resolve()
    where = str(path) if path is not None else "<dict>"
    if validate:
        data = load_spec(spec).to_json()
    elif path is not None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SpecError(
                f"{where}: cannot read the spec ({exc}). Fix: correct the file, or run "
                f"`trace-envs validate {where}` for details"
            ) from None
    else:
        data = dict(spec)
    if not isinstance(data, dict):
        raise SpecError(f"{where}: $: expected a JSON object, got {type(data).__name__}. Fix: wrap the spec in {{...}}")
    env_id = data.get("id")
    if not isinstance(env_id, str) or not _ID.fullmatch(env_id):
        raise SpecError(
            f"{where}: $.id: {env_id!r} is not an id like 'namespace/name-v0' (a name and a version). "
            f"Fix: add or correct it, e.g. 'trace/my-env-v0'"
        )
    max_turns = data.get("max_turns", 50)
    if not isinstance(max_turns, int) or isinstance(max_turns, bool) or max_turns < 1:
        raise SpecError(f"{where}: $.max_turns: expected a positive integer, got {max_turns!r}. Fix: set e.g. 40")
    if env_id in gym.registry:
        if not override:
            if _OURS.get(env_id, object()) == path and path is not None:
                return env_id  # the same file registered twice (e.g. hook and import): fine
            raise RegistrationError(
                f"environment {env_id!r} is already registered (from {_origin(env_id)}); "
                f"pass override=True to replace it or change the spec's id"
            )
        del gym.registry[env_id]  # an explicit override: no "Overriding environment" warning
    kwargs: dict[str, Any] = {"spec": str(path) if path is not None else data}
    # No TimeLimit wrapper (max_episode_steps): the env truncates at its own max_turns and
    # scores that last step, which a wrapper registered with the spec's limit would cut
    # short when gym.make(..., max_turns=N) raises it.
    try:
        gym.register(
            id=env_id,
            entry_point=ENTRY_POINT,
            kwargs=kwargs,
            max_episode_steps=None,
            disable_env_checker=False,
            order_enforce=True,
        )
    except gym.error.Error as exc:
        raise SpecError(
            f"{where}: $.id: gymnasium refused {env_id!r} ({exc}). Fix: use an id like 'trace/my-env-v0'"
        ) from None
    _OURS[env_id] = path
    return env_id


def register_envs() -> list[str]:
    """Register every spec file from the built-in and user directories (idempotent).

    One broken user file must not stop the others (nor ``import trace_envs``): it is
    skipped with a warning naming it, and listed in :data:`SKIPPED`.
    """
    ids = []
    for f in spec_files():
        try:
            ids.append(register_spec(f, validate=False))
        except (SpecError, RegistrationError) as exc:
            if str(f) not in SKIPPED:
                SKIPPED[str(f)] = str(exc)
                warnings.warn(f"trace_envs skipped a spec file: {exc}", RuntimeWarning, stacklevel=2)
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


def spec_of(env_id: str) -> Any:
    """The validated :class:`~trace_envs.spec.TraceSpec` behind a registered id (did-you-mean
    for an unknown one; a SpecError for an id registered without a trace_envs spec)."""
    from trace_envs.spec import load_spec

    kwargs = gym.spec(check_id(env_id)).kwargs
    if "spec" not in kwargs:
        raise SpecError(f"{env_id}: registered without a trace_envs spec (not a trace env)")
    return load_spec(kwargs["spec"])


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make`` with a did-you-mean for unknown ids."""
    return gym.make(check_id(env_id), **kwargs)
