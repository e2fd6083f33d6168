"""``quantrack artifacts ...``: check stored content and collect unreferenced files."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from quantrack.cli._errors import EXIT_BAD_INPUT, EXIT_DAMAGED, CliError
from quantrack.cli._options import JsonOption, WorkspaceOption
from quantrack.cli._output import console, emit_json, fmt_number, new_table, print_table
from quantrack.cli._state import open_for, state_of
from quantrack.domain import ArtifactNotFound, IntegrityError
from quantrack.domain.artifacts import check_artifact_id
from quantrack.workspace import Workspace

__all__ = ["app", "referenced_artifacts"]

app = typer.Typer(
    help="Verify stored artifacts and collect unreferenced ones.", no_args_is_help=True
)


def referenced_artifacts(ws: Workspace) -> set[str]:
    """Every artifact id some recorded run lists as an input or an output."""
    try:
        from quantrack.services.retention import referenced_artifact_ids
    except ImportError:
        pass
    else:
        return set(referenced_artifact_ids(ws.tracker))
    keep: set[str] = set()
    for experiment in ws.tracker.list_experiments():
        keep.update(ref.id for ref in experiment.artifacts)
        keep.update(ref.id for ref in experiment.definition.inputs)
    return keep


@app.command("verify")
def verify(
    ctx: typer.Context,
    artifact_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="[ARTIFACT_ID...]", help="Artifacts to check (sha256 ids)."),
    ] = None,
    check_all: Annotated[
        bool,
        typer.Option("--all", help="Check every stored artifact and every referenced one."),
    ] = False,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Re-hash stored content; exit 5 when any artifact is damaged or missing."""
    if not artifact_ids and not check_all:
        raise CliError("give artifact ids to verify, or --all", exit_code=EXIT_BAD_INPUT)
    wanted = [check_artifact_id(a.strip().lower()) for a in artifact_ids or []]
    ws = open_for(ctx, workspace)
    if check_all:
        wanted = sorted({*wanted, *ws.artifacts.ids(), *referenced_artifacts(ws)})
    problems: list[dict[str, str]] = []
    for artifact_id in wanted:
        try:
            ws.artifacts.verify(artifact_id)
        except IntegrityError as exc:
            problems.append({"id": artifact_id, "problem": "damaged", "message": str(exc)})
        except ArtifactNotFound as exc:
            problems.append({"id": artifact_id, "problem": "missing", "message": str(exc)})
    if as_json or state_of(ctx).json:
        emit_json({"checked": len(wanted), "ok": len(wanted) - len(problems), "problems": problems})
    else:
        table = new_table("ID", "PROBLEM")
        for problem in problems:
            table.add_row(problem["id"], problem["problem"])
        if problems:
            print_table(table)
        console().print(f"{len(wanted)} checked, {len(problems)} damaged or missing")
    if problems:
        raise typer.Exit(EXIT_DAMAGED)


def _gc(ws: Workspace, keep: set[str], dry_run: bool, grace: float) -> dict[str, Any]:
    gc = getattr(ws.artifacts, "gc", None)
    if callable(gc):
        # The store's own collector also removes interrupted writes, and spares files
        # written in the last `grace` seconds (a run that has not listed them yet).
        report = gc(keep, dry_run=dry_run, grace_seconds=grace)
        return {
            "removed": sorted(report.removed),
            "bytes_freed": int(report.bytes_freed),
            "temp_files_removed": int(report.temp_files_removed),
        }
    removed = sorted(set(ws.artifacts.ids()) - keep)
    freed = 0
    for artifact_id in removed:
        freed += ws.artifacts.size(artifact_id)
        if not dry_run:
            ws.artifacts.delete(artifact_id)
    return {"removed": removed, "bytes_freed": freed, "temp_files_removed": 0}


@app.command("gc")
def gc(
    ctx: typer.Context,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run/--apply",
            " /--no-dry-run",
            help="Only report what would be removed (the default); --apply removes it.",
        ),
    ] = True,
    grace: Annotated[
        float,
        typer.Option(min=0.0, help="Spare files written less than this many seconds ago."),
    ] = 3600.0,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove artifacts no recorded run refers to (a dry run unless --apply)."""
    ws = open_for(ctx, workspace)
    keep = referenced_artifacts(ws)
    result = _gc(ws, keep, dry_run, grace)
    result["dry_run"] = dry_run
    result["kept"] = len(keep)
    if as_json or state_of(ctx).json:
        emit_json(result)
        return
    verb = "would remove" if dry_run else "removed"
    console().print(
        f"{verb} {len(result['removed'])} unreferenced artifacts "
        f"({fmt_number(result['bytes_freed'])} bytes); {len(keep)} referenced kept"
        + ("; rerun with --apply to remove them" if dry_run and result["removed"] else "")
    )
