"""The read macros of schema 4, pages ordered by time, and what a process keeps knowing
about a file it let go of, on real DuckDB files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb

from quantrack.adapters.duckdb import DuckDBExperimentTracker
from quantrack.adapters.duckdb.schema import migrate
from quantrack.adapters.duckdb.tracker import _AUX
from quantrack.adapters.memory import InMemoryExperimentTracker
from quantrack.domain import (
    ArtifactRef,
    Experiment,
    ExperimentDefinition,
    ExperimentFilter,
    ExperimentResults,
    ExperimentStatus,
)

S = ExperimentStatus
_TIMES = {"created_at", "started_at", "completed_at", "heartbeat_at"}


def _comparable(experiments: list[Experiment]) -> list[dict[str, object]]:
    """The experiments without their timestamps (two trackers record at different times)."""
    return [e.model_dump(exclude=_TIMES) for e in experiments]


def _record(tracker: DuckDBExperimentTracker | InMemoryExperimentTracker, i: int) -> str:
    """One run with params of every kind, metrics, an input and an artifact."""
    with tracker.session():
        run = tracker.create_experiment(
            ExperimentDefinition(
                name=f"run {i}",
                params={"i": i, "s": f"x{i}", "b": i % 2 == 0, "nested": [i, {"k": None}]},
                inputs=(ArtifactRef(id=f"{i:064x}", size=i, kind="input", name="prices"),),
            ),
            experiment_id=f"run-{i:03d}",
        )
        tracker.update_status(run.id, S.RUNNING)
        tracker.store_results(
            run.id,
            ExperimentResults(
                metrics={"sharpe": i / 10, "cagr": 0.1},
                artifacts=(ArtifactRef(id=f"{i + 1:064x}", size=3, kind="trades", part="p"),),
            ),
        )
        tracker.update_status(run.id, S.COMPLETED)
    return run.id


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """What ``sql`` returns from the file at ``path``, read through a read-only connection."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_the_parts_macro_returns_what_the_parts_query_returns(tmp_path: Path) -> None:
    """qt_experiment_parts(first, last) equals the tracker's query for those seqs, row for row."""
    path = tmp_path / "runs.duckdb"
    tracker = DuckDBExperimentTracker(path, timeout=10.0)
    for i in range(3):
        _record(tracker, i)
    tracker.close()
    con = duckdb.connect(str(path), read_only=True)
    try:
        for first, last in ((1, 1), (2, 2), (3, 3), (1, 3), (2, 3)):
            by_macro = con.execute(
                "SELECT * FROM qt_experiment_parts(?, ?)", [first, last]
            ).fetchall()
            by_query = con.execute(
                _AUX.format(where="seq BETWEEN ? AND ?"), [first, last] * 4
            ).fetchall()
            assert by_macro == by_query
            assert {row[0] for row in by_macro} == {0, 1, 2, 3}
            assert {row[1] for row in by_macro} == set(range(first, last + 1))
    finally:
        con.close()


def test_runs_read_one_by_one_equal_the_reference(tmp_path: Path) -> None:
    """get_experiment through the macros returns what the in-memory tracker holds."""
    duck = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    memory = InMemoryExperimentTracker()
    for i in range(4):
        _record(duck, i)
        _record(memory, i)
    for expected in memory.list_experiments():
        duck.close()  # each read opens the file afresh, as a CLI call does
        assert _comparable([duck.get_experiment(expected.id)]) == _comparable([expected])


def test_a_schema_3_file_gets_the_macros_and_keeps_its_runs(tmp_path: Path) -> None:
    """Opening a file at schema 3 adds the macros; its runs read back through them."""
    path = tmp_path / "runs.duckdb"
    con = duckdb.connect(str(path))
    assert migrate(con, path, target=3) == 3
    con.execute(
        "INSERT INTO qt_experiments (seq, id, name, strategy, engine, description, attempt, "
        "config_hash, provenance, tags, status, created_at) VALUES "
        "(1, 'old-1', 'old', '', 'python', '', 1, ?, '{}', ['t'], 'pending', "
        "TIMESTAMP '2024-01-01')",
        ["f" * 64],
    )
    con.execute("INSERT INTO qt_params (seq, name, value_num) VALUES (1, 'w', 3)")
    con.close()
    tracker = DuckDBExperimentTracker(path, timeout=10.0)
    old = tracker.get_experiment("old-1")
    assert (old.definition.name, old.params, old.definition.tags) == ("old", {"w": 3}, ("t",))
    tracker.close()
    macros = _rows(
        path,
        "SELECT function_name FROM duckdb_functions() WHERE function_name LIKE 'qt_%' ORDER BY 1",
    )
    assert macros == [("qt_experiment",), ("qt_experiment_parts",)]


