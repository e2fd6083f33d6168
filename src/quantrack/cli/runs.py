"""``quantrack runs ...``: find, inspect, compare and remove recorded experiments."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from quantrack.cli import _diff
from quantrack.cli._errors import EXIT_BAD_INPUT, CliError
from quantrack.cli._options import JsonOption, WorkspaceOption
from quantrack.cli._output import (
    console,
    emit_json,
    experiment_json,
    fmt_number,
    fmt_time,
    fmt_value,
    key_value_table,
    new_table,
    print_table,
)
from quantrack.cli._state import open_for, resolve_batch, resolve_experiment, state_of
from quantrack.domain import (
    Experiment,
    ExperimentFilter,
    ExperimentStatus,
    InvalidFilter,
    parse_where,
)
from quantrack.domain.artifacts import check_artifact_id
from quantrack.domain.query import Comparison, Expression

__all__ = ["app", "build_filter", "flatten", "parse_sort", "parse_when", "print_ranked"]

app = typer.Typer(help="Find, inspect, compare and remove recorded runs.", no_args_is_help=True)

_DEFAULT_METRICS = ("sharpe", "total_return", "max_drawdown", "annual_return")


def parse_when(text: str, option: str, *, end_of_day: bool = False) -> dt.datetime:
    """An ISO date or datetime as an aware UTC datetime (naive means UTC).

    A plain date given to ``--until`` (``end_of_day``) means the end of that day, so
    ``--since 2024-01-01 --until 2024-01-31`` covers all of January.
    """
    try:
        if len(text.strip()) == 10:
            day = dt.date.fromisoformat(text.strip())
            moment = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
            return moment + dt.timedelta(days=1) if end_of_day else moment
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(
            f"{option} {text!r} is not an ISO date or datetime; use e.g. 2024-01-31 or "
            "2024-01-31T14:30"
        ) from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def parse_sort(text: str) -> tuple[str, bool]:
    """``-sharpe`` → (``sharpe``, descending); ``sharpe`` → ascending; ``created`` is
    ``created_at``.
    """
    descending = text.startswith("-")
    name = text.lstrip("-+").strip()
    if name in ("created", "time", "date"):
        name = "created_at"
    if not name or not name.replace("_", "a").isalnum() or name[0].isdigit():
        raise CliError(
            f"--sort {text!r} is not a metric name or created_at; write e.g. --sort -sharpe "
            "(a leading minus sorts descending)"
        )
    return name, descending


def parse_where_option(text: str) -> Expression:
    """Parse ``--where`` with :func:`parse_where`; a syntax error points at its column."""
    try:
        return parse_where(text)
    except InvalidFilter as exc:
        column = exc.column or 1
        reason = str(exc).split("\n", 1)[0]
        pointer = f"  {text}\n  {' ' * (column - 1)}^"
        raise CliError(f"--where: {reason}", exit_code=EXIT_BAD_INPUT, detail=pointer) from exc


def _names_in(expression: Expression | None) -> list[str]:
    if expression is None:
        return []
    if isinstance(expression, Comparison):
        return [expression.field]
    return [name for item in expression.items for name in _names_in(item)]


def build_filter(
    *,
    status: list[str] | None = None,
    strategy: str | None = None,
    engine: str | None = None,
    tags: list[str] | None = None,
    batch_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
    where: str | None = None,
    sort: str = "-created_at",
    limit: int | None = None,
    name: str | None = None,
) -> ExperimentFilter:
    """The :class:`ExperimentFilter` the ``runs list`` options describe."""
    statuses: set[ExperimentStatus] = set()
    for text in status or []:
        try:
            statuses.add(ExperimentStatus(text.strip().lower()))
        except ValueError:
            known = ", ".join(s.value for s in ExperimentStatus)
            raise CliError(f"--status {text!r} is not a status; use one of {known}") from None
    order_by, descending = parse_sort(sort)
    return ExperimentFilter(
        status=frozenset(statuses) or None,
        name=name,
        strategy=strategy,
        engine=engine,
        tags=frozenset(tags or ()),
        batch_id=batch_id,
        created_after=parse_when(since, "--since") if since else None,
        created_before=parse_when(until, "--until", end_of_day=True) if until else None,
        where=parse_where_option(where) if where else None,
        order_by=order_by,
        descending=descending,
        limit=limit,
    )


def _metric_columns(experiments: list[Experiment], wanted: list[str], room: int) -> list[str]:
    present = {name for e in experiments for name in e.metrics}
    columns: list[str] = []
    for name in [*wanted, *_DEFAULT_METRICS, *sorted(present)]:
        if name in present and name not in columns:
            columns.append(name)
    return columns[:room]


def print_runs(experiments: list[Experiment], *, metrics: list[str] | None = None) -> None:
    """The runs table: full id (ids are time-ordered, so it also says when), status, name
    and a few metrics.
    """
    columns = _metric_columns(experiments, metrics or [], 2)
    table = new_table("ID", "STATUS", "NAME", *columns, right=columns, flex=("NAME",))
    for experiment in experiments:
        table.add_row(
            experiment.id,
            experiment.status.value,
            experiment.name,
            *(fmt_number(experiment.metrics.get(m)) for m in columns),
        )
    print_table(table, empty="no runs match")


@app.command("list")
def list_runs(
    ctx: typer.Context,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="Only runs in this status (repeatable)."),
    ] = None,
    strategy: Annotated[str | None, typer.Option(help="Only runs of this strategy.")] = None,
    engine: Annotated[str | None, typer.Option(help="Only runs of this engine.")] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Only runs with this tag (repeatable).")
    ] = None,
    batch: Annotated[
        str | None, typer.Option(help="Only runs of this batch (id or prefix).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Only runs with exactly this name.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Created at or after this ISO date/datetime (UTC).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Created before the end of this ISO date/datetime.")
    ] = None,
    where: Annotated[
        str | None,
        typer.Option(help='Filter on metrics and params, e.g. "sharpe > 1 and window < 20".'),
    ] = None,
    sort: Annotated[
        str, typer.Option(help="created_at or a metric; a leading minus sorts descending.")
    ] = "-created_at",
    limit: Annotated[int, typer.Option(min=1, help="At most this many runs.")] = 20,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """List recorded runs, newest first, filtered and sorted."""
    query = build_filter(
        status=status,
        strategy=strategy,
        engine=engine,
        tags=tag,
        since=since,
        until=until,
        where=where,
        sort=sort,
        limit=limit,
        name=name,
    )
    ws = open_for(ctx, workspace)
    if batch:
        query = query.model_copy(update={"batch_id": resolve_batch(ws, batch).id})
    experiments = ws.tracker.list_experiments(query)
    if as_json or state_of(ctx).json:
        emit_json([experiment_json(e) for e in experiments])
        return
    wanted = [query.order_by] if query.order_by != "created_at" else []
    print_runs(experiments, metrics=[*wanted, *_names_in(query.where)])


def _lineage(ws: Any, experiment: Experiment) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    definition = experiment.definition
    for label, value in (
        ("retry of", definition.retry_of),
        ("reproduces", definition.reproduces),
        ("reused from", definition.reused_from),
    ):
        if value:
            rows.append((label, value))
    if definition.batch_id:
        siblings = ws.tracker.list_experiments(ExperimentFilter(batch_id=definition.batch_id))
        for other in siblings:
            if other.definition.retry_of == experiment.id:
                rows.append(("retried by", other.id))
            if other.definition.reused_from == experiment.id:
                rows.append(("reused by", other.id))
    return rows


@app.command("show")
def show_run(
    ctx: typer.Context,
    experiment_id: Annotated[str, typer.Argument(metavar="ID", help="Run id or unique prefix.")],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one run: definition, provenance, metrics, artifacts and lineage."""
    ws = open_for(ctx, workspace)
    experiment = resolve_experiment(ws, experiment_id)
    lineage = _lineage(ws, experiment)
    if as_json or state_of(ctx).json:
        data = experiment_json(experiment)
        data["duration_seconds"] = experiment.duration_seconds
        data["lineage"] = [{"relation": k, "experiment_id": v} for k, v in lineage]
        emit_json(data)
        return
    d = experiment.definition
    p = d.provenance
    summary: list[tuple[str, object]] = [
        ("id", experiment.id),
        ("name", d.name),
        ("status", experiment.status.value),
        ("strategy", d.strategy),
        ("engine", f"{d.engine} {p.engine_version or ''}".strip()),
        ("created", fmt_time(experiment.created_at)),
        ("started", fmt_time(experiment.started_at)),
        ("completed", fmt_time(experiment.completed_at)),
        (
            "duration",
            fmt_number(experiment.duration_seconds) + " s"
            if experiment.duration_seconds is not None
            else "",
        ),
        ("config hash", d.config_hash),
        ("tags", ", ".join(d.tags)),
        ("seed", d.seed),
        ("description", d.description),
        ("batch", f"{d.batch_id} item {d.batch_index} attempt {d.attempt}" if d.batch_id else ""),
        ("error", f"[{experiment.error_category}] {experiment.error}" if experiment.error else ""),
    ]
    out = console()
    out.print(key_value_table([(k, v) for k, v in summary if v not in ("", None)], title="run"))
    provenance = [
        ("git", f"{p.git_commit or '-'} {p.git_branch or ''}{' (dirty)' if p.git_dirty else ''}"),
        ("python", p.python_version),
        ("platform", p.platform),
        ("host", p.hostname),
        ("entry point", p.entry_point),
        ("code hash", p.code_hash),
        ("packages", ", ".join(f"{k} {v}" for k, v in sorted(p.packages.items()))),
    ]
    out.print(key_value_table([(k, v) for k, v in provenance if v], title="provenance"))
    if d.params:
        out.print(key_value_table(sorted(flatten(d.params).items()), title="params"))
    if experiment.metrics:
        out.print(key_value_table(sorted(experiment.metrics.items()), title="metrics"))
    refs = [("input", ref) for ref in d.inputs] + [("output", ref) for ref in experiment.artifacts]
    if refs:
        table = new_table(
            "ROLE", "KIND", "NAME", "SIZE", "ID", title="artifacts", right=("SIZE",), flex=("NAME",)
        )
        for role, ref in refs:
            name = ref.name or ""
            if ref.part:
                name = f"{name}[{ref.part}]"
            table.add_row(role, ref.kind, name, fmt_number(ref.size), ref.id[:16])
        print_table(table)
    if lineage:
        out.print(key_value_table(lineage, title="lineage"))


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (``broker.cash``), for reading; lists stay whole."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _compare_rows(
    experiments: list[Experiment],
) -> tuple[dict[str, list[object]], dict[str, list[object]]]:
    param_names = sorted({k for e in experiments for k in e.params})
    metric_names = sorted({k for e in experiments for k in e.metrics})
    params: dict[str, list[object]] = {
        k: [e.params.get(k) for e in experiments] for k in param_names
    }
    metrics: dict[str, list[object]] = {
        k: [e.metrics.get(k) for e in experiments] for k in metric_names
    }
    return params, metrics


