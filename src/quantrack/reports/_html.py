"""Rendering a :class:`ReportData` as one self-contained HTML page.

plotly.js is embedded once (``include_plotlyjs=True`` on the first figure), so the page
opens offline; tables are plain, escaped HTML.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantrack.domain import EngineNotInstalled, Experiment
from quantrack.domain.metrics import STANDARD_METRICS
from quantrack.reports._data import ReportData

if TYPE_CHECKING:
    from quantrack.analysis import BatchAssessment

__all__ = ["build_report", "write_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.text { text-align: left; }
tr.differs td { background: #fff7d6; }
.notes { color: #666; font-size: 0.85em; }
"""


def _label(run: Experiment) -> str:
    return f"{run.name} [{run.id[-6:]}]"


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def _table(header: list[str], rows: list[list[object]], *, differs: list[bool]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row, marked in zip(rows, differs, strict=True):
        cells = "".join(
            f'<td class="{"text" if isinstance(v, str) else ""}">{html.escape(_fmt(v))}</td>'
            for v in row
        )
        body.append(f'<tr class="{"differs" if marked else ""}">{cells}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _side_by_side(runs: list[Experiment], values: str) -> str:
    names = sorted({k for r in runs for k in getattr(r, values)})
    if not names:
        return f"<p class='notes'>no {values}</p>"
    rows: list[list[object]] = []
    differs = []
    for name in names:
        cells: list[object] = [getattr(r, values).get(name) for r in runs]
        differs.append(any(c != cells[0] for c in cells[1:]))
        rows.append([name, *cells])
    return _table(["", *(_label(r) for r in runs)], rows, differs=differs)


def _figures(data: ReportData) -> list[tuple[str, Any]]:
    import plotly.graph_objects as go

    figures: list[tuple[str, Any]] = []
    if data.curves:
        equity = go.Figure()
        drawdown = go.Figure()
        by_id = {r.id: r for r in data.runs}
        for run_id, curve in data.curves.items():
            name = _label(by_id[run_id]) if run_id in by_id else run_id
            x = [str(i) for i in curve.index]
            equity.add_trace(go.Scatter(x=x, y=curve.to_list(), mode="lines", name=name))
            peak = curve.cummax()
            dd = ((curve / peak - 1.0) * 100.0).fillna(0.0)
            drawdown.add_trace(
                go.Scatter(x=x, y=dd.to_list(), mode="lines", name=name, fill="tozeroy")
            )
        equity.update_layout(title="Equity curves", yaxis_title="value", height=450)
        drawdown.update_layout(title="Drawdowns", yaxis_title="% below peak", height=350)
        figures += [("Equity curves", equity), ("Drawdowns", drawdown)]
    if data.sweep and data.x and data.y and data.metric:
        cells: dict[tuple[Any, Any], list[float]] = defaultdict(list)
        for run in data.sweep:
            value = run.metrics.get(data.metric)
            if value is not None and data.x in run.params and data.y in run.params:
                cells[(run.params[data.x], run.params[data.y])].append(value)
        if cells:
            xs = sorted({k[0] for k in cells}, key=_sort_key)
            ys = sorted({k[1] for k in cells}, key=_sort_key)
            z = [
                [sum(cells[(x, y)]) / len(cells[(x, y)]) if (x, y) in cells else None for x in xs]
                for y in ys
            ]
            heat = go.Figure(
                go.Heatmap(
                    x=[str(v) for v in xs],
                    y=[str(v) for v in ys],
                    z=z,
                    colorscale="Viridis",
                    colorbar={"title": data.metric},
                )
            )
            heat.update_layout(
                title=f"{data.metric} over {data.x} × {data.y} (mean over other params)",
                xaxis_title=data.x,
                yaxis_title=data.y,
                height=500,
            )
            figures.append((f"Heat map of {data.metric}", heat))
    return figures


_PSR_ROWS = 50


def _overfitting(assessment: BatchAssessment) -> str:
    """The batch's DSR and PBO, then the PSR of its runs, best by the metric first."""
    best = assessment.best
    pbo = assessment.pbo
    summary: list[list[object]] = [
        ["trials", assessment.trials],
        ["selection metric", assessment.metric],
        ["best run", f"{best.name} [{best.experiment_id[-6:]}]" if best else None],
        ["PSR of the best run", best.psr if best else None],
        ["DSR of the best run", assessment.dsr],
        ["PBO", pbo.pbo if pbo else None],
        ["partitions (CSCV)", assessment.partitions],
        ["periods", assessment.observations],
    ]
    spec = STANDARD_METRICS.get(assessment.metric)
    sign = -1.0 if spec is None or spec.higher_is_better else 1.0
    ranked = sorted(assessment.runs, key=lambda r: (r.value is None, sign * (r.value or 0.0)))
    shown = ranked[:_PSR_ROWS]
    rows: list[list[object]] = [
        [f"{r.name} [{r.experiment_id[-6:]}]", r.value, r.sharpe, r.psr] for r in shown
    ]
    parts = [
        f"<h2>Overfitting: {html.escape(assessment.batch_name)}</h2>",
        "<p class='notes'>Deflated Sharpe Ratio (Bailey &amp; López de Prado, 2014) of the "
        "best run given the batch's trials; Probability of Backtest Overfitting by "
        "combinatorially symmetric cross-validation (Bailey, Borwein, López de Prado &amp; "
        "Zhu, 2015); Sharpe ratios per period.</p>",
        _table(["", "value"], summary, differs=[False] * len(summary)),
        "<h3>Probabilistic Sharpe Ratio of each run</h3>",
        _table(
            ["run", assessment.metric, "Sharpe (per period)", "PSR"],
            rows,
            differs=[best is not None and r.experiment_id == best.experiment_id for r in shown],
        ),
    ]
    if len(ranked) > len(shown):
        parts.append(f"<p class='notes'>the {len(shown)} best of {len(ranked)} runs shown</p>")
    if assessment.notes:
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in assessment.notes)
        parts.append(f"<ul class='notes'>{notes}</ul>")
    return "\n".join(parts)


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def build_report(data: ReportData) -> str:
    """The report page as one self-contained HTML string.

    Raises :class:`EngineNotInstalled` when plotly (the ``report`` extra) is missing.
    """
    try:
        import plotly.io as pio
    except ImportError as exc:
        raise EngineNotInstalled("plotly", "report") from exc

    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(data.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(data.title)}</h1>",
        f"<p class='notes'>generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by "
        f"quantrack; {len(data.runs)} runs</p>",
    ]
    embedded = False
    for heading, figure in _figures(data):
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(
            pio.to_html(
                figure,
                include_plotlyjs=not embedded,
                full_html=False,
                config={"displaylogo": False},
            )
        )
        embedded = True
    runs = data.runs
    overview = [
        [_label(r), r.status.value, r.definition.strategy, r.definition.engine, r.id] for r in runs
    ]
    parts.append("<h2>Runs</h2>")
    parts.append(
        _table(
            ["run", "status", "strategy", "engine", "id"],
            [list(row) for row in overview],
            differs=[False] * len(overview),
        )
    )
    parts.append("<h2>Metrics</h2>" + _side_by_side(runs, "metrics"))
    parts.append("<h2>Params</h2>" + _side_by_side(runs, "params"))
    parts.extend(_overfitting(assessment) for assessment in data.assessments)
    if data.notes:
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
        parts.append(f"<h2>Notes</h2><ul class='notes'>{notes}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(data: ReportData, path: str | Path) -> Path:
    """Write the report page to ``path`` (parents created); return its absolute path."""
    target = Path(path).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(build_report(data), encoding="utf-8")
    return target
