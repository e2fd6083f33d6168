"""Exporting one experiment as a browsable folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quantrack.adapters.filesystem import FilesystemArtifactStore
from quantrack.adapters.frames import put_frame, put_json
from quantrack.adapters.memory import InMemoryBatchObserver, InMemoryExperimentTracker
from quantrack.domain import ArtifactRef, ExperimentNotFound, IntegrityError
from quantrack.export import export_experiment
from quantrack.workspace import Workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A workspace with a real filesystem store and an in-memory tracker."""
    return Workspace(
        tracker=InMemoryExperimentTracker(),
        artifacts=FilesystemArtifactStore(tmp_path / "artifacts"),
        observer=InMemoryBatchObserver(),
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A two-file strategy project with a nested helper."""
    root = tmp_path / "proj"
    (root / "lib").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname='p'\n")
    (root / "lib" / "__init__.py").write_text("")
    (root / "lib" / "signals.py").write_text("def cross():\n    return 1\n")
    (root / "strategy.py").write_text("from lib.signals import cross\n")
    return root


def equity() -> pd.DataFrame:
    """A five-day equity curve."""
    index = pd.date_range("2022-01-03", periods=5, name="date")
    return pd.DataFrame({"equity": np.linspace(100.0, 104.0, 5)}, index=index)


def record(workspace: Workspace, project: Path) -> str:
    """Track one run with an equity curve, trades, an input and a diagnostic; return its id."""
    data = workspace.artifacts.put(b"date,close\n2022-01-03,1\n", kind="input", name="p.csv")
    with workspace.track(
        "exported", params={"fast": 5}, inputs=[data], code_from=project / "strategy.py"
    ) as run:
        run.log_metrics({"sharpe": 1.25, "max_drawdown": -0.1})
        run.add_artifact(put_frame(workspace.artifacts, equity(), kind="equity_curve"))
        trades = [{"size": 1, "pnl": 2.5}, {"size": -1, "pnl": -1.0}]
        run.add_artifact(put_json(workspace.artifacts, trades, kind="trades"))
        run.log_artifact(b"analyzer output", kind="analyzers", name="analyzers.txt")
    return run.id


def test_export_writes_results_code_and_metadata(
    tmp_path: Path, workspace: Workspace, project: Path
) -> None:
    """The folder holds CSV+Parquet results, the code in its layout, and pretty metadata."""
    experiment_id = record(workspace, project)
    dest = export_experiment(workspace, experiment_id, tmp_path / "out")
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == [
        "artifacts/analyzers/analyzers.txt",
        "code/lib/__init__.py",
        "code/lib/signals.py",
        "code/strategy.py",
        "metadata/experiment.json",
        "results/equity_curve.csv",
        "results/equity_curve.parquet",
        "results/metrics.csv",
        "results/metrics.json",
        "results/metrics.parquet",
        "results/trades.csv",
        "results/trades.parquet",
    ]
    back = pd.read_parquet(dest / "results" / "equity_curve.parquet")
    pd.testing.assert_frame_equal(back, equity(), check_freq=False)
    assert pd.read_csv(dest / "results" / "trades.csv", index_col=0)["pnl"].tolist() == [2.5, -1.0]
    metrics = pd.read_csv(dest / "results" / "metrics.csv")
    assert dict(zip(metrics["metric"], metrics["value"], strict=True)) == {
        "max_drawdown": -0.1,
        "sharpe": 1.25,
    }
    assert (dest / "code" / "lib" / "signals.py").read_text() == "def cross():\n    return 1\n"


def test_metadata_describes_the_run(tmp_path: Path, workspace: Workspace, project: Path) -> None:
    """experiment.json is indented and carries ids, times, versions, files, inputs, params."""
    experiment_id = record(workspace, project)
    dest = export_experiment(workspace, experiment_id, tmp_path / "out")
    text = (dest / "metadata" / "experiment.json").read_text()
    assert text.startswith("{\n  ")
    meta = json.loads(text)
    stored = workspace.tracker.get_experiment(experiment_id)
    assert meta["id"] == experiment_id
    assert meta["created_at"] == stored.created_at.isoformat()
    assert meta["completed_at"] == stored.completed_at.isoformat()  # type: ignore[union-attr]
    assert meta["python_version"] == stored.definition.provenance.python_version
    assert meta["framework"]["engine"] == "python"
    assert meta["entry_point"] == stored.definition.provenance.entry_point
    assert [f["path"] for f in meta["captured_files"]] == [
        "lib/__init__.py",
        "lib/signals.py",
        "strategy.py",
    ]
    assert [i["name"] for i in meta["input_artifacts"]] == ["p.csv"]
    assert meta["params"] == {"fast": 5}
    assert meta["metrics"] == {"max_drawdown": -0.1, "sharpe": 1.25}
    assert meta["code_hash"] == stored.definition.provenance.code_hash


def test_one_column_of_a_shared_sweep_file(tmp_path: Path, workspace: Workspace) -> None:
    """An equity-curve reference with a part exports only that run's column."""
    sweep = pd.DataFrame({"0": [1.0, 2.0], "1": [3.0, 4.0]})
    shared = put_frame(workspace.artifacts, sweep, kind="equity_curve")
    with workspace.track("column", code_from=None) as run:
        run.add_artifact(ArtifactRef(**{**shared.model_dump(), "part": "1"}))
    dest = export_experiment(workspace, run.id, tmp_path / "out")
    assert pd.read_parquet(dest / "results" / "equity_curve.parquet").columns.tolist() == ["1"]


def test_a_non_empty_destination_is_refused(
    tmp_path: Path, workspace: Workspace, project: Path
) -> None:
    """A folder with files in it is left alone unless overwrite=True."""
    experiment_id = record(workspace, project)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "mine.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not empty"):
        export_experiment(workspace, experiment_id, dest)
    with pytest.raises(FileExistsError, match="holds no quantrack export"):
        export_experiment(workspace, experiment_id, dest, overwrite=True)
    assert (dest / "mine.txt").read_text() == "precious"


