"""The backtrader adapter, on real Cerebro runs over the bundled sample data and a real
DuckDB workspace.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest
from structlog.testing import capture_logs
from tests.integration.bt_strategies import (
    Explodes,
    Idle,
    SmaCross,
    SmaCrossFragile,
    cerebro_with,
)

from quantrack import (
    BatchStatus,
    ErrorCategory,
    ExperimentStatus,
    InvalidParams,
    Workspace,
    categorize_error,
    open_workspace,
)
from quantrack.adapters.filesystem.spool import SPOOL_DIR, replay_spool
from quantrack.adapters.frames import get_frame, get_json
from quantrack.adapters.memory import (
    InMemoryArtifactStore,
    InMemoryBatchObserver,
    InMemoryExperimentTracker,
)
from quantrack.domain import Experiment
from quantrack.engines.backtrader import BacktraderAdapter, input_fingerprint
from quantrack.sample_data import load_sample

BARS = 800  # about three years: enough crossovers, quick to run


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A real workspace (DuckDB file and artifact folder) in a fresh folder."""
    return open_workspace(tmp_path / "ws")


def _only(workspace: Workspace) -> Experiment:
    (experiment,) = workspace.tracker.list_experiments()
    return experiment


def _artifact(experiment: Experiment, kind: str) -> Any:
    (ref,) = [ref for ref in experiment.artifacts if ref.kind == kind]
    return ref


def test_run_returns_what_cerebro_returns_and_records_it(workspace: Workspace) -> None:
    """The adapter hands back cerebro's strategies and records a completed, described run."""
    plain = cerebro_with(SmaCross, bars=BARS, fast=8, slow=40)
    expected = plain.run()
    cerebro = cerebro_with(SmaCross, bars=BARS, fast=8, slow=40)
    result = BacktraderAdapter(workspace).run(cerebro, name="sma", params={"universe": "demo"})
    assert isinstance(result, list)
    assert len(result) == len(expected) == 1
    assert isinstance(result[0], SmaCross)
    assert result[0].executions == expected[0].executions
    assert cerebro.broker.getvalue() == plain.broker.getvalue()

    experiment = _only(workspace)
    assert experiment.status is ExperimentStatus.COMPLETED
    definition = experiment.definition
    assert definition.engine == "backtrader"
    assert definition.strategy == "tests.integration.bt_strategies.SmaCross"
    assert definition.provenance.engine_version == bt.__version__
    assert definition.provenance.code_hash is not None
    params = experiment.params
    assert (params["fast"], params["slow"], params["stake"], params["universe"]) == (
        8,
        40,
        400,
        "demo",
    )
    frame = load_sample("AAA").iloc[:BARS]
    (feed,) = params["backtrader"]["data"]
    assert feed["name"] == "AAA"
    assert feed["timeframe"] == "Day"
    assert feed["first"] == frame.index[0].isoformat()
    assert feed["last"] == frame.index[-1].isoformat()
    broker = params["backtrader"]["broker"]
    assert broker["cash"] == 100_000
    assert broker["commission"]["default"]["commission"] == 0.001
    assert {ref.kind for ref in experiment.artifacts} >= {
        "equity_curve",
        "trades",
        "analyzers",
        "code",
    }
    code = [ref for ref in experiment.artifacts if ref.kind == "code"]
    assert any(b"class SmaCross" in workspace.artifacts.get(ref.id) for ref in code)


@pytest.mark.parametrize(
    ("column", "span"),
    [("date", True), (0, False)],
    ids=["named-column", "column-number"],
)
def test_a_feeds_bar_span_comes_from_where_backtrader_reads_its_times(
    workspace: Workspace, column: str | int, span: bool
) -> None:
    """Bar times in a named column give the first and last bar; a column number (which
    backtrader reads by position) gives none rather than a wrong one.
    """
    frame = load_sample("AAA").iloc[:300].reset_index()
    if column == 0:
        frame = frame[["date", "open", "high", "low", "close", "volume"]]
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame, datetime=column, name="AAA"))
    cerebro.addstrategy(SmaCross)
    BacktraderAdapter(workspace).run(cerebro, name="columns")
    (feed,) = _only(workspace).params["backtrader"]["data"]
    if span:
        assert (feed["first"], feed["last"]) == (
            frame["date"].iloc[0].isoformat(),
            frame["date"].iloc[-1].isoformat(),
        )
    else:
        assert "first" not in feed
        assert "last" not in feed


