"""Benchmark: the auto-save overhead of the backtrader adapter.

A 10-year daily SMA crossover (the bundled sample symbol AAA, 2,608 bars, 10/30 SMAs,
0.1 % commission) is run side by side in one process, alternating:

* ``untracked`` — ``cerebro.run()`` as a researcher would write it;
* ``analyzers`` — ``cerebro.run()`` with the analyzers the adapter adds (DrawDown,
  TradeAnalyzer, the equity curve and closed trades; on daily data Returns and
  SharpeRatio are derived from the equity curve after the run instead), not recorded;
* ``all six`` — the same plus backtrader's Returns and SharpeRatio, which the adapter
  added before it derived them: the analyzer cost the derivation saves;
* ``tracked`` — ``BacktraderAdapter(workspace).run(cerebro, name=...)``: the same run,
  recorded in a real workspace (DuckDB file + artifact folder) with metrics, params,
  provenance, captured code, the equity curve and trades Parquet files and the analyzers
  JSON.

It prints the median wall time of each and the ratio tracked / untracked (target: at most
1.02, i.e. 2 % overhead), split into the analyzers' share and the recording's share. On a
busy machine the difference of two medians is noisy, so it also times the recording
alone: ``adapter.run`` on a cerebro whose ``run()`` hands back an already finished run.

Run::

    .venv/bin/python benchmarks/bench_backtrader.py            # 9 rounds
    .venv/bin/python benchmarks/bench_backtrader.py --rounds 3
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import backtrader as bt
import structlog

from quantrack import open_workspace
from quantrack.engines.backtrader import BacktraderAdapter, _ensure_analyzers
from quantrack.sample_data import load_sample


class SmaCross(bt.Strategy):  # type: ignore[misc]
    """Long when the 10-day SMA is above the 30-day SMA, flat otherwise."""

    params = (("fast", 10), ("slow", 30))

    def __init__(self) -> None:
        self.crossover = bt.ind.CrossOver(
            bt.ind.SMA(period=self.p.fast), bt.ind.SMA(period=self.p.slow)
        )

    def next(self) -> None:
        """Enter on an upward cross, leave on a downward one."""
        if not self.position and self.crossover > 0:
            self.order_target_percent(target=0.95)
        elif self.position and self.crossover < 0:
            self.close()


def make_cerebro() -> bt.Cerebro:
    """A fresh cerebro over ten years of sample data."""
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=load_sample("AAA"), name="AAA"))
    cerebro.addstrategy(SmaCross)
    cerebro.broker.setcash(100_000.0)
    cerebro.broker.setcommission(commission=0.001)
    return cerebro


class FinishedCerebro(bt.Cerebro):  # type: ignore[misc]
    """A cerebro whose run() returns a run finished earlier: isolates the recording cost."""

    def __init__(self) -> None:
        super().__init__()
        self.adddata(bt.feeds.PandasData(dataname=load_sample("AAA"), name="AAA"))
        self.addstrategy(SmaCross)
        self.broker.setcash(100_000.0)
        self.broker.setcommission(commission=0.001)
        _ensure_analyzers(self)
        self.finished = super().run()

    def run(self, **kwargs: object) -> object:
        """The finished run, at once."""
        return self.finished


def timed(fn: Callable[[], object]) -> float:
    """Wall time of one call, in seconds."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="runs of each variant")
    args = parser.parse_args()
    # The lifecycle's info lines would be printed between the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    with tempfile.TemporaryDirectory() as folder:
        workspace = open_workspace(Path(folder) / "ws")
        adapter = BacktraderAdapter(workspace)
        bars = len(load_sample("AAA"))

        def untracked() -> None:
            cerebro = make_cerebro()
            cerebro.run()

        def analyzers() -> None:
            cerebro = make_cerebro()
            _ensure_analyzers(cerebro)
            cerebro.run()

        def all_six() -> None:
            cerebro = make_cerebro()
            names = _ensure_analyzers(cerebro)
            if "returns" not in names:
                cerebro.addanalyzer(bt.analyzers.Returns)
            if "sharpe" not in names:
                cerebro.addanalyzer(
                    bt.analyzers.SharpeRatio,
                    timeframe=bt.TimeFrame.Days,
                    annualize=True,
                    riskfreerate=0.0,
                )
            cerebro.run()

        def tracked() -> None:
            adapter.run(make_cerebro(), name="bench-sma")

        finished = FinishedCerebro(stdstats=False)

        def recording_only() -> None:
            adapter.run(finished, name="bench-recording")

        for warm in (untracked, analyzers, all_six, tracked, recording_only):
            warm()
        times: dict[str, list[float]] = {
            "untracked": [],
            "analyzers": [],
            "all six": [],
            "tracked": [],
            "recording": [],
        }
        for _ in range(args.rounds):
            # Alternate so that drifts in machine load hit every variant alike.
            times["untracked"].append(timed(untracked))
            times["analyzers"].append(timed(analyzers))
            times["all six"].append(timed(all_six))
            times["tracked"].append(timed(tracked))
            times["recording"].append(timed(recording_only))
        medians = {name: statistics.median(values) for name, values in times.items()}
        recorded = workspace.tracker.list_experiments(None)

    base = medians["untracked"]
    print(f"backtrader SMA crossover, {bars} daily bars, {args.rounds} rounds (medians)")
    for name in ("untracked", "analyzers", "all six", "tracked"):
        print(f"  {name:<10} {medians[name] * 1000:8.1f} ms   ({medians[name] / base:.3f}x)")
    print(f"  ratio tracked / untracked: {medians['tracked'] / base:.3f} (target <= 1.02)")
    print(
        f"  of the overhead: analyzers {(medians['analyzers'] - base) * 1000:.1f} ms, "
        f"recording {(medians['tracked'] - medians['analyzers']) * 1000:.1f} ms"
    )
    print(
        "  saved by deriving Returns and SharpeRatio: "
        f"{(medians['all six'] - medians['analyzers']) * 1000:.1f} ms"
    )
    print(
        f"  recording alone (backtest excluded): {medians['recording'] * 1000:.1f} ms "
        f"= {medians['recording'] / base:.1%} of the untracked run"
    )
    print(f"  runs recorded: {len(recorded)}")


if __name__ == "__main__":
    main()
