"""The fused metrics pass equals vectorbt's own methods and pf.stats(), edge cases included.

The per-bar metrics (drawdown, the ratios, exposure, the annualized return) and the value
curves come from one pass of vectorbt's kernels down each column, on several threads;
these tests hold that pass to exactly what vectorbt's Portfolio methods compute.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

vbt = pytest.importorskip("vectorbt")

from vectorbt.portfolio.enums import Direction  # noqa: E402  (after the importorskip)

from quantrack.engines import _vbt_metrics  # noqa: E402
from quantrack.engines._vbt_frames import equity_table, table_bytes  # noqa: E402
from quantrack.engines._vbt_metrics import (  # noqa: E402
    METRICS,
    compute_metrics,
    evaluate,
    metrics_of_stats,
)

BARS = 300


def _methods(pf: Any, names: Iterable[str] = METRICS) -> dict[str, list[float | None]]:
    """The ``names`` metrics as vectorbt's own Portfolio and Trades methods give them, in
    our units.
    """
    closed = pf.trades.closed
    methods: dict[str, Callable[[], Any]] = {
        "start_value": pf.get_init_cash,
        "final_value": pf.final_value,
        "total_return": pf.total_return,
        "annual_return": pf.annualized_return,
        "max_drawdown": lambda: -np.asarray(pf.max_drawdown()),
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
    out: dict[str, list[float | None]] = {}
    for name in names:
        array = np.asarray(methods[name](), dtype="float64").reshape(-1) * METRICS[name][1]
        out[name] = [x if math.isfinite(x) else None for x in array.tolist()]
    return out


def _assert_equal_to_methods(ours: dict[str, tuple[float | None, ...]], pf: Any) -> None:
    theirs = _methods(pf)
    assert set(ours) == set(theirs)
    for name, values in theirs.items():
        assert list(ours[name]) == values, name


def _index() -> pd.DatetimeIndex:
    return pd.date_range("2020-01-01", periods=BARS, freq="D")


def _edge_portfolio() -> Any:
    """One column per edge case (see the column names), on synthetic prices."""
    rng = np.random.default_rng(7)
    steps = np.arange(BARS)
    noisy = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, BARS)))
    gappy = noisy.copy()
    gappy[[30, 31, 32, 150]] = np.nan  # missing prices while flat and while holding
    close = pd.DataFrame(
        {
            "idle": noisy,
            "losing": 100 * 0.995**steps,
            "winning": 100 * 1.005**steps,
            "flat": np.full(BARS, 100.0),
            "open_at_end": noisy,
            "short": noisy,
            "gappy": gappy,
        },
        index=_index(),
    )
    every_tenth = (steps % 10 == 0)[:, None]
    fifth = (steps % 10 == 5)[:, None]
    entries = pd.DataFrame(np.repeat(every_tenth, close.shape[1], 1), close.index, close.columns)
    exits = pd.DataFrame(np.repeat(fifth, close.shape[1], 1), close.index, close.columns)
    entries["idle"] = False
    exits["idle"] = False
    entries["open_at_end"] = steps == 40
    exits["open_at_end"] = False
    entries["gappy"] = steps % 50 == 20
    exits["gappy"] = steps % 50 == 45
    # A flat price and no fees: a value curve that never moves.
    fees = pd.Series(0.001, index=close.columns)
    fees["flat"] = 0.0
    direction = [Direction.ShortOnly if c == "short" else Direction.LongOnly for c in close.columns]
    return vbt.Portfolio.from_signals(
        close,
        entries,
        exits,
        fees=fees.to_numpy()[None, :],
        direction=np.array(direction, dtype="int64")[None, :],
        freq="1D",
    )


@pytest.fixture(scope="module")
def edge() -> Any:
    """A portfolio whose columns are the edge cases, built once."""
    return _edge_portfolio()


def test_edge_case_columns_equal_vectorbt_methods(edge: Any) -> None:
    """No-trade, all-losing, all-winning, flat, open, short and gappy columns match exactly."""
    ours = compute_metrics(_edge_portfolio(), edge.wrapper.shape_2d[1])
    _assert_equal_to_methods(ours, edge)


def test_edge_case_columns_leave_undefined_metrics_out(edge: Any) -> None:
    """Each edge case gives None exactly where vectorbt has no finite value."""
    ours = compute_metrics(_edge_portfolio(), edge.wrapper.shape_2d[1])
    col = {name: i for i, name in enumerate(edge.wrapper.columns)}
    # No trades: no trade statistics, no exposure, a flat curve.
    assert ours["trades"][col["idle"]] == 0
    assert ours["win_rate"][col["idle"]] is None
    assert ours["exposure"][col["idle"]] == 0.0
    # Every trade lost: a win rate of 0 and a profit factor of 0, both defined.
    assert ours["won"][col["losing"]] == 0
    assert ours["lost"][col["losing"]] > 0
    assert ours["win_rate"][col["losing"]] == 0.0
    assert ours["profit_factor"][col["losing"]] == 0.0
    # Every trade won: an infinite profit factor is undefined.
    assert ours["lost"][col["winning"]] == 0
    assert ours["won"][col["winning"]] > 0
    assert ours["profit_factor"][col["winning"]] is None
    # Zero volatility: the ratios are undefined and the curve never fell.
    flat = col["flat"]
    assert ours["trades"][flat] > 0
    assert ours["sharpe"][flat] is None
    assert ours["sortino"][flat] is None
    assert ours["calmar"][flat] is None
    assert ours["max_drawdown"][flat] == 0.0
    # A position never closed: exposure counts it, the closed-trade statistics do not.
    assert ours["trades"][col["open_at_end"]] == 0
    assert ours["exposure"][col["open_at_end"]] == pytest.approx(100 * (BARS - 40) / BARS)


def test_edge_case_columns_equal_pf_stats(edge: Any) -> None:
    """Each edge-case column reports what pf.stats(column=c) prints for it."""
    ours = compute_metrics(edge, edge.wrapper.shape_2d[1])
    for i, column in enumerate(edge.wrapper.columns):
        for name, value in metrics_of_stats(edge.stats(column=column)).items():
            got = ours[name][i]
            if value is None and name == "max_drawdown":
                assert got == 0.0, column  # stats() has no drawdown record: never fell
            elif value is None:
                assert got is None, (column, name)
            else:
                assert got == pytest.approx(value, rel=1e-12, abs=1e-12), (column, name)


def _random_orders(columns: int, *, freq: str | None = "1D") -> Any:
    """Long and short target positions changing at random bars, over several blocks;
    without ``freq``, on an irregular index vectorbt infers no frequency from.
    """
    rng = np.random.default_rng(11)
    base = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, (BARS, columns)), axis=0))
    index = _index() if freq else pd.DatetimeIndex(_index()[np.sort(rng.permutation(BARS))])
    if not freq:
        index = pd.DatetimeIndex([d + pd.Timedelta(hours=i % 5) for i, d in enumerate(index)])
    close = pd.DataFrame(base, index=index)
    size = rng.uniform(-1, 1, (BARS, columns))
    size[rng.uniform(size=size.shape) < 0.9] = np.nan  # hold most bars
    return vbt.Portfolio.from_orders(
        close, size, size_type="targetpercent", fees=0.0005, freq=freq, init_cash=1_000
    )


def test_random_long_short_orders_over_several_threads_equal_vectorbt_methods() -> None:
    """Partial fills, reversals and shorts across several blocks of columns match exactly."""
    columns = 2 * _vbt_metrics._CHUNK + 17
    ours = compute_metrics(_random_orders(columns), columns)
    _assert_equal_to_methods(ours, _random_orders(columns))


def test_one_thread_and_several_threads_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """NUMBA_NUM_THREADS=1 runs the blocks in turn and gives the very same numbers."""
    import numba

    columns = 3 * _vbt_metrics._CHUNK
    several = evaluate(_random_orders(columns), columns, value=True)
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 1)
    assert _vbt_metrics._threads(10) == 1
    one = evaluate(_random_orders(columns), columns, value=True)
    assert one.metrics == several.metrics
    np.testing.assert_array_equal(one.value, several.value)


def test_thread_count_follows_numba_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never more threads than numba's setting, the CPUs allowed, or the blocks to run."""
    import numba

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 64)
    assert 1 <= _vbt_metrics._threads(1000) <= 64
    assert _vbt_metrics._threads(1) == 1
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)
    assert _vbt_metrics._threads(1000) <= 2


