"""Test doubles for code that depends on quantrack's ports, and a pytest plugin.

Installed as a pytest plugin (entry point ``pytest11``), it gives every test session
these fixtures, each a fresh, complete in-memory adapter:

* ``experiment_tracker`` — an :class:`InMemoryExperimentTracker`
* ``artifact_store`` — an :class:`InMemoryArtifactStore`
* ``batch_observer`` — an :class:`InMemoryBatchObserver`
* ``quantrack_workspace`` — a :class:`~quantrack.Workspace` built from the three above
  (the same objects, so a test can call ``quantrack_workspace.track(...)`` and then
  inspect ``experiment_tracker``)

so an application that takes an ``ExperimentTracker`` is tested without a database::

    def test_my_app_records_a_run(experiment_tracker):
        my_app(tracker=experiment_tracker)
        assert experiment_tracker.list_experiments()[0].status == "completed"
"""

from __future__ import annotations

import pytest

from quantrack.adapters.memory import (
    InMemoryArtifactStore,
    InMemoryBatchObserver,
    InMemoryExperimentTracker,
)
from quantrack.workspace import Workspace

__all__ = [
    "InMemoryArtifactStore",
    "InMemoryBatchObserver",
    "InMemoryExperimentTracker",
    "artifact_store",
    "batch_observer",
    "experiment_tracker",
    "quantrack_workspace",
]


@pytest.fixture
def experiment_tracker() -> InMemoryExperimentTracker:
    """A fresh in-memory experiment tracker."""
    return InMemoryExperimentTracker()


@pytest.fixture
def artifact_store() -> InMemoryArtifactStore:
    """A fresh in-memory artifact store."""
    return InMemoryArtifactStore()


@pytest.fixture
def batch_observer() -> InMemoryBatchObserver:
    """A fresh in-memory batch observer that keeps what it hears."""
    return InMemoryBatchObserver()


@pytest.fixture
def quantrack_workspace(
    experiment_tracker: InMemoryExperimentTracker,
    artifact_store: InMemoryArtifactStore,
    batch_observer: InMemoryBatchObserver,
) -> Workspace:
    """A workspace wired to this test's in-memory tracker, artifact store and observer."""
    return Workspace(tracker=experiment_tracker, artifacts=artifact_store, observer=batch_observer)
