"""In-memory adapters of every port: complete implementations for tests and notebooks."""

from quantrack.adapters.memory.artifacts import InMemoryArtifactStore
from quantrack.adapters.memory.observer import InMemoryBatchObserver
from quantrack.adapters.memory.tracker import InMemoryExperimentTracker

__all__ = ["InMemoryArtifactStore", "InMemoryBatchObserver", "InMemoryExperimentTracker"]
