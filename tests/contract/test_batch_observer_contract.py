"""The persisting BatchObserver contract (BatchObserver + BatchHistory), for every adapter.

The runner's side of each event is built with the domain's lifecycle functions, as the
batch runner builds it; the observer must accept exactly what the lifecycle allows.
"""

from __future__ import annotations

import datetime as dt

import pytest

from quantrack.domain import (
    Batch,
    BatchItemResult,
    BatchNotFound,
    BatchStatus,
    ErrorCategory,
    ExperimentStatus,
    InvalidTransition,
    LifecycleError,
)
from quantrack.domain.lifecycle import finish_batch, record_item, start_batch
from quantrack.workspace import PersistingObserver

S = ExperimentStatus
B = BatchStatus
T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)


def started(total: int, *, name: str = "sweep", batch_id: str | None = None, at: int = 0) -> Batch:
    """A batch of ``total`` items, moved to running by the lifecycle."""
    pending = Batch(
        id=batch_id or f"{name}-{at}",
        name=name,
        total=total,
        created_at=T0 + dt.timedelta(minutes=at),
        params={"grid": [1, 2]},
        tags=("nightly",),
    )
    return start_batch(pending, now=pending.created_at)


def item(index: int, status: ExperimentStatus = S.COMPLETED, **fields: object) -> BatchItemResult:
    """An item result; failed ones get an error and a category unless given."""
    if status is S.FAILED:
        fields.setdefault("error", f"item {index} broke")
        fields.setdefault("error_category", ErrorCategory.DATA_ERROR)
    return BatchItemResult.model_validate(
        {"index": index, "status": status, "experiment_id": f"run-{index}", **fields}
    )


def feed(observer: PersistingObserver, batch: Batch, *items: BatchItemResult) -> Batch:
    """Send ``items`` as the runner would; return the runner's batch after them."""
    for one in items:
        batch = record_item(batch, one)
        observer.on_item_finished(batch, one)
    return batch


def test_a_whole_batch_is_kept(observer: PersistingObserver) -> None:
    """started, items and finished leave the batch completed with its counts and items."""
    batch = started(3)
    observer.on_batch_started(batch)
    assert observer.get_batch(batch.id).status is B.RUNNING
    batch = feed(observer, batch, item(0), item(2, duration_seconds=1.5), item(1, reused=True))
    final = finish_batch(batch)
    observer.on_batch_finished(final)
    stored = observer.get_batch(batch.id)
    assert stored.status is B.COMPLETED
    assert (stored.total, stored.succeeded, stored.failed, stored.cancelled) == (3, 3, 0, 0)
    assert stored.reused == 1
    assert stored.completed_at is not None
    assert stored.started_at == batch.started_at
    assert stored.name == "sweep"
    assert stored.params == {"grid": [1, 2]}
    assert stored.tags == ("nightly",)
    items = observer.batch_items(batch.id)
    assert [one.index for one in items] == [0, 1, 2]
    assert items[2].duration_seconds == 1.5
    assert items[1].reused


def test_counts_and_error_summary(observer: PersistingObserver) -> None:
    """Failed items are counted by category; a mix of outcomes ends partial."""
    batch = started(5)
    observer.on_batch_started(batch)
    batch = feed(
        observer,
        batch,
        item(0),
        item(1, S.FAILED),
        item(2, S.FAILED, error_category=ErrorCategory.TIMEOUT),
        item(3, S.FAILED),
        item(4, S.CANCELLED),
    )
    running = observer.get_batch(batch.id)
    assert (running.succeeded, running.failed, running.cancelled) == (1, 3, 1)
    assert running.error_summary == {ErrorCategory.DATA_ERROR: 2, ErrorCategory.TIMEOUT: 1}
    assert running.status is B.RUNNING
    observer.on_batch_finished(finish_batch(batch))
    assert observer.get_batch(batch.id).status is B.PARTIAL
    failed = observer.batch_items(batch.id)[1]
    assert failed.error == "item 1 broke"
    assert failed.error_category is ErrorCategory.DATA_ERROR


