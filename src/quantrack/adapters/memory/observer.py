"""An in-memory batch observer that keeps every batch and item it hears about."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime

from quantrack.domain import (
    Batch,
    BatchItemResult,
    BatchNotFound,
    BatchStatus,
)
from quantrack.domain.batches import accept_finish, accept_item, accept_items, accept_start

__all__ = ["InMemoryBatchObserver"]


class InMemoryBatchObserver:
    """Implements :class:`~quantrack.ports.BatchObserver` (with the
    :class:`~quantrack.ports.BatchItemsObserver` capability) and
    :class:`~quantrack.ports.BatchHistory` on dicts; safe to share between threads.
    """

    def __init__(self) -> None:
        self._batches: dict[str, Batch] = {}
        self._items: dict[str, dict[tuple[int, int], BatchItemResult]] = {}
        self._lock = threading.RLock()

    def on_batch_started(self, batch: Batch) -> None:
        """Store a new running batch, or accept the resumption of an unfinished one."""
        with self._lock:
            stored = accept_start(self._batches.get(batch.id), batch)
            self._batches[batch.id] = stored
            self._items.setdefault(batch.id, {})

    def on_item_finished(self, batch: Batch, item: BatchItemResult) -> None:
        """Count ``item`` in its batch."""
        with self._lock:
            stored = self._stored(batch.id)
            items = self._items[batch.id]
            self._batches[batch.id] = accept_item(stored, item, (item.index, item.attempt) in items)
            items[(item.index, item.attempt)] = item

    def on_items_finished(self, batch: Batch, items: Sequence[BatchItemResult]) -> None:
        """Count ``items`` in their batch, all or (when one is refused) none."""
        with self._lock:
            stored = self._stored(batch.id)
            kept = self._items[batch.id]
            self._batches[batch.id] = accept_items(stored, items, kept.keys())
            kept.update(((item.index, item.attempt), item) for item in items)

    def on_batch_finished(self, batch: Batch) -> None:
        """Store the batch's final status, checked against the items it holds."""
        with self._lock:
            self._batches[batch.id] = accept_finish(self._stored(batch.id), batch)

    def get_batch(self, batch_id: str) -> Batch:
        """Return the batch."""
        return self._stored(batch_id)

    def list_batches(
        self,
        *,
        status: BatchStatus | None = None,
        limit: int | None = None,
        since: datetime | None = None,
    ) -> list[Batch]:
        """Batches newest first."""
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)  # naive means UTC, as everywhere in quantrack
        with self._lock:
            batches = [
                b
                for b in self._batches.values()
                if (status is None or b.status is status)
                and (since is None or b.created_at >= since)
            ]
        batches.sort(key=lambda b: (b.created_at, b.id), reverse=True)
        return batches[:limit] if limit is not None else batches

    def batch_items(self, batch_id: str) -> list[BatchItemResult]:
        """The batch's items by index, then attempt."""
        self._stored(batch_id)
        with self._lock:
            return [self._items[batch_id][key] for key in sorted(self._items[batch_id])]

    def record_selection(self, batch_id: str, metric: str) -> Batch:
        """Keep ``metric`` as the batch's selection metric; return the updated batch."""
        if not isinstance(metric, str) or not metric.strip():
            raise ValueError(f"metric must be a metric name such as 'sharpe', got {metric!r}")
        with self._lock:
            stored = self._stored(batch_id).model_copy(update={"selection_metric": metric.strip()})
            self._batches[batch_id] = stored
            return stored

    def _stored(self, batch_id: str) -> Batch:
        try:
            return self._batches[batch_id]
        except KeyError:
            raise BatchNotFound(batch_id) from None
