"""Block-wise vectorbt metrics equal vectorbt's own portfolio methods and pf.stats()."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

vbt = pytest.importorskip("vectorbt")

from quantrack.engines import _vbt_metrics  # noqa: E402  (after the importorskip)
from quantrack.engines._vbt_metrics import (  # noqa: E402
    METRICS,
    compute_metrics,
    metrics_of_stats,
    portfolio_value,
)
from quantrack.sample_data import load_sample  # noqa: E402


def _sweep(close: pd.Series | pd.DataFrame, fast: list[int], slow: list[int]) -> Any:
    fast_ma = vbt.MA.run(close, fast, short_name="fast", param_product=False)
    slow_ma = vbt.MA.run(close, slow, short_name="slow", param_product=False)
    entries = fast_ma.ma_crossed_above(slow_ma)
    exits = fast_ma.ma_crossed_below(slow_ma)
    return vbt.Portfolio.from_signals(close, entries, exits, fees=0.001, freq="1D")


def _grid(side: int) -> tuple[list[int], list[int]]:
    fast, slow = np.meshgrid(np.arange(2, 2 + side), np.arange(30, 30 + side), indexing="ij")
    return [int(x) for x in fast.ravel()], [int(x) for x in slow.ravel()]


def _vectorbt_methods(pf: Any) -> dict[str, np.ndarray[Any, Any]]:
    """Each metric as vectorbt's own Portfolio method computes it, in our units."""
    closed = pf.trades.closed
    raw = {
        "final_value": pf.final_value(),
        "total_return": pf.total_return(),
        "annual_return": pf.annualized_return(),
        "max_drawdown": -np.asarray(pf.max_drawdown()),
        "exposure": pf.position_coverage(),
        "sharpe": pf.sharpe_ratio(),
        "sortino": pf.sortino_ratio(),
        "calmar": pf.calmar_ratio(),
        "win_rate": closed.win_rate(),
    }
    return {
        name: np.asarray(values, dtype="float64").reshape(-1) * METRICS[name][1]
        for name, values in raw.items()
    }


def _assert_same(ours: tuple[float | None, ...], theirs: np.ndarray[Any, Any], name: str) -> None:
    expected = [x if math.isfinite(x) else None for x in theirs.tolist()]
    assert list(ours) == expected, name


@pytest.mark.slow
def test_metrics_across_several_blocks_equal_vectorbt_methods() -> None:
    """A sweep wider than one block gets exactly the numbers of vectorbt's own methods."""
    close = load_sample("AAA")["close"].iloc[:600]
    fast, slow = _grid(13)  # 169 columns: more than one block of columns
    assert len(fast) > _vbt_metrics._CHUNK
    ours = compute_metrics(_sweep(close, fast, slow), len(fast))
    theirs = _vectorbt_methods(_sweep(close, fast, slow))
    for name, values in theirs.items():
        _assert_same(ours[name], values, name)


def test_block_boundary_columns_equal_pf_stats() -> None:
    """Columns on each side of a block boundary report what pf.stats() prints for them."""
    close = load_sample("AAA")["close"].iloc[:400]
    fast, slow = _grid(12)  # 144 columns
    pf = _sweep(close, fast, slow)
    ours = compute_metrics(pf, len(fast))
    for col in (0, _vbt_metrics._CHUNK - 1, _vbt_metrics._CHUNK, len(fast) - 1):
        stats = metrics_of_stats(pf.stats(column=pf.wrapper.columns[col]))
        for name, value in stats.items():
            got = ours[name][col]
            if value is None:
                assert got is None, (name, col)
            else:
                assert got == pytest.approx(value, rel=1e-12, abs=1e-12), (name, col)


def test_gaps_in_prices_are_filled_as_vectorbt_fills_them() -> None:
    """Missing close prices take vectorbt's fill path and still equal its methods."""
    close = load_sample("AAA")["close"].iloc[:300].copy()
    close.iloc[[40, 41, 150]] = np.nan
    fast, slow = _grid(3)
    ours = compute_metrics(_sweep(close, fast, slow), len(fast))
    theirs = _vectorbt_methods(_sweep(close, fast, slow))
    for name, values in theirs.items():
        _assert_same(ours[name], values, name)


@pytest.mark.slow
def test_grouped_portfolio_uses_vectorbt_group_methods() -> None:
    """A grouped portfolio's metrics are per group, as vectorbt's own methods give them."""
    frame = pd.DataFrame({s: load_sample(s)["close"].iloc[:300] for s in ("AAA", "BBB")})
    entries = frame.vbt.fshift(1) < frame
    exits = frame.vbt.fshift(1) > frame

    def build() -> Any:
        return vbt.Portfolio.from_signals(
            frame, entries, exits, freq="1D", group_by=True, cash_sharing=True
        )

    ours = compute_metrics(build(), 1)
    theirs = _vectorbt_methods(build())
    for name, values in theirs.items():
        _assert_same(ours[name], values, name)


def test_single_column_without_trades_has_no_win_rate() -> None:
    """A column that never trades gets no win rate and a zero exposure, not an error."""
    close = load_sample("AAA")["close"].iloc[:200]
    never = pd.Series(False, index=close.index)
    pf = vbt.Portfolio.from_signals(close, never, never, freq="1D")
    metrics = compute_metrics(pf, 1)
    assert metrics["win_rate"] == (None,)
    assert metrics["exposure"] == (0.0,)
    assert metrics["total_return"] == (0.0,)


def test_block_wise_value_equals_pf_value_across_blocks_and_gaps() -> None:
    """portfolio_value equals pf.value() exactly for a multi-block sweep with price gaps."""
    close = load_sample("AAA")["close"].iloc[:300].copy()
    close.iloc[[10, 11, 200]] = np.nan
    fast, slow = _grid(12)  # 144 columns
    ours = portfolio_value(_sweep(close, fast, slow))
    theirs = np.asarray(_sweep(close, fast, slow).value(), dtype="float64")
    assert ours.flags.f_contiguous
    np.testing.assert_array_equal(ours, theirs)


def test_grouped_value_is_per_group() -> None:
    """A grouped portfolio's value has one column per group, as pf.value() gives it."""
    frame = pd.DataFrame({s: load_sample(s)["close"].iloc[:200] for s in ("AAA", "BBB")})
    entries = frame.vbt.fshift(1) < frame
    exits = frame.vbt.fshift(1) > frame
    pf = vbt.Portfolio.from_signals(frame, entries, exits, freq="1D", group_by=True)
    ours = portfolio_value(pf)
    assert ours.shape == (200, 1)
    np.testing.assert_array_equal(ours[:, 0], np.asarray(pf.value(), dtype="float64"))