def test_counts_come_from_items_not_from_the_event(observer: PersistingObserver) -> None:
    """The observer counts the items it heard, not the counts a runner claims."""
    batch = started(3)
    observer.on_batch_started(batch)
    lying = batch.model_copy(update={"succeeded": 3})
    observer.on_item_finished(lying, item(0))
    assert observer.get_batch(batch.id).succeeded == 1


def test_all_failed_batch_fails(observer: PersistingObserver) -> None:
    """A batch in which no item succeeded ends failed."""
    batch = started(2)
    observer.on_batch_started(batch)
    batch = feed(observer, batch, item(0, S.FAILED), item(1, S.FAILED))
    observer.on_batch_finished(finish_batch(batch))
    assert observer.get_batch(batch.id).status is B.FAILED


def test_empty_batch_completes(observer: PersistingObserver) -> None:
    """A batch of zero items completes."""
    batch = started(0)
    observer.on_batch_started(batch)
    observer.on_batch_finished(finish_batch(batch))
    assert observer.get_batch(batch.id).status is B.COMPLETED
    assert observer.batch_items(batch.id) == []


def test_interrupted_batch_is_cancelled(observer: PersistingObserver) -> None:
    """A batch interrupted before all items finished ends cancelled, keeping its counts."""
    batch = started(4)
    observer.on_batch_started(batch)
    batch = feed(observer, batch, item(0))
    observer.on_batch_finished(finish_batch(batch, interrupted=True))
    stored = observer.get_batch(batch.id)
    assert stored.status is B.CANCELLED
    assert stored.succeeded == 1


def test_resuming_a_running_batch_keeps_its_counts(observer: PersistingObserver) -> None:
    """Starting a batch that is still running is a resumption: its items are kept."""
    batch = started(3)
    observer.on_batch_started(batch)
    feed(observer, batch, item(0))
    observer.on_batch_started(batch)
    stored = observer.get_batch(batch.id)
    assert stored.status is B.RUNNING
    assert stored.succeeded == 1
    resumed = record_item(stored, item(1))
    observer.on_item_finished(resumed, item(1))
    assert observer.get_batch(batch.id).succeeded == 2
    assert [one.index for one in observer.batch_items(batch.id)] == [0, 1]


def test_an_ended_batch_cannot_be_resumed(observer: PersistingObserver) -> None:
    """Starting a batch that has ended raises InvalidTransition and changes nothing."""
    batch = started(1)
    observer.on_batch_started(batch)
    batch = feed(observer, batch, item(0))
    observer.on_batch_finished(finish_batch(batch))
    before = observer.get_batch(batch.id)
    with pytest.raises(InvalidTransition, match="completed"):
        observer.on_batch_started(started(1, batch_id=batch.id))
    assert observer.get_batch(batch.id) == before


def test_a_batch_must_start_running(observer: PersistingObserver) -> None:
    """A started event whose batch is not running is refused and nothing is stored."""
    with pytest.raises(LifecycleError, match="running"):
        observer.on_batch_started(Batch(id="p", name="pending", total=2, created_at=T0))
    with pytest.raises(BatchNotFound):
        observer.get_batch("p")


def test_items_after_finish_are_refused(observer: PersistingObserver) -> None:
    """An item for an ended batch raises LifecycleError and changes nothing."""
    batch = started(2)
    observer.on_batch_started(batch)
    batch = feed(observer, batch, item(0))
    observer.on_batch_finished(finish_batch(batch, interrupted=True))
    before = observer.get_batch(batch.id), observer.batch_items(batch.id)
    with pytest.raises(LifecycleError, match="cancelled"):
        observer.on_item_finished(batch, item(1))
    assert (observer.get_batch(batch.id), observer.batch_items(batch.id)) == before


def test_duplicate_index_and_attempt_is_refused(observer: PersistingObserver) -> None:
    """The same (index, attempt) twice raises; a new attempt of that index is accepted."""
    batch = started(3)
    observer.on_batch_started(batch)
    batch = feed(observer, batch, item(0, S.FAILED))
    before = observer.get_batch(batch.id), observer.batch_items(batch.id)
    with pytest.raises(LifecycleError, match="already"):
        observer.on_item_finished(batch, item(0))
    assert (observer.get_batch(batch.id), observer.batch_items(batch.id)) == before
    observer.on_item_finished(batch, item(0, attempt=2))
    items = observer.batch_items(batch.id)
    assert [(one.index, one.attempt) for one in items] == [(0, 1), (0, 2)]


