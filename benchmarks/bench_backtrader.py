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
* ``tracked`` — ``BacktraderAdapter(workspace).run(cerebro, name=...)`` as a researcher
  writes it: the same run, recorded in a real workspace (DuckDB file + artifact folder)
  with metrics, params, provenance, captured code, the equity curve and trades Parquet
  files and the analyzers JSON, by the recording process on the other core (the default);
* ``in-process`` — the same with ``background=False``: everything written before ``run``
  returns.

It prints the median wall time per run of each and the ratios to untracked (target: at
most 1.02, i.e. 2 % overhead). For ``tracked`` it also prints how long the end of each
block waited for the recording process to finish the block's runs (``adapter.flush()``,
not counted in the per-run time: the next backtest would run meanwhile) and the CPU time
the recording process spent per run. It also times the in-process recording alone:
``adapter.run`` on a cerebro whose ``run()`` hands back an already finished run.

Run::

    .venv/bin/python benchmarks/bench_backtrader.py            # 11 rounds of 4-run blocks
    .venv/bin/python benchmarks/bench_backtrader.py --rounds 3
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import backtrader as bt
import structlog

from quantrack import open_workspace
from quantrack.engines._background import recording_process
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


def _cpu_seconds(child: Any) -> float:
    """User + system CPU seconds the recording process has used (Linux; else 0)."""
    if child is None:
        return 0.0
    try:
        fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(fn: Callable[[], object]) -> float:
    """Wall time of one call, in seconds."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11, help="blocks of each variant")
    parser.add_argument("--block", type=int, default=4, help="consecutive runs per block")
    args = parser.parse_args()
    # The lifecycle's info lines would be printed between the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    with tempfile.TemporaryDirectory() as folder:
        workspace = open_workspace(Path(folder) / "ws")
        adapter = BacktraderAdapter(workspace)
        in_process = BacktraderAdapter(workspace, background=False)
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

        def tracked_here() -> None:
            in_process.run(make_cerebro(), name="bench-sma-here")

        finished = FinishedCerebro(stdstats=False)

        def recording_only() -> None:
            in_process.run(finished, name="bench-recording")

        variants: dict[str, Callable[[], None]] = {
            "untracked": untracked,
            "recorder": recorder,
            "all six": all_six,
            "tracked": tracked,
            "in-process": tracked_here,
        }
        for warm in (*variants.values(), recording_only):
            warm()
        adapter.flush()
        extra = ("recording", "flush", "child cpu")
        times: dict[str, list[float]] = {name: [] for name in (*variants, *extra)}
        child = recording_process()._child
        for _ in range(args.rounds):
            # Alternate so that drifts in machine load hit every variant alike.
            for name, fn in variants.items():
                # Each block starts from an empty heap of garbage: otherwise one variant's
                # leftovers are collected, and timed, in the next one's block.
                gc.collect()
                cpu = _cpu_seconds(child)
                start = time.perf_counter()
                for _ in range(args.block):
                    fn()
                times[name].append((time.perf_counter() - start) / args.block)
                if name == "tracked":
                    times["flush"].append(timed(adapter.flush))
                    times["child cpu"].append((_cpu_seconds(child) - cpu) / args.block)
            times["recording"].append(timed(recording_only))
        medians = {name: statistics.median(values) for name, values in times.items()}
        # Each round's own ratio (its blocks ran seconds apart) cancels slow drifts in
        # the machine's speed that the medians of the two columns would keep.
        paired = [t / u for t, u in zip(times["tracked"], times["untracked"], strict=True)]
        recorded = workspace.tracker.list_experiments(None)

    report(medians, paired, bars=bars, args=args, recorded=recorded)


def report(
    medians: dict[str, float],
    paired: list[float],
    *,
    bars: int,
    args: argparse.Namespace,
    recorded: list[Any],
) -> None:
    """Print the figures."""
    base = medians["untracked"]
    print(
        f"backtrader SMA crossover, {bars} daily bars, {args.rounds} rounds of "
        f"{args.block}-run blocks (median per run)"
    )
    for name in ("untracked", "recorder", "all six", "tracked", "in-process"):
        print(f"  {name:<11} {medians[name] * 1000:8.1f} ms   ({medians[name] / base:.3f}x)")
    quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else [paired[0]] * 3
    print(
        f"  ratio tracked / untracked: {medians['tracked'] / base:.3f} of the medians; "
        f"{statistics.median(paired):.3f} the median of the rounds' own ratios "
        f"(quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}); target <= 1.02"
    )
    print(
        f"  after each {args.block}-run tracked block, waiting for its records: "
        f"{medians['flush'] * 1000:.1f} ms; recording process CPU per run: "
        f"{medians['child cpu'] * 1000:.1f} ms (on the other core)"
    )
    print(
        "  saved by deriving the four analyzers' outputs: "
        f"{(medians['all six'] - medians['recorder']) * 1000:.1f} ms per run"
    )
    print(
        f"  in-process recording alone (backtest excluded): {medians['recording'] * 1000:.1f} ms "
        f"= {medians['recording'] / base:.1%} of the untracked run"
    )
    completed = sum(1 for e in recorded if e.status.value == "completed")
    print(f"  runs recorded: {len(recorded)}, completed: {completed}")


if __name__ == "__main__":
    main()