def test_a_page_ordered_by_time_equals_the_reference(tmp_path: Path) -> None:
    """Newest-first and oldest-first pages, read in one statement, match the reference."""
    duck = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    memory = InMemoryExperimentTracker()
    for i in range(12):
        _record(duck, i)
        _record(memory, i)
    for query in (
        ExperimentFilter(limit=5),
        ExperimentFilter(limit=5, descending=False),
        ExperimentFilter(limit=100, where="sharpe > 0.3"),
    ):
        got = duck.list_experiments(query)
        assert _comparable(got) == _comparable(memory.list_experiments(query))


_WRITE_ONE = """
import sys
from pathlib import Path
from quantrack.adapters.duckdb import DuckDBExperimentTracker
from quantrack.domain import ExperimentDefinition, ExperimentResults, ExperimentStatus
tracker = DuckDBExperimentTracker(Path(sys.argv[1]), timeout=30.0)
with tracker.session():
    run = tracker.create_experiment(
        ExperimentDefinition(name="other", params={"who": "other"}), experiment_id="other-1"
    )
    tracker.update_status(run.id, ExperimentStatus.RUNNING)
    tracker.store_results(run.id, ExperimentResults(metrics={"only_other": 7.0}))
    tracker.update_status(run.id, ExperimentStatus.COMPLETED)
tracker.close()
"""


def test_what_another_process_wrote_meanwhile_is_not_overwritten(tmp_path: Path) -> None:
    """Runs recorded after another process wrote to the file get their own rows."""
    path = tmp_path / "runs.duckdb"
    tracker = DuckDBExperimentTracker(path, timeout=10.0)
    _record(tracker, 1)
    tracker.close()
    subprocess.run([sys.executable, "-c", _WRITE_ONE, str(path)], check=True, timeout=120)
    _record(tracker, 2)
    other = tracker.get_experiment("other-1")
    assert (other.params, other.metrics) == ({"who": "other"}, {"only_other": 7.0})
    assert tracker.get_experiment("run-002").params["i"] == 2
    best = tracker.list_experiments(ExperimentFilter(order_by="only_other"))
    assert [e.id for e in best][:1] == ["other-1"]  # runs without it come last
    tracker.close()
    assert _rows(path, "SELECT seq FROM qt_experiments ORDER BY seq") == [(1,), (2,), (3,)]


def test_a_file_let_go_of_unchanged_keeps_numbering_on(tmp_path: Path) -> None:
    """Reopening a file nobody else touched continues its numbering without gaps."""
    path = tmp_path / "runs.duckdb"
    tracker = DuckDBExperimentTracker(path, timeout=10.0)
    for i in range(3):
        _record(tracker, i)
        tracker.close()
    seqs = _rows(path, "SELECT seq, id FROM qt_experiments ORDER BY seq")
    assert seqs == [(1, "run-000"), (2, "run-001"), (3, "run-002")]


def test_pages_with_gaps_read_only_their_own_parts(tmp_path: Path) -> None:
    """Pages of every other run (read as one range) and of every third run (read by
    list) hold exactly their own params, metrics, inputs and artifacts.
    """
    duck = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    memory = InMemoryExperimentTracker()
    for i in range(12):
        _record(duck, i)
        _record(memory, i)
    for where in ("b = true", "b = false", "i = 0 or i = 3 or i = 6 or i = 9"):
        query = ExperimentFilter(where=where, limit=10)
        got = duck.list_experiments(query)
        assert len(got) in (4, 6)
        assert _comparable(got) == _comparable(memory.list_experiments(query))
