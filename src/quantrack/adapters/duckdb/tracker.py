"""The :class:`~quantrack.ports.ExperimentTracker` on a DuckDB database file."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import duckdb

from quantrack.adapters.duckdb._sql import (
    compile_filter,
    decode_param,
    encode_param,
    from_db_time,
    to_db_time,
)
from quantrack.adapters.duckdb.connection import database_for, translate
from quantrack.adapters.duckdb.schema import prepare
from quantrack.domain import (
    ArtifactRef,
    DuplicateExperiment,
    ErrorCategory,
    Experiment,
    ExperimentDefinition,
    ExperimentFilter,
    ExperimentNotFound,
    ExperimentResults,
    ExperimentStatus,
    FinishedExperiments,
    InvalidFilter,
    Provenance,
    StorageError,
)
from quantrack.domain.lifecycle import (
    attach_results,
    log_transition,
    new_experiment,
    stamp_heartbeat,
    transition,
)

__all__ = ["DuckDBExperimentTracker"]

_COLUMNS = (
    "seq, id, name, strategy, engine, description, seed, batch_id, batch_index, attempt, "
    "retry_of, reproduces, reused_from, config_hash, git_commit, provenance, tags, status, "
    "created_at, started_at, completed_at, heartbeat_at, error, error_category"
)
_E_COLUMNS = ", ".join(f"e.{c.strip()}" for c in _COLUMNS.split(","))
_QUERY_ERRORS = (
    duckdb.ParserException,
    duckdb.BinderException,
    duckdb.CatalogException,
    duckdb.InvalidInputException,
    duckdb.ConversionException,
    duckdb.PermissionException,
)
_MIN_PREFIX = 4
# A page of up to this many experiments is found first, then read through the id index.
_IN_LIST_LIMIT = 100
# Rows per DuckDB row group (its default), the unit its zone maps skip.
_ROW_GROUP_ROWS = 122_880
# Seqs spanning less than this many times their number are read as one range (the rows
# of the others in it are dropped): a page of neighbours costs a short statement.
_DENSE = 2
# Ids created in the current unit of work and not written yet, in creation order (the
# connection's cache, which holds their latest state, keys them by id too; a tuple key
# cannot collide with an id, which is a string).
_NEW = ("quantrack", "tracker.new")
# Rows per multi-row INSERT, so one statement never binds an unbounded parameter list.
_ROWS_PER_INSERT = 500
# Keys of Database.held: the next free seq, and metric names known to be stored.
_NEXT_SEQ = "quantrack.tracker.next_seq"
_NAMES = "quantrack.tracker.metric_names"


class DuckDBExperimentTracker:
    """Experiments in a DuckDB file, shared safely between threads and processes.

    The file is opened for a unit of work and let go of soon after (see
    :mod:`quantrack.adapters.duckdb.connection`); a file busy in another process is
    retried for up to ``timeout`` seconds, then :class:`WorkspaceBusy` is raised.
    """

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        self._path = Path(path)
        self._timeout = timeout
        self._db = database_for(self._path)
        self._db.set_prepare(lambda con: prepare(con, self._db.path))

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    # -- units of work -----------------------------------------------------------------

    @contextmanager
    def _unit(self, *, flush: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection for one call; with ``flush``, experiments created earlier in the
        unit of work are written first, so the call's SQL sees them.
        """
        try:
            with self._db.unit(self._timeout) as con:
                if flush:
                    self._flush(con)
                yield con
        except duckdb.Error as exc:
            # A failed write may leave the connection unusable; the next unit reopens.
            self._db.release()
            raise translate(exc, self._db.path) from exc

    def session(self) -> AbstractContextManager[None]:
        """Hold the database connection for the ``with`` block (nestable)."""
        return self._session()

    @contextmanager
    def _session(self) -> Iterator[None]:
        with self._unit():
            yield

    @property
    def timeout(self) -> float:
        """Seconds a call waits for the file while another process holds it."""
        return self._timeout

    def close(self) -> None:
        """Let go of the database file now (it is reopened on the next call)."""
        self._db.release()

    def _created(self) -> dict[str, None]:
        """Ids created in this unit of work and not yet written (they are written, in
        their latest state, just before the unit commits).
        """
        new: dict[str, None] | None = self._db.cache.get(_NEW)
        if new is None:
            new = self._db.cache[_NEW] = {}
            self._db.before_commit(lambda con: self._write_created(con, new))
        return new

    def _write_created(self, con: duckdb.DuckDBPyConnection, new: dict[str, None]) -> None:
        if new:
            _insert_experiments(
                con, [self._db.cache[experiment_id] for experiment_id in new], self._known()
            )
            new.clear()

    def _known(self) -> set[str]:
        """Metric names known to be stored while this connection holds the file."""
        known: set[str] = self._db.held.setdefault(_NAMES, set())
        return known

    def _flush(self, con: duckdb.DuckDBPyConnection) -> None:
        new: dict[str, None] | None = self._db.cache.get(_NEW)
        if new:
            self._write_created(con, new)

    def _unwritten(self, experiment_id: str) -> bool:
        """True for an experiment created in this unit of work and not written yet:
        nobody else can see it, so a change to it is a change to the cached copy only.
        """
        new: dict[str, None] | None = self._db.cache.get(_NEW)
        return new is not None and experiment_id in new

    def _load(self, con: duckdb.DuckDBPyConnection, experiment_id: str) -> tuple[int, Experiment]:
        cached: tuple[int, Experiment] | None = self._db.cache.get(experiment_id)
        if cached is None:
            cached = _load_one(con, experiment_id)
            self._db.cache[experiment_id] = cached
        return cached

    # -- the port ----------------------------------------------------------------------

    def create_experiment(
        self, definition: ExperimentDefinition, *, experiment_id: str | None = None
    ) -> Experiment:
        """Store a new pending experiment and return it."""
        experiment = new_experiment(definition, experiment_id=experiment_id)
        # An id chosen by the caller may be taken; a fresh one cannot be (74 random bits
        # per millisecond), so the lookup is skipped for it, saving a statement in a
        # unit of work of five. The primary key still refuses a duplicate at commit.
        check = experiment_id is not None
        with self._unit(flush=False) as con:
            new = self._created()
            seq = self._db.held.get(_NEXT_SEQ)
            taken = 0
            if seq is None:
                taken, seq = con.execute(
                    "SELECT (SELECT count(*) FROM qt_experiments WHERE id = ?), "
                    "(SELECT coalesce(max(seq), 0) + 1 FROM qt_experiments)",
                    [experiment.id],
                ).fetchall()[0]
            elif check:
                taken = con.execute(
                    "SELECT count(*) FROM qt_experiments WHERE id = ?", [experiment.id]
                ).fetchall()[0][0]
            if taken or experiment.id in new:
                raise DuplicateExperiment(experiment.id)
            if new:
                seq = max(seq, self._db.cache[next(reversed(new))][0] + 1)
            self._db.held[_NEXT_SEQ] = seq + 1
            # Written when the unit commits, in the state it has reached by then: a run
            # recorded in one session costs one INSERT per table instead of ~10 statements.
            self._db.cache[experiment.id] = (seq, experiment)
            new[experiment.id] = None
        return experiment

    def get_experiment(self, experiment_id: str) -> Experiment:
        """Return the experiment with this id."""
        with self._unit(flush=False) as con:
            return self._load(con, experiment_id)[1]

    def list_experiments(self, filter: ExperimentFilter | None = None) -> list[Experiment]:
        """Return the experiments that pass ``filter``, in its order."""
        query = filter or ExperimentFilter()
        with self._unit() as con:
            # Metric names are only needed to resolve a where clause or a metric order.
            plain = query.where is None and query.order_by == "created_at"
            names = set() if plain else _metric_names(con)
            if query.order_by != "created_at" and query.order_by not in names:
                raise InvalidFilter(
                    f"cannot order by {query.order_by!r}: no stored run has that metric "
                    f"(known: {', '.join(sorted(names)) or 'none'})"
                )
            ordered = None if query.order_by == "created_at" else query.order_by
            where, params = compile_filter(query, names, ordered)
            direction = "DESC" if query.descending else "ASC"
            # A short page ordered by a metric is found by id first, so the sort carries
            # one key per row, and its rows are read afterwards through the id index: a
            # list of seqs spread over the table would be matched against every row
            # instead (top-10 of 1,000,000: 56 ms, 113 ms in one statement). Ordered by
            # time, one statement is faster: DuckDB sorts the keys and fetches the other
            # columns of the page only (18 ms against 22 ms, and a statement fewer for a
            # reader such as `quantrack runs list`).
            paged = (
                query.limit is not None
                and query.limit <= _IN_LIST_LIMIT
                and query.order_by != "created_at"
            )
            columns = "e.id" if paged else _E_COLUMNS
            if query.order_by == "created_at":
                sql = (
                    f"SELECT {columns} FROM qt_experiments AS e WHERE {where} "
                    f"ORDER BY e.created_at {direction}, e.id {direction}"
                )
            else:
                sql = (
                    f"SELECT {columns} FROM qt_experiments AS e "
                    "LEFT JOIN (SELECT seq, value FROM qt_metrics WHERE name = ?) AS o "
                    f"ON o.seq = e.seq WHERE {where} "
                    f"ORDER BY o.value {direction} NULLS LAST, e.id {direction}"
                )
                params = [query.order_by, *params]
            if query.limit is not None:
                sql += " LIMIT ?"
                params.append(query.limit)
            rows = con.execute(sql, params).fetchall()
            if paged and rows:
                ids = [row[0] for row in rows]
                found = {
                    row[1]: row
                    for row in con.execute(
                        f"SELECT {_COLUMNS} FROM qt_experiments WHERE id IN "
                        f"({', '.join('?' for _ in ids)})",
                        ids,
                    ).fetchall()
                }
                rows = [found[experiment_id] for experiment_id in ids]
            return _assemble(con, rows)

    def update_status(
        self,
        experiment_id: str,
        status: ExperimentStatus,
        *,
        error: str | None = None,
        error_category: ErrorCategory | None = None,
    ) -> Experiment:
        """Move the experiment to ``status`` under the lifecycle rules."""
        with self._unit(flush=False) as con:
            seq, before = self._load(con, experiment_id)
            after = transition(before, status, error=error, error_category=error_category)
            if self._unwritten(experiment_id):
                self._db.cache[experiment_id] = (seq, after)
                log_transition(before.status.value, after)
                return after
            changed = con.execute(
                "UPDATE qt_experiments SET status = ?, started_at = ?, completed_at = ?, "
                "error = ?, error_category = ? WHERE id = ? AND status = ?",
                [
                    after.status.value,
                    to_db_time(after.started_at),
                    to_db_time(after.completed_at),
                    after.error,
                    after.error_category.value if after.error_category else None,
                    experiment_id,
                    before.status.value,
                ],
            ).fetchall()
            if not changed or changed[0][0] != 1:
                # Someone moved it first: re-apply the rule to what is stored now.
                self._db.cache.pop(experiment_id, None)
                transition(self._load(con, experiment_id)[1], status, error=error)
                raise StorageError(f"experiment {experiment_id} changed while being updated")
            self._db.cache[experiment_id] = (seq, after)
        log_transition(before.status.value, after)
        return after

    def store_results(self, experiment_id: str, results: ExperimentResults) -> Experiment:
        """Merge results into a running experiment."""
        with self._unit(flush=False) as con:
            seq, before = self._load(con, experiment_id)
            after = attach_results(before, results)
            if self._unwritten(experiment_id):
                self._db.cache[experiment_id] = (seq, after)
                return after
            if results.metrics:
                names = sorted(results.metrics)
                # Only names the run already has need their old row removed.
                replaced = [name for name in names if name in before.metrics]
                if replaced:
                    con.execute(
                        f"DELETE FROM qt_metrics WHERE seq = ? AND name IN "
                        f"({', '.join('?' for _ in replaced)})",
                        [seq, *replaced],
                    )
                _insert_rows(
                    con, "qt_metrics", [[seq, name, results.metrics[name]] for name in names]
                )
                _add_metric_names(con, names, self._known())
            new_refs = after.artifacts[len(before.artifacts) :]
            _insert_rows(
                con,
                "qt_artifacts",
                [
                    [seq, len(before.artifacts) + i, *_ref_values(ref)]
                    for i, ref in enumerate(new_refs)
                ],
            )
            self._db.cache[experiment_id] = (seq, after)
        return after

    def heartbeat(self, experiment_id: str) -> Experiment:
        """Stamp a running experiment as alive now."""
        with self._unit(flush=False) as con:
            seq, before = self._load(con, experiment_id)
            after = stamp_heartbeat(before)
            if self._unwritten(experiment_id):
                self._db.cache[experiment_id] = (seq, after)
                return after
            con.execute(
                "UPDATE qt_experiments SET heartbeat_at = ? WHERE id = ? AND status = 'running'",
                [to_db_time(after.heartbeat_at), experiment_id],
            )
            self._db.cache[experiment_id] = (seq, after)
        return after

    def find_by_input_artifacts(self, artifact_ids: Iterable[str]) -> list[Experiment]:
        """Experiments that used any of these inputs, newest first."""
        wanted = sorted(set(artifact_ids))
        if not wanted:
            return []
        with self._unit() as con:
            rows = con.execute(
                f"SELECT {_E_COLUMNS} FROM qt_experiments AS e WHERE e.seq IN "
                "(SELECT seq FROM qt_inputs WHERE artifact_id IN "
                f"({', '.join('?' for _ in wanted)})) "
                "ORDER BY e.created_at DESC, e.id DESC",
                wanted,
            ).fetchall()
            return _assemble(con, rows)

    def record_finished(self, records: FinishedExperiments) -> list[str]:
        """Store many finished experiments in one transaction, all or none."""
        if len(records) == 0:
            return []
        # numpy costs ~100 ms to import; only the bulk path needs it, so reading a
        # workspace (the CLI) never loads it.
        from quantrack.adapters.duckdb._bulk import insert_finished

        with self._unit() as con:
            self._db.held.pop(_NEXT_SEQ, None)
            insert_finished(con, _next_seq(con), records)
        return list(records.ids)

    def delete_experiment(self, experiment_id: str) -> None:
        """Remove an experiment and its params, metrics and lineage."""
        with self._unit() as con:
            seq = _seq_of(con, experiment_id)
            if seq is None:
                raise ExperimentNotFound(experiment_id)
            self._db.cache.pop(experiment_id, None)
            self._db.held.pop(_NAMES, None)
            names = [
                row[0]
                for row in con.execute(
                    "SELECT name FROM qt_metrics WHERE seq = ?", [seq]
                ).fetchall()
            ]
            for table in ("qt_params", "qt_metrics", "qt_inputs", "qt_artifacts"):
                con.execute(f"DELETE FROM {table} WHERE seq = ?", [seq])
            con.execute("DELETE FROM qt_experiments WHERE seq = ?", [seq])
            if names:
                con.execute(
                    "DELETE FROM qt_metric_names WHERE name IN "
                    f"({', '.join('?' for _ in names)}) AND name NOT IN "
                    "(SELECT DISTINCT name FROM qt_metrics)",
                    names,
                )

    # -- for the command line ----------------------------------------------------------

    def experiment_ids_by_prefix(self, prefix: str) -> list[str]:
        """Every stored id starting with ``prefix``, sorted."""
        with self._unit() as con:
            rows = con.execute(
                "SELECT id FROM qt_experiments WHERE starts_with(id, ?) ORDER BY id", [prefix]
            ).fetchall()
        return [row[0] for row in rows]

    def resolve_prefix(self, prefix: str) -> str:
        """The one stored id that is ``prefix`` or starts with it.

        Raises :class:`InvalidFilter` for a prefix shorter than 4 characters or one that
        several ids share (listing them), :class:`ExperimentNotFound` when none has it.
        """
        if len(prefix) < _MIN_PREFIX:
            raise InvalidFilter(
                f"id prefix {prefix!r} is too short; give at least {_MIN_PREFIX} characters"
            )
        candidates = self.experiment_ids_by_prefix(prefix)
        if prefix in candidates:
            return prefix
        if not candidates:
            raise ExperimentNotFound(prefix)
        if len(candidates) > 1:
            shown = ", ".join(candidates[:10]) + (" ..." if len(candidates) > 10 else "")
            raise InvalidFilter(
                f"id prefix {prefix!r} matches {len(candidates)} experiments ({shown}); "
                "give more characters"
            )
        return candidates[0]

    def query(self, sql: str) -> tuple[list[str], list[tuple[object, ...]]]:
        """Run ``sql`` read-only over the documented views; return column names and rows.

        Raises :class:`InvalidFilter` with DuckDB's message when the SQL is wrong or
        tries to write, :class:`StorageError` for other database failures.
        """
        with self._unit():
            pass  # create or upgrade the file first: a read-only connection cannot
        try:
            with self._db.read_only(self._timeout) as con:
                result = con.execute(sql)
                if result.description is None:
                    return [], []
                columns = [d[0] for d in result.description]
                return columns, [tuple(row) for row in result.fetchall()]
        except _QUERY_ERRORS as exc:
            raise InvalidFilter(f"query failed: {exc}") from exc
        except duckdb.Error as exc:
            raise StorageError(f"query failed: {exc}") from exc


