"""The vectorbt adapter on real portfolios built from the bundled sample data."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from structlog.testing import capture_logs

from quantrack.adapters.filesystem.spool import SPOOL_DIR, read_spool_record
from quantrack.adapters.frames import get_frame, get_json
from quantrack.adapters.memory import (
    InMemoryArtifactStore,
    InMemoryBatchObserver,
    InMemoryExperimentTracker,
)
from quantrack.domain import (
    BatchStatus,
    ErrorCategory,
    ExperimentFilter,
    ExperimentStatus,
    FinishedExperiments,
    InvalidParams,
    StorageError,
    WorkspaceBusy,
)
from quantrack.sample_data import load_sample, load_sample_prices
from quantrack.workspace import Workspace

vbt = pytest.importorskip("vectorbt")

from quantrack.engines._vbt_metrics import METRICS, metrics_of_stats  # noqa: E402
from quantrack.engines.vectorbt import (  # noqa: E402
    PickleNotAllowed,
    VectorbtAdapter,
    load_portfolio,
)


def _memory_workspace(path: Path | None = None) -> Workspace:
    return Workspace(
        tracker=InMemoryExperimentTracker(),
        artifacts=InMemoryArtifactStore(),
        observer=InMemoryBatchObserver(),
        path=path,
    )


@pytest.fixture
def ws() -> Workspace:
    """A fresh in-memory workspace."""
    return _memory_workspace()


@pytest.fixture(scope="module")
def close() -> pd.DataFrame:
    """Close prices of every bundled symbol (columns named by symbol)."""
    return load_sample_prices()


@pytest.fixture(scope="module")
def grid(close: pd.DataFrame) -> Any:
    """A 2-parameter MA-crossover grid over four symbols; the last column never trades."""
    fast, slow = vbt.MA.run_combs(close, window=[5, 20, 50], r=2, short_names=["fast", "slow"])
    entries = fast.ma_crossed_above(slow)
    exits = fast.ma_crossed_below(slow)
    entries.iloc[:, -1] = False
    exits.iloc[:, -1] = False
    return vbt.Portfolio.from_signals(close, entries, exits, fees=0.001, freq="1D")


def _assert_matches_stats(pf: Any, column: Any, metrics: dict[str, float]) -> None:
    expected = metrics_of_stats(pf.stats(column=column))
    assert expected, "pf.stats() reported none of the recorded metrics"
    for name, value in expected.items():
        if value is None and name == "max_drawdown":
            # stats() has no drawdown record for a curve that never fell; we record 0.
            assert metrics[name] == 0.0
        elif value is None:
            assert name not in metrics, f"{name} is undefined for {column} but was recorded"
        else:
            assert metrics[name] == pytest.approx(value, rel=1e-9, abs=1e-12), (column, name)


def test_single_from_signals_is_one_completed_experiment(ws: Workspace) -> None:
    """A one-column from_signals portfolio becomes one completed experiment with stats()."""
    bars = load_sample("AAA")
    fast = vbt.MA.run(bars["close"], 10)
    slow = vbt.MA.run(bars["close"], 50)
    pf = vbt.Portfolio.from_signals(
        bars["close"], fast.ma_crossed_above(slow), fast.ma_crossed_below(slow), freq="1D"
    )
    result = VectorbtAdapter(ws).record(pf, name="aaa-cross", params={"fast": 10, "slow": 50})
    assert result.batch_id is None
    assert result.recorded
    experiment = ws.tracker.get_experiment(result.experiment_id)
    assert experiment.status is ExperimentStatus.COMPLETED
    assert experiment.params == {"fast": 10, "slow": 50}
    assert experiment.definition.engine == "vectorbt"
    assert experiment.definition.provenance.engine_version == vbt.__version__
    _assert_matches_stats(pf, None, experiment.metrics)
    assert experiment.metrics["annual_return"] == pytest.approx(100 * pf.annualized_return())
    assert experiment.metrics["exposure"] == pytest.approx(100 * pf.position_coverage())
    kinds = {ref.kind for ref in experiment.artifacts}
    assert {"equity_curve", "trades", "code"} <= kinds


def test_equity_and_trades_read_back_equal_the_portfolio(ws: Workspace) -> None:
    """The stored equity curve equals pf.value() and the trades equal pf.trades."""
    bars = load_sample("BBB")
    pf = vbt.Portfolio.from_orders(
        bars["close"], size=np.where(np.arange(len(bars)) % 40 < 20, 1.0, -1.0), freq="1D"
    )
    adapter = VectorbtAdapter(ws)
    experiment = ws.tracker.get_experiment(adapter.record(pf, name="orders").experiment_id)
    refs = {ref.kind: ref for ref in experiment.artifacts}
    curve = adapter.load_equity(refs["equity_curve"])
    pd.testing.assert_series_equal(curve, pf.value(), check_names=False, check_freq=False)
    trades = adapter.load_trades(refs["trades"])
    assert len(trades) == pf.trades.count()
    np.testing.assert_allclose(trades["pnl"].to_numpy(), pf.trades.pnl.values)
    assert refs["equity_curve"].media_type == "application/vnd.apache.parquet"


def test_grid_is_one_batch_with_params_from_column_levels(
    ws: Workspace, grid: Any, close: pd.DataFrame
) -> None:
    """Every column of a grid is an experiment of one completed batch, params from the index."""
    result = VectorbtAdapter(ws).record(grid, name="ma-grid", params={"fees": 0.001})
    n = grid.wrapper.shape_2d[1]
    assert len(result.experiment_ids) == n == 12
    batch = ws.observer.get_batch(result.batch_id)
    assert batch.status is BatchStatus.COMPLETED
    assert batch.total == n
    assert batch.succeeded == n
    assert [item.experiment_id for item in ws.observer.batch_items(batch.id)] == list(
        result.experiment_ids
    )
    runs = ws.tracker.list_experiments(ExperimentFilter(batch_id=batch.id))
    assert len(runs) == n
    by_id = {run.id: run for run in runs}
    for i, key in enumerate(grid.wrapper.columns):
        run = by_id[result.experiment_ids[i]]
        assert run.params == {
            "fast_window": int(key[0]),
            "slow_window": int(key[1]),
            "symbol": key[2],
            "fees": 0.001,
        }
        assert run.definition.batch_index == i
    assert {run.params["symbol"] for run in runs} == set(close.columns)


def test_sweep_curves_share_one_artifact_addressed_by_part(ws: Workspace, grid: Any) -> None:
    """All columns' equity curves are one artifact; each run's ref names its own column."""
    adapter = VectorbtAdapter(ws)
    result = adapter.record(grid, name="ma-grid")
    runs = [ws.tracker.get_experiment(i) for i in result.experiment_ids]
    curve_refs = [next(r for r in run.artifacts if r.kind == "equity_curve") for run in runs]
    assert len({ref.id for ref in curve_refs}) == 1
    assert [ref.part for ref in curve_refs] == list(result.labels)
    assert len({ref.part for ref in curve_refs}) == len(runs)
    for i in (0, 7, len(runs) - 1):
        column = grid.wrapper.columns[i]
        expected = grid.value()[column]
        pd.testing.assert_series_equal(
            adapter.load_equity(curve_refs[i]), expected, check_names=False, check_freq=False
        )
        trades_ref = next(r for r in runs[i].artifacts if r.kind == "trades")
        assert len(adapter.load_trades(trades_ref)) == grid.trades.count()[column]


def test_per_column_metrics_equal_stats_including_a_column_without_trades(
    ws: Workspace, grid: Any
) -> None:
    """Vectorized metrics equal pf.stats(column=c); a column with no trades has no win rate."""
    result = VectorbtAdapter(ws).record(grid, name="ma-grid")
    columns = list(grid.wrapper.columns)
    for i in (0, 5, 10, len(columns) - 1):
        run = ws.tracker.get_experiment(result.experiment_ids[i])
        _assert_matches_stats(grid, columns[i], run.metrics)
    idle = ws.tracker.get_experiment(result.experiment_ids[-1])
    assert idle.metrics["trades"] == 0
    assert "win_rate" not in idle.metrics
    assert "profit_factor" not in idle.metrics
    assert all(math.isfinite(v) for v in idle.metrics.values())


def test_metric_names_and_units_are_documented() -> None:
    """Every recorded metric is listed with its stats() title, and the docs name them all."""
    docs = (Path(__file__).parents[2] / "docs" / "vectorbt.md").read_text(encoding="utf-8")
    for name in METRICS:
        assert f"`{name}`" in docs, f"docs/vectorbt.md does not describe metric {name}"


def test_portfolio_without_frequency_leaves_annualized_metrics_out(ws: Workspace) -> None:
    """Without a bar frequency the annualized metrics are left out instead of crashing."""
    prices = load_sample("CCC")["close"].reset_index(drop=True)
    pf = vbt.Portfolio.from_holding(prices)
    run = ws.tracker.get_experiment(VectorbtAdapter(ws).record(pf, name="nofreq").experiment_id)
    assert "sharpe" not in run.metrics
    assert "annual_return" not in run.metrics
    assert run.metrics["total_return"] == pytest.approx(100 * pf.total_return())


def test_grouped_portfolio_is_one_experiment_per_group(ws: Workspace, close: pd.DataFrame) -> None:
    """A portfolio grouped with cash sharing records one experiment per group."""
    groups = pd.Index(["a", "a", "b", "b"], name="basket")
    pf = vbt.Portfolio.from_holding(
        close, group_by=groups, cash_sharing=True, init_cash=1000.0, freq="1D"
    )
    result = VectorbtAdapter(ws).record(pf, name="baskets")
    assert result.labels == ("a", "b")
    runs = [ws.tracker.get_experiment(i) for i in result.experiment_ids]
    assert [run.params for run in runs] == [{"basket": "a"}, {"basket": "b"}]
    for run, group in zip(runs, ("a", "b"), strict=True):
        assert run.metrics["total_return"] == pytest.approx(100 * pf.total_return()[group])


def test_run_records_the_lifecycle_and_returns_the_portfolio(
    ws: Workspace, close: pd.DataFrame
) -> None:
    """run() returns fn's portfolio and completes one experiment holding its metrics."""

    def hold(prices: pd.Series, *, fees: float) -> Any:
        return vbt.Portfolio.from_holding(prices, fees=fees, freq="1D")

    adapter = VectorbtAdapter(ws)
    pf = adapter.run(hold, close["AAA"], name="hold", fees=0.002)
    assert isinstance(pf, vbt.Portfolio)
    assert adapter.last_result is not None
    run = ws.tracker.get_experiment(adapter.last_result.experiment_id)
    assert run.id == adapter.last_result.run_id
    assert run.status is ExperimentStatus.COMPLETED
    assert run.params == {"fees": 0.002}
    assert run.definition.strategy.endswith("hold")
    assert run.started_at is not None
    assert run.completed_at is not None
    assert run.metrics["total_return"] == pytest.approx(100 * pf.total_return())
    code = next(ref for ref in run.artifacts if ref.kind == "code")
    assert b"def hold" in ws.artifacts.get(code.id)


