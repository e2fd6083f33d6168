"""``quantrack sql "select ..."``: read-only SQL over the workspace's documented views.

The views are ``experiments``, ``metrics``, ``params``, ``batches`` and ``batch_items``
(see docs/storage.md). The query runs through the tracker's read-only ``query`` method, so
the same rules guard it as every other read; a workspace whose tracker cannot run SQL (an
in-memory one) says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer

from quantrack.cli._errors import EXIT_BAD_INPUT, CliError
from quantrack.cli._options import JsonOption, WorkspaceOption
from quantrack.cli._output import console, emit_json, fmt_value, new_table, print_table
from quantrack.cli._state import open_for, state_of

__all__ = ["normalize_result", "sql_command"]


def normalize_result(result: Any) -> tuple[list[str], list[list[Any]]]:
    """Column names and rows from what a tracker's ``query`` returned.

    Accepts ``(columns, rows)``, an object with ``columns`` and ``rows``, a list of
    mappings, or a data frame.
    """
    if hasattr(result, "columns") and hasattr(result, "rows"):
        return [str(c) for c in result.columns], [list(r) for r in result.rows]
    if hasattr(result, "to_dict") and hasattr(result, "columns"):
        columns = [str(c) for c in result.columns]
        return columns, [list(r) for r in result.itertuples(index=False, name=None)]
    if isinstance(result, tuple) and len(result) == 2:
        columns, rows = result
        return [str(c) for c in columns], [list(r) for r in rows]
    if isinstance(result, Sequence):
        rows_in = list(result)
        if not rows_in:
            return [], []
        if all(isinstance(r, Mapping) for r in rows_in):
            columns = list(rows_in[0])
            return columns, [[r.get(c) for c in columns] for r in rows_in]
    raise TypeError(f"the tracker's query returned an unexpected {type(result).__name__}")


def sql_command(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(metavar="QUERY", help="A SELECT statement.")],
    limit: Annotated[
        int, typer.Option(min=1, help="Print at most this many rows in the table.")
    ] = 100,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run read-only SQL over the views experiments, metrics, params, batches, batch_items."""
    if not query.strip():
        raise CliError("the query is empty; give a SELECT statement", exit_code=EXIT_BAD_INPUT)
    ws = open_for(ctx, workspace)
    runner = getattr(ws.tracker, "query", None)
    if not callable(runner):
        raise CliError(
            "this workspace's tracker cannot run SQL (only DuckDB workspaces can)",
            exit_code=EXIT_BAD_INPUT,
        )
    columns, rows = normalize_result(runner(query))
    if as_json or state_of(ctx).json:
        emit_json([dict(zip(columns, row, strict=True)) for row in rows])
        return
    table = new_table(*columns, flex=columns)
    for row in rows[:limit]:
        table.add_row(*(fmt_value(v) for v in row))
    print_table(table, empty="no rows")
    if len(rows) > limit:
        console().print(f"... {len(rows) - limit} more rows (raise --limit or use --json)")
