"""Provenance from a real git repository, outside one, and without git."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from quantrack.services.provenance import (
    clear_provenance_cache,
    collect_provenance,
    git_state,
    package_versions,
)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Each test starts with no cached git state and no warnings given."""
    clear_provenance_cache()
    yield
    clear_provenance_cache()


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` and return its output."""
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit on branch 'research'."""
    folder = tmp_path / "repo"
    folder.mkdir()
    git(folder, "init", "-q", "-b", "research")
    git(folder, "config", "user.email", "q@example.com")
    git(folder, "config", "user.name", "Q")
    (folder / "strategy.py").write_text("FAST = 10\n")
    git(folder, "add", "strategy.py")
    git(folder, "commit", "-q", "-m", "first")
    return folder


def test_clean_repository(repo: Path) -> None:
    """A clean tree gives its commit and branch, not dirty, and no diff hash."""
    found = collect_provenance(cwd=repo)
    assert found.git_commit == git(repo, "rev-parse", "HEAD")
    assert found.git_branch == "research"
    assert found.git_dirty is False
    assert found.git_diff_hash is None


def test_a_subfolder_reports_its_repository(repo: Path) -> None:
    """Provenance collected from a subfolder names the enclosing repository's commit."""
    sub = repo / "notebooks"
    sub.mkdir()
    assert collect_provenance(cwd=sub).git_commit == git(repo, "rev-parse", "HEAD")


def test_uncommitted_changes_are_dirty_and_hashed(repo: Path) -> None:
    """A modified file makes the tree dirty; different changes hash differently."""
    (repo / "strategy.py").write_text("FAST = 20\n")
    first = git_state(repo, max_age=0)
    assert first.dirty is True
    assert first.diff_hash is not None
    assert len(first.diff_hash) == 64
    (repo / "strategy.py").write_text("FAST = 30\n")
    second = git_state(repo, max_age=0)
    assert second.diff_hash != first.diff_hash
    (repo / "strategy.py").write_text("FAST = 20\n")
    assert git_state(repo, max_age=0).diff_hash == first.diff_hash


def test_untracked_files_count_by_name_and_content(repo: Path) -> None:
    """A new untracked file dirties the tree, and its content changes the diff hash."""
    (repo / "helper.py").write_text("A = 1\n")
    first = git_state(repo, max_age=0)
    assert first.dirty is True
    (repo / "helper.py").write_text("A = 2\n")
    assert git_state(repo, max_age=0).diff_hash != first.diff_hash


def test_detached_head_has_no_branch(repo: Path) -> None:
    """Checking out a commit directly records the commit and no branch."""
    git(repo, "checkout", "-q", "--detach")
    found = git_state(repo, max_age=0)
    assert found.branch is None
    assert found.commit == git(repo, "rev-parse", "HEAD")


def test_repository_without_commits(tmp_path: Path) -> None:
    """A fresh repository has a branch but no commit; its files make it dirty."""
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "a.py").write_text("x = 1\n")
    found = git_state(tmp_path, max_age=0)
    assert found.commit is None
    assert found.branch == "main"
    assert found.dirty is True
    assert found.diff_hash is not None


def test_git_state_is_reused_within_its_age(repo: Path) -> None:
    """Within max_age the cached state is returned; after clearing, the change shows."""
    assert git_state(repo, max_age=60).dirty is False
    (repo / "strategy.py").write_text("FAST = 99\n")
    assert git_state(repo, max_age=60).dirty is False
    assert git_state(repo, max_age=0).dirty is True


def test_outside_a_repository_fields_are_empty_and_one_warning(tmp_path: Path) -> None:
    """Outside git the git fields are None and a single warning is logged across runs."""
    with capture_logs() as logs:
        first = collect_provenance(cwd=tmp_path, git_cache_seconds=0)
        collect_provenance(cwd=tmp_path, git_cache_seconds=0)
    assert (first.git_commit, first.git_branch, first.git_dirty, first.git_diff_hash) == (
        None,
        None,
        None,
        None,
    )
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "not in a usable git repository" in warnings[0]["event"]
    assert first.python_version is not None


def test_without_git_installed_nothing_fails(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no git on PATH the git fields are None and a warning says git is missing."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with capture_logs() as logs:
        found = collect_provenance(cwd=repo)
    assert found.git_commit is None
    assert any("git is not installed" in entry["event"] for entry in logs)


def test_interpreter_platform_and_entry_point() -> None:
    """Python version, platform and host are filled; entry point defaults to __main__."""
    found = collect_provenance()
    assert found.python_version == f"{platform.python_implementation()} {platform.python_version()}"
    assert found.platform == platform.platform()
    assert found.hostname
    main_file = getattr(sys.modules["__main__"], "__file__", None)
    assert found.entry_point is not None
    if main_file:
        assert Path(found.entry_point).name == Path(main_file).name
    assert collect_provenance(entry_point="job.py").entry_point == "job.py"


def test_package_versions_of_imported_modules() -> None:
    """Installed distributions are resolved by module name; stdlib and unknown are skipped."""
    import pandas

    versions = package_versions(["pandas.core.frame", "json", "os", "not_a_module_xyz", pandas])
    assert versions == {"pandas": pandas.__version__}


def test_engine_version_defaults_to_the_installed_distribution() -> None:
    """engine='pandas' records pandas' installed version unless one is given."""
    import pandas

    assert collect_provenance(engine="pandas").engine_version == pandas.__version__
    assert collect_provenance(engine="pandas", engine_version="9.9").engine_version == "9.9"
    assert collect_provenance(engine="no-such-engine-xyz").engine_version is None


def test_code_hash_is_carried(repo: Path) -> None:
    """A code hash given to collect_provenance is recorded on the provenance."""
    assert collect_provenance(cwd=repo, code_hash="ab" * 32).code_hash == "ab" * 32


def test_origin_uses_the_git_state_of_the_captured_code(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """capture_origin reports the repository holding the code, not the current folder."""
    from quantrack.adapters.memory import InMemoryArtifactStore
    from quantrack.services.provenance import capture_origin

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    provenance, captured = capture_origin(
        InMemoryArtifactStore(), repo / "strategy.py", engine="pandas"
    )
    assert captured is not None
    assert provenance.git_commit == git(repo, "rev-parse", "HEAD")
    assert provenance.code_hash == captured.code_hash
    assert collect_provenance(git_cache_seconds=0).git_commit is None