def test_item_index_outside_the_batch_is_refused(observer: PersistingObserver) -> None:
    """An item index at or beyond total raises LifecycleError and changes nothing."""
    batch = started(2)
    observer.on_batch_started(batch)
    with pytest.raises(LifecycleError, match="outside"):
        observer.on_item_finished(batch, item(2))
    assert observer.batch_items(batch.id) == []
    assert observer.get_batch(batch.id).finished == 0


def test_more_items_than_total_are_refused(observer: PersistingObserver) -> None:
    """Once every item has finished, another attempt is refused."""
    batch = started(1)
    observer.on_batch_started(batch)
    batch = feed(observer, batch, item(0, S.FAILED))
    with pytest.raises(LifecycleError, match="already finished"):
        observer.on_item_finished(batch, item(0, attempt=2))
    assert observer.get_batch(batch.id).finished == 1


def test_finish_with_mismatched_status_is_refused(observer: PersistingObserver) -> None:
    """A finished event whose status disagrees with the stored items raises; nothing changes."""
    batch = started(2)
    observer.on_batch_started(batch)
    batch = feed(observer, batch, item(0), item(1, S.FAILED))
    claimed = Batch.model_validate(
        {**batch.model_dump(), "status": B.COMPLETED, "completed_at": batch.started_at}
    )
    before = observer.get_batch(batch.id)
    with pytest.raises(LifecycleError, match="partial"):
        observer.on_batch_finished(claimed)
    assert observer.get_batch(batch.id) == before


def test_finish_with_unfinished_items_is_refused(observer: PersistingObserver) -> None:
    """A batch cannot end (other than cancelled) before all its items finished."""
    batch = started(3)
    observer.on_batch_started(batch)
    batch = feed(observer, batch, item(0))
    claimed = Batch.model_validate(
        {**batch.model_dump(), "status": B.COMPLETED, "completed_at": batch.started_at}
    )
    with pytest.raises(LifecycleError, match="not finished"):
        observer.on_batch_finished(claimed)
    assert observer.get_batch(batch.id).status is B.RUNNING


def test_finishing_twice_is_refused(observer: PersistingObserver) -> None:
    """A second finished event raises InvalidTransition; the first outcome stays."""
    batch = started(1)
    observer.on_batch_started(batch)
    batch = feed(observer, batch, item(0))
    final = finish_batch(batch)
    observer.on_batch_finished(final)
    stored = observer.get_batch(batch.id)
    with pytest.raises(InvalidTransition):
        observer.on_batch_finished(final)
    assert observer.get_batch(batch.id) == stored


def test_unknown_batch_raises_not_found(observer: PersistingObserver) -> None:
    """Events and reads for a batch never started raise BatchNotFound (also a KeyError)."""
    ghost = started(1, batch_id="ghost")
    with pytest.raises(BatchNotFound, match="ghost") as caught:
        observer.get_batch("ghost")
    assert isinstance(caught.value, KeyError)
    with pytest.raises(BatchNotFound):
        observer.batch_items("ghost")
    with pytest.raises(BatchNotFound):
        observer.on_item_finished(ghost, item(0))
    with pytest.raises(BatchNotFound):
        observer.on_batch_finished(finish_batch(ghost, interrupted=True))
    assert observer.list_batches() == []


def test_list_batches_newest_first_with_filters(observer: PersistingObserver) -> None:
    """list_batches orders by creation, newest first, and filters by status and limit."""
    made = []
    for at in range(4):
        batch = started(1, at=at)
        observer.on_batch_started(batch)
        made.append(batch)
    done = feed(observer, made[1], item(0))
    observer.on_batch_finished(finish_batch(done))
    observer.on_batch_finished(finish_batch(made[2], interrupted=True))
    assert [b.id for b in observer.list_batches()] == [b.id for b in reversed(made)]
    assert [b.id for b in observer.list_batches(status=B.RUNNING)] == [made[3].id, made[0].id]
    assert [b.id for b in observer.list_batches(status=B.COMPLETED)] == [made[1].id]
    assert [b.id for b in observer.list_batches(status=B.CANCELLED)] == [made[2].id]
    assert observer.list_batches(status=B.PARTIAL) == []
    assert [b.id for b in observer.list_batches(limit=2)] == [made[3].id, made[2].id]


