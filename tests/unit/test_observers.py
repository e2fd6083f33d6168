"""The non-persisting batch observers: the composite's failure policy, the log, the bar."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from structlog.testing import capture_logs

from quantrack.adapters.memory import InMemoryBatchObserver
from quantrack.adapters.observers import (
    CompositeBatchObserver,
    LoggingBatchObserver,
    ProgressBatchObserver,
    batch_observer,
)
from quantrack.domain import (
    Batch,
    BatchItemResult,
    BatchStatus,
    ErrorCategory,
    ExperimentStatus,
)
from quantrack.domain.lifecycle import finish_batch, record_item, start_batch


def _items() -> list[BatchItemResult]:
    return [
        BatchItemResult(index=0, status=ExperimentStatus.COMPLETED, duration_seconds=0.5),
        BatchItemResult(
            index=1,
            status=ExperimentStatus.FAILED,
            error="ValueError: window must be positive",
            error_category=ErrorCategory.PARAMETER_ERROR,
        ),
        BatchItemResult(index=2, status=ExperimentStatus.COMPLETED, reused=True),
    ]


def _play(observer: object, name: str = "sweep") -> Batch:
    """Drive ``observer`` through a three-item batch, as the runner would."""
    batch = start_batch(Batch(name=name, total=3))
    observer.on_batch_started(batch)  # type: ignore[attr-defined]
    for item in _items():
        batch = record_item(batch, item)
        observer.on_item_finished(batch, item)  # type: ignore[attr-defined]
    batch = finish_batch(batch)
    observer.on_batch_finished(batch)  # type: ignore[attr-defined]
    return batch


class Exploding:
    """An observer that raises on the event named in ``on``."""

    def __init__(self, on: str, exc: BaseException | None = None) -> None:
        self.on = on
        self.exc = exc or RuntimeError("dashboard is down")
        self.calls: list[str] = []

    def on_batch_started(self, batch: Batch) -> None:
        self._event("on_batch_started")

    def on_item_finished(self, batch: Batch, item: BatchItemResult) -> None:
        self._event("on_item_finished")

    def on_batch_finished(self, batch: Batch) -> None:
        self._event("on_batch_finished")

    def _event(self, name: str) -> None:
        self.calls.append(name)
        if name == self.on:
            raise self.exc


def test_composite_fans_out_every_event_to_every_observer() -> None:
    """Each attached observer hears the whole batch through the composite."""
    first, second = InMemoryBatchObserver(), InMemoryBatchObserver()
    batch = _play(CompositeBatchObserver(first, second))
    for observer in (first, second):
        stored = observer.get_batch(batch.id)
        assert stored.status is BatchStatus.PARTIAL
        assert [item.index for item in observer.batch_items(batch.id)] == [0, 1, 2]


def test_composite_detaches_a_raising_observer_and_logs_it_once() -> None:
    """An observer that raises is logged once and hears nothing more; the others go on."""
    bad = Exploding("on_item_finished")
    good = InMemoryBatchObserver()
    composite = CompositeBatchObserver(bad, good)
    with capture_logs() as logs:
        batch = _play(composite)
    assert bad.calls == ["on_batch_started", "on_item_finished"]
    assert composite.observers == [good]
    assert [type(exc) for _, exc in composite.detached] == [RuntimeError]
    detached = [entry for entry in logs if entry["event"] == "batch.observer_detached"]
    assert len(detached) == 1
    assert detached[0]["observer"] == "Exploding"
    assert detached[0]["event_name"] == "on_item_finished"
    assert "dashboard is down" in detached[0]["error"]
    assert "Traceback" in detached[0]["traceback"]
    assert good.get_batch(batch.id).finished == 3


def test_composite_never_swallows_keyboard_interrupt() -> None:
    """Ctrl-C raised inside an observer reaches the runner, so the batch can stop."""
    composite = CompositeBatchObserver(Exploding("on_batch_started", KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        composite.on_batch_started(start_batch(Batch(name="b", total=1)))


def test_composite_rejects_something_that_is_not_an_observer() -> None:
    """A wrong object is refused when the composite is built, naming what is missing."""
    with pytest.raises(TypeError, match="on_batch_started"):
        CompositeBatchObserver(object())  # type: ignore[arg-type]


def test_logging_observer_logs_start_each_item_and_a_summary() -> None:
    """One event when the batch starts, one per item (failed ones as warnings), one summary."""
    with capture_logs() as logs:
        _play(LoggingBatchObserver())
    events = [(entry["event"], entry["log_level"]) for entry in logs]
    assert events == [
        ("batch.started", "info"),
        ("batch.item_finished", "info"),
        ("batch.item_finished", "warning"),
        ("batch.item_finished", "info"),
        ("batch.finished", "info"),
    ]
    failed = logs[2]
    assert failed["error_category"] == "parameter_error"
    assert failed["error"] == "ValueError: window must be positive"
    assert logs[3]["reused"] is True
    summary = logs[-1]
    assert summary["status"] == "partial"
    assert (summary["succeeded"], summary["failed"], summary["reused"]) == (2, 1, 1)
    assert summary["error_summary"] == {"parameter_error": 1}


def test_logging_observer_does_not_repeat_the_start_on_a_heartbeat() -> None:
    """A running batch announced again (a heartbeat) is not logged as a new start."""
    batch = start_batch(Batch(name="b", total=2))
    observer = LoggingBatchObserver()
    with capture_logs() as logs:
        observer.on_batch_started(batch)
        observer.on_batch_started(batch)
    assert [entry["event"] for entry in logs] == ["batch.started"]


def test_progress_bar_draws_counts_and_a_summary_on_a_terminal() -> None:
    """On a terminal the bar shows done of total, the failed count and a final summary."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140)
    observer = ProgressBatchObserver(console)
    assert observer.enabled
    _play(observer, name="sma-sweep")
    text = out.getvalue()
    assert "sma-sweep" in text
    assert "3/3" in text
    assert "1 failed" in text
    assert "batch 'sma-sweep' partial: 2 succeeded, 1 failed, 0 cancelled (1 reused)" in text


def test_progress_bar_is_silent_when_not_a_terminal() -> None:
    """Redirected output (a file, CI logs) gets no bar and no summary."""
    out = io.StringIO()
    observer = ProgressBatchObserver(Console(file=out))
    assert not observer.enabled
    _play(observer)
    assert out.getvalue() == ""


def test_batch_observer_puts_the_persisting_one_first_and_adds_a_bar_only_when_asked() -> None:
    """The composite holds the persisting observer, the extras, and a bar only on request."""
    persisting, extra = InMemoryBatchObserver(), LoggingBatchObserver()
    quiet = batch_observer(persisting, extra, progress=False)
    assert quiet.observers == [persisting, extra]
    shown = batch_observer(persisting, [extra], progress=True, stream=io.StringIO())
    assert isinstance(shown.observers[-1], ProgressBatchObserver)
    automatic = batch_observer(persisting, stream=io.StringIO())  # not a terminal
    assert automatic.observers == [persisting]