# -- helpers (all run inside a unit of work) -------------------------------------------


def _next_seq(con: duckdb.DuckDBPyConnection) -> int:
    # The file is held by one process and its connection by one thread at a time, so
    # max + 1 inside the transaction cannot be taken twice.
    rows = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM qt_experiments").fetchall()
    return int(rows[0][0])


def _seq_of(con: duckdb.DuckDBPyConnection, experiment_id: str) -> int | None:
    rows = con.execute("SELECT seq FROM qt_experiments WHERE id = ?", [experiment_id]).fetchall()
    return int(rows[0][0]) if rows else None


def _metric_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in con.execute("SELECT name FROM qt_metric_names").fetchall()}


def _add_metric_names(
    con: duckdb.DuckDBPyConnection, names: Sequence[str], known: set[str]
) -> None:
    """Add the names not yet in ``qt_metric_names``; ``known`` (names already stored) saves
    the statement when nothing is new, and learns the names added.
    """
    wanted = sorted(set(names) - known)
    if wanted:
        con.execute(
            "INSERT INTO qt_metric_names SELECT name FROM (VALUES "
            f"{', '.join('(?)' for _ in wanted)}) AS t(name) "
            "WHERE name NOT IN (SELECT name FROM qt_metric_names)",
            wanted,
        )
        known.update(wanted)


