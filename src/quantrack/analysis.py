"""Overfitting-aware assessment of a batch: PSR of every run, DSR of the best, PBO.

A sweep that tried many configurations will always have a winner; the question is whether
the winner is any good or merely the luckiest of many. :func:`assess_batch` answers it
from what the workspace already holds, the equity curve every engine adapter records:

* the **Probabilistic Sharpe Ratio** of every run (Bailey & López de Prado, 2012), the
  probability that its true Sharpe ratio is above zero given the sample length and the
  skewness and kurtosis of its returns;
* the **Deflated Sharpe Ratio** of the best run by the selection metric (Bailey & López de
  Prado, 2014), its PSR measured against the Sharpe ratio the best of ``trials``
  skill-less trials would reach, ``trials`` being the number of items of the batch;
* the **Probability of Backtest Overfitting** (Bailey, Borwein, López de Prado & Zhu,
  2015), by combinatorially symmetric cross-validation of the runs' return series.

The statistics themselves live in :mod:`quantrack.services.overfitting`; this module
loads the curves (it may use pandas, it sits beside the workspace) and turns them into
aligned per-period returns. Sharpe ratios here are per period (per bar), not annualized
like the ``sharpe`` metric the engines record.

:func:`pick_best` ranks a batch's runs by a metric and records on the batch which metric
picked them; the CLI's ``runs best --batch`` and the engine adapters' ``best()`` use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quantrack.domain import Experiment, ExperimentFilter, ExperimentStatus
from quantrack.domain.metrics import STANDARD_METRICS
from quantrack.ports import BatchHistory, ExperimentTracker

if TYPE_CHECKING:
    import pandas as pd

    from quantrack.services.overfitting import PboResult
    from quantrack.workspace import Workspace

__all__ = ["BatchAssessment", "RunAssessment", "assess_batch", "pick_best"]

# Fewer returns than this leave the moments of a return series undefined.
_MIN_PERIODS = 3


@dataclass(frozen=True)
class RunAssessment:
    """What the assessment found for one completed run of the batch.

    ``value`` is the run's selection metric (``None`` when it did not record it);
    ``sharpe``, ``skewness`` and ``kurtosis`` (non-excess) are those of its per-period
    returns over the batch's common periods, and ``psr`` its Probabilistic Sharpe Ratio;
    all ``None`` when its curve is missing or flat (a run that never traded).
    """

    experiment_id: str
    name: str
    params: dict[str, Any]
    value: float | None
    sharpe: float | None = None
    skewness: float | None = None
    kurtosis: float | None = None
    observations: int = 0
    psr: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """This run's figures as JSON-ready data."""
        return {
            "experiment_id": self.experiment_id,
            "name": self.name,
            "params": self.params,
            "value": self.value,
            "sharpe": self.sharpe,
            "skewness": self.skewness,
            "kurtosis": self.kurtosis,
            "observations": self.observations,
            "psr": self.psr,
        }


@dataclass(frozen=True)
class BatchAssessment:
    """How far the best run of a batch can be trusted, given everything that was tried.

    ``trials`` is the number of items of the batch (failed ones were tried too);
    ``runs`` the completed runs in the batch's order, ``best`` the one with the best
    ``metric``. ``sharpe_variance`` is the variance (ddof = 1) of the runs' per-period
    Sharpe ratios, ``expected_max_sharpe`` the SR₀ the best of ``trials`` skill-less trials
    would reach, ``dsr`` the best run's Deflated Sharpe Ratio. ``pbo`` is the CSCV result
    over ``partitions`` blocks of the ``observations`` common periods. Whatever could not
    be computed is ``None``, and ``notes`` says why.
    """

    batch_id: str
    batch_name: str
    metric: str
    trials: int
    partitions: int
    runs: tuple[RunAssessment, ...]
    best: RunAssessment | None = None
    observations: int = 0
    sharpe_variance: float | None = None
    expected_max_sharpe: float | None = None
    dsr: float | None = None
    pbo: PboResult | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def psr(self) -> dict[str, float]:
        """The PSR of every run that has one, by experiment id."""
        return {r.experiment_id: r.psr for r in self.runs if r.psr is not None}

    def to_dict(self) -> dict[str, Any]:
        """The assessment as JSON-ready data (the CLI's ``--json`` output)."""
        return {
            "batch_id": self.batch_id,
            "batch_name": self.batch_name,
            "metric": self.metric,
            "trials": self.trials,
            "observations": self.observations,
            "best_experiment_id": self.best.experiment_id if self.best else None,
            "best_value": self.best.value if self.best else None,
            "best_sharpe": self.best.sharpe if self.best else None,
            "sharpe_variance": self.sharpe_variance,
            "expected_max_sharpe": self.expected_max_sharpe,
            "dsr": self.dsr,
            "pbo": self.pbo.pbo if self.pbo else None,
            "partitions": self.partitions,
            "pbo_combinations": self.pbo.combinations if self.pbo else None,
            "runs": [r.to_dict() for r in self.runs],
            "notes": list(self.notes),
        }


