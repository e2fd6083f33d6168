"""The composition root: :func:`open_workspace` builds the adapters and wires the services.

Nothing else in quantrack constructs a DuckDB or filesystem adapter. A workspace is one
folder holding ``runs.duckdb`` (experiments and batches) and ``artifacts/`` (content-
addressed files). Application code receives the workspace, or only the ports it needs
(``workspace.tracker``), and never learns which technology is behind them.
"""

from __future__ import annotations

import datetime as dt
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from quantrack.domain import (
    ArtifactRef,
    Batch,
    BatchItemResult,
    ExperimentDefinition,
    Provenance,
    WorkspaceUnwritable,
)
from quantrack.ports import ArtifactStore, BatchHistory, BatchObserver, ExperimentTracker
from quantrack.services.code_capture import CapturedCode, capture_code
from quantrack.services.provenance import capture_origin
from quantrack.services.recording import Run, track
from quantrack.services.retention import GcReport, referenced_artifact_ids

if TYPE_CHECKING:
    # The batch runner is loaded when a batch first runs, keeping `import quantrack` light.
    from quantrack import analysis as _analysis
    from quantrack.services import batches as _batches

__all__ = [
    "CALLER",
    "DATABASE_FILE",
    "GcReport",
    "Workspace",
    "open_workspace",
    "resolve_workspace_path",
]

DATABASE_FILE = "runs.duckdb"
ARTIFACTS_DIR = "artifacts"
_PROJECT_MARKERS = (".git", "pyproject.toml")


class _Caller:
    """The default of ``Workspace.track(code_from=...)``: the file that calls ``track``."""

    def __repr__(self) -> str:
        return "CALLER"


CALLER: Any = _Caller()


class PersistingObserver(BatchObserver, BatchHistory, Protocol):
    """A batch observer that also answers questions about the batches it kept."""


