"""Recording a run: the ``track`` context manager, built on the ports only.

``track`` is the one way quantrack records a piece of code as an experiment; the engine
adapters and :meth:`Workspace.track` are built on it. It holds no storage resource while
the body runs, so a long backtest never locks other readers out of the workspace.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from quantrack.domain import (
    ArtifactRef,
    ErrorCategory,
    ExperimentDefinition,
    ExperimentResults,
    ExperimentStatus,
    categorize_error,
)
from quantrack.domain.models import Experiment
from quantrack.ports import ArtifactStore, ExperimentTracker

__all__ = ["Run", "RunEnd", "close_run", "describe_exception", "open_run", "track"]


def describe_exception(exc: BaseException) -> str:
    """One line naming the exception type and its message, as stored on a failed run."""
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class Run:
    """The handle ``track`` yields: log metrics and artifacts for the running experiment.

    Metrics and artifact references are buffered and stored together when the body ends,
    so a body that raises halfway still records what it logged before failing.
    """

    def __init__(self, experiment: Experiment, artifacts: ArtifactStore) -> None:
        self._experiment = experiment
        self._artifacts = artifacts
        self._metrics: dict[str, float] = {}
        self._refs: list[ArtifactRef] = []

    @property
    def id(self) -> str:
        """The experiment's id."""
        return self._experiment.id

    @property
    def experiment(self) -> Experiment:
        """The experiment as last stored (running while the body executes)."""
        return self._experiment

    @property
    def metrics(self) -> dict[str, float]:
        """Metrics logged so far."""
        return dict(self._metrics)

    def log_metric(self, name: str, value: float) -> None:
        """Record one metric; a later value of the same name replaces an earlier one.

        Raises ValueError at once for an empty name or a value that is not a finite
        number, so the mistake shows where it was made rather than at the end of the run.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"metric name must be a non-empty string, got {name!r}")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(
                f"metric {name!r} is {value!r}; metrics must be finite (leave an undefined "
                "metric out)"
            )
        self._metrics[name] = number

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Record several metrics at once (each checked as by :meth:`log_metric`)."""
        for name, value in metrics.items():
            self.log_metric(name, value)

    def log_artifact(
        self,
        data: bytes,
        *,
        kind: str,
        media_type: str = "application/octet-stream",
        name: str | None = None,
    ) -> ArtifactRef:
        """Store ``data`` in the artifact store now and list it on the experiment."""
        ref = self._artifacts.put(data, kind=kind, media_type=media_type, name=name)
        self._refs.append(ref)
        return ref

    def add_artifact(self, ref: ArtifactRef) -> None:
        """List an artifact that is already stored (a shared sweep file, say)."""
        self._refs.append(ref)

    def _results(self) -> ExperimentResults:
        return ExperimentResults(metrics=self._metrics, artifacts=tuple(self._refs))


@dataclass(frozen=True)
class RunEnd:
    """How a run ended, as plain data: what :func:`close_run` records.

    Plain so that the end of a run can be recorded somewhere other than where the run
    happened (an engine adapter's background recording process): :meth:`of` turns the
    exception that ended a run into one where the exception still exists.
    """

    status: ExperimentStatus = ExperimentStatus.COMPLETED
    error: str | None = None
    category: ErrorCategory | None = None
    trace: str | None = None

    @classmethod
    def of(cls, exc: BaseException) -> RunEnd:
        """Failed (with the message, category and traceback) for an ``Exception``;
        cancelled for anything else (``KeyboardInterrupt``, ``SystemExit``).
        """
        if isinstance(exc, Exception):
            return cls(
                ExperimentStatus.FAILED,
                error=describe_exception(exc),
                category=categorize_error(exc),
                trace="".join(traceback.format_exception(exc)),
            )
        return cls(ExperimentStatus.CANCELLED, error=describe_exception(exc))


def open_run(
    tracker: ExperimentTracker,
    artifacts: ArtifactStore,
    definition: ExperimentDefinition,
    *,
    experiment_id: str | None = None,
) -> Run:
    """Create the experiment, move it to running and return the handle to log into."""
    with tracker.session():
        experiment = tracker.create_experiment(definition, experiment_id=experiment_id)
        experiment = tracker.update_status(experiment.id, ExperimentStatus.RUNNING)
    return Run(experiment, artifacts)


def close_run(tracker: ExperimentTracker, run: Run, end: RunEnd) -> None:
    """Store what ``run`` logged and move it to ``end``'s status, in one unit of work.

    A failed run also gets its traceback as a ``diagnostics`` artifact.
    """
    if end.trace is not None:
        run.log_artifact(
            end.trace.encode("utf-8"),
            kind="diagnostics",
            media_type="text/plain",
            name="traceback.txt",
        )
    with tracker.session():
        tracker.store_results(run.id, run._results())
        run._experiment = tracker.update_status(
            run.id, end.status, error=end.error, error_category=end.category
        )


@contextmanager
def track(
    tracker: ExperimentTracker,
    artifacts: ArtifactStore,
    definition: ExperimentDefinition,
    *,
    experiment_id: str | None = None,
) -> Iterator[Run]:
    """Record the body of a ``with`` block as one experiment.

    Creates the experiment and moves it to running; on a normal exit stores what was
    logged and completes it; when the body raises, stores what was logged, a traceback as
    a ``diagnostics`` artifact, and fails it with the error message and
    :func:`categorize_error`'s category, then re-raises the original exception unchanged;
    on ``KeyboardInterrupt`` (or any other ``BaseException``) cancels it and re-raises.
    If recording that failure itself fails, the body's exception is still the one raised,
    with a note saying what could not be recorded.
    """
    run = open_run(tracker, artifacts, definition, experiment_id=experiment_id)
    try:
        yield run
    except BaseException as exc:
        # The body's own exception is what the caller must see, unchanged: a storage
        # problem while recording the failure is attached to it as a note instead.
        try:
            close_run(tracker, run, RunEnd.of(exc))
        except Exception as problem:
            exc.add_note(f"quantrack could not record this failure: {describe_exception(problem)}")
        raise
    else:
        close_run(tracker, run, RunEnd())
