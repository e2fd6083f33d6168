"""The BatchItemsObserver capability, for every observer that has it: hearing many items in
one ``on_items_finished`` leaves it exactly where one ``on_item_finished`` per item would,
and an observer without the capability is handed one event per item instead.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from structlog.testing import capture_logs

from quantrack.adapters.memory import (
    InMemoryArtifactStore,
    InMemoryBatchObserver,
    InMemoryExperimentTracker,
)
from quantrack.adapters.observers import (
    CompositeBatchObserver,
    LoggingBatchObserver,
    ProgressBatchObserver,
    notify_items_finished,
)
from quantrack.domain import Batch, BatchItemResult, ErrorCategory, ExperimentStatus
from quantrack.domain.lifecycle import finish_batch, record_item, record_items, start_batch
from quantrack.engines._safety import RecordingGuard
from quantrack.ports import BatchItemsObserver, BatchObserver
from tests.adapters import OBSERVERS

S = ExperimentStatus
T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)


def _items() -> list[BatchItemResult]:
    return [
        BatchItemResult(index=0, status=S.COMPLETED, experiment_id="run-0", duration_seconds=0.5),
        BatchItemResult(
            index=1,
            status=S.FAILED,
            experiment_id="run-1",
            error="ValueError: window must be positive",
            error_category=ErrorCategory.PARAMETER_ERROR,
        ),
        BatchItemResult(index=2, status=S.COMPLETED, experiment_id="run-2", reused=True),
        BatchItemResult(index=3, status=S.CANCELLED, experiment_id="run-3"),
    ]


def _play(observer: Any, *, bulk: bool, batch_id: str = "sweep-1") -> Batch:
    """Drive ``observer`` through a four-item batch, the items one by one or in bulk."""
    # Fixed clocks, so that two plays can be compared whole.
    batch = start_batch(Batch(id=batch_id, name="sma-sweep", total=4, created_at=T0), now=T0)
    observer.on_batch_started(batch)
    items = _items()
    if bulk:
        batch = record_items(batch, items)
        observer.on_items_finished(batch, items)
    else:
        for item in items:
            batch = record_item(batch, item)
            observer.on_item_finished(batch, item)
    batch = finish_batch(batch, now=T0 + dt.timedelta(seconds=2))
    observer.on_batch_finished(batch)
    return batch


class PerItem:
    """An observer without the capability, noting what it hears."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, int, int | None]] = []

    def on_batch_started(self, batch: Batch) -> None:
        self.heard.append(("started", batch.finished, None))

    def on_item_finished(self, batch: Batch, item: BatchItemResult) -> None:
        self.heard.append(("item", batch.finished, item.index))

    def on_batch_finished(self, batch: Batch) -> None:
        self.heard.append(("finished", batch.finished, None))


def _persisted(make: Callable[[Path], Any], folder: Path) -> Callable[[bool], object]:
    """What a persisting observer holds after a batch."""

    def run(bulk: bool) -> object:
        observer = make(folder / ("bulk" if bulk else "single"))
        (folder / ("bulk" if bulk else "single")).mkdir(exist_ok=True)
        _play(observer, bulk=bulk)
        return observer.get_batch("sweep-1"), observer.batch_items("sweep-1")

    return run


def _logged(bulk: bool) -> object:
    with capture_logs() as logs:
        _play(LoggingBatchObserver(), bulk=bulk)
    return logs


def _drawn(bulk: bool) -> object:
    out = io.StringIO()
    _play(ProgressBatchObserver(Console(file=out, force_terminal=True, width=140)), bulk=bulk)
    # The bar's redraws and its rate differ with timing; what it counts and the summary
    # do not.
    lines = out.getvalue().splitlines()
    return "4/4" in lines[-2], "1 failed" in lines[-2], lines[-1]


def _fanned_out(bulk: bool) -> object:
    memory, plain = InMemoryBatchObserver(), PerItem()
    _play(CompositeBatchObserver(memory, plain), bulk=bulk)
    return memory.get_batch("sweep-1"), memory.batch_items("sweep-1"), plain.heard[-1]


def _guarded(bulk: bool) -> object:
    memory = InMemoryBatchObserver()
    guard = RecordingGuard(
        InMemoryExperimentTracker(),
        InMemoryArtifactStore(),
        memory,
        spool_dir=None,
        engine="test",
    )
    final = _play(guard.observer, bulk=bulk)
    assert not guard.failed
    return (
        memory.get_batch("sweep-1"),
        memory.batch_items("sweep-1"),
        guard.observer.batch == final,
        guard.observer.items,
    )


def _persisting(name: str) -> Callable[[Path], Callable[[bool], object]]:
    return lambda folder: _persisted(OBSERVERS[name], folder)


IMPLEMENTERS: dict[str, Callable[[Path], Callable[[bool], object]]] = {
    **{f"persisting-{name}": _persisting(name) for name in OBSERVERS},
    "logging": lambda _f: _logged,
    "progress": lambda _f: _drawn,
    "composite": lambda _f: _fanned_out,
    "guarded": lambda _f: _guarded,
}


@pytest.mark.parametrize("name", sorted(IMPLEMENTERS))
def test_bulk_items_leave_the_observer_where_single_items_do(name: str, tmp_path: Path) -> None:
    """One on_items_finished has the same observable effect as one on_item_finished per item."""
    outcome = IMPLEMENTERS[name](tmp_path)
    assert outcome(True) == outcome(False)


