"""PSR, DSR and PBO against worked numbers and an independent, naive reimplementation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import kurtosis as scipy_kurtosis
from scipy.stats import norm
from scipy.stats import skew as scipy_skew

from quantrack.services.overfitting import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    return_moments,
)


def test_dsr_reproduces_the_papers_numerical_example() -> None:
    """The paper's example (SR 2.5 a year, T=1250, N=100, V=1/2, γ3=-3, γ4=10) gives 0.9004."""
    dsr = deflated_sharpe_ratio(
        2.5 / math.sqrt(250),
        1250,
        trials=100,
        sharpe_variance=0.5 / 250,
        skewness=-3.0,
        kurtosis=10.0,
    )
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_psr_of_normal_returns_matches_the_closed_form() -> None:
    """Under normal returns PSR is Φ(SR·√(T−1)/√(1 + SR²/2))."""
    sharpe, t = 0.08, 500
    expected = norm.cdf(sharpe * math.sqrt(t - 1) / math.sqrt(1 + sharpe**2 / 2))
    assert probabilistic_sharpe_ratio(sharpe, t) == pytest.approx(expected, rel=1e-12)


def test_expected_max_sharpe_is_zero_for_one_trial_and_grows_with_trials() -> None:
    """One trial has nothing to select among; more trials raise the bar."""
    assert expected_max_sharpe(1, 0.01) == 0.0
    bars = [expected_max_sharpe(n, 0.01) for n in (2, 10, 100, 1000)]
    assert bars == sorted(bars)
    assert bars[0] > 0


@given(
    sharpe=st.floats(0.01, 0.3),
    t=st.integers(50, 5000),
    variance=st.floats(1e-5, 0.05),
    n=st.integers(2, 5000),
)
def test_dsr_falls_as_trials_grow(sharpe: float, t: int, variance: float, n: int) -> None:
    """With everything else fixed, more trials never raise the deflated Sharpe ratio."""
    fewer = deflated_sharpe_ratio(sharpe, t, trials=n, sharpe_variance=variance)
    more = deflated_sharpe_ratio(sharpe, t, trials=n + 1, sharpe_variance=variance)
    assert more <= fewer + 1e-12


def test_return_moments_agree_with_scipy() -> None:
    """Skewness and non-excess kurtosis equal scipy's biased estimators."""
    returns = np.random.default_rng(3).standard_t(5, size=2000) * 0.01
    moments = return_moments(returns)
    assert moments.skewness == pytest.approx(scipy_skew(returns), rel=1e-9)
    assert moments.kurtosis == pytest.approx(scipy_kurtosis(returns, fisher=False), rel=1e-9)
    assert moments.sharpe == pytest.approx(returns.mean() / returns.std(ddof=1), rel=1e-12)
    assert moments.observations == 2000


@pytest.mark.parametrize(
    "bad",
    [[0.01, 0.02], [0.01, 0.01, 0.01, 0.01], [float("nan")] * 10],
    ids=["too-short", "no-variance", "all-nan"],
)
def test_return_moments_refuses_undefined_series(bad: list[float]) -> None:
    """A series too short or flat to have a Sharpe ratio is refused with a reason."""
    with pytest.raises(ValueError, match=r"need at least|no variance"):
        return_moments(bad)


def _naive_pbo(matrix: np.ndarray, partitions: int) -> float:
    """CSCV written straight from the paper, with loops: the reference to compare with."""
    periods, trials = matrix.shape
    size = periods // partitions
    blocks = [matrix[i * size : (i + 1) * size] for i in range(partitions)]
    overfit = 0
    splits = list(itertools.combinations(range(partitions), partitions // 2))
    for train_ids in splits:
        train = np.vstack([blocks[i] for i in train_ids])
        test = np.vstack([blocks[i] for i in range(partitions) if i not in train_ids])
        train_sr = [train[:, n].mean() / train[:, n].std(ddof=1) for n in range(trials)]
        test_sr = [test[:, n].mean() / test[:, n].std(ddof=1) for n in range(trials)]
        best = int(np.argmax(train_sr))
        rank = sorted(test_sr).index(test_sr[best]) + 1
        omega = rank / (trials + 1)
        if math.log(omega / (1 - omega)) <= 0:
            overfit += 1
    return overfit / len(splits)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pbo_equals_a_naive_reimplementation(seed: int) -> None:
    """The vectorized CSCV gives exactly the loop-by-loop answer of the paper's recipe."""
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, 0.01, size=(240, 12))
    matrix[:, seed] += 0.001 * seed  # some sweeps with a real edge, some without
    result = probability_of_backtest_overfitting(matrix, partitions=8)
    assert result.pbo == pytest.approx(_naive_pbo(matrix, 8), abs=1e-12)
    assert result.combinations == math.comb(8, 4)


@given(
    seed=st.integers(0, 10_000), trials=st.integers(2, 15), partitions=st.sampled_from([2, 4, 6])
)
def test_pbo_is_a_probability(seed: int, trials: int, partitions: int) -> None:
    """PBO always lies in [0, 1], whatever the returns."""
    matrix = np.random.default_rng(seed).normal(0, 0.01, size=(60, trials))
    result = probability_of_backtest_overfitting(matrix, partitions=partitions)
    assert 0.0 <= result.pbo <= 1.0
    assert len(result.logits) == result.combinations


def test_pbo_of_pure_noise_sweeps_is_near_one_half_on_average() -> None:
    """Without any skill, the in-sample winner is below median out of sample half the time."""
    rng = np.random.default_rng(11)
    values = [
        probability_of_backtest_overfitting(rng.normal(0, 0.01, (160, 16)), partitions=8).pbo
        for _ in range(120)
    ]
    assert np.mean(values) == pytest.approx(0.5, abs=0.06)


def test_pbo_of_a_sweep_with_one_real_edge_is_near_zero() -> None:
    """A configuration with a genuine edge keeps winning out of sample."""
    matrix = np.random.default_rng(5).normal(0, 0.01, size=(1000, 30))
    matrix[:, 7] += 0.004
    assert probability_of_backtest_overfitting(matrix).pbo < 0.05


@pytest.mark.parametrize(
    ("shape", "partitions", "message"),
    [
        ((100,), 4, "2-D"),
        ((100, 1), 4, "at least 2 trials"),
        ((100, 5), 5, "even"),
        ((10, 5), 16, "too few"),
    ],
)
def test_pbo_refuses_bad_input_with_a_reason(
    shape: tuple[int, ...], partitions: int, message: str
) -> None:
    """Malformed matrices and partition counts are refused, naming what is wrong."""
    with pytest.raises(ValueError, match=message):
        probability_of_backtest_overfitting(np.zeros(shape) + 0.01, partitions=partitions)
