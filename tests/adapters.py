"""Every adapter of every port, by name: the parametrization of the contract suites.

A new adapter joins every contract and lifecycle test by adding one entry here; no test
is copied. Each factory takes a fresh temporary folder (file-backed adapters put their
files in it) and returns a fresh, empty adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from quantrack.adapters.duckdb import DuckDBBatchObserver, DuckDBExperimentTracker
from quantrack.adapters.filesystem import FilesystemArtifactStore
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
    "duckdb": lambda folder: DuckDBExperimentTracker(folder / "runs.duckdb", timeout=10.0),
}
ARTIFACT_STORES: dict[str, ArtifactStoreFactory] = {
    "memory": lambda _folder: InMemoryArtifactStore(),
    "filesystem": lambda folder: FilesystemArtifactStore(folder / "artifacts"),
}
OBSERVERS: dict[str, ObserverFactory] = {
    "memory": lambda _folder: InMemoryBatchObserver(),
    "duckdb": lambda folder: DuckDBBatchObserver(folder / "runs.duckdb", timeout=10.0),
}
