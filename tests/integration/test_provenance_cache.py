"""The cached git state is dropped as soon as the repository or the watched code changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.test_provenance import git

from quantrack.adapters.memory import InMemoryArtifactStore
from quantrack.services.provenance import capture_origin, clear_provenance_cache, git_state


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Each test starts with no cached git state and no warnings given."""
    clear_provenance_cache()
    yield
    clear_provenance_cache()


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


def test_a_commit_is_noticed_within_the_cache_age(repo: Path) -> None:
    """A new commit changes the branch ref, so the cached commit is not reused."""
    first = git_state(repo, max_age=600)
    (repo / "strategy.py").write_text("FAST = 11\n")
    git(repo, "commit", "-q", "-am", "second")
    second = git_state(repo, max_age=600)
    assert second.commit == git(repo, "rev-parse", "HEAD")
    assert second.commit != first.commit
    assert second.dirty is False


def test_staging_and_checkout_are_noticed_within_the_cache_age(repo: Path) -> None:
    """Staging (the index) and a branch switch (HEAD) each invalidate the cached state."""
    assert git_state(repo, max_age=600).dirty is False
    (repo / "strategy.py").write_text("FAST = 12\n")
    git(repo, "add", "strategy.py")
    assert git_state(repo, max_age=600).dirty is True
    git(repo, "stash", "-q")
    git(repo, "checkout", "-q", "-b", "other")
    found = git_state(repo, max_age=600)
    assert (found.branch, found.dirty) == ("other", False)


def test_a_new_top_level_file_is_noticed(repo: Path) -> None:
    """An untracked file created in the top folder makes the tree dirty at once."""
    assert git_state(repo, max_age=600).dirty is False
    (repo / "notes.txt").write_text("try slower SMAs\n")
    assert git_state(repo, max_age=600).dirty is True


def test_a_changed_watch_value_reads_again(repo: Path) -> None:
    """An unstaged edit shows once the watched value (the code hash) differs."""
    assert git_state(repo, max_age=600, watch="hash-1").dirty is False
    (repo / "strategy.py").write_text("FAST = 13\n")
    assert git_state(repo, max_age=600, watch="hash-1").dirty is False
    assert git_state(repo, max_age=600, watch="hash-2").dirty is True


def test_capture_origin_notices_an_edit_to_the_captured_code(repo: Path) -> None:
    """Editing the captured strategy file gives the next run a fresh git state."""
    store = InMemoryArtifactStore()
    strategy = repo / "strategy.py"
    first, _ = capture_origin(store, strategy)
    assert first.git_dirty is False
    strategy.write_text("FAST = 14\n")
    second, _ = capture_origin(store, strategy)
    assert second.git_dirty is True
    assert second.code_hash != first.code_hash
    assert second.git_diff_hash is not None
