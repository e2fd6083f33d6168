"""Fixtures shared by every test: each port's adapters, parametrized."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from quantrack.ports import ArtifactStore, ExperimentTracker
from quantrack.workspace import PersistingObserver
from tests.adapters import ARTIFACT_STORES, OBSERVERS, TRACKERS

# `ci` runs enough examples to matter in well under a minute; `thorough` is for hunting
# (HYPOTHESIS_PROFILE=thorough make pytest).
settings.register_profile(
    "ci",
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=sorted(TRACKERS))
def tracker(request: pytest.FixtureRequest, tmp_path: Path) -> ExperimentTracker:
    """A fresh tracker of each kind."""
    return TRACKERS[request.param](tmp_path)


@pytest.fixture(params=sorted(ARTIFACT_STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """A fresh artifact store of each kind."""
    return ARTIFACT_STORES[request.param](tmp_path)


@pytest.fixture(params=sorted(OBSERVERS))
def observer(request: pytest.FixtureRequest, tmp_path: Path) -> PersistingObserver:
    """A fresh persisting batch observer of each kind."""
    return OBSERVERS[request.param](tmp_path)
