"""The DuckDB adapters' speed paths on real files behave exactly like the plain ones.

One DuckDB engine per process attaches each workspace file for a unit of work; schema 3
drops the indexes no query uses; a fresh id skips its lookup; the bulk path builds its
columns in C-level passes; a page of results is read through the id index. These tests
pin that none of it changes what is stored or returned.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import random
import threading
import time
from pathlib import Path

import duckdb
import pytest

from quantrack.adapters.duckdb import DuckDBExperimentTracker
from quantrack.adapters.duckdb.schema import latest_version, migrate
from quantrack.adapters.memory import InMemoryExperimentTracker
from quantrack.domain import (
    ErrorCategory,
    ExperimentDefinition,
    ExperimentFilter,
    ExperimentNotFound,
    ExperimentResults,
    ExperimentStatus,
    FinishedExperiments,
    NotAQuantrackDatabase,
    SchemaVersionError,
    StorageError,
)

S = ExperimentStatus
T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)


def lifecycle(tracker: DuckDBExperimentTracker, name: str, sharpe: float) -> str:
    """Record one run through its whole lifecycle in one session; return its id."""
    with tracker.session():
        run = tracker.create_experiment(ExperimentDefinition(name=name, params={"w": 1}))
        tracker.update_status(run.id, S.RUNNING)
        tracker.store_results(run.id, ExperimentResults(metrics={"sharpe": sharpe}))
        tracker.update_status(run.id, S.COMPLETED)
    return run.id


# -- one engine, many files --------------------------------------------------------------


def test_two_workspaces_in_one_process_stay_apart(tmp_path: Path) -> None:
    """Files attached to the one engine at the same time never see each other's runs."""
    first = DuckDBExperimentTracker(tmp_path / "a" / "runs.duckdb", timeout=10.0)
    second = DuckDBExperimentTracker(tmp_path / "b" / "runs.duckdb", timeout=10.0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with first.session(), second.session():
        a = lifecycle(first, "in-a", 1.0)
        b = lifecycle(second, "in-b", 2.0)
        assert [e.id for e in first.list_experiments()] == [a]
        assert [e.id for e in second.list_experiments()] == [b]
    with pytest.raises(ExperimentNotFound):
        first.get_experiment(b)
    assert second.get_experiment(b).metrics == {"sharpe": 2.0}


def test_a_new_file_is_created_while_a_quantrack_file_is_attached(tmp_path: Path) -> None:
    """Another file's tables in the engine do not make a new file look like a foreign one."""
    held = DuckDBExperimentTracker(tmp_path / "held.duckdb", timeout=10.0)
    fresh = DuckDBExperimentTracker(tmp_path / "fresh.duckdb", timeout=10.0)
    with held.session():
        lifecycle(held, "held", 1.0)
        run_id = lifecycle(fresh, "fresh", 3.0)
    assert fresh.get_experiment(run_id).definition.name == "fresh"
    fresh.close()
    held.close()
    con = duckdb.connect(str(tmp_path / "fresh.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT max(version) FROM quantrack_schema").fetchall() == [
            (latest_version(),)
        ]
    finally:
        con.close()


def test_a_released_file_is_free_and_checkpointed(tmp_path: Path) -> None:
    """After close the file opens in a plain DuckDB connection, its log folded into it."""
    path = tmp_path / "runs.duckdb"
    tracker = DuckDBExperimentTracker(path, timeout=10.0)
    run_id = lifecycle(tracker, "one", 1.5)
    tracker.close()
    assert not path.with_name(path.name + ".wal").exists()
    con = duckdb.connect(str(path))
    try:
        assert con.execute("SELECT id FROM experiments").fetchall() == [(run_id,)]
    finally:
        con.close()
    assert tracker.get_experiment(run_id).status is S.COMPLETED


def _record_in_child(path: str, name: str) -> None:
    tracker = DuckDBExperimentTracker(Path(path), timeout=20.0)
    lifecycle(tracker, name, 4.0)
    tracker.close()


def test_a_forked_child_opens_files_with_an_engine_of_its_own(tmp_path: Path) -> None:
    """A child forked after its parent used the engine records with an engine of its own."""
    path = tmp_path / "runs.duckdb"
    tracker = DuckDBExperimentTracker(path, timeout=10.0)
    parent_run = lifecycle(tracker, "parent", 1.0)
    # DuckDB keeps a process-wide list of attached files, which a child inherits: a file
    # its parent holds at the fork cannot be attached in the child, so let go first.
    tracker.close()
    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=_record_in_child, args=(str(path), "child-same-file")),
        context.Process(
            target=_record_in_child, args=(str(tmp_path / "other.duckdb"), "child-other-file")
        ),
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    names = sorted(e.definition.name for e in tracker.list_experiments())
    assert names == ["child-same-file", "parent"]
    assert tracker.get_experiment(parent_run).metrics == {"sharpe": 1.0}
    other = DuckDBExperimentTracker(tmp_path / "other.duckdb", timeout=10.0)
    assert [e.definition.name for e in other.list_experiments()] == ["child-other-file"]


def _release_threads(path: Path) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"quantrack-release-{path.name}"]


