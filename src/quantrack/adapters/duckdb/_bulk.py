"""The bulk path: :class:`FinishedExperiments` columns into numpy arrays, inserted at once.

No per-row model and no per-row INSERT: each column that varies between the records
becomes a numpy array, the values every row shares are bound once as parameters, and
each table receives one ``INSERT ... SELECT`` from the arrays, which DuckDB scans in
place (a registered dict of numpy arrays).

Why numpy rather than Arrow: every pyarrow conversion (``pa.array``, ``pa.table``) first
imports pandas to ask whether its input is a pandas object, 0.3 s the first time in a
process, a third of the time a 100,000-run insert takes; DuckDB reads numpy arrays
without pandas or pyarrow. In those arrays NaN (floats), NaT (timestamps) and ``None``
(objects) are read as NULL; params and metrics are always finite, so NaN can only mean
"no value".
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import duckdb
import numpy as np

from quantrack.adapters.duckdb._sql import EXACT_INT_LIMIT, encode_param, to_db_time
from quantrack.domain import ArtifactRef, DuplicateExperiment, FinishedExperiments

__all__ = ["insert_finished"]

_MISSING = object()


class _Select:
    """The select list of an ``INSERT ... SELECT``: registered array columns, and values
    every row shares, bound once as parameters.

    Column names and casts are fixed identifiers of this module; values only ever reach
    DuckDB as arrays or bound parameters.
    """

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray[Any, Any]] = {}
        self.exprs: list[str] = []
        self.params: list[object] = []

    def column(self, name: str, array: np.ndarray[Any, Any], cast: str = "") -> None:
        self.arrays[name] = array
        self.exprs.append(f"{name}::{cast}" if cast else name)

    def shared(self, value: object, cast: str = "") -> None:
        self.exprs.append(f"?::{cast}" if cast else "?")
        self.params.append(value)

    def names(self, codes: np.ndarray[Any, Any], names: list[str]) -> None:
        """A name column as 1-based positions into one bound list of the names (a
        string per row would cost a conversion per row).
        """
        self.arrays["code"] = codes
        self.exprs.append("(?::VARCHAR[])[code]")
        self.params.append(names)

    def values_or_shared(self, name: str, values: Sequence[Any], cast: str = "") -> None:
        """A column, or one bound value when every row holds the same (a sweep's status
        and timestamps usually are one object repeated: ``count`` compares by identity
        first, at C speed).
        """
        if values and values.count(values[0]) == len(values):
            self.shared(values[0], cast)
        else:
            self.column(name, _objects(values), cast)

    def insert(self, con: duckdb.DuckDBPyConnection, table: str, *, source: str) -> None:
        con.execute(
            f"INSERT INTO {table} SELECT {', '.join(self.exprs)} FROM {source}", self.params
        )


def _objects(values: Sequence[Any]) -> np.ndarray[Any, Any]:
    """A one-dimensional object array of ``values`` (``np.array`` would nest tuples)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _times(values: Sequence[Any]) -> np.ndarray[Any, Any]:
    # Naive UTC (the column type); None becomes NaT, which DuckDB reads as NULL.
    return np.array([to_db_time(v) for v in values], dtype="datetime64[us]")


def _timestamps(select: _Select, name: str, values: Sequence[Any]) -> None:
    if values and values.count(values[0]) == len(values):
        select.shared(to_db_time(values[0]), "TIMESTAMP")
    else:
        select.column(name, _times(values))


def _enum_values(values: Sequence[Any]) -> list[str | None]:
    # Each distinct member converted once.
    plain = {member: None if member is None else member.value for member in set(values)}
    return list(map(plain.__getitem__, values))


def _nullable(select: _Select, name: str, values: Sequence[Any] | None) -> None:
    if values is None or not any(v is not None for v in values):
        select.shared(None, "VARCHAR")
    else:
        select.column(name, _objects([None if v is None else str(v) for v in values]))


def _param_columns(params: Sequence[dict[str, Any]]) -> dict[str, Sequence[Any]]:
    """Each param name's values, one per row (``_MISSING`` where a row lacks it)."""
    first = list(params[0]) if params else []
    if first and set(map(len, params)) == {len(first)}:
        # A sweep's rows usually share their names: each column comes out of a C-level
        # pass (a list of the values already held, so nothing new for the garbage
        # collector to walk) instead of a Python loop. Rows of the same size that all
        # have these names have exactly these names.
        try:
            return {name: list(map(itemgetter(name), params)) for name in first}
        except KeyError:
            pass
    merged: dict[str, None] = {}
    for p in params:
        merged.update(dict.fromkeys(p))
    return {name: [p.get(name, _MISSING) for p in params] for name in merged}


# The value columns of qt_params, in table order, with the cast their array needs
# (booleans travel as 1.0 / 0.0 / NaN, so one float matrix can hold them with NULLs).
_VALUE_COLUMNS = (("num", "DOUBLE"), ("text", "VARCHAR"), ("flag", "BOOLEAN"), ("raw", "VARCHAR"))


