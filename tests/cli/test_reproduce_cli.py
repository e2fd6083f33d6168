"""``quantrack runs reproduce ID``: text and JSON reports, exit codes, clear refusals."""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from quantrack import open_workspace
from quantrack.cli import app
from quantrack.domain import ExperimentFilter
from quantrack.sample_data import load_sample
from quantrack.workspace import Workspace

bt = pytest.importorskip("backtrader")

STRATEGY = """import backtrader as bt


class Breakout(bt.Strategy):
    params = (("lookback", 20),)

    def __init__(self):
        self.high = bt.ind.Highest(self.data.high(-1), period=self.p.lookback)

    def next(self):
        if not self.position and self.data.close[0] > self.high[0]:
            self.buy(size=50)
        elif self.position and len(self) % 15 == 0:
            self.close()
"""


@pytest.fixture
def strategy_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A strategy module in a temporary project folder, importable under a unique name."""
    name = f"breakout_{uuid.uuid4().hex[:10]}"
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "demo"\n', "utf-8")
    (root / f"{name}.py").write_text(STRATEGY, "utf-8")
    monkeypatch.syspath_prepend(str(root))
    yield name
    sys.modules.pop(name, None)


def _record(ws: Workspace, module_name: str, *, store_inputs: bool) -> str:
    from quantrack.engines.backtrader import BacktraderAdapter

    module = importlib.import_module(module_name)
    cerebro = bt.Cerebro()
    cerebro.adddata(bt.feeds.PandasData(dataname=load_sample("BBB")), name="BBB")
    cerebro.addstrategy(module.Breakout, lookback=30)
    BacktraderAdapter(ws, store_inputs=store_inputs).run(cerebro, name="breakout")
    (experiment,) = ws.tracker.list_experiments(ExperimentFilter(name="breakout"))
    return experiment.id


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_reproduce_prints_reproduced_and_exits_zero(
    tmp_path: Path, strategy_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reproducible run (in a workspace given by a relative path) prints "reproduced"."""
    monkeypatch.chdir(tmp_path)
    run_id = _record(open_workspace("ws"), strategy_module, store_inputs=True)
    result = _invoke("runs", "reproduce", run_id[:12], "--workspace", "ws")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("reproduced: run ")
    assert run_id in result.output


def test_reproduce_json_reports_the_differences_and_exits_one(
    tmp_path: Path, strategy_module: str
) -> None:
    """--json gives the whole report; a run that differs exits 1 and names the metrics."""
    path = tmp_path / "ws"
    ws = open_workspace(path)
    run_id = _record(ws, strategy_module, store_inputs=True)
    old = ws.tracker.get_experiment(run_id)
    (stored,) = [ref for ref in old.definition.inputs if ref.kind == "input_data"]
    from quantrack.adapters.frames import frame_to_parquet

    bars = load_sample("BBB")
    bars.loc[bars.index[500:], "close"] *= 0.5
    target = path / "artifacts" / stored.id[:2] / stored.id[2:]
    target.chmod(0o644)
    target.write_bytes(frame_to_parquet(bars))
    result = _invoke("runs", "reproduce", run_id, "--workspace", str(path), "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["reproduced"] is False
    assert report["experiment_id"] == run_id
    assert report["data_differences"]
    assert {d["name"] for d in report["metric_differences"]} >= {"final_value"}
    new = ws.tracker.get_experiment(report["reproduction_id"])
    assert new.definition.reproduces == run_id


def test_reproduce_without_stored_inputs_is_a_clear_error(
    tmp_path: Path, strategy_module: str
) -> None:
    """A run whose inputs were only fingerprinted fails with the fix, not a traceback."""
    path = tmp_path / "ws"
    run_id = _record(open_workspace(path), strategy_module, store_inputs=False)
    result = _invoke("runs", "reproduce", run_id, "--workspace", str(path))
    assert result.exit_code == 1
    assert "store_inputs=True" in result.output
    assert "'BBB'" in result.output
    assert "Traceback" not in result.output


def test_reproduce_refuses_a_bad_tolerance(tmp_path: Path, strategy_module: str) -> None:
    """--tolerance below zero or not finite is a usage error (exit 2)."""
    path = tmp_path / "ws"
    run_id = _record(open_workspace(path), strategy_module, store_inputs=True)
    result = _invoke("runs", "reproduce", run_id, "--workspace", str(path), "--tolerance", "-1")
    assert result.exit_code == 2
    assert "tolerance" in result.output
    result = _invoke("runs", "reproduce", run_id, "--workspace", str(path), "--tolerance", "inf")
    assert result.exit_code == 2
    assert "not a finite number" in result.output