def test_overwrite_replaces_an_earlier_export(
    tmp_path: Path, workspace: Workspace, project: Path
) -> None:
    """overwrite=True replaces a previous export folder entirely."""
    first = record(workspace, project)
    second = record(workspace, project)
    dest = export_experiment(workspace, first, tmp_path / "out")
    (dest / "stale.txt").write_text("from before")
    export_experiment(workspace, second, dest, overwrite=True)
    assert json.loads((dest / "metadata" / "experiment.json").read_text())["id"] == second
    assert not (dest / "stale.txt").exists()


def test_an_empty_existing_folder_is_fine(
    tmp_path: Path, workspace: Workspace, project: Path
) -> None:
    """An existing empty folder is exported into."""
    (tmp_path / "out").mkdir()
    export_experiment(workspace, record(workspace, project), tmp_path / "out")
    assert (tmp_path / "out" / "metadata" / "experiment.json").is_file()


def test_an_unknown_experiment_is_not_found(tmp_path: Path, workspace: Workspace) -> None:
    """An id that is not recorded raises ExperimentNotFound and writes nothing."""
    with pytest.raises(ExperimentNotFound):
        export_experiment(workspace, "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_damage_aborts_the_export_and_leaves_nothing(
    tmp_path: Path, workspace: Workspace, project: Path
) -> None:
    """A damaged artifact raises IntegrityError and no partial folder is left behind."""
    experiment_id = record(workspace, project)
    stored = workspace.tracker.get_experiment(experiment_id)
    victim = next(ref for ref in stored.artifacts if ref.kind == "code")
    store = workspace.artifacts
    assert isinstance(store, FilesystemArtifactStore)
    (store.root / victim.id[:2] / victim.id[2:]).write_bytes(b"tampered")
    with pytest.raises(IntegrityError):
        export_experiment(workspace, experiment_id, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts", "proj"]


def test_workspace_export_shortcut(tmp_path: Path, workspace: Workspace, project: Path) -> None:
    """Workspace.export writes the same folder as export_experiment."""
    dest = workspace.export(record(workspace, project), tmp_path / "out")
    assert (dest / "code" / "strategy.py").is_file()


def test_rows_of_a_shared_long_trades_file(tmp_path: Path, workspace: Workspace) -> None:
    """A trades reference with a part exports only the rows of that run."""
    trades = pd.DataFrame({"part": ["a", "b", "a"], "pnl": [1.0, 2.0, 3.0]})
    shared = put_frame(workspace.artifacts, trades, kind="trades")
    with workspace.track("rows", code_from=None) as run:
        run.add_artifact(ArtifactRef(**{**shared.model_dump(), "part": "a"}))
    dest = export_experiment(workspace, run.id, tmp_path / "out")
    assert pd.read_csv(dest / "results" / "trades.csv")["pnl"].tolist() == [1.0, 3.0]


def test_a_non_tabular_json_result_is_kept_as_a_file(tmp_path: Path, workspace: Workspace) -> None:
    """A trades document that is not a table is exported as-is under artifacts/."""
    with workspace.track("odd", code_from=None) as run:
        run.add_artifact(
            put_json(workspace.artifacts, {"note": "none"}, kind="trades", name="t.json")
        )
    dest = export_experiment(workspace, run.id, tmp_path / "out")
    assert json.loads((dest / "artifacts" / "trades" / "t.json").read_text()) == {"note": "none"}