@pytest.mark.parametrize("name", sorted(OBSERVERS))
def test_every_shipped_observer_has_the_capability(name: str, tmp_path: Path) -> None:
    """Persisting, logging, progress, composite and guarded observers are BatchItemsObservers."""
    guard = RecordingGuard(
        InMemoryExperimentTracker(),
        InMemoryArtifactStore(),
        InMemoryBatchObserver(),
        spool_dir=None,
        engine="test",
    )
    for observer in (
        OBSERVERS[name](tmp_path),
        LoggingBatchObserver(),
        ProgressBatchObserver(Console(file=io.StringIO())),
        CompositeBatchObserver(),
        guard.observer,
    ):
        assert isinstance(observer, BatchObserver)
        assert isinstance(observer, BatchItemsObserver)
    assert not isinstance(PerItem(), BatchItemsObserver)


def test_an_observer_without_the_capability_hears_each_item() -> None:
    """notify_items_finished gives a plain observer one on_item_finished per item, in order."""
    plain = PerItem()
    batch = record_items(start_batch(Batch(name="sweep", total=4)), _items())
    notify_items_finished(plain, batch, _items())
    assert plain.heard == [("item", 4, 0), ("item", 4, 1), ("item", 4, 2), ("item", 4, 3)]


@pytest.mark.parametrize("name", sorted(OBSERVERS))
def test_a_refused_bulk_event_records_none_of_its_items(name: str, tmp_path: Path) -> None:
    """A bulk event with one refused item (a repeat) is refused whole; nothing is counted."""
    from quantrack.domain import LifecycleError

    observer = OBSERVERS[name](tmp_path)
    batch = start_batch(Batch(id="sweep-1", name="sweep", total=4))
    observer.on_batch_started(batch)
    first = _items()[:1]
    observer.on_items_finished(record_items(batch, first), first)
    before = observer.get_batch("sweep-1"), observer.batch_items("sweep-1")
    with pytest.raises(LifecycleError, match=r"item 0 \(attempt 1\) .* already recorded"):
        observer.on_items_finished(batch, _items())
    assert (observer.get_batch("sweep-1"), observer.batch_items("sweep-1")) == before


def test_composite_detaches_an_observer_whose_bulk_event_raises() -> None:
    """The failure policy holds for bulk events: the raising observer is detached, the
    others still hear every item.
    """

    class Broken(PerItem):
        def on_items_finished(self, batch: Batch, items: object) -> None:
            raise RuntimeError("dashboard is down")

    broken, memory = Broken(), InMemoryBatchObserver()
    composite = CompositeBatchObserver(broken, memory)
    with capture_logs() as logs:
        _play(composite, bulk=True)
    assert [type(o) for o, _ in composite.detached] == [Broken]
    assert memory.get_batch("sweep-1").finished == 4
    assert [e["event_name"] for e in logs if e["event"] == "batch.observer_detached"] == [
        "on_items_finished"
    ]


@pytest.mark.parametrize("name", sorted(OBSERVERS))
def test_single_and_bulk_events_mix(name: str, tmp_path: Path) -> None:
    """Items heard one by one and in bulk, in any order, are all kept and counted, and a
    repeat across the two kinds of event is refused.
    """
    from quantrack.domain import LifecycleError

    observer = OBSERVERS[name](tmp_path)
    items = _items()
    batch = start_batch(Batch(id="sweep-1", name="sweep", total=4))
    observer.on_batch_started(batch)
    batch = record_item(batch, items[0])
    observer.on_item_finished(batch, items[0])
    batch = record_items(batch, items[1:3])
    observer.on_items_finished(batch, items[1:3])
    with pytest.raises(LifecycleError, match="already recorded"):
        observer.on_item_finished(batch, items[2])
    batch = record_item(batch, items[3])
    observer.on_item_finished(batch, items[3])
    stored = observer.get_batch("sweep-1")
    assert (stored.succeeded, stored.failed, stored.cancelled, stored.reused) == (2, 1, 1, 1)
    assert [i.index for i in observer.batch_items("sweep-1")] == [0, 1, 2, 3]


def test_duckdb_bulk_events_in_a_session_are_written_when_it_commits(tmp_path: Path) -> None:
    """Inside a tracker session the DuckDB observer checks bulk and single events against
    each other and writes them all when the session commits.
    """
    from quantrack.adapters.duckdb import DuckDBBatchObserver, DuckDBExperimentTracker
    from quantrack.domain import LifecycleError

    path = tmp_path / "runs.duckdb"
    tracker = DuckDBExperimentTracker(path, timeout=10.0)
    observer = DuckDBBatchObserver(path, timeout=10.0)
    items = _items()
    batch = start_batch(Batch(id="sweep-1", name="sweep", total=4))
    observer.on_batch_started(batch)
    with tracker.session():
        batch = record_items(batch, items[:2])
        observer.on_items_finished(batch, items[:2])
        with pytest.raises(LifecycleError, match=r"item 1 \(attempt 1\)"):
            observer.on_items_finished(batch, items[1:])
        batch = record_item(batch, items[2])
        observer.on_item_finished(batch, items[2])
        batch = record_items(batch, items[3:])
        observer.on_items_finished(batch, items[3:])
    observer.close()
    reopened = DuckDBBatchObserver(path, timeout=10.0)
    assert reopened.get_batch("sweep-1").finished == 4
    assert [i.index for i in reopened.batch_items("sweep-1")] == [0, 1, 2, 3]
