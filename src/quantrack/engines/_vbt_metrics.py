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
    "portfolio_value",
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


class _Arrays:
    """vectorbt's intermediate results for an ungrouped portfolio, as arrays.

    ``pf.returns()`` builds cash flow, cash, asset flow, assets, asset value and value, and
    ``pf.final_value()`` a forward-and-back-filled copy of the close prices, wrapping each
    (a frame as large as the close prices: 200 MB for 10,000 columns over 2,520 bars) in
    pandas, which copies it; ``pf.sharpe_ratio()`` and its siblings also compute benchmark
    returns that none of them reads. Here the same vectorbt kernels run in the same order
    on the same inputs, so every result is identical, on arrays only.
    """

    def __init__(self, pf: vbt.Portfolio) -> None:
        from vectorbt.base.reshape_fns import to_1d_array
        from vectorbt.portfolio import dispatch

        self.pf = pf
        self.engine = pf.engine
        self.dispatch = dispatch
        self.shape = pf.wrapper.shape_2d
        self.orders = pf.orders
        self.col_map = self.orders.col_mapper.col_map
        self.init_cash = to_1d_array(pf.get_init_cash(group_by=False))
        self._close: Any = None
        self._total_profit: Any = None

    def close(self) -> Any:
        """The close prices vectorbt values positions at (filled when it fills them)."""
        if self._close is None:
            from vectorbt.base.reshape_fns import to_2d_array

            close = to_2d_array(self.pf.close)
            # Filling prices without gaps changes nothing; skip pandas' copy of them then.
            if self.pf.fillna_close and np.isnan(close).any():
                close = to_2d_array(self.pf.get_filled_close())
            self._close = close
        return self._close

    def total_profit(self) -> Any:
        """``pf.total_profit()``, from the order records."""
        if self._total_profit is None:
            self._total_profit = self.dispatch.total_profit(
                self.shape, self.close(), self.orders.values, self.col_map, engine=self.engine
            )
        return self._total_profit

    def final_value(self) -> Any:
        """``pf.final_value()``."""
        return self.dispatch.final_value(self.total_profit(), self.init_cash, engine=self.engine)

    def total_return(self) -> Any:
        """``pf.total_return()``."""
        return self.dispatch.total_return(self.total_profit(), self.init_cash, engine=self.engine)

    def _value_block(self, part: slice, cash_flow: Any, assets: Any, close: Any) -> Any:
        """``pf.value()`` of the columns in ``part`` (``assets`` are theirs already)."""
        d, engine = self.dispatch, self.engine
        cash = d.cash(np.ascontiguousarray(cash_flow[:, part]), self.init_cash[part], engine=engine)
        prices = np.array(close[:, part])  # a copy: it is masked next
        prices[assets == 0] = 0.0  # as vectorbt does, for a NaN price while flat
        return d.value(cash, d.asset_value(prices, assets, engine=engine), engine=engine)

    def value(self) -> Any:
        """``pf.value()`` as a column-major array (each column's curve contiguous)."""
        from vectorbt.portfolio.enums import Direction

        d, engine = self.dispatch, self.engine
        n = self.shape[1]
        out = np.empty(self.shape, dtype="float64", order="F")
        cash_flow = d.cash_flow(self.shape, self.orders.values, self.col_map, False, engine=engine)
        asset_flow = d.asset_flow(
            self.shape, self.orders.values, self.col_map, Direction.Both, engine=engine
        )
        close = self.close()
        for start in range(0, n, _CHUNK):
            part = slice(start, min(start + _CHUNK, n))
            assets = d.assets(np.ascontiguousarray(asset_flow[:, part]), engine=engine)
            out[:, part] = self._value_block(part, cash_flow, assets, close)
        return out

    def by_chunks(self, wanted: Sequence[str]) -> dict[str, Any]:
        """The ``wanted`` metrics of :data:`_CHUNKED`, each one array over all columns.

        vectorbt's kernels walk each column down the bars, which in a row-major frame of
        10,000 columns touches a new cache line at every step. Each of these metrics is
        computed column by column, so running the kernels over a block of columns at a time
        (one that stays in cache) gives the same numbers several times faster, and never
        holds a full-size cash, value or returns frame.
        """
        from vectorbt.portfolio.enums import Direction
        from vectorbt.returns import dispatch as returns_dispatch

        d, engine, pf = self.dispatch, self.engine, self.pf
        n = self.shape[1]
        out = {name: np.empty(n, dtype="float64") for name in wanted}
        from_returns = [name for name in wanted if _CHUNKED[name]]
        cash_flow = d.cash_flow(self.shape, self.orders.values, self.col_map, False, engine=engine)
        asset_flow = d.asset_flow(
            self.shape, self.orders.values, self.col_map, Direction.Both, engine=engine
        )
        close = self.close()
        for start in range(0, n, _CHUNK):
            part = slice(start, min(start + _CHUNK, n))
            assets = d.assets(np.ascontiguousarray(asset_flow[:, part]), engine=engine)
            if "exposure" in out:
                # pf.position_coverage(): the share of bars with an open position.
                out["exposure"][part] = np.mean(assets != 0, axis=0)
            if not from_returns:
                continue
            value = self._value_block(part, cash_flow, assets, close)
            returns = returns_dispatch.returns(value, self.init_cash[part], engine=engine)
            frame = pd.DataFrame(
                returns, index=pf.wrapper.index, columns=pf.wrapper.columns[part], copy=False
            )
            accessor = frame.vbt.returns(freq=pf.wrapper.freq)
            for name in from_returns:
                result = getattr(accessor, _CHUNKED[name])()
                out[name][part] = np.asarray(result, dtype="float64").reshape(-1)
        return out


