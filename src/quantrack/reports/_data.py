"""Gathering what a report shows from a workspace: runs, their equity curves, a sweep."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quantrack.domain import Batch, Experiment, ExperimentFilter, QuantrackError
from quantrack.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from quantrack.analysis import BatchAssessment

__all__ = ["ReportData", "collect_report_data", "equity_curve", "pick_heatmap_params"]


@dataclass
class ReportData:
    """Everything one report page shows.

    ``runs`` are the runs of the tables; ``curves`` maps a run id to its equity curve
    (only runs that have one); ``sweep`` holds every run of a batch for the heat map of
    ``metric`` over ``x`` and ``y``. ``assessments`` hold each batch's overfitting
    statistics (PSR of every run, DSR of the best, PBO).
    """

    title: str
    runs: list[Experiment]
    curves: dict[str, pd.Series] = field(default_factory=dict)
    metric: str | None = None
    sweep: list[Experiment] = field(default_factory=list)
    x: str | None = None
    y: str | None = None
    notes: list[str] = field(default_factory=list)
    assessments: list[BatchAssessment] = field(default_factory=list)


def equity_curve(
    ws: Workspace, experiment: Experiment, cache: dict[str, Any] | None = None
) -> pd.Series | None:
    """The run's equity curve (value over time), or ``None`` when it recorded none.

    See :func:`quantrack.adapters.frames.equity_curve`, which this reads the workspace's
    artifacts with.
    """
    from quantrack.adapters.frames import equity_curve as read_curve

    return read_curve(ws.artifacts, experiment, cache)


def _numeric_varying(runs: list[Experiment]) -> list[str]:
    names: list[str] = []
    for name in sorted({k for e in runs for k in e.params}):
        values = [e.params.get(name) for e in runs]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if numeric and len(set(values)) > 1:
            names.append(name)
    return names


def pick_heatmap_params(
    runs: list[Experiment], x: str | None, y: str | None
) -> tuple[str | None, str | None]:
    """The two params of the heat map: the ones asked for, else the first two numeric
    params that vary across the runs (``None`` when there are not two).
    """
    varying = _numeric_varying(runs)
    known = {k for e in runs for k in e.params}
    for name in (x, y):
        if name is not None and name not in known:
            raise QuantrackError(
                f"no run of the batch has a param {name!r}; its params are "
                f"{', '.join(sorted(known)) or 'none'}"
            )
    rest = [n for n in varying if n not in (x, y)]
    x = x or (rest.pop(0) if rest else None)
    y = y or (rest.pop(0) if rest else None)
    return x, y


def collect_report_data(
    ws: Workspace,
    experiments: list[Experiment],
    batches: list[Batch],
    *,
    metric: str = "sharpe",
    x: str | None = None,
    y: str | None = None,
    top: int = 10,
) -> ReportData:
    """What a report of these runs and batches shows.

    A batch contributes its ``top`` runs by ``metric`` to the curves and tables, and all
    its runs to the heat map.
    """
    runs = list(experiments)
    sweep: list[Experiment] = []
    notes: list[str] = []
    for batch in batches:
        members = ws.tracker.list_experiments(ExperimentFilter(batch_id=batch.id))
        sweep.extend(members)
        ranked = sorted(
            (e for e in members if metric in e.metrics),
            key=lambda e: e.metrics[metric],
            reverse=True,
        )
        best = ranked[:top] or members[:top]
        if len(members) > len(best):
            notes.append(
                f"batch {batch.name} ({batch.id}): the {len(best)} best of {len(members)} runs "
                f"by {metric} are drawn"
            )
        runs.extend(e for e in best if e.id not in {r.id for r in runs})
    cache: dict[str, Any] = {}
    curves = {}
    for run in runs:
        curve = equity_curve(ws, run, cache)
        if curve is None:
            notes.append(f"run {run.name} ({run.id}) recorded no equity curve")
        else:
            curves[run.id] = curve
    hx, hy = pick_heatmap_params(sweep, x, y) if sweep else (None, None)
    if sweep and (hx is None or hy is None):
        notes.append("no heat map: the batch does not vary two numeric params")
    names = [b.name for b in batches] + [e.name for e in experiments]
    title = "quantrack report: " + ", ".join(dict.fromkeys(names))
    from quantrack.analysis import assess_batch

    return ReportData(
        title=title,
        runs=runs,
        curves=curves,
        metric=metric,
        sweep=sweep,
        x=hx,
        y=hy,
        notes=notes,
        assessments=[assess_batch(ws, b.id, metric=metric) for b in batches],
    )
