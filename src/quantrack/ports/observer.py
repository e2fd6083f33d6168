"""The :class:`BatchObserver` port, the optional :class:`BatchItemsObserver` capability, and
:class:`BatchHistory` for observers that persist.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from quantrack.domain import Batch, BatchItemResult, BatchStatus

__all__ = ["BatchHistory", "BatchItemsObserver", "BatchObserver"]


@runtime_checkable
class BatchObserver(Protocol):
    """Hears a batch's events, in order: started, each item finished, finished.

    The batch runner derives every :class:`Batch` snapshot it passes with the functions of
    :mod:`quantrack.domain.lifecycle`; an observer may persist, log or display them. An
    observer that raises is logged and detached by the runner; it never stops the batch.
    """

    def on_batch_started(self, batch: Batch) -> None:
        """``batch`` has just moved to running (``batch.total`` items to come)."""
        ...

    def on_item_finished(self, batch: Batch, item: BatchItemResult) -> None:
        """``item`` has finished; ``batch`` already counts it."""
        ...

    def on_batch_finished(self, batch: Batch) -> None:
        """``batch`` has reached its final, derived status."""
        ...


@runtime_checkable
class BatchItemsObserver(Protocol):
    """An optional capability of a :class:`BatchObserver`: hearing many finished items in
    one event, for runners that finish them together (a vectorbt sweep finishes thousands
    at once).

    A runner checks for it with ``isinstance(observer, BatchItemsObserver)``; an observer
    without it hears ``on_item_finished`` once per item instead, in order, each time with
    the batch that counts them all. An observer with it must end up exactly where the
    per-item events would have left it.
    """

    def on_items_finished(self, batch: Batch, items: Sequence[BatchItemResult]) -> None:
        """``items`` have finished, in this order; ``batch`` already counts all of them
        (:func:`~quantrack.domain.lifecycle.record_items`).

        A persisting observer checks them as it checks single items, and refuses (raising
        :class:`LifecycleError`) the whole event, recording none of them, when it would
        refuse one.
        """
        ...


@runtime_checkable
class BatchHistory(Protocol):
    """Read access to batches, offered by observers that persist them.

    Persisting observers validate each event against what they hold: an item for an
    unknown or finished batch, an index seen twice in the same attempt, or a status change
    the batch lifecycle forbids raises :class:`LifecycleError` (or
    :class:`BatchNotFound`) and changes nothing.
    """

    def get_batch(self, batch_id: str) -> Batch:
        """Return the batch; raises :class:`BatchNotFound`."""
        ...

    def list_batches(
        self,
        *,
        status: BatchStatus | None = None,
        limit: int | None = None,
        since: datetime | None = None,
    ) -> list[Batch]:
        """Return batches, newest first, optionally only those in ``status`` and those
        created at or after ``since``.
        """
        ...

    def batch_items(self, batch_id: str) -> list[BatchItemResult]:
        """Return the batch's item results ordered by index then attempt.

        Raises :class:`BatchNotFound`.
        """
        ...

    def record_selection(self, batch_id: str, metric: str) -> Batch:
        """Record that a run was picked from the batch by ``metric`` (the latest pick
        wins) and return the batch as now stored; its status and counts are unchanged.

        Raises :class:`BatchNotFound`, and ValueError for an empty ``metric``.
        """
        ...
