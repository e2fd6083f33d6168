"""backtrader strategies and helpers for the integration tests.

Top-level and importable, because ``optstrategy`` with ``maxcpus > 1`` pickles the
strategy classes into worker processes.
"""

from __future__ import annotations

from typing import Any

import backtrader as bt

from quantrack.sample_data import load_sample


class SmaCross(bt.Strategy):  # type: ignore[misc]
    """Long when the fast SMA crosses above the slow one, flat when it crosses below.

    Records every executed order (time, price, size) so tests can check the trades the
    adapter reports against what the broker actually did.
    """

    params = (("fast", 10), ("slow", 30), ("stake", 400))

    def __init__(self) -> None:
        fast = bt.ind.SMA(period=self.p.fast)
        slow = bt.ind.SMA(period=self.p.slow)
        self.crossover = bt.ind.CrossOver(fast, slow)
        self.executions: list[tuple[Any, float, float]] = []

    def notify_order(self, order: Any) -> None:
        if order.status == order.Completed:
            self.executions.append(
                (bt.num2date(order.executed.dt), order.executed.price, order.executed.size)
            )

    def next(self) -> None:
        if not self.position and self.crossover > 0:
            self.buy(size=self.p.stake)
        elif self.position and self.crossover < 0:
            self.close()


class Explodes(bt.Strategy):  # type: ignore[misc]
    """Raises on the bar numbered ``at``, as a buggy strategy would."""

    params = (("at", 50),)

    def next(self) -> None:
        if len(self) >= self.p.at:
            raise ZeroDivisionError(f"strategy bug after {len(self)} bars")


class SmaCrossFragile(SmaCross):
    """:class:`SmaCross` that raises for ``fast == 13``: one bad combination in a sweep."""

    def __init__(self) -> None:
        if self.p.fast == 13:
            raise ValueError("fast window 13 is not supported by this data")
        super().__init__()


class Idle(bt.Strategy):  # type: ignore[misc]
    """Never trades."""


def sample_feed(symbol: str = "AAA", bars: int | None = None) -> Any:
    """A PandasData feed of the bundled sample ``symbol`` (the first ``bars`` bars)."""
    frame = load_sample(symbol)
    if bars is not None:
        frame = frame.iloc[:bars]
    return bt.feeds.PandasData(dataname=frame, name=symbol)


def cerebro_with(
    strategy: type | None = None, *, bars: int | None = None, **params: Any
) -> bt.Cerebro:
    """A cerebro over sample AAA with ``strategy`` added, 100,000 cash, 0.1 % commission."""
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(sample_feed("AAA", bars))
    cerebro.broker.setcash(100_000.0)
    cerebro.broker.setcommission(commission=0.001)
    if strategy is not None:
        cerebro.addstrategy(strategy, **params)
    return cerebro


class Swing(bt.Strategy):  # type: ignore[misc]
    """Goes long, adds, reverses to short in one order, covers, on a fixed schedule per feed.

    Exercises what a crossover strategy does not: shorts, scaling in, a reversal that closes
    one trade and opens the next in the same execution, flat spells, several feeds.
    """

    params = (("every", 17),)

    def next(self) -> None:
        step = len(self) // self.p.every
        if len(self) % self.p.every:
            return
        for position, data in enumerate(self.datas):
            target = (100, 250, -150, 0, 0, 300, -300, 0)[(step + position) % 8]
            self.order_target_size(data=data, target=target)
