"""Reproducing recorded backtrader and vectorbt runs from their captured code and inputs."""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from quantrack import open_workspace
from quantrack.adapters.frames import frame_to_parquet
from quantrack.domain import Experiment, ExperimentFilter
from quantrack.reproduce import InputNotStored, ReproductionFailed, reproduce
from quantrack.sample_data import load_sample, load_sample_prices
from quantrack.workspace import Workspace

bt = pytest.importorskip("backtrader")
vbt = pytest.importorskip("vectorbt")

STRATEGY = '''"""A moving-average crossover, as a user's project would hold it."""

import backtrader as bt
import vectorbt as vbt

from {package}.signals import WINDOW_SCALE


class SmaCross(bt.Strategy):
    params = (("fast", 10), ("slow", 30), ("stake", 100))

    def __init__(self):
        fast = bt.ind.SMA(period=self.p.fast * WINDOW_SCALE)
        slow = bt.ind.SMA(period=self.p.slow * WINDOW_SCALE)
        self.crossover = bt.ind.CrossOver(fast, slow)

    def next(self):
        if not self.position and self.crossover > 0:
            self.buy(size=self.p.stake)
        elif self.position and self.crossover < 0:
            self.close()


def ma_grid(close, fast=(5, 10), slow=30, fees=0.001):
    fast_ma = vbt.MA.run(close, list(fast), short_name="fast")
    slow_ma = vbt.MA.run(close, slow * WINDOW_SCALE, short_name="slow")
    entries = fast_ma.ma_crossed_above(slow_ma)
    exits = fast_ma.ma_crossed_below(slow_ma)
    return vbt.Portfolio.from_signals(close, entries, exits, fees=fees, freq="1D")
'''


class Project:
    """A temporary project folder holding a strategy package, imported under a unique name."""

    def __init__(self, root: Path, package: str) -> None:
        self.root = root
        self.package = package
        self.module: ModuleType | None = None

    @property
    def strategy_file(self) -> Path:
        """The file defining the strategies."""
        return self.root / self.package / "strategy.py"

    def load(self) -> ModuleType:
        """Import the strategy module from the project folder."""
        self.module = importlib.import_module(f"{self.package}.strategy")
        return self.module


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """A project with pyproject.toml, a strategy module and a helper module it imports."""
    package = f"repro_{uuid.uuid4().hex[:10]}"
    root = tmp_path / "project"
    (root / package).mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "demo"\n', "utf-8")
    (root / package / "__init__.py").write_text("", "utf-8")
    (root / package / "signals.py").write_text("WINDOW_SCALE = 1\n", "utf-8")
    (root / package / "strategy.py").write_text(STRATEGY.format(package=package), "utf-8")
    monkeypatch.syspath_prepend(str(root))
    yield Project(root, package)
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A real workspace (DuckDB file and artifact folder) on disk."""
    return open_workspace(tmp_path / "ws")


def _record_backtrader(
    workspace: Workspace, project: Project, *, store_inputs: bool = True
) -> Experiment:
    from quantrack.engines.backtrader import BacktraderAdapter

    module = project.load()
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=load_sample("AAA")), name="AAA")
    cerebro.addstrategy(module.SmaCross, fast=8, slow=25)
    cerebro.broker.setcash(50_000.0)
    cerebro.broker.setcommission(commission=0.001)
    adapter = BacktraderAdapter(workspace, store_inputs=store_inputs)
    adapter.run(cerebro, name="sma-cross", params={"universe": "AAA"}, seed=7)
    (experiment,) = workspace.tracker.list_experiments(ExperimentFilter(name="sma-cross"))
    return experiment


def test_backtrader_run_is_reproduced_exactly(workspace: Workspace, project: Project) -> None:
    """A backtrader run with stored inputs reruns from its record with identical results."""
    old = _record_backtrader(workspace, project)
    report = reproduce(workspace, old.id)
    assert report.reproduced, report.summary()
    assert report.metrics_compared == len(old.metrics) > 5
    assert report.equity_points_compared > 2000
    assert report.code_changes == ()
    assert report.package_differences == ()
    new = workspace.tracker.get_experiment(report.reproduction_id or "")
    assert new.definition.reproduces == old.id
    assert new.metrics == old.metrics
    assert new.params == old.params
    assert new.definition.seed == 7
    assert new.definition.provenance.code_hash == old.definition.provenance.code_hash
    assert "reproduced" in report.summary().splitlines()[0]


@pytest.mark.slow
def test_changed_working_copy_is_reported_but_the_captured_code_runs(
    workspace: Workspace, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Editing the strategy file after the run changes nothing but the code report."""
    old = _record_backtrader(workspace, project)
    # The edited original is importable by the reproducing process too: captured code wins.
    monkeypatch.setenv("PYTHONPATH", str(project.root))
    project.strategy_file.write_text(
        project.strategy_file.read_text("utf-8").replace("self.buy(", "self.sell("), "utf-8"
    )
    (project.root / project.package / "signals.py").unlink()
    report = reproduce(workspace, old.id)
    assert report.reproduced, report.summary()
    changes = {change.path: change.change for change in report.code_changes}
    assert changes == {
        f"{project.package}/strategy.py": "modified",
        f"{project.package}/signals.py": "missing",
    }
    assert "the working copy differs" in report.summary()


