"""Shared test set-up: one hypothesis profile for CI and the registry-wide id list."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from helpers import ID_PARAMS  # also points TAU2_DATA_DIR at ../shared/tau2 when present

# Derandomized and bounded, so CI runs the same examples every time and stays fast.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# More examples for a local bug hunt: HYPOTHESIS_PROFILE=dev pytest tests/test_fuzz.py
settings.register_profile("dev", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ALL_IDS = ID_PARAMS


@pytest.fixture(scope="session")
def all_ids() -> list[str]:
    """Every id trace_envs registered (built-ins and TRACE_ENV_SPECS)."""
    return list(ALL_IDS)
