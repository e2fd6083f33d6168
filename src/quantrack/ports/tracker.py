"""The :class:`ExperimentTracker` port: where experiments are recorded and found."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from quantrack.domain import (
    ErrorCategory,
    Experiment,
    ExperimentDefinition,
    ExperimentFilter,
    ExperimentResults,
    ExperimentStatus,
    FinishedExperiments,
)

__all__ = ["ExperimentTracker"]


@runtime_checkable
class ExperimentTracker(Protocol):
    """Records experiments and answers questions about them.

    Every implementation enforces the lifecycle through
    :mod:`quantrack.domain.lifecycle`, so a status change or result that the lifecycle
    forbids raises and leaves the stored experiment unchanged. Returned experiments are
    immutable snapshots.
    """

    def create_experiment(
        self, definition: ExperimentDefinition, *, experiment_id: str | None = None
    ) -> Experiment:
        """Store a new pending experiment and return it.

        ``experiment_id`` is generated unless given. Raises :class:`DuplicateExperiment`
        when that id is already stored.
        """
        ...

    def get_experiment(self, experiment_id: str) -> Experiment:
        """Return the experiment with this id; raises :class:`ExperimentNotFound`."""
        ...

    def list_experiments(self, filter: ExperimentFilter | None = None) -> list[Experiment]:
        """Return the experiments that pass ``filter`` (all when ``None``), in its order.

        Raises :class:`InvalidFilter` when ``filter.order_by`` names neither
        ``created_at`` nor any stored metric.
        """
        ...

    def update_status(
        self,
        experiment_id: str,
        status: ExperimentStatus,
        *,
        error: str | None = None,
        error_category: ErrorCategory | None = None,
    ) -> Experiment:
        """Move the experiment to ``status`` and return it as stored.

        Raises :class:`ExperimentNotFound`, or :class:`InvalidTransition` when the move is
        illegal (out of a terminal state, ``failed`` without an error, ...). Two callers
        racing to move the same experiment cannot both succeed.
        """
        ...

    def store_results(self, experiment_id: str, results: ExperimentResults) -> Experiment:
        """Merge metrics and artifact references into a running experiment; return it.

        Raises :class:`ExperimentNotFound`, or :class:`ExperimentNotRunning` when the
        experiment is not running.
        """
        ...

    def heartbeat(self, experiment_id: str) -> Experiment:
        """Stamp a running experiment as alive now; return it.

        Raises :class:`ExperimentNotFound` or :class:`ExperimentNotRunning`.
        """
        ...

    def find_by_input_artifacts(self, artifact_ids: Iterable[str]) -> list[Experiment]:
        """Return the experiments that used any of these input artifacts, newest first."""
        ...

    def record_finished(self, records: FinishedExperiments) -> list[str]:
        """Store many finished experiments at once, all or none; return their ids.

        The bulk path for sweeps: one transaction, no per-row round trips. Raises
        :class:`DuplicateExperiment` (storing none) when any id is already stored.
        """
        ...

    def delete_experiment(self, experiment_id: str) -> None:
        """Remove an experiment and its params, metrics and lineage (not its artifacts).

        Raises :class:`ExperimentNotFound`.
        """
        ...

    def session(self) -> AbstractContextManager[None]:
        """Hold the tracker's resources (a database connection) for a unit of work.

        Calls inside the ``with`` block reuse them; outside one, each call acquires and
        releases its own. Sessions nest. Trackers without such resources return a no-op.
        """
        ...