def test_config_hash_changes_with_strategy_params_and_broker(workspace: Workspace) -> None:
    """Runs differing only in a strategy param or the starting cash get different hashes."""
    adapter = BacktraderAdapter(workspace)
    adapter.run(cerebro_with(SmaCross, bars=200, fast=8), name="a")
    adapter.run(cerebro_with(SmaCross, bars=200, fast=9), name="b")
    richer = cerebro_with(SmaCross, bars=200, fast=8)
    richer.broker.setcash(200_000.0)
    adapter.run(richer, name="c")
    adapter.run(cerebro_with(SmaCross, bars=200, fast=8), name="d")
    hashes = {e.name: e.config_hash for e in workspace.tracker.list_experiments()}
    assert len({hashes["a"], hashes["b"], hashes["c"]}) == 3
    assert hashes["a"] == hashes["d"]


def test_metrics_equal_backtraders_own_analyzers(workspace: Workspace) -> None:
    """Every recorded metric equals what backtrader's analyzers report for the same run."""
    BacktraderAdapter(workspace).run(cerebro_with(SmaCross, bars=BARS), name="sma")
    metrics = _only(workspace).metrics

    reference = cerebro_with(SmaCross, bars=BARS)
    reference.addanalyzer(bt.analyzers.TradeAnalyzer, _name="ta")
    reference.addanalyzer(bt.analyzers.DrawDown, _name="dd")
    reference.addanalyzer(bt.analyzers.Returns, _name="ret")
    reference.addanalyzer(
        bt.analyzers.SharpeRatio,
        _name="sr",
        timeframe=bt.TimeFrame.Days,
        annualize=True,
        riskfreerate=0.0,
    )
    reference.addanalyzer(bt.analyzers.PositionsValue, _name="pv")
    strategy = reference.run()[0]
    ta = strategy.analyzers.ta.get_analysis()
    dd = strategy.analyzers.dd.get_analysis()
    ret = strategy.analyzers.ret.get_analysis()
    positions = strategy.analyzers.pv.get_analysis()

    assert metrics["final_value"] == reference.broker.getvalue()
    assert metrics["total_return"] == pytest.approx(math.expm1(ret["rtot"]) * 100, rel=1e-12)
    assert metrics["annual_return"] == ret["rnorm100"]
    assert metrics["sharpe"] == strategy.analyzers.sr.get_analysis()["sharperatio"]
    assert metrics["max_drawdown"] == dd.max.drawdown
    assert metrics["max_drawdown_length"] == dd.max.len
    assert metrics["trades"] == ta.total.closed
    assert metrics["won"] == ta.won.total
    assert metrics["lost"] == ta.lost.total
    assert metrics["win_rate"] == pytest.approx(100 * ta.won.total / ta.total.closed)
    assert metrics["avg_trade"] == ta.pnl.net.average
    assert metrics["profit_factor"] == pytest.approx(ta.won.pnl.total / -ta.lost.pnl.total)
    in_market = sum(1 for values in positions.values() if any(values))
    assert metrics["exposure"] == pytest.approx(100 * in_market / len(positions))
    assert ta.total.closed > 5  # the comparison is about a run that really traded


def test_users_analyzers_are_kept_reused_and_recorded(workspace: Workspace) -> None:
    """A user's analyzers stay on the strategy, same-settings ones are reused, all are saved."""
    cerebro = cerebro_with(SmaCross, bars=BARS)
    cerebro.addanalyzer(bt.analyzers.SQN, _name="my_sqn")
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="my_trades")
    (strategy,) = BacktraderAdapter(workspace).run(cerebro, name="sma")
    names = strategy.analyzers.getnames()
    assert "my_sqn" in names
    assert "my_trades" in names
    assert "quantrack_trades" not in names  # the user's TradeAnalyzer was reused
    assert "quantrack_recorder" in names
    experiment = _only(workspace)
    document = get_json(workspace.artifacts, _artifact(experiment, "analyzers"))
    assert document["my_sqn"]["sqn"] == pytest.approx(strategy.analyzers.my_sqn.get_analysis().sqn)
    assert document["my_sqn"]["trades"] == strategy.analyzers.my_sqn.get_analysis().trades
    assert document["my_trades"]["total"]["closed"] == experiment.metrics["trades"]
    assert "quantrack_recorder" not in document  # stored as the equity curve instead
    # The user's TradeAnalyzer ran, so the recorder derived none in its place.
    assert "quantrack_trades" not in document
    assert "quantrack_drawdown" in document


