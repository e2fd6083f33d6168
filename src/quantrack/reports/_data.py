"""Gathering what a report shows from a workspace: runs, their equity curves, a sweep."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quantrack.domain import ArtifactRef, Batch, Experiment, ExperimentFilter, QuantrackError
from quantrack.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ReportData", "collect_report_data", "equity_curve", "pick_heatmap_params"]

_EQUITY_KINDS = ("equity_curve", "equity")
_TIME_COLUMNS = ("time", "date", "datetime", "timestamp", "index")
_VALUE_COLUMNS = ("value", "equity", "portfolio_value", "total_value")


@dataclass
class ReportData:
    """Everything one report page shows.

    ``runs`` are the runs of the tables; ``curves`` maps a run id to its equity curve
    (only runs that have one); ``sweep`` holds every run of a batch for the heat map of
    ``metric`` over ``x`` and ``y``.
    """

    title: str
    runs: list[Experiment]
    curves: dict[str, pd.Series] = field(default_factory=dict)
    metric: str | None = None
    sweep: list[Experiment] = field(default_factory=list)
    x: str | None = None
    y: str | None = None
    notes: list[str] = field(default_factory=list)


def _read_frame(ws: Workspace, ref: ArtifactRef) -> pd.DataFrame:
    import pandas as pd

    try:
        from quantrack.adapters.frames import get_frame
    except ImportError:
        data = ws.artifacts.get(ref.id)
        return pd.read_parquet(io.BytesIO(data))
    frame: pd.DataFrame = get_frame(ws.artifacts, ref)
    return frame


def _series_from(frame: pd.DataFrame, ref: ArtifactRef) -> pd.Series | None:

    frame = frame.copy()
    for column in frame.columns:
        if str(column).lower() in _TIME_COLUMNS:
            frame = frame.set_index(column)
            break
    if ref.part is not None:
        for column in frame.columns:
            if str(column) == ref.part:
                return frame[column].astype("float64")
        return None
    for column in frame.columns:
        if str(column).lower() in _VALUE_COLUMNS:
            return frame[column].astype("float64")
    numeric = frame.select_dtypes("number")
    if numeric.shape[1] == 0:
        return None
    series: pd.Series = numeric.iloc[:, 0].astype("float64")
    return series


def equity_curve(
    ws: Workspace, experiment: Experiment, cache: dict[str, Any] | None = None
) -> pd.Series | None:
    """The run's equity curve (value over time), or ``None`` when it recorded none.

    A sweep's curves share one artifact; the run's column is the ref's ``part``.
    ``cache`` (artifact id → frame) lets many runs of one sweep read that file once.
    """
    cache = {} if cache is None else cache
    for ref in experiment.artifacts:
        if ref.kind not in _EQUITY_KINDS:
            continue
        if ref.id not in cache:
            try:
                cache[ref.id] = _read_frame(ws, ref)
            except (QuantrackError, KeyError, ValueError, OSError):
                cache[ref.id] = None
        frame = cache[ref.id]
        if frame is None:
            continue
        series = _series_from(frame, ref)
        if series is not None:
            return series.dropna().rename(experiment.id)
    return None


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
    return ReportData(
        title=title,
        runs=runs,
        curves=curves,
        metric=metric,
        sweep=sweep,
        x=hx,
        y=hy,
        notes=notes,
    )
