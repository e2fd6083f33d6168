"""Picking the best run of a sweep (adapter.best, pick_best) and assessing backtrader sweeps.

A backtrader sweep stores one equity-curve Parquet file per run (time, value, cash) and
counts its failed combinations as trials; a vectorbt sweep shares one wide file.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from quantrack.adapters.memory import (
    InMemoryArtifactStore,
    InMemoryBatchObserver,
    InMemoryExperimentTracker,
)
from quantrack.analysis import assess_batch, pick_best
from quantrack.domain import BatchNotFound, ExperimentFilter, ExperimentStatus
from quantrack.sample_data import load_sample
from quantrack.workspace import Workspace, open_workspace

bt = pytest.importorskip("backtrader")
vbt = pytest.importorskip("vectorbt")

from tests.integration.bt_strategies import SmaCrossFragile, cerebro_with  # noqa: E402

from quantrack.engines.backtrader import BacktraderAdapter  # noqa: E402
from quantrack.engines.vectorbt import VectorbtAdapter  # noqa: E402


def memory_workspace() -> Workspace:
    """A workspace of in-memory adapters."""
    return Workspace(
        tracker=InMemoryExperimentTracker(),
        artifacts=InMemoryArtifactStore(),
        observer=InMemoryBatchObserver(),
    )


def bt_sweep(ws: Workspace) -> str:
    """A 6-combination backtrader grid (2 of them fail) recorded into ``ws``; its batch id."""
    cerebro = cerebro_with(None, bars=700)
    cerebro.optstrategy(SmaCrossFragile, fast=[5, 10, 13], slow=[30, 50])
    BacktraderAdapter(ws, capture_code=False).run(cerebro, name="bt-grid", maxcpus=1)
    (batch,) = ws.observer.list_batches()
    return batch.id


@pytest.fixture(scope="module")
def vbt_portfolio() -> Any:
    """A 10-configuration MA-crossover grid on one synthetic symbol."""
    close = load_sample("AAA")["close"]
    fast, slow = vbt.MA.run_combs(close, window=[5, 10, 20, 40, 80], r=2, short_names=["f", "s"])
    entries = fast.ma_crossed_above(slow)
    exits = fast.ma_crossed_below(slow)
    return vbt.Portfolio.from_signals(close, entries, exits, fees=0.001, freq="1D")


def test_backtrader_sweep_psr_counts_failed_trials(tmp_path: Path) -> None:
    """PSRs come from each run's own curve file; the failed combinations count as trials."""
    ws = open_workspace(tmp_path)
    batch_id = bt_sweep(ws)
    result = assess_batch(ws, batch_id, partitions=4)
    completed = ws.tracker.list_experiments(
        ExperimentFilter(batch_id=batch_id, status=frozenset({ExperimentStatus.COMPLETED}))
    )
    assert result.trials == 6
    assert len(result.runs) == len(completed) == 4
    values = {}
    for run in completed:
        (ref,) = [a for a in run.artifacts if a.kind == "equity_curve"]
        frame = pd.read_parquet(io.BytesIO(ws.artifacts.get(ref.id)))
        values[run.id] = frame.set_index("time")["value"]
    common = pd.concat(values, axis=1, join="inner").pct_change().iloc[1:]
    for run in result.runs:
        series = common[run.experiment_id].to_numpy()
        sharpe = series.mean() / series.std(ddof=1)
        skew = sps.skew(series)
        kurt = sps.kurtosis(series, fisher=False)
        spread = math.sqrt(1 - skew * sharpe + (kurt - 1) / 4 * sharpe**2)
        expected = sps.norm.cdf(sharpe * math.sqrt(len(series) - 1) / spread)
        assert run.psr == pytest.approx(expected, rel=1e-9)
    assert result.dsr is not None
    assert result.pbo is not None
    assert result.pbo.trials == 4


