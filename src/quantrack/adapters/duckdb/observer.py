"""The persisting batch observer on a DuckDB database file."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from quantrack.adapters.duckdb._sql import from_db_time, to_db_time
from quantrack.adapters.duckdb.connection import database_for, translate
from quantrack.adapters.duckdb.schema import prepare
from quantrack.domain import (
    Batch,
    BatchItemResult,
    BatchNotFound,
    BatchStatus,
    ErrorCategory,
    ExperimentStatus,
)
from quantrack.domain.batches import accept_finish, accept_item, accept_items, accept_start
from quantrack.domain.hashing import canonical_json

__all__ = ["DuckDBBatchObserver"]

_BATCH_COLUMNS = (
    "id, name, status, total, succeeded, failed, cancelled, reused, error_summary, "
    "created_at, started_at, completed_at, heartbeat_at, params, tags, selection_metric"
)
_ITEM_COLUMNS = (
    '"index", experiment_id, params, status, error, error_category, duration_seconds, '
    "attempt, reused"
)
# Buffered item events of the current unit of work, in the shared connection's cache (a
# tuple key cannot collide with the tracker's experiment ids).
_PENDING = ("quantrack", "observer.pending")
# The Arrow table of buffered items, while it is being inserted.
_NEW_ITEMS = "qt_new_batch_items"
# Compact, key-sorted JSON: canonical_json's text for a value already in canonical form.
_encode_canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False
).encode


@dataclass
class _Pending:
    """One batch's item events accepted in this unit of work but not yet written."""

    batch: Batch
    # (index, attempt) stored or buffered; None when only this one event is expected.
    keys: set[tuple[int, int]] | None
    items: list[BatchItemResult] = field(default_factory=list)


