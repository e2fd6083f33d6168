"""Which artifacts are still in use: the ``keep`` set for an artifact store's ``gc``."""

from __future__ import annotations

from dataclasses import dataclass

from quantrack.ports import ExperimentTracker

__all__ = ["GcReport", "referenced_artifact_ids"]


@dataclass(frozen=True)
class GcReport:
    """What an artifact garbage collection removed (or would remove, on a dry run)."""

    removed: tuple[str, ...]
    bytes_freed: int
    temp_files_removed: int
    dry_run: bool


def referenced_artifact_ids(tracker: ExperimentTracker) -> set[str]:
    """Every artifact id any recorded experiment lists as an output or an input.

    Code files are listed on the experiment beside their manifest, so keeping these ids
    keeps every file an export or a reproduction needs.
    """
    keep: set[str] = set()
    with tracker.session():
        for experiment in tracker.list_experiments():
            keep.update(ref.id for ref in experiment.artifacts)
            keep.update(ref.id for ref in experiment.definition.inputs)
    return keep
