"""The bulk batch lifecycle (record_items, accept_items) and ids drawn in bulk (new_ids)."""

from __future__ import annotations

import time
import uuid

import pytest

from quantrack.domain import (
    Batch,
    BatchItemResult,
    BatchStatus,
    ErrorCategory,
    ExperimentStatus,
    LifecycleError,
    new_ids,
)
from quantrack.domain.batches import accept_items
from quantrack.domain.ids import ID_PATTERN
from quantrack.domain.lifecycle import finish_batch, record_items, start_batch

S = ExperimentStatus


def running(total: int) -> Batch:
    """A running batch of ``total`` items."""
    return start_batch(Batch(name="sweep", total=total))


def done(index: int, status: ExperimentStatus = S.COMPLETED, **fields: object) -> BatchItemResult:
    """A finished item; a failed one gets an error and a category unless given."""
    if status is S.FAILED:
        fields.setdefault("error", "it broke")
        fields.setdefault("error_category", ErrorCategory.DATA_ERROR)
    return BatchItemResult.model_validate({"index": index, "status": status, **fields})


def test_record_items_counts_every_outcome_at_once() -> None:
    """Completed, reused, failed (by category, unknown when missing) and cancelled items
    are all counted in one call.
    """
    items = [
        done(0),
        done(1, reused=True),
        done(2, S.FAILED),
        done(3, S.FAILED, error_category=ErrorCategory.TIMEOUT),
        done(4, S.FAILED, error_category=ErrorCategory.TIMEOUT),
        done(5, S.CANCELLED),
    ]
    batch = record_items(running(6), items)
    assert (batch.succeeded, batch.reused, batch.failed, batch.cancelled) == (2, 1, 3, 1)
    assert batch.error_summary == {ErrorCategory.DATA_ERROR: 1, ErrorCategory.TIMEOUT: 2}
    assert finish_batch(batch).status is BatchStatus.PARTIAL


def test_record_items_of_nothing_leaves_the_batch() -> None:
    """No items give the same batch back, whatever its status (as no record_item calls would)."""
    pending = Batch(name="sweep", total=2)
    assert record_items(pending, []) is pending


@pytest.mark.parametrize(
    ("batch", "items", "message"),
    [
        (Batch(name="sweep", total=2), [done(0)], "items can only finish while it is 'running'"),
        (running(2), [done(0), done(2)], "item index 2 is outside batch"),
        (running(2), [done(0), done(1), done(0, attempt=2)], "all 2 items of batch"),
    ],
)
def test_record_items_refuses_what_record_item_refuses(
    batch: Batch, items: list[BatchItemResult], message: str
) -> None:
    """A batch not running, an index outside it, or more items than it has are refused."""
    with pytest.raises(LifecycleError, match=message):
        record_items(batch, items)


def test_accept_items_refuses_an_index_seen_before_or_twice() -> None:
    """An (index, attempt) already stored, or repeated in the same call, is refused."""
    batch = running(3)
    with pytest.raises(LifecycleError, match=r"item 1 \(attempt 1\) .* already recorded"):
        accept_items(batch, [done(0), done(1)], {(1, 1)})
    with pytest.raises(LifecycleError, match=r"item 0 \(attempt 1\) .* already recorded"):
        accept_items(batch, [done(0), done(0)], set())
    accepted = accept_items(batch, [done(0), done(0, attempt=2)], {(0, 3)})
    assert accepted.succeeded == 2


def test_new_ids_are_uuid7_ids_like_new_id() -> None:
    """Bulk ids are distinct valid UUIDv7 hex strings stamped with the current millisecond."""
    before = time.time_ns() // 1_000_000
    ids = new_ids(2_000)
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 2_000
    for value in ids:
        assert len(value) == 32
        assert ID_PATTERN.match(value)
        parsed = uuid.UUID(value)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert before <= int(value[:12], 16) <= after
    assert new_ids(0) == []


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_new_ids_refuses_a_count_that_is_not_a_whole_number(bad: object) -> None:
    """A negative or non-integer count is refused with what was wrong."""
    with pytest.raises(ValueError, match="whole number >= 0"):
        new_ids(bad)  # type: ignore[arg-type]
