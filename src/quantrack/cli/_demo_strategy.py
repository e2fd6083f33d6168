"""The demo's backtrader strategy: a simple moving-average crossover.

Imported only by ``quantrack demo`` (it imports backtrader), so the command line starts
without it.
"""

from __future__ import annotations

from typing import Any

import backtrader as bt

__all__ = ["SmaCross"]


class SmaCross(bt.Strategy):  # type: ignore[misc]
    """Long while the fast simple moving average is above the slow one."""

    params = (("fast", 10), ("slow", 30))

    def __init__(self) -> None:
        fast = bt.indicators.SMA(self.data.close, period=self.p.fast)
        slow = bt.indicators.SMA(self.data.close, period=self.p.slow)
        self.cross: Any = bt.indicators.CrossOver(fast, slow)

    def next(self) -> None:
        """Buy on an upward cross, close the position on a downward one."""
        if not self.position and self.cross > 0:
            self.buy()
        elif self.position and self.cross < 0:
            self.close()
