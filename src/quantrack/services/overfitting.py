"""Multiple-testing-aware statistics for sweeps: PSR, DSR and PBO.

A tracker that has seen every trial of a sweep knows how many things were tried before the
winner was found. These functions use that to say how much the winner's Sharpe ratio can
be trusted. They work on per-period (not annualized) returns and Sharpe ratios.

References:
* Bailey, D. H. & López de Prado, M. (2012). *The Sharpe Ratio Efficient Frontier.*
  Journal of Risk 15(2). — the Probabilistic Sharpe Ratio.
* Bailey, D. H. & López de Prado, M. (2014). *The Deflated Sharpe Ratio: Correcting for
  Selection Bias, Backtest Overfitting and Non-Normality.* Journal of Portfolio
  Management 40(5). — the Deflated Sharpe Ratio.
* Bailey, D. H., Borwein, J., López de Prado, M. & Zhu, Q. J. (2015). *The Probability
  of Backtest Overfitting.* Journal of Computational Finance 20(4). — CSCV and PBO.

NumPy and SciPy are imported when a function is first called, so importing this module
(and quantrack) stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "EULER_MASCHERONI",
    "PboResult",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "probabilistic_sharpe_ratio",
    "probability_of_backtest_overfitting",
    "return_moments",
]

EULER_MASCHERONI = 0.5772156649015329


@dataclass(frozen=True)
class ReturnMoments:
    """What the Sharpe-ratio statistics need of one return series."""

    sharpe: float
    skewness: float
    kurtosis: float
    observations: int


def return_moments(returns: Sequence[float] | npt.ArrayLike) -> ReturnMoments:
    """Per-period Sharpe ratio, skewness and (non-excess) kurtosis of ``returns``.

    Non-finite values are dropped. Raises ValueError for fewer than 3 finite values or a
    series with no variance, where the statistics are undefined.
    """
    import numpy as np

    values = np.asarray(returns, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 3:
        raise ValueError(f"need at least 3 finite returns, got {values.size}")
    std = values.std(ddof=1)
    if not std > 0:
        raise ValueError("the returns have no variance; the Sharpe ratio is undefined")
    centered = values - values.mean()
    m2 = float(np.mean(centered**2))
    skewness = float(np.mean(centered**3)) / m2**1.5
    kurtosis = float(np.mean(centered**4)) / m2**2
    return ReturnMoments(
        sharpe=float(values.mean() / std),
        skewness=skewness,
        kurtosis=kurtosis,
        observations=int(values.size),
    )


def probabilistic_sharpe_ratio(
    sharpe: float,
    observations: int,
    *,
    skewness: float = 0.0,
    kurtosis: float = 3.0,
    benchmark: float = 0.0,
) -> float:
    """PSR: the probability that the true Sharpe ratio exceeds ``benchmark``.

    Bailey & López de Prado (2012), eq. (5)::

        PSR(SR*) = Φ( (SR − SR*) · √(T − 1) / √(1 − γ₃·SR + (γ₄ − 1)/4 · SR²) )

    with SR the observed per-period Sharpe ratio, T the number of observations, γ₃ the
    skewness and γ₄ the (non-excess) kurtosis of the returns.
    """
    from scipy.stats import norm

    if observations < 2:
        raise ValueError(f"need at least 2 observations, got {observations}")
    variance = 1.0 - skewness * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if variance <= 0:
        raise ValueError(
            "the Sharpe ratio's estimated variance is not positive for these moments "
            f"(skewness={skewness:g}, kurtosis={kurtosis:g}); check the return series"
        )
    z = (sharpe - benchmark) * math.sqrt(observations - 1) / math.sqrt(variance)
    return float(norm.cdf(z))


def expected_max_sharpe(trials: int, sharpe_variance: float) -> float:
    """SR₀: the Sharpe ratio the best of ``trials`` skill-less trials is expected to reach.

    Bailey & López de Prado (2014), eq. (2), from the expected maximum of N standard
    normal draws (γ is the Euler–Mascheroni constant)::

        SR₀ = √V[SRₙ] · ((1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e)))
    """
    from scipy.stats import norm

    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    if sharpe_variance < 0:
        raise ValueError(f"sharpe_variance must not be negative, got {sharpe_variance}")
    if trials == 1:
        return 0.0
    gamma = EULER_MASCHERONI
    expected_max_z = (1 - gamma) * norm.ppf(1 - 1 / trials) + gamma * norm.ppf(
        1 - 1 / (trials * math.e)
    )
    return float(math.sqrt(sharpe_variance) * expected_max_z)


def deflated_sharpe_ratio(
    sharpe: float,
    observations: int,
    *,
    trials: int,
    sharpe_variance: float,
    skewness: float = 0.0,
    kurtosis: float = 3.0,
) -> float:
    """DSR: the probability that the best trial's true Sharpe ratio is above zero, after
    accounting for how many trials were run.

    Bailey & López de Prado (2014), eq. (1): the PSR of the best trial measured against
    SR₀ = :func:`expected_max_sharpe` (``trials``, ``sharpe_variance``) instead of zero.
    ``sharpe_variance`` is the variance of the trials' per-period Sharpe ratios. With
    everything else fixed, DSR falls as ``trials`` grows.
    """
    threshold = expected_max_sharpe(trials, sharpe_variance)
    return probabilistic_sharpe_ratio(
        sharpe, observations, skewness=skewness, kurtosis=kurtosis, benchmark=threshold
    )


@dataclass(frozen=True)
class PboResult:
    """The outcome of combinatorially symmetric cross-validation.

    ``pbo`` is the share of train/test splits in which the configuration that was best
    in-sample ranks at or below the median out-of-sample; ``logits`` holds λ for every
    split (λ ≤ 0 counts as overfit).
    """

    pbo: float
    partitions: int
    combinations: int
    trials: int
    logits: tuple[float, ...]


def _sharpe_from_sums(
    total: np.ndarray[Any, Any], squares: np.ndarray[Any, Any], count: float
) -> np.ndarray[Any, Any]:
    import numpy as np

    mean = total / count
    variance = (squares - count * mean**2) / (count - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sharpe = mean / np.sqrt(np.maximum(variance, 0.0))
    return np.where(variance > 0, sharpe, -np.inf)


def probability_of_backtest_overfitting(
    returns: npt.ArrayLike, *, partitions: int = 16, max_combinations: int | None = None
) -> PboResult:
    """PBO of a sweep by combinatorially symmetric cross-validation (CSCV).

    Bailey, Borwein, López de Prado & Zhu (2015), section 2: the T×N matrix of per-period
    returns (one column per trial) is cut into S = ``partitions`` row blocks of equal
    size. For each of the C(S, S/2) ways of choosing half the blocks as the training set
    J (the rest, J̄, is the test set), the trial n* with the best Sharpe ratio on J is
    found; ω̄ is the relative rank of n* among all trials on J̄ (rank / (N + 1)), and
    λ = ln(ω̄ / (1 − ω̄)). PBO is the share of splits with λ ≤ 0: how often the in-sample
    winner is at best median out of sample.

    ``max_combinations`` evaluates an evenly spaced subset of splits when C(S, S/2) is
    larger (C(16, 8) = 12,870 is fast enough to evaluate in full). Raises ValueError for
    fewer than 2 trials, an odd or too small ``partitions``, or fewer rows than blocks.
    """
    import itertools

    import numpy as np

    matrix = np.asarray(returns, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"returns must be a 2-D matrix (periods x trials), got {matrix.ndim}-D")
    periods, trials = matrix.shape
    if trials < 2:
        raise ValueError(f"PBO needs at least 2 trials, got {trials}")
    if partitions < 2 or partitions % 2:
        raise ValueError(f"partitions must be an even number >= 2, got {partitions}")
    if periods < 2 * partitions:
        raise ValueError(
            f"{periods} periods are too few for {partitions} partitions (need at least "
            f"{2 * partitions}); use fewer partitions"
        )
    matrix = np.nan_to_num(matrix, nan=0.0, posinf=0.0, neginf=0.0)
    # Equal blocks (the paper's requirement); the few trailing rows that do not fit drop.
    size = periods // partitions
    blocks = matrix[: size * partitions].reshape(partitions, size, trials)
    block_sum = blocks.sum(axis=1)
    block_sq = (blocks**2).sum(axis=1)
    everything_sum = block_sum.sum(axis=0)
    everything_sq = block_sq.sum(axis=0)
    half = partitions // 2
    splits = list(itertools.combinations(range(partitions), half))
    if max_combinations is not None and len(splits) > max_combinations:
        pick = np.linspace(0, len(splits) - 1, max_combinations).round().astype(int)
        splits = [splits[i] for i in pick]
    count = float(size * half)
    logits: list[float] = []
    for chunk_start in range(0, len(splits), 512):
        chunk = np.asarray(splits[chunk_start : chunk_start + 512])
        train_sum = block_sum[chunk].sum(axis=1)
        train_sq = block_sq[chunk].sum(axis=1)
        train = _sharpe_from_sums(train_sum, train_sq, count)
        test = _sharpe_from_sums(everything_sum - train_sum, everything_sq - train_sq, count)
        best = train.argmax(axis=1)
        best_test = test[np.arange(len(chunk)), best]
        # Rank 1 = worst; ties share the lowest rank, as a conservative reading.
        rank = (test < best_test[:, None]).sum(axis=1) + 1
        omega = rank / (trials + 1)
        logits.extend(np.log(omega / (1 - omega)).tolist())
    logit_array = np.asarray(logits)
    return PboResult(
        pbo=float(np.mean(logit_array <= 0)),
        partitions=partitions,
        combinations=len(logits),
        trials=trials,
        logits=tuple(logits),
    )