def test_run_of_a_sweep_records_a_batch_and_the_call(ws: Workspace, close: pd.DataFrame) -> None:
    """run() of a function building a grid records the batch and completes the call's run."""

    def grid_of(prices: pd.DataFrame) -> Any:
        fast, slow = vbt.MA.run_combs(prices, window=[5, 20, 50], r=2, short_names=["f", "s"])
        entries, exits = fast.ma_crossed_above(slow), fast.ma_crossed_below(slow)
        return vbt.Portfolio.from_signals(prices, entries, exits, freq="1D")

    adapter = VectorbtAdapter(ws)
    pf = adapter.run(grid_of, close[["AAA", "DDD"]], name="grid-run")
    result = adapter.last_result
    assert result is not None
    assert result.batch_id is not None
    assert len(result.experiment_ids) == pf.wrapper.shape_2d[1] == 6
    call = ws.tracker.get_experiment(result.run_id or "")
    assert call.status is ExperimentStatus.COMPLETED
    assert {ref.kind for ref in call.artifacts} >= {"equity_curve", "trades"}
    assert ws.observer.get_batch(result.batch_id).status is BatchStatus.COMPLETED


def test_run_of_a_failing_function_fails_the_experiment_and_reraises(ws: Workspace) -> None:
    """A function that raises fails its experiment with a category; the same error propagates."""
    error = ValueError("window must be positive, got -5")

    def broken(window: int) -> Any:
        raise error

    with pytest.raises(ValueError, match="window must be positive") as raised:
        VectorbtAdapter(ws).run(broken, name="broken", window=-5)
    assert raised.value is error
    (run,) = ws.tracker.list_experiments()
    assert run.status is ExperimentStatus.FAILED
    assert run.error_category is ErrorCategory.PARAMETER_ERROR
    assert run.error is not None
    assert "window must be positive" in run.error
    trace = next(ref for ref in run.artifacts if ref.kind == "diagnostics")
    assert b"broken" in ws.artifacts.get(trace.id)


