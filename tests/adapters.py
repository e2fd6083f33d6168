"""Every adapter of every port, by name: the parametrization of the contract suites.

A new adapter joins every contract and lifecycle test by adding one entry here; no test
is copied. Each factory takes a fresh temporary folder (file-backed adapters put their
files in it) and returns a fresh, empty adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from quantrack.adapters.memory import (
    InMemoryArtifactStore,
    InMemoryBatchObserver,
    InMemoryExperimentTracker,
)
from quantrack.ports import ArtifactStore, ExperimentTracker
from quantrack.workspace import PersistingObserver

TrackerFactory = Callable[[Path], ExperimentTracker]
ArtifactStoreFactory = Callable[[Path], ArtifactStore]
ObserverFactory = Callable[[Path], PersistingObserver]

TRACKERS: dict[str, TrackerFactory] = {
    "memory": lambda _folder: InMemoryExperimentTracker(),
}
ARTIFACT_STORES: dict[str, ArtifactStoreFactory] = {
    "memory": lambda _folder: InMemoryArtifactStore(),
}
OBSERVERS: dict[str, ObserverFactory] = {
    "memory": lambda _folder: InMemoryBatchObserver(),
}
