"""Benchmark: recording a 10,000-column vectorbt moving-average sweep.

Prints, for one sweep (100 fast x 100 slow windows over 2,520 daily bars by default):

* how long vectorbt took to build the portfolio (indicators, signals, simulation);
* how long quantrack took to record all runs with metrics and params (one batch, the
  bulk write), as runs per second and as a ratio of vectorbt's time;
* the same with the shared equity-curve and trades Parquet files too;
* where the time of the metrics-only recording goes (vectorbt's metric methods vs
  quantrack's own bookkeeping and writes);
* the peak resident memory of the process.

Targets: metrics and params at >= 20,000 runs/s; with equity curves, recording at most as
long as vectorbt's own computation (ratio <= 1).

Each recording gets a freshly built portfolio, because vectorbt caches what it computed
(a second recording of the same portfolio would be unfairly cheap).

Run::

    .venv/bin/python benchmarks/bench_vectorbt.py            # 10,000 columns
    .venv/bin/python benchmarks/bench_vectorbt.py --quick    # 400 columns
    .venv/bin/python benchmarks/bench_vectorbt.py --backend memory
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import structlog

from quantrack.adapters.memory import (
    InMemoryArtifactStore,
    InMemoryBatchObserver,
    InMemoryExperimentTracker,
)
from quantrack.engines._vbt_metrics import column_axis, compute_metrics
from quantrack.engines.vectorbt import VectorbtAdapter
from quantrack.sample_data import load_sample
from quantrack.workspace import Workspace, open_workspace

BARS = 2520


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _prices(bars: int) -> pd.Series:
    close = load_sample("AAA")["close"]
    if len(close) < bars:
        raise SystemExit(f"the sample data has {len(close)} bars, fewer than {bars}")
    return close.iloc[:bars]


def build_sweep(close: pd.Series, side: int) -> Any:
    """A ``side x side`` MA-crossover grid: fast windows 2.., slow windows 105.."""
    import vectorbt as vbt

    fast_w, slow_w = np.meshgrid(np.arange(2, 2 + side), np.arange(105, 105 + side), indexing="ij")
    fast = vbt.MA.run(close, fast_w.ravel(), short_name="fast")
    slow = vbt.MA.run(close, slow_w.ravel(), short_name="slow")
    entries = fast.ma_crossed_above(slow)
    exits = fast.ma_crossed_below(slow)
    return vbt.Portfolio.from_signals(close, entries, exits, fees=0.001, freq="1D")


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


@contextlib.contextmanager
def _workspace(backend: str) -> Iterator[Workspace]:
    if backend == "memory":
        yield Workspace(
            tracker=InMemoryExperimentTracker(),
            artifacts=InMemoryArtifactStore(),
            observer=InMemoryBatchObserver(),
        )
        return
    with tempfile.TemporaryDirectory(prefix="qt-bench-vbt-") as folder:
        yield open_workspace(Path(folder) / "ws")


def main() -> None:
    """Build the sweep, record it each way, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 x 20 = 400 columns")
    parser.add_argument("--side", type=int, default=None, help="grid side (side**2 columns)")
    parser.add_argument(
        "--backend", choices=("memory", "duckdb", "both"), default="both", help="where to record"
    )
    args = parser.parse_args()
    side = args.side or (20 if args.quick else 100)
    if side < 2:
        parser.error("--side must be at least 2")
    # Per-run log lines would measure the terminal, not quantrack.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    close = _prices(BARS)
    n = side * side

    # Compile vectorbt's numba kernels and warm our own path once, outside every timing.
    warm = build_sweep(close, 2)
    VectorbtAdapter(
        Workspace(
            tracker=InMemoryExperimentTracker(),
            artifacts=InMemoryArtifactStore(),
            observer=InMemoryBatchObserver(),
        )
    ).record(warm, name="warm-up")

    print(f"vectorbt MA sweep: {n:,} columns x {BARS:,} daily bars")
    build_times: list[float] = []

    def fresh() -> Any:
        seconds, pf = _timed(lambda: build_sweep(close, side))
        build_times.append(seconds)
        return pf

    pf = fresh()
    vbt_seconds = build_times[0]
    print(f"  vectorbt build (indicators + signals + simulation): {vbt_seconds:8.2f} s")

    # Where the metrics-only time goes: vectorbt's metric methods, then everything else.
    metric_seconds, _ = _timed(
        lambda: compute_metrics(pf, len(column_axis(pf, single_params_from_index=False)))
    )
    print(f"  vectorbt metric methods alone, all columns:        {metric_seconds:8.2f} s")

    backends = ("memory", "duckdb") if args.backend == "both" else (args.backend,)
    for backend in backends:
        for label, kwargs in (
            ("metrics + params", {"equity": False, "trades": False}),
            ("+ equity curves + trades", {"equity": True, "trades": True}),
        ):
            pf = fresh()
            with _workspace(backend) as ws:
                adapter = VectorbtAdapter(ws, capture_code=False)
                start = time.perf_counter()
                result = adapter.record(pf, name="bench", **kwargs)
                seconds = time.perf_counter() - start
                if not result.recorded or len(result.experiment_ids) != n:
                    raise SystemExit(f"recording failed: {result}")
            rate = n / seconds
            print(
                f"  [{backend:6s}] record {label:26s} {seconds:8.2f} s  "
                f"{rate:10,.0f} runs/s  ratio to vectorbt build {seconds / vbt_seconds:6.2f}"
            )
    print(
        f"  vectorbt build time over {len(build_times)} fresh builds: "
        f"min {min(build_times):.2f} s, max {max(build_times):.2f} s"
    )
    print(f"  peak resident memory: {_peak_rss_mb():,.0f} MB")
    print("  targets: metrics + params >= 20,000 runs/s; with equity curves ratio <= 1.00")


if __name__ == "__main__":
    main()
