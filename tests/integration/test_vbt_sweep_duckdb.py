"""A vectorbt sweep recorded into a real DuckDB workspace: runs, batch and items agree.

The metrics of a sweep are computed on worker threads while the adapter prepares the
batch, its ids, params and item events; these tests pin that what lands in the database
is the same either way, and that a failure while the threads run stops them and spools.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from quantrack.domain import BatchStatus, ExperimentFilter, ExperimentStatus
from quantrack.sample_data import load_sample
from quantrack.workspace import open_workspace

vbt = pytest.importorskip("vectorbt")

from quantrack.engines import _vbt_metrics  # noqa: E402
from quantrack.engines.vectorbt import VectorbtAdapter  # noqa: E402


def _sweep(side: int = 12) -> Any:
    """A side x side MA-crossover grid on one bundled symbol, over several kernel blocks."""
    close = load_sample("AAA")["close"].iloc[:400]
    fast_w, slow_w = np.meshgrid(np.arange(2, 2 + side), np.arange(30, 30 + side), indexing="ij")
    fast = vbt.MA.run(close, fast_w.ravel(), short_name="fast")
    slow = vbt.MA.run(close, slow_w.ravel(), short_name="slow")
    entries = fast.ma_crossed_above(slow)
    exits = fast.ma_crossed_below(slow)
    return vbt.Portfolio.from_signals(close, entries, exits, fees=0.001, freq="1D")


def _quantrack_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("quantrack-vbt")]


def test_sweep_items_batch_and_runs_agree(tmp_path: Path) -> None:
    """Each item names its run, in column order, with the run's own (canonical) params;
    the batch counts every item and the runs hold the metrics vectorbt computes.
    """
    pf = _sweep()
    n = pf.wrapper.shape_2d[1]
    assert n > _vbt_metrics._CHUNK  # several blocks of columns on the threads
    ws = open_workspace(tmp_path / "ws")
    shared = {"note": 'é "q" \x00', "fees": 0.001}
    result = VectorbtAdapter(ws, capture_code=False).record(
        pf, name="grid", params=shared, equity=False, trades=False
    )
    assert result.recorded
    batch = ws.observer.get_batch(result.batch_id or "")
    assert (batch.status, batch.total, batch.succeeded) == (BatchStatus.COMPLETED, n, n)
    items = ws.observer.batch_items(batch.id)
    assert [i.index for i in items] == list(range(n))
    assert [i.experiment_id for i in items] == list(result.experiment_ids)
    runs = {r.id: r for r in ws.tracker.list_experiments(ExperimentFilter(batch_id=batch.id))}
    sharpe = pf.sharpe_ratio().to_numpy()
    for i, item in enumerate(items):
        run = runs[item.experiment_id or ""]
        assert item.status is ExperimentStatus.COMPLETED
        assert item.params == run.params
        fast, slow = pf.wrapper.columns[i]
        assert run.params == {"fast_window": int(fast), "slow_window": int(slow), **shared}
        assert run.definition.batch_index == i
        assert run.metrics.get("sharpe") == (sharpe[i] if np.isfinite(sharpe[i]) else None)
    assert not _quantrack_threads()


def test_failure_while_the_metrics_run_spools_and_stops_the_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bookkeeping error while the kernel runs leaves no thread behind, writes no run,
    and the portfolio is still handed back by run().
    """
    pf = _sweep()
    ws = open_workspace(tmp_path / "ws")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("planning failed")

    monkeypatch.setattr("quantrack.engines.vectorbt._plan_sweep", broken)
    adapter = VectorbtAdapter(ws, capture_code=False)
    assert adapter.run(lambda: pf, name="grid", equity=False, trades=False) is pf
    assert adapter.last_result is not None
    assert not adapter.last_result.recorded
    assert not _quantrack_threads()
    assert ws.observer.list_batches() == []


def test_equity_curves_of_a_sweep_equal_pf_value(tmp_path: Path) -> None:
    """With equity curves, the shared file's columns equal pf.value() for every run."""
    pf = _sweep(4)
    ws = open_workspace(tmp_path / "ws")
    adapter = VectorbtAdapter(ws, capture_code=False)
    result = adapter.record(pf, name="grid")
    value = pd.DataFrame(pf.value())
    for i, run_id in enumerate(result.experiment_ids):
        refs = {ref.kind: ref for ref in ws.tracker.get_experiment(run_id).artifacts}
        curve = adapter.load_equity(refs["equity_curve"])
        np.testing.assert_array_equal(curve.to_numpy(), value.iloc[:, i].to_numpy())


def test_column_keys_of_every_kind_become_plain_params_and_labels() -> None:
    """Float, string, timestamp and boolean levels (named or not) give JSON-ready values
    of the Python type a user expects, and labels that name every level.
    """
    close = load_sample("AAA")["close"].iloc[:50]
    frame = pd.concat([close] * 3, axis=1)
    frame.columns = pd.MultiIndex.from_tuples(
        [
            (1.5, "x", pd.Timestamp("2020-01-01"), True),
            (2.0, "y", pd.Timestamp("2020-01-02"), False),
            (2.0, "y", pd.Timestamp("2020-01-02"), False),
        ],
        names=["a", None, "when", "flag"],
    )
    axis = _vbt_metrics.column_axis(
        vbt.Portfolio.from_holding(frame, freq="1D"), single_params_from_index=False
    )
    assert axis.level_names == ("a", "level_1", "when", "flag")
    assert axis.params[0] == {"a": 1.5, "level_1": "x", "when": "2020-01-01T00:00:00", "flag": True}
    assert [type(v) for v in axis.params[1].values()] == [float, str, str, bool]
    # The last two keys are equal: every label is numbered to stay unique.
    assert axis.labels[0] == "0:a=1.5,level_1=x,when=2020-01-01T00:00:00,flag=True"
    assert len(set(axis.labels)) == 3