def _insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: list[list[object]]) -> None:
    """One multi-row INSERT (``executemany`` would run one statement per row).

    Plain statements on purpose (measured with DuckDB 2.0; the figures are in
    docs/storage.md): parsing is ~10% of an INSERT, the rest is binding, planning and appending
    per column. SQL ``EXECUTE`` takes no bound parameters (a Binder Error), so a
    prepared INSERT needs its values as literals, which was slower (1.05 ms against
    0.81 ms for a run's row); the appender was slower still (its flush is a statement).
    """
    if rows:
        marks = f"({', '.join('?' for _ in rows[0])})"
        con.execute(
            f"INSERT INTO {table} VALUES {', '.join(marks for _ in rows)}",
            [value for row in rows for value in row],
        )


def _ref_values(ref: ArtifactRef) -> list[object]:
    return [ref.id, ref.size, ref.media_type, ref.kind, ref.name, ref.part]


def _insert_experiments(
    con: duckdb.DuckDBPyConnection,
    experiments: Sequence[tuple[int, Experiment]],
    known: set[str],
) -> None:
    """Insert experiments with their params, metrics, lineage and artifacts: one
    multi-row INSERT per table.
    """
    rows: dict[str, list[list[object]]] = {
        "qt_experiments": [],
        "qt_params": [],
        "qt_metrics": [],
        "qt_inputs": [],
        "qt_artifacts": [],
    }
    names: set[str] = set()
    for seq, e in experiments:
        d = e.definition
        rows["qt_experiments"].append(
            [
                seq,
                e.id,
                d.name,
                d.strategy,
                d.engine,
                d.description,
                d.seed,
                d.batch_id,
                d.batch_index,
                d.attempt,
                d.retry_of,
                d.reproduces,
                d.reused_from,
                d.config_hash,
                d.provenance.git_commit,
                d.provenance.model_dump_json(),
                list(d.tags),
                e.status.value,
                to_db_time(e.created_at),
                to_db_time(e.started_at),
                to_db_time(e.completed_at),
                to_db_time(e.heartbeat_at),
                e.error,
                e.error_category.value if e.error_category else None,
            ]
        )
        rows["qt_params"] += [[seq, n, *encode_param(v)] for n, v in d.params.items()]
        rows["qt_metrics"] += [[seq, n, v] for n, v in sorted(e.metrics.items())]
        names.update(e.metrics)
        rows["qt_inputs"] += [[seq, e.id, i, *_ref_values(r)] for i, r in enumerate(d.inputs)]
        rows["qt_artifacts"] += [[seq, i, *_ref_values(r)] for i, r in enumerate(e.artifacts)]
    for table, table_rows in rows.items():
        for start in range(0, len(table_rows), _ROWS_PER_INSERT):
            _insert_rows(con, table, table_rows[start : start + _ROWS_PER_INSERT])
    _add_metric_names(con, sorted(names), known)