class DuckDBBatchObserver:
    """Keeps batches and their items in the workspace database.

    Implements :class:`~quantrack.ports.BatchObserver` (with the
    :class:`~quantrack.ports.BatchItemsObserver` capability) and
    :class:`~quantrack.ports.BatchHistory`; every event is checked against the stored
    batch with :mod:`quantrack.domain.batches` inside one transaction.
    """

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        self._path = Path(path)
        self._timeout = timeout
        self._db = database_for(self._path)
        self._db.set_prepare(lambda con: prepare(con, self._db.path))

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        try:
            with self._db.unit(self._timeout) as con:
                yield con
        except duckdb.Error as exc:
            self._db.release()
            raise translate(exc, self._db.path) from exc

    def close(self) -> None:
        """Let go of the database file now (it is reopened on the next call)."""
        self._db.release()

    # -- BatchObserver ---------------------------------------------------------------

    def on_batch_started(self, batch: Batch) -> None:
        """Store a new running batch, or accept the resumption of an unfinished one."""
        with self._transaction() as con:
            self._flush(con)
            stored = _load(con, batch.id)
            accepted = accept_start(stored, batch)
            if stored is None:
                con.execute(
                    f"INSERT INTO qt_batches ({_BATCH_COLUMNS}) VALUES "
                    f"({', '.join('?' for _ in _BATCH_COLUMNS.split(','))})",
                    _batch_values(accepted),
                )
            else:
                _update(con, accepted)

    def on_item_finished(self, batch: Batch, item: BatchItemResult) -> None:
        """Count ``item`` in its batch.

        The event is checked at once; inside a session (``tracker.session()``) its row is
        buffered and written with the session's other items in one insert when the
        session commits, so a sweep of many items pays for a few statements, not a few
        per item. Outside a session it is written before this returns.
        """
        with self._transaction() as con:
            pending = self._pending(con)
            state = pending.get(batch.id)
            if state is None:
                # In a session many events follow: read the batch's keys once, not per item.
                keys = _item_keys(con, batch.id) if self._db.nested else None
                state = _Pending(_stored(con, batch.id), keys)
            key = (item.index, item.attempt)
            seen = _item_seen(con, batch.id, key) if state.keys is None else key in state.keys
            state.batch = accept_item(state.batch, item, seen)
            state.items.append(item)
            if state.keys is not None:
                state.keys.add(key)
            pending[batch.id] = state

    def on_items_finished(self, batch: Batch, items: Sequence[BatchItemResult]) -> None:
        """Count ``items`` in their batch, all or (when one is refused) none.

        One unit of work and one check for all of them; their rows are buffered and
        written as :meth:`on_item_finished` writes them (in a session, when it commits).
        """
        with self._transaction() as con:
            pending = self._pending(con)
            state = pending.get(batch.id)
            if state is None:
                # Read the batch's keys once for all the items, in a session or not.
                state = _Pending(_stored(con, batch.id), _item_keys(con, batch.id))
            # Only a lone event outside a session leaves a state without keys, and it is
            # written (and the state dropped) when that event's unit of work commits.
            keys = state.keys
            assert keys is not None
            state.batch = accept_items(state.batch, items, keys)
            state.items.extend(items)
            keys.update((item.index, item.attempt) for item in items)
            pending[batch.id] = state

    def on_batch_finished(self, batch: Batch) -> None:
        """Store the batch's final status, checked against the items it holds."""
        with self._transaction() as con:
            self._flush(con)
            _update(con, accept_finish(_stored(con, batch.id), batch))

    def _pending(self, con: duckdb.DuckDBPyConnection) -> dict[str, _Pending]:
        pending: dict[str, _Pending] | None = self._db.cache.get(_PENDING)
        if pending is None:
            pending = self._db.cache[_PENDING] = {}
            self._db.before_commit(lambda c: _write(c, pending))
        return pending

    def _flush(self, con: duckdb.DuckDBPyConnection) -> None:
        """Write the buffered events now, so what follows reads and checks them."""
        pending: dict[str, _Pending] | None = self._db.cache.get(_PENDING)
        if pending:
            _write(con, pending)

    # -- BatchHistory ----------------------------------------------------------------

    def get_batch(self, batch_id: str) -> Batch:
        """Return the batch."""
        with self._transaction() as con:
            self._flush(con)
            return _stored(con, batch_id)

    def list_batches(
        self,
        *,
        status: BatchStatus | None = None,
        limit: int | None = None,
        since: dt.datetime | None = None,
    ) -> list[Batch]:
        """Batches newest first, optionally only in ``status`` or created at or after
        ``since`` (a naive ``since`` is UTC).
        """
        sql = f"SELECT {_BATCH_COLUMNS} FROM qt_batches WHERE TRUE"
        params: list[object] = []
        if status is not None:
            sql += " AND status = ?"
            params.append(BatchStatus(status).value)
        if since is not None:
            sql += " AND created_at >= ?"
            params.append(to_db_time(since))
        sql += " ORDER BY created_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._transaction() as con:
            self._flush(con)
            return [_batch(row) for row in con.execute(sql, params).fetchall()]

    def batch_items(self, batch_id: str) -> list[BatchItemResult]:
        """The batch's items by index, then attempt."""
        with self._transaction() as con:
            self._flush(con)
            _stored(con, batch_id)
            rows = con.execute(
                f"SELECT {_ITEM_COLUMNS} FROM qt_batch_items WHERE batch_id = ? "
                'ORDER BY "index", attempt',
                [batch_id],
            ).fetchall()
        return [
            BatchItemResult(
                index=r[0],
                experiment_id=r[1],
                params=json.loads(r[2]),
                status=ExperimentStatus(r[3]),
                error=r[4],
                error_category=ErrorCategory(r[5]) if r[5] else None,
                duration_seconds=r[6],
                attempt=r[7],
                reused=r[8],
            )
            for r in rows
        ]

    def record_selection(self, batch_id: str, metric: str) -> Batch:
        """Keep ``metric`` as the batch's selection metric; return the updated batch."""
        if not isinstance(metric, str) or not metric.strip():
            raise ValueError(f"metric must be a metric name such as 'sharpe', got {metric!r}")
        with self._transaction() as con:
            self._flush(con)
            stored = _stored(con, batch_id).model_copy(update={"selection_metric": metric.strip()})
            con.execute(
                "UPDATE qt_batches SET selection_metric = ? WHERE id = ?",
                [stored.selection_metric, batch_id],
            )
        return stored


def _write(con: duckdb.DuckDBPyConnection, pending: dict[str, _Pending]) -> None:
    """One insert of each batch's buffered items and one update of its counts."""
    for batch_id, state in pending.items():
        _insert_items(con, batch_id, state.items)
        _update(con, state.batch)
    pending.clear()


