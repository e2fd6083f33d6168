"""A process waiting for a busy DuckDB file: its note to the holder, on a real folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from quantrack.adapters.duckdb.connection import Database


def _note(tmp_path: Path) -> Path:
    return tmp_path / "runs.duckdb.waiting"


def test_each_retry_keeps_the_note_fresh_in_place(tmp_path: Path) -> None:
    """A retry rewrites the note where it is: same file, same content, a new time."""
    db = Database(tmp_path / "runs.duckdb")
    db._announce_waiter(123.0)
    first = _note(tmp_path).stat()
    stale = time.time() - 10
    os.utime(_note(tmp_path), (stale, stale))
    db._announce_waiter(123.0)
    again = _note(tmp_path).stat()
    assert again.st_ino == first.st_ino
    assert time.time() - again.st_mtime < 5
    assert _note(tmp_path).read_text() == f"{os.getpid()} 123.0"


def test_a_longer_note_left_by_another_waiter_is_replaced_exactly(tmp_path: Path) -> None:
    """Writing over a longer note leaves none of its tail behind."""
    db = Database(tmp_path / "runs.duckdb")
    _note(tmp_path).write_text("99999999 1763912345.123456789 and more")
    db._announce_waiter(123.0)
    assert _note(tmp_path).read_text() == f"{os.getpid()} 123.0"


def test_the_note_is_written_again_after_it_was_removed(tmp_path: Path) -> None:
    """A note removed meanwhile (its holder left) is recreated; forgetting removes ours."""
    db = Database(tmp_path / "runs.duckdb")
    db._announce_waiter(123.0)
    _note(tmp_path).unlink()
    db._announce_waiter(123.0)
    assert _note(tmp_path).read_text() == f"{os.getpid()} 123.0"
    db._forget_waiter()
    assert not _note(tmp_path).exists()


@pytest.mark.parametrize("seconds", [0, -1.0])
def test_holding_files_while_idle_needs_a_positive_time(seconds: float) -> None:
    from quantrack.adapters.duckdb.connection import hold_files_while_idle

    with pytest.raises(ValueError, match="seconds must be positive"):
        hold_files_while_idle(seconds)
