"""Metric sources computed after the run equal backtrader's own analyzers, to the bit.

The adapter adds one analyzer of its own (:class:`RunRecorder`) that keeps the broker's
value and cash per bar and the trade and order notifications. From them, after the run,
it computes what ``DrawDown`` and ``TradeAnalyzer`` report (always, resp. when the broker
values the portfolio), and on daily data what ``Returns`` and ``SharpeRatio`` report:
those analyzers cost more per bar than a typical strategy. These tests run the real
analyzers beside the recorder on real runs and require identical outputs, and check that
the analyzers still run where the derivation would not be exact.
"""

from __future__ import annotations

import collections
import math
from pathlib import Path
from typing import Any

import backtrader as bt
import pytest
from structlog.testing import capture_logs
from tests.integration.bt_strategies import Idle, SmaCross, Swing, cerebro_with, sample_feed

from quantrack import ExperimentStatus, Workspace, open_workspace
from quantrack.adapters.frames import get_json
from quantrack.engines.backtrader import (
    BacktraderAdapter,
    RunRecorder,
    _derivable,
    _derived,
    _drawdown_of,
    _ensure_analyzers,
    _trade_analysis_of,
)
from quantrack.sample_data import load_sample

SHARPE_SETTINGS = {"timeframe": bt.TimeFrame.Days, "annualize": True, "riskfreerate": 0.0}


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A real workspace (DuckDB file and artifact folder) in a fresh folder."""
    return open_workspace(tmp_path / "ws")


class PerBar(bt.Analyzer):  # type: ignore[misc]
    """The reference for what the recorder avoids doing per bar: the bar's time, value and
    cash as notified, and whether a position is open, through backtrader's own hooks.
    """

    def start(self) -> None:
        """Reset the columns."""
        self.times: list[float] = []
        self.values: list[float] = []
        self.cash: list[float] = []
        self.in_market: list[bool] = []

    def notify_cashvalue(self, cash: float, value: float) -> None:
        """Note the bar's time, value and cash, and whether any position is open."""
        self.times.append(self.strategy.datetime[0])
        self.values.append(value)
        self.cash.append(cash)
        strategy = self.strategy
        self.in_market.append(any(strategy.getposition(d).size for d in strategy.datas))

    def get_analysis(self) -> dict[str, Any]:
        """The columns."""
        return {
            "times": self.times,
            "values": self.values,
            "cash": self.cash,
            "in_market": self.in_market,
        }


def assert_same_columns(recorded: dict[str, Any], per_bar: dict[str, Any]) -> None:
    """The recorder's columns hold exactly what backtrader notified, bar by bar."""
    assert recorded["datetime"].tolist() == per_bar["times"]
    assert recorded["value"].tolist() == per_bar["values"]
    assert recorded["cash"].tolist() == per_bar["cash"]


def _with_reference_analyzers(
    cerebro: bt.Cerebro, *, recorder_last: bool = False, **run: Any
) -> Any:
    """Run ``cerebro`` with the recorder and every analyzer it stands in for.

    First among the analyzers the recorder rides along with them on every bar; last (where
    the adapter puts it) it steps aside and hears the strategy's notifications instead.
    """
    if not recorder_last:
        cerebro.addanalyzer(RunRecorder, _name="rec")
    cerebro.addanalyzer(PerBar, _name="bar")
    cerebro.addanalyzer(bt.analyzers.DrawDown, _name="dd")
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="ta")
    cerebro.addanalyzer(bt.analyzers.Returns, _name="ret")
    cerebro.addanalyzer(bt.analyzers.SharpeRatio, _name="sr", **SHARPE_SETTINGS)
    if recorder_last:
        cerebro.addanalyzer(RunRecorder, _name="rec")
    return cerebro.run(**run)[0]


def _swing_cerebro(bars: int = 700) -> bt.Cerebro:
    """Two feeds of different lengths traded long and short by :class:`Swing`."""
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(sample_feed("AAA", bars))
    cerebro.adddata(sample_feed("CCC", bars - 150))
    cerebro.broker.setcash(100_000.0)
    cerebro.broker.setcommission(commission=0.001)
    cerebro.addstrategy(Swing)
    return cerebro


def _sma_cerebro(symbol: str, bars: int | None, **params: Any) -> bt.Cerebro:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(sample_feed(symbol, bars))
    cerebro.broker.setcash(50_000.0)
    cerebro.broker.setcommission(commission=0.002)
    cerebro.addstrategy(SmaCross, **params)
    return cerebro


