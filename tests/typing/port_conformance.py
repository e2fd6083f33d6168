"""Checked by mypy --strict (tests/test_public_api.py): each adapter satisfies its port.

An adapter that drifts from its Protocol (a renamed method, a changed signature) makes
mypy reject the assignment below. Add every new adapter here.
"""

from __future__ import annotations

from pathlib import Path

from quantrack.adapters.duckdb import DuckDBBatchObserver, DuckDBExperimentTracker
from quantrack.adapters.filesystem import FilesystemArtifactStore
from quantrack.adapters.memory import (
    InMemoryArtifactStore,
    InMemoryBatchObserver,
    InMemoryExperimentTracker,
)
from quantrack.ports import ArtifactStore, BatchHistory, BatchObserver, ExperimentTracker
from quantrack.workspace import PersistingObserver

memory_tracker: ExperimentTracker = InMemoryExperimentTracker()
memory_store: ArtifactStore = InMemoryArtifactStore()
memory_observer: BatchObserver = InMemoryBatchObserver()
memory_history: BatchHistory = InMemoryBatchObserver()
memory_persisting: PersistingObserver = InMemoryBatchObserver()

duckdb_tracker: ExperimentTracker = DuckDBExperimentTracker(Path("runs.duckdb"))
duckdb_observer: BatchObserver = DuckDBBatchObserver(Path("runs.duckdb"))
duckdb_history: BatchHistory = DuckDBBatchObserver(Path("runs.duckdb"))
duckdb_persisting: PersistingObserver = DuckDBBatchObserver(Path("runs.duckdb"))
filesystem_store: ArtifactStore = FilesystemArtifactStore(Path("artifacts"))