def test_the_file_is_let_go_after_each_idle_window_by_one_thread(tmp_path: Path) -> None:
    """The thread that lets go of an idle file sleeps until the next opening, not exits."""
    path = tmp_path / "idle.duckdb"
    tracker = DuckDBExperimentTracker(path, timeout=10.0)
    for round_ in range(3):
        lifecycle(tracker, f"round-{round_}", 1.0)
        deadline = time.monotonic() + 5.0
        while True:
            try:
                con = duckdb.connect(str(path))
            except duckdb.Error:
                assert time.monotonic() < deadline, "the idle file was never let go of"
                time.sleep(0.02)
                continue
            con.close()
            break
        assert len(_release_threads(path)) == 1
    assert len(tracker.list_experiments()) == 3


# -- the schema check skipped for an unchanged file ---------------------------------------


def test_a_file_migrated_meanwhile_by_a_newer_quantrack_is_refused(tmp_path: Path) -> None:
    """A newer version recorded while the file was let go of is noticed on the next call."""
    path = tmp_path / "runs.duckdb"
    tracker = DuckDBExperimentTracker(path, timeout=10.0)
    run_id = lifecycle(tracker, "before", 1.0)
    tracker.close()
    assert tracker.get_experiment(run_id).definition.name == "before"  # unchanged: no check
    tracker.close()
    con = duckdb.connect(str(path))
    con.execute(
        "INSERT INTO quantrack_schema VALUES (?, 'from_the_future', now()::TIMESTAMP)",
        [latest_version() + 1],
    )
    con.close()
    with pytest.raises(SchemaVersionError, match=str(latest_version() + 1)):
        tracker.get_experiment(run_id)


def test_a_file_replaced_meanwhile_is_checked_again(tmp_path: Path) -> None:
    """Another database moved over the file while it was let go of is refused, untouched."""
    path = tmp_path / "runs.duckdb"
    tracker = DuckDBExperimentTracker(path, timeout=10.0)
    lifecycle(tracker, "before", 1.0)
    tracker.close()
    foreign = tmp_path / "foreign.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE prices (day DATE, close DOUBLE)")
    con.close()
    os.replace(foreign, path)
    with pytest.raises(NotAQuantrackDatabase, match="prices"):
        tracker.list_experiments()
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
    finally:
        con.close()
    assert tables == [("prices",)]


# -- schema 3 --------------------------------------------------------------------------------


