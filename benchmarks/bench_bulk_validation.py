"""Benchmark: building a validated ``FinishedExperiments`` for a bulk record.

The bulk path validates every row (lengths, finite metrics, lifecycle fields, canonical
params and their config hashes) before a tracker writes it. This prints how long that
validation takes for 100,000 finished experiments with 8 params, 12 metrics and 3 tags,
with the timestamps given per row (tuples) and shared by all rows (one value each), and
then the whole bulk record into a DuckDB file (validation + ``record_finished``), whose
target is >= 100,000 experiments/s including validation.

Run::

    .venv/bin/python benchmarks/bench_bulk_validation.py            # 100,000 rows
    .venv/bin/python benchmarks/bench_bulk_validation.py --rows 20000
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from quantrack.adapters.duckdb import DuckDBExperimentTracker
from quantrack.domain import ExperimentDefinition, ExperimentStatus, FinishedExperiments


def raw_columns(n: int, *, shared_times: bool) -> dict[str, Any]:
    """The keyword arguments of a ``FinishedExperiments`` of ``n`` rows, not yet validated."""
    rng = random.Random(n)
    now = dt.datetime.now(dt.UTC)
    strategies = ("sma", "rsi", "breakout")
    times: dict[str, Any] = (
        {"created_at": now, "started_at": now, "completed_at": now}
        if shared_times
        else {"created_at": (now,) * n, "started_at": (now,) * n, "completed_at": (now,) * n}
    )
    return {
        "template": ExperimentDefinition(
            name="sweep", strategy="sma", engine="vectorbt", tags=("sweep", "bench", "daily")
        ),
        "ids": tuple(f"{i:032x}" for i in range(n)),
        "params": tuple(
            {
                "fast": i % 50,
                "slow": 20 + i % 100,
                "symbol": f"S{i % 30}",
                "stop": 0.01 * (i % 7) + 0.001,
                "long_only": i % 2 == 0,
                "strategy_kind": strategies[i % 3],
                "lookback": 5 + i % 250,
                "fee": 0.0005,
            }
            for i in range(n)
        ),
        "metrics": {
            "sharpe": tuple(rng.gauss(0, 1) for _ in range(n)),
            **{f"metric_{j}": tuple(rng.random() for _ in range(n)) for j in range(11)},
        },
        "status": (ExperimentStatus.COMPLETED,) * n,
        **times,
    }


def main() -> None:
    """Build the columns once per layout, time their validation, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="experiments per build")
    parser.add_argument("--repeat", type=int, default=3, help="builds per layout (median)")
    args = parser.parse_args()
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be at least 1")
    n = args.rows
    print(f"FinishedExperiments of {n:,} rows (8 params, 12 metrics, 3 tags)")
    for shared in (False, True):
        label = "one shared timestamp each" if shared else "timestamps per row"
        seconds: list[float] = []
        for _ in range(args.repeat):
            # Fresh dicts each time: validation replaces the params with canonical ones.
            columns = raw_columns(n, shared_times=shared)
            start = time.perf_counter()
            built = FinishedExperiments(**columns)
            seconds.append(time.perf_counter() - start)
            if len(built) != n:
                raise SystemExit(f"built {len(built)} rows, expected {n}")
        median = statistics.median(seconds)
        print(f"  {label:26s} {median:6.3f} s median   {n / median:12,.0f} rows/s")
    seconds = []
    with tempfile.TemporaryDirectory(prefix="qt-bench-bulk-") as folder:
        for attempt in range(args.repeat):
            tracker = DuckDBExperimentTracker(Path(folder) / f"bulk{attempt}.duckdb")
            columns = raw_columns(n, shared_times=True)
            start = time.perf_counter()
            tracker.record_finished(FinishedExperiments(**columns))
            seconds.append(time.perf_counter() - start)
            tracker.close()
    median = statistics.median(seconds)
    print(f"  {'validate + DuckDB record':26s} {median:6.3f} s median   {n / median:12,.0f} rows/s")
    print("  target: the whole bulk record (validation included) >= 100,000 rows/s")


if __name__ == "__main__":
    main()