def _differs(values: list[object]) -> bool:
    return any(v != values[0] for v in values[1:])


@app.command("compare")
def compare_runs(
    ctx: typer.Context,
    experiment_ids: Annotated[
        list[str], typer.Argument(metavar="ID...", help="Two or more run ids or prefixes.")
    ],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show metrics and params of several runs side by side; differences are marked *."""
    if len(experiment_ids) < 2:
        raise CliError("compare needs at least two run ids")
    ws = open_for(ctx, workspace)
    experiments = [resolve_experiment(ws, i) for i in experiment_ids]
    params, metrics = _compare_rows(experiments)
    if as_json or state_of(ctx).json:
        emit_json(
            {
                "experiments": [
                    {"id": e.id, "name": e.name, "status": e.status.value} for e in experiments
                ],
                "params": params,
                "metrics": metrics,
                "differs": {
                    "params": [k for k, v in params.items() if _differs(v)],
                    "metrics": [k for k, v in metrics.items() if _differs(v)],
                },
            }
        )
        return
    legend = new_table("#", "ID", "NAME", "STATUS", flex=("NAME",))
    for i, e in enumerate(experiments, 1):
        legend.add_row(f"#{i}", e.id, e.name, e.status.value)
    print_table(legend)
    labels = [f"#{i}" for i in range(1, len(experiments) + 1)]
    table = new_table("", "", *labels, right=labels, flex=("", *labels))
    for section, rows in (("param", params), ("metric", metrics)):
        for key, values in rows.items():
            mark = _differs(values)
            style = "bold yellow" if mark else ""
            table.add_row(
                Text(("* " if mark else "  ") + key, style=style),
                section,
                *(Text(fmt_value(v), style=style) for v in values),
            )
    print_table(table, empty="the runs have no params or metrics")


@app.command("diff")
def diff_runs(
    ctx: typer.Context,
    first: Annotated[str, typer.Argument(metavar="A", help="Run id or prefix.")],
    second: Annotated[str, typer.Argument(metavar="B", help="Run id or prefix.")],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """What differs between two runs: params, code, input data, packages, metrics."""
    ws = open_for(ctx, workspace)
    a = resolve_experiment(ws, first)
    b = resolve_experiment(ws, second)
    report = _diff.diff_experiments(ws, a, b)
    if as_json or state_of(ctx).json:
        emit_json(report)
        return
    _diff.print_diff(report)


@app.command("best")
def best_runs(
    ctx: typer.Context,
    metric: Annotated[str, typer.Option(help="The metric to rank by.")] = "sharpe",
    n: Annotated[int, typer.Option("-n", "--top", min=1, help="How many runs.")] = 10,
    strategy: Annotated[str | None, typer.Option(help="Only runs of this strategy.")] = None,
    batch: Annotated[str | None, typer.Option(help="Only runs of this batch.")] = None,
    lowest: Annotated[
        bool, typer.Option("--lowest", help="Lower is better (e.g. max_drawdown).")
    ] = False,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """The completed runs with the best value of a metric.

    With ``--batch``, the batch records that this metric picked its best run (shown by
    ``batches show``, which deflates that run's Sharpe ratio by the batch's trials).
    """
    name, _ = parse_sort(metric)
    ws = open_for(ctx, workspace)
    batch_id = resolve_batch(ws, batch).id if batch else None
    query = ExperimentFilter(
        status=frozenset({ExperimentStatus.COMPLETED}),
        strategy=strategy,
        batch_id=batch_id,
        order_by=name,
        descending=not lowest,
        limit=n,
    )
    experiments = [e for e in ws.tracker.list_experiments(query) if name in e.metrics]
    if batch_id is not None and experiments:
        ws.observer.record_selection(batch_id, name)
    if as_json or state_of(ctx).json:
        emit_json([experiment_json(e) for e in experiments])
        return
    print_ranked(experiments, name)


def print_ranked(experiments: list[Experiment], metric: str) -> None:
    """Runs ranked by ``metric``: rank, id, the metric, name and params."""
    table = new_table("#", "ID", metric, "NAME", "PARAMS", right=(metric,), flex=("NAME", "PARAMS"))
    for rank, e in enumerate(experiments, 1):
        params = " ".join(f"{k}={fmt_value(v)}" for k, v in sorted(e.params.items()))
        table.add_row(str(rank), e.id, fmt_number(e.metrics.get(metric)), e.name, params)
    print_table(table, empty=f"no completed run has the metric {metric!r}")


@app.command("find-hash")
def find_hash(
    ctx: typer.Context,
    config_hash: Annotated[str, typer.Argument(metavar="HASH", help="A config hash.")],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Runs whose parameters have this config hash (the same configuration)."""
    text = config_hash.strip().lower()
    if len(text) < 6 or any(c not in "0123456789abcdef" for c in text):
        raise CliError(
            f"{config_hash!r} is not a config hash; give its hex digits (at least 6), as shown "
            "by `quantrack runs show`"
        )
    ws = open_for(ctx, workspace)
    experiments = ws.tracker.list_experiments(ExperimentFilter(config_hash=text))
    if not experiments:
        # A shortened hash: fall back to comparing prefixes.
        experiments = [e for e in ws.tracker.list_experiments() if e.config_hash.startswith(text)]
    if as_json or state_of(ctx).json:
        emit_json([experiment_json(e) for e in experiments])
        return
    print_runs(experiments)


def relative_distance(a: object, b: object) -> float | None:
    """How far apart two param values are: 0 when equal, the relative difference of two
    numbers, ``None`` when they cannot be compared (different, non-numeric).
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return 0.0 if a == b else None
    if isinstance(a, int | float) and isinstance(b, int | float):
        scale = max(abs(a), abs(b))
        return 0.0 if scale == 0 else abs(a - b) / scale
    return 0.0 if a == b else None


@app.command("similar")
def similar_runs(
    ctx: typer.Context,
    experiment_id: Annotated[str, typer.Argument(metavar="ID", help="Run id or prefix.")],
    tolerance: Annotated[
        float, typer.Option(min=0.0, help="Largest relative difference of a numeric param.")
    ] = 0.1,
    limit: Annotated[int, typer.Option(min=1, help="At most this many runs.")] = 20,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Runs of the same strategy whose numeric params are all within a relative tolerance
    (and whose other params are equal).
    """
    ws = open_for(ctx, workspace)
    base = resolve_experiment(ws, experiment_id)
    candidates = ws.tracker.list_experiments(
        ExperimentFilter(strategy=base.definition.strategy, engine=base.definition.engine)
    )
    found: list[tuple[float, Experiment]] = []
    for other in candidates:
        if other.id == base.id or set(other.params) != set(base.params):
            continue
        distances = [relative_distance(base.params[k], other.params[k]) for k in base.params]
        if all(d is not None and d <= tolerance for d in distances):
            found.append((max((d or 0.0 for d in distances), default=0.0), other))
    found.sort(key=lambda pair: (pair[0], pair[1].id))
    found = found[:limit]
    if as_json or state_of(ctx).json:
        emit_json([{**experiment_json(e), "distance": d} for d, e in found])
        return
    table = new_table("ID", "DIST", "NAME", "PARAMS", right=("DIST",), flex=("NAME", "PARAMS"))
    for distance, e in found:
        params = " ".join(f"{k}={fmt_value(v)}" for k, v in sorted(e.params.items()))
        table.add_row(e.id, fmt_number(distance), e.name, params)
    print_table(table, empty=f"no run is within {tolerance:g} of {base.id}")


@app.command("inputs")
def runs_by_inputs(
    ctx: typer.Context,
    artifact_ids: Annotated[
        list[str], typer.Argument(metavar="ARTIFACT_ID...", help="Input artifact ids (sha256).")
    ],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Runs that used any of these input artifacts (which runs used this data?)."""
    ids = [check_artifact_id(a.strip().lower()) for a in artifact_ids]
    ws = open_for(ctx, workspace)
    experiments = ws.tracker.find_by_input_artifacts(ids)
    if as_json or state_of(ctx).json:
        emit_json([experiment_json(e) for e in experiments])
        return
    print_runs(experiments)


@app.command("export")
def export_run(
    ctx: typer.Context,
    experiment_id: Annotated[str, typer.Argument(metavar="ID", help="Run id or prefix.")],
    dest: Annotated[Path, typer.Argument(metavar="DEST", help="Folder to export into.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier export at DEST.")
    ] = False,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Export one run (record, params, metrics, artifacts, code) into a folder."""
    from quantrack.export import export_experiment

    ws = open_for(ctx, workspace)
    experiment = resolve_experiment(ws, experiment_id)
    try:
        where = export_experiment(ws, experiment.id, dest, overwrite=overwrite)
    except FileExistsError as exc:
        # The library's advice names its keyword; at the command line it is a flag.
        raise CliError(str(exc).replace("overwrite=True", "--overwrite")) from exc
    if as_json or state_of(ctx).json:
        emit_json({"experiment_id": experiment.id, "path": str(where)})
        return
    console().print(f"exported {experiment.id} to {where}")


@app.command("reproduce")
def reproduce_run(
    ctx: typer.Context,
    experiment_id: Annotated[str, typer.Argument(metavar="ID", help="Run id or prefix.")],
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance",
            min=0.0,
            help="Largest relative difference (to max(1, |value|)) still counted as equal.",
        ),
    ] = 1e-9,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rebuild a run from its captured code, params and stored inputs; run and compare it.

    Exits 0 when the run is reproduced and 1 when anything differs (listed).
    """
    from quantrack.reproduce import reproduce

    if not tolerance < float("inf"):  # typer's min= lets nan and inf through
        raise CliError(
            f"--tolerance {tolerance} is not a finite number; pass e.g. --tolerance 1e-6",
            exit_code=EXIT_BAD_INPUT,
        )
    ws = open_for(ctx, workspace)
    experiment = resolve_experiment(ws, experiment_id)
    report = reproduce(ws, experiment.id, tolerance=tolerance)
    if as_json or state_of(ctx).json:
        emit_json(report.to_dict())
    else:
        console().print(Text(report.summary()))
    if not report.reproduced:
        raise typer.Exit(code=1)


@app.command("delete")
def delete_run(
    ctx: typer.Context,
    experiment_id: Annotated[str, typer.Argument(metavar="ID", help="Run id or prefix.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete one run's record (its artifacts stay until `artifacts gc --apply`)."""
    ws = open_for(ctx, workspace)
    experiment = resolve_experiment(ws, experiment_id)
    if not yes and not typer.confirm(
        f"delete run {experiment.id} ({experiment.name}, {experiment.status.value})?",
        err=True,
    ):
        raise CliError("not deleted (answer y, or pass --yes)", exit_code=1)
    ws.tracker.delete_experiment(experiment.id)
    if as_json or state_of(ctx).json:
        emit_json({"deleted": experiment.id})
        return
    console().print(f"deleted {experiment.id}")