def test_run_of_a_function_returning_no_portfolio_fails_clearly(ws: Workspace) -> None:
    """A function returning something else than a Portfolio fails with a TypeError saying so."""
    with pytest.raises(TypeError, match=r"vbt\.Portfolio\.from_signals"):
        VectorbtAdapter(ws).run(lambda: 42, name="not-a-portfolio")
    (run,) = ws.tracker.list_experiments()
    assert run.status is ExperimentStatus.FAILED


def test_pickle_is_saved_and_loaded_only_with_allow_pickle(ws: Workspace) -> None:
    """A Portfolio pickle is stored only on request and loading it needs allow_pickle=True."""
    pf = vbt.Portfolio.from_holding(load_sample("DDD")["close"], freq="1D")
    adapter = VectorbtAdapter(ws)
    plain = ws.tracker.get_experiment(adapter.record(pf, name="plain").experiment_id)
    assert "portfolio" not in {ref.kind for ref in plain.artifacts}
    pickled = ws.tracker.get_experiment(
        adapter.record(pf, name="pickled", allow_pickle=True).experiment_id
    )
    ref = next(ref for ref in pickled.artifacts if ref.kind == "portfolio")
    with pytest.raises(PickleNotAllowed, match="allow_pickle=True"):
        adapter.load_portfolio(ref)
    loaded = load_portfolio(ws.artifacts, ref, allow_pickle=True)
    pd.testing.assert_series_equal(loaded.value(), pf.value())
    curve = next(ref for ref in pickled.artifacts if ref.kind == "equity_curve")
    with pytest.raises(ValueError, match="kind 'equity_curve', not 'portfolio'"):
        load_portfolio(ws.artifacts, curve, allow_pickle=True)


