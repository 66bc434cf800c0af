"""Shared test set-up for tests/envs, tests/agents and tests/project.

The environment is read here at import (to decide skip marks and parameters) but written
only by fixtures: ``TAU2_DATA_DIR`` is set for the session by :func:`tau2_data_env`.
Test modules get what they need from fixtures, never by importing this module.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from trace_envs import registered_ids

ROOT = Path(__file__).resolve().parents[1]

# τ²-bench data: the project's CI has ../shared/tau2 beside the checkout. Tests that need it
# skip with this reason when it is absent; an explicit (non-empty) TAU2_DATA_DIR wins.
SHARED_TAU2 = Path(__file__).resolve().parents[2] / "shared" / "tau2"
TAU2_MISSING = (
    "τ²-bench data not found: set TAU2_DATA_DIR to a tau2-bench checkout's data/tau2 directory, "
    f"or put that directory at ../shared/tau2 beside the checkout ({SHARED_TAU2}), as CI has it"
)
NEEDS_TAU2 = {"trace/tau2-retail-v0"}  # registered ids that cannot be made without the data


def _tau2_data() -> Path | None:
    """The τ²-bench data directory this session uses: $TAU2_DATA_DIR, else ../shared/tau2, else None."""
    explicit = os.environ.get("TAU2_DATA_DIR")
    if explicit:
        return Path(explicit)
    return SHARED_TAU2 if SHARED_TAU2.is_dir() else None


TAU2_DATA = _tau2_data()  # read once; os.environ is written by the tau2_data_env fixture only
# The ids registered before any test runs (tests may register scratch ids of their own).
REGISTERED_IDS = registered_ids()

# Derandomized and bounded, so CI runs the same examples every time and stays fast.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# More examples for a local bug hunt: HYPOTHESIS_PROFILE=dev pytest tests/envs/test_fuzz.py
settings.register_profile("dev", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _registered_params() -> list:
    """Every registered id as a pytest param; ids whose data is absent are skipped, with the reason."""
    skip = pytest.mark.skip(reason=TAU2_MISSING)
    return [pytest.param(i, marks=skip) if i in NEEDS_TAU2 and TAU2_DATA is None else i for i in REGISTERED_IDS]


@functools.cache
def _tau2_task_ids() -> tuple[list[str], list[str]]:
    """The τ²-bench retail train task ids, and those with a gold write; both empty without the data."""
    if TAU2_DATA is None:
        return [], []
    from trace_envs import SpecError
    from trace_envs.tasks import tau2

    try:
        retail = tau2.resolve_data_dir(TAU2_DATA)
    except SpecError:
        return [], []  # a bad TAU2_DATA_DIR: the tests that use the data say so
    raw = json.loads((retail / "tasks.json").read_text(encoding="utf-8"))
    writes = [
        str(t["id"]) for t in raw if any(a["name"] in tau2.WRITE_TOOLS for a in t["evaluation_criteria"]["actions"])
    ]
    return [str(t["id"]) for t in raw], writes


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize the arguments ``registered_id``, ``tau2_task_id`` and ``tau2_write_task_id``."""
    if "registered_id" in metafunc.fixturenames:
        metafunc.parametrize("registered_id", _registered_params(), ids=str)
    for name, pick in (("tau2_task_id", 0), ("tau2_write_task_id", 1)):
        if name in metafunc.fixturenames:
            ids = _tau2_task_ids()[pick]
            reason = TAU2_MISSING if TAU2_DATA is None else f"no τ²-bench retail tasks could be read from {TAU2_DATA}"
            metafunc.parametrize(name, ids or [pytest.param(None, id="no-data", marks=pytest.mark.skip(reason=reason))])


@pytest.fixture(scope="session", autouse=True)
def tau2_data_env() -> Iterator[Path | None]:
    """The τ²-bench data path (or None), put in $TAU2_DATA_DIR for the session when that is unset."""
    with pytest.MonkeyPatch.context() as mp:
        if TAU2_DATA is not None and not os.environ.get("TAU2_DATA_DIR"):
            mp.setenv("TAU2_DATA_DIR", str(TAU2_DATA))  # subprocesses of the tests inherit it
        yield TAU2_DATA


@pytest.fixture(scope="session")
def tau2_dir(tau2_data_env: Path | None) -> Path:
    """The τ²-bench data directory; skips the test, saying how to provide one, when there is none."""
    if tau2_data_env is None:
        pytest.skip(TAU2_MISSING)
    return tau2_data_env


@pytest.fixture(scope="session")
def runnable_ids(tau2_data_env: Path | None) -> list[str]:
    """The registered ids that can be made here (what a subprocess may be asked to play)."""
    return [i for i in REGISTERED_IDS if tau2_data_env is not None or i not in NEEDS_TAU2]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root directory (README.md, benchmarks/, env_specs/, scripts/, docs/)."""
    return ROOT


@pytest.fixture(scope="session")
def short() -> bool:
    """Whether slow end-to-end tests run in their short configuration (TRACE_SHORT, default 1; 0 is full size)."""
    return os.environ.get("TRACE_SHORT", "1") != "0"
