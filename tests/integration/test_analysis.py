"""assess_batch on real vectorbt sweeps recorded into a real (DuckDB) workspace.

Every figure is checked against an independent computation in the test, written from the
papers' formulas and vectorbt's own portfolio returns, never by calling the code under test.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from quantrack.analysis import BatchAssessment, assess_batch
from quantrack.domain import BatchNotFound
from quantrack.reports import build_report, collect_report_data
from quantrack.sample_data import load_sample
from quantrack.workspace import open_workspace

vbt = pytest.importorskip("vectorbt")

from quantrack.engines.vectorbt import VectorbtAdapter  # noqa: E402

SMALL = [5, 10, 20, 40, 80]
BIG = [2, 3, 4, 5, 10, 20, 40, 80]
GAMMA = 0.5772156649015329


def ma_grid(close: pd.Series, windows: list[int]) -> Any:
    """An MA-crossover portfolio over every (fast, slow) pair of ``windows``."""
    fast, slow = vbt.MA.run_combs(close, window=windows, r=2, short_names=["fast", "slow"])
    entries = fast.ma_crossed_above(slow)
    exits = fast.ma_crossed_below(slow)
    return vbt.Portfolio.from_signals(close, entries, exits, fees=0.001, freq="1D")


@pytest.fixture(scope="module")
def close() -> pd.Series:
    """Close prices of one bundled (synthetic) symbol."""
    return load_sample("AAA")["close"]


@pytest.fixture(scope="module")
def small_pf(close: pd.Series) -> Any:
    """The 10-configuration MA grid."""
    return ma_grid(close, SMALL)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, small_pf: Any, close: pd.Series) -> Any:
    """A real workspace holding the small grid and a bigger grid containing it."""
    ws = open_workspace(tmp_path_factory.mktemp("analysis"))
    adapter = VectorbtAdapter(ws, capture_code=False)
    small = adapter.record(small_pf, name="ma-small")
    big = adapter.record(ma_grid(close, BIG), name="ma-big")
    return ws, small.batch_id, big.batch_id


def returns_by_params(pf: Any) -> dict[tuple[int, int], pd.Series]:
    """Per-period returns of every column, keyed by (fast, slow), the first bar dropped."""
    frame = pf.returns().iloc[1:]
    return {(int(f), int(s)): frame[(f, s)] for f, s in frame.columns}


def key(params: dict[str, Any]) -> tuple[int, int]:
    """The (fast, slow) windows of a run's params."""
    return int(params["fast_window"]), int(params["slow_window"])


def moments(series: pd.Series) -> tuple[float, float, float, int]:
    """Sharpe (ddof 1), skewness and non-excess kurtosis (biased, as in the papers), T."""
    values = series.to_numpy()
    return (
        float(values.mean() / values.std(ddof=1)),
        float(sps.skew(values)),
        float(sps.kurtosis(values, fisher=False)),
        len(values),
    )


def psr(sharpe: float, skew: float, kurt: float, t: int, benchmark: float = 0.0) -> float:
    """Bailey & López de Prado (2012), eq. (5)."""
    spread = math.sqrt(1 - skew * sharpe + (kurt - 1) / 4 * sharpe**2)
    return float(sps.norm.cdf((sharpe - benchmark) * math.sqrt(t - 1) / spread))


def sr0(trials: int, variance: float) -> float:
    """Bailey & López de Prado (2014), eq. (2): the expected best of ``trials`` null SRs."""
    z1 = sps.norm.ppf(1 - 1 / trials)
    z2 = sps.norm.ppf(1 - 1 / (trials * math.e))
    return math.sqrt(variance) * ((1 - GAMMA) * z1 + GAMMA * z2)


def dsr_by_hand(pf: Any, trials: int) -> tuple[tuple[int, int], float]:
    """The best column by sharpe and its DSR, computed from vectorbt's own figures."""
    annual = pf.sharpe_ratio()
    best = max(annual.index, key=lambda c: annual[c])
    series = returns_by_params(pf)
    sharpes = [moments(s)[0] for s in series.values()]
    sharpe, skew, kurt, t = moments(series[(int(best[0]), int(best[1]))])
    threshold = sr0(trials, float(np.var(sharpes, ddof=1)))
    return (int(best[0]), int(best[1])), psr(sharpe, skew, kurt, t, threshold)


