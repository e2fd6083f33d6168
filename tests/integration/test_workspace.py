"""The workspace: where it lives, what it refuses, and what ``track`` records."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from quantrack.adapters.memory import (
    InMemoryArtifactStore,
    InMemoryBatchObserver,
    InMemoryExperimentTracker,
)
from quantrack.domain import ExperimentStatus, Provenance, WorkspaceUnwritable
from quantrack.services.code_capture import read_manifest
from quantrack.workspace import Workspace, open_workspace, resolve_workspace_path


@pytest.fixture
def workspace() -> Workspace:
    """A workspace of in-memory adapters."""
    return Workspace(
        tracker=InMemoryExperimentTracker(),
        artifacts=InMemoryArtifactStore(),
        observer=InMemoryBatchObserver(),
    )


class LocalStrategy:
    """A strategy class defined in this test file."""


# -- where a workspace lives -------------------------------------------------------------


def test_an_explicit_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path given to resolve_workspace_path is used even when QUANTRACK_HOME is set."""
    monkeypatch.setenv("QUANTRACK_HOME", str(tmp_path / "env"))
    assert resolve_workspace_path(tmp_path / "mine") == tmp_path / "mine"


def test_quantrack_home_comes_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a path, $QUANTRACK_HOME names the workspace."""
    monkeypatch.setenv("QUANTRACK_HOME", str(tmp_path / "env"))
    monkeypatch.chdir(tmp_path)
    assert resolve_workspace_path() == tmp_path / "env"


@pytest.mark.parametrize("marker", [".git", "pyproject.toml"])
def test_a_subfolder_and_the_root_share_the_project_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, marker: str
) -> None:
    """From a notebook folder deep in a project, the workspace is .quantrack at its root."""
    monkeypatch.delenv("QUANTRACK_HOME", raising=False)
    root = tmp_path / "project"
    deep = root / "notebooks" / "2024"
    deep.mkdir(parents=True)
    if marker == ".git":
        (root / ".git").mkdir()
    else:
        (root / "pyproject.toml").write_text("[project]\nname='x'\n")
    monkeypatch.chdir(deep)
    from_subfolder = resolve_workspace_path()
    monkeypatch.chdir(root)
    assert from_subfolder == resolve_workspace_path() == root.resolve() / ".quantrack"


def test_outside_any_project_the_home_folder_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no marker upward and no QUANTRACK_HOME, the workspace is ~/.quantrack."""
    monkeypatch.delenv("QUANTRACK_HOME", raising=False)
    if any(
        (parent / m).exists() for parent in tmp_path.parents for m in (".git", "pyproject.toml")
    ):
        pytest.skip("the temporary folder sits inside a project")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert resolve_workspace_path() == tmp_path / "home" / ".quantrack"


def test_an_unwritable_folder_fails_at_open(tmp_path: Path) -> None:
    """A workspace path under a regular file cannot be created: WorkspaceUnwritable says so.

    Tests run as root, where chmod cannot make a folder unwritable, so a path whose parent
    is a regular file stands in for an unwritable location.
    """
    pytest.importorskip("quantrack.adapters.duckdb")
    blocker = tmp_path / "some_file"
    blocker.write_text("I am a file")
    with pytest.raises(WorkspaceUnwritable, match="cannot write to workspace folder") as raised:
        open_workspace(blocker / "ws")
    assert str(blocker / "ws") in str(raised.value)
    assert isinstance(raised.value, PermissionError)


# -- what track records -------------------------------------------------------------------


def test_track_captures_the_calling_file_and_provenance(workspace: Workspace) -> None:
    """By default the file calling track is captured and the provenance carries its hash."""
    with workspace.track("default capture", params={"fast": 10}) as run:
        run.log_metric("sharpe", 1.5)
    stored = workspace.tracker.get_experiment(run.id)
    assert stored.status is ExperimentStatus.COMPLETED
    manifest = next(ref for ref in stored.artifacts if ref.kind == "code_manifest")
    files = read_manifest(workspace.artifacts, manifest)
    mine = next(name for name in files if name.endswith("test_workspace.py"))
    assert workspace.artifacts.get(files[mine]) == Path(__file__).read_bytes()
    provenance = stored.definition.provenance
    assert provenance.code_hash is not None
    assert provenance.python_version is not None
    assert "pytest" in provenance.packages
    assert {ref.id for ref in stored.artifacts} >= set(files.values())


def test_a_strategy_class_names_the_strategy(workspace: Workspace) -> None:
    """code_from=<class> captures its file and records its qualified name as strategy."""
    with workspace.track("by class", code_from=LocalStrategy) as run:
        pass
    stored = workspace.tracker.get_experiment(run.id)
    assert stored.definition.strategy == f"{__name__}.LocalStrategy"
    assert any(ref.name == "test_workspace.py" for ref in stored.artifacts)


def test_an_explicit_strategy_name_is_kept(workspace: Workspace) -> None:
    """A strategy name given alongside code_from is not replaced."""
    with workspace.track("named", strategy="my.Strategy", code_from=LocalStrategy) as run:
        pass
    assert workspace.tracker.get_experiment(run.id).definition.strategy == "my.Strategy"


def test_code_from_none_captures_nothing(workspace: Workspace) -> None:
    """code_from=None records the run without code and without a code hash."""
    with workspace.track("no code", code_from=None) as run:
        pass
    stored = workspace.tracker.get_experiment(run.id)
    assert stored.artifacts == ()
    assert stored.definition.provenance.code_hash is None
    assert stored.definition.provenance.python_version is not None


