"""``quantrack report ID... -o report.html``: an HTML page comparing runs and sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quantrack.cli._errors import EXIT_NOT_FOUND, CliError
from quantrack.cli._options import JsonOption, WorkspaceOption
from quantrack.cli._output import console, emit_json
from quantrack.cli._state import open_for, resolve_batch, resolve_experiment, state_of
from quantrack.domain import Batch, Experiment, QuantrackError
from quantrack.workspace import Workspace

__all__ = ["report_command"]


def _resolve(ws: Workspace, ids: list[str]) -> tuple[list[Experiment], list[Batch]]:
    experiments: list[Experiment] = []
    batches: list[Batch] = []
    for text in ids:
        try:
            experiments.append(resolve_experiment(ws, text))
            continue
        except QuantrackError as exc:
            experiment_error = exc
        try:
            batches.append(resolve_batch(ws, text))
        except QuantrackError:
            raise CliError(
                f"{text!r} is neither a run nor a batch ({experiment_error}); find ids with "
                "`quantrack runs list` or `quantrack batches list`",
                exit_code=EXIT_NOT_FOUND,
            ) from None
    return experiments, batches


def report_command(
    ctx: typer.Context,
    ids: Annotated[
        list[str], typer.Argument(metavar="ID...", help="Run or batch ids (or unique prefixes).")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the HTML page.")
    ] = Path("report.html"),
    metric: Annotated[
        str, typer.Option(help="Metric that ranks a batch's runs and colours its heat map.")
    ] = "sharpe",
    x: Annotated[str | None, typer.Option("--x", help="Heat map: param on the x axis.")] = None,
    y: Annotated[str | None, typer.Option("--y", help="Heat map: param on the y axis.")] = None,
    top: Annotated[
        int, typer.Option(min=1, help="Curves drawn per batch (its best runs by the metric).")
    ] = 10,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write a self-contained HTML report: equity curves, drawdowns, metrics, params and,
    for a batch, a heat map of a metric over two params.
    """
    from quantrack.reports import collect_report_data, write_report

    ws = open_for(ctx, workspace)
    experiments, batches = _resolve(ws, ids)
    data = collect_report_data(ws, experiments, batches, metric=metric, x=x, y=y, top=top)
    path = write_report(data, output)
    if as_json or state_of(ctx).json:
        emit_json(
            {
                "path": str(path),
                "runs": [r.id for r in data.runs],
                "curves": sorted(data.curves),
                "heatmap": {"metric": metric, "x": data.x, "y": data.y} if data.x else None,
                "notes": data.notes,
            }
        )
        return
    for note in data.notes:
        console(stderr=True).print(f"note: {note}")
    console().print(f"wrote {path} ({len(data.runs)} runs, {len(data.curves)} equity curves)")
