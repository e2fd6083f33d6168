"""The migration runner: brings a database file to the schema this quantrack expects.

Migrations are the numbered files ``quantrack/sql/NNN_name.sql`` shipped in the package.
Each runs once, in order, inside one transaction with the row that records it in
``quantrack_schema``, so a crash leaves the file at the previous version. A file holding
tables but no ``quantrack_schema`` is someone else's database and is never modified; a
file recorded at a newer version than this quantrack knows raises
:class:`SchemaVersionError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import duckdb

from quantrack.adapters.duckdb._sql import to_db_time
from quantrack.domain import NotAQuantrackDatabase, QuantrackError, SchemaVersionError, StorageError
from quantrack.domain.ids import utcnow

__all__ = [
    "SCHEMA_TABLE",
    "Migration",
    "current_version",
    "latest_version",
    "migrate",
    "migrations",
    "prepare",
]

SCHEMA_TABLE = "quantrack_schema"
_FILE = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered schema change."""

    version: int
    name: str
    sql: str


@cache
def migrations() -> tuple[Migration, ...]:
    """Every shipped migration, in version order."""
    found: list[Migration] = []
    for entry in resources.files("quantrack.sql").iterdir():
        match = _FILE.match(entry.name)
        if match is not None:
            found.append(Migration(int(match["version"]), match["name"], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"quantrack/sql migrations must be numbered 1..n, found {versions}")
    return tuple(found)


def latest_version() -> int:
    """The schema version this quantrack writes."""
    return migrations()[-1].version


def current_version(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """The file's schema version (0 for an empty file).

    Raises :class:`NotAQuantrackDatabase` for a database holding other tables.
    """
    try:
        rows = con.execute(f"SELECT max(version) FROM {SCHEMA_TABLE}").fetchall()
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0
    except duckdb.CatalogException:
        pass  # no schema table: a new file, or someone else's database
    names = {
        row[0]
        for row in con.execute(
            # Only this file's: the engine may have other files attached.
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "UNION ALL SELECT view_name FROM duckdb_views() "
            "WHERE NOT internal AND database_name = current_database()"
        ).fetchall()
    }
    if names:
        shown = ", ".join(sorted(names)[:5])
        raise NotAQuantrackDatabase(
            f"{path} is a DuckDB database but not a quantrack one (it holds {shown}); "
            "it was left untouched: point the workspace somewhere else"
        )
    return 0


def migrate(con: duckdb.DuckDBPyConnection, path: Path, *, target: int | None = None) -> int:
    """Apply the pending migrations up to ``target`` (default: the latest); return the
    version the file is at afterwards.
    """
    supported = latest_version()
    goal = supported if target is None else target
    found = current_version(con, path)
    if found > supported:
        raise SchemaVersionError(str(path), found, supported)
    pending = [m for m in migrations() if found < m.version <= goal]
    if not pending:
        return found
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} "
            "(version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
            "applied_at TIMESTAMP NOT NULL)"
        )
        for migration in pending:
            con.execute(migration.sql)
            con.execute(
                f"INSERT INTO {SCHEMA_TABLE} (version, name, applied_at) VALUES (?, ?, ?)",
                [migration.version, migration.name, to_db_time(utcnow())],
            )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return pending[-1].version


def prepare(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Make a freshly opened connection ready: the file checked and migrated."""
    try:
        migrate(con, path)
    except QuantrackError:
        raise
    except duckdb.Error as exc:
        raise StorageError(f"cannot prepare database {path}: {exc}") from exc