SCENARIOS = {
    "sma-AAA": (lambda: _sma_cerebro("AAA", 1000, fast=5, slow=20), {}),
    "sma-BBB-stake": (lambda: _sma_cerebro("BBB", 1000, fast=10, slow=30, stake=900), {}),
    "sma-CCC-short-windows": (lambda: _sma_cerebro("CCC", 600, fast=3, slow=8), {}),
    "sma-DDD-all-bars": (lambda: _sma_cerebro("DDD", None, fast=20, slow=60), {}),
    "idle": (lambda: cerebro_with(Idle, bars=300), {}),
    "swing-two-feeds": (_swing_cerebro, {}),
    "swing-bar-by-bar": (_swing_cerebro, {"runonce": False}),
    "swing-quicknotify": (_swing_cerebro, {"quicknotify": True}),
    # exactbars keeps only the last bars of each line (backtrader's own broker then fails
    # on feeds of different lengths, so one feed here).
    "sma-exactbars": (lambda: _sma_cerebro("AAA", 800, fast=5, slow=20), {"exactbars": 1}),
}

# A stake CCC's price makes too dear for the cash, and a strategy that never trades.
TRADING = set(SCENARIOS) - {"sma-CCC-short-windows", "idle"}


PLACEMENTS = {"rides along": False, "steps aside": True}


@pytest.mark.parametrize("placement", list(PLACEMENTS))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_recorder_equals_backtraders_analyzers_to_the_bit(scenario: str, placement: str) -> None:
    """DrawDown, TradeAnalyzer, Returns and SharpeRatio outputs, bar times and exposure."""
    build, run = SCENARIOS[scenario]
    cerebro = build()
    assert _derivable(cerebro)
    strategy = _with_reference_analyzers(cerebro, recorder_last=PLACEMENTS[placement], **run)
    recorded = strategy.analyzers.rec.get_analysis()
    per_bar = strategy.analyzers.bar.get_analysis()

    assert _drawdown_of(recorded["value"]) == strategy.analyzers.dd.get_analysis()
    assert _trade_analysis_of(recorded["trade_notes"]) == strategy.analyzers.ta.get_analysis()
    derived = _derived(recorded)
    assert derived["returns"] == dict(strategy.analyzers.ret.get_analysis())
    assert derived["sharpe"] == dict(strategy.analyzers.sr.get_analysis())

    assert_same_columns(recorded, per_bar)
    expected_exposure = 100.0 * sum(per_bar["in_market"]) / len(per_bar["in_market"])
    assert recorded["exposure"] == pytest.approx(expected_exposure, abs=1e-12)
    if scenario in TRADING:  # the comparison is about runs that really traded
        assert strategy.analyzers.ta.get_analysis().total.closed > 3
        assert 0 < recorded["exposure"] < 100


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_replayed_data_updates_a_bar_in_place_and_still_matches(
    workspace: Workspace, placement: str
) -> None:
    """Replay notifies every update of a forming weekly bar: one row each, as DrawDown sees."""
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.replaydata(sample_feed("AAA", 500), timeframe=bt.TimeFrame.Weeks)
    cerebro.broker.setcash(100_000.0)
    cerebro.addstrategy(SmaCross, fast=3, slow=8)
    strategy = _with_reference_analyzers(cerebro, recorder_last=PLACEMENTS[placement])
    recorded = strategy.analyzers.rec.get_analysis()
    per_bar = strategy.analyzers.bar.get_analysis()
    assert len(recorded["value"]) == 500 > len(strategy)  # updates, not finished weeks
    assert_same_columns(recorded, per_bar)
    assert _drawdown_of(recorded["value"]) == strategy.analyzers.dd.get_analysis()
    assert _trade_analysis_of(recorded["trade_notes"]) == strategy.analyzers.ta.get_analysis()
    expected_exposure = 100.0 * sum(per_bar["in_market"]) / len(per_bar["in_market"])
    assert recorded["exposure"] == pytest.approx(expected_exposure, abs=1e-12)

    if placement == "rides along":
        return
    again = bt.Cerebro(stdstats=False)
    again.replaydata(sample_feed("AAA", 500), timeframe=bt.TimeFrame.Weeks)
    again.broker.setcash(100_000.0)
    again.addstrategy(SmaCross, fast=3, slow=8)
    with capture_logs() as logs:
        BacktraderAdapter(workspace).run(again, name="replayed")
    assert [entry for entry in logs if entry["log_level"] == "warning"] == []
    (experiment,) = workspace.tracker.list_experiments()
    assert experiment.status is ExperimentStatus.COMPLETED
    assert experiment.metrics["max_drawdown"] == strategy.analyzers.dd.get_analysis().max.drawdown


class Listening(SmaCross):
    """:class:`SmaCross` counting what backtrader tells it, and how many analyzers run
    beside it on each bar.
    """

    def __init__(self) -> None:
        super().__init__()
        self.heard: collections.Counter[str] = collections.Counter()
        self.analyzers_per_bar: set[int] = set()

    def notify_cashvalue(self, cash: float, value: float) -> None:
        self.heard["cashvalue"] += 1

    def notify_order(self, order: Any) -> None:
        super().notify_order(order)
        self.heard["order"] += 1

    def notify_trade(self, trade: Any) -> None:
        self.heard["trade"] += 1

    def next(self) -> None:
        self.analyzers_per_bar.add(len(self.analyzers))
        super().next()

    def stop(self) -> None:
        self.heard["stop"] += 1


