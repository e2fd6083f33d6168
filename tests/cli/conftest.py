"""Fixtures of the CLI tests: a populated in-memory workspace and a runner bound to it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from quantrack.adapters.memory import (
    InMemoryArtifactStore,
    InMemoryBatchObserver,
    InMemoryExperimentTracker,
)
from quantrack.cli import app
from quantrack.cli._state import CliState
from quantrack.workspace import Workspace
from tests.cli.helpers import Recorded, populate

Invoke = Callable[..., Result]


@pytest.fixture
def memory_workspace() -> Workspace:
    """An empty workspace of in-memory adapters."""
    return Workspace(
        tracker=InMemoryExperimentTracker(),
        artifacts=InMemoryArtifactStore(),
        observer=InMemoryBatchObserver(),
    )


@pytest.fixture
def recorded(memory_workspace: Workspace) -> Recorded:
    """The in-memory workspace filled by :func:`populate`."""
    return populate(memory_workspace)


@pytest.fixture
def invoke(memory_workspace: Workspace) -> Invoke:
    """Run the CLI in-process against the in-memory workspace."""
    opened: list[Path | None] = []

    def opener(path: Path | None, create: bool, timeout: float) -> Workspace:
        opened.append(path)
        return memory_workspace

    def run(args: Sequence[str], input: str | None = None) -> Result:
        runner = CliRunner()
        return runner.invoke(app, list(args), input=input, obj=CliState(opener=opener))

    return run