def _insert_items(
    con: duckdb.DuckDBPyConnection, batch_id: str, items: list[BatchItemResult]
) -> None:
    # An Arrow table is handed to DuckDB column by column; Python lists bound to
    # `unnest(?)` are converted value by value, which took most of a sweep's commit.
    # Imported here, as the tracker's bulk path does, so that opening a workspace (the
    # CLI) does not pay for pyarrow.
    import pyarrow as pa

    n = len(items)
    table = pa.table(
        {
            "batch_id": pa.array([batch_id] * n, pa.string()),
            "index": pa.array([i.index for i in items], pa.int64()),
            "experiment_id": pa.array([i.experiment_id for i in items], pa.string()),
            # An item's params are canonical already (the model canonicalizes them), so
            # encoding them is all canonical_json would do, minus its walk over values.
            "params": pa.array([_encode_canonical(i.params) for i in items], pa.string()),
            "status": pa.array([i.status.value for i in items], pa.string()),
            "error": pa.array([i.error for i in items], pa.string()),
            "error_category": pa.array(
                [i.error_category.value if i.error_category else None for i in items], pa.string()
            ),
            "duration_seconds": pa.array([i.duration_seconds for i in items], pa.float64()),
            "attempt": pa.array([i.attempt for i in items], pa.int64()),
            "reused": pa.array([i.reused for i in items], pa.bool_()),
        }
    )
    con.register(_NEW_ITEMS, table)
    try:
        con.execute(
            f"INSERT INTO qt_batch_items (batch_id, {_ITEM_COLUMNS}) "
            f"SELECT batch_id, {_ITEM_COLUMNS} FROM {_NEW_ITEMS}"
        )
    finally:
        # After a failed statement the aborted transaction refuses even this; the next
        # register() of the same name replaces the stale one.
        with contextlib.suppress(duckdb.Error):
            con.unregister(_NEW_ITEMS)


def _item_keys(con: duckdb.DuckDBPyConnection, batch_id: str) -> set[tuple[int, int]]:
    rows = con.execute(
        'SELECT "index", attempt FROM qt_batch_items WHERE batch_id = ?', [batch_id]
    ).fetchall()
    return {(r[0], r[1]) for r in rows}


def _item_seen(con: duckdb.DuckDBPyConnection, batch_id: str, key: tuple[int, int]) -> bool:
    rows = con.execute(
        'SELECT count(*) FROM qt_batch_items WHERE batch_id = ? AND "index" = ? AND attempt = ?',
        [batch_id, *key],
    ).fetchall()
    return bool(rows[0][0])


def _batch_values(b: Batch) -> list[object]:
    return [
        b.id,
        b.name,
        b.status.value,
        b.total,
        b.succeeded,
        b.failed,
        b.cancelled,
        b.reused,
        json.dumps({c.value: n for c, n in sorted(b.error_summary.items())}),
        to_db_time(b.created_at),
        to_db_time(b.started_at),
        to_db_time(b.completed_at),
        to_db_time(b.heartbeat_at),
        canonical_json(b.params),
        list(b.tags),
        b.selection_metric,
    ]


def _update(con: duckdb.DuckDBPyConnection, b: Batch) -> None:
    values = _batch_values(b)
    con.execute(
        "UPDATE qt_batches SET status = ?, succeeded = ?, failed = ?, cancelled = ?, "
        "reused = ?, error_summary = ?, started_at = ?, completed_at = ?, heartbeat_at = ? "
        "WHERE id = ?",
        [*values[2:3], *values[4:9], *values[10:13], b.id],
    )


def _batch(row: tuple[Any, ...]) -> Batch:
    return Batch(
        id=row[0],
        name=row[1],
        status=BatchStatus(row[2]),
        total=row[3],
        succeeded=row[4],
        failed=row[5],
        cancelled=row[6],
        reused=row[7],
        error_summary={ErrorCategory(k): v for k, v in json.loads(row[8]).items()},
        created_at=from_db_time(row[9]),
        started_at=from_db_time(row[10]),
        completed_at=from_db_time(row[11]),
        heartbeat_at=from_db_time(row[12]),
        params=json.loads(row[13]),
        tags=tuple(row[14]),
        selection_metric=row[15],
    )


def _load(con: duckdb.DuckDBPyConnection, batch_id: str) -> Batch | None:
    rows = con.execute(
        f"SELECT {_BATCH_COLUMNS} FROM qt_batches WHERE id = ?", [batch_id]
    ).fetchall()
    return _batch(rows[0]) if rows else None


def _stored(con: duckdb.DuckDBPyConnection, batch_id: str) -> Batch:
    batch = _load(con, batch_id)
    if batch is None:
        raise BatchNotFound(batch_id)
    return batch
