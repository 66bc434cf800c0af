"""Shared test set-up: one hypothesis profile for CI and the registry-wide id list."""

from __future__ import annotations

import os

import pytest
from helpers import ID_PARAMS, TINY  # also points TAU2_DATA_DIR at ../shared/tau2 when present
from hypothesis import HealthCheck, settings

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


@pytest.fixture(scope="session")
def tok():
    """A small tokenizer trained on env text (agent tests; needs the train extra)."""
    from trace_agents import models

    return models.build_tokenizer(models.corpus(30), vocab_size=1024)


@pytest.fixture(scope="module")
def base(tok):
    """A tiny random Qwen2 (seeded) on ``tok``, one per test module: loading an adapter into it
    (``HFPolicy.load_adapter``) changes it in place, and that must not leak into other modules."""
    import torch

    from trace_agents import models

    torch.manual_seed(0)
    return models.build_model(tok, **TINY)
