"""Column keys, parameters and metrics of a vectorbt Portfolio, all columns at once.

Every metric is the number vectorbt's own Portfolio (or Trades) method gives for each
column, computed for the whole column axis in one go, never by a loop of Python calls
over columns. The per-bar metrics (returns, drawdown, the ratios, exposure) come from one
fused pass down each column's bars that repeats vectorbt's numba kernels operation for
operation, run on worker threads while the caller goes on (see :func:`_columns_kernel`
and :func:`start_evaluation`); the trade statistics from vectorbt's Trades methods over
the trade records. Names and units are quantrack's standard ones
(:data:`quantrack.domain.metrics.STANDARD_METRICS`): percentages in percent, as
``pf.stats()`` prints them, so a recorded value equals its ``pf.stats()`` line.

A value that is undefined for a column (the win rate of a column without closed trades,
a profit factor with no losing trade, a ratio of a flat equity curve) comes back as NaN or
infinity from vectorbt and is stored as ``None``: left out of that run's metrics.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import vectorbt as vbt
from numba import njit
from vectorbt.portfolio import nb as portfolio_nb
from vectorbt.portfolio.enums import Direction
from vectorbt.returns import nb as returns_nb
from vectorbt.utils.math_ import add_nb

__all__ = [
    "METRICS",
    "ColumnAxis",
    "Evaluation",
    "PendingEvaluation",
    "column_axis",
    "compute_metrics",
    "evaluate",
    "metrics_of_stats",
    "portfolio_value",
    "start_evaluation",
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


def _plain_level(level: pd.Index) -> list[object]:
    if level.dtype.kind in "biuf":
        values: list[object] = level.to_numpy().tolist()
        return values
    return [_plain(value) for value in level.tolist()]


def column_axis(pf: vbt.Portfolio, *, single_params_from_index: bool) -> ColumnAxis:
    """The column labels and per-column parameters of ``pf`` (grouped columns if grouped).

    A single unnamed column (a portfolio built from one Series) contributes no parameters
    unless ``single_params_from_index``.
    """
    columns = pf.wrapper.get_columns()
    names = _level_names(columns)
    # Level by level: a numeric level becomes Python numbers in one tolist() (what
    # np.generic.item() gives each value); other levels go value by value.
    levels = [_plain_level(columns.get_level_values(i)) for i in range(columns.nlevels)]
    rows = list(zip(*levels, strict=True))
    if len(rows) == 1 and not single_params_from_index and columns.names == [None]:
        params: list[dict[str, Any]] = [{}]
    else:
        params = [dict(zip(names, row, strict=True)) for row in rows]
    if len(names) == 1:
        labels = [str(value) for value in levels[0]]
    else:
        named = zip(names, levels, strict=True)
        parts = [[f"{name}={value}" for value in level] for name, level in named]
        labels = [",".join(row) for row in zip(*parts, strict=True)]
    if len(set(labels)) != len(labels):
        # Duplicate column keys cannot address a column of the shared file: number them.
        labels = [f"{i}:{label}" for i, label in enumerate(labels)]
    return ColumnAxis(labels=tuple(labels), params=tuple(params), level_names=tuple(names))


def _as_column(values: Any, n: int, factor: float = 1.0) -> tuple[float | None, ...]:
    array = np.asarray(values, dtype="float64").reshape(-1) * factor
    if array.size == 1 and n > 1:
        array = np.full(n, array[0])
    if array.size != n:
        raise ValueError(f"vectorbt returned {array.size} values for {n} columns")
    finite = np.isfinite(array)
    if finite.all():
        return tuple(array.tolist())
    # NaN and infinity become None, picked out by numpy rather than a check per value.
    column = array.astype(object)
    column[~finite] = None
    return tuple(column.tolist())


# -- the fused pass: one walk down each column's bars for every per-bar metric ------------
#
# vectorbt's methods each rebuild what they need from scratch: `pf.sharpe_ratio()`,
# `pf.sortino_ratio()`, `pf.calmar_ratio()`, `pf.max_drawdown()` and
# `pf.annualized_return()` each go through `pf.returns()`, which builds full-size cash flow,
# cash, asset flow, assets, asset value and value frames (200 MB each for 10,000 columns
# over 2,520 bars) and wraps each in pandas; `pf.position_coverage()` rebuilds the assets.
# The kernel below takes one column at a time instead: it builds that column's value curve
# once (20 KB, in cache) with vectorbt's flow kernels, and walks it once more for the
# variance. Every metric is computed with the very floating-point operations, in the very
# order, of vectorbt's 1-D kernels (and the numba implementations of np.nanmean, np.nanvar,
# np.nanprod and np.min they call), each named where it is done, so every number is
# bit-for-bit what vectorbt's methods (and `pf.stats()`) report; tests pin that on edge
# cases and random long/short sweeps. Calling those kernels one after another cost a dozen
# walks and half a dozen arrays per column, three quarters of the metrics' time.


@njit(nogil=True, cache=True)
def _growth_drawdown_nb(returns: Any) -> tuple[float, float]:
    """``np.nanprod(returns + 1.0)`` (what cum_returns_final_1d_nb multiplies by its start
    value) and max_drawdown_1d_nb(returns), in one walk.
    """
    growth = 1.0  # np.nanprod: the product of the values that are not NaN
    cumprod = 1.0  # cum_returns_1d_nb(returns, start_value=100.0) ...
    peak = np.nan  # ... its expanding_max_1d_nb(minp=1) ...
    seen = 0
    drawdown = np.nan  # ... and np.min of drawdown_1d_nb: the first NaN, else the least
    found_nan = False
    for i in range(returns.shape[0]):
        r = returns[i]
        factor = r + 1.0
        if not np.isnan(factor):
            growth *= factor
        if not np.isnan(r):
            cumprod *= r + 1
        level = cumprod * 100.0
        if np.isnan(peak) or level > peak:
            peak = level
        if not np.isnan(level):
            seen += 1
        if found_nan:
            continue
        # np.divide: the array division of drawdown_1d_nb gives inf or NaN for a zero peak
        # where a scalar division would raise.
        below = np.divide(level, np.nan if seen < 1 else peak) - 1
        if np.isnan(below):
            drawdown = below
            found_nan = True
        elif i == 0 or below < drawdown:
            drawdown = below
    return growth, drawdown


@njit(nogil=True, cache=True)
def _sharpe_sortino_nb(
    returns: Any, ann_factor: float, risk_free: float, ddof: int, required_return: float
) -> tuple[float, float]:
    """sharpe_ratio_1d_nb and sortino_ratio_1d_nb (with downside_risk_1d_nb) of
    ``returns``: one walk for the means, one for the variance around its mean.
    """
    n = returns.shape[0]
    if n < 2:
        return np.nan, np.nan
    excess_sum = 0.0  # np.nanmean(returns - risk_free)
    excess_count = 0
    adjusted_sum = 0.0  # np.nanmean(returns - required_return)
    adjusted_count = 0
    downside_sum = 0.0  # np.nanmean(adjusted clipped at 0, squared)
    downside_count = 0
    for i in range(n):
        excess = returns[i] - risk_free
        if not np.isnan(excess):
            excess_sum += excess
            excess_count += 1
        adjusted = returns[i] - required_return
        if not np.isnan(adjusted):
            adjusted_sum += adjusted
            adjusted_count += 1
        # `adj_returns[adj_returns > 0] = 0`; min() would not keep a NaN the same way.
        if adjusted > 0:  # noqa: PLR1730
            adjusted = 0
        squared = adjusted**2
        if not np.isnan(squared):
            downside_sum += squared
            downside_count += 1
    # generic_nb.nanstd_1d_nb: np.nanvar (the squares around np.nanmean), rescaled by ddof.
    mean = np.divide(excess_sum, excess_count)
    squares = 0.0
    for i in range(n):
        excess = returns[i] - risk_free
        if not np.isnan(excess):
            deviation = excess - mean
            squares += deviation * deviation
    rcount = max(excess_count - ddof, 0)
    std = np.nan
    if rcount != 0:
        variance = np.nan if excess_count <= 0 else np.divide(squares, excess_count)
        std = np.sqrt(variance * excess_count / rcount)
    sharpe = np.inf if std == 0.0 else mean / std * np.sqrt(ann_factor)
    average = np.divide(adjusted_sum, adjusted_count) * ann_factor
    downside = np.sqrt(np.divide(downside_sum, downside_count)) * np.sqrt(ann_factor)
    sortino = np.inf if downside == 0.0 else average / downside
    return sharpe, sortino


@functools.cache
def _columns_kernel() -> Callable[..., None]:
    """The fused kernel, compiled on first use and cached on disk by numba.

    numba keys its on-disk cache by this kernel's own code and closure, not by the code
    of the vectorbt kernels it calls; closing over vectorbt's version makes an upgraded
    vectorbt compile the kernel afresh rather than reuse one built from the old code.
    """
    vectorbt_version = str(vbt.__version__)

    @njit(nogil=True, cache=True)
    def columns_nb(
        close: Any,  # float64[:], the (filled) close prices, column-major, flattened
        n_rows: int,
        records: Any,  # the order records
        col_idxs: Any,  # vectorbt's column map of the order records
        col_starts: Any,
        col_lens: Any,
        init_cash: Any,
        ann_factor: float,
        risk_free: float,
        ddof: int,
        required_return: float,
        start: int,
        stop: int,
        with_metrics: bool,
        out: Any,  # float64[len(_KERNEL_METRICS), n_cols]: the kernel's metrics, by column
        value_out: Any,  # float64[n_rows * n_cols], column-major value curves; or empty
    ) -> None:
        """Metrics (and value curves) of columns ``start .. stop-1``. Releases the GIL."""
        if len(vectorbt_version) == 0:  # never true: only ties the cache to the version
            return
        lens = np.empty(1, dtype=col_lens.dtype)
        value = np.empty(n_rows, dtype=np.float64)
        returns = np.empty(n_rows, dtype=np.float64)
        for col in range(start, stop):
            # The column's own slice of the column map: vectorbt's flow kernels on it.
            lens[0] = col_lens[col]
            col_map = (col_idxs[col_starts[col] : col_starts[col] + col_lens[col]], lens)
            cash_flow = portfolio_nb.cash_flow_nb((n_rows, 1), records, col_map, False)
            asset_flow = portfolio_nb.asset_flow_nb((n_rows, 1), records, col_map, Direction.Both)
            # cash_nb, assets_nb, the asset value (close zeroed while flat, so that a
            # missing price cannot poison the value) and value_nb, fused into one walk down
            # the bars. add_nb(x, 0.0) is x itself for every x that add_nb returns (0.0,
            # NaN, +-inf, or |x| > 1e-12, as it snaps smaller sums to 0.0), so a bar
            # without a flow skips the call; bar 0 always makes it, because the initial
            # cash did not come out of add_nb.
            cash = init_cash[col]
            position = 0.0
            held = 0
            base = col * n_rows
            previous = init_cash[col]  # returns_1d_nb, as the walk goes
            for i in range(n_rows):
                asset = asset_flow[i, 0]
                if asset != 0.0:
                    position = add_nb(position, asset)
                flow = cash_flow[i, 0]
                if flow != 0.0 or i == 0:
                    cash = add_nb(cash, flow)
                price = 0.0
                if position != 0:
                    price = close[base + i]
                    held += 1
                current = cash + price * position
                value[i] = current
                returns[i] = returns_nb.get_return_nb(previous, current)
                previous = current
            if value_out.shape[0] > 0:
                value_out[base : base + n_rows] = value
            out[_EXPOSURE, col] = held / n_rows  # pf.position_coverage()
            if not with_metrics:
                continue
            growth, drawdown = _growth_drawdown_nb(returns)
            # annualized_return_1d_nb (cum_returns_final_1d_nb with start_value 1.0)
            annual = np.nan if n_rows == 0 else (growth * 1.0) ** (ann_factor / n_rows) - 1
            out[_ANNUAL, col] = annual
            out[_DRAWDOWN, col] = drawdown  # max_drawdown_1d_nb
            sharpe, sortino = _sharpe_sortino_nb(
                returns, ann_factor, risk_free, ddof, required_return
            )
            out[_SHARPE, col] = sharpe
            out[_SORTINO, col] = sortino
            # calmar_ratio_1d_nb is exactly this, on the drawdown and annualized return it
            # would compute a second time.
            out[_CALMAR, col] = np.nan if drawdown == 0.0 else annual / np.abs(drawdown)

    return columns_nb


# The kernel's metrics: their row in its output, and the metric each row becomes.
_KERNEL_METRICS = ("annual_return", "max_drawdown", "sharpe", "sortino", "calmar", "exposure")
_ANNUAL, _DRAWDOWN, _SHARPE, _SORTINO, _CALMAR, _EXPOSURE = range(len(_KERNEL_METRICS))
# Everything the fused path computes (the last two from the order records alone).
_FUSED_METRICS = (*_KERNEL_METRICS, "final_value", "total_return")

# Columns per task handed to a thread: 2,520 bars x 128 columns is 2.6 MB of close
# prices, and with a few dozen tasks per thread a slow one cannot leave the others idle.
_CHUNK = 128


def _readonly(array: Any, dtype: Any = None) -> Any:
    """``array`` as a contiguous, read-only view (a copy only when it must convert).

    numba compiles one version of a kernel per argument type, and a writable array is a
    different type from a read-only one (pandas hands out read-only views): passing every
    input read-only keeps that to one compiled (and cached) version.
    """
    view = np.ascontiguousarray(array, dtype=dtype).view()
    view.flags.writeable = False
    return view


def _threads(tasks: int) -> int:
    """How many threads to run ``tasks`` on: numba's own setting (``NUMBA_NUM_THREADS``,
    by default the number of CPUs), within the CPUs this process may use.
    """
    import numba

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    wanted = int(getattr(numba.config, "NUMBA_NUM_THREADS", 1))
    return max(1, min(tasks, wanted, cpus or 1))


@dataclass(frozen=True)
class _Fused:
    """What one run of the fused kernel over every column gives."""

    metrics: dict[str, Any]  # name -> float64 array over the columns, vectorbt's units
    value: Any  # pf.value() as a column-major 2-D array, or None when not asked for


class _FusedRun:
    """The fused pass over every column of the ungrouped ``pf``, started at once.

    The final value and total return of every column are computed here; with ``kernel``,
    :func:`_columns_kernel` is started over blocks of columns on worker threads (it
    releases the GIL) and this returns before it ends, so the caller's own Python work
    runs on the main thread meanwhile. :meth:`result` waits for it; :meth:`close` drops
    the blocks not yet started and waits for the running ones (always call one of them).
    """

    def __init__(
        self, pf: vbt.Portfolio, *, kernel: bool, with_metrics: bool, with_value: bool
    ) -> None:
        from vectorbt.base.reshape_fns import to_1d_array, to_2d_array

        n_rows, n_cols = pf.wrapper.shape_2d
        close = to_2d_array(pf.close)
        # vectorbt values positions at forward- and back-filled prices when it fills them.
        # Filling prices without gaps changes nothing, so skip pandas' full-size copies
        # then; a sum is NaN when any price is (and costs no temporary array, unlike
        # isnan().any()).
        if pf.fillna_close and np.isnan(np.sum(close)):
            close = to_2d_array(pf.get_filled_close())
        orders = pf.orders
        col_idxs, col_lens = orders.col_mapper.col_map
        records = _readonly(orders.values)
        col_map = (_readonly(col_idxs, np.int64), _readonly(col_lens, np.int64))
        init_cash = _readonly(to_1d_array(pf.get_init_cash(group_by=False)), np.float64)
        # pf.total_profit(), pf.final_value() and pf.total_return(): vectorbt's kernels on
        # the last bar's prices, which are all total_profit_nb reads.
        last = _readonly(close[-1:, :], np.float64)
        total_profit = portfolio_nb.total_profit_nb(last.shape, last, records, col_map)
        self._found: dict[str, Any] = {
            "final_value": portfolio_nb.final_value_nb(total_profit, init_cash),
            "total_return": portfolio_nb.total_return_nb(total_profit, init_cash),
        }
        self._shape = (n_rows, n_cols)
        self._with_value = with_value
        self._out = np.full((len(_KERNEL_METRICS), n_cols), np.nan)
        self._value = np.empty(n_rows * n_cols if with_value else 0, dtype=np.float64)
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[Future[None]] = []
        if not kernel:
            return
        args = (
            # Column-major and flat, so each column's prices are contiguous (a view when
            # the frame already is column-major, as pandas keeps it).
            _readonly(np.ravel(close, order="F"), np.float64),
            n_rows,
            records,
            col_map[0],
            _readonly(np.cumsum(col_map[1]) - col_map[1]),
            col_map[1],
            init_cash,
            *_returns_settings(pf),
        )
        columns_nb = _columns_kernel()
        out, value = self._out, self._value
        blocks = [(lo, min(lo + _CHUNK, n_cols)) for lo in range(0, n_cols, _CHUNK)]
        # One worker still takes the kernel off the main thread (NUMBA_NUM_THREADS=1 runs
        # the blocks in turn on it).
        self._pool = ThreadPoolExecutor(_threads(len(blocks)), thread_name_prefix="quantrack-vbt")
        self._futures = [
            self._pool.submit(columns_nb, *args, lo, hi, with_metrics, out, value)
            for lo, hi in blocks
        ]

    def result(self) -> _Fused:
        """Wait for the kernel; re-raises the first error of a block."""
        try:
            for future in self._futures:
                future.result()
        finally:
            self.close()
        found = dict(self._found)
        found.update(zip(_KERNEL_METRICS, self._out, strict=True))
        n_rows, n_cols = self._shape
        # (n_cols, n_rows) row-major is (n_rows, n_cols) column-major: no copy.
        curves = self._value.reshape(n_cols, n_rows).T if self._with_value else None
        return _Fused(found, curves)

    def close(self) -> None:
        """Drop the blocks not yet started (after an error, or Ctrl-C) and wait for the
        running ones, which write into this run's arrays.
        """
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _returns_settings(pf: vbt.Portfolio) -> tuple[float, float, int, float]:
    """The annualization factor and defaults vectorbt's returns accessor would use for
    ``pf`` (``pf.sharpe_ratio()`` and its siblings read them from the same place).

    Without a bar frequency there is no annualization factor: NaN, and the annualized
    metrics are dropped by :func:`evaluate`.
    """
    if pf.wrapper.freq is None:
        return math.nan, 0.0, 1, 0.0
    # An accessor over one column reads the settings exactly as pf.returns_acc does,
    # without computing any returns.
    probe = pd.DataFrame(np.zeros((len(pf.wrapper.index), 1)), index=pf.wrapper.index)
    accessor = probe.vbt.returns(freq=pf.wrapper.freq)
    defaults = accessor.defaults
    return (
        float(accessor.ann_factor),
        float(defaults["risk_free"]),
        int(defaults["ddof"]),
        float(defaults["required_return"]),
    )


def _numba_engine(pf: vbt.Portfolio) -> bool:
    """Whether vectorbt computes this portfolio's metrics with its numba kernels (and not
    with vectorbt-rust, whose results the fused kernel would not reproduce bit for bit).
    """
    from vectorbt._engine import resolve_engine

    return bool(resolve_engine(pf.engine) == "numba" and resolve_engine(None) == "numba")


def _uses_kernel(pf: vbt.Portfolio) -> bool:
    # A grouped portfolio's metrics are per group; vectorbt's own methods handle those.
    return not pf.wrapper.grouper.is_grouped() and _numba_engine(pf)


def _vectorbt_methods(pf: vbt.Portfolio) -> dict[str, Callable[[], Any]]:
    """Each metric as vectorbt's own Portfolio or Trades method computes it."""
    # `pf.stats()` reads the trade statistics from closed trades only (incl_open=False).
    closed = functools.cache(lambda: pf.trades.closed)
    return {
        "start_value": pf.get_init_cash,
        "final_value": pf.final_value,
        "total_return": pf.total_return,
        "annual_return": pf.annualized_return,
        "max_drawdown": pf.max_drawdown,
        "fees": pf.orders.fees.sum,
        "trades": lambda: closed().count(),
        # A lambda, not `closed().winning.count`: that would filter the trades up front.
        "won": lambda: closed().winning.count(),  # noqa: PLW0108
        "lost": lambda: closed().losing.count(),  # noqa: PLW0108
        "win_rate": lambda: closed().win_rate(),
        "profit_factor": lambda: closed().profit_factor(),
        "avg_trade": lambda: closed().expectancy(),
        "exposure": pf.position_coverage,
        "sharpe": pf.sharpe_ratio,
        "sortino": pf.sortino_ratio,
        "calmar": pf.calmar_ratio,
    }