def _higher_is_better(metric: str) -> bool:
    spec = STANDARD_METRICS.get(metric)
    return True if spec is None else spec.higher_is_better


def _check_metric(metric: object) -> str:
    if not isinstance(metric, str) or not metric.strip():
        raise ValueError(f"metric must be a metric name such as 'sharpe', got {metric!r}")
    return metric.strip()


def pick_best(
    tracker: ExperimentTracker,
    history: BatchHistory,
    batch_id: str,
    *,
    metric: str = "sharpe",
    n: int = 1,
    lowest: bool | None = None,
) -> list[Experiment]:
    """The ``n`` completed runs of the batch with the best ``metric``, best first, and
    record on the batch that ``metric`` picked them (``Batch.selection_metric``).

    Larger is better unless ``lowest`` says otherwise; by default the direction is the
    standard metric's (``max_drawdown``: lower is better). Runs that lack the metric are
    left out. Raises :class:`BatchNotFound` for an unknown batch and ValueError for a bad
    ``metric`` or ``n``.
    """
    name = _check_metric(metric)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of runs, got {n!r}")
    batch = history.get_batch(batch_id)
    descending = _higher_is_better(name) if lowest is None else not lowest
    query = ExperimentFilter(
        status=frozenset({ExperimentStatus.COMPLETED}),
        batch_id=batch.id,
        order_by=name,
        descending=descending,
        limit=n,
    )
    runs = [e for e in tracker.list_experiments(query) if name in e.metrics]
    history.record_selection(batch.id, name)
    return runs


def _check_partitions(partitions: object) -> int:
    if (
        isinstance(partitions, bool)
        or not isinstance(partitions, int)
        or partitions < 2
        or partitions % 2
    ):
        raise ValueError(
            f"partitions must be an even number of at least 2 (the paper uses 16), "
            f"got {partitions!r}"
        )
    return partitions


def _common_returns(curves: dict[str, pd.Series[Any]]) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    # Only timestamps every curve has: CSCV needs one matrix, and PSRs measured over the
    # same periods are comparable.
    values = pd.concat(curves, axis=1, join="inner").sort_index()
    values = values[~values.index.duplicated(keep="last")]
    returns = values.pct_change().iloc[1:]
    return returns.replace([np.inf, -np.inf], np.nan)


def assess_batch(
    workspace: Workspace, batch_id: str, *, metric: str = "sharpe", partitions: int = 16
) -> BatchAssessment:
    """Assess the batch ``batch_id``: PSR of every completed run, DSR of the best run by
    ``metric``, PBO by CSCV with ``partitions`` blocks.

    Every completed run's per-period returns are taken from its stored equity curve,
    aligned on the timestamps all curves share. ``trials`` for the DSR is the batch's
    number of items; the variance of the trials' Sharpe ratios is taken over the runs
    whose Sharpe ratio is defined. When there are too few runs or periods, or no curves,
    the figures that cannot be computed are ``None`` and ``notes`` says why. Raises
    :class:`BatchNotFound` for an unknown batch and ValueError for a bad ``metric`` or
    ``partitions``.
    """
    name = _check_metric(metric)
    partitions = _check_partitions(partitions)
    batch = workspace.observer.get_batch(batch_id)
    members = workspace.tracker.list_experiments(
        ExperimentFilter(
            status=frozenset({ExperimentStatus.COMPLETED}),
            batch_id=batch.id,
            order_by="created_at",
            descending=False,
        )
    )
    # In the batch's order; runs recorded outside a batch runner have no index and go last.
    members.sort(key=lambda e: (e.definition.batch_index is None, e.definition.batch_index or 0))
    # Failed items were tried too; every one of them counts as a trial.
    trials = max(batch.total, len(members))
    notes: list[str] = []
    if not members:
        notes.append(f"batch {batch.id} has no completed runs to assess")
    # Per-run problems are grouped by reason, so a 10,000-run sweep gives one note each.
    skipped: dict[str, list[str]] = {}
    returns = _load_returns(workspace, members, notes, skipped)
    observations = 0 if returns is None else len(returns)
    assessed: list[RunAssessment] = []
    for run in members:
        entry = RunAssessment(run.id, run.name, dict(run.params), run.metrics.get(name))
        if returns is not None and run.id in returns.columns:
            entry = _assess_run(entry, returns[run.id], notes, skipped)
        assessed.append(entry)
    notes[:0] = [_grouped(reason, ids) for reason, ids in skipped.items()]
    best = _best(assessed, name, notes)
    variance, threshold, dsr = _deflate(best, assessed, trials, name, notes)
    return BatchAssessment(
        batch_id=batch.id,
        batch_name=batch.name,
        metric=name,
        trials=trials,
        partitions=partitions,
        runs=tuple(assessed),
        best=best,
        observations=observations,
        sharpe_variance=variance,
        expected_max_sharpe=threshold,
        dsr=dsr,
        pbo=_pbo(returns, partitions, notes),
        notes=tuple(notes),
    )