def test_equity_curve_and_trades_artifacts(workspace: Workspace) -> None:
    """The equity curve has one row per bar; the trades match the broker's executions."""
    (strategy,) = BacktraderAdapter(workspace).run(cerebro_with(SmaCross, bars=BARS), name="s")
    experiment = _only(workspace)
    equity = get_frame(workspace.artifacts, _artifact(experiment, "equity_curve"))
    assert list(equity.columns) == ["time", "value", "cash"]
    frame = load_sample("AAA").iloc[:BARS]
    assert list(equity["time"]) == list(frame.index)
    assert equity["value"].iloc[-1] == experiment.metrics["final_value"]
    assert equity["cash"].iloc[0] == 100_000

    trades = get_frame(workspace.artifacts, _artifact(experiment, "trades"))
    assert len(trades) == experiment.metrics["trades"]
    executions = strategy.executions
    for row, (entry, exit_) in zip(
        trades.itertuples(), zip(executions[::2], executions[1::2], strict=False), strict=False
    ):
        assert row.entry_time == entry[0]
        assert row.exit_time == exit_[0]
        assert row.entry_price == pytest.approx(entry[1])
        assert row.exit_price == pytest.approx(exit_[1])
        assert row.size == entry[2] == 400
        assert row.pnl == pytest.approx(400 * (exit_[1] - entry[1]))
        expected_commission = 0.001 * 400 * (entry[1] + exit_[1])
        assert row.commission == pytest.approx(expected_commission)
        assert row.pnl_net == pytest.approx(row.pnl - row.commission)
        assert row.bars > 0
    assert trades["pnl_net"].mean() == pytest.approx(experiment.metrics["avg_trade"])


def test_run_without_trades_leaves_trade_metrics_out(workspace: Workspace) -> None:
    """No trades: win rate, profit factor and average trade are absent, never NaN."""
    BacktraderAdapter(workspace).run(cerebro_with(Idle, bars=300), name="idle")
    metrics = _only(workspace).metrics
    assert metrics["trades"] == 0
    assert metrics["exposure"] == 0
    assert metrics["final_value"] == 100_000
    for undefined in ("won", "lost", "win_rate", "profit_factor", "avg_trade"):
        assert undefined not in metrics
    assert all(math.isfinite(value) for value in metrics.values())


def test_strategy_that_raises_is_failed_and_the_error_reaches_the_caller(
    workspace: Workspace,
) -> None:
    """The exception propagates unchanged; the run is failed with traceback and category."""
    with pytest.raises(ZeroDivisionError, match="strategy bug") as caught:
        BacktraderAdapter(workspace).run(cerebro_with(Explodes, bars=300, at=50), name="boom")
    experiment = _only(workspace)
    assert experiment.status is ExperimentStatus.FAILED
    assert experiment.error == "ZeroDivisionError: strategy bug after 50 bars"
    assert experiment.error_category is categorize_error(caught.value)
    trace = workspace.artifacts.get(_artifact(experiment, "diagnostics").id).decode()
    assert "ZeroDivisionError" in trace
    assert "bt_strategies.py" in trace


class _Interrupts(bt.Strategy):  # type: ignore[misc]
    def next(self) -> None:
        if len(self) == 20:
            raise KeyboardInterrupt


def test_ctrl_c_cancels_the_run(workspace: Workspace) -> None:
    """KeyboardInterrupt during the run marks it cancelled and still interrupts the caller."""
    with pytest.raises(KeyboardInterrupt):
        BacktraderAdapter(workspace).run(cerebro_with(_Interrupts, bars=100), name="stop")
    assert _only(workspace).status is ExperimentStatus.CANCELLED