@dataclass(frozen=True)
class Workspace:
    """The ports of one workspace, and the use cases built on them.

    Build it with :func:`open_workspace`; tests may build one from in-memory adapters
    (see :mod:`quantrack.testing`).
    """

    tracker: ExperimentTracker
    artifacts: ArtifactStore
    observer: PersistingObserver
    path: Path | None = None

    def track(
        self,
        name: str,
        *,
        strategy: str = "",
        engine: str = "python",
        engine_version: str | None = None,
        params: Mapping[str, Any] | None = None,
        inputs: Iterable[ArtifactRef] = (),
        tags: Iterable[str] = (),
        seed: int | None = None,
        description: str = "",
        code_from: object = CALLER,
        provenance: Provenance | None = None,
        experiment_id: str | None = None,
    ) -> AbstractContextManager[Run]:
        """Record the body of a ``with`` block as one experiment, with its origin.

        Before the body runs, the code behind ``code_from`` is captured (see
        :mod:`quantrack.services.code_capture`) and listed on the experiment, and the
        provenance (git state, interpreter, package versions, ``code_hash``) is collected
        into the definition. ``code_from`` is a strategy class or function, a module, or a
        path to a ``.py`` file; by default it is the file that calls ``track``; ``None``
        captures nothing. A class or function given as ``code_from`` also names the
        ``strategy`` when that is left empty. ``provenance``, when given, is recorded as is
        instead of being collected.

        See :func:`quantrack.services.recording.track` for the lifecycle it follows.
        """
        if code_from is CALLER:
            code_from = _calling_code(sys._getframe(1))
        return self._track(
            name,
            strategy=strategy or _strategy_name(code_from),
            engine=engine,
            engine_version=engine_version,
            params=params,
            inputs=inputs,
            tags=tags,
            seed=seed,
            description=description,
            code_from=code_from,
            provenance=provenance,
            experiment_id=experiment_id,
        )

    @contextmanager
    def _track(
        self,
        name: str,
        *,
        strategy: str,
        engine: str,
        engine_version: str | None,
        params: Mapping[str, Any] | None,
        inputs: Iterable[ArtifactRef],
        tags: Iterable[str],
        seed: int | None,
        description: str,
        code_from: object,
        provenance: Provenance | None,
        experiment_id: str | None,
    ) -> Iterator[Run]:
        captured: CapturedCode | None = None
        if provenance is None:
            provenance, captured = capture_origin(
                self.artifacts, code_from, engine=engine, engine_version=engine_version
            )
        elif code_from is not None:
            captured = capture_code(self.artifacts, code_from)
            provenance = provenance.model_copy(update={"code_hash": captured.code_hash})
        definition = ExperimentDefinition(
            name=name,
            strategy=strategy,
            engine=engine,
            params=dict(params or {}),
            inputs=tuple(inputs),
            provenance=provenance,
            tags=tuple(tags),
            seed=seed,
            description=description,
        )
        with track(self.tracker, self.artifacts, definition, experiment_id=experiment_id) as run:
            for ref in captured.refs if captured is not None else ():
                run.add_artifact(ref)
            yield run

    # -- artifacts ----------------------------------------------------------------------

    def collect_garbage(self, *, dry_run: bool = True, grace_seconds: float = 3600.0) -> GcReport:
        """Remove stored artifacts no experiment lists (a dry run unless told otherwise).

        Only artifacts older than ``grace_seconds`` go, so one stored moments ago by a run
        that has not listed it yet survives. Returns what was (or would be) removed.
        """
        keep = referenced_artifact_ids(self.tracker)
        gc = getattr(self.artifacts, "gc", None)
        if callable(gc):
            report = gc(keep, dry_run=dry_run, grace_seconds=grace_seconds)
            assert isinstance(report, GcReport)
            return report
        # A store without its own gc (the in-memory one) has no age; drop what is unused.
        removed = tuple(sorted(set(self.artifacts.ids()) - keep))
        freed = sum(self.artifacts.size(artifact_id) for artifact_id in removed)
        if not dry_run:
            for artifact_id in removed:
                self.artifacts.delete(artifact_id)
        return GcReport(removed=removed, bytes_freed=freed, temp_files_removed=0, dry_run=dry_run)

    def export(
        self, experiment_id: str, dest: str | os.PathLike[str], *, overwrite: bool = False
    ) -> Path:
        """Write one experiment as a browsable folder (see :mod:`quantrack.export`)."""
        from quantrack.export import export_experiment

        return export_experiment(self, experiment_id, dest, overwrite=overwrite)

    # -- batches (see quantrack.services.batches) ------------------------------------

    def run_batch(
        self,
        fn: Callable[..., object],
        items: Iterable[Mapping[str, Any]],
        *,
        name: str,
        executor: object = None,
        observer: BatchObserver | Iterable[BatchObserver] | None = None,
        retries: int = 0,
        timeout: float | None = None,
        skip_completed: bool = True,
        metrics_of: Callable[[Any], object] | None = None,
        strategy: str | None = None,
        engine: str = "python",
        inputs: Iterable[ArtifactRef] = (),
        provenance: Provenance | None = None,
        tags: Iterable[str] = (),
        description: str = "",
        progress: bool | None = None,
    ) -> Batch:
        """Run ``fn(**item)`` for every item as one recorded batch; return the ended batch.

        ``executor`` is any :class:`concurrent.futures.Executor` or a Dask ``Client``
        (default: a process pool sized to the machine). ``observer`` adds observers to the
        workspace's own; a progress bar is shown when standard error is a terminal
        (``progress`` forces it on or off). See :func:`quantrack.services.batches.run_batch`.
        """
        resolved, in_flight = self._batch_executor(executor, timeout)
        from quantrack.services import batches as _batches

        return _batches.run_batch(
            self.tracker,
            self.artifacts,
            self._batch_observer(observer, progress),
            fn,
            items,
            name=name,
            executor=resolved,
            max_in_flight=in_flight,
            retries=retries,
            timeout=timeout,
            skip_completed=skip_completed,
            metrics_of=metrics_of,
            strategy=strategy,
            engine=engine,
            inputs=inputs,
            provenance=provenance,
            tags=tags,
            description=description,
        )

    def resume_batch(
        self,
        batch_id: str,
        fn: Callable[..., object],
        *,
        metrics_of: Callable[[Any], object] | None = None,
        executor: object = None,
        observer: BatchObserver | Iterable[BatchObserver] | None = None,
        skip_completed: bool = True,
        progress: bool | None = None,
    ) -> Batch:
        """Finish a batch whose process died, running only its unrecorded items.

        See :func:`quantrack.services.batches.resume_batch`.
        """
        resolved, in_flight = self._batch_executor(executor, None)
        from quantrack.services import batches as _batches

        return _batches.resume_batch(
            self.tracker,
            self.artifacts,
            self._batch_observer(observer, progress),
            self.observer,
            batch_id,
            fn,
            metrics_of=metrics_of,
            executor=resolved,
            max_in_flight=in_flight,
            skip_completed=skip_completed,
        )

    def retry_failed(
        self,
        batch_id: str,
        fn: Callable[..., object],
        *,
        max_retries: int = 1,
        metrics_of: Callable[[Any], object] | None = None,
        executor: object = None,
        observer: BatchObserver | Iterable[BatchObserver] | None = None,
        timeout: float | None = None,
        progress: bool | None = None,
    ) -> Batch:
        """Rerun the failed items of an ended batch as a new, linked batch; return it.

        See :func:`quantrack.services.batches.retry_failed`.
        """
        resolved, in_flight = self._batch_executor(executor, timeout)
        from quantrack.services import batches as _batches

        return _batches.retry_failed(
            self.tracker,
            self.artifacts,
            self._batch_observer(observer, progress),
            self.observer,
            batch_id,
            fn,
            max_retries=max_retries,
            metrics_of=metrics_of,
            executor=resolved,
            max_in_flight=in_flight,
            timeout=timeout,
        )

    def list_batches(
        self,
        *,
        status: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
    ) -> list[Batch]:
        """Batches newest first, optionally only in ``status``, created since ``since``."""
        from quantrack.services import batches as _batches

        return _batches.list_batches(self.observer, status=status, since=since, limit=limit)

    def get_failed_items(self, batch_id: str) -> list[BatchItemResult]:
        """The failed items of a batch, by index; raises :class:`BatchNotFound`."""
        from quantrack.services import batches as _batches

        return _batches.get_failed_items(self.observer, batch_id)

    def batch_statistics(self, since: dt.datetime | None = None) -> _batches.BatchStatistics:
        """Totals across the batches created since ``since`` (all when ``None``)."""
        from quantrack.services import batches as _batches

        return _batches.batch_statistics(self.observer, since)

    def stale(self, older_than: dt.timedelta | float) -> _batches.StaleReport:
        """Running batches and experiments with no heartbeat for ``older_than``."""
        from quantrack.services import batches as _batches

        return _batches.stale(self.tracker, self.observer, older_than)

    def reap(self, older_than: dt.timedelta | float) -> _batches.StaleReport:
        """Fail stale batches and experiments as ``unknown`` / "process vanished"."""
        from quantrack.adapters.observers import batch_observer
        from quantrack.services import batches as _batches

        return _batches.reap(
            self.tracker,
            self.artifacts,
            batch_observer(self.observer, progress=False),
            self.observer,
            older_than,
        )

    def _batch_observer(
        self, extra: BatchObserver | Iterable[BatchObserver] | None, progress: bool | None
    ) -> BatchObserver:
        from quantrack.adapters.observers import batch_observer

        return batch_observer(self.observer, extra, progress=progress)

    def _batch_executor(self, executor: object, timeout: float | None) -> tuple[Any, int | None]:
        from quantrack.adapters.executors import resolve_executor, worker_count

        resolved = resolve_executor(executor)
        workers = worker_count(resolved) if resolved is not None else None
        in_flight = None if workers is None else (workers if timeout else 2 * workers)
        return resolved, in_flight

    def assess_batch(
        self, batch_id: str, *, metric: str = "sharpe", partitions: int = 16
    ) -> _analysis.BatchAssessment:
        """PSR of every run, DSR of the best run by ``metric`` and PBO of the batch.

        See :func:`quantrack.analysis.assess_batch`.
        """
        from quantrack import analysis as _analysis

        return _analysis.assess_batch(self, batch_id, metric=metric, partitions=partitions)


