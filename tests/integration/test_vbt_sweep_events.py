"""A vectorbt sweep's item events: one bulk event for observers that take one, one event
per column for those that do not, with the same batch either way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from quantrack.adapters.memory import (
    InMemoryArtifactStore,
    InMemoryBatchObserver,
    InMemoryExperimentTracker,
)
from quantrack.domain import Batch, BatchItemResult, BatchStatus
from quantrack.sample_data import load_sample

vbt = pytest.importorskip("vectorbt")

from quantrack.engines.vectorbt import VectorbtAdapter  # noqa: E402


def _sweep(side: int = 4) -> Any:
    """A side x side MA-crossover grid on one bundled symbol."""
    close = load_sample("AAA")["close"].iloc[:300]
    fast_w, slow_w = np.meshgrid(np.arange(2, 2 + side), np.arange(30, 30 + side), indexing="ij")
    fast = vbt.MA.run(close, fast_w.ravel(), short_name="fast")
    slow = vbt.MA.run(close, slow_w.ravel(), short_name="slow")
    return vbt.Portfolio.from_signals(
        close, fast.ma_crossed_above(slow), fast.ma_crossed_below(slow), freq="1D"
    )


class PerItemObserver:
    """A batch observer without the bulk capability, noting each event."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int]] = []  # (finished count it saw, item index)
        self.final: Batch | None = None

    def on_batch_started(self, batch: Batch) -> None:
        pass

    def on_item_finished(self, batch: Batch, item: BatchItemResult) -> None:
        self.items.append((batch.finished, item.index))

    def on_batch_finished(self, batch: Batch) -> None:
        self.final = batch


def test_an_observer_without_the_capability_hears_every_column() -> None:
    """Each column's item reaches a per-item observer, in column order, each with a batch
    that already counts it; the batch ends completed.
    """
    pf = _sweep()
    observer = PerItemObserver()
    adapter = VectorbtAdapter(
        tracker=InMemoryExperimentTracker(), artifacts=InMemoryArtifactStore(), observer=observer
    )
    result = adapter.record(pf, name="grid", equity=False, trades=False)
    assert result.recorded
    n = len(result.experiment_ids)
    assert [index for _, index in observer.items] == list(range(n))
    assert all(finished == n for finished, _ in observer.items)
    assert observer.final is not None
    assert observer.final.status is BatchStatus.COMPLETED


def test_a_bulk_observer_keeps_the_items_a_per_item_one_hears() -> None:
    """The in-memory observer (bulk) keeps one item per column, naming each column's run."""
    pf = _sweep()
    observer = InMemoryBatchObserver()
    adapter = VectorbtAdapter(
        tracker=InMemoryExperimentTracker(), artifacts=InMemoryArtifactStore(), observer=observer
    )
    result = adapter.record(pf, name="grid", equity=False, trades=False)
    items = observer.batch_items(result.batch_id or "")
    assert [i.experiment_id for i in items] == list(result.experiment_ids)
    batch = observer.get_batch(result.batch_id or "")
    assert (batch.status, batch.succeeded) == (BatchStatus.COMPLETED, len(items))
