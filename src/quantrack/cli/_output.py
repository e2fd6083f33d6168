"""Printing results: rich tables that fit an 80-column terminal, or JSON with ``--json``.

JSON output is one document on stdout (experiments as their pydantic ``model_dump``, so
another program can validate them with the same models); tables and messages for people
never mix into it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from quantrack.domain import Batch, Experiment

__all__ = [
    "MAX_WIDTH",
    "batch_json",
    "console",
    "emit_json",
    "experiment_json",
    "fmt_number",
    "fmt_time",
    "fmt_value",
    "key_value_table",
    "new_table",
    "print_table",
]

MAX_WIDTH = 80


def console(*, stderr: bool = False) -> Console:
    """A console at most 80 columns wide (narrower when the terminal is)."""
    stream = sys.stderr if stderr else sys.stdout
    probe = Console(file=stream)
    width = min(MAX_WIDTH, probe.width) if probe.is_terminal else MAX_WIDTH
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def _default(value: object) -> object:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "item"):
        # numpy scalars and the like: their plain Python value.
        return value.item()
    return str(value)


def emit_json(data: object) -> None:
    """Write ``data`` to stdout as one JSON document (non-finite floats become null)."""
    sys.stdout.write(json.dumps(_finite(data), default=_default, indent=2, sort_keys=False))
    sys.stdout.write("\n")
    sys.stdout.flush()


def _finite(data: object) -> object:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, Mapping):
        return {str(k): _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


def experiment_json(experiment: Experiment) -> dict[str, Any]:
    """An experiment as JSON data: exactly its model dump (validates as :class:`Experiment`)."""
    return experiment.model_dump(mode="json")


def batch_json(batch: Batch) -> dict[str, Any]:
    """A batch as JSON data: exactly its model dump (validates as :class:`Batch`)."""
    return batch.model_dump(mode="json")


def fmt_number(value: float | None, digits: int = 4) -> str:
    """A compact number: ``1.235``, ``12,346``, ``-0.0012``; blank for ``None``.

    Floats keep their trailing zeros (``1.000``, ``129.0``) so a column of them lines up
    and an integral float is not mistaken for a count.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e7 or abs(value) < 1e-4):
        return f"{value:.3g}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:#.{digits}g}"


def fmt_value(value: object) -> str:
    """A param or metric value for a table cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return fmt_number(value)
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def fmt_time(value: dt.datetime | None) -> str:
    """A UTC timestamp to the minute: ``2026-11-23 12:03``."""
    if value is None:
        return ""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")


def new_table(
    *columns: str,
    title: str | None = None,
    wrap: Sequence[str] = (),
    flex: Sequence[str] = (),
    right: Sequence[str] = (),
) -> Table:
    """A borderless table whose columns keep their full width (ids are never cut), except
    ``flex`` ones, cut with an ellipsis when the table is too wide, and ``wrap`` ones,
    folded onto more lines. ``right`` columns are right-aligned (numbers).
    """
    table = _Table(
        title=title,
        box=None,
        pad_edge=False,
        collapse_padding=True,
        header_style="bold",
        expand=False,
    )
    for column in columns:
        folds = column in wrap
        table.add_column(
            column,
            no_wrap=not folds,
            overflow="fold" if folds else "ellipsis",
            justify="right" if column in right else "left",
        )
        if not folds and column not in flex:
            table.rigid.add(len(table.columns) - 1)
    return table


class _Table(Table):
    """A table that knows which columns must keep their full width."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rigid: set[int] = set()


def _fix_widths(table: Table, width: int) -> None:
    """Keep rigid columns whole and share what is left among the flexible ones."""
    rigid: set[int] = getattr(table, "rigid", set())
    natural = [
        max([len(str(column.header)), *(len(str(cell)) for cell in column.cells)])
        for column in table.columns
    ]
    for index, column in enumerate(table.columns):
        if index in rigid:
            column.min_width = natural[index]
    flexible = [i for i, c in enumerate(table.columns) if i not in rigid and c.no_wrap]
    if not flexible:
        return
    gaps = len(table.columns) - 1
    budget = width - gaps - sum(natural[i] for i in range(len(natural)) if i not in flexible)
    wanted = sum(natural[i] for i in flexible)
    if wanted <= budget:
        return
    for i in flexible:
        table.columns[i].max_width = max(4, budget * natural[i] // max(wanted, 1))


def print_table(table: Table, *, empty: str | None = None) -> None:
    """Print ``table`` (or the ``empty`` message when it has no rows)."""
    out = console()
    if not table.row_count and empty is not None:
        out.print(empty)
        return
    _fix_widths(table, out.width)
    out.print(table)


def key_value_table(rows: Iterable[tuple[str, object]], *, title: str | None = None) -> Table:
    """Two columns, key and value, for the fields of one thing, under a bold ``title``."""
    table = Table(box=None, pad_edge=False, show_header=False, collapse_padding=True)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    if title:
        table.add_row(Text(f"{title}:", style="bold underline"), "")
    for key, value in rows:
        table.add_row(f"  {key}", value if isinstance(value, Text) else fmt_value(value))
    return table
