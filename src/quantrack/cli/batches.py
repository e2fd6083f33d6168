"""``quantrack batches ...``: sweeps and other groups of runs."""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from quantrack.cli._errors import EXIT_ERROR, CliError
from quantrack.cli._options import JsonOption, WorkspaceOption
from quantrack.cli._output import (
    batch_json,
    console,
    emit_json,
    fmt_number,
    fmt_time,
    key_value_table,
    new_table,
    print_table,
)
from quantrack.cli._state import open_for, resolve_batch, state_of
from quantrack.cli.runs import parse_when
from quantrack.domain import Batch, BatchStatus
from quantrack.workspace import Workspace

if TYPE_CHECKING:
    from quantrack.analysis import BatchAssessment

__all__ = ["app", "load_function", "statistics_json"]

app = typer.Typer(help="Inspect, retry and resume batches of runs.", no_args_is_help=True)


def _status(text: str | None) -> BatchStatus | None:
    if text is None:
        return None
    try:
        return BatchStatus(text.strip().lower())
    except ValueError:
        known = ", ".join(s.value for s in BatchStatus)
        raise CliError(f"--status {text!r} is not a batch status; use one of {known}") from None


def _print_batches(batches: list[Batch]) -> None:
    table = new_table("ID", "STATUS", "DONE", "FAIL", "NAME", flex=("NAME",))
    for b in batches:
        table.add_row(b.id, b.status.value, f"{b.succeeded}/{b.total}", str(b.failed), b.name)
    print_table(table, empty="no batches")