def test_input_fingerprints_are_stable_and_content_sensitive(
    ws: Workspace, close: pd.DataFrame
) -> None:
    """The same frame gives the same input artifact; a changed value gives another."""
    pf = vbt.Portfolio.from_holding(close["AAA"], freq="1D")
    adapter = VectorbtAdapter(ws)
    first = ws.tracker.get_experiment(adapter.record(pf, name="a", inputs=close).experiment_id)
    again = ws.tracker.get_experiment(
        adapter.record(pf, name="b", inputs={"close": close.copy()}).experiment_id
    )
    changed = close.copy()
    changed.iloc[100, 0] += 0.01
    other = ws.tracker.get_experiment(adapter.record(pf, name="c", inputs=[changed]).experiment_id)
    (ref_a,), (ref_b,), (ref_c,) = (
        first.definition.inputs,
        again.definition.inputs,
        other.definition.inputs,
    )
    doc_a, doc_b = get_json(ws.artifacts, ref_a), get_json(ws.artifacts, ref_b)
    assert doc_a["sha256"] == doc_b["sha256"]
    assert doc_a["shape"] == list(close.shape)
    assert get_json(ws.artifacts, ref_c)["sha256"] != doc_a["sha256"]
    found = ws.tracker.find_by_input_artifacts([ref_c.id])
    assert [run.id for run in found] == [other.id]


