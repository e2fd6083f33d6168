"""Ports: the protocols that application code depends on, never their adapters."""

from quantrack.ports.artifacts import ArtifactStore
from quantrack.ports.observer import BatchHistory, BatchItemsObserver, BatchObserver
from quantrack.ports.tracker import ExperimentTracker

__all__ = [
    "ArtifactStore",
    "BatchHistory",
    "BatchItemsObserver",
    "BatchObserver",
    "ExperimentTracker",
]