@app.command("list")
def list_batches(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only batches in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many batches.")] = 20,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """List batches, newest first."""
    wanted = _status(status)
    ws = open_for(ctx, workspace)
    batches = ws.observer.list_batches(status=wanted, limit=limit)
    if as_json or state_of(ctx).json:
        emit_json([batch_json(b) for b in batches])
        return
    _print_batches(batches)


@app.command("show")
def show_batch(
    ctx: typer.Context,
    batch_id: Annotated[str, typer.Argument(metavar="ID", help="Batch id or unique prefix.")],
    metric: Annotated[
        str | None,
        typer.Option(
            help="Metric that picks the best run for the DSR (default: the batch's recorded "
            "selection metric, else sharpe)."
        ),
    ] = None,
    partitions: Annotated[
        int, typer.Option(help="Blocks of the PBO's cross-validation (even, >= 2).")
    ] = 16,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one batch: its counts, timing, error summary, overfitting statistics and items."""
    if partitions < 2 or partitions % 2:
        raise CliError(f"--partitions must be an even number of at least 2, got {partitions}")
    if metric is not None and not metric.strip():
        raise CliError("--metric must name a metric, such as sharpe")
    ws = open_for(ctx, workspace)
    batch = resolve_batch(ws, batch_id)
    items = ws.observer.batch_items(batch.id)
    assessment = ws.assess_batch(
        batch.id, metric=metric or batch.selection_metric or "sharpe", partitions=partitions
    )
    if as_json or state_of(ctx).json:
        emit_json(
            {
                **batch_json(batch),
                "duration_seconds": batch.duration_seconds,
                "throughput": batch.throughput,
                "overfitting": assessment.to_dict(),
                "items": [item.model_dump(mode="json") for item in items],
            }
        )
        return
    rows: list[tuple[str, object]] = [
        ("id", batch.id),
        ("name", batch.name),
        ("status", batch.status.value),
        (
            "items",
            f"{batch.total} ({batch.succeeded} succeeded, {batch.failed} failed, "
            f"{batch.cancelled} cancelled, {batch.reused} reused)",
        ),
        ("created", fmt_time(batch.created_at)),
        ("started", fmt_time(batch.started_at)),
        ("completed", fmt_time(batch.completed_at)),
        ("duration", f"{fmt_number(batch.duration_seconds)} s" if batch.duration_seconds else ""),
        ("throughput", f"{fmt_number(batch.throughput)} items/s" if batch.throughput else ""),
        ("errors", ", ".join(f"{k.value} {v}" for k, v in sorted(batch.error_summary.items()))),
        ("tags", ", ".join(batch.tags)),
    ]
    out = console()
    out.print(key_value_table([(k, v) for k, v in rows if v not in ("", None)], title="batch"))
    out.print(key_value_table(_overfitting_rows(assessment), title="overfitting"))
    table = new_table("#", "TRY", "STATUS", "RUN", "ERROR", wrap=("ERROR",))
    shown = items[:50]
    for item in shown:
        table.add_row(
            str(item.index),
            str(item.attempt),
            item.status.value + (" (reused)" if item.reused else ""),
            item.experiment_id or "",
            item.error or "",
        )
    print_table(table, empty="no items recorded yet")
    if len(items) > len(shown):
        out.print(f"... {len(items) - len(shown)} more items (use --json to see all)")


def _overfitting_rows(assessment: BatchAssessment) -> list[tuple[str, object]]:
    best = assessment.best
    pbo = assessment.pbo
    rows: list[tuple[str, object]] = [
        ("trials", assessment.trials),
        ("selection metric", assessment.metric),
        (
            "best run",
            f"{best.experiment_id} ({assessment.metric} {fmt_number(best.value)})" if best else "",
        ),
        ("PSR of best", fmt_number(best.psr) if best else ""),
        ("DSR of best", fmt_number(assessment.dsr)),
        ("PBO", f"{fmt_number(pbo.pbo)} ({pbo.combinations} splits)" if pbo else ""),
        ("partitions", assessment.partitions),
        ("periods", assessment.observations),
    ]
    rows.extend(("note", note) for note in assessment.notes)
    return [(k, v) for k, v in rows if v not in ("", None)]


@app.command("failed")
def failed_items(
    ctx: typer.Context,
    batch_id: Annotated[str, typer.Argument(metavar="ID", help="Batch id or unique prefix.")],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """The failed items of a batch (latest attempt of each), with their errors."""
    ws = open_for(ctx, workspace)
    batch = resolve_batch(ws, batch_id)
    from quantrack.services.batches import get_failed_items

    failed = get_failed_items(ws.observer, batch.id)
    if as_json or state_of(ctx).json:
        emit_json([item.model_dump(mode="json") for item in failed])
        return
    table = new_table("#", "TRY", "CATEGORY", "ERROR", wrap=("ERROR",))
    for item in failed:
        category = item.error_category.value if item.error_category else ""
        table.add_row(str(item.index), str(item.attempt), category, item.error or "")
    print_table(table, empty=f"batch {batch.id} has no failed items")


def statistics_json(ws: Workspace, since: dt.datetime | None) -> dict[str, Any]:
    """:func:`quantrack.services.batches.batch_statistics` as JSON data."""
    from quantrack.services.batches import batch_statistics

    stats = batch_statistics(ws.observer, since)
    return {
        "since": since.isoformat() if since else None,
        "batches": stats.batches,
        "by_status": {k.value: v for k, v in sorted(stats.by_status.items())},
        "items": stats.items,
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "cancelled": stats.cancelled,
        "reused": stats.reused,
        "success_rate": stats.success_rate,
        "errors_by_category": {k.value: v for k, v in sorted(stats.error_summary.items())},
        "duration_seconds": stats.duration_seconds,
        "items_per_second": stats.throughput,
    }


@app.command("stats")
def stats(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option(help="Only batches created at or after this ISO date.")
    ] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Totals over batches: statuses, items, failures by category, throughput."""
    moment = parse_when(since, "--since") if since else None
    ws = open_for(ctx, workspace)
    data = statistics_json(ws, moment)
    if as_json or state_of(ctx).json:
        emit_json(data)
        return
    rate = data["success_rate"]
    rows: list[tuple[str, object]] = [
        ("since", data["since"] or "the beginning"),
        ("batches", data["batches"]),
        ("by status", ", ".join(f"{k} {v}" for k, v in sorted(data["by_status"].items()))),
        ("items", data["items"]),
        ("succeeded", data["succeeded"]),
        ("failed", data["failed"]),
        ("success rate", f"{rate:.1%}" if rate is not None else ""),
        ("errors", ", ".join(f"{k} {v}" for k, v in sorted(data["errors_by_category"].items()))),
        ("items/s", fmt_number(data["items_per_second"])),
    ]
    console().print(key_value_table(rows, title="batch statistics"))


def load_function(spec: str, option: str = "--fn") -> Callable[..., Any]:
    """The function named ``module:qualified.name`` (or ``module.function``)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep:
        module_name, _, attribute = spec.rpartition(".")
    if not module_name or not attribute:
        raise CliError(f"{option} {spec!r} must name a function as module:function")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(
            f"{option} {spec!r}: cannot import module {module_name!r} ({exc}); run from the "
            "folder that holds it, or install it"
        ) from exc
    for part in attribute.split("."):
        target = getattr(target, part, None)
    if not callable(target) or "<locals>" in attribute:
        raise CliError(
            f"{option} {spec!r}: module {module_name!r} has no importable function {attribute!r}"
        )
    return target  # type: ignore[no-any-return]


def _batch_function(batch: Batch, fn: str | None, key: str) -> Callable[..., Any] | None:
    spec = fn if fn is not None else batch.params.get(key)
    if spec is None:
        return None
    if not isinstance(spec, str) or not spec:
        raise CliError(
            f"batch {batch.id} does not say which function ran it; pass --fn module:function"
        )
    return load_function(spec, "--fn" if fn is not None else f"the batch's {key}")


def _rerun_command(
    ctx: typer.Context, method: str, batch_id: str, fn: str | None, workspace: Any, as_json: bool
) -> None:
    ws = open_for(ctx, workspace)
    batch = resolve_batch(ws, batch_id)
    function = _batch_function(batch, fn, "function")
    if function is None:
        raise CliError(
            f"batch {batch.id} was not started by run_batch, so it cannot be rerun; pass --fn "
            "module:function if you know its function"
        )
    metrics_of = _batch_function(batch, None, "metrics_of")
    if method == "retry_failed":
        after = ws.retry_failed(batch.id, function, metrics_of=metrics_of)
    else:
        after = ws.resume_batch(batch.id, function, metrics_of=metrics_of)
    if as_json or state_of(ctx).json:
        emit_json(batch_json(after))
    else:
        _print_batches([after])
    if after.status is BatchStatus.FAILED:
        raise typer.Exit(EXIT_ERROR)


FnOption = Annotated[
    str | None,
    typer.Option(
        "--fn",
        help="The batch's function as module:function (default: the one the batch recorded).",
    ),
]


@app.command("retry")
def retry(
    ctx: typer.Context,
    batch_id: Annotated[str, typer.Argument(metavar="ID", help="Batch id or unique prefix.")],
    fn: FnOption = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rerun an ended batch's failed items as a new batch linked to the failed runs."""
    _rerun_command(ctx, "retry_failed", batch_id, fn, workspace, as_json)


@app.command("resume")
def resume(
    ctx: typer.Context,
    batch_id: Annotated[str, typer.Argument(metavar="ID", help="Batch id or unique prefix.")],
    fn: FnOption = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Finish an interrupted batch: run only the items that have not completed."""
    _rerun_command(ctx, "resume_batch", batch_id, fn, workspace, as_json)
