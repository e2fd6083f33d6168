"""Several processes on one database file: busy files, killed writers, concurrent writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from quantrack.adapters.duckdb import DuckDBExperimentTracker
from quantrack.domain import (
    ExperimentDefinition,
    ExperimentFilter,
    ExperimentStatus,
    WorkspaceBusy,
)

_PRELUDE = """
import datetime as dt, logging, sys, time
from pathlib import Path
import structlog
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
from quantrack.adapters.duckdb import DuckDBExperimentTracker
from quantrack.domain import (
    ExperimentDefinition, ExperimentFilter, ExperimentResults, ExperimentStatus,
    FinishedExperiments,
)
path = Path(sys.argv[1])
"""


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    """A Python process running ``code`` after the prelude, with ``args`` in sys.argv."""
    return subprocess.Popen(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(process: subprocess.Popen[str], line: str) -> None:
    assert process.stdout is not None
    got = process.stdout.readline().strip()
    if got != line:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"child said {got!r} instead of {line!r}: {err}")


def test_busy_file_raises_workspace_busy_naming_the_holder(tmp_path: Path) -> None:
    """A file held by another process raises WorkspaceBusy after the timeout, naming it."""
    path = tmp_path / "runs.duckdb"
    DuckDBExperimentTracker(path).close()
    holder = _spawn(
        """
        import duckdb
        con = duckdb.connect(str(path))
        print("holding", flush=True)
        time.sleep(60)
        """,
        str(path),
    )
    try:
        _wait_for(holder, "holding")
        tracker = DuckDBExperimentTracker(path, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(WorkspaceBusy) as caught:
            tracker.list_experiments()
        assert time.monotonic() - started >= 0.5
        assert caught.value.holder is not None
        assert f"PID {holder.pid}" in caught.value.holder
        assert str(path) in str(caught.value)
        assert f"PID {holder.pid}" in str(caught.value)
    finally:
        holder.kill()
        holder.wait()
    assert tracker.list_experiments() == []


def test_busy_quantrack_session_raises_workspace_busy(tmp_path: Path) -> None:
    """A long session in another quantrack process makes a call here give up, naming it."""
    path = tmp_path / "runs.duckdb"
    holder = _spawn(
        """
        tracker = DuckDBExperimentTracker(path)
        with tracker.session():
            tracker.list_experiments()
            print("holding", flush=True)
            time.sleep(60)
        """,
        str(path),
    )
    try:
        _wait_for(holder, "holding")
        with pytest.raises(WorkspaceBusy, match=f"PID {holder.pid}") as caught:
            DuckDBExperimentTracker(path, timeout=0.3).get_experiment("x")
        assert caught.value.timeout == 0.3
    finally:
        holder.kill()
        holder.wait()


def test_sigkill_during_bulk_insert_keeps_all_or_none(tmp_path: Path) -> None:
    """A writer killed with SIGKILL mid-insert leaves an openable file with all or none."""
    path = tmp_path / "runs.duckdb"
    writer = _spawn(
        """
        tracker = DuckDBExperimentTracker(path)
        now = dt.datetime.now(dt.UTC)

        def records(n, prefix):
            return FinishedExperiments(
                template=ExperimentDefinition(name="sweep", tags=("a", "b")),
                ids=tuple(f"{prefix}-{i}" for i in range(n)),
                params=tuple({"i": i, "s": "x", "f": i / 3} for i in range(n)),
                metrics={"m": tuple(float(i) for i in range(n))},
                status=(ExperimentStatus.COMPLETED,) * n,
                created_at=(now,) * n, started_at=(now,) * n, completed_at=(now,) * n,
            )

        tracker.record_finished(records(1000, "base"))
        big = records(300_000, "big")
        print("inserting", flush=True)
        tracker.record_finished(big)
        print("done", flush=True)
        """,
        str(path),
    )
    _wait_for(writer, "inserting")
    time.sleep(0.3)
    os.kill(writer.pid, signal.SIGKILL)
    out, _ = writer.communicate()
    assert writer.returncode == -signal.SIGKILL
    tracker = DuckDBExperimentTracker(path)
    _, rows = tracker.query(
        "SELECT count(*), count(*) FILTER (WHERE id LIKE 'big-%') FROM experiments"
    )
    total, big = rows[0]
    assert big in (0, 300_000)
    assert total == 1000 + big
    _, counts = tracker.query(
        "SELECT (SELECT count(*) FROM params), (SELECT count(*) FROM metrics)"
    )
    assert counts == [(3 * total, total)]
    if "done" not in out:
        assert big == 0  # killed before its commit returned: nothing of it is visible


_WRITER = """
worker = sys.argv[2]
tracker = DuckDBExperimentTracker(path, timeout=120)
for i in range(500):
    definition = ExperimentDefinition(name=f"{worker}-{i}", params={"worker": worker, "i": i})
    with tracker.session():
        run = tracker.create_experiment(definition, experiment_id=f"{worker}-{i}")
        tracker.update_status(run.id, ExperimentStatus.RUNNING)
    with tracker.session():
        tracker.store_results(run.id, ExperimentResults(metrics={"i": float(i)}))
        tracker.update_status(run.id, ExperimentStatus.COMPLETED)