def _load_one(con: duckdb.DuckDBPyConnection, experiment_id: str) -> tuple[int, Experiment]:
    # Through the macros of schema 4, which DuckDB does not parse again on every call.
    rows = con.execute("SELECT * FROM qt_experiment(?)", [experiment_id]).fetchall()
    if not rows:
        raise ExperimentNotFound(experiment_id)
    return int(rows[0][0]), _assemble(con, rows)[0]


# Params, metrics, inputs and artifacts of the experiments matching `where`. The macro
# `qt_experiment_parts` (sql/004) is this query for a range of seqs, with the same columns.
_AUX = (
    "SELECT 0 AS k, seq, 0 AS pos, name, value_num AS num, value_text AS text, "
    "value_bool AS flag, value_json AS raw, NULL::VARCHAR AS artifact_id, NULL::BIGINT AS size, "
    "NULL::VARCHAR AS media_type, NULL::VARCHAR AS kind, NULL::VARCHAR AS part "
    "FROM qt_params WHERE {where} "
    "UNION ALL SELECT 1, seq, 0, name, value, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL "
    "FROM qt_metrics WHERE {where} "
    "UNION ALL SELECT 2, seq, position, name, NULL, NULL, NULL, NULL, artifact_id, size, "
    "media_type, kind, part FROM qt_inputs WHERE {where} "
    "UNION ALL SELECT 3, seq, position, name, NULL, NULL, NULL, NULL, artifact_id, size, "
    "media_type, kind, part FROM qt_artifacts WHERE {where} "
    "ORDER BY k, seq, pos, name"
)