class _Matrices:
    """The value matrices of qt_params (a row per experiment, a column per name), each
    made when a value first needs it: a sweep's params rarely use all four.
    """

    def __init__(self, n: int, k: int) -> None:
        self.shape = (n, k)
        self.made: dict[str, np.ndarray[Any, Any]] = {}

    def __getitem__(self, key: str) -> np.ndarray[Any, Any]:
        matrix = self.made.get(key)
        if matrix is None:
            if key in ("text", "raw"):
                matrix = np.full(self.shape, None, dtype=object)
            else:
                matrix = np.full(self.shape, np.nan)
            self.made[key] = matrix
        return matrix


def _encode_general(values: Sequence[Any], j: int, matrices: _Matrices) -> list[int]:
    """Mixed or nested values, or rows lacking the name: the general encoder, row by row,
    for this name only; return the rows that lack it.
    """
    missing = []
    for i, value in enumerate(values):
        if value is _MISSING:
            missing.append(i)
            continue
        for (key, _), encoded in zip(_VALUE_COLUMNS, encode_param(value), strict=True):
            if encoded is not None:
                matrices[key][i, j] = encoded
    return missing


def _insert_params(
    con: duckdb.DuckDBPyConnection, seq: np.ndarray[Any, Any], params: Sequence[dict[str, Any]]
) -> None:
    """One row per (experiment, param), in seq order: rows in seq order keep each row
    group's seq range narrow, so reading one experiment's params back skips almost every
    row group (zone maps).

    The values are laid out as matrices (a row per experiment, a column per name) and
    flattened row by row, which interleaves the names without a sort.
    """
    columns = _param_columns(params)
    names = list(columns)
    n, k = len(params), len(names)
    if not k:
        return
    matrices = _Matrices(n, k)
    present = np.ones((n, k), dtype=bool)
    for j, name in enumerate(names):
        values = columns[name]
        kinds = set(map(type, values))
        if kinds <= {int, float} and (
            int not in kinds or (min(values) > -EXACT_INT_LIMIT and max(values) < EXACT_INT_LIMIT)
        ):
            key = "num"
        elif kinds == {str}:
            key = "text"
        elif kinds == {bool}:
            key = "flag"
        else:
            present[_encode_general(values, j, matrices), j] = False
            continue
        # One C-level conversion of the whole column.
        matrices[key][:, j] = values
    keep = None if present.all() else present.reshape(-1)

    def flat(matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        out = matrix.reshape(-1)
        return out if keep is None else out[keep]

    select = _Select()
    # Each seq k times (a broadcast copied row by row: np.repeat with a small count per
    # element is several times slower), and the names' positions 1..k once per row.
    select.column("seq", flat(np.broadcast_to(seq[:, None], (n, k))))
    select.names(flat(np.broadcast_to(np.arange(1, k + 1, dtype=np.int32), (n, k))), names)
    for key, cast in _VALUE_COLUMNS:
        if key in matrices.made:
            select.column(key, flat(matrices.made[key]), cast)
        else:
            select.shared(None, cast)
    _insert(con, "qt_params", select)


def _insert_metrics(
    con: duckdb.DuckDBPyConnection,
    seq: np.ndarray[Any, Any],
    metrics: dict[str, tuple[float | None, ...]],
) -> list[str]:
    """Insert the defined metrics; return the names that have at least one value.

    Grouped by name, each name's rows in seq order: "order by / filter on sharpe" then
    reads only the row groups holding sharpe (zone maps on name), which matters more
    than reading one run's metrics back, a handful of row groups either way.
    """
    names = list(metrics)
    if not names:
        return []
    n = len(seq)
    # None becomes NaN (real metrics are always finite).
    values = np.array([metrics[name] for name in names], dtype=np.float64).reshape(-1)
    seqs = np.tile(seq, len(names))
    codes = np.repeat(np.arange(1, len(names) + 1, dtype=np.int32), n)
    present = ~np.isnan(values)
    defined = [bool(present[j * n : (j + 1) * n].any()) for j in range(len(names))]
    if not present.all():
        values, seqs, codes = values[present], seqs[present], codes[present]
    if not len(values):
        return []
    select = _Select()
    select.column("seq", seqs)
    select.names(codes, names)
    select.column("value", values)
    _insert(con, "qt_metrics", select)
    return [name for name, has in zip(names, defined, strict=True) if has]


def _ref_values(ref: ArtifactRef) -> list[object]:
    return [ref.id, ref.size, ref.media_type, ref.kind, ref.name, ref.part]


def _experiment_rows(seq: np.ndarray[Any, Any], records: FinishedExperiments) -> _Select:
    """The select list of ``qt_experiments``, in table order."""
    t = records.template
    rows = _Select()
    rows.column("seq", seq)
    rows.column("id", _objects(records.ids))
    if records.names is None:
        rows.shared(t.name, "VARCHAR")
    else:
        rows.values_or_shared("name", records.names)
    for value in (t.strategy, t.engine, t.description, t.seed, t.batch_id):
        rows.shared(value)
    if records.batch_indexes is None:
        rows.shared(t.batch_index, "BIGINT")
    else:
        rows.column("batch_index", np.array(records.batch_indexes, dtype=np.int64))
    for value in (t.attempt, t.retry_of, t.reproduces, t.reused_from):
        rows.shared(value)
    rows.column("config_hash", _objects(records.config_hashes))
    rows.shared(t.provenance.git_commit)
    rows.shared(t.provenance.model_dump_json())
    rows.shared(list(t.tags), "VARCHAR[]")
    if records.status.count(records.status[0]) == len(records.status):
        rows.shared(records.status[0].value, "VARCHAR")
    else:
        rows.column("status", _objects(_enum_values(records.status)), "VARCHAR")
    _timestamps(rows, "created_at", records.created_at)
    _timestamps(rows, "started_at", records.started_at)
    _timestamps(rows, "completed_at", records.completed_at)
    rows.shared(None, "TIMESTAMP")  # heartbeat_at
    _nullable(rows, "error", records.errors)
    _nullable(
        rows,
        "error_category",
        None if records.error_categories is None else _enum_values(records.error_categories),
    )
    return rows


def insert_finished(
    con: duckdb.DuckDBPyConnection, first_seq: int, records: FinishedExperiments
) -> None:
    """Insert ``records`` as rows ``first_seq``, ``first_seq + 1``, ...; the caller holds
    the transaction.
    """
    t = records.template
    seq = np.arange(first_seq, first_seq + len(records), dtype=np.int64)
    rows = _experiment_rows(seq, records)
    con.register("qt_new_rows", rows.arrays)
    try:
        # Checked before writing: a failed INSERT would abort the caller's whole session.
        taken = con.execute(
            "SELECT id FROM qt_experiments WHERE id IN (SELECT id FROM qt_new_rows) "
            "ORDER BY id LIMIT 1"
        ).fetchall()
        if taken:
            raise DuplicateExperiment(taken[0][0])
        rows.insert(con, "qt_experiments", source="qt_new_rows")
        for position, ref in enumerate(t.inputs):
            con.execute(
                "INSERT INTO qt_inputs SELECT seq, id, ?, ?, ?, ?, ?, ?, ? FROM qt_new_rows",
                [position, *_ref_values(ref)],
            )
        for position, ref in enumerate(records.artifacts):
            con.execute(
                "INSERT INTO qt_artifacts SELECT seq, ?, ?, ?, ?, ?, ?, ? FROM qt_new_rows",
                [position, *_ref_values(ref)],
            )
    finally:
        _unregister(con, "qt_new_rows")
    _insert_row_artifacts(con, first_seq, records)
    _insert_params(con, seq, records.params)
    names = _insert_metrics(con, seq, records.metrics)
    if names:
        known = {row[0] for row in con.execute("SELECT name FROM qt_metric_names").fetchall()}
        fresh = [[name] for name in sorted(names) if name not in known]
        if fresh:
            con.executemany("INSERT INTO qt_metric_names VALUES (?)", fresh)


def _insert_row_artifacts(
    con: duckdb.DuckDBPyConnection, first_seq: int, records: FinishedExperiments
) -> None:
    """Each row's own artifacts, after the shared ones."""
    if records.row_artifacts is None or not any(records.row_artifacts):
        return
    shared = len(records.artifacts)
    own = [
        (first_seq + i, shared + j, *_ref_values(ref))
        for i, refs in enumerate(records.row_artifacts)
        for j, ref in enumerate(refs)
    ]
    columns = list(zip(*own, strict=True))
    refs = _Select()
    refs.column("seq", np.array(columns[0], dtype=np.int64))
    refs.column("position", np.array(columns[1], dtype=np.int32))
    refs.column("artifact_id", _objects(columns[2]))
    refs.column("size", np.array(columns[3], dtype=np.int64))
    for name, values in zip(("media_type", "kind", "name", "part"), columns[4:], strict=True):
        refs.column(name, _objects(values), "VARCHAR")
    _insert(con, "qt_artifacts", refs)


def _insert(con: duckdb.DuckDBPyConnection, table: str, select: _Select) -> None:
    con.register("qt_new_data", select.arrays)
    try:
        select.insert(con, table, source="qt_new_data")
    finally:
        _unregister(con, "qt_new_data")


def _unregister(con: duckdb.DuckDBPyConnection, name: str) -> None:
    # After a failed statement the aborted transaction refuses even this; the next
    # register() of the same name replaces the stale one.
    with contextlib.suppress(duckdb.Error):
        con.unregister(name)
