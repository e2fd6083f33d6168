"""The standard metrics every engine adapter records, with one name and one unit each.

Runs from different engines are compared side by side (``quantrack runs compare``,
``--where "sharpe > 1 and max_drawdown < 20"``), so a metric means the same thing whichever
engine produced it. Percentages are in percent (``12.5`` is 12.5 %), as backtrader's
analyzers and vectorbt's ``pf.stats()`` both report them; drawdowns are positive sizes.
An engine leaves out a metric that is undefined for a run (no trades → no win rate)
rather than recording NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["STANDARD_METRICS", "MetricSpec"]


@dataclass(frozen=True)
class MetricSpec:
    """One standard metric: its unit, and whether larger is better (for ranking)."""

    unit: str
    description: str
    higher_is_better: bool = True


STANDARD_METRICS: dict[str, MetricSpec] = {
    "start_value": MetricSpec("currency", "portfolio value at the first bar"),
    "final_value": MetricSpec("currency", "portfolio value at the last bar"),
    "total_return": MetricSpec("percent", "return over the whole run"),
    "annual_return": MetricSpec("percent", "return per year, compounded"),
    "sharpe": MetricSpec("ratio", "annualized Sharpe ratio (risk-free rate 0)"),
    "sortino": MetricSpec("ratio", "annualized Sortino ratio"),
    "calmar": MetricSpec("ratio", "annual return over maximum drawdown"),
    "max_drawdown": MetricSpec("percent", "largest peak-to-trough fall", higher_is_better=False),
    "max_drawdown_length": MetricSpec("bars", "longest drawdown, in bars", higher_is_better=False),
    "trades": MetricSpec("count", "closed trades"),
    "won": MetricSpec("count", "closed trades with positive net PnL"),
    "lost": MetricSpec("count", "closed trades with negative net PnL", higher_is_better=False),
    "win_rate": MetricSpec("percent", "won / closed trades"),
    "profit_factor": MetricSpec("ratio", "gross profit over gross loss"),
    "avg_trade": MetricSpec(
        "currency", "average net PnL per closed trade (vectorbt calls it expectancy)"
    ),
    "exposure": MetricSpec("percent", "share of bars with an open position"),
    "fees": MetricSpec("currency", "commissions and fees paid", higher_is_better=False),
}