def test_value_curves_come_with_the_metrics(edge: Any) -> None:
    """evaluate(value=True) gives pf.value() column-major, and the same metrics as without."""
    n = edge.wrapper.shape_2d[1]
    both = evaluate(_edge_portfolio(), n, value=True)
    assert both.value.flags.f_contiguous
    np.testing.assert_array_equal(both.value, np.asarray(edge.value(), dtype="float64"))
    assert both.metrics == compute_metrics(_edge_portfolio(), n)
    assert evaluate(_edge_portfolio(), n).value is None


def test_only_some_metrics(edge: Any) -> None:
    """only= computes just those metrics, each equal to the full computation's."""
    n = edge.wrapper.shape_2d[1]
    full = compute_metrics(edge, n)
    for only in (["exposure"], ["final_value", "win_rate"], ["sharpe", "max_drawdown"], []):
        part = compute_metrics(_edge_portfolio(), n, only=only)
        assert part == {name: full[name] for name in only}


def test_unknown_metric_is_refused(edge: Any) -> None:
    """Asking for a metric that does not exist names it and lists the valid ones."""
    with pytest.raises(ValueError, match=r"unknown metric\(s\) 'sharpness'; choose from"):
        evaluate(edge, 1, only=["sharpness"])


def test_without_frequency_the_unannualized_metrics_still_match() -> None:
    """No bar frequency: the annualized metrics are left out, the rest equal vectorbt's."""
    no_freq = _random_orders(40, freq=None)
    assert no_freq.wrapper.freq is None
    ours = compute_metrics(no_freq, 40)
    assert not set(ours) & {"annual_return", "sharpe", "sortino", "calmar"}
    names = ("max_drawdown", "exposure", "total_return", "final_value", "win_rate")
    theirs = _methods(_random_orders(40, freq=None), names)
    for name in names:
        assert list(ours[name]) == theirs[name], name


