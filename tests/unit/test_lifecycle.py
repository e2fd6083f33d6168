"""The lifecycle as pure functions: transitions, timestamps, results, and batches."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
import structlog

from quantrack.domain import (
    Batch,
    BatchItemResult,
    BatchStatus,
    ErrorCategory,
    Experiment,
    ExperimentDefinition,
    ExperimentNotRunning,
    ExperimentResults,
    ExperimentStatus,
    InvalidTransition,
    LifecycleError,
)
from quantrack.domain.lifecycle import (
    BATCH_TRANSITIONS,
    EXPERIMENT_TRANSITIONS,
    attach_results,
    can_transition,
    derive_batch_status,
    finish_batch,
    log_transition,
    new_experiment,
    record_item,
    stamp_heartbeat,
    start_batch,
    transition,
)

S = ExperimentStatus
B = BatchStatus
T0 = dt.datetime(2024, 1, 2, 9, tzinfo=dt.UTC)
SEC = dt.timedelta(seconds=1)

LEGAL = {
    (S.PENDING, S.RUNNING),
    (S.PENDING, S.CANCELLED),
    (S.RUNNING, S.COMPLETED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.CANCELLED),
}


def at(status: ExperimentStatus) -> Experiment:
    """An experiment created at T0 and moved to ``status`` one second per step."""
    experiment = new_experiment(ExperimentDefinition(name="x"), experiment_id="exp-1", now=T0)
    if status is S.PENDING:
        return experiment
    if status is S.CANCELLED:
        return transition(experiment, S.CANCELLED, now=T0 + SEC)
    experiment = transition(experiment, S.RUNNING, now=T0 + SEC)
    if status is S.RUNNING:
        return experiment
    error = "boom" if status is S.FAILED else None
    return transition(experiment, status, error=error, now=T0 + 2 * SEC)


def test_transition_table_is_the_designed_one() -> None:
    """The table allows exactly the five designed moves; terminal states allow none."""
    table = {(a, b) for a, targets in EXPERIMENT_TRANSITIONS.items() for b in targets}
    assert table == LEGAL
    assert set(EXPERIMENT_TRANSITIONS) == set(S)


@pytest.mark.parametrize(("current", "requested"), list(itertools.product(S, S)))
def test_every_pair_of_statuses(current: ExperimentStatus, requested: ExperimentStatus) -> None:
    """Each legal move succeeds; each illegal one raises naming both statuses, changing nothing."""
    before = at(current)
    error = "boom" if requested is S.FAILED else None
    assert can_transition(current, requested) == ((current, requested) in LEGAL)
    if (current, requested) in LEGAL:
        after = transition(before, requested, error=error, now=T0 + 5 * SEC)
        assert after.status is requested
    else:
        with pytest.raises(InvalidTransition) as caught:
            transition(before, requested, error=error, now=T0 + 5 * SEC)
        assert caught.value.current == current.value
        assert caught.value.requested == requested.value
        assert caught.value.subject == "experiment exp-1"
        assert "exp-1" in str(caught.value)
    assert before == at(current)


def test_transition_stamps_timestamps_and_duration() -> None:
    """Running stamps started_at, completed stamps completed_at; duration is derived."""
    running = transition(at(S.PENDING), S.RUNNING, now=T0 + SEC)
    assert running.started_at == T0 + SEC
    assert running.completed_at is None
    done = transition(running, S.COMPLETED, now=T0 + 4 * SEC)
    assert done.completed_at == T0 + 4 * SEC
    assert done.duration_seconds == 3.0


def test_clock_stepping_back_is_clamped_forward() -> None:
    """A 'now' earlier than the last timestamp is clamped to it: time never runs backwards."""
    running = transition(at(S.PENDING), S.RUNNING, now=T0 - 60 * SEC)
    assert running.started_at == T0
    done = transition(running, S.COMPLETED, now=T0 - 120 * SEC)
    assert done.completed_at == T0
    assert done.duration_seconds == 0.0
    cancelled = transition(at(S.PENDING), S.CANCELLED, now=T0 - SEC)
    assert cancelled.completed_at == T0


def test_naive_now_is_taken_as_utc() -> None:
    """A naive 'now' is read as UTC."""
    running = transition(at(S.PENDING), S.RUNNING, now=dt.datetime(2024, 1, 2, 10))
    assert running.started_at == T0 + 3600 * SEC


def test_transition_without_now_uses_the_clock() -> None:
    """Without 'now', the current time is stamped (never before creation)."""
    made = new_experiment(ExperimentDefinition(name="x"))
    running = transition(made, S.RUNNING)
    assert running.started_at is not None
    assert running.started_at >= made.created_at


@pytest.mark.parametrize("error", [None, "", "   "])
def test_failed_requires_an_error(error: str | None) -> None:
    """Failing without an error message is an InvalidTransition."""
    with pytest.raises(InvalidTransition, match="a failed experiment needs an error"):
        transition(at(S.RUNNING), S.FAILED, error=error)


def test_failed_records_error_and_defaults_category() -> None:
    """A failure keeps its message; the category defaults to unknown."""
    failed = transition(at(S.RUNNING), S.FAILED, error="boom")
    assert (failed.error, failed.error_category) == ("boom", ErrorCategory.UNKNOWN)
    timed = transition(at(S.RUNNING), S.FAILED, error="slow", error_category=ErrorCategory.TIMEOUT)
    assert timed.error_category is ErrorCategory.TIMEOUT


def test_completed_refuses_an_error() -> None:
    """Completing with an error message or category is an InvalidTransition."""
    with pytest.raises(InvalidTransition, match="has no error"):
        transition(at(S.RUNNING), S.COMPLETED, error="x")
    with pytest.raises(InvalidTransition, match="has no error"):
        transition(at(S.RUNNING), S.COMPLETED, error_category=ErrorCategory.UNKNOWN)


def test_running_refuses_an_error() -> None:
    """Starting with an error is an InvalidTransition."""
    with pytest.raises(InvalidTransition, match="running experiment has no error"):
        transition(at(S.PENDING), S.RUNNING, error="x")


def test_cancelled_may_carry_a_reason() -> None:
    """A cancellation may record why."""
    cancelled = transition(at(S.RUNNING), S.CANCELLED, error="KeyboardInterrupt")
    assert cancelled.error == "KeyboardInterrupt"
    assert transition(at(S.RUNNING), S.CANCELLED).error is None


def test_status_as_text_is_accepted_and_unknown_text_is_not() -> None:
    """A status may be given as text; text that is no status raises ValueError."""
    assert transition(at(S.PENDING), "running").status is S.RUNNING  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown experiment status 'finished'; use one of: pend"):
        transition(at(S.PENDING), "finished")  # type: ignore[arg-type]


def test_results_only_while_running() -> None:
    """attach_results merges into a running run and refuses every other status."""
    running = at(S.RUNNING)
    merged = attach_results(running, ExperimentResults(metrics={"a": 1.0, "b": 2.0}))
    merged = attach_results(merged, ExperimentResults(metrics={"a": 3.0}))
    assert merged.metrics == {"a": 3.0, "b": 2.0}
    for status in (S.PENDING, S.COMPLETED, S.FAILED, S.CANCELLED):
        with pytest.raises(ExperimentNotRunning, match=f"is '{status.value}'"):
            attach_results(at(status), ExperimentResults(metrics={"a": 1.0}))


def test_heartbeat_only_while_running_and_forward() -> None:
    """stamp_heartbeat stamps a running run, clamped forward, and refuses others."""
    running = at(S.RUNNING)
    beat = stamp_heartbeat(running, now=T0 + 10 * SEC)
    assert beat.heartbeat_at == T0 + 10 * SEC
    assert stamp_heartbeat(beat, now=T0).heartbeat_at == T0 + 10 * SEC
    with pytest.raises(ExperimentNotRunning):
        stamp_heartbeat(at(S.COMPLETED))


def test_new_experiment_is_pending_with_a_fresh_id() -> None:
    """new_experiment gives a pending run with a new id unless one is given."""
    one = new_experiment(ExperimentDefinition(name="x"))
    two = new_experiment(ExperimentDefinition(name="x"))
    assert one.status is S.PENDING
    assert one.id != two.id
    assert len(one.id) == 32


def test_log_transition_emits_one_structured_event() -> None:
    """Each lifecycle change logs one event with the id, both statuses and the duration."""
    done = at(S.FAILED)
    with structlog.testing.capture_logs() as logs:
        log_transition("running", done)
    assert logs == [
        {
            "event": "experiment.status_changed",
            "log_level": "info",
            "experiment_id": "exp-1",
            "from_status": "running",
            "to_status": "failed",
            "duration_s": 1.0,
            "error_category": "unknown",
        }
    ]


# -- batches ---------------------------------------------------------------------------


def batch(total: int) -> Batch:
    """A pending batch created at T0."""
    return Batch(id="batch-1", name="b", total=total, created_at=T0)


def item(index: int, status: ExperimentStatus = S.COMPLETED, **fields: object) -> BatchItemResult:
    """An item result (failed ones carry an error)."""
    if status is S.FAILED:
        fields.setdefault("error", "boom")
        fields.setdefault("error_category", ErrorCategory.DATA_ERROR)
    return BatchItemResult.model_validate({"index": index, "status": status, **fields})


def test_batch_transition_table() -> None:
    """Batches: pending → running/cancelled, running → any final status, finals are final."""
    assert BATCH_TRANSITIONS[B.PENDING] == {B.RUNNING, B.CANCELLED}
    assert BATCH_TRANSITIONS[B.RUNNING] == {B.COMPLETED, B.PARTIAL, B.FAILED, B.CANCELLED}
    for final in (B.COMPLETED, B.PARTIAL, B.FAILED, B.CANCELLED):
        assert BATCH_TRANSITIONS[final] == frozenset()


def test_start_batch_stamps_and_refuses_restart() -> None:
    """start_batch moves pending to running once, clamping its timestamp forward."""
    started = start_batch(batch(2), now=T0 - SEC)
    assert started.status is B.RUNNING
    assert started.started_at == T0
    with pytest.raises(InvalidTransition, match="'running' to 'running'"):
        start_batch(started)


def test_record_item_counts_each_outcome() -> None:
    """Completed, failed and cancelled items are counted; reuse and categories too."""
    running = start_batch(batch(4), now=T0)
    running = record_item(running, item(0, reused=True))
    running = record_item(running, item(1, S.FAILED))
    running = record_item(running, item(2, S.FAILED, error_category=ErrorCategory.TIMEOUT))
    running = record_item(running, item(3, S.CANCELLED))
    assert (running.succeeded, running.failed, running.cancelled, running.reused) == (1, 2, 1, 1)
    assert running.finished == 4
    assert running.error_summary == {ErrorCategory.DATA_ERROR: 1, ErrorCategory.TIMEOUT: 1}


def test_record_item_refusals() -> None:
    """Items are refused unless running, inside the batch, and while some are unfinished."""
    with pytest.raises(LifecycleError, match="is 'pending'"):
        record_item(batch(1), item(0))
    running = start_batch(batch(1), now=T0)
    with pytest.raises(LifecycleError, match="outside batch"):
        record_item(running, item(1))
    full = record_item(running, item(0))
    with pytest.raises(LifecycleError, match="already finished"):
        record_item(full, item(0, attempt=2))


@pytest.mark.parametrize(
    ("total", "succeeded", "finished", "interrupted", "expected"),
    [
        (0, 0, 0, False, B.COMPLETED),
        (3, 3, 3, False, B.COMPLETED),
        (3, 1, 3, False, B.PARTIAL),
        (3, 0, 3, False, B.FAILED),
        (3, 1, 1, True, B.CANCELLED),
        (3, 3, 3, True, B.CANCELLED),
    ],
)
def test_derive_batch_status(
    total: int, succeeded: int, finished: int, interrupted: bool, expected: BatchStatus
) -> None:
    """All succeeded → completed (empty too), some → partial, none → failed; interrupted →
    cancelled.
    """
    assert (
        derive_batch_status(
            total=total, succeeded=succeeded, finished=finished, interrupted=interrupted
        )
        is expected
    )


def test_derive_refuses_unfinished_items() -> None:
    """An uninterrupted batch cannot end while items are unfinished."""
    with pytest.raises(LifecycleError, match="2 of 3 items have not finished"):
        derive_batch_status(total=3, succeeded=1, finished=1)


def test_finish_batch() -> None:
    """finish_batch derives the final status and stamps completed_at forward."""
    running = start_batch(batch(2), now=T0 + SEC)
    running = record_item(record_item(running, item(0)), item(1, S.FAILED))
    done = finish_batch(running, now=T0)
    assert done.status is B.PARTIAL
    assert done.completed_at == T0 + SEC
    assert done.duration_seconds == 0.0


def test_finish_empty_batch_completes() -> None:
    """A running batch of zero items finishes completed."""
    assert finish_batch(start_batch(batch(0), now=T0), now=T0).status is B.COMPLETED


def test_finish_refusals() -> None:
    """An ended batch cannot finish again; a pending one can only be cancelled."""
    with pytest.raises(InvalidTransition, match="'pending' to 'completed'"):
        finish_batch(batch(0))
    cancelled = finish_batch(batch(2), interrupted=True, now=T0)
    assert cancelled.status is B.CANCELLED
    with pytest.raises(InvalidTransition, match="from 'cancelled'"):
        finish_batch(cancelled, interrupted=True)
    done = finish_batch(start_batch(batch(0), now=T0), now=T0)
    with pytest.raises(InvalidTransition, match="from 'completed'"):
        finish_batch(done)
    running = start_batch(batch(2), now=T0)
    with pytest.raises(LifecycleError, match="have not finished"):
        finish_batch(running)