def test_store_inputs_keeps_the_frame_as_parquet_once(close: pd.DataFrame) -> None:
    """With store_inputs the price frame itself is the input artifact, stored once."""
    ws = _memory_workspace()
    adapter = VectorbtAdapter(ws, store_inputs=True, capture_code=False)
    pf = vbt.Portfolio.from_holding(close, freq="1D")
    first = adapter.record(pf, name="hold", inputs={"close": close})
    stored = len(list(ws.artifacts.ids()))
    second = adapter.record(pf, name="hold", inputs={"close": close.copy()})
    assert len(list(ws.artifacts.ids())) == stored
    (ref,) = ws.tracker.get_experiment(first.experiment_ids[0]).definition.inputs
    assert ws.tracker.get_experiment(second.experiment_ids[0]).definition.inputs == (ref,)
    assert ref.media_type == "application/vnd.apache.parquet"
    pd.testing.assert_frame_equal(get_frame(ws.artifacts, ref), close, check_freq=False)


class _FullDiskTracker(InMemoryExperimentTracker):
    """An in-memory tracker whose bulk writes fail the way a full disk does."""

    def record_finished(self, records: FinishedExperiments) -> list[str]:
        """Refuse every bulk write."""
        raise StorageError("No space left on device")


def test_storage_failure_spools_and_returns_without_raising(tmp_path: Path, grid: Any) -> None:
    """A failing tracker does not break record(): one warning, the sweep is spooled."""
    ws = Workspace(
        tracker=_FullDiskTracker(),
        artifacts=InMemoryArtifactStore(),
        observer=InMemoryBatchObserver(),
        path=tmp_path,
    )
    with capture_logs() as logs:
        result = VectorbtAdapter(ws).record(grid, name="ma-grid")
    assert not result.recorded
    assert result.spool_file is not None
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["recording.failed"]
    record = read_spool_record(result.spool_file)
    assert record.experiment_ids == list(result.experiment_ids)
    assert record.batch is not None
    assert record.batch.total == len(result.experiment_ids)
    assert result.spool_file.parent == tmp_path / SPOOL_DIR


def test_run_returns_the_portfolio_when_recording_fails(tmp_path: Path) -> None:
    """run() hands back the portfolio even when the tracker cannot take the record."""
    ws = Workspace(
        tracker=_FullDiskTracker(),
        artifacts=InMemoryArtifactStore(),
        observer=InMemoryBatchObserver(),
        path=tmp_path,
    )
    prices = load_sample_prices()
    adapter = VectorbtAdapter(ws)
    pf = adapter.run(lambda: vbt.Portfolio.from_holding(prices, freq="1D"), name="hold-all")
    assert isinstance(pf, vbt.Portfolio)
    assert pf.wrapper.shape_2d == (len(prices), 4)
    assert adapter.last_result is not None
    assert not adapter.last_result.recorded


class _BusyTracker(InMemoryExperimentTracker):
    """An in-memory tracker that behaves like a database held by another process."""

    def create_experiment(self, definition: Any, *, experiment_id: str | None = None) -> Any:
        """Refuse, as a busy workspace does after its timeout."""
        raise WorkspaceBusy("runs.duckdb", 0.1, holder="pid 4242")