def test_backtrader_adapter_best_records_the_metric(tmp_path: Path) -> None:
    """BacktraderAdapter.best ranks the sweep's runs and stores the metric on its batch."""
    ws = open_workspace(tmp_path)
    batch_id = bt_sweep(ws)
    adapter = BacktraderAdapter(ws)
    top = adapter.best(batch_id, metric="total_return", n=2)
    everything = [
        e.metrics["total_return"]
        for e in ws.tracker.list_experiments(ExperimentFilter(batch_id=batch_id))
        if "total_return" in e.metrics
    ]
    assert [e.metrics["total_return"] for e in top] == sorted(everything, reverse=True)[:2]
    assert ws.observer.get_batch(batch_id).selection_metric == "total_return"


def test_vectorbt_adapter_best_records_the_metric(tmp_path: Path, vbt_portfolio: Any) -> None:
    """VectorbtAdapter.best ranks the sweep by sharpe (vectorbt's own figures agree)."""
    ws = open_workspace(tmp_path)
    adapter = VectorbtAdapter(ws, capture_code=False)
    batch_id = adapter.record(vbt_portfolio, name="ma").batch_id
    assert batch_id is not None
    (top,) = adapter.best(batch_id)
    sharpe = vbt_portfolio.sharpe_ratio()
    best = sharpe.idxmax()
    assert (top.params["f_window"], top.params["s_window"]) == (best[0], best[1])
    assert top.metrics["sharpe"] == pytest.approx(float(sharpe.max()), rel=1e-9)
    assert ws.observer.get_batch(batch_id).selection_metric == "sharpe"


def test_best_follows_the_metric_direction(tmp_path: Path, vbt_portfolio: Any) -> None:
    """max_drawdown is lower-is-better, so best() returns the smallest drawdowns first."""
    ws = open_workspace(tmp_path)
    adapter = VectorbtAdapter(ws, capture_code=False)
    batch_id = adapter.record(vbt_portfolio, name="ma").batch_id
    assert batch_id is not None
    top = adapter.best(batch_id, metric="max_drawdown", n=3)
    drawdowns = sorted(float(v) for v in vbt_portfolio.max_drawdown().abs() * 100)
    assert [e.metrics["max_drawdown"] for e in top] == pytest.approx(drawdowns[:3], rel=1e-9)
    assert ws.observer.get_batch(batch_id).selection_metric == "max_drawdown"


def test_best_without_a_batch_history_is_explained(vbt_portfolio: Any) -> None:
    """An observer that keeps no batches cannot answer best(); the error says what to pass."""

    class Forgetful:
        def on_batch_started(self, batch: Any) -> None:
            """Forget it."""

        def on_item_finished(self, batch: Any, item: Any) -> None:
            """Forget it."""

        def on_batch_finished(self, batch: Any) -> None:
            """Forget it."""

    adapter = VectorbtAdapter(memory_workspace(), observer=Forgetful(), capture_code=False)
    batch_id = adapter.record(vbt_portfolio, name="ma").batch_id
    assert batch_id is not None
    with pytest.raises(TypeError, match="needs an observer that keeps batches"):
        adapter.best(batch_id)


@pytest.mark.parametrize("n", [0, -1, True, 1.5])
def test_pick_best_refuses_a_bad_count(n: Any) -> None:
    """The count n must be a positive integer."""
    ws = memory_workspace()
    with pytest.raises(ValueError, match="n must be a positive number of runs"):
        pick_best(ws.tracker, ws.observer, "any", n=n)


def test_pick_best_of_unknown_batch_raises() -> None:
    """An unknown batch id raises BatchNotFound and records nothing."""
    ws = memory_workspace()
    with pytest.raises(BatchNotFound):
        pick_best(ws.tracker, ws.observer, "missing")
    assert ws.observer.list_batches() == []


def test_pick_best_lowest_overrides_the_direction(vbt_portfolio: Any) -> None:
    """lowest=True ranks ascending even for a higher-is-better metric."""
    ws = memory_workspace()
    batch_id = VectorbtAdapter(ws, capture_code=False).record(vbt_portfolio, name="ma").batch_id
    assert batch_id is not None
    (worst,) = pick_best(ws.tracker, ws.observer, batch_id, metric="sharpe", lowest=True)
    assert worst.metrics["sharpe"] == pytest.approx(float(np.min(vbt_portfolio.sharpe_ratio())))
