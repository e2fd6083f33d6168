"""Schema migrations: new files, older files upgraded, newer and foreign files refused."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

from quantrack.adapters.duckdb import DuckDBBatchObserver, DuckDBExperimentTracker
from quantrack.adapters.duckdb.schema import SCHEMA_TABLE, latest_version, migrate, migrations
from quantrack.domain import (
    ExperimentDefinition,
    NotAQuantrackDatabase,
    SchemaVersionError,
    StorageError,
)


def _versions(path: Path) -> list[int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute(f"SELECT version FROM {SCHEMA_TABLE} ORDER BY 1").fetchall()
        return [row[0] for row in rows]
    finally:
        con.close()


def test_migrations_are_numbered_files_in_the_package() -> None:
    """Migrations are read from quantrack/sql, numbered 1..n, each with SQL in it."""
    found = migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "initial"
    # Every migration changes the schema (a later one may only drop what is no longer used).
    assert all(any(verb in m.sql for verb in ("CREATE", "DROP", "ALTER")) for m in found)


def test_new_file_gets_every_migration_once(tmp_path: Path) -> None:
    """A new file is brought to the latest version; reopening applies nothing twice."""
    path = tmp_path / "runs.duckdb"
    tracker = DuckDBExperimentTracker(path)
    tracker.create_experiment(ExperimentDefinition(name="a"))
    tracker.close()
    tracker = DuckDBExperimentTracker(path)
    assert len(tracker.list_experiments()) == 1
    tracker.close()
    assert _versions(path) == list(range(1, latest_version() + 1))


def test_older_file_is_upgraded_keeping_its_data(tmp_path: Path) -> None:
    """A file at schema 1 with data in it is upgraded on open and keeps the data."""
    path = tmp_path / "runs.duckdb"
    con = duckdb.connect(str(path))
    assert migrate(con, path, target=1) == 1
    con.execute(
        "INSERT INTO qt_experiments (seq, id, name, strategy, engine, description, attempt, "
        "config_hash, provenance, tags, status, created_at) VALUES (1, 'old-1', 'old', '', "
        "'python', '', 1, ?, '{}', ['t'], 'pending', TIMESTAMP '2024-01-01')",
        ["0" * 64],
    )
    con.close()
    tracker = DuckDBExperimentTracker(path)
    assert tracker.get_experiment("old-1").definition.tags == ("t",)
    assert tracker.query("SELECT tag FROM experiment_tags")[1] == [("t",)]
    tracker.close()
    assert _versions(path) == list(range(1, latest_version() + 1))


def test_newer_file_is_refused_naming_both_versions(tmp_path: Path) -> None:
    """A file written by a newer quantrack raises SchemaVersionError with both versions."""
    path = tmp_path / "runs.duckdb"
    DuckDBExperimentTracker(path).list_experiments()
    DuckDBExperimentTracker(path).close()
    con = duckdb.connect(str(path))
    future = latest_version() + 7
    con.execute(
        f"INSERT INTO {SCHEMA_TABLE} VALUES (?, 'future', TIMESTAMP '2030-01-01')", [future]
    )
    con.close()
    with pytest.raises(SchemaVersionError) as caught:
        DuckDBExperimentTracker(path).list_experiments()
    assert caught.value.found == future
    assert caught.value.supported == latest_version()
    assert str(future) in str(caught.value)
    assert str(latest_version()) in str(caught.value)


def test_foreign_duckdb_file_is_refused_untouched(tmp_path: Path) -> None:
    """Someone else's DuckDB database raises NotAQuantrackDatabase and keeps every byte."""
    path = tmp_path / "theirs.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE prices AS SELECT range AS day, range * 1.5 AS close FROM range(10)")
    con.close()
    before = path.read_bytes()
    stamp = os.stat(path).st_mtime_ns
    with pytest.raises(NotAQuantrackDatabase, match="prices"):
        DuckDBExperimentTracker(path).list_experiments()
    with pytest.raises(NotAQuantrackDatabase):
        DuckDBBatchObserver(path).list_batches()
    DuckDBExperimentTracker(path).close()
    assert path.read_bytes() == before
    assert os.stat(path).st_mtime_ns == stamp
    assert not path.with_name(path.name + ".wal").exists()


@pytest.mark.parametrize(
    "content",
    [b"hello, I am a text file\n" * 100, bytes(range(256)) * 64, b"DUCK" + b"\x00" * 8000],
)
def test_corrupt_or_random_file_is_refused_untouched(tmp_path: Path, content: bytes) -> None:
    """A random or damaged file raises NotAQuantrackDatabase and is never modified."""
    path = tmp_path / "runs.duckdb"
    path.write_bytes(content)
    with pytest.raises(NotAQuantrackDatabase):
        DuckDBExperimentTracker(path, timeout=1.0).list_experiments()
    assert path.read_bytes() == content


def test_missing_folder_is_a_storage_error(tmp_path: Path) -> None:
    """A database path in a folder that does not exist raises a StorageError, not duckdb's."""
    tracker = DuckDBExperimentTracker(tmp_path / "no" / "such" / "runs.duckdb", timeout=1.0)
    with pytest.raises(StorageError):
        tracker.list_experiments()
