"""Self-contained HTML reports of recorded runs (plotly; opens without a network).

:func:`build_report` turns what a workspace holds into one HTML page: the equity curves
overlaid, their drawdowns, a metrics table, a params table and, for a sweep, a heat map
of a metric over two params. :func:`collect_report_data` gathers that from a workspace.
plotly and pandas are imported when a report is built, never at import time.
"""

from quantrack.reports._data import (
    ReportData,
    collect_report_data,
    equity_curve,
    pick_heatmap_params,
)
from quantrack.reports._html import build_report, write_report

__all__ = [
    "ReportData",
    "build_report",
    "collect_report_data",
    "equity_curve",
    "pick_heatmap_params",
    "write_report",
]