def _aux_rows(con: duckdb.DuckDBPyConnection, seqs: list[int]) -> list[tuple[Any, ...]]:
    """Params, metrics, inputs and artifacts of these experiments, in one query."""
    low, high = min(seqs), max(seqs)
    if high - low < _DENSE * len(seqs):
        # One run, or neighbours such as the latest page: the seq range holds few others,
        # and a constant range lets DuckDB skip every row group outside it (zone maps).
        # The macro (schema 4) is this query for a range, parsed once when it was created.
        rows = con.execute("SELECT * FROM qt_experiment_parts(?, ?)", [low, high]).fetchall()
        if high - low + 1 == len(seqs):
            return rows
        wanted = set(seqs)
        return [row for row in rows if row[1] in wanted]
    if len(seqs) <= _IN_LIST_LIMIT and high - low < _ROW_GROUP_ROWS:
        # Neighbouring runs (the latest ones, one batch) share a row group or two, which
        # a constant list filters directly (a third faster than the semi-join below).
        where = f"seq IN ({', '.join('?' for _ in seqs)})"
        return con.execute(_AUX.format(where=where), seqs * 4).fetchall()
    # A semi-join with a bound list: DuckDB pushes its few keys into the scan as a filter,
    # so only matching rows are read (a constant IN list is matched against every row of
    # every row group it touches: 4x slower for a page of 10 runs among 1,000,000). The
    # range lets DuckDB skip row groups outside the wanted seqs; a bound list also keeps
    # the query free of pandas/pyarrow (a registered Arrow table makes DuckDB import pandas).
    where = "seq BETWEEN ? AND ? AND seq IN (SELECT unnest(?::BIGINT[]))"
    return con.execute(_AUX.format(where=where), [low, high, seqs] * 4).fetchall()