@dataclass(frozen=True)
class Evaluation:
    """The metrics of every (grouped) column of a portfolio, and its value curves.

    ``metrics`` maps each metric name to one value per column (``None`` where vectorbt
    gives NaN or infinity); ``value`` is ``pf.value()`` as a 2-D column-major float64
    array when it was asked for, else ``None``.
    """

    metrics: dict[str, tuple[float | None, ...]]
    value: Any = None


class PendingEvaluation:
    """An :func:`evaluate` under way: the fused kernel runs on worker threads while the
    caller goes on; :meth:`result` gives the :class:`Evaluation`.

    Use it as a context manager (``with start_evaluation(...) as pending:``) so that
    leaving early (an error, Ctrl-C) stops and joins the kernel's threads.
    """

    def __init__(
        self, pf: vbt.Portfolio, n: int, *, only: Sequence[str] | None, value: bool
    ) -> None:
        wanted = list(only) if only is not None else list(METRICS)
        unknown = [name for name in wanted if name not in METRICS]
        if unknown:
            raise ValueError(
                f"unknown metric(s) {', '.join(map(repr, unknown))}; "
                f"choose from {', '.join(METRICS)}"
            )
        if pf.wrapper.freq is None:
            wanted = [name for name in wanted if name not in _NEEDS_FREQ]
        self._pf = pf
        self._n = n
        self._wanted = wanted
        self._value = value
        self._in_fused: list[str] = []
        self._run: _FusedRun | None = None
        self._result: Evaluation | None = None
        if _uses_kernel(pf):
            self._in_fused = [name for name in wanted if name in _FUSED_METRICS]
            in_kernel = [name for name in self._in_fused if name in _KERNEL_METRICS]
            if self._in_fused or value:
                self._run = _FusedRun(
                    pf,
                    kernel=bool(in_kernel) or value,
                    with_metrics=bool(set(in_kernel) - {"exposure"}),
                    with_value=value,
                )

    def result(self) -> Evaluation:
        """The metrics (and curves); computes the metrics vectorbt's own methods give
        here, on the calling thread, then waits for the kernel. Raises what they raise.
        """
        if self._result is not None:
            return self._result
        pf, wanted = self._pf, self._wanted
        try:
            sources = _vectorbt_methods(pf)
            found = {name: sources[name]() for name in wanted if name not in self._in_fused}
            curves = None
            if self._run is not None:
                fused = self._run.result()
                found.update((name, fused.metrics[name]) for name in self._in_fused)
                curves = fused.value
            elif self._value:
                values = np.asarray(pf.value(), dtype="float64")
                curves = np.asfortranarray(values.reshape(values.shape[0], -1))
        finally:
            self.close()
        self._result = Evaluation(
            {name: _as_column(found[name], self._n, _factor(name)) for name in wanted}, curves
        )
        return self._result

    def close(self) -> None:
        """Stop the kernel's blocks not yet started and join its threads."""
        if self._run is not None:
            self._run.close()

    def __enter__(self) -> PendingEvaluation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _factor(name: str) -> float:
    # vectorbt's drawdown is negative; the stats line (and we) report its size.
    factor = METRICS[name][1]
    return -factor if name == "max_drawdown" else factor