def _tamper(workspace: Workspace, artifact_id: str, data: bytes) -> None:
    """Overwrite a stored artifact's bytes in place, as damage or a hand edit would."""
    assert workspace.path is not None
    # The filesystem store keeps an artifact at <first two hex digits>/<the rest>.
    path = workspace.path / "artifacts" / artifact_id[:2] / artifact_id[2:]
    path.chmod(0o644)
    path.write_bytes(data)


@pytest.mark.slow
def test_changed_captured_code_gives_precisely_reported_metric_differences(
    workspace: Workspace, project: Project
) -> None:
    """Captured code changed in the store runs as changed: the metrics that differ are named."""
    old = _record_backtrader(workspace, project)
    (code,) = [ref for ref in old.artifacts if ref.kind == "code" and ref.name == "signals.py"]
    _tamper(workspace, code.id, b"WINDOW_SCALE = 2\n")
    report = reproduce(workspace, old.id)
    assert not report.reproduced
    assert {c.change for c in report.code_changes} == {"damaged"}
    differing = {diff.name: diff for diff in report.metric_differences}
    assert "final_value" in differing
    assert differing["final_value"].old == old.metrics["final_value"]
    new = workspace.tracker.get_experiment(report.reproduction_id or "")
    assert differing["final_value"].new == new.metrics["final_value"] != old.metrics["final_value"]
    assert report.equity_difference is not None
    assert "first differs at" in report.equity_difference
    assert "metric final_value:" in report.summary()


def test_reproduction_that_raises_is_recorded_failed_and_reported(
    workspace: Workspace, project: Project
) -> None:
    """Captured code that now breaks gives a failed reproduction run and the error."""
    old = _record_backtrader(workspace, project)
    (code,) = [ref for ref in old.artifacts if ref.kind == "code" and ref.name == "signals.py"]
    _tamper(workspace, code.id, b"WINDOW_SCALE = 0\n")
    report = reproduce(workspace, old.id)
    assert not report.reproduced
    assert report.error
    new = workspace.tracker.get_experiment(report.reproduction_id or "")
    assert new.status.value == "failed"
    assert new.definition.reproduces == old.id
    assert f"error: {report.error}" in report.summary()


@pytest.mark.slow
def test_changed_input_data_is_detected(workspace: Workspace, project: Project) -> None:
    """Stored input data that changed since the run is named, with the metric effect."""
    old = _record_backtrader(workspace, project)
    (stored,) = [ref for ref in old.definition.inputs if ref.kind == "input_data"]
    bars = load_sample("AAA")
    bars.loc[bars.index[1000:], ["open", "high", "low", "close"]] *= 1.5
    _tamper(workspace, stored.id, frame_to_parquet(bars))
    report = reproduce(workspace, old.id)
    assert not report.reproduced
    assert any("'AAA'" in text and "no longer matches" in text for text in report.data_differences)
    assert any("fingerprint" in text for text in report.data_differences)
    assert report.metric_differences


@pytest.mark.slow
def test_backtrader_sweep_item_is_reproduced_with_its_combination(
    workspace: Workspace, project: Project
) -> None:
    """One combination of an optstrategy sweep reruns with that combination's params."""
    from quantrack.engines.backtrader import BacktraderAdapter

    module = project.load()
    cerebro = bt.Cerebro(maxcpus=1)
    cerebro.adddata(bt.feeds.PandasData(dataname=load_sample("DDD")), name="DDD")
    cerebro.optstrategy(module.SmaCross, fast=[5, 12], slow=40)
    BacktraderAdapter(workspace, store_inputs=True).run(cerebro, name="sweep")
    items = workspace.tracker.list_experiments(ExperimentFilter(name="sweep"))
    old = next(e for e in items if e.params["fast"] == 12)
    assert old.definition.batch_id is not None
    report = reproduce(workspace, old.id)
    assert report.reproduced, report.summary()
    new = workspace.tracker.get_experiment(report.reproduction_id or "")
    assert new.params["fast"] == 12
    assert new.metrics == old.metrics
    other = next(e for e in items if e.params["fast"] == 5)
    assert new.metrics["final_value"] != other.metrics["final_value"]