def _calling_code(frame: FrameType) -> object:
    """What ``track`` captures by default: the calling module's file, else the module."""
    namespace = frame.f_globals
    file = namespace.get("__file__")
    if isinstance(file, str) and file.endswith(".py") and Path(file).is_file():
        return Path(file)
    module = sys.modules.get(str(namespace.get("__name__", "")))
    if module is not None and vars(module) is namespace:
        return module
    # Code exec'd into a bare namespace has no file and no module to ask for source.
    return _Uncapturable(str(namespace.get("__name__", "<unknown>")))


class _Uncapturable:
    """Calling code that has no file and no module: capture records only a warning."""

    def __init__(self, label: str) -> None:
        self.__qualname__ = label
        self.__module__ = "__quantrack_uncapturable__"


def _strategy_name(code_from: object) -> str:
    if inspect.isclass(code_from) or inspect.isfunction(code_from):
        return f"{code_from.__module__}.{code_from.__qualname__}"
    return ""


def resolve_workspace_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Where a workspace lives: ``path`` if given, else ``$QUANTRACK_HOME``, else
    ``.quantrack/`` at the project root (the nearest folder upward from the current one
    holding ``.git`` or ``pyproject.toml``), else ``~/.quantrack``.
    """
    if path is not None:
        return Path(path).expanduser()
    home = os.environ.get("QUANTRACK_HOME")
    if home:
        return Path(home).expanduser()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).exists() for marker in _PROJECT_MARKERS):
            return folder / ".quantrack"
    return Path.home() / ".quantrack"


def open_workspace(
    path: str | os.PathLike[str] | None = None, *, timeout: float = 30.0
) -> Workspace:
    """Open (creating if needed) the workspace at ``path`` (see
    :func:`resolve_workspace_path`) and wire its adapters.

    ``timeout`` is how long a call waits for a database file that another process holds
    before raising :class:`WorkspaceBusy`. Raises :class:`WorkspaceUnwritable` when the
    folder cannot be created or written.
    """
    # Adapters are imported here, not at module level, so `import quantrack` stays fast
    # and free of duckdb.
    from quantrack.adapters.duckdb import DuckDBBatchObserver, DuckDBExperimentTracker
    from quantrack.adapters.filesystem import FilesystemArtifactStore

    root = resolve_workspace_path(path)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise WorkspaceUnwritable(
            f"cannot write to workspace folder {root} ({exc.strerror or exc}); choose "
            "another with open_workspace(path) or $QUANTRACK_HOME"
        ) from exc
    database = root / DATABASE_FILE
    workspace = Workspace(
        tracker=DuckDBExperimentTracker(database, timeout=timeout),
        artifacts=FilesystemArtifactStore(root / ARTIFACTS_DIR),
        observer=DuckDBBatchObserver(database, timeout=timeout),
        path=root,
    )
    # Records an engine could not write last time (see engines/_safety.py) land now.
    from quantrack.adapters.filesystem.spool import SPOOL_DIR, replay_spool

    replay_spool(root / SPOOL_DIR, workspace.tracker, workspace.artifacts, workspace.observer)
    return workspace
