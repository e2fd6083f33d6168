"""How fast the command line answers on a big workspace, and how fast quantrack imports.

Prints:

* the time to fill a workspace with N finished experiments through the bulk path
  (``tracker.record_finished``), 100,000 by default;
* the wall time of ``quantrack runs list --limit 20`` and ``quantrack runs best --metric
  sharpe`` as new processes on it (best and median of several; target: at most 0.5 s);
* the total of ``python -X importtime -c 'import quantrack'`` (target: at most 150 ms),
  and the wall time of ``python -c 'import quantrack'`` and ``quantrack --help``.

Usage: ``python benchmarks/bench_cli.py [--n 100000] [--repeat 5] [--workspace PATH]``
(``--quick`` uses 10,000 experiments). An existing workspace given with ``--workspace``
is reused as it is.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUANTRACK = [sys.executable, "-m", "quantrack"]


def populate(path: Path, n: int, chunk: int = 25_000) -> float:
    """Record ``n`` finished experiments in chunks through the bulk path; return seconds."""
    from quantrack import (
        ExperimentDefinition,
        ExperimentStatus,
        FinishedExperiments,
        open_workspace,
    )
    from quantrack.domain import new_id

    ws = open_workspace(path)
    template = ExperimentDefinition(name="bench sweep", strategy="ma-cross", engine="vectorbt")
    start = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    for offset in range(0, n, chunk):
        rows = range(offset, min(n, offset + chunk))
        size = len(rows)
        ws.tracker.record_finished(
            FinishedExperiments(
                template=template,
                ids=tuple(new_id() for _ in rows),
                params=tuple({"fast": 2 + i % 50, "slow": 20 + i % 200, "i": i} for i in rows),
                metrics={
                    "sharpe": tuple(((i * 7919) % 1000) / 250 - 1 for i in rows),
                    "total_return": tuple(((i * 104729) % 1000) / 500 - 0.5 for i in rows),
                },
                status=(ExperimentStatus.COMPLETED,) * size,
                created_at=(now,) * size,
                started_at=(now,) * size,
                completed_at=(now,) * size,
            )
        )
    return time.perf_counter() - start


def wall(command: list[str], repeat: int) -> tuple[float, float, float]:
    """Best and median wall seconds of ``command`` run ``repeat`` times (after a warm-up),
    and its best CPU seconds (user + system), which a busy machine inflates less.
    """
    subprocess.run(command, capture_output=True, check=True)
    times = []
    cpu = []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(times), statistics.median(times), min(cpu)


def import_total_ms() -> float:
    """Cumulative microseconds of the top-level ``quantrack`` import, in ms (best of 5)."""
    best = float("inf")
    for _ in range(5):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import quantrack"],
            capture_output=True,
            text=True,
            check=True,
        )
        for line in result.stderr.splitlines():
            match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| quantrack$", line)
            if match:
                best = min(best, int(match.group(1)) / 1000)
    return best


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="experiments in the workspace")
    parser.add_argument("--quick", action="store_true", help="10,000 experiments")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per command")
    parser.add_argument("--workspace", type=Path, help="reuse (or create) this workspace")
    args = parser.parse_args()
    n = 10_000 if args.quick else args.n
    folder = args.workspace or Path(tempfile.mkdtemp(prefix="quantrack-bench-cli-"))
    if not (folder / "runs.duckdb").exists():
        seconds = populate(folder, n)
        print(f"recorded {n:,} experiments in bulk: {seconds:.2f} s ({n / seconds:,.0f}/s)")
    else:
        print(f"reusing workspace {folder}")
    env_note = f"(cpus: {os.cpu_count()}, python {sys.version.split()[0]})"
    print(f"workspace: {folder} {env_note}")
    for label, command in (
        ("runs list --limit 20", ["runs", "list", "--limit", "20"]),
        ("runs best --metric sharpe", ["runs", "best", "--metric", "sharpe"]),
        ("--help (no workspace)", ["--help"]),
    ):
        best, median, cpu = wall(
            [*QUANTRACK, *command, *(["-w", str(folder)] if command != ["--help"] else [])],
            args.repeat,
        )
        verdict = (
            "" if label.startswith("--help") else ("  ok" if best <= 0.5 else "  over 0.5 s target")
        )
        print(
            f"quantrack {label:<26} best {best:6.3f} s  median {median:6.3f} s  "
            f"cpu {cpu:6.3f} s{verdict}"
        )
    best, median, cpu = wall([sys.executable, "-c", "import quantrack"], args.repeat)
    print(
        f"python -c 'import quantrack'       best {best:6.3f} s  median {median:6.3f} s  "
        f"cpu {cpu:6.3f} s"
    )
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    total = import_total_ms()
    verdict = "ok" if total <= 150 else "over 150 ms target"
    print(f"-X importtime total for quantrack: {total:.1f} ms  {verdict}")


if __name__ == "__main__":
    main()