def test_fingerprinted_inputs_fail_with_how_to_store_them(
    workspace: Workspace, project: Project
) -> None:
    """A run whose data was only fingerprinted says which input is missing and what to do."""
    old = _record_backtrader(workspace, project, store_inputs=False)
    with pytest.raises(InputNotStored, match=r"'AAA'.*store_inputs=True") as caught:
        reproduce(workspace, old.id)
    assert caught.value.input_name == "AAA"


@pytest.mark.slow
def test_vectorbt_sweep_item_is_reproduced_exactly(workspace: Workspace, project: Project) -> None:
    """One column of a recorded vectorbt sweep reruns from its recipe with identical results."""
    from quantrack.engines.vectorbt import VectorbtAdapter

    module = project.load()
    close = load_sample_prices()[["AAA", "BBB"]]
    adapter = VectorbtAdapter(workspace, store_inputs=True)
    adapter.run(module.ma_grid, close, name="grid", fast=(5, 12), fees=0.002)
    assert adapter.last_result is not None
    ids = adapter.last_result.experiment_ids
    assert len(ids) == 4
    old = workspace.tracker.get_experiment(ids[2])
    report = reproduce(workspace, old.id)
    assert report.reproduced, report.summary()
    assert report.equity_points_compared == len(close)
    new = workspace.tracker.get_experiment(report.reproduction_id or "")
    assert new.definition.reproduces == old.id
    assert new.params == old.params
    assert new.metrics == pytest.approx(old.metrics, rel=1e-12)
    with pytest.raises(ReproductionFailed, match="reproduce one of the sweep's runs"):
        reproduce(workspace, adapter.last_result.run_id or "")


def test_vectorbt_fingerprinted_argument_fails_clearly(
    workspace: Workspace, project: Project
) -> None:
    """A vectorbt call whose frame was only fingerprinted names that argument."""
    from quantrack.engines.vectorbt import VectorbtAdapter

    module = project.load()
    close = load_sample_prices()["CCC"]
    VectorbtAdapter(workspace).run(module.ma_grid, close, name="one", fast=(7,))
    (old,) = workspace.tracker.list_experiments(ExperimentFilter(name="one"))
    with pytest.raises(InputNotStored, match=r"'close'.*store_inputs=True"):
        reproduce(workspace, old.id)


def test_portfolio_built_by_user_code_cannot_be_rebuilt(
    workspace: Workspace, project: Project
) -> None:
    """A run recorded with record(pf) says it cannot be rebuilt and how to make it so."""
    from quantrack.engines.vectorbt import VectorbtAdapter

    module = project.load()
    pf = module.ma_grid(load_sample_prices()["AAA"], fast=(5,))
    result = VectorbtAdapter(workspace, store_inputs=True).record(pf, name="recorded")
    with pytest.raises(ReproductionFailed, match=r"adapter\.run\(build_portfolio"):
        reproduce(workspace, result.experiment_id)


def test_lambda_and_in_memory_workspace_are_refused_clearly(workspace: Workspace) -> None:
    """A lambda cannot be imported again, and a workspace without a folder cannot be used."""
    from quantrack.adapters.memory import (
        InMemoryArtifactStore,
        InMemoryBatchObserver,
        InMemoryExperimentTracker,
    )
    from quantrack.engines.vectorbt import VectorbtAdapter

    close = load_sample_prices()["AAA"]
    VectorbtAdapter(workspace, store_inputs=True).run(
        lambda prices: vbt.Portfolio.from_holding(prices, freq="1D"), close, name="lam"
    )
    (old,) = workspace.tracker.list_experiments(ExperimentFilter(name="lam"))
    with pytest.raises(ReproductionFailed, match="not importable"):
        reproduce(workspace, old.id)
    memory = Workspace(
        tracker=InMemoryExperimentTracker(),
        artifacts=InMemoryArtifactStore(),
        observer=InMemoryBatchObserver(),
    )
    with memory.track("bt", engine="backtrader", code_from=None) as run:
        run.log_metrics({"x": 1.0})
    (held,) = memory.tracker.list_experiments()
    with pytest.raises(ReproductionFailed, match="workspace on disk"):
        reproduce(memory, held.id)


def test_bad_requests_are_refused(workspace: Workspace) -> None:
    """Unknown ids, runs not from an engine adapter and bad tolerances raise clear errors."""
    with workspace.track("plain", code_from=None) as run:
        run.log_metrics({"x": 1.0})
    (plain,) = workspace.tracker.list_experiments()
    with pytest.raises(ReproductionFailed, match="engine adapters"):
        reproduce(workspace, plain.id)
    with pytest.raises(KeyError):
        reproduce(workspace, "nope")
    with pytest.raises(ValueError, match="tolerance"):
        reproduce(workspace, plain.id, tolerance=-1)