def _refs(rows: list[tuple[Any, ...]]) -> tuple[ArtifactRef, ...]:
    # Aux rows: k, seq, pos, name, num, text, flag, raw, artifact_id, size, media_type,
    # kind, part.
    return tuple(
        ArtifactRef(id=r[8], size=r[9], media_type=r[10], kind=r[11], name=r[3], part=r[12])
        for r in rows
    )


def _assemble(con: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]]) -> list[Experiment]:
    """Experiments from ``qt_experiments`` rows (in ``_COLUMNS`` order), in row order."""
    if not rows:
        return []
    aux: tuple[dict[int, list[tuple[Any, ...]]], ...] = ({}, {}, {}, {})
    for r in _aux_rows(con, [row[0] for row in rows]):
        aux[r[0]].setdefault(r[1], []).append(r)
    params, metrics, inputs, artifacts = aux
    experiments = []
    for row in rows:
        seq = row[0]
        definition = ExperimentDefinition(
            name=row[2],
            strategy=row[3],
            engine=row[4],
            description=row[5],
            seed=None if row[6] is None else int(row[6]),
            batch_id=row[7],
            batch_index=row[8],
            attempt=row[9],
            retry_of=row[10],
            reproduces=row[11],
            reused_from=row[12],
            config_hash=row[13],
            provenance=Provenance.model_validate_json(row[15]),
            tags=tuple(row[16]),
            params={p[3]: decode_param(p[4], p[5], p[6], p[7]) for p in params.get(seq, [])},
            inputs=_refs(inputs.get(seq, [])),
        )
        experiments.append(
            Experiment(
                id=row[1],
                definition=definition,
                status=ExperimentStatus(row[17]),
                created_at=from_db_time(row[18]),
                started_at=from_db_time(row[19]),
                completed_at=from_db_time(row[20]),
                heartbeat_at=from_db_time(row[21]),
                metrics={m[3]: m[4] for m in metrics.get(seq, [])},
                artifacts=_refs(artifacts.get(seq, [])),
                error=row[22],
                error_category=ErrorCategory(row[23]) if row[23] else None,
            )
        )
    return experiments