def test_recorder_steps_aside_while_the_strategy_runs_and_rejoins_at_its_end(
    workspace: Workspace,
) -> None:
    """The adapter's recorder is no analyzer during the run (no per-bar analyzer calls), yet
    the strategy hears every notification exactly once, and afterwards the recorder is
    among the analyzers and nothing of it is left on the strategy.
    """
    reference = cerebro_with(Listening, bars=700)
    reference.addanalyzer(bt.analyzers.TradeAnalyzer, _name="ta")
    plain = reference.run()[0]
    listened = cerebro_with(Listening, bars=700)
    listened.addanalyzer(bt.analyzers.TradeAnalyzer, _name="ta")
    (tracked,) = BacktraderAdapter(workspace).run(listened, name="l")

    assert tracked.heard == plain.heard
    assert plain.heard["trade"] > 3
    assert plain.heard["order"] > 3
    assert plain.heard["stop"] == 1
    assert tracked.executions == plain.executions
    assert tracked.analyzers_per_bar == {1}  # the user's TradeAnalyzer alone
    assert tracked.analyzers.getnames() == ["ta", "quantrack_recorder"]
    assert not {"notify_cashvalue", "notify_order", "notify_trade", "stop"} & set(vars(tracked))
    (experiment,) = workspace.tracker.list_experiments()
    assert experiment.status is ExperimentStatus.COMPLETED
    assert experiment.metrics["trades"] == plain.analyzers.ta.get_analysis().total.closed


def test_history_orders_the_strategy_is_not_told_of_keep_the_recorder_riding_along() -> None:
    """Orders added with ``add_order_history(notify=False)`` reach analyzers only: the
    recorder then stays one, and the exposure they cause is still counted.
    """
    days = load_sample("AAA").index
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(sample_feed("AAA", 400))
    cerebro.broker.setcash(100_000.0)
    cerebro.addstrategy(Idle)
    history = [(days[50].date(), 100, 20.0), (days[150].date(), -100, 21.0)]
    cerebro.add_order_history(history, notify=False)
    strategy = _with_reference_analyzers(cerebro, recorder_last=True)
    recorded = strategy.analyzers.rec.get_analysis()
    per_bar = strategy.analyzers.bar.get_analysis()
    assert_same_columns(recorded, per_bar)
    expected_exposure = 100.0 * sum(per_bar["in_market"]) / len(per_bar["in_market"])
    assert 20 < expected_exposure < 30
    assert recorded["exposure"] == pytest.approx(expected_exposure, abs=1e-12)
    assert _trade_analysis_of(recorded["trade_notes"]) == strategy.analyzers.ta.get_analysis()


def test_swing_really_goes_short_and_reverses() -> None:
    """The scenario above covers shorts and reversals, not only long-flat trading."""
    strategy = _with_reference_analyzers(_swing_cerebro())
    trades = strategy.analyzers.ta.get_analysis()
    assert trades.short.total > 0
    assert trades.long.total > 0
    rows = strategy.analyzers.rec.get_analysis()["closed_trades"]
    assert {row["data"] for row in rows} == {"AAA", "CCC"}
    assert any(row["size"] < 0 for row in rows)


def test_recorder_keeps_nothing_that_cannot_travel_back_from_a_sweep() -> None:
    """After the run the recorder holds plain data only (sweeps pickle it to the parent)."""
    import pickle

    strategy = _with_reference_analyzers(_swing_cerebro(300))
    recorder = strategy.analyzers.rec
    assert recorder._trades == []
    assert recorder._positions is None
    # A sweep's worker pickles the analyzer itself, per-bar hooks and all.
    travelled = pickle.loads(pickle.dumps(recorder)).get_analysis()
    analysis = recorder.get_analysis()
    assert travelled.keys() == analysis.keys()
    for column in ("datetime", "value", "cash"):
        assert travelled[column].tolist() == analysis[column].tolist()
    assert travelled["closed_trades"] == analysis["closed_trades"]