def cscv_by_hand(matrix: np.ndarray, partitions: int) -> float:
    """PBO by a plain loop over every split (Bailey, Borwein, López de Prado & Zhu, 2015)."""
    size = len(matrix) // partitions
    blocks = [matrix[i * size : (i + 1) * size] for i in range(partitions)]
    overfit = 0
    splits = list(itertools.combinations(range(partitions), partitions // 2))
    for train_ids in splits:
        train = np.vstack([blocks[i] for i in train_ids])
        test = np.vstack([blocks[i] for i in range(partitions) if i not in train_ids])
        chosen = int(np.argmax(train.mean(axis=0) / train.std(axis=0, ddof=1)))
        test_sharpe = test.mean(axis=0) / test.std(axis=0, ddof=1)
        omega = sps.rankdata(test_sharpe, method="min")[chosen] / (matrix.shape[1] + 1)
        overfit += math.log(omega / (1 - omega)) <= 0
    return overfit / len(splits)


def test_psr_of_every_run_matches_the_formula_on_vectorbt_returns(
    recorded: Any, small_pf: Any
) -> None:
    """Every run's PSR equals eq. (5) of the 2012 paper on vectorbt's own per-bar returns."""
    ws, small, _ = recorded
    result = assess_batch(ws, small)
    expected = returns_by_params(small_pf)
    assert len(result.runs) == len(expected) == 10
    for run in result.runs:
        sharpe, skew, kurt, t = moments(expected[key(run.params)])
        assert run.observations == t == len(small_pf.wrapper.index) - 1
        assert run.sharpe == pytest.approx(sharpe, rel=1e-9)
        assert run.skewness == pytest.approx(skew, rel=1e-9)
        assert run.kurtosis == pytest.approx(kurt, rel=1e-9)
        assert run.psr == pytest.approx(psr(sharpe, skew, kurt, t), rel=1e-9)
    assert set(result.psr) == {r.experiment_id for r in result.runs}
    assert result.notes == ()


def test_dsr_of_the_best_run_matches_the_formula(recorded: Any, small_pf: Any) -> None:
    """The best run by sharpe is vectorbt's best column, and its DSR equals the 2014 paper's."""
    ws, small, _ = recorded
    result = assess_batch(ws, small)
    best, dsr = dsr_by_hand(small_pf, trials=10)
    assert result.trials == 10
    assert result.best is not None
    assert key(result.best.params) == best
    assert result.best.value == pytest.approx(float(small_pf.sharpe_ratio().max()), rel=1e-9)
    assert result.dsr == pytest.approx(dsr, rel=1e-9)
    # Deflation only ever lowers the probability below the plain PSR.
    assert result.best.psr is not None
    assert result.dsr < result.best.psr


def test_pbo_matches_an_independent_cscv(recorded: Any, small_pf: Any) -> None:
    """PBO equals a plain-loop CSCV over vectorbt's returns, and lies in [0, 1]."""
    ws, small, _ = recorded
    result = assess_batch(ws, small, partitions=8)
    series = returns_by_params(small_pf)
    matrix = np.column_stack([series[key(r.params)].to_numpy() for r in result.runs])
    assert result.pbo is not None
    assert result.pbo.partitions == 8
    assert result.pbo.combinations == math.comb(8, 4)
    assert result.pbo.pbo == pytest.approx(cscv_by_hand(matrix, 8), abs=1e-12)
    assert 0.0 <= result.pbo.pbo <= 1.0
    assert assess_batch(ws, small).pbo.combinations == math.comb(16, 8)  # type: ignore[union-attr]


def test_dsr_falls_when_the_same_winner_comes_from_a_bigger_sweep(recorded: Any) -> None:
    """The same best configuration, found among more trials, has a lower DSR."""
    ws, small, big = recorded
    few = assess_batch(ws, small)
    many = assess_batch(ws, big)
    assert few.best is not None
    assert many.best is not None
    assert key(few.best.params) == key(many.best.params)
    assert many.best.sharpe == pytest.approx(few.best.sharpe, rel=1e-12)
    assert (few.trials, many.trials) == (10, 28)
    assert many.expected_max_sharpe > few.expected_max_sharpe  # type: ignore[operator]
    assert many.dsr < few.dsr  # type: ignore[operator]


def test_workspace_method_gives_the_same_assessment(recorded: Any) -> None:
    """Workspace.assess_batch is assess_batch on that workspace, and to_dict is plain data."""
    ws, small, _ = recorded
    direct = assess_batch(ws, small, metric="total_return", partitions=4)
    via = ws.assess_batch(small, metric="total_return", partitions=4)
    assert isinstance(via, BatchAssessment)
    assert via.to_dict() == direct.to_dict()
    data = via.to_dict()
    assert data["metric"] == "total_return"
    assert data["partitions"] == 4
    assert data["best_experiment_id"] == max(via.runs, key=lambda r: r.value or 0).experiment_id
    assert len(data["runs"]) == 10


def test_lower_is_better_metric_picks_the_smallest(recorded: Any) -> None:
    """Selecting by max_drawdown picks the run with the smallest drawdown."""
    ws, small, _ = recorded
    result = assess_batch(ws, small, metric="max_drawdown")
    assert result.best is not None
    assert result.best.value == min(r.value for r in result.runs if r.value is not None)


def test_unknown_metric_gives_a_note_not_a_crash(recorded: Any) -> None:
    """A metric no run recorded leaves DSR empty and says so; PSR and PBO still come."""
    ws, small, _ = recorded
    result = assess_batch(ws, small, metric="no_such_metric")
    assert result.best is None
    assert result.dsr is None
    assert result.pbo is not None
    assert len(result.psr) == 10
    assert any("no_such_metric" in note for note in result.notes)


@pytest.mark.parametrize("partitions", [0, 3, 7, -2, True, 2.0])
def test_bad_partitions_are_refused(recorded: Any, partitions: Any) -> None:
    """The partitions must be an even integer of at least 2."""
    ws, small, _ = recorded
    with pytest.raises(ValueError, match="partitions must be an even number"):
        assess_batch(ws, small, partitions=partitions)


@pytest.mark.parametrize("metric", ["", "  ", None])
def test_bad_metric_is_refused(recorded: Any, metric: Any) -> None:
    """The metric must be a non-empty name."""
    ws, small, _ = recorded
    with pytest.raises(ValueError, match="metric must be a metric name"):
        assess_batch(ws, small, metric=metric)


def test_unknown_batch_raises_batch_not_found(recorded: Any) -> None:
    """An id no batch has raises BatchNotFound naming it."""
    ws, _, _ = recorded
    with pytest.raises(BatchNotFound, match="nope"):
        assess_batch(ws, "nope")


def test_too_few_periods_for_the_partitions_is_a_note(tmp_path: Path, close: pd.Series) -> None:
    """A short sweep gets PSR and DSR but, with too few periods for 16 blocks, a PBO note."""
    ws = open_workspace(tmp_path)
    short = close.iloc[:25]
    pf = ma_grid(short, [2, 3, 5])
    batch = VectorbtAdapter(ws, capture_code=False).record(pf, name="short").batch_id
    assert batch is not None
    result = assess_batch(ws, batch)
    assert result.pbo is None
    assert result.observations == 24
    assert any("too few for 16 partitions" in note for note in result.notes)
    assert assess_batch(ws, batch, partitions=4).pbo is not None


def test_no_curves_is_a_note(tmp_path: Path, small_pf: Any) -> None:
    """A sweep recorded without equity curves gives notes, not figures, and no crash."""
    ws = open_workspace(tmp_path)
    batch = (
        VectorbtAdapter(ws, capture_code=False)
        .record(small_pf, name="blind", equity=False, trades=False)
        .batch_id
    )
    assert batch is not None
    result = assess_batch(ws, batch)
    assert result.trials == 10
    assert result.best is not None
    assert (result.dsr, result.pbo, result.psr) == (None, None, {})
    assert any("no run of the batch recorded an equity curve" in n for n in result.notes)


def test_flat_runs_have_no_psr_but_count_as_trials(tmp_path: Path, close: pd.Series) -> None:
    """A configuration that never trades has no PSR (a note says why) yet is a trial."""
    ws = open_workspace(tmp_path)
    fast, slow = vbt.MA.run_combs(close, window=SMALL, r=2, short_names=["fast", "slow"])
    entries = fast.ma_crossed_above(slow)
    exits = fast.ma_crossed_below(slow)
    entries.iloc[:, 0] = False
    pf = vbt.Portfolio.from_signals(close, entries, exits, fees=0.001, freq="1D")
    batch = VectorbtAdapter(ws, capture_code=False).record(pf, name="flat").batch_id
    assert batch is not None
    result = assess_batch(ws, batch)
    flat = [r for r in result.runs if r.psr is None]
    assert len(flat) == 1
    assert key(flat[0].params) == (5, 10)
    assert result.trials == 10
    assert len(result.psr) == 9
    assert any("no variance" in note for note in result.notes)
    assert result.dsr is not None
    assert result.pbo is not None


def test_batch_report_shows_dsr_pbo_and_every_psr(recorded: Any) -> None:
    """The HTML report of a batch carries its DSR, its PBO and the PSR of each run."""
    ws, small, _ = recorded
    batch = ws.observer.get_batch(small)
    data = collect_report_data(ws, [], [batch])
    (assessment,) = data.assessments
    expected = assess_batch(ws, small)
    assert assessment.to_dict() == expected.to_dict()
    page = build_report(data)
    assert "Overfitting: ma-small" in page
    assert expected.dsr is not None
    assert expected.pbo is not None
    for label, value in (("DSR of the best run", expected.dsr), ("PBO", expected.pbo.pbo)):
        assert re.search(rf"<td[^>]*>{label}</td><td[^>]*>{value:,.4g}</td>", page), label
    for run in expected.runs:
        assert run.psr is not None
        assert f"[{run.experiment_id[-6:]}]</td>" in page
        assert f">{run.psr:,.4g}</td>" in page
