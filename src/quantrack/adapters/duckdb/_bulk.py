"""The bulk path: :class:`FinishedExperiments` columns into Arrow tables, inserted at once.

No per-row model and no per-row INSERT: each column of the records becomes an Arrow
array (the values shared by every row are bound once as parameters), and each table
receives one ``INSERT ... SELECT`` from a registered Arrow table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from quantrack.adapters.duckdb._sql import EXACT_INT_LIMIT, encode_param
from quantrack.domain import ArtifactRef, DuplicateExperiment, FinishedExperiments

__all__ = ["insert_finished"]

_MISSING = object()
_UTC = pa.timestamp("us", tz="UTC")
_NAIVE = pa.timestamp("us")


def _shared(values: Sequence[Any]) -> bool:
    """True when every row holds the same value (a sweep's status and timestamps, usually
    one object repeated: ``count`` compares by identity first, at C speed).
    """
    return len(values) > 0 and values.count(values[0]) == len(values)


def _times(values: Sequence[Any]) -> pa.Array:
    # Arrow keeps UTC instants underneath a zone, so dropping the zone gives naive UTC.
    if _shared(values):
        return pa.repeat(pa.scalar(values[0], _UTC), len(values)).cast(_NAIVE)
    return pa.array(values, _UTC).cast(_NAIVE)


def _enum_values(values: Sequence[Any]) -> pa.Array:
    # Arrow converts an enum member (a str subclass) ~20x slower than a plain str, so
    # each distinct member is converted once.
    if _shared(values):
        return pa.repeat(pa.scalar(values[0].value, pa.string()), len(values))
    plain = {member: member.value for member in set(values)}
    return pa.array(list(map(plain.__getitem__, values)), pa.string())


def _strings(values: Sequence[Any] | None, n: int) -> pa.Array:
    if values is None:
        return pa.nulls(n, pa.string())
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def _names(names: list[str], codes: np.ndarray[Any, Any]) -> pa.Array:
    # Dictionary-encoded: one copy of each name instead of one per row.
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(names, pa.string()))


def _interleaved(chunks: list[pa.Table], n: int) -> pa.Table:
    """The chunks' rows ordered by seq (row by row, names in chunk order).

    Rows in seq order keep each row group's seq range narrow, so reading one experiment's
    rows back skips almost every row group (zone maps).
    """
    table = pa.concat_tables(chunks)
    if all(len(chunk) == n for chunk in chunks):
        # Every name present in every row: a fixed permutation, no sort needed.
        order = (np.arange(len(chunks))[None, :] * n + np.arange(n)[:, None]).ravel()
        return table.take(pa.array(order))
    return table.sort_by([("seq", "ascending")])


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


def _param_table(seq: pa.Array, params: Sequence[dict[str, Any]]) -> pa.Table | None:
    n = len(params)
    columns = _param_columns(params)
    names = list(columns)
    chunks: list[pa.Table] = []
    for code, name in enumerate(names):
        values = columns[name]
        kinds = set(map(type, values))
        num = text = flag = raw = None
        keep = seq
        if kinds <= {int, float} and (
            int not in kinds or (min(values) > -EXACT_INT_LIMIT and max(values) < EXACT_INT_LIMIT)
        ):
            num = pa.array(values, pa.float64())
        elif kinds == {str}:
            text = pa.array(values, pa.string())
        elif kinds == {bool}:
            flag = pa.array(values, pa.bool_())
        else:
            # Mixed or nested values: the general encoder, row by row, for this name only.
            present = [i for i, v in enumerate(values) if v is not _MISSING]
            encoded = [encode_param(values[i]) for i in present]
            keep = seq.take(pa.array(present, pa.int64()))
            num = pa.array([e[0] for e in encoded], pa.float64())
            text = pa.array([e[1] for e in encoded], pa.string())
            flag = pa.array([e[2] for e in encoded], pa.bool_())
            raw = pa.array([e[3] for e in encoded], pa.string())
        size = len(keep)
        chunks.append(
            pa.table(
                {
                    "seq": keep,
                    "name": _names(names, np.full(size, code)),
                    "value_num": num if num is not None else pa.nulls(size, pa.float64()),
                    "value_text": text if text is not None else pa.nulls(size, pa.string()),
                    "value_bool": flag if flag is not None else pa.nulls(size, pa.bool_()),
                    "value_json": raw if raw is not None else pa.nulls(size, pa.string()),
                }
            )
        )
    return _interleaved(chunks, n) if chunks else None


def _metric_table(seq: pa.Array, metrics: dict[str, tuple[float | None, ...]]) -> pa.Table | None:
    if not metrics:
        return None
    names = list(metrics)
    n = len(seq)
    # Grouped by name, each name's rows in seq order: "order by / filter on sharpe" then
    # reads only the row groups holding sharpe (zone maps on name), which matters more
    # than reading one run's metrics back, a handful of row groups either way.
    values = np.concatenate(
        [pa.array(metrics[name], pa.float64()).to_numpy(zero_copy_only=False) for name in names]
    )
    seqs = np.tile(seq.to_numpy(), len(names))
    codes = np.repeat(np.arange(len(names)), n)
    present = ~np.isnan(values)  # None became NaN; real metrics are always finite
    if not present.all():
        values, seqs, codes = values[present], seqs[present], codes[present]
    if not len(values):
        return None
    return pa.table(
        {"seq": pa.array(seqs, pa.int64()), "name": _names(names, codes), "value": values}
    )


def _ref_values(ref: ArtifactRef) -> list[object]:
    return [ref.id, ref.size, ref.media_type, ref.kind, ref.name, ref.part]


def insert_finished(
    con: duckdb.DuckDBPyConnection, first_seq: int, records: FinishedExperiments
) -> None:
    """Insert ``records`` as rows ``first_seq``, ``first_seq + 1``, ...; the caller holds
    the transaction.
    """
    n = len(records)
    t = records.template
    seq = pa.array(range(first_seq, first_seq + n), pa.int64())
    rows = pa.table(
        {
            "seq": seq,
            "id": pa.array(records.ids, pa.string()),
            "name": _strings(records.names, n)
            if records.names is not None
            else pa.array([t.name] * n, pa.string()),
            "batch_index": pa.array(records.batch_indexes, pa.int64())
            if records.batch_indexes is not None
            else pa.array([t.batch_index] * n, pa.int64()),
            "config_hash": pa.array(records.config_hashes, pa.string()),
            "status": _enum_values(records.status),
            "created_at": _times(records.created_at),
            "started_at": _times(records.started_at),
            "completed_at": _times(records.completed_at),
            "error": _strings(records.errors, n),
            "error_category": _strings(
                None
                if records.error_categories is None
                else [c.value if c is not None else None for c in records.error_categories],
                n,
            ),
        }
    )
    con.register("qt_new_rows", rows)
    try:
        # Checked before writing: a failed INSERT would abort the caller's whole session.
        taken = con.execute(
            "SELECT id FROM qt_experiments WHERE id IN (SELECT id FROM qt_new_rows) "
            "ORDER BY id LIMIT 1"
        ).fetchall()
        if taken:
            raise DuplicateExperiment(taken[0][0])
        con.execute(
            "INSERT INTO qt_experiments SELECT seq, id, name, ?, ?, ?, ?, ?, batch_index, ?, "
            "?, ?, ?, config_hash, ?, ?, ?::VARCHAR[], status, created_at, started_at, "
            "completed_at, NULL, error, error_category FROM qt_new_rows",
            [
                t.strategy,
                t.engine,
                t.description,
                t.seed,
                t.batch_id,
                t.attempt,
                t.retry_of,
                t.reproduces,
                t.reused_from,
                t.provenance.git_commit,
                t.provenance.model_dump_json(),
                list(t.tags),
            ],
        )
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
    if records.row_artifacts is not None and any(records.row_artifacts):
        shared = len(records.artifacts)
        own = [
            (first_seq + i, shared + j, *_ref_values(ref))
            for i, refs in enumerate(records.row_artifacts)
            for j, ref in enumerate(refs)
        ]
        columns = list(zip(*own, strict=True))
        _insert_arrow(
            con,
            "qt_artifacts",
            pa.table(
                {
                    "seq": pa.array(columns[0], pa.int64()),
                    "position": pa.array(columns[1], pa.int32()),
                    "artifact_id": pa.array(columns[2], pa.string()),
                    "size": pa.array(columns[3], pa.int64()),
                    "media_type": pa.array(columns[4], pa.string()),
                    "kind": pa.array(columns[5], pa.string()),
                    "name": pa.array(columns[6], pa.string()),
                    "part": pa.array(columns[7], pa.string()),
                }
            ),
        )
    params = _param_table(seq, records.params)
    if params is not None:
        _insert_arrow(con, "qt_params", params)
    metrics = _metric_table(seq, records.metrics)
    if metrics is not None:
        _insert_arrow(con, "qt_metrics", metrics)
        names = sorted(
            name for name, values in records.metrics.items() if any(v is not None for v in values)
        )
        known = {row[0] for row in con.execute("SELECT name FROM qt_metric_names").fetchall()}
        fresh = [[name] for name in names if name not in known]
        if fresh:
            con.executemany("INSERT INTO qt_metric_names VALUES (?)", fresh)


def _insert_arrow(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> None:
    con.register("qt_new_data", data)
    try:
        # Rows in seq order keep each row group's seq range narrow, so reading one
        # experiment's rows back skips almost every row group (zone maps).
        con.execute(f"INSERT INTO {table} SELECT * FROM qt_new_data")
    finally:
        _unregister(con, "qt_new_data")


def _unregister(con: duckdb.DuckDBPyConnection, name: str) -> None:
    # After a failed statement the aborted transaction refuses even this; the next
    # register() of the same name replaces the stale one.
    with contextlib.suppress(duckdb.Error):
        con.unregister(name)