def test_hostile_batch_names_round_trip(observer: PersistingObserver) -> None:
    """Batch names and item errors with quotes, NUL and unicode are kept exactly."""
    name = "'; drop table batches; -- \x00 ☃"
    batch = started(1, name=name, batch_id="hostile")
    observer.on_batch_started(batch)
    feed(observer, batch, item(0, S.FAILED, error=name))
    assert observer.get_batch("hostile").name == name
    assert observer.batch_items("hostile")[0].error == name


def test_every_item_field_round_trips(observer: PersistingObserver) -> None:
    """Each field of each item (nested and unicode params, errors, categories, missing
    durations, attempts, reuse) reads back equal to what was sent.
    """
    batch = started(4, batch_id="fields")
    observer.on_batch_started(batch)
    sent = [
        item(0, params={"window": 5, "grid": [1, 2.5], "note": 'é "q" \x00'}),
        item(1, S.FAILED, error="boom ☃", error_category=ErrorCategory.TIMEOUT, attempt=2),
        item(2, S.CANCELLED, duration_seconds=None, experiment_id=None),
        item(3, reused=True, duration_seconds=0.25, params={"nested": {"b": 1, "a": None}}),
    ]
    feed(observer, batch, *sent)
    assert observer.batch_items("fields") == sent


def test_list_batches_since(observer: PersistingObserver) -> None:
    """Since keeps batches created at or after it; a naive since is read as UTC."""
    made = [started(1, at=at) for at in range(3)]
    for batch in made:
        observer.on_batch_started(batch)
    since = made[1].created_at
    assert [b.id for b in observer.list_batches(since=since)] == [made[2].id, made[1].id]
    naive = since.replace(tzinfo=None)
    assert [b.id for b in observer.list_batches(since=naive)] == [made[2].id, made[1].id]
    later = made[2].created_at + dt.timedelta(seconds=1)
    assert observer.list_batches(since=later) == []
    assert [b.id for b in observer.list_batches(since=since, limit=1)] == [made[2].id]


def test_record_selection_keeps_the_metric_and_nothing_else(observer: PersistingObserver) -> None:
    """record_selection stores the picking metric (latest wins); status and counts stay."""
    batch = started(2, batch_id="picked")
    observer.on_batch_started(batch)
    batch = feed(observer, batch, item(0), item(1, S.FAILED))
    observer.on_batch_finished(finish_batch(batch, now=T0 + dt.timedelta(minutes=5)))
    before = observer.get_batch("picked")
    assert before.selection_metric is None
    returned = observer.record_selection("picked", "sharpe")
    assert returned == observer.get_batch("picked")
    assert returned.selection_metric == "sharpe"
    assert returned.model_dump(exclude={"selection_metric"}) == before.model_dump(
        exclude={"selection_metric"}
    )
    assert observer.record_selection("picked", "total_return").selection_metric == "total_return"
    assert observer.get_batch("picked").selection_metric == "total_return"


def test_record_selection_survives_later_events(observer: PersistingObserver) -> None:
    """A selection made while the batch runs is kept through its items and its finish."""
    batch = started(1, batch_id="early")
    observer.on_batch_started(batch)
    observer.record_selection("early", "sortino")
    batch = feed(observer, batch, item(0))
    observer.on_batch_finished(finish_batch(batch, now=T0 + dt.timedelta(minutes=1)))
    assert observer.get_batch("early").selection_metric == "sortino"


def test_record_selection_of_unknown_batch_or_empty_metric_raises(
    observer: PersistingObserver,
) -> None:
    """An unknown batch raises BatchNotFound; an empty metric raises ValueError."""
    with pytest.raises(BatchNotFound):
        observer.record_selection("missing", "sharpe")
    observer.on_batch_started(started(1, batch_id="known"))
    with pytest.raises(ValueError, match="metric"):
        observer.record_selection("known", " ")
    assert observer.get_batch("known").selection_metric is None
