"""`batches show` reports a sweep's overfitting statistics; `runs best --batch` records
which metric picked the winner.

The sweep is a real vectorbt MA grid on the bundled sample data, recorded through the
adapter into the workspace the CLI reads.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from quantrack.cli._errors import EXIT_BAD_INPUT, EXIT_NOT_FOUND
from quantrack.cli._output import fmt_number
from quantrack.sample_data import load_sample
from quantrack.workspace import Workspace
from tests.cli.conftest import Invoke

vbt = pytest.importorskip("vectorbt")

from quantrack.engines.vectorbt import VectorbtAdapter  # noqa: E402


@pytest.fixture(scope="module")
def portfolio() -> Any:
    """A 10-configuration MA-crossover grid on one synthetic symbol."""
    close = load_sample("AAA")["close"]
    fast, slow = vbt.MA.run_combs(close, window=[5, 10, 20, 40, 80], r=2, short_names=["f", "s"])
    entries = fast.ma_crossed_above(slow)
    exits = fast.ma_crossed_below(slow)
    return vbt.Portfolio.from_signals(close, entries, exits, fees=0.001, freq="1D")


@pytest.fixture
def sweep(memory_workspace: Workspace, portfolio: Any) -> str:
    """The grid recorded as one batch of the CLI's workspace; its id."""
    result = VectorbtAdapter(memory_workspace, capture_code=False).record(portfolio, name="ma")
    assert result.batch_id is not None
    return result.batch_id


def test_show_prints_trials_dsr_and_pbo(
    invoke: Invoke, memory_workspace: Workspace, sweep: str
) -> None:
    """The overfitting table names the trials, the metric, the best run, its DSR and the PBO."""
    expected = memory_workspace.assess_batch(sweep)
    result = invoke(["batches", "show", sweep])
    assert result.exit_code == 0, result.stderr
    assert expected.best is not None
    assert expected.pbo is not None
    text = result.stdout
    for line in (
        ("trials", "10"),
        ("selection metric", "sharpe"),
        ("best run", expected.best.experiment_id),
        ("DSR of best", fmt_number(expected.dsr)),
        ("PBO", f"{fmt_number(expected.pbo.pbo)} (12870 splits)"),
        ("partitions", "16"),
    ):
        assert any(line[0] in row and line[1] in row for row in text.splitlines()), line


def test_show_json_holds_the_assessment(
    invoke: Invoke, memory_workspace: Workspace, sweep: str
) -> None:
    """--json carries the same figures as Workspace.assess_batch, with --partitions applied."""
    result = invoke(["batches", "show", sweep, "--json", "--partitions", "8"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)["overfitting"]
    expected = memory_workspace.assess_batch(sweep, partitions=8).to_dict()
    assert data == json.loads(json.dumps(expected))
    assert data["trials"] == 10
    assert data["partitions"] == 8
    assert data["pbo_combinations"] == 70
    assert 0.0 <= data["pbo"] <= 1.0
    assert 0.0 < data["dsr"] < 1.0
    assert len(data["runs"]) == 10


def test_show_metric_option_changes_the_best_run(
    invoke: Invoke, memory_workspace: Workspace, sweep: str
) -> None:
    """--metric max_drawdown picks the run with the smallest drawdown."""
    data = json.loads(
        invoke(["batches", "show", sweep, "--json", "--metric", "max_drawdown"]).stdout
    )
    runs = data["overfitting"]["runs"]
    assert data["overfitting"]["metric"] == "max_drawdown"
    assert data["overfitting"]["best_value"] == min(r["value"] for r in runs)


@pytest.mark.parametrize("partitions", ["7", "0", "1"])
def test_bad_partitions_are_explained(invoke: Invoke, sweep: str, partitions: str) -> None:
    """An odd or too small --partitions fails with a message saying what is allowed."""
    result = invoke(["batches", "show", sweep, "--partitions", partitions])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "--partitions must be an even number of at least 2" in result.stderr


def test_empty_metric_is_explained(invoke: Invoke, sweep: str) -> None:
    """An empty --metric fails with a message asking for a metric name."""
    result = invoke(["batches", "show", sweep, "--metric", " "])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "--metric must name a metric" in result.stderr


def test_runs_best_with_batch_records_the_selection_metric(
    invoke: Invoke, memory_workspace: Workspace, sweep: str
) -> None:
    """`runs best --batch` stores its metric on the batch; `batches show` then deflates by it."""
    assert memory_workspace.observer.get_batch(sweep).selection_metric is None
    best = invoke(["runs", "best", "--batch", sweep, "--metric", "total_return", "-n", "3"])
    assert best.exit_code == 0, best.stderr
    assert memory_workspace.observer.get_batch(sweep).selection_metric == "total_return"
    show = json.loads(invoke(["batches", "show", sweep, "--json"]).stdout)
    assert show["selection_metric"] == "total_return"
    assert show["overfitting"]["metric"] == "total_return"
    top = json.loads(
        invoke(["runs", "best", "--batch", sweep, "--metric", "total_return", "--json"]).stdout
    )
    assert show["overfitting"]["best_experiment_id"] == top[0]["id"]


def test_runs_best_without_batch_records_nothing(
    invoke: Invoke, memory_workspace: Workspace, sweep: str
) -> None:
    """Ranking across all runs picks from no batch, so no batch records a selection."""
    result = invoke(["runs", "best", "--metric", "sharpe"])
    assert result.exit_code == 0, result.stderr
    assert memory_workspace.observer.get_batch(sweep).selection_metric is None


def test_show_unknown_batch_is_not_found(invoke: Invoke, sweep: str) -> None:
    """An id no batch has exits with the not-found code."""
    result = invoke(["batches", "show", "ffffffffffffffff"])
    assert result.exit_code == EXIT_NOT_FOUND
