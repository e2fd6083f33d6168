"""Benchmark: recording a 10,000-column vectorbt moving-average sweep.

Prints, for one sweep (100 fast x 100 slow windows over 2,520 daily bars by default):

* how long vectorbt took to build the portfolio (indicators, signals, simulation);
* how long quantrack took to record all runs with metrics and params (one batch, the
  bulk write), as runs per second and as a ratio of vectorbt's time;
* the same with the shared equity-curve and trades Parquet files too;
* where the time of the metrics-only recording goes (the metrics alone, computed by one
  fused pass over the bars on worker threads; a recording overlaps that pass with its own
  bookkeeping and writes);
* what the first recording costs a fresh process (numba loading its cached kernels),
  which the timings leave out;
* the peak resident memory of the process, and (on Linux) the peak during each recording
  alone.

Targets: metrics and params at >= 20,000 runs/s; with equity curves, recording at most as
long as vectorbt's own computation (ratio <= 1).

Each recording gets a freshly built portfolio, because vectorbt caches what it computed
(a second recording of the same portfolio would be unfairly cheap). The machine may be
busy: ``--rounds N`` records each way N times (each on a fresh portfolio) and prints the
median and the spread.

Run::

    .venv/bin/python benchmarks/bench_vectorbt.py            # 10,000 columns
    .venv/bin/python benchmarks/bench_vectorbt.py --quick    # 400 columns
    .venv/bin/python benchmarks/bench_vectorbt.py --backend memory
    .venv/bin/python benchmarks/bench_vectorbt.py --rounds 3     # medians of 3
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import resource
import statistics
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
from quantrack.engines._vbt_metrics import _columns_kernel, column_axis, compute_metrics
from quantrack.engines.vectorbt import VectorbtAdapter
from quantrack.sample_data import load_sample
from quantrack.workspace import Workspace, open_workspace

BARS = 2520


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


_STATUS = Path("/proc/self/status")


def _reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS count (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _status_mb(field: str) -> float:
    """A memory figure of /proc/self/status (``VmRSS``: now, ``VmHWM``: peak) in MB."""
    for line in _STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


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


def _record_rounds(
    fresh: Callable[[], Any], backend: str, kwargs: dict[str, bool], rounds: int, n: int
) -> tuple[list[float], list[float], list[float]]:
    """Record a fresh sweep ``rounds`` times: the wall seconds, the CPU seconds of all
    threads (less noisy on a busy machine) and the peak memory each added, in MB.
    """
    times: list[float] = []
    cpu: list[float] = []
    growth: list[float] = []  # peak RSS while recording over the RSS before it
    for _ in range(rounds):
        pf = fresh()
        with _workspace(backend) as ws:
            adapter = VectorbtAdapter(ws, capture_code=False)
            tracked = _reset_peak_rss()
            before = _status_mb("VmRSS")
            start, start_cpu = time.perf_counter(), time.process_time()
            result = adapter.record(pf, name="bench", **kwargs)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            growth.append(_status_mb("VmHWM") - before if tracked else float("nan"))
            if not result.recorded or len(result.experiment_ids) != n:
                raise SystemExit(f"recording failed: {result}")
        pf = None  # one portfolio in memory at a time
    return times, cpu, growth


def main() -> None:
    """Build the sweep, record it each way, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 x 20 = 400 columns")
    parser.add_argument("--side", type=int, default=None, help="grid side (side**2 columns)")
    parser.add_argument(
        "--backend", choices=("memory", "duckdb", "both"), default="both", help="where to record"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="recordings of each kind (median printed)"
    )
    args = parser.parse_args()
    side = args.side or (20 if args.quick else 100)
    if side < 2:
        parser.error("--side must be at least 2")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    # Per-run log lines would measure the terminal, not quantrack.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    close = _prices(BARS)
    n = side * side

    # Compile vectorbt's numba kernels and warm our own path once, outside every timing;
    # what that first recording costs a fresh process is printed, not hidden.
    warm = build_sweep(close, 2)
    first_use, _ = _timed(
        lambda: VectorbtAdapter(
            Workspace(
                tracker=InMemoryExperimentTracker(),
                artifacts=InMemoryArtifactStore(),
                observer=InMemoryBatchObserver(),
            )
        ).record(warm, name="warm-up")
    )
    cache = _columns_kernel().stats
    origin = (
        "compiled now (no on-disk cache yet)"
        if sum(cache.cache_misses.values())
        else "loaded from numba's on-disk cache"
    )

    print(f"vectorbt MA sweep: {n:,} columns x {BARS:,} daily bars")
    print(
        f"  first recording in this process (4 columns; not in the timings): {first_use:8.2f} s"
        f"  (quantrack's metrics kernel {origin})"
    )
    build_times: list[float] = []

    def fresh() -> Any:
        seconds, pf = _timed(lambda: build_sweep(close, side))
        build_times.append(seconds)
        return pf

    first: Any = fresh()
    print(f"  vectorbt build (indicators + signals + simulation): {build_times[0]:8.2f} s")

    # Where the metrics-only time goes: the metrics themselves, then everything else.
    metric_seconds, _ = _timed(
        lambda: compute_metrics(first, len(column_axis(first, single_params_from_index=False)))
    )
    print(f"  quantrack metrics alone (fused pass, all threads): {metric_seconds:8.2f} s")
    first = None  # one portfolio in memory at a time

    backends = ("memory", "duckdb") if args.backend == "both" else (args.backend,)
    results = []
    for backend in backends:
        for label, kwargs in (
            ("metrics + params", {"equity": False, "trades": False}),
            ("+ equity curves + trades", {"equity": True, "trades": True}),
        ):
            results.append(
                (backend, label, *_record_rounds(fresh, backend, kwargs, args.rounds, n))
            )
    # Ratios against the median of every fresh build, the steadiest figure of vectorbt's.
    build = statistics.median(build_times)
    for backend, label, times, cpu, growth in results:
        seconds = statistics.median(times)
        spread = f" ({min(times):.2f}-{max(times):.2f})" if args.rounds > 1 else ""
        print(
            f"  [{backend:6s}] record {label:26s} {seconds:8.2f} s{spread}  "
            f"{n / seconds:10,.0f} runs/s  ratio to vectorbt build {seconds / build:5.2f}"
            f"  cpu {statistics.median(cpu):.2f} s"
            f"  peak memory +{statistics.median(growth):,.0f} MB"
        )
    print(
        f"  vectorbt build time over {len(build_times)} fresh builds: "
        f"min {min(build_times):.2f} s, median {build:.2f} s, max {max(build_times):.2f} s"
    )
    print(
        f"  peak resident memory of the process: {_peak_rss_mb():,.0f} MB "
        "(vectorbt's build of the sweep dominates it; 'peak memory +' is what a recording "
        "added on top of the memory held before it)"
    )
    print("  targets: metrics + params >= 20,000 runs/s; with equity curves ratio <= 1.00")


if __name__ == "__main__":
    main()