@pytest.mark.slow
def test_optstrategy_sweep_with_two_processes_is_one_partial_batch(workspace: Workspace) -> None:
    """12 combinations over 2 processes: one batch, 9 completed runs, 3 failed items, partial."""
    cerebro = cerebro_with(None, bars=BARS)
    cerebro.optstrategy(SmaCrossFragile, fast=[5, 10, 13, 20], slow=[30, 50, 100])
    results = BacktraderAdapter(workspace).run(cerebro, name="grid", maxcpus=2)
    assert len(results) == 9
    assert all(isinstance(r[0], bt.cerebro.OptReturn) for r in results)

    (batch,) = workspace.observer.list_batches()
    assert batch.status is BatchStatus.PARTIAL
    assert (batch.total, batch.succeeded, batch.failed) == (12, 9, 3)
    assert batch.error_summary == {ErrorCategory.PARAMETER_ERROR: 3}
    items = workspace.observer.batch_items(batch.id)
    assert [item.index for item in items] == list(range(12))

    experiments = {e.definition.batch_index: e for e in workspace.tracker.list_experiments()}
    assert len(experiments) == 12
    combos = [(f, s) for f in (5, 10, 13, 20) for s in (30, 50, 100)]
    for index, (fast, slow) in enumerate(combos):
        experiment = experiments[index]
        assert experiment.definition.batch_id == batch.id
        assert (experiment.params["fast"], experiment.params["slow"]) == (fast, slow)
        assert items[index].experiment_id == experiment.id
        if fast == 13:
            assert experiment.status is ExperimentStatus.FAILED
            assert experiment.error == "ValueError: fast window 13 is not supported by this data"
            assert experiment.error_category is ErrorCategory.PARAMETER_ERROR
            assert any(ref.kind == "diagnostics" for ref in experiment.artifacts)
        else:
            assert experiment.status is ExperimentStatus.COMPLETED
            assert {"sharpe", "trades", "final_value"} <= set(experiment.metrics)
            assert {ref.kind for ref in experiment.artifacts} >= {"equity_curve", "trades"}

    # A combination's metrics are those of the same params run on their own.
    single = Workspace(
        tracker=InMemoryExperimentTracker(),
        artifacts=InMemoryArtifactStore(),
        observer=workspace.observer,
    )
    alone_cerebro = cerebro_with(SmaCrossFragile, bars=BARS, fast=10, slow=50)
    BacktraderAdapter(single).run(alone_cerebro, name="one")
    alone = _only(single).metrics
    assert experiments[4].metrics == alone


def test_input_fingerprint_finds_every_run_on_that_data(workspace: Workspace) -> None:
    """Runs on the same data share an input artifact; find_by_input_artifacts answers with them."""
    adapter = BacktraderAdapter(workspace)
    adapter.run(cerebro_with(SmaCross, bars=200), name="a")
    adapter.run(cerebro_with(SmaCross, bars=200, fast=5), name="b")
    adapter.run(cerebro_with(SmaCross, bars=300), name="other-data")
    ref = input_fingerprint(load_sample("AAA").iloc[:200])
    found = workspace.tracker.find_by_input_artifacts([ref.id])
    assert sorted(e.name for e in found) == ["a", "b"]
    assert workspace.artifacts.exists(ref.id)


def test_store_inputs_keeps_the_feed_data_as_parquet(workspace: Workspace) -> None:
    """With store_inputs=True the feed's data itself is an input artifact, readable back."""
    BacktraderAdapter(workspace, store_inputs=True).run(cerebro_with(Idle, bars=150), name="x")
    experiment = _only(workspace)
    (data_ref,) = [ref for ref in experiment.definition.inputs if ref.kind == "input_data"]
    stored = get_frame(workspace.artifacts, data_ref)
    pd.testing.assert_frame_equal(stored, load_sample("AAA").iloc[:150])
    assert workspace.tracker.find_by_input_artifacts([data_ref.id])[0].id == experiment.id


def test_csv_feed_is_fingerprinted_by_file_content(tmp_path: Path, workspace: Workspace) -> None:
    """A CSV file feed's fingerprint is its bytes': the same file found under another path."""
    frame = load_sample("AAA").iloc[:120]
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    for path in (first, second):
        frame.to_csv(path, date_format="%Y-%m-%d")
    adapter = BacktraderAdapter(workspace)
    for path in (first, second):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(
            bt.feeds.GenericCSVData(
                dataname=str(path), dtformat="%Y-%m-%d", openinterest=-1, name="AAA"
            )
        )
        cerebro.addstrategy(Idle)
        adapter.run(cerebro, name=path.stem)
    found = workspace.tracker.find_by_input_artifacts([input_fingerprint(first).id])
    assert sorted(e.name for e in found) == ["a", "b"]


