"""What a persisting batch observer accepts: the batch lifecycle applied to events.

A persisting observer keeps its own copy of each batch. These functions take that copy
and an incoming event and return the copy to store next, or raise; the counts are always
re-derived here from the items, never trusted from the event.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from quantrack.domain.errors import InvalidTransition, LifecycleError
from quantrack.domain.lifecycle import finish_batch, log_transition, record_item, record_items
from quantrack.domain.models import Batch, BatchItemResult, BatchStatus

__all__ = ["accept_finish", "accept_item", "accept_items", "accept_start"]


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
    return accept_items(stored, (item,), {(item.index, item.attempt)} if seen else ())


def accept_items(
    stored: Batch, items: Sequence[BatchItemResult], seen: Collection[tuple[int, int]]
) -> Batch:
    """What a persisting observer stores once ``items`` finished: ``stored`` with them
    counted (:func:`record_items`).

    ``seen`` holds the (index, attempt) pairs already recorded; an item that repeats one
    of them, or an earlier item of the same call, is refused with :class:`LifecycleError`
    (as :func:`accept_item` refuses it one by one), and then
    nothing is counted.
    """
    keys = [(item.index, item.attempt) for item in items]
    unique = set(keys)
    if len(unique) != len(keys) or not unique.isdisjoint(seen):
        # One of them is refused: check and count them one by one, so the error is the
        # one the one-by-one path raises first.
        earlier: set[tuple[int, int]] = set()
        for item, key in zip(items, keys, strict=True):
            if key in seen or key in earlier:
                raise LifecycleError(
                    f"item {item.index} (attempt {item.attempt}) of batch {stored.id} was "
                    "already recorded; a rerun is a new attempt"
                )
            earlier.add(key)
            stored = record_item(stored, item)
        return stored
    return record_items(stored, items)


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
