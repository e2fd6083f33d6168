"""Benchmark: what the batch runner costs per item over a bare executor.

For ``--items`` (2,000) items of trivial work on a ``--workers`` (2) process pool, it times:

* ``bare`` — ``executor.submit`` for every item, then every ``result()``: the floor;
* ``memory`` — ``run_batch`` recording into the in-memory adapters;
* ``duckdb`` — ``Workspace.run_batch`` into a real workspace (DuckDB file + artifact
  folder), skipped if the DuckDB adapters are not installed;
* ``duckdb runs, memory observer`` — the DuckDB tracker with an in-memory observer, which
  separates the cost of writing the runs from that of the batch observer's item events.

It prints the wall time of each (median of ``--rounds``), the overhead per item over the
bare executor (target: at most 2 ms) and the items recorded per second. The same warm
pool serves every round, so process start-up is not counted.

Run::

    .venv/bin/python benchmarks/bench_batches.py
    .venv/bin/python benchmarks/bench_batches.py --items 500 --rounds 1
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import structlog

from quantrack.adapters.memory import (
    InMemoryArtifactStore,
    InMemoryBatchObserver,
    InMemoryExperimentTracker,
)
from quantrack.adapters.observers import batch_observer
from quantrack.services.batches import run_batch


def trivial(x: int) -> dict[str, float]:
    """The work of one item: next to none."""
    return {"x": float(x)}


def _median(rounds: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    items = [{"x": i} for i in range(args.items)]
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        for future in [pool.submit(trivial, 0) for _ in range(args.workers * 4)]:
            future.result()  # warm the workers up

        def bare() -> None:
            for future in [pool.submit(trivial, **item) for item in items]:
                future.result()

        def memory() -> None:
            observer = InMemoryBatchObserver()
            run_batch(
                InMemoryExperimentTracker(),
                InMemoryArtifactStore(),
                batch_observer(observer, progress=False),
                trivial,
                items,
                name="bench",
                executor=pool,
                skip_completed=False,
            )

        # Warm up once untimed: provenance (installed packages, git state) is collected once
        # per process and cached, so it would only burden the first round.
        run_batch(
            InMemoryExperimentTracker(),
            InMemoryArtifactStore(),
            batch_observer(InMemoryBatchObserver(), progress=False),
            trivial,
            items[:10],
            name="warm-up",
            executor=pool,
        )
        results = {"bare": _median(args.rounds, bare), "memory": _median(args.rounds, memory)}
        try:
            from quantrack import open_workspace

            with tempfile.TemporaryDirectory() as folder:
                counter = iter(range(1_000_000))

                def duckdb() -> None:
                    workspace = open_workspace(Path(folder) / f"ws{next(counter)}")
                    workspace.run_batch(
                        trivial,
                        items,
                        name="bench",
                        executor=pool,
                        skip_completed=False,
                        progress=False,
                    )

                def duckdb_runs_only() -> None:
                    # The DuckDB tracker with an in-memory observer: what the runs cost
                    # apart from the batch observer's per-item events.
                    from quantrack.adapters.duckdb import DuckDBExperimentTracker

                    path = Path(folder) / f"runs{next(counter)}.duckdb"
                    run_batch(
                        DuckDBExperimentTracker(path),
                        InMemoryArtifactStore(),
                        batch_observer(InMemoryBatchObserver(), progress=False),
                        trivial,
                        items,
                        name="bench",
                        executor=pool,
                        skip_completed=False,
                    )

                results["duckdb"] = _median(args.rounds, duckdb)
                results["duckdb runs, memory observer"] = _median(args.rounds, duckdb_runs_only)
        except ImportError as exc:
            print(f"duckdb: skipped ({exc})")

    print(
        f"{args.items} trivial items on {args.workers} worker processes, median of "
        f"{args.rounds} rounds"
    )
    floor = results["bare"]
    for label, seconds in results.items():
        line = f"{label:>30}: {seconds:7.3f} s  {args.items / seconds:9,.0f} items/s"
        if label != "bare":
            overhead = (seconds - floor) / args.items * 1000
            line += f"  overhead {overhead:6.3f} ms/item (target <= 2 ms)"
        print(line)


if __name__ == "__main__":
    main()
