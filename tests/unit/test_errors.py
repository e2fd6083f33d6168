"""The error hierarchy: one root, builtin bases where they help, and errors that pickle."""

from __future__ import annotations

import pickle

import pytest

from quantrack.domain import errors
from quantrack.domain.errors import (
    ArtifactNotFound,
    BatchNotFound,
    DuplicateBatch,
    DuplicateExperiment,
    EngineNotInstalled,
    ExperimentNotFound,
    ExperimentNotRunning,
    IntegrityError,
    InvalidArtifactId,
    InvalidFilter,
    InvalidParams,
    InvalidTransition,
    LifecycleError,
    NotAQuantrackDatabase,
    PickleNotAllowed,
    QuantrackError,
    RecordingFailed,
    SchemaVersionError,
    StorageError,
    UnknownSampleSymbol,
    WorkspaceBusy,
    WorkspaceUnwritable,
)

EXAMPLES: list[QuantrackError] = [
    QuantrackError("root"),
    ExperimentNotFound("run-1"),
    BatchNotFound("batch-1"),
    ArtifactNotFound("a" * 64),
    DuplicateExperiment("run-1"),
    DuplicateBatch("batch-1"),
    LifecycleError("not now"),
    InvalidTransition("experiment run-1", "completed", "running", "terminal"),
    ExperimentNotRunning("run-1", "pending"),
    InvalidParams("params.x is nan"),
    InvalidFilter("bad where", column=4),
    InvalidArtifactId("bad id"),
    IntegrityError("damaged"),
    EngineNotInstalled("backtrader", "backtrader"),
    RecordingFailed("could not record"),
    StorageError("storage"),
    WorkspaceBusy("/ws/runs.duckdb", 2.5, holder="pid 42"),
    WorkspaceUnwritable("read-only"),
    NotAQuantrackDatabase("not ours"),
    SchemaVersionError("/ws/runs.duckdb", 9, 3),
    PickleNotAllowed("pass allow_pickle=True"),
    UnknownSampleSymbol("ZZZ", ("AAA", "BBB")),
]


def test_every_error_is_covered() -> None:
    """The examples cover every error class the module exports."""
    assert {type(e).__name__ for e in EXAMPLES} == set(errors.__all__)


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_errors_survive_pickling(error: QuantrackError) -> None:
    """An error sent to or from a worker process keeps its type, message and attributes."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (ExperimentNotFound("x"), KeyError),
        (BatchNotFound("x"), KeyError),
        (ArtifactNotFound("x"), KeyError),
        (DuplicateExperiment("x"), ValueError),
        (InvalidTransition("s", "a", "b"), ValueError),
        (ExperimentNotRunning("x", "pending"), ValueError),
        (InvalidParams("x"), TypeError),
        (InvalidFilter("x"), ValueError),
        (InvalidArtifactId("x"), ValueError),
        (EngineNotInstalled("x", "y"), ImportError),
        (WorkspaceUnwritable("x"), PermissionError),
    ],
    ids=lambda value: type(value).__name__,
)
def test_builtin_bases(error: QuantrackError, builtin: type[Exception]) -> None:
    """Errors are also the builtin that describes them, for callers who do not know quantrack."""
    assert isinstance(error, builtin)
    assert isinstance(error, QuantrackError)


def test_key_errors_read_as_sentences() -> None:
    """A KeyError subclass prints its message unquoted."""
    assert str(ExperimentNotFound("run-1")).startswith("no experiment with id 'run-1'")


def test_messages_say_what_to_do() -> None:
    """Messages name the subject and the way out."""
    transition = InvalidTransition("experiment run-1", "completed", "running")
    assert "experiment run-1 cannot move from 'completed' to 'running'" in str(transition)
    assert "pip install 'quantrack[vectorbt]'" in str(EngineNotInstalled("vectorbt", "vectorbt"))
    busy = str(WorkspaceBusy("/ws/runs.duckdb", 2.5, holder="pid 42"))
    assert "stayed busy for 2.5 s (held by pid 42)" in busy
    assert "upgrade quantrack" in str(SchemaVersionError("/ws", 9, 3))