def test_equity_file_holds_float_columns_without_dictionaries(edge: Any) -> None:
    """The shared equity file stores every curve plain (no per-column dictionary) and
    reads back equal to pf.value().
    """
    labels = [str(c) for c in edge.wrapper.columns]
    curves = evaluate(edge, len(labels), only=(), value=True).value
    data = table_bytes(equity_table(edge, labels, curves))
    meta = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0)
    for j in range(1, meta.num_columns):
        assert not any("DICTIONARY" in e for e in meta.column(j).encodings), labels[j - 1]
    back = pq.read_table(io.BytesIO(data)).to_pandas()
    np.testing.assert_array_equal(back[labels].to_numpy(), np.asarray(edge.value()))


def _stressed_portfolio(*, fillna_close: bool = True) -> Any:
    """Columns whose value curves hit the kernel's corner cases: a short that keeps
    losing, a cash balance small enough for vectorbt to snap to zero (a zero value, so
    infinite and undefined returns), and, without price filling, missing prices while
    holding (undefined returns in the middle of the curve).
    """
    index = pd.date_range("2020-01-01", periods=80, freq="D")
    rng = np.random.default_rng(3)
    price = 100 * np.exp(np.cumsum(rng.normal(0, 0.05, len(index))))
    gappy = price.copy()
    gappy[[5, 6, 20, 79]] = np.nan
    columns = ["losing_short", "snapped_cash", "crossing", "gappy_long", "gappy_short"]
    close = pd.DataFrame(
        np.column_stack([price, price, price, gappy, gappy]), index=index, columns=columns
    )
    size = pd.DataFrame(np.nan, index=index, columns=columns)
    size.iloc[0] = [-50, 1e-6, -20, np.nan, np.nan]
    size.iloc[3] = [np.nan, np.nan, np.nan, 10, -10]
    size.iloc[40] = [0, 0, 5, np.nan, 0]
    size.iloc[60] = [np.nan, np.nan, 0, 0, 5]
    return vbt.Portfolio.from_orders(
        close,
        size,
        size_type="targetamount",
        direction="both",
        init_cash=[100, 1e-13, 100, 1_000, 1_000],
        freq="1D",
        fillna_close=fillna_close,
    )


@pytest.mark.parametrize("fillna_close", [True, False])
def test_zero_negative_and_missing_values_equal_vectorbt_methods(fillna_close: bool) -> None:
    """Snapped cash, a value at zero, undefined returns: every metric and value curve
    equals vectorbt's, bit for bit.
    """
    pf = _stressed_portfolio(fillna_close=fillna_close)
    n = pf.wrapper.shape_2d[1]
    both = evaluate(pf, n, value=True)
    _assert_equal_to_methods(both.metrics, _stressed_portfolio(fillna_close=fillna_close))
    np.testing.assert_array_equal(both.value, np.asarray(pf.value(), dtype="float64"))
    if not fillna_close:
        assert pf.returns().isna().to_numpy().any()  # the case is really exercised


def test_a_pending_evaluation_gives_the_same_result_as_evaluate(edge: Any) -> None:
    """start_evaluation returns before the kernel ends; its result equals evaluate's and
    asking twice gives the same object.
    """
    n = edge.wrapper.shape_2d[1]
    with _vbt_metrics.start_evaluation(_edge_portfolio(), n, value=True) as pending:
        first = pending.result()
        assert pending.result() is first
    assert first.metrics == evaluate(_edge_portfolio(), n).metrics


def test_leaving_a_pending_evaluation_early_joins_its_threads() -> None:
    """An error before result() still stops the kernel's worker threads on the way out."""
    import threading

    columns = 3 * _vbt_metrics._CHUNK
    pf = _random_orders(columns)
    with (
        pytest.raises(RuntimeError, match="caller failed"),
        _vbt_metrics.start_evaluation(pf, columns),
    ):
        raise RuntimeError("caller failed")
    assert not [t for t in threading.enumerate() if t.name.startswith("quantrack-vbt")]


def test_start_evaluation_refuses_an_unknown_metric_at_once(edge: Any) -> None:
    """The name check happens before any thread starts."""
    with pytest.raises(ValueError, match=r"unknown metric\(s\) 'sharpness'"):
        _vbt_metrics.start_evaluation(edge, 1, only=["sharpness"])
