"""Batch observers that do not persist: a structlog log, a rich progress bar, a fan-out.

:class:`CompositeBatchObserver` is where the observer failure policy lives, once: an
observer that raises is logged once and detached; the batch and the other observers go
on. The batch runner is always handed a composite (see :func:`batch_observer`), so no
other code catches observer errors.

All of them have the :class:`~quantrack.ports.BatchItemsObserver` capability (many
finished items in one event); the composite hands an observer without it one
``on_item_finished`` per item instead (see :func:`notify_items_finished`).

An ``on_batch_started`` for a batch an observer has already seen is a heartbeat or a
resumption (the runner re-announces running batches periodically); the log and the
progress bar do not report it again.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Iterable, Sequence
from typing import IO, Any

import structlog

from quantrack.domain import Batch, BatchItemResult, ExperimentStatus
from quantrack.ports import BatchItemsObserver, BatchObserver

__all__ = [
    "CompositeBatchObserver",
    "LoggingBatchObserver",
    "ProgressBatchObserver",
    "batch_observer",
    "notify_items_finished",
]


def notify_items_finished(
    observer: BatchObserver, batch: Batch, items: Sequence[BatchItemResult]
) -> None:
    """Tell ``observer`` that ``items`` finished (``batch`` already counts them all): in
    one ``on_items_finished`` when it has the :class:`BatchItemsObserver` capability,
    otherwise with one ``on_item_finished`` per item, in order, each with ``batch``.
    """
    if isinstance(observer, BatchItemsObserver):
        observer.on_items_finished(batch, items)
        return
    for item in items:
        observer.on_item_finished(batch, item)


class CompositeBatchObserver:
    """Fans every event out to several observers and isolates them from each other.

    An observer that raises (any ``Exception``) is logged once, with its traceback, as
    ``batch.observer_detached`` and receives no further events; the event still reaches
    the others, and the batch goes on. ``KeyboardInterrupt`` is never swallowed.
    """

    def __init__(self, *observers: BatchObserver, logger: Any = None) -> None:
        for observer in observers:
            if not isinstance(observer, BatchObserver):
                raise TypeError(
                    f"{observer!r} is not a batch observer: it needs on_batch_started, "
                    "on_item_finished and on_batch_finished"
                )
        self._observers = list(observers)
        self._detached: list[tuple[BatchObserver, BaseException]] = []
        self._log = logger if logger is not None else structlog.get_logger("quantrack.observers")
        self._lock = threading.Lock()

    @property
    def observers(self) -> list[BatchObserver]:
        """The observers still attached."""
        with self._lock:
            return list(self._observers)

    @property
    def detached(self) -> list[tuple[BatchObserver, BaseException]]:
        """The observers detached so far, each with the error that detached it."""
        with self._lock:
            return list(self._detached)

    def on_batch_started(self, batch: Batch) -> None:
        """Tell every attached observer that ``batch`` started (or is still running)."""
        self._fan_out("on_batch_started", batch.id, batch)

    def on_item_finished(self, batch: Batch, item: BatchItemResult) -> None:
        """Tell every attached observer that ``item`` finished."""
        self._fan_out("on_item_finished", batch.id, batch, item)

    def on_items_finished(self, batch: Batch, items: Sequence[BatchItemResult]) -> None:
        """Tell every attached observer that ``items`` finished: in one event each, or one
        per item for an observer without the capability (:func:`notify_items_finished`).
        """
        for observer in self.observers:
            try:
                notify_items_finished(observer, batch, items)
            except Exception as exc:
                self._detach(observer, exc, "on_items_finished", batch.id)

    def on_batch_finished(self, batch: Batch) -> None:
        """Tell every attached observer that ``batch`` ended."""
        self._fan_out("on_batch_finished", batch.id, batch)

    def _fan_out(self, event: str, batch_id: str, *args: Any) -> None:
        for observer in self.observers:
            try:
                getattr(observer, event)(*args)
            except Exception as exc:
                self._detach(observer, exc, event, batch_id)

    def _detach(self, observer: BatchObserver, exc: Exception, event: str, batch_id: str) -> None:
        with self._lock:
            if observer not in self._observers:
                return
            self._observers.remove(observer)
            self._detached.append((observer, exc))
        self._log.error(
            "batch.observer_detached",
            observer=type(observer).__qualname__,
            event_name=event,
            batch_id=batch_id,
            error=f"{type(exc).__name__}: {exc}",
            traceback="".join(traceback.format_exception(exc)),
        )


class LoggingBatchObserver:
    """Logs a batch with structlog: one event when it starts, one per item, one summary.

    Events: ``batch.started``, ``batch.item_finished`` (a warning for a failed item) and
    ``batch.finished`` (counts, error summary, duration and throughput).
    """

    def __init__(self, logger: Any = None) -> None:
        self._log = logger if logger is not None else structlog.get_logger("quantrack.batches")
        self._seen: set[str] = set()

    def on_batch_started(self, batch: Batch) -> None:
        """Log the start, once per batch."""
        if batch.id in self._seen:
            return
        self._seen.add(batch.id)
        self._log.info(
            "batch.started",
            batch_id=batch.id,
            name=batch.name,
            total=batch.total,
            already_finished=batch.finished,
        )

    def on_item_finished(self, batch: Batch, item: BatchItemResult) -> None:
        """Log one finished item."""
        self._log_item(batch, item, batch.finished)

    def on_items_finished(self, batch: Batch, items: Sequence[BatchItemResult]) -> None:
        """Log each finished item, with the count of finished items it made, as
        :meth:`on_item_finished` would have.
        """
        first = batch.finished - len(items) + 1
        for finished, item in enumerate(items, start=first):
            self._log_item(batch, item, finished)

    def _log_item(self, batch: Batch, item: BatchItemResult, finished: int) -> None:
        fields: dict[str, Any] = {
            "batch_id": batch.id,
            "index": item.index,
            "status": item.status.value,
            "attempt": item.attempt,
            "experiment_id": item.experiment_id,
            "finished": finished,
            "total": batch.total,
        }
        if item.duration_seconds is not None:
            fields["duration_s"] = round(item.duration_seconds, 6)
        if item.reused:
            fields["reused"] = True
        if item.status is ExperimentStatus.FAILED:
            assert item.error_category is not None  # a failed item always has one
            fields["error_category"] = item.error_category.value
            fields["error"] = item.error
            self._log.warning("batch.item_finished", **fields)
        else:
            self._log.info("batch.item_finished", **fields)

    def on_batch_finished(self, batch: Batch) -> None:
        """Log the summary."""
        self._seen.discard(batch.id)
        self._log.info(
            "batch.finished",
            batch_id=batch.id,
            name=batch.name,
            status=batch.status.value,
            total=batch.total,
            succeeded=batch.succeeded,
            failed=batch.failed,
            cancelled=batch.cancelled,
            reused=batch.reused,
            error_summary={k.value: v for k, v in batch.error_summary.items()},
            duration_s=batch.duration_seconds,
            throughput=batch.throughput,
        )


class ProgressBatchObserver:
    """A rich progress bar: items done of total, failed, rate and time remaining.

    ``enabled=None`` shows it only when the output stream is a terminal, so scripts,
    CI and notebooks' captured output stay silent. ``console`` is a ``rich`` console
    (one on standard error by default).
    """

    def __init__(self, console: Any = None, *, enabled: bool | None = None) -> None:
        from rich.console import Console

        self._console = console if console is not None else Console(stderr=True)
        self._enabled = self._console.is_terminal if enabled is None else enabled
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    @property
    def enabled(self) -> bool:
        """Whether anything is drawn."""
        return bool(self._enabled)

    def on_batch_started(self, batch: Batch) -> None:
        """Open a bar for a new batch; a batch already shown is left as it is."""
        if not self._enabled or batch.id in self._tasks:
            return
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("[red]{task.fields[failed]} failed"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self._console,
                transient=False,
            )
            self._progress.start()
        from rich.markup import escape

        self._tasks[batch.id] = self._progress.add_task(
            escape(batch.name),
            total=batch.total,
            completed=batch.finished,
            failed=batch.failed,
            rate="",
        )

    def on_item_finished(self, batch: Batch, item: BatchItemResult) -> None:
        """Advance the bar."""
        self._advance(batch)

    def on_items_finished(self, batch: Batch, items: Sequence[BatchItemResult]) -> None:
        """Advance the bar past all of ``items`` at once."""
        self._advance(batch)

    def _advance(self, batch: Batch) -> None:
        task = self._tasks.get(batch.id)
        if task is None or self._progress is None:
            return
        self._progress.update(task, completed=batch.finished, failed=batch.failed)
        speed = self._progress.tasks[self._index(task)].speed
        if speed:
            self._progress.update(task, rate=f"{speed:,.1f} items/s")

    def on_batch_finished(self, batch: Batch) -> None:
        """Close the bar and print one summary line."""
        task = self._tasks.pop(batch.id, None)
        if task is None or self._progress is None:
            return
        self._progress.update(task, completed=batch.finished, failed=batch.failed)
        if not self._tasks:
            self._progress.stop()
            self._progress = None
        self._console.print(
            f"batch {batch.name!r} {batch.status.value}: {batch.succeeded} succeeded, "
            f"{batch.failed} failed, {batch.cancelled} cancelled"
            + (f" ({batch.reused} reused)" if batch.reused else ""),
            markup=False,
            highlight=False,
        )

    def _index(self, task: Any) -> int:
        assert self._progress is not None
        for i, candidate in enumerate(self._progress.tasks):
            if candidate.id == task:
                return i
        raise LookupError(task)


def batch_observer(
    persisting: BatchObserver | None,
    extra: BatchObserver | Iterable[BatchObserver] | None = None,
    *,
    progress: bool | None = None,
    stream: IO[str] | None = None,
) -> CompositeBatchObserver:
    """The composite the batch runner hears through: the persisting observer first, then
    ``extra`` observers, then a progress bar when ``progress`` is true (``None``: when
    ``stream``, standard error by default, is a terminal).
    """
    observers: list[BatchObserver] = []
    if persisting is not None:
        observers.append(persisting)
    if isinstance(extra, BatchObserver):
        observers.append(extra)
    elif extra is not None:
        observers.extend(extra)
    target = stream if stream is not None else sys.stderr
    show = progress if progress is not None else bool(getattr(target, "isatty", bool)())
    if show:
        from rich.console import Console

        observers.append(ProgressBatchObserver(Console(file=target), enabled=True))
    return CompositeBatchObserver(*observers)
