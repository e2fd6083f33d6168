"""The experiment and batch lifecycles, as pure functions.

::

    pending ──► running ──► completed
       │           ├──────► failed      (error message and ErrorCategory recorded)
       └──────────►└──────► cancelled

Terminal states are final: a retry is a new experiment that points at the one it retries.
Timestamps only move forward (created ≤ started ≤ completed; a clock that steps back is
clamped, never recorded); the duration is derived from them; results can only be stored on
a running experiment; a failed experiment always has an error and a completed one never
does. Batches follow the same shape, and their final status is derived from their items:
all succeeded → completed, some → partial, none → failed, interrupted → cancelled.

Every adapter calls these functions instead of re-stating the rules, so the rules hold
identically in memory, in DuckDB and anywhere else.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence

from quantrack.domain._logging import get_logger
from quantrack.domain.errors import ExperimentNotRunning, InvalidTransition, LifecycleError
from quantrack.domain.ids import new_id, utcnow
from quantrack.domain.models import (
    TERMINAL_BATCH_STATUSES,
    ArtifactRef,
    Batch,
    BatchItemResult,
    BatchStatus,
    ErrorCategory,
    Experiment,
    ExperimentDefinition,
    ExperimentResults,
    ExperimentStatus,
)

__all__ = [
    "BATCH_TRANSITIONS",
    "EXPERIMENT_TRANSITIONS",
    "attach_results",
    "can_transition",
    "derive_batch_status",
    "finish_batch",
    "log_transition",
    "merge_artifacts",
    "new_experiment",
    "record_item",
    "record_items",
    "stamp_heartbeat",
    "start_batch",
    "transition",
]

_S = ExperimentStatus
EXPERIMENT_TRANSITIONS: Mapping[ExperimentStatus, frozenset[ExperimentStatus]] = {
    _S.PENDING: frozenset({_S.RUNNING, _S.CANCELLED}),
    _S.RUNNING: frozenset({_S.COMPLETED, _S.FAILED, _S.CANCELLED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}

_B = BatchStatus
BATCH_TRANSITIONS: Mapping[BatchStatus, frozenset[BatchStatus]] = {
    _B.PENDING: frozenset({_B.RUNNING, _B.CANCELLED}),
    _B.RUNNING: frozenset({_B.COMPLETED, _B.PARTIAL, _B.FAILED, _B.CANCELLED}),
    _B.COMPLETED: frozenset(),
    _B.PARTIAL: frozenset(),
    _B.FAILED: frozenset(),
    _B.CANCELLED: frozenset(),
}

_log = get_logger("quantrack.lifecycle")


def can_transition(current: ExperimentStatus, requested: ExperimentStatus) -> bool:
    """True when an experiment may move from ``current`` to ``requested``."""
    return requested in EXPERIMENT_TRANSITIONS[current]


def _status(value: str) -> ExperimentStatus:
    try:
        return ExperimentStatus(value)
    except ValueError:
        known = ", ".join(status.value for status in ExperimentStatus)
        raise ValueError(f"unknown experiment status {value!r}; use one of: {known}") from None


def _forward(earliest: dt.datetime, now: dt.datetime | None) -> dt.datetime:
    # A clock that steps back (NTP, another host) must never make time run backwards.
    moment = now if now is not None else utcnow()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return max(moment, earliest)


def new_experiment(
    definition: ExperimentDefinition,
    *,
    experiment_id: str | None = None,
    now: dt.datetime | None = None,
) -> Experiment:
    """A pending experiment for ``definition``, with a fresh id unless one is given."""
    return Experiment(
        id=experiment_id or new_id(),
        definition=definition,
        status=ExperimentStatus.PENDING,
        created_at=now or utcnow(),
    )


def transition(
    experiment: Experiment,
    requested: ExperimentStatus,
    *,
    error: str | None = None,
    error_category: ErrorCategory | None = None,
    now: dt.datetime | None = None,
) -> Experiment:
    """Return ``experiment`` moved to ``requested``, stamping its timestamps.

    Entering ``running`` stamps ``started_at``; entering a terminal state stamps
    ``completed_at``. ``failed`` requires ``error`` (the category defaults to ``unknown``);
    ``completed`` refuses one; ``cancelled`` may carry a reason in ``error``.

    Raises :class:`InvalidTransition` naming the experiment and both statuses when the
    lifecycle does not allow the move; ``experiment`` itself is never changed.
    """
    requested = _status(requested)
    subject = f"experiment {experiment.id}"
    if not can_transition(experiment.status, requested):
        raise InvalidTransition(subject, experiment.status.value, requested.value)
    if requested is ExperimentStatus.FAILED and not (error and error.strip()):
        raise InvalidTransition(
            subject, experiment.status.value, requested.value, "a failed experiment needs an error"
        )
    if requested is ExperimentStatus.COMPLETED and (error or error_category):
        raise InvalidTransition(
            subject,
            experiment.status.value,
            requested.value,
            "a completed experiment has no error (use 'failed')",
        )
    if requested is ExperimentStatus.RUNNING and (error or error_category):
        raise InvalidTransition(
            subject, experiment.status.value, requested.value, "a running experiment has no error"
        )
    changes: dict[str, object] = {"status": requested}
    if requested is ExperimentStatus.RUNNING:
        changes["started_at"] = _forward(experiment.created_at, now)
    else:
        earliest = experiment.started_at or experiment.created_at
        changes["completed_at"] = _forward(earliest, now)
    if requested is ExperimentStatus.FAILED:
        changes["error"] = error
        changes["error_category"] = error_category or ErrorCategory.UNKNOWN
    elif requested is ExperimentStatus.CANCELLED:
        changes["error"] = error or None
        changes["error_category"] = error_category
    # Re-validate so the model invariants are checked on the new state as well.
    return Experiment.model_validate({**experiment.__dict__, **changes})


def merge_artifacts(
    existing: tuple[ArtifactRef, ...], new: tuple[ArtifactRef, ...]
) -> tuple[ArtifactRef, ...]:
    """``existing`` followed by those of ``new`` not already listed (same id, kind and part)."""
    seen = {(ref.id, ref.kind, ref.part) for ref in existing}
    merged = list(existing)
    for ref in new:
        key = (ref.id, ref.kind, ref.part)
        if key not in seen:
            seen.add(key)
            merged.append(ref)
    return tuple(merged)


def attach_results(experiment: Experiment, results: ExperimentResults) -> Experiment:
    """Return ``experiment`` with ``results`` merged in: later metrics of the same name win,
    artifacts are appended once each.

    Raises :class:`ExperimentNotRunning` unless the experiment is running.
    """
    if experiment.status is not ExperimentStatus.RUNNING:
        raise ExperimentNotRunning(experiment.id, experiment.status.value)
    return experiment.model_copy(
        update={
            "metrics": {**experiment.metrics, **results.metrics},
            "artifacts": merge_artifacts(experiment.artifacts, results.artifacts),
        }
    )


def stamp_heartbeat(experiment: Experiment, now: dt.datetime | None = None) -> Experiment:
    """Return a running ``experiment`` with its heartbeat set to ``now``.

    Raises :class:`ExperimentNotRunning` for any other status: only a live run beats.
    """
    if experiment.status is not ExperimentStatus.RUNNING:
        raise ExperimentNotRunning(experiment.id, experiment.status.value)
    earliest = experiment.heartbeat_at or experiment.started_at or experiment.created_at
    return experiment.model_copy(update={"heartbeat_at": _forward(earliest, now)})


def log_transition(before_status: str, after: Experiment | Batch) -> None:
    """Emit the one structured event that every lifecycle change produces.

    Called by adapters after the change is durable, so the log never claims a change
    that a rolled-back transaction undid.
    """
    kind = "experiment" if isinstance(after, Experiment) else "batch"
    fields: dict[str, object] = {
        f"{kind}_id": after.id,
        "from_status": before_status,
        "to_status": after.status.value,
    }
    if after.duration_seconds is not None:
        fields["duration_s"] = round(after.duration_seconds, 6)
    if isinstance(after, Experiment) and after.error_category is not None:
        fields["error_category"] = after.error_category.value
    _log.info(f"{kind}.status_changed", **fields)


# -- batches ---------------------------------------------------------------------------


def _batch_move(batch: Batch, requested: BatchStatus, reason: str = "") -> None:
    if requested not in BATCH_TRANSITIONS[batch.status]:
        raise InvalidTransition(f"batch {batch.id}", batch.status.value, requested.value, reason)


def start_batch(batch: Batch, now: dt.datetime | None = None) -> Batch:
    """Return a pending ``batch`` moved to running, with ``started_at`` stamped."""
    _batch_move(batch, BatchStatus.RUNNING)
    return Batch.model_validate(
        {
            **batch.__dict__,
            "status": BatchStatus.RUNNING,
            "started_at": _forward(batch.created_at, now),
        }
    )


def record_item(batch: Batch, item: BatchItemResult) -> Batch:
    """Return a running ``batch`` with one more finished item counted.

    Raises :class:`LifecycleError` when the batch is not running, or when the item's
    index is outside ``0 .. total-1``, or when every item has already finished.
    """
    if batch.status is not BatchStatus.RUNNING:
        raise LifecycleError(
            f"batch {batch.id} is {batch.status.value!r}; items can only finish while it is "
            "'running'"
        )
    if item.index >= batch.total:
        raise LifecycleError(
            f"item index {item.index} is outside batch {batch.id} of {batch.total} items"
        )
    if batch.finished >= batch.total:
        raise LifecycleError(f"all {batch.total} items of batch {batch.id} have already finished")
    changes: dict[str, object] = {}
    if item.status is ExperimentStatus.COMPLETED:
        changes["succeeded"] = batch.succeeded + 1
        if item.reused:
            changes["reused"] = batch.reused + 1
    elif item.status is ExperimentStatus.FAILED:
        changes["failed"] = batch.failed + 1
        category = item.error_category or ErrorCategory.UNKNOWN
        summary = dict(batch.error_summary)
        summary[category] = summary.get(category, 0) + 1
        changes["error_summary"] = summary
    else:
        changes["cancelled"] = batch.cancelled + 1
    return batch.model_copy(update=changes)


def record_items(batch: Batch, items: Sequence[BatchItemResult]) -> Batch:
    """Return ``batch`` with every one of ``items`` counted, in order: exactly the batch
    that folding :func:`record_item` over them gives, in one pass and one copy.

    Raises the :class:`LifecycleError` that :func:`record_item` raises at the first item
    it refuses. No items leave ``batch`` as it is.
    """
    if not items:
        return batch
    if (
        batch.status is not BatchStatus.RUNNING
        or len(items) > batch.total - batch.finished
        or any(item.index >= batch.total for item in items)
    ):
        # One of them is refused: the one-by-one path itself raises the error it gives.
        for item in items:
            batch = record_item(batch, item)
        return batch
    # Tallied by outcome (a sweep's thousands of items have a handful of distinct ones),
    # then counted into one copy of the batch rather than one copy per item.
    outcomes = Counter((item.status, item.reused, item.error_category) for item in items)
    succeeded = failed = cancelled = reused = 0
    summary = dict(batch.error_summary)
    for (status, was_reused, category), count in outcomes.items():
        if status is ExperimentStatus.COMPLETED:
            succeeded += count
            reused += count if was_reused else 0
        elif status is ExperimentStatus.FAILED:
            failed += count
            key = category or ErrorCategory.UNKNOWN
            summary[key] = summary.get(key, 0) + count
        else:
            cancelled += count
    # Only the counts that moved, as record_item changes them.
    changes: dict[str, object] = {}
    if succeeded:
        changes["succeeded"] = batch.succeeded + succeeded
    if reused:
        changes["reused"] = batch.reused + reused
    if failed:
        changes["failed"] = batch.failed + failed
        changes["error_summary"] = summary
    if cancelled:
        changes["cancelled"] = batch.cancelled + cancelled
    return batch.model_copy(update=changes)


def derive_batch_status(
    *, total: int, succeeded: int, finished: int, interrupted: bool = False
) -> BatchStatus:
    """The final status a batch earns from its item counts.

    Interrupted → cancelled; otherwise every item must have finished, and then all
    succeeded → completed (an empty batch included), some → partial, none → failed.
    Raises :class:`LifecycleError` for an uninterrupted batch with unfinished items.
    """
    if interrupted:
        return BatchStatus.CANCELLED
    if finished < total:
        raise LifecycleError(
            f"{total - finished} of {total} items have not finished; a batch can only end "
            "when all have, unless it is cancelled"
        )
    if succeeded == total:
        return BatchStatus.COMPLETED
    if succeeded > 0:
        return BatchStatus.PARTIAL
    return BatchStatus.FAILED


def finish_batch(
    batch: Batch, *, interrupted: bool = False, now: dt.datetime | None = None
) -> Batch:
    """Return ``batch`` in its derived final status with ``completed_at`` stamped.

    A pending batch can only be cancelled. Raises :class:`InvalidTransition` for a batch
    that has already ended.
    """
    if batch.status in TERMINAL_BATCH_STATUSES or (
        batch.status is BatchStatus.PENDING and not interrupted
    ):
        requested = derive_batch_status(
            total=batch.total,
            succeeded=batch.succeeded,
            finished=batch.total,
            interrupted=interrupted,
        )
        _batch_move(batch, requested)
    status = derive_batch_status(
        total=batch.total,
        succeeded=batch.succeeded,
        finished=batch.finished,
        interrupted=interrupted,
    )
    _batch_move(batch, status)
    return Batch.model_validate(
        {
            **batch.__dict__,
            "status": status,
            "completed_at": _forward(batch.started_at or batch.created_at, now),
        }
    )