def test_explicit_in_memory_ports(tmp_path: Path) -> None:
    """The adapter also records into ports handed to it, e.g. the in-memory fakes."""
    tracker, store = InMemoryExperimentTracker(), InMemoryArtifactStore()
    BacktraderAdapter(tracker=tracker, artifacts=store).run(
        cerebro_with(SmaCross, bars=200), name="mem"
    )
    (experiment,) = tracker.list_experiments()
    assert experiment.status is ExperimentStatus.COMPLETED
    assert store.exists(_artifact(experiment, "equity_curve").id)


def test_bad_inputs_are_refused_with_clear_errors(workspace: Workspace) -> None:
    """Each caller mistake raises before anything runs, saying what to do."""
    adapter = BacktraderAdapter(workspace)
    with pytest.raises(TypeError, match="expects a backtrader Cerebro"):
        adapter.run(object(), name="x")
    with pytest.raises(ValueError, match="non-empty string"):
        adapter.run(cerebro_with(Idle, bars=50), name="  ")
    with pytest.raises(ValueError, match="no data feeds"):
        adapter.run(bt.Cerebro(), name="x")
    with pytest.raises(InvalidParams, match="NaN"):
        adapter.run(cerebro_with(Idle, bars=50), name="x", params={"alpha": float("nan")})
    with pytest.raises(ValueError, match="conflicts with the strategy's own parameter fast"):
        adapter.run(cerebro_with(SmaCross, bars=50), name="x", params={"fast": 99})
    with pytest.raises(ValueError, match="may not use the key 'backtrader'"):
        adapter.run(cerebro_with(Idle, bars=50), name="x", params={"backtrader": 1})
    with pytest.raises(ValueError, match="non-empty strings"):
        adapter.run(cerebro_with(Idle, bars=50), name="x", tags=[""])
    with pytest.raises(ValueError, match="either a workspace or explicit ports"):
        BacktraderAdapter(workspace, tracker=InMemoryExperimentTracker())
    with pytest.raises(ValueError, match="at least a tracker and an artifact store"):
        BacktraderAdapter(tracker=InMemoryExperimentTracker())
    with pytest.raises(TypeError, match="cannot fingerprint"):
        input_fingerprint(42)
    assert workspace.tracker.list_experiments() == []


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from quantrack import open_workspace
    workspace = open_workspace(sys.argv[1])
    with workspace.tracker.session():
        print("holding", flush=True)
        sys.stdin.readline()
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("background", [True, False], ids=["background", "in-process"])
def test_busy_workspace_never_breaks_the_backtest_and_nothing_is_lost(
    tmp_path: Path, background: bool
) -> None:
    """Another process holds the database: the result comes back, one warning (relayed
    from the recording process in the background), and the spooled run lands in the
    workspace when it is next opened.
    """
    folder = tmp_path / "ws"
    open_workspace(folder)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        busy = open_workspace(folder, timeout=0.3)
        cerebro = cerebro_with(SmaCross, bars=BARS)
        adapter = BacktraderAdapter(busy, background=background)
        with capture_logs() as logs:
            (strategy,) = adapter.run(cerebro, name="while-busy")
            assert adapter.flush(timeout=60)
        expected = cerebro_with(SmaCross, bars=BARS)
        expected.run()
        assert cerebro.broker.getvalue() == expected.broker.getvalue()
        assert len(strategy.executions) > 0
        failures = [e for e in logs if e["event"] == "recording.failed"]
        assert len(failures) == 1
        assert failures[0]["log_level"] == "warning"
        assert "busy" in failures[0]["error"]
        assert len(list((folder / SPOOL_DIR).glob("*.json"))) == 1
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)

    reopened = open_workspace(folder)
    experiment = _only(reopened)
    assert experiment.name == "while-busy"
    assert experiment.status is ExperimentStatus.COMPLETED
    assert experiment.metrics["final_value"] == expected.broker.getvalue()
    for ref in experiment.artifacts:
        reopened.artifacts.verify(ref.id)
    equity = get_frame(reopened.artifacts, _artifact(experiment, "equity_curve"))
    assert len(equity) == BARS
    assert list((folder / SPOOL_DIR).glob("*.json")) == []
    assert len(open_workspace(folder).tracker.list_experiments()) == 1


def test_missing_backtrader_names_the_extra_to_install() -> None:
    """Without backtrader, importing the engine says which extra to install."""
    code = (
        "import sys; sys.modules['backtrader'] = None\n"
        "try:\n"
        "    import quantrack.engines.backtrader\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == (
        "EngineNotInstalled backtrader is not installed; install it with "
        "`pip install 'quantrack[backtrader]'`"
    )


