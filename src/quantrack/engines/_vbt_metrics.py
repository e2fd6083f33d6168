"""Column keys, parameters and metrics of a vectorbt Portfolio, all columns at once.

Every metric comes from one call of vectorbt's own Portfolio (or Trades) method over the
whole column axis, so a 10,000-column sweep costs a handful of vectorized calls, never a
loop over columns. Names and units are quantrack's standard ones
(:data:`quantrack.domain.metrics.STANDARD_METRICS`): percentages in percent, as
``pf.stats()`` prints them, so a recorded value equals its ``pf.stats()`` line.

A value that is undefined for a column (the win rate of a column without closed trades,
a profit factor with no losing trade, a ratio of a flat equity curve) comes back as NaN or
infinity from vectorbt and is stored as ``None``: left out of that run's metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import vectorbt as vbt

__all__ = [
    "METRICS",
    "ColumnAxis",
    "column_axis",
    "compute_metrics",
    "metrics_of_stats",
]

# Each recorded metric: the `pf.stats()` line it equals, and the factor that turns
# vectorbt's method result into our unit (fractions become percent). The order is the
# order metrics are computed in.
METRICS: dict[str, tuple[str, float]] = {
    "start_value": ("Start Value", 1.0),
    "final_value": ("End Value", 1.0),
    "total_return": ("Total Return [%]", 100.0),
    "annual_return": ("", 100.0),
    "max_drawdown": ("Max Drawdown [%]", 100.0),
    "fees": ("Total Fees Paid", 1.0),
    "trades": ("Total Closed Trades", 1.0),
    "won": ("", 1.0),
    "lost": ("", 1.0),
    "win_rate": ("Win Rate [%]", 100.0),
    "profit_factor": ("Profit Factor", 1.0),
    "avg_trade": ("Expectancy", 1.0),
    "exposure": ("", 100.0),
    "sharpe": ("Sharpe Ratio", 1.0),
    "sortino": ("Sortino Ratio", 1.0),
    "calmar": ("Calmar Ratio", 1.0),
}

# Metrics that need the portfolio's bar frequency to annualize.
_NEEDS_FREQ = frozenset({"annual_return", "sharpe", "sortino", "calmar"})


@dataclass(frozen=True)
class ColumnAxis:
    """The experiments a portfolio becomes: one per (grouped) column.

    ``labels[i]`` names column ``i`` uniquely (it is the column of the shared equity-curve
    file and the ``part`` of that run's artifact references); ``params[i]`` are the
    parameters read from the column index levels.
    """

    labels: tuple[str, ...]
    params: tuple[dict[str, Any], ...]
    level_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def _level_names(columns: pd.Index) -> list[str]:
    raw = list(columns.names)
    if len(raw) == 1:
        return [str(raw[0]) if raw[0] is not None else "column"]
    # Unnamed levels of a MultiIndex (e.g. from `pd.concat(keys=...)`) get a positional name.
    return [str(name) if name is not None else f"level_{i}" for i, name in enumerate(raw)]


def _plain(value: object) -> object:
    # Timestamps and numpy scalars in an index have no JSON form of their own.
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def column_axis(pf: vbt.Portfolio, *, single_params_from_index: bool) -> ColumnAxis:
    """The column labels and per-column parameters of ``pf`` (grouped columns if grouped).

    A single unnamed column (a portfolio built from one Series) contributes no parameters
    unless ``single_params_from_index``.
    """
    columns = pf.wrapper.get_columns()
    names = _level_names(columns)
    rows: list[tuple[object, ...]]
    if columns.nlevels == 1:
        rows = [(_plain(value),) for value in columns.tolist()]
    else:
        rows = [tuple(_plain(v) for v in key) for key in columns.tolist()]
    if len(rows) == 1 and not single_params_from_index and columns.names == [None]:
        params: list[dict[str, Any]] = [{}]
    else:
        params = [dict(zip(names, row, strict=True)) for row in rows]
    if len(names) == 1:
        labels = [str(row[0]) for row in rows]
    else:
        labels = [",".join(f"{n}={v}" for n, v in zip(names, row, strict=True)) for row in rows]
    if len(set(labels)) != len(labels):
        # Duplicate column keys cannot address a column of the shared file: number them.
        labels = [f"{i}:{label}" for i, label in enumerate(labels)]
    return ColumnAxis(labels=tuple(labels), params=tuple(params), level_names=tuple(names))


def _as_column(values: Any, n: int, factor: float = 1.0) -> list[float | None]:
    array = np.asarray(values, dtype="float64").reshape(-1) * factor
    if array.size == 1 and n > 1:
        array = np.full(n, array[0])
    if array.size != n:
        raise ValueError(f"vectorbt returned {array.size} values for {n} columns")
    return [x if math.isfinite(x) else None for x in array.tolist()]


def _sources(pf: vbt.Portfolio) -> dict[str, Callable[[], Any]]:
    trades = pf.trades
    # `pf.stats()` reads the trade statistics from closed trades only (incl_open=False).
    closed = trades.closed
    return {
        "start_value": pf.get_init_cash,
        "final_value": pf.final_value,
        "total_return": pf.total_return,
        "annual_return": pf.annualized_return,
        # vectorbt's drawdown is negative; the stats line (and we) report its size.
        "max_drawdown": lambda: -np.asarray(pf.max_drawdown(), dtype="float64"),
        "fees": pf.orders.fees.sum,
        "trades": closed.count,
        "won": closed.winning.count,
        "lost": closed.losing.count,
        "win_rate": closed.win_rate,
        "profit_factor": closed.profit_factor,
        "avg_trade": closed.expectancy,
        # The share of bars with an open position (vectorbt's position coverage).
        "exposure": pf.position_coverage,
        "sharpe": pf.sharpe_ratio,
        "sortino": pf.sortino_ratio,
        "calmar": pf.calmar_ratio,
    }


def compute_metrics(
    pf: vbt.Portfolio, n: int, *, only: Sequence[str] | None = None
) -> dict[str, tuple[float | None, ...]]:
    """Every metric of :data:`METRICS` (or ``only`` those), one tuple of ``n`` values each.

    Metrics that need a bar frequency are left out when the portfolio has none (build it
    with ``freq="1D"`` or on a DatetimeIndex with a frequency to get them).
    """
    wanted = list(only) if only is not None else list(METRICS)
    unknown = [name for name in wanted if name not in METRICS]
    if unknown:
        raise ValueError(
            f"unknown metric(s) {', '.join(map(repr, unknown))}; choose from {', '.join(METRICS)}"
        )
    if pf.wrapper.freq is None:
        wanted = [name for name in wanted if name not in _NEEDS_FREQ]
    sources = _sources(pf)
    return {name: tuple(_as_column(sources[name](), n, METRICS[name][1])) for name in wanted}


def metrics_of_stats(stats: Mapping[str, Any]) -> dict[str, float | None]:
    """The metrics of :data:`METRICS` that one ``pf.stats(column=...)`` result reports
    (for comparing the two: our units are the ones ``pf.stats()`` prints).
    """
    out: dict[str, float | None] = {}
    for name, (title, _factor) in METRICS.items():
        if title and title in stats:
            value = float(stats[title])
            out[name] = value if math.isfinite(value) else None
    return out
