"""Returns and Sharpe ratio derived from the equity curve equal backtrader's own analyzers.

The adapter does not run backtrader's ``Returns`` and ``SharpeRatio`` on daily data (they
cost more per bar than a typical strategy); it applies their formulas to the equity curve
after the run. These tests pin that the numbers are bit-for-bit the analyzers' on real runs,
and that the analyzers still run where the derivation would not be exact.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import backtrader as bt
import pytest
from tests.integration.bt_strategies import Idle, SmaCross, cerebro_with, sample_feed

from quantrack import Workspace, open_workspace
from quantrack.adapters.frames import get_json
from quantrack.engines.backtrader import (
    BacktraderAdapter,
    EquityCurveAnalyzer,
    _derivable,
    _derived,
    _ensure_analyzers,
)

SHARPE_SETTINGS = {"timeframe": bt.TimeFrame.Days, "annualize": True, "riskfreerate": 0.0}


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A real workspace (DuckDB file and artifact folder) in a fresh folder."""
    return open_workspace(tmp_path / "ws")


def _with_reference_analyzers(cerebro: bt.Cerebro) -> Any:
    """Run ``cerebro`` with the equity curve and backtrader's Returns and SharpeRatio."""
    cerebro.addanalyzer(EquityCurveAnalyzer, _name="eq")
    cerebro.addanalyzer(bt.analyzers.Returns, _name="ret")
    cerebro.addanalyzer(bt.analyzers.SharpeRatio, _name="sr", **SHARPE_SETTINGS)
    return cerebro.run()[0]


@pytest.mark.parametrize(
    ("symbol", "bars", "strategy", "params"),
    [
        ("AAA", 1000, SmaCross, {"fast": 5, "slow": 20}),
        ("BBB", 1000, SmaCross, {"fast": 10, "slow": 30, "stake": 900}),
        ("CCC", 600, SmaCross, {"fast": 3, "slow": 8}),
        ("DDD", None, SmaCross, {"fast": 20, "slow": 60}),
        ("AAA", 300, Idle, {}),
    ],
)
def test_derived_outputs_are_backtraders_to_the_bit(
    symbol: str, bars: int | None, strategy: type, params: dict[str, Any]
) -> None:
    """Derived rtot/ravg/rnorm/rnorm100 and sharperatio equal the analyzers' floats exactly."""
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(sample_feed(symbol, bars))
    cerebro.broker.setcash(50_000.0)
    cerebro.broker.setcommission(commission=0.002)
    cerebro.addstrategy(strategy, **params)
    assert _derivable(cerebro)
    result = _with_reference_analyzers(cerebro)
    derived = _derived(result.analyzers.eq.get_analysis())
    assert derived["returns"] == dict(result.analyzers.ret.get_analysis())
    assert derived["sharpe"] == dict(result.analyzers.sr.get_analysis())


def test_derived_outputs_with_two_feeds_equal_backtraders() -> None:
    """With a second feed the portfolio spans both, and the derived figures still match."""

    class Both(bt.Strategy):  # type: ignore[misc]
        """Buys each feed once, sells it 40 bars later."""

        def next(self) -> None:
            """Trade both feeds on a fixed schedule."""
            if len(self) == 50:
                for data in self.datas:
                    self.buy(data=data, size=100)
            elif len(self) == 90:
                for data in self.datas:
                    self.close(data=data)

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(sample_feed("AAA", 400))
    cerebro.adddata(sample_feed("BBB", 400))
    cerebro.broker.setcash(100_000.0)
    cerebro.addstrategy(Both)
    result = _with_reference_analyzers(cerebro)
    derived = _derived(result.analyzers.eq.get_analysis())
    assert derived["returns"] == dict(result.analyzers.ret.get_analysis())
    assert derived["sharpe"] == dict(result.analyzers.sr.get_analysis())
    assert derived["returns"]["rtot"] != 0.0  # the run really moved the portfolio


def test_adapter_runs_neither_returns_nor_sharpe_on_daily_data(workspace: Workspace) -> None:
    """On daily data the adapter adds no Returns/SharpeRatio, yet records their outputs."""
    cerebro = cerebro_with(SmaCross, bars=700)
    (strategy,) = BacktraderAdapter(workspace).run(cerebro, name="sma")
    names = strategy.analyzers.getnames()
    assert "quantrack_returns" not in names
    assert "quantrack_sharpe" not in names
    assert "quantrack_drawdown" in names
    (experiment,) = workspace.tracker.list_experiments()
    (ref,) = [ref for ref in experiment.artifacts if ref.kind == "analyzers"]
    document = get_json(workspace.artifacts, ref)

    reference = _with_reference_analyzers(cerebro_with(SmaCross, bars=700))
    returns = reference.analyzers.ret.get_analysis()
    assert document["quantrack_returns"] == dict(returns)
    assert document["quantrack_sharpe"] == dict(reference.analyzers.sr.get_analysis())
    assert experiment.metrics["annual_return"] == returns["rnorm100"]
    assert experiment.metrics["sharpe"] == reference.analyzers.sr.get_analysis()["sharperatio"]


def test_fund_mode_and_weekly_data_keep_backtraders_analyzers() -> None:
    """Where the derivation is not exact (fund mode, weekly bars) backtrader's analyzers run."""
    fund = cerebro_with(SmaCross, bars=300)
    fund.broker.set_fundmode(True)
    assert not _derivable(fund)
    assert {"returns", "sharpe"} <= set(_ensure_analyzers(fund))

    weekly = bt.Cerebro(stdstats=False)
    weekly.resampledata(sample_feed("AAA", 600), timeframe=bt.TimeFrame.Weeks)
    assert not _derivable(weekly)
    names = _ensure_analyzers(weekly)
    assert names["returns"] == "quantrack_returns"
    assert names["sharpe"] == "quantrack_sharpe"


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