def test_sweep_whose_recording_fails_is_spooled_and_replayed_whole(tmp_path: Path) -> None:
    """A sweep whose bulk write fails still returns its results; the replay restores all."""
    from tests.integration.test_spool import DiskFullTracker

    workspace = Workspace(
        tracker=DiskFullTracker("record_finished"),
        artifacts=InMemoryArtifactStore(),
        observer=InMemoryBatchObserver(),
        path=tmp_path,
    )
    cerebro = cerebro_with(None, bars=300)
    cerebro.optstrategy(SmaCross, fast=[5, 10], slow=[20, 40])
    with capture_logs() as logs:
        results = BacktraderAdapter(workspace).run(cerebro, name="grid", maxcpus=1)
    assert len(results) == 4
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["recording.failed"]

    # Reopening: a working database, the same artifact folder (which took the files).
    tracker, observer, store = (
        InMemoryExperimentTracker(),
        InMemoryBatchObserver(),
        workspace.artifacts,
    )
    report = replay_spool(tmp_path / SPOOL_DIR, tracker, store, observer)
    assert report.experiments == 4
    (batch,) = observer.list_batches()
    assert batch.status is BatchStatus.COMPLETED
    assert len(observer.batch_items(batch.id)) == 4
    for experiment in tracker.list_experiments():
        assert experiment.definition.batch_id == batch.id
        assert "sharpe" in experiment.metrics
        for ref in experiment.artifacts:
            store.verify(ref.id)


def test_sizers_are_part_of_the_params(workspace: Workspace) -> None:
    """The sizer changes what a run does, so it is recorded and hashed with the params."""
    adapter = BacktraderAdapter(workspace)
    plain = cerebro_with(SmaCross, bars=200)
    adapter.run(plain, name="fixed")
    sized = cerebro_with(SmaCross, bars=200)
    sized.addsizer(bt.sizers.PercentSizer, percents=50)
    adapter.run(sized, name="percent")
    runs = {e.name: e for e in workspace.tracker.list_experiments()}
    assert runs["fixed"].params["backtrader"]["sizers"] == {}
    sizer = runs["percent"].params["backtrader"]["sizers"]["default"]
    assert sizer["class"] == "backtrader.sizers.percents_sizer.PercentSizer"
    assert sizer["percents"] == 50
    assert runs["fixed"].config_hash != runs["percent"].config_hash


def test_unopenable_default_workspace_still_runs_the_backtest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the default workspace cannot even be opened, the backtest runs and one warning
    says it was not recorded.
    """
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the workspace folder should be")
    monkeypatch.setenv("QUANTRACK_HOME", str(blocker))
    cerebro = cerebro_with(SmaCross, bars=200)
    with capture_logs() as logs:
        (strategy,) = BacktraderAdapter().run(cerebro, name="no-workspace")
    assert isinstance(strategy, SmaCross)
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert warning["event"] == "recording.failed"
    assert warning["spooled"] is False
    assert "cannot write to workspace folder" in warning["error"]


def _local_strategy() -> type:
    class LocalSmaCross(SmaCross):
        """Defined in a function: worker processes cannot unpickle it."""

    return LocalSmaCross


def test_sweep_that_breaks_as_a_whole_fails_every_item_and_reraises(
    workspace: Workspace,
) -> None:
    """When backtrader's sweep itself fails (an unpicklable strategy), every unfinished
    combination is a failed item, the batch ends failed, and the error reaches the caller.
    """
    cerebro = cerebro_with(None, bars=200)
    cerebro.optstrategy(_local_strategy(), fast=[5, 10], slow=[20, 40])
    with pytest.raises(AttributeError, match="pickle") as caught:
        BacktraderAdapter(workspace).run(cerebro, name="broken-grid", maxcpus=2)
    (batch,) = workspace.observer.list_batches()
    assert batch.status is BatchStatus.FAILED
    assert batch.failed == 4
    experiments = workspace.tracker.list_experiments()
    assert len(experiments) == 4
    for experiment in experiments:
        assert experiment.status is ExperimentStatus.FAILED
        assert experiment.error_category is categorize_error(caught.value)
        assert "pickle" in (experiment.error or "")