def _indexes(path: Path) -> set[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {row[0] for row in con.execute("SELECT index_name FROM duckdb_indexes()").fetchall()}
    finally:
        con.close()


def test_schema_3_drops_the_unused_indexes_and_keeps_the_data(tmp_path: Path) -> None:
    """A file at schema 2 loses the three unused indexes on open; its runs are intact."""
    path = tmp_path / "runs.duckdb"
    con = duckdb.connect(str(path))
    assert migrate(con, path, target=2) == 2
    con.execute(
        "INSERT INTO qt_experiments (seq, id, name, strategy, engine, description, attempt, "
        "config_hash, git_commit, batch_id, provenance, tags, status, created_at) VALUES "
        "(1, 'old-1', 'old', '', 'python', '', 1, ?, 'abc123', 'b1', '{}', ['t'], 'pending', "
        "TIMESTAMP '2024-01-01')",
        ["f" * 64],
    )
    con.close()
    assert {
        "qt_experiments_created_at",
        "qt_experiments_git_commit",
        "qt_experiments_batch_id",
    } <= _indexes(path)
    tracker = DuckDBExperimentTracker(path, timeout=10.0)
    for query in (
        ExperimentFilter(config_hash="f" * 64),
        ExperimentFilter(git_commit="abc123"),
        ExperimentFilter(batch_id="b1"),
        ExperimentFilter(created_after=dt.datetime(2023, 12, 31, tzinfo=dt.UTC)),
    ):
        assert [e.id for e in tracker.list_experiments(query)] == ["old-1"]
    tracker.close()
    assert _indexes(path) == {"qt_experiments_config_hash", "qt_inputs_artifact_id"}


# -- a fresh id skips its lookup -----------------------------------------------------------


def test_a_colliding_fresh_id_is_refused_at_commit_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary key still guards fresh ids: a collision fails the whole unit of work."""
    tracker = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    taken = lifecycle(tracker, "first", 1.0)
    monkeypatch.setattr("quantrack.domain.lifecycle.new_id", lambda: taken)

    def colliding_session() -> None:
        with tracker.session():
            tracker.create_experiment(ExperimentDefinition(name="second"))
            tracker.create_experiment(ExperimentDefinition(name="third"), experiment_id="own-id")

    with pytest.raises(StorageError, match=r"runs\.duckdb"):
        colliding_session()
    assert [(e.id, e.definition.name) for e in tracker.list_experiments()] == [(taken, "first")]


def test_fresh_ids_in_one_session_are_all_stored(tmp_path: Path) -> None:
    """Many runs created with fresh ids in one session are each stored once, in order."""
    tracker = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    with tracker.session():
        ids = [tracker.create_experiment(ExperimentDefinition(name=f"r{i}")).id for i in range(50)]
    stored = tracker.list_experiments(ExperimentFilter(descending=False))
    assert [e.id for e in stored] == ids


# -- the bulk path's columns ----------------------------------------------------------------


def _varied(rows: int) -> FinishedExperiments:
    """Rows whose params share their count but not their names, with varied outcomes."""
    shapes = [
        lambda i: {"a": i, "b": f"x{i}"},
        lambda i: {"a": i * 0.5, "c": i % 2 == 0},
        lambda i: {"b": f"y{i}", "c": None},
    ]
    statuses = [S.COMPLETED, S.FAILED, S.CANCELLED]
    return FinishedExperiments(
        template=ExperimentDefinition(name="varied", strategy="mix"),
        ids=tuple(f"v{i:04d}" for i in range(rows)),
        params=tuple(shapes[i % 3](i) for i in range(rows)),
        metrics={"sharpe": tuple(None if i % 4 == 0 else i / 10 for i in range(rows))},
        status=tuple(statuses[i % 3] for i in range(rows)),
        created_at=tuple(T0 + dt.timedelta(seconds=i) for i in range(rows)),
        started_at=tuple(None if i % 6 == 2 else T0 + dt.timedelta(seconds=i) for i in range(rows)),
        completed_at=tuple(T0 + dt.timedelta(seconds=i + 1) for i in range(rows)),
        errors=tuple("boom" if i % 3 == 1 else None for i in range(rows)),
        error_categories=tuple(
            ErrorCategory.DATA_ERROR if i % 3 == 1 else None for i in range(rows)
        ),
    )


def test_bulk_rows_of_one_size_with_different_names_read_back_exactly(tmp_path: Path) -> None:
    """Params, outcomes and per-row times of a mixed bulk equal what the reference stores."""
    duck = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    memory = InMemoryExperimentTracker()
    records = _varied(30)
    duck.record_finished(records)
    memory.record_finished(records)
    assert duck.list_experiments() == memory.list_experiments()
    assert duck.get_experiment("v0002").definition.params == {"b": "y2", "c": None}


def test_bulk_rows_sharing_names_read_back_exactly(tmp_path: Path) -> None:
    """A sweep whose rows share their param names, status and times reads back exactly."""
    duck = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    memory = InMemoryExperimentTracker()
    rows = 40
    records = FinishedExperiments(
        template=ExperimentDefinition(name="sweep", tags=("grid",)),
        ids=tuple(f"s{i:04d}" for i in range(rows)),
        params=tuple(
            {"fast": i, "ratio": i / 3, "symbol": f"S{i % 4}", "long": i % 2 == 0, "w": [i, 1]}
            for i in range(rows)
        ),
        metrics={"sharpe": tuple(i / 7 for i in range(rows))},
        status=S.COMPLETED,
        created_at=T0,
        started_at=T0,
        completed_at=T0 + dt.timedelta(seconds=3),
    )
    duck.record_finished(records)
    memory.record_finished(records)
    assert duck.list_experiments() == memory.list_experiments()


# -- a page of results ------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 10, 100, 101])
@pytest.mark.parametrize("descending", [True, False])
def test_a_page_of_top_runs_equals_the_reference(
    tmp_path: Path, limit: int, descending: bool
) -> None:
    """A filtered, metric-ordered page over thousands of runs equals the reference's."""
    rng = random.Random(limit)
    rows = 3_000
    records = FinishedExperiments(
        template=ExperimentDefinition(name="sweep", strategy="sma"),
        ids=tuple(f"{rng.getrandbits(64):016x}{i:016x}" for i in range(rows)),
        params=tuple({"fast": i % 50} for i in range(rows)),
        # Ties in the ordering metric are broken by id, in the same direction.
        metrics={
            "sharpe": tuple(round(rng.gauss(0, 1), 1) for _ in range(rows)),
            "cagr": tuple(rng.random() for _ in range(rows)),
        },
        status=S.COMPLETED,
        created_at=T0,
        started_at=T0,
        completed_at=T0,
    )
    duck = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    memory = InMemoryExperimentTracker()
    duck.record_finished(records)
    memory.record_finished(records)
    duck.close()  # read from the file, as a new process would
    query = ExperimentFilter(
        where="sharpe > 0.5 and fast < 40",
        strategy="sma",
        order_by="sharpe",
        descending=descending,
        limit=limit,
    )
    assert duck.list_experiments(query) == memory.list_experiments(query)