def _load_returns(
    workspace: Workspace,
    members: list[Experiment],
    notes: list[str],
    skipped: dict[str, list[str]],
) -> pd.DataFrame | None:
    """The runs' per-period returns on their common timestamps, one column per run id;
    ``None`` (with a note) when there are no curves or too few common periods.
    """
    from quantrack.adapters.frames import equity_curve

    cache: dict[str, Any] = {}
    curves: dict[str, pd.Series[Any]] = {}
    for run in members:
        curve = equity_curve(workspace.artifacts, run, cache)
        if curve is None or curve.empty:
            skipped.setdefault("without an equity curve", []).append(run.id)
        else:
            curves[run.id] = curve
    if not curves:
        if members:
            notes.append("no run of the batch recorded an equity curve; nothing to assess")
        return None
    returns = _common_returns(curves)
    if len(returns) < _MIN_PERIODS:
        notes.append(
            f"the runs' equity curves share only {len(returns) + 1} timestamps; PSR, DSR "
            f"and PBO need at least {_MIN_PERIODS + 1}"
        )
        return None
    return returns


def _deflate(
    best: RunAssessment | None,
    runs: list[RunAssessment],
    trials: int,
    metric: str,
    notes: list[str],
) -> tuple[float | None, float | None, float | None]:
    """The trials' Sharpe variance, SR₀ and the best run's DSR (``None`` where undefined)."""
    from quantrack.services import overfitting as stats

    sharpes = [r.sharpe for r in runs if r.sharpe is not None]
    if len(sharpes) < 2:
        if runs:
            notes.append(
                "the DSR needs the Sharpe ratios of at least 2 runs to estimate their variance"
            )
        return None, None, None
    mean = sum(sharpes) / len(sharpes)
    variance = sum((s - mean) ** 2 for s in sharpes) / (len(sharpes) - 1)
    threshold = stats.expected_max_sharpe(trials, variance)
    if best is None:
        return variance, threshold, None
    if best.sharpe is None:
        notes.append(
            f"the best run by {metric} ({best.experiment_id}) has no usable equity curve, "
            "so it has no DSR"
        )
        return variance, threshold, None
    sharpe = best.sharpe
    dsr = _guarded(
        notes,
        "DSR",
        lambda: stats.deflated_sharpe_ratio(
            sharpe,
            best.observations,
            trials=trials,
            sharpe_variance=variance,
            skewness=best.skewness if best.skewness is not None else 0.0,
            kurtosis=best.kurtosis if best.kurtosis is not None else 3.0,
        ),
    )
    return variance, threshold, dsr


def _pbo(returns: pd.DataFrame | None, partitions: int, notes: list[str]) -> PboResult | None:
    """CSCV over the runs' return matrix, or ``None`` (with a note) when it cannot run."""
    from quantrack.services import overfitting as stats

    if returns is None:
        return None
    if returns.shape[1] < 2:
        notes.append("PBO needs the return series of at least 2 runs")
        return None
    matrix = returns.to_numpy()
    result: PboResult | None = _guarded(
        notes,
        "PBO",
        lambda: stats.probability_of_backtest_overfitting(matrix, partitions=partitions),
    )
    return result


def _grouped(reason: str, run_ids: list[str]) -> str:
    shown = ", ".join(run_ids[:3]) + (", ..." if len(run_ids) > 3 else "")
    runs = "run" if len(run_ids) == 1 else "runs"
    return f"{len(run_ids)} {runs} {reason} ({shown})"


def _assess_run(
    entry: RunAssessment,
    returns: pd.Series[Any],
    notes: list[str],
    skipped: dict[str, list[str]],
) -> RunAssessment:
    from quantrack.services import overfitting as stats

    try:
        moments = stats.return_moments(returns.to_numpy())
    except ValueError as exc:
        skipped.setdefault(f"without a PSR, as {exc}", []).append(entry.experiment_id)
        return entry
    psr = _guarded(
        notes,
        f"PSR of run {entry.experiment_id}",
        lambda: stats.probabilistic_sharpe_ratio(
            moments.sharpe,
            moments.observations,
            skewness=moments.skewness,
            kurtosis=moments.kurtosis,
        ),
    )
    return RunAssessment(
        experiment_id=entry.experiment_id,
        name=entry.name,
        params=entry.params,
        value=entry.value,
        sharpe=moments.sharpe,
        skewness=moments.skewness,
        kurtosis=moments.kurtosis,
        observations=moments.observations,
        psr=psr,
    )


def _best(runs: list[RunAssessment], metric: str, notes: list[str]) -> RunAssessment | None:
    ranked = [r for r in runs if r.value is not None and math.isfinite(r.value)]
    if not ranked:
        if runs:
            notes.append(f"no completed run of the batch recorded the metric {metric!r}")
        return None
    pick = max if _higher_is_better(metric) else min
    return pick(ranked, key=lambda r: r.value or 0.0)


def _guarded(notes: list[str], label: str, compute: Any) -> Any:
    # The statistics raise ValueError for degenerate inputs (too few periods for the
    # partitions, a non-positive variance estimate); the assessment reports them instead.
    try:
        return compute()
    except ValueError as exc:
        notes.append(f"no {label}: {exc}")
        return None