def test_run_survives_a_busy_workspace_and_spools_the_finished_run(tmp_path: Path) -> None:
    """When the run cannot even be started in storage, fn still runs and its record is spooled."""
    ws = Workspace(
        tracker=_BusyTracker(),
        artifacts=InMemoryArtifactStore(),
        observer=InMemoryBatchObserver(),
        path=tmp_path,
    )
    adapter = VectorbtAdapter(ws, capture_code=False)
    prices = load_sample("AAA")["close"]
    pf = adapter.run(lambda: vbt.Portfolio.from_holding(prices, freq="1D"), name="busy")
    assert pf.total_return() == pytest.approx(prices.iloc[-1] / prices.iloc[0] - 1)
    result = adapter.last_result
    assert result is not None
    assert not result.recorded
    assert result.spool_file is not None
    (spooled,) = read_spool_record(result.spool_file).experiments
    assert spooled.status is ExperimentStatus.COMPLETED
    assert spooled.metrics["total_return"] == pytest.approx(100 * pf.total_return())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": ""}, ValueError, "name must be a non-empty string"),
        ({"name": "x", "params": [1, 2]}, TypeError, "params must be a mapping"),
        ({"name": "x", "params": {"w": object()}}, InvalidParams, "no canonical JSON form"),
        ({"name": "x", "params": {"symbol": "AAA"}}, InvalidParams, "levels of the portfolio"),
        ({"name": "x", "inputs": 3}, TypeError, "inputs must be a DataFrame"),
        ({"name": "x", "inputs": {"close": [1, 2]}}, TypeError, "input 'close' is a list"),
        ({"name": "x", "tags": "nightly"}, TypeError, "tags must be a list"),
    ],
)
def test_bad_record_arguments_raise_clear_errors(
    ws: Workspace, close: pd.DataFrame, kwargs: dict[str, Any], error: type, match: str
) -> None:
    """Bad arguments to record() raise at once, saying what was wrong, and record nothing."""
    pf = vbt.Portfolio.from_holding(close, freq="1D")
    with pytest.raises(error, match=match):
        VectorbtAdapter(ws).record(pf, **kwargs)
    assert ws.tracker.list_experiments() == []


def test_bad_adapter_and_portfolio_arguments_raise_clear_errors(ws: Workspace) -> None:
    """A missing port, a non-portfolio and a wrong artifact kind are refused clearly."""
    with pytest.raises(TypeError, match="needs a workspace"):
        VectorbtAdapter(tracker=InMemoryExperimentTracker())
    with pytest.raises(TypeError, match="expected a vectorbt Portfolio"):
        VectorbtAdapter(ws).record(pd.Series([1.0, 2.0]), name="series")
    with pytest.raises(TypeError, match="needs a function"):
        VectorbtAdapter(ws).run(None, name="nothing")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected an ArtifactRef"):
        VectorbtAdapter(ws).load_equity("deadbeef")  # type: ignore[arg-type]


def test_sweep_into_a_real_workspace(tmp_path: Path, grid: Any) -> None:
    """A sweep recorded into a real DuckDB workspace can be listed and ranked."""
    pytest.importorskip("quantrack.adapters.duckdb")
    from quantrack.workspace import open_workspace

    ws = open_workspace(tmp_path / "ws")
    result = VectorbtAdapter(ws).record(grid, name="ma-grid", tags=["grid"])
    assert result.recorded
    best = ws.tracker.list_experiments(
        ExperimentFilter(batch_id=result.batch_id, order_by="sharpe", descending=True)
    )
    assert len(best) == len(result.experiment_ids)
    sharpe = grid.sharpe_ratio()
    assert best[0].metrics["sharpe"] == pytest.approx(sharpe[np.isfinite(sharpe)].max())
    # The idle column's Sharpe ratio is infinite in vectorbt: undefined, so left out.
    assert "sharpe" not in best[-1].metrics
    assert ws.observer.get_batch(result.batch_id or "").succeeded == len(best)
    curve = next(ref for ref in best[0].artifacts if ref.kind == "equity_curve")
    assert ws.artifacts.exists(curve.id)


def test_empty_in_memory_ports_are_accepted() -> None:
    """Explicit ports are used even when empty (an empty tracker is falsy by its length)."""
    tracker, artifacts = InMemoryExperimentTracker(), InMemoryArtifactStore()
    adapter = VectorbtAdapter(tracker=tracker, artifacts=artifacts)
    assert adapter.tracker is tracker
    assert adapter.artifacts is artifacts
