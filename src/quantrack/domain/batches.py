"""What a persisting batch observer accepts: the batch lifecycle applied to events.

A persisting observer keeps its own copy of each batch. These functions take that copy
and an incoming event and return the copy to store next, or raise; the counts are always
re-derived here from the items, never trusted from the event.
"""

from __future__ import annotations

from quantrack.domain.errors import InvalidTransition, LifecycleError
from quantrack.domain.lifecycle import finish_batch, log_transition, record_item
from quantrack.domain.models import Batch, BatchItemResult, BatchStatus

__all__ = ["accept_finish", "accept_item", "accept_start"]


def accept_start(stored: Batch | None, incoming: Batch) -> Batch:
    """The batch to store when ``incoming`` starts.

    A new batch must arrive running. A batch already stored may start again only while it
    has not ended: that is a resumption, and the stored counts are kept.
    """
    if incoming.status is not BatchStatus.RUNNING:
        raise LifecycleError(
            f"batch {incoming.id} must be 'running' when it starts, not {incoming.status.value!r}"
        )
    if stored is None:
        log_transition(BatchStatus.PENDING.value, incoming)
        return incoming
    if stored.is_terminal:
        raise InvalidTransition(
            f"batch {stored.id}",
            stored.status.value,
            BatchStatus.RUNNING.value,
            "an ended batch cannot be resumed",
        )
    beats = [t for t in (stored.heartbeat_at, incoming.heartbeat_at, incoming.started_at) if t]
    # The heartbeat of a resumed batch only moves forward, like every other timestamp.
    return stored.model_copy(update={"heartbeat_at": max(beats, default=None)})


def accept_item(stored: Batch, item: BatchItemResult, seen: bool) -> Batch:
    """The batch to store once ``item`` finished; ``seen`` says the index and attempt
    were already recorded, which is refused.
    """
    if seen:
        raise LifecycleError(
            f"item {item.index} (attempt {item.attempt}) of batch {stored.id} was already "
            "recorded; a rerun is a new attempt"
        )
    return record_item(stored, item)


def accept_finish(stored: Batch, incoming: Batch) -> Batch:
    """The batch to store when it finishes: its status is derived from the stored counts
    and must agree with the status the runner derived.
    """
    final = finish_batch(
        stored,
        interrupted=incoming.status is BatchStatus.CANCELLED,
        now=incoming.completed_at,
    )
    if final.status is not incoming.status:
        raise LifecycleError(
            f"batch {stored.id} ends {incoming.status.value!r} by the runner but its recorded "
            f"items give {final.status.value!r}"
        )
    log_transition(stored.status.value, final)
    return final
