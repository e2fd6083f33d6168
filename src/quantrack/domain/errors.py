"""Every error quantrack raises, in one hierarchy.

::

    QuantrackError
    ├── ExperimentNotFound          (also KeyError)
    ├── BatchNotFound               (also KeyError)
    ├── ArtifactNotFound            (also KeyError)
    ├── DuplicateExperiment         (also ValueError)
    ├── DuplicateBatch              (also ValueError)
    ├── LifecycleError              (also ValueError)
    │   ├── InvalidTransition
    │   └── ExperimentNotRunning
    ├── InvalidParams               (also TypeError)
    ├── InvalidFilter               (also ValueError)
    ├── InvalidArtifactId           (also ValueError)
    ├── IntegrityError
    ├── EngineNotInstalled          (also ImportError)
    ├── PickleNotAllowed            (also PermissionError)
    ├── UnknownSampleSymbol         (also KeyError)
    ├── RecordingFailed
    └── StorageError
        ├── WorkspaceBusy
        ├── WorkspaceUnwritable     (also PermissionError)
        ├── NotAQuantrackDatabase
        └── SchemaVersionError

Each subclass names a condition; where a builtin describes it too, the error is also that
builtin, so ``except KeyError`` keeps working for callers who do not know quantrack.
Adapters translate driver errors (duckdb, OS) into these at their boundary, chaining the
original with ``raise ... from exc``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArtifactNotFound",
    "BatchNotFound",
    "DuplicateBatch",
    "DuplicateExperiment",
    "EngineNotInstalled",
    "ExperimentNotFound",
    "ExperimentNotRunning",
    "IntegrityError",
    "InvalidArtifactId",
    "InvalidFilter",
    "InvalidParams",
    "InvalidTransition",
    "LifecycleError",
    "NotAQuantrackDatabase",
    "PickleNotAllowed",
    "QuantrackError",
    "RecordingFailed",
    "SchemaVersionError",
    "StorageError",
    "UnknownSampleSymbol",
    "WorkspaceBusy",
    "WorkspaceUnwritable",
]


def _rebuild(cls: type[QuantrackError], args: tuple[object, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class QuantrackError(Exception):
    """Root of every error quantrack raises on purpose."""

    # KeyError.__str__ quotes its message; we want the sentence as written.
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__

    # Errors cross process boundaries (process pools, dask workers). The default pickling
    # calls __init__(*args) with the formatted message, which breaks every subclass whose
    # __init__ takes other arguments; rebuild from the message and attributes instead.
    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class ExperimentNotFound(QuantrackError, KeyError):
    """No experiment has the given id."""

    def __init__(self, experiment_id: str) -> None:
        super().__init__(
            f"no experiment with id {experiment_id!r}; "
            "list the recorded ones with `quantrack runs list`"
        )
        self.experiment_id = experiment_id


class BatchNotFound(QuantrackError, KeyError):
    """No batch has the given id."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(
            f"no batch with id {batch_id!r}; list the recorded ones with `quantrack batches list`"
        )
        self.batch_id = batch_id


class ArtifactNotFound(QuantrackError, KeyError):
    """No artifact with the given content id is in the store."""

    def __init__(self, artifact_id: str) -> None:
        super().__init__(f"no artifact with id {artifact_id!r} in the artifact store")
        self.artifact_id = artifact_id


class DuplicateExperiment(QuantrackError, ValueError):
    """An experiment with this id already exists; ids are never reused."""

    def __init__(self, experiment_id: str) -> None:
        super().__init__(
            f"an experiment with id {experiment_id!r} already exists; "
            "leave the id out to get a fresh one"
        )
        self.experiment_id = experiment_id


class DuplicateBatch(QuantrackError, ValueError):
    """A batch with this id already exists."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"a batch with id {batch_id!r} already exists")
        self.batch_id = batch_id


class LifecycleError(QuantrackError, ValueError):
    """An operation the lifecycle rules in :mod:`quantrack.domain.lifecycle` forbid."""


class InvalidTransition(LifecycleError):
    """A status change the lifecycle does not allow (for example out of a terminal state)."""

    def __init__(self, subject: str, current: str, requested: str, reason: str = "") -> None:
        why = f": {reason}" if reason else ""
        super().__init__(
            f"{subject} cannot move from {current!r} to {requested!r}{why}; "
            "terminal states are final (a retry is a new experiment)"
        )
        self.subject = subject
        self.current = current
        self.requested = requested


class ExperimentNotRunning(LifecycleError):
    """Results were offered to an experiment that is not running."""

    def __init__(self, experiment_id: str, status: str) -> None:
        super().__init__(
            f"experiment {experiment_id!r} is {status!r}; results can only be stored while "
            "it is 'running' (move it to running first)"
        )
        self.experiment_id = experiment_id
        self.status = status


class InvalidParams(QuantrackError, TypeError):
    """A parameter value cannot be represented canonically (and so cannot be hashed)."""


class InvalidFilter(QuantrackError, ValueError):
    """A filter or query expression is malformed or names something unknown."""

    def __init__(self, message: str, *, column: int | None = None) -> None:
        super().__init__(message)
        self.column = column


class InvalidArtifactId(QuantrackError, ValueError):
    """An artifact id is not 64 lowercase hexadecimal characters."""


class IntegrityError(QuantrackError):
    """Stored content no longer matches its hash: the artifact is damaged."""


class EngineNotInstalled(QuantrackError, ImportError):
    """An optional engine (backtrader, vectorbt, dask) is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with `pip install 'quantrack[{extra}]'`"
        )
        self.package = package
        self.extra = extra


class PickleNotAllowed(QuantrackError, PermissionError):
    """A pickled object was to be saved or loaded without ``allow_pickle=True``.

    Loading a pickle runs code, so quantrack never does it unless asked explicitly.
    """


class UnknownSampleSymbol(QuantrackError, KeyError):
    """The bundled sample data has no symbol of that name."""

    def __init__(self, symbol: object, available: tuple[str, ...] = ()) -> None:
        listed = (
            f"; the bundled (synthetic) symbols are {', '.join(available)}" if available else ""
        )
        super().__init__(f"no sample data for symbol {symbol!r}{listed}")
        self.symbol = symbol
        self.available = available


class RecordingFailed(QuantrackError):
    """quantrack could not record a run; the run's own result was still returned."""


class StorageError(QuantrackError):
    """The workspace's storage cannot be used as asked."""


class WorkspaceBusy(StorageError):
    """Another process held the database file for longer than the timeout."""

    def __init__(self, path: str, timeout: float, holder: str | None = None) -> None:
        who = f" (held by {holder})" if holder else ""
        super().__init__(
            f"workspace database {path} stayed busy for {timeout:g} s{who}; "
            "wait for that process to finish or raise the timeout (open_workspace(timeout=...))"
        )
        self.path = path
        self.timeout = timeout
        self.holder = holder


class WorkspaceUnwritable(StorageError, PermissionError):
    """The workspace folder cannot be created or written."""


class NotAQuantrackDatabase(StorageError):
    """The file is not a quantrack database, or it is damaged; it was left untouched."""


class SchemaVersionError(StorageError):
    """The database was written by a newer quantrack than this one."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(
            f"{path} has schema version {found}, but this quantrack supports up to "
            f"{supported}; upgrade quantrack (pip install -U quantrack) to open it"
        )
        self.path = path
        self.found = found
        self.supported = supported
