"""An in-memory :class:`~quantrack.ports.ExperimentTracker`: complete, fast, not durable."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext

from quantrack.domain import (
    DuplicateExperiment,
    ErrorCategory,
    Experiment,
    ExperimentDefinition,
    ExperimentFilter,
    ExperimentNotFound,
    ExperimentResults,
    ExperimentStatus,
    FinishedExperiments,
    InvalidFilter,
)
from quantrack.domain.lifecycle import (
    attach_results,
    log_transition,
    new_experiment,
    stamp_heartbeat,
    transition,
)
from quantrack.domain.query import evaluate

__all__ = ["InMemoryExperimentTracker"]


class InMemoryExperimentTracker:
    """Holds experiments in a dict; safe to share between threads.

    A real implementation of the port, held to the same contract tests as the DuckDB
    tracker, for tests of code that depends on the port.
    """

    def __init__(self) -> None:
        self._experiments: dict[str, Experiment] = {}
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._experiments)

    def create_experiment(
        self, definition: ExperimentDefinition, *, experiment_id: str | None = None
    ) -> Experiment:
        """Store a new pending experiment and return it."""
        experiment = new_experiment(definition, experiment_id=experiment_id)
        with self._lock:
            if experiment.id in self._experiments:
                raise DuplicateExperiment(experiment.id)
            self._experiments[experiment.id] = experiment
        return experiment

    def get_experiment(self, experiment_id: str) -> Experiment:
        """Return the experiment with this id."""
        try:
            return self._experiments[experiment_id]
        except KeyError:
            raise ExperimentNotFound(experiment_id) from None

    def list_experiments(self, filter: ExperimentFilter | None = None) -> list[Experiment]:
        """Return the experiments that pass ``filter``, in its order."""
        query = filter or ExperimentFilter()
        with self._lock:
            experiments = list(self._experiments.values())
        metric_names = {name for e in experiments for name in e.metrics}
        if query.order_by != "created_at" and query.order_by not in metric_names:
            raise InvalidFilter(
                f"cannot order by {query.order_by!r}: no stored run has that metric "
                f"(known: {', '.join(sorted(metric_names)) or 'none'})"
            )
        selected = [
            e
            for e in experiments
            if query.matches_fields(
                status=e.status,
                name=e.name,
                strategy=e.definition.strategy,
                engine=e.definition.engine,
                tags=e.definition.tags,
                git_commit=e.definition.provenance.git_commit,
                config_hash=e.config_hash,
                batch_id=e.definition.batch_id,
                created_at=e.created_at,
            )
            and (query.where is None or evaluate(query.where, e.metrics, e.params, metric_names))
        ]
        # Ties broken by id so the order is total; runs lacking the metric come last.
        selected.sort(key=lambda e: e.id, reverse=query.descending)
        if query.order_by == "created_at":
            selected.sort(key=lambda e: e.created_at, reverse=query.descending)
        else:
            metric = query.order_by
            present = [e for e in selected if metric in e.metrics]
            absent = [e for e in selected if metric not in e.metrics]
            present.sort(key=lambda e: e.metrics[metric], reverse=query.descending)
            selected = present + absent
        return selected[: query.limit] if query.limit is not None else selected

    def update_status(
        self,
        experiment_id: str,
        status: ExperimentStatus,
        *,
        error: str | None = None,
        error_category: ErrorCategory | None = None,
    ) -> Experiment:
        """Move the experiment to ``status`` under the lifecycle rules."""
        with self._lock:
            before = self.get_experiment(experiment_id)
            after = transition(before, status, error=error, error_category=error_category)
            self._experiments[experiment_id] = after
        log_transition(before.status.value, after)
        return after

    def store_results(self, experiment_id: str, results: ExperimentResults) -> Experiment:
        """Merge results into a running experiment."""
        with self._lock:
            after = attach_results(self.get_experiment(experiment_id), results)
            self._experiments[experiment_id] = after
        return after

    def heartbeat(self, experiment_id: str) -> Experiment:
        """Stamp a running experiment as alive now."""
        with self._lock:
            after = stamp_heartbeat(self.get_experiment(experiment_id))
            self._experiments[experiment_id] = after
        return after

    def find_by_input_artifacts(self, artifact_ids: Iterable[str]) -> list[Experiment]:
        """Experiments that used any of these inputs, newest first."""
        wanted = set(artifact_ids)
        with self._lock:
            found = [
                e
                for e in self._experiments.values()
                if any(ref.id in wanted for ref in e.definition.inputs)
            ]
        return sorted(found, key=lambda e: (e.created_at, e.id), reverse=True)

    def record_finished(self, records: FinishedExperiments) -> list[str]:
        """Store many finished experiments at once, all or none."""
        experiments = list(records.experiments())
        with self._lock:
            for experiment in experiments:
                if experiment.id in self._experiments:
                    raise DuplicateExperiment(experiment.id)
            for experiment in experiments:
                self._experiments[experiment.id] = experiment
        return [e.id for e in experiments]

    def delete_experiment(self, experiment_id: str) -> None:
        """Remove an experiment."""
        with self._lock:
            if self._experiments.pop(experiment_id, None) is None:
                raise ExperimentNotFound(experiment_id)

    def session(self) -> AbstractContextManager[None]:
        """Nothing to hold in memory: a no-op unit of work."""
        return nullcontext()