# Metrics computed block by block: from returns, by the returns accessor's method named
# here (the one `pf.<metric>()` calls), or (exposure) from the positions.
_CHUNKED: dict[str, str] = {
    "annual_return": "annualized",
    "max_drawdown": "max_drawdown",
    "sharpe": "sharpe_ratio",
    "sortino": "sortino_ratio",
    "calmar": "calmar_ratio",
    "exposure": "",
}

# Columns per block: 2,520 bars x 128 columns x 8 bytes is 2.6 MB an array; larger
# blocks gain nothing measurable, smaller ones pay vectorbt's per-call overhead more often.
_CHUNK = 128


def portfolio_value(pf: vbt.Portfolio) -> Any:
    """``pf.value()`` of every (grouped) column as a 2-D, column-major float64 array.

    Equal to ``pf.value()``; for an ungrouped portfolio computed block by block from
    vectorbt's kernels without pandas' copies (see :class:`_Arrays`).
    """
    if pf.wrapper.grouper.is_grouped():
        values = np.asarray(pf.value(), dtype="float64")
        return np.asfortranarray(values.reshape(values.shape[0], -1))
    return _Arrays(pf).value()


def _sources(pf: vbt.Portfolio, wanted: Sequence[str]) -> dict[str, Callable[[], Any]]:
    # `pf.stats()` reads the trade statistics from closed trades only (incl_open=False).
    closed = pf.trades.closed
    sources: dict[str, Callable[[], Any]] = {
        "start_value": pf.get_init_cash,
        "final_value": pf.final_value,
        "total_return": pf.total_return,
        "annual_return": pf.annualized_return,
        "max_drawdown": pf.max_drawdown,
        "fees": pf.orders.fees.sum,
        "trades": closed.count,
        "won": closed.winning.count,
        "lost": closed.losing.count,
        "win_rate": closed.win_rate,
        "profit_factor": closed.profit_factor,
        "avg_trade": closed.expectancy,
        "exposure": pf.position_coverage,
        "sharpe": pf.sharpe_ratio,
        "sortino": pf.sortino_ratio,
        "calmar": pf.calmar_ratio,
    }
    if pf.wrapper.grouper.is_grouped():
        # A grouped portfolio's metrics are per group; vectorbt's own methods handle those.
        return sources
    arrays = _Arrays(pf)
    sources["final_value"] = arrays.final_value
    sources["total_return"] = arrays.total_return
    chunked = [name for name in wanted if name in _CHUNKED]
    results: dict[str, Any] = {}

    def chunk_result(name: str) -> Callable[[], Any]:
        def get() -> Any:
            if not results:
                results.update(arrays.by_chunks(chunked))
            return results[name]

        return get

    for name in chunked:
        sources[name] = chunk_result(name)
    return sources


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
    sources = _sources(pf, wanted)
    columns = {name: _as_column(sources[name](), n, METRICS[name][1]) for name in wanted}
    if "max_drawdown" in columns:
        # vectorbt's drawdown is negative; the stats line (and we) report its size.
        columns["max_drawdown"] = [None if x is None else -x for x in columns["max_drawdown"]]
    return {name: tuple(values) for name, values in columns.items()}


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
