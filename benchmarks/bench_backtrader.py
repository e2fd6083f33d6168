"""Benchmark: the auto-save overhead of the backtrader adapter.

A 10-year daily SMA crossover (the bundled sample symbol AAA, 2,608 bars, 10/30 SMAs,
0.1 % commission) is run side by side in one process, in blocks of ``--block``
consecutive runs (a researcher's loop):

* ``untracked`` — ``cerebro.run()`` as a researcher would write it;
* ``tracked`` — ``BacktraderAdapter(workspace).run(cerebro, name=...)`` as a researcher
  writes it: the same run, recorded in a real workspace (DuckDB file + artifact folder)
  with metrics, params, provenance, captured code, the equity curve and trades Parquet
  files and the analyzers JSON, by the recording process on the other core (the default).

The target figure (at most 1.02, i.e. 2 % overhead) comes from ``--rounds`` rounds of four
blocks in the order untracked, tracked, tracked, untracked: each round's ratio (the
tracked blocks' time over the untracked blocks') cancels any steady drift in the
machine's speed during the round, and the median over rounds is printed with its
quartiles. After each tracked block the benchmark waits for the recording process to
finish the block's records (``adapter.flush()``, printed but not counted: in a loop the
next backtest runs meanwhile), so that no recording overlaps an untracked block.

For context it then runs ``--context-rounds`` rounds of:

* ``recorder`` — ``cerebro.run()`` with the adapter's analyzers (its lean
  ``RunRecorder``; on this data DrawDown, TradeAnalyzer, Returns and SharpeRatio are
  derived after the run), not recorded;
* ``all six`` — ``cerebro.run()`` with the analyzers the adapter ran before it derived
  their outputs: the cost the derivation saves;
* ``in-process`` — tracked with ``background=False``: everything written before ``run``
  returns;

each against an untracked block of the same round, and times the in-process recording
alone: ``adapter.run`` on a cerebro whose ``run()`` hands back an already finished run.

Run::

    .venv/bin/python benchmarks/bench_backtrader.py            # 15 rounds of 4-run blocks
    .venv/bin/python benchmarks/bench_backtrader.py --rounds 5 --context-rounds 2
"""

from __future__ import annotations

import argparse
import collections
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
        self.p.stdstats = False
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


class Variants:
    """The ways a run is made, each a call that makes one run (see the module doc)."""

    def __init__(self, workspace: Any) -> None:
        self.adapter = BacktraderAdapter(workspace)
        self.in_process = BacktraderAdapter(workspace, background=False)
        self.finished = FinishedCerebro()

    def untracked(self) -> None:
        """Untracked: plain ``cerebro.run()``."""
        make_cerebro().run()

    def recorder(self) -> None:
        """The adapter's analyzers, not recorded."""
        cerebro = make_cerebro()
        _ensure_analyzers(cerebro)
        cerebro.run()

    def all_six(self) -> None:
        """The analyzers the recorder stands in for, run as usual."""
        cerebro = make_cerebro()
        cerebro.addanalyzer(bt.analyzers.Returns)
        cerebro.addanalyzer(
            bt.analyzers.SharpeRatio, timeframe=bt.TimeFrame.Days, annualize=True, riskfreerate=0.0
        )
        cerebro.addanalyzer(bt.analyzers.DrawDown)
        cerebro.addanalyzer(bt.analyzers.TradeAnalyzer)
        _ensure_analyzers(cerebro)
        cerebro.run()

    def tracked(self) -> None:
        """Recorded by the recording process (the default)."""
        self.adapter.run(make_cerebro(), name="bench-sma")

    def in_process_tracked(self) -> None:
        """Recorded in this process before ``run`` returns."""
        self.in_process.run(make_cerebro(), name="bench-sma-here")

    def recording_only(self) -> None:
        """The in-process recording of an already finished run."""
        self.in_process.run(self.finished, name="bench-recording")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds of the target figure")
    parser.add_argument("--context-rounds", type=int, default=5, help="rounds of the others")
    parser.add_argument("--block", type=int, default=4, help="consecutive runs per block")
    args = parser.parse_args()
    runs_per_block: int = args.block
    # The lifecycle's info lines would be printed between the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    with tempfile.TemporaryDirectory() as folder:
        workspace = open_workspace(Path(folder) / "ws")
        made = Variants(workspace)
        for warm in (
            made.untracked,
            made.recorder,
            made.all_six,
            made.tracked,
            made.in_process_tracked,
            made.recording_only,
        ):
            warm()
        made.adapter.flush()
        times: dict[str, list[float]] = collections.defaultdict(list)
        child = recording_process()._child

        def block(name: str, fn: Callable[[], None]) -> float:
            # Each block starts from an empty heap of garbage: otherwise one variant's
            # leftovers are collected, and timed, in the next one's block.
            gc.collect()
            cpu = _cpu_seconds(child)
            start = time.perf_counter()
            for _ in range(runs_per_block):
                fn()
            per_run = (time.perf_counter() - start) / runs_per_block
            times[name].append(per_run)
            if name == "tracked":
                times["flush"].append(timed(made.adapter.flush))
                times["child cpu"].append((_cpu_seconds(child) - cpu) / runs_per_block)
            return per_run

        paired: list[float] = []
        for _ in range(args.rounds):
            before = block("untracked", made.untracked)
            recorded = block("tracked", made.tracked) + block("tracked", made.tracked)
            paired.append(recorded / (before + block("untracked", made.untracked)))
        context: dict[str, list[float]] = collections.defaultdict(list)
        for _ in range(args.context_rounds):
            base = block("untracked", made.untracked)
            for name, fn in (
                ("recorder", made.recorder),
                ("all six", made.all_six),
                ("in-process", made.in_process_tracked),
            ):
                context[name].append(block(name, fn) / base)
            times["recording"].append(timed(made.recording_only))
        medians = {name: statistics.median(values) for name, values in times.items()}
        ratios = {name: statistics.median(values) for name, values in context.items()}
        runs = workspace.tracker.list_experiments(None)

    report(medians, ratios, paired, bars=len(load_sample("AAA")), args=args, recorded=runs)


def report(
    medians: dict[str, float],
    ratios: dict[str, float],
    paired: list[float],
    *,
    bars: int,
    args: argparse.Namespace,
    recorded: list[Any],
) -> None:
    """Print the figures."""
    base = medians["untracked"]
    quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else [paired[0]] * 3
    print(
        f"backtrader SMA crossover, {bars} daily bars, blocks of {args.block} runs (median per run)"
    )
    print(f"  untracked   {base * 1000:8.1f} ms")
    print(f"  tracked     {medians['tracked'] * 1000:8.1f} ms")
    print(
        f"  ratio tracked / untracked over {args.rounds} rounds: "
        f"{statistics.median(paired):.3f} (quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}); "
        "target <= 1.02"
    )
    print(
        f"  after each {args.block}-run tracked block, waiting for its records: "
        f"{medians['flush'] * 1000:.1f} ms; recording process CPU per run: "
        f"{medians['child cpu'] * 1000:.1f} ms (on the other core)"
    )
    print(f"  context, {args.context_rounds} rounds (ratio to the round's untracked block):")
    for name in ("recorder", "all six", "in-process"):
        print(f"    {name:<11} {ratios[name]:.3f}x")
    print(
        f"  in-process recording alone (backtest excluded): {medians['recording'] * 1000:.1f} ms "
        f"= {medians['recording'] / base:.1%} of the untracked run"
    )
    completed = sum(1 for e in recorded if e.status.value == "completed")
    print(f"  runs recorded: {len(recorded)}, completed: {completed}")


if __name__ == "__main__":
    main()
