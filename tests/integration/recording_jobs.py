"""Jobs for the recording process in tests: module-level, so the recording process (a
separate ``python -m`` process started in the tests' working folder) can import them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from quantrack import Workspace


def note(_workspace: Workspace, path: str, text: str) -> None:
    """Append ``<pid> <text>`` to the file at ``path``: which process ran the job, with what."""
    with Path(path).open("a", encoding="utf-8") as file:
        file.write(f"{os.getpid()} {text}\n")


def note_unless_short(workspace: Workspace, path: str, text: str) -> None:
    """:func:`note`, refusing a short form (as a job whose earlier state is missing would)."""
    if text.startswith("short"):
        raise LookupError(f"nothing here to complete {text!r} from")
    note(workspace, path, text)


def note_when(workspace: Workspace, path: str, text: str, gate: str) -> None:
    """:func:`note` once a file exists at ``gate`` (a job still running when its process is
    killed), or after a minute.
    """
    deadline = time.monotonic() + 60
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    note(workspace, path, text)


def note_size(workspace: Workspace, path: str, text: str, blob: bytes) -> None:
    """:func:`note` with the size of ``blob`` (a job too big for the socket at once)."""
    note(workspace, path, f"{text} {len(blob)}")