print("done", flush=True)
"""

_LISTER = """
stop = Path(sys.argv[2])
tracker = DuckDBExperimentTracker(path, timeout=120)
lists = 0
while not stop.exists():
    tracker.list_experiments(ExperimentFilter(limit=20))
    tracker.close()
    lists += 1
    time.sleep(0.02)
print(lists, flush=True)
"""


@pytest.mark.slow
def test_four_writers_and_a_lister_lose_nothing(tmp_path: Path) -> None:
    """Four processes record 500 lifecycles each while a fifth lists; all 2,000 are whole."""
    path = tmp_path / "runs.duckdb"
    DuckDBExperimentTracker(path).close()
    stop = tmp_path / "stop"
    lister = _spawn(_LISTER, str(path), str(stop))
    writers = [_spawn(_WRITER, str(path), f"w{n}") for n in range(4)]
    try:
        for writer in writers:
            out, err = writer.communicate(timeout=600)
            assert writer.returncode == 0, err
            assert out.strip() == "done"
    finally:
        stop.touch()
        out, err = lister.communicate(timeout=120)
    assert lister.returncode == 0, err
    assert int(out) > 0
    tracker = DuckDBExperimentTracker(path)
    runs = tracker.list_experiments()
    assert len(runs) == 2000
    for run in runs:
        worker, i = run.id.split("-")
        assert run.status is ExperimentStatus.COMPLETED
        assert run.params == {"worker": worker, "i": int(i)}
        assert run.metrics == {"i": float(i)}
        assert run.started_at is not None
        assert run.completed_at is not None
    done = ExperimentFilter(status=ExperimentStatus.COMPLETED, where="i >= 499")
    assert sorted(r.name for r in tracker.list_experiments(done)) == [f"w{n}-499" for n in range(4)]


def test_reader_gets_in_while_a_writer_keeps_working(tmp_path: Path) -> None:
    """A process recording runs back to back hands the file to a waiting reader."""
    path = tmp_path / "runs.duckdb"
    tracker = DuckDBExperimentTracker(path)
    tracker.create_experiment(ExperimentDefinition(name="first"))
    tracker.close()
    reader = _spawn(
        """
        tracker = DuckDBExperimentTracker(path, timeout=20)
        print("ready", flush=True)
        time.sleep(0.5)
        start = time.monotonic()
        found = tracker.list_experiments(ExperimentFilter(limit=1))
        print(len(found), round(time.monotonic() - start, 3), flush=True)
        """,
        str(path),
    )
    _wait_for(reader, "ready")
    deadline = time.monotonic() + 4.0
    written = 0
    while time.monotonic() < deadline:
        run = tracker.create_experiment(ExperimentDefinition(name="busy"))
        tracker.update_status(run.id, ExperimentStatus.RUNNING)
        written += 1
    tracker.close()
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    count, waited = out.split()
    assert count == "1"
    assert float(waited) < 4.0  # answered while the writer was still busy
    assert written > 0
    assert duckdb.__version__  # the real driver, not a stand-in
