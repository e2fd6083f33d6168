"""SQL building blocks: the ``where`` compiler and the param/timestamp codecs.

User values only ever reach DuckDB as bound parameters; the SQL text built here is made
of fixed fragments chosen from whitelists (operators, value columns).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable
from typing import Any

from quantrack.domain import ExperimentFilter
from quantrack.domain.hashing import JsonValue, canonical_json
from quantrack.domain.query import Comparison, Expression, resolve_scope

__all__ = [
    "EXACT_INT_LIMIT",
    "compile_filter",
    "compile_where",
    "decode_param",
    "encode_param",
    "from_db_time",
    "to_db_time",
]

EXACT_INT_LIMIT = 2**53

_SQL_OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}

ParamRow = tuple[float | None, str | None, bool | None, str | None]


def to_db_time(value: dt.datetime | None) -> dt.datetime | None:
    """A naive UTC timestamp for a ``TIMESTAMP`` column (the domain's times are aware)."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def from_db_time(value: dt.datetime | None) -> dt.datetime | None:
    """The aware UTC timestamp a ``TIMESTAMP`` column holds."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC)


def encode_param(value: JsonValue) -> ParamRow:
    """``(value_num, value_text, value_bool, value_json)`` for one canonical param value."""
    if isinstance(value, bool):
        return (None, None, value, None)
    if isinstance(value, int):
        if abs(value) < EXACT_INT_LIMIT:
            return (float(value), None, None, None)
        # Kept exactly as text; the DOUBLE (when representable) still serves comparisons.
        try:
            approx: float | None = float(value)
        except OverflowError:
            approx = None
        return (approx, None, None, str(value))
    if isinstance(value, float):
        return (value, None, None, None)
    if isinstance(value, str):
        return (None, value, None, None)
    return (None, None, None, canonical_json(value))


def decode_param(num: float | None, text: str | None, flag: bool | None, raw: str | None) -> Any:
    """The canonical param value stored as :func:`encode_param` wrote it."""
    if raw is not None:
        return json.loads(raw)
    if flag is not None:
        return flag
    if text is not None:
        return text
    assert num is not None  # encode_param always sets one column
    # Canonical params hold integral numbers below 2**53 as ints (see domain.hashing).
    if num.is_integer() and abs(num) < EXACT_INT_LIMIT:
        return int(num)
    return num


def _comparison(
    comparison: Comparison, metric_names: Iterable[str], ordered: str | None
) -> tuple[str, list[object]]:
    op = _SQL_OPS[comparison.op]
    value = comparison.value
    if resolve_scope(comparison, metric_names) == "metric":
        # Metrics are numbers: a text or boolean literal never matches one.
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "FALSE", []
        if comparison.field == ordered:
            # The metric the query orders by is already joined as `o` (NULL when the run
            # lacks it, and NULL never passes a WHERE), so no second scan is needed.
            return f"o.value {op} ?", [float(value)]
        return (
            f"e.seq IN (SELECT seq FROM qt_metrics WHERE name = ? AND value {op} ?)",
            [comparison.field, float(value)],
        )
    if isinstance(value, bool):
        column = "value_bool"
        bound: object = value
    elif isinstance(value, int | float):
        column = "value_num"
        bound = float(value)
        if not math.isfinite(float(value)):
            return "FALSE", []
    else:
        column = "value_text"
        bound = value
    return (
        f"e.seq IN (SELECT seq FROM qt_params WHERE name = ? AND {column} {op} ?)",
        [comparison.field, bound],
    )


def compile_where(
    expression: Expression, metric_names: Iterable[str], ordered: str | None = None
) -> tuple[str, list[object]]:
    """SQL over the alias ``e`` (``qt_experiments``) that holds where ``expression`` does.

    The semantics are those of :func:`quantrack.domain.query.compare`: the stored value
    must exist and have the literal's type. ``ordered`` names the metric joined as
    ``o`` (``o.seq``, ``o.value``) when the query orders by one.
    """
    names = set(metric_names)
    if isinstance(expression, Comparison):
        return _comparison(expression, names, ordered)
    parts: list[str] = []
    params: list[object] = []
    for item in expression.items:
        sql, bound = compile_where(item, names, ordered)
        parts.append(f"({sql})")
        params.extend(bound)
    joiner = " AND " if expression.op == "and" else " OR "
    return joiner.join(parts), params


def compile_filter(
    query: ExperimentFilter, metric_names: Iterable[str], ordered: str | None = None
) -> tuple[str, list[object]]:
    """The ``WHERE`` clause (without the keyword) for every criterion of ``query``."""
    clauses: list[str] = []
    params: list[object] = []
    if query.status is not None:
        statuses = sorted(s.value for s in query.status)
        clauses.append(f"e.status IN ({', '.join('?' for _ in statuses)})")
        params.extend(statuses)
    for column, value in (
        ("name", query.name),
        ("strategy", query.strategy),
        ("engine", query.engine),
        ("git_commit", query.git_commit),
        ("config_hash", query.config_hash),
        ("batch_id", query.batch_id),
    ):
        if value is not None:
            clauses.append(f"e.{column} = ?")
            params.append(value)
    if query.tags:
        clauses.append("list_has_all(e.tags, ?::VARCHAR[])")
        params.append(sorted(query.tags))
    if query.created_after is not None:
        clauses.append("e.created_at >= ?")
        params.append(to_db_time(query.created_after))
    if query.created_before is not None:
        clauses.append("e.created_at < ?")
        params.append(to_db_time(query.created_before))
    if query.where is not None:
        sql, bound = compile_where(query.where, metric_names, ordered)
        clauses.append(f"({sql})")
        params.extend(bound)
    return (" AND ".join(clauses) or "TRUE"), params
