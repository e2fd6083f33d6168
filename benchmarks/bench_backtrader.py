"""Benchmark: the auto-save overhead of the backtrader adapter.

A 10-year daily SMA crossover (the bundled sample symbol AAA, 2,608 bars, 10/30 SMAs,
0.1 % commission) is run side by side in one process, in alternating blocks of
``--block`` consecutive runs (a researcher's loop):

* ``untracked`` — ``cerebro.run()`` as a researcher would write it;
* ``recorder`` — ``cerebro.run()`` with the adapter's analyzers (its lean ``RunRecorder``;
  on this data DrawDown, TradeAnalyzer, Returns and SharpeRatio are derived after the
  run), not recorded;
* ``all six`` — ``cerebro.run()`` with the analyzers the adapter ran before it derived
  their outputs: the cost the derivation saves;
* ``tracked`` — ``BacktraderAdapter(workspace).run(cerebro, name=...)``: the same run,
  recorded in a real workspace (DuckDB file + artifact folder) with metrics, params,
  provenance, captured code, the equity curve and trades Parquet files and the analyzers
  JSON, written before ``run`` returns.

It prints the median wall time per run of each and the ratios to untracked (target: at
most 1.02, i.e. 2 % overhead). It also times the recording alone: ``adapter.run`` on a
cerebro whose ``run()`` hands back an already finished run.

Run::

    .venv/bin/python benchmarks/bench_backtrader.py            # 7 rounds of 4-run blocks
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
from typing import Any

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
    parser.add_argument("--rounds", type=int, default=7, help="blocks of each variant")
    parser.add_argument("--block", type=int, default=4, help="consecutive runs per block")
    args = parser.parse_args()
    # The lifecycle's info lines would be printed between the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    with tempfile.TemporaryDirectory() as folder:
        workspace = open_workspace(Path(folder) / "ws")
        adapter = BacktraderAdapter(workspace)
        bars = len(load_sample("AAA"))

        def untracked() -> None:
            make_cerebro().run()

        def recorder() -> None:
            cerebro = make_cerebro()
            _ensure_analyzers(cerebro)
            cerebro.run()

        def all_six() -> None:
            cerebro = make_cerebro()
            cerebro.addanalyzer(bt.analyzers.Returns)
            cerebro.addanalyzer(
                bt.analyzers.SharpeRatio,
                timeframe=bt.TimeFrame.Days,
                annualize=True,
                riskfreerate=0.0,
            )
            cerebro.addanalyzer(bt.analyzers.DrawDown)
            cerebro.addanalyzer(bt.analyzers.TradeAnalyzer)
            _ensure_analyzers(cerebro)
            cerebro.run()

        def tracked() -> None:
            adapter.run(make_cerebro(), name="bench-sma")

        finished = FinishedCerebro(stdstats=False)

        def recording_only() -> None:
            adapter.run(finished, name="bench-recording")

        variants: dict[str, Callable[[], None]] = {
            "untracked": untracked,
            "recorder": recorder,
            "all six": all_six,
            "tracked": tracked,
        }
        for warm in (*variants.values(), recording_only):
            warm()
        times: dict[str, list[float]] = {name: [] for name in (*variants, "recording")}
        for _ in range(args.rounds):
            # Alternate so that drifts in machine load hit every variant alike.
            for name, fn in variants.items():
                start = time.perf_counter()
                for _ in range(args.block):
                    fn()
                times[name].append((time.perf_counter() - start) / args.block)
            times["recording"].append(timed(recording_only))
        medians = {name: statistics.median(values) for name, values in times.items()}
        recorded = workspace.tracker.list_experiments(None)

    report(medians, bars=bars, args=args, recorded=recorded)


def report(
    medians: dict[str, float], *, bars: int, args: argparse.Namespace, recorded: list[Any]
) -> None:
    """Print the figures."""
    base = medians["untracked"]
    print(
        f"backtrader SMA crossover, {bars} daily bars, {args.rounds} rounds of "
        f"{args.block}-run blocks (median per run)"
    )
    for name in ("untracked", "recorder", "all six", "tracked"):
        print(f"  {name:<11} {medians[name] * 1000:8.1f} ms   ({medians[name] / base:.3f}x)")
    print(f"  ratio tracked / untracked: {medians['tracked'] / base:.3f} (target <= 1.02)")
    print(
        "  saved by deriving the four analyzers' outputs: "
        f"{(medians['all six'] - medians['recorder']) * 1000:.1f} ms per run"
    )
    print(
        f"  recording alone (backtest excluded): {medians['recording'] * 1000:.1f} ms "
        f"= {medians['recording'] / base:.1%} of the untracked run"
    )
    completed = sum(1 for e in recorded if e.status.value == "completed")
    print(f"  runs recorded: {len(recorded)}, completed: {completed}")


if __name__ == "__main__":
    main()