def start_evaluation(
    pf: vbt.Portfolio, n: int, *, only: Sequence[str] | None = None, value: bool = False
) -> PendingEvaluation:
    """Start :func:`evaluate` and return at once, the kernel running on worker threads.

    Raises ValueError naming an unknown metric.
    """
    return PendingEvaluation(pf, n, only=only, value=value)


def evaluate(
    pf: vbt.Portfolio, n: int, *, only: Sequence[str] | None = None, value: bool = False
) -> Evaluation:
    """Every metric of :data:`METRICS` (or ``only`` those) for the ``n`` (grouped) columns
    of ``pf``, and with ``value=True`` its value curves too, from one pass over the bars.

    Metrics that need a bar frequency are left out when the portfolio has none (build it
    with ``freq="1D"`` or on a DatetimeIndex with a frequency to get them). Raises
    ValueError naming an unknown metric.
    """
    with start_evaluation(pf, n, only=only, value=value) as pending:
        return pending.result()


def compute_metrics(
    pf: vbt.Portfolio, n: int, *, only: Sequence[str] | None = None
) -> dict[str, tuple[float | None, ...]]:
    """Every metric of :data:`METRICS` (or ``only`` those), one tuple of ``n`` values each
    (see :func:`evaluate`).
    """
    return evaluate(pf, n, only=only).metrics


def portfolio_value(pf: vbt.Portfolio) -> Any:
    """``pf.value()`` of every (grouped) column as a 2-D, column-major float64 array."""
    return evaluate(pf, 0, only=(), value=True).value


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
