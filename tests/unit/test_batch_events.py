"""accept_start / accept_item / accept_finish: the batch lifecycle applied to observer events."""

from __future__ import annotations

import datetime as dt

import pytest

from quantrack.domain import (
    Batch,
    BatchItemResult,
    BatchStatus,
    ExperimentStatus,
    InvalidTransition,
    LifecycleError,
)
from quantrack.domain.batches import accept_finish, accept_item, accept_start
from quantrack.domain.lifecycle import finish_batch, start_batch

T0 = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
MIN = dt.timedelta(minutes=1)


def running(total: int = 2, at: dt.datetime = T0) -> Batch:
    """A batch that started at ``at``."""
    return start_batch(Batch(id="b", name="b", total=total, created_at=T0), now=at)


def test_a_new_batch_must_be_running() -> None:
    """A new batch is stored as it arrives, and only when running."""
    assert accept_start(None, running()) == running()
    with pytest.raises(LifecycleError, match="must be 'running' when it starts"):
        accept_start(None, Batch(name="b", total=1))


def test_resumption_keeps_counts_and_moves_heartbeat_forward() -> None:
    """A resumed batch keeps its stored counts; its heartbeat never moves back."""
    item = BatchItemResult(index=0, status=ExperimentStatus.COMPLETED)
    stored = accept_item(running(at=T0 + 5 * MIN), item, seen=False)
    resumed = accept_start(stored, running(at=T0 + 9 * MIN))
    assert resumed.succeeded == 1
    assert resumed.heartbeat_at == T0 + 9 * MIN
    again = accept_start(resumed, running(at=T0 + 6 * MIN))
    assert again.heartbeat_at == T0 + 9 * MIN


def test_an_ended_batch_is_not_resumed() -> None:
    """Starting a batch that has ended is an InvalidTransition."""
    ended = finish_batch(running(0), now=T0)
    with pytest.raises(InvalidTransition, match="an ended batch cannot be resumed"):
        accept_start(ended, running(0))


def test_a_seen_item_is_refused() -> None:
    """An (index, attempt) already recorded is refused, naming both."""
    item = BatchItemResult(index=1, attempt=2, status=ExperimentStatus.COMPLETED)
    with pytest.raises(LifecycleError, match=r"item 1 \(attempt 2\) of batch b"):
        accept_item(running(), item, seen=True)


def test_finish_must_agree_with_the_items() -> None:
    """The runner's final status must be the one the stored items give."""
    item = BatchItemResult(index=0, status=ExperimentStatus.COMPLETED)
    stored = accept_item(running(1), item, seen=False)
    final = accept_finish(stored, finish_batch(stored))
    assert final.status is BatchStatus.COMPLETED
    claimed = Batch.model_validate(
        {**stored.model_dump(), "status": BatchStatus.FAILED, "completed_at": T0}
    )
    with pytest.raises(LifecycleError, match=r"ends 'failed' by the runner but .* 'completed'"):
        accept_finish(stored, claimed)