def test_adapter_runs_none_of_the_derived_analyzers_on_daily_data(workspace: Workspace) -> None:
    """On daily data the adapter adds only its recorder, yet records all four outputs."""
    cerebro = cerebro_with(SmaCross, bars=700)
    (strategy,) = BacktraderAdapter(workspace).run(cerebro, name="sma")
    assert strategy.analyzers.getnames() == ["quantrack_recorder"]
    (experiment,) = workspace.tracker.list_experiments()
    (ref,) = [ref for ref in experiment.artifacts if ref.kind == "analyzers"]
    document = get_json(workspace.artifacts, ref)
    assert "quantrack_recorder" not in document  # stored as the equity curve and trades

    reference = _with_reference_analyzers(cerebro_with(SmaCross, bars=700))
    returns = reference.analyzers.ret.get_analysis()
    assert document["quantrack_returns"] == dict(returns)
    assert document["quantrack_sharpe"] == dict(reference.analyzers.sr.get_analysis())
    drawdown = reference.analyzers.dd.get_analysis()
    assert document["quantrack_drawdown"] == drawdown
    assert document["quantrack_trades"] == reference.analyzers.ta.get_analysis()
    assert experiment.metrics["annual_return"] == returns["rnorm100"]
    assert experiment.metrics["sharpe"] == reference.analyzers.sr.get_analysis()["sharperatio"]
    assert experiment.metrics["max_drawdown"] == drawdown.max.drawdown
    assert experiment.metrics["max_drawdown_length"] == drawdown.max.len


def test_fund_mode_and_weekly_data_keep_backtraders_analyzers() -> None:
    """Where a derivation is not exact (fund mode, weekly bars) backtrader's analyzers run."""
    fund = cerebro_with(SmaCross, bars=300)
    fund.broker.set_fundmode(True)
    assert not _derivable(fund)
    names = _ensure_analyzers(fund)
    assert {"returns", "sharpe", "drawdown"} <= set(names)
    assert "trades" not in names  # TradeAnalyzer sees only trades: fund mode changes nothing
    assert fund.analyzers[-1][0] is RunRecorder

    weekly = bt.Cerebro(stdstats=False)
    weekly.resampledata(sample_feed("AAA", 600), timeframe=bt.TimeFrame.Weeks)
    assert not _derivable(weekly)
    names = _ensure_analyzers(weekly)
    assert names["returns"] == "quantrack_returns"
    assert names["sharpe"] == "quantrack_sharpe"
    assert "drawdown" not in names  # the broker's values are exact at any bar size


def test_fund_mode_run_records_the_running_drawdown(workspace: Workspace) -> None:
    """In fund mode the recorded drawdown is the running DrawDown analyzer's."""
    cerebro = cerebro_with(SmaCross, bars=600)
    cerebro.broker.set_fundmode(True)
    (strategy,) = BacktraderAdapter(workspace).run(cerebro, name="fund")
    (experiment,) = workspace.tracker.list_experiments()
    drawdown = strategy.analyzers.quantrack_drawdown.get_analysis()
    assert experiment.metrics["max_drawdown"] == drawdown.max.drawdown
    assert experiment.metrics["max_drawdown_length"] == drawdown.max.len


def test_weekly_run_metrics_come_from_the_analyzers(workspace: Workspace) -> None:
    """A weekly run's recorded return and Sharpe ratio are the running analyzers' values."""
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.resampledata(sample_feed("AAA", 900), timeframe=bt.TimeFrame.Weeks)
    cerebro.broker.setcash(100_000.0)
    cerebro.addstrategy(SmaCross, fast=3, slow=9)
    (strategy,) = BacktraderAdapter(workspace).run(cerebro, name="weekly")
    (experiment,) = workspace.tracker.list_experiments()
    returns = strategy.analyzers.quantrack_returns.get_analysis()
    assert experiment.metrics["annual_return"] == returns["rnorm100"]
    assert experiment.metrics["total_return"] == pytest.approx(math.expm1(returns["rtot"]) * 100)
    sharpe = strategy.analyzers.quantrack_sharpe.get_analysis()["sharperatio"]
    assert experiment.metrics.get("sharpe") == sharpe


def test_degenerate_equity_curves_give_no_figures_instead_of_failing() -> None:
    """No bars, or a portfolio worth nothing, leave the figures out rather than raising."""
    empty = {"datetime": [], "value": [], "value_start": 100.0, "value_end": 100.0}
    assert _derived(empty) == {"returns": {}, "sharpe": {"sharperatio": None}}
    worthless = {
        "datetime": [738000.0, 738001.0],
        "value": [0.0, 0.0],
        "value_start": 0.0,
        "value_end": 0.0,
    }
    derived = _derived(worthless)
    assert derived["sharpe"] == {"sharperatio": None}
    assert derived["returns"]["rtot"] == float("-inf")

    assert _drawdown_of([]) == {
        "len": 0,
        "drawdown": 0.0,
        "moneydown": 0.0,
        "max": {"len": 0.0, "drawdown": 0.0, "moneydown": 0.0},
    }
    # DrawDown itself would divide by a zero peak; the derivation leaves the figure out.
    zero_peak = _drawdown_of([0.0, 0.0])
    assert zero_peak["drawdown"] is None
    assert zero_peak["max"]["moneydown"] == 0.0