def test_given_provenance_is_recorded_with_the_code_hash(workspace: Workspace) -> None:
    """A provenance passed in is kept as is, plus the hash of the captured code."""
    given = Provenance(git_commit="a" * 40, engine="custom")
    with workspace.track("given", provenance=given, code_from=Path(__file__)) as run:
        pass
    recorded = workspace.tracker.get_experiment(run.id).definition.provenance
    assert recorded.git_commit == "a" * 40
    assert recorded.engine == "custom"
    assert recorded.python_version is None
    assert recorded.code_hash is not None


def test_a_failing_body_still_lists_its_code(workspace: Workspace) -> None:
    """When the body raises, the failed experiment keeps the captured code artifacts."""
    with pytest.raises(ZeroDivisionError), workspace.track("fails") as run:
        _ = 1 / 0
    stored = workspace.tracker.get_experiment(run.id)
    assert stored.status is ExperimentStatus.FAILED
    kinds = {ref.kind for ref in stored.artifacts}
    assert {"code", "code_manifest", "diagnostics"} <= kinds


def test_code_without_a_file_is_recorded_with_a_warning(workspace: Workspace) -> None:
    """Calling track from a bare exec'd namespace records the run and warns about the code."""
    namespace: dict[str, object] = {"__name__": "bare_namespace", "ws": workspace}
    with capture_logs() as logs:
        exec("with ws.track('bare') as run:\n    run.log_metric('x', 1.0)\n", namespace)
    run = namespace["run"]
    stored = workspace.tracker.get_experiment(run.id)  # type: ignore[attr-defined]
    assert stored.status is ExperimentStatus.COMPLETED
    assert stored.artifacts == ()
    assert any("could not be found" in entry["event"] for entry in logs)


def test_a_bad_code_from_fails_before_the_run_starts(workspace: Workspace, tmp_path: Path) -> None:
    """A code_from path that does not exist raises before any experiment is created."""
    with pytest.raises(FileNotFoundError), workspace.track("x", code_from=tmp_path / "nope.py"):
        pass
    assert workspace.tracker.list_experiments() == []


def test_collect_garbage_with_an_in_memory_store(workspace: Workspace) -> None:
    """Unreferenced artifacts are reported by default and removed when asked."""
    with workspace.track("keeps", code_from=None) as run:
        kept = run.log_artifact(b"kept", kind="trades")
    orphan = workspace.artifacts.put(b"orphan")
    report = workspace.collect_garbage()
    assert report.dry_run
    assert report.removed == (orphan.id,)
    assert workspace.artifacts.exists(orphan.id)
    workspace.collect_garbage(dry_run=False)
    assert not workspace.artifacts.exists(orphan.id)
    assert workspace.artifacts.exists(kept.id)


# -- the real workspace --------------------------------------------------------------------


def test_open_workspace_records_and_reopens(tmp_path: Path) -> None:
    """A run tracked in a real workspace is found, with its code, after reopening it."""
    pytest.importorskip("quantrack.adapters.duckdb")
    workspace = open_workspace(tmp_path / "ws", timeout=10)
    with workspace.track("real", params={"slow": 30}, code_from=LocalStrategy) as run:
        run.log_metric("sharpe", 0.7)
    assert (tmp_path / "ws" / "runs.duckdb").is_file()
    assert (tmp_path / "ws" / "artifacts").is_dir()
    again = open_workspace(tmp_path / "ws")
    stored = again.tracker.get_experiment(run.id)
    assert stored.metrics == {"sharpe": 0.7}
    manifest = next(ref for ref in stored.artifacts if ref.kind == "code_manifest")
    assert read_manifest(again.artifacts, manifest)
    again.artifacts.verify(manifest.id)


def test_open_workspace_garbage_collection_keeps_referenced_artifacts(tmp_path: Path) -> None:
    """Garbage collection on a real workspace removes only what no experiment lists."""
    pytest.importorskip("quantrack.adapters.duckdb")
    workspace = open_workspace(tmp_path / "ws")
    with workspace.track("gc", code_from=None) as run:
        kept = run.log_artifact(b"equity", kind="equity_curve")
    orphan = workspace.artifacts.put(b"nobody lists me")
    report = workspace.collect_garbage(dry_run=False, grace_seconds=0)
    assert report.removed == (orphan.id,)
    assert workspace.artifacts.exists(kept.id)


def test_import_quantrack_workspace_stays_light() -> None:
    """Importing the workspace module pulls in neither duckdb nor pandas."""
    import subprocess

    code = (
        "import sys, quantrack.workspace; "
        "print(sorted(m for m in ('duckdb', 'pandas', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_inputs_and_outputs_of_every_experiment_are_referenced(workspace: Workspace) -> None:
    """The keep set holds the inputs and outputs of runs of every status."""
    from quantrack.services.retention import referenced_artifact_ids

    data = workspace.artifacts.put(b"prices", kind="input")
    with workspace.track("ok", inputs=[data], code_from=None) as run:
        output = run.log_artifact(b"trades", kind="trades")

    def fail_after_logging() -> str:
        with workspace.track("bad", code_from=None) as failed:
            failed.log_artifact(b"partial", kind="equity_curve")
            raise RuntimeError(failed.id)

    with pytest.raises(RuntimeError) as raised:
        fail_after_logging()
    keep = referenced_artifact_ids(workspace.tracker)
    stored = workspace.tracker.get_experiment(str(raised.value))
    assert {data.id, output.id} | {ref.id for ref in stored.artifacts} == keep
