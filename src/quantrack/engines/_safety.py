"""Never break the backtest: record through guarded ports, spool what could not be written.

An engine adapter's first duty is to hand the engine's own result back to the caller.
If quantrack fails while recording (the disk is full, the workspace stays busy past its
timeout, a bug in the adapter), the result is still returned, ONE structlog warning
(``recording.failed``) is logged, and the run's complete record is written to the
workspace's spool (:mod:`quantrack.adapters.filesystem.spool`), which
:func:`~quantrack.open_workspace` replays the next time the workspace is opened.

API (shared by every engine adapter)::

    from quantrack.engines._safety import RecordingGuard

    guard = RecordingGuard.for_workspace(workspace, engine="vectorbt", label=name)
    # or RecordingGuard(tracker, artifacts, observer, spool_dir=..., engine=..., label=...)
    with guard:
        # Use guard.tracker / guard.artifacts / guard.observer exactly like the workspace's
        # ports. After the first failure of the real port they stop calling it ("detached")
        # and only remember; they never raise a storage error to the engine.
        guard.attempt(record_everything, guard.tracker, guard.artifacts, guard.observer)
    # On leaving the block: if anything failed, the record was spooled (guard.spool_file)
    # and the warning logged. Exceptions raised by the body itself (the engine's own
    # error, KeyboardInterrupt) are NOT swallowed: they propagate unchanged, after spooling.
    return engine_result

* ``guard.tracker`` mirrors every single-run write (``create_experiment``,
  ``update_status``, ``store_results``, ``heartbeat``) in memory first, with the
  domain's lifecycle functions, so the lifecycle rules are still enforced (a lifecycle
  violation raises: that is a bug in the caller, not a storage failure) and the final
  state of each run is known even when the database never saw it. The experiment ids are
  the mirror's, passed to the real tracker. ``record_finished`` (the bulk path for
  sweeps) is remembered as is, not mirrored row by row, so a 10,000-run sweep costs
  nothing extra. Reads go to the mirror for runs it holds, else to the real tracker.
* ``guard.artifacts.put`` returns the same :class:`ArtifactRef` as the real store; when
  the store fails (or the guard is detached) the ref is computed locally and the bytes are
  kept to travel with the spool record.
* ``guard.observer`` remembers the batch and its item results and forwards them.
* ``guard.attempt(fn, *args, **kwargs)`` runs quantrack-side code (building metrics,
  frames) and returns its result; any ``Exception`` marks the guard failed and returns
  ``None`` instead of raising.
* The database ports (tracker, observer) and the artifact store detach separately: while
  the database is busy, artifacts still go to the store and only the rows are spooled.
* ``guard.fail(exc)`` marks the guard failed by hand (detaching every port);
  ``guard.failed`` / ``guard.error`` say whether and why; ``guard.detached(port)``
  whether a port stopped; ``guard.record()`` is the :class:`SpoolRecord` that would be
  spooled; ``guard.spool_file`` is where it went.
* With no spool folder (an in-memory workspace) the record cannot be kept; the warning
  says so and ``guard.record()`` still holds it for the caller.

Runs still pending or running in the mirror are spooled (and shown by ``guard.record()``)
as cancelled ("recording stopped before the run finished"), since only final records can
be replayed; the mirror itself is not changed, so ``guard.record()`` is safe to call at any
time.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from quantrack.adapters.filesystem.spool import SPOOL_DIR, SpoolRecord, write_spool_record
from quantrack.adapters.observers import notify_items_finished
from quantrack.domain import (
    ArtifactRef,
    Batch,
    BatchItemResult,
    DuplicateExperiment,
    ErrorCategory,
    Experiment,
    ExperimentDefinition,
    ExperimentFilter,
    ExperimentNotFound,
    ExperimentResults,
    ExperimentStatus,
    FinishedExperiments,
    new_id,
)
from quantrack.domain._logging import get_logger
from quantrack.domain.artifacts import display_name
from quantrack.domain.lifecycle import attach_results, new_experiment, stamp_heartbeat, transition
from quantrack.ports import ArtifactStore, BatchObserver, ExperimentTracker
from quantrack.services.recording import describe_exception

if TYPE_CHECKING:
    from quantrack.workspace import Workspace

__all__ = ["GuardedArtifactStore", "GuardedBatchObserver", "GuardedTracker", "RecordingGuard"]

_log = get_logger("quantrack.recording")

_DATABASE = "database"
_ARTIFACTS = "artifacts"
_PORTS = (_DATABASE, _ARTIFACTS)

P = ParamSpec("P")
T = TypeVar("T")


class RecordingGuard:
    """Guarded ports for one recording, and the spool they fall back to (see module doc)."""

    def __init__(
        self,
        tracker: ExperimentTracker,
        artifacts: ArtifactStore,
        observer: BatchObserver,
        *,
        spool_dir: Path | None,
        engine: str,
        label: str = "",
    ) -> None:
        self.spool_dir = spool_dir
        self.engine = engine
        self.label = label
        self.error: BaseException | None = None
        self.spool_file: Path | None = None
        self.tracker = GuardedTracker(self, tracker)
        self.artifacts = GuardedArtifactStore(self, artifacts)
        self.observer = GuardedBatchObserver(self, observer)
        self._closed = False
        self._record_id = new_id()
        self._detached: set[str] = set()

    @classmethod
    def for_workspace(cls, workspace: Workspace, *, engine: str, label: str = "") -> RecordingGuard:
        """A guard over ``workspace``'s ports, spooling into its ``spool/`` folder."""
        spool_dir = workspace.path / SPOOL_DIR if workspace.path is not None else None
        return cls(
            workspace.tracker,
            workspace.artifacts,
            workspace.observer,
            spool_dir=spool_dir,
            engine=engine,
            label=label,
        )

    def detached(self, port: str) -> bool:
        """True once ``port`` failed (or everything was failed by hand)."""
        return port in self._detached

    @property
    def failed(self) -> bool:
        """True once recording failed; the real ports are no longer called."""
        return self.error is not None

    def fail(self, exc: BaseException, *, port: str | None = None) -> None:
        """Mark recording failed (the first error is kept) and detach ``port``
        (``"database"``: tracker and observer; ``"artifacts"``: the store), or every port.
        """
        if self.error is None:
            self.error = exc
        self._detached.update((port,) if port is not None else _PORTS)

    def attempt(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
        """``fn(*args, **kwargs)``, or ``None`` (and the guard failed) when it raises."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            self.fail(exc)
            return None

    def record(self) -> SpoolRecord:
        """Everything this guard saw, as the record the spool would hold."""
        experiments = []
        for experiment in self.tracker.mirrored():
            experiments.append(
                experiment if experiment.is_terminal else self.tracker.cancelled(experiment)
            )
        refs: list[ArtifactRef] = [
            ref for e in experiments for ref in (*e.artifacts, *e.definition.inputs)
        ]
        for records in self.tracker.finished:
            refs.extend(records.artifacts)
            refs.extend(records.template.inputs)
            for row in records.row_artifacts or ():
                refs.extend(row)
        kept = self.artifacts.kept
        blob_ids = tuple(sorted({ref.id for ref in refs if ref.id in kept}))
        return SpoolRecord(
            id=self._record_id,
            engine=self.engine,
            reason=describe_exception(self.error) if self.error is not None else "",
            experiments=tuple(experiments),
            finished=tuple(self.tracker.finished),
            batch=self.observer.batch,
            items=tuple(self.observer.items),
            blobs=blob_ids,
        )

    def close(self) -> Path | None:
        """Spool the record and log the warning when recording failed; idempotent.

        Returns the spool file, or ``None`` when nothing failed or there is no spool
        folder. Never raises an ``Exception``.
        """
        if self._closed or self.error is None:
            self._closed = True
            return self.spool_file
        self._closed = True
        error = describe_exception(self.error)
        try:
            record = self.record()
            if self.spool_dir is None:
                _log.warning(
                    "recording.failed",
                    engine=self.engine,
                    run=self.label,
                    error=error,
                    spooled=False,
                    hint="this workspace has no folder, so the record could not be spooled",
                )
                return None
            self.spool_file = write_spool_record(self.spool_dir, record, self.artifacts.kept)
        except Exception as exc:
            _log.warning(
                "recording.failed",
                engine=self.engine,
                run=self.label,
                error=error,
                spooled=False,
                spool_error=describe_exception(exc),
                hint="the backtest result was returned, but its record is lost",
            )
            return None
        _log.warning(
            "recording.failed",
            engine=self.engine,
            run=self.label,
            error=error,
            spooled=True,
            spool_file=str(self.spool_file),
            hint="the backtest result was returned; the record is replayed on the next open",
        )
        return self.spool_file

    def __enter__(self) -> RecordingGuard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, port: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
        """``fn(...)`` on a real port unless that port is detached; a failure detaches it.

        Ports detach separately: a busy database must not keep artifacts out of a store
        that works (they would only swell the spool), and vice versa.
        """
        if port in self._detached:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            self.fail(exc, port=port)
            return None


class GuardedTracker:
    """An :class:`ExperimentTracker` that mirrors writes and never raises storage errors."""

    def __init__(self, guard: RecordingGuard, real: ExperimentTracker) -> None:
        self._guard = guard
        self._real = real
        # The mirror applies the domain's lifecycle functions itself (no second log line
        # per transition, as an in-memory tracker would emit).
        self._mirror: dict[str, Experiment] = {}
        self.finished: list[FinishedExperiments] = []

    def mirrored(self) -> list[Experiment]:
        """The final (or last) state of every run written through this tracker."""
        return list(self._mirror.values())

    def cancelled(self, experiment: Experiment) -> Experiment:
        """``experiment`` as it is spooled when the engine never finished it: cancelled.

        The mirror itself is left alone, so asking for the record mid-run changes nothing.
        """
        return transition(
            experiment,
            ExperimentStatus.CANCELLED,
            error="recording stopped before the run finished",
        )

    def _mirrored(self, experiment_id: str) -> Experiment:
        try:
            return self._mirror[experiment_id]
        except KeyError:
            raise ExperimentNotFound(experiment_id) from None

    def create_experiment(
        self, definition: ExperimentDefinition, *, experiment_id: str | None = None
    ) -> Experiment:
        """Create in the mirror, then in the real tracker under the same id."""
        experiment = new_experiment(definition, experiment_id=experiment_id)
        if experiment.id in self._mirror:
            raise DuplicateExperiment(experiment.id)
        self._mirror[experiment.id] = experiment
        self._guard._call(
            _DATABASE, self._real.create_experiment, definition, experiment_id=experiment.id
        )
        return experiment

    def get_experiment(self, experiment_id: str) -> Experiment:
        """The mirrored run, else the real tracker's."""
        if experiment_id in self._mirror:
            return self._mirror[experiment_id]
        return self._real.get_experiment(experiment_id)

    def list_experiments(self, filter: ExperimentFilter | None = None) -> list[Experiment]:
        """The real tracker's answer."""
        return self._real.list_experiments(filter)

    def update_status(
        self,
        experiment_id: str,
        status: ExperimentStatus,
        *,
        error: str | None = None,
        error_category: ErrorCategory | None = None,
    ) -> Experiment:
        """Move the mirrored run (lifecycle enforced), then the real one."""
        experiment = transition(
            self._mirrored(experiment_id), status, error=error, error_category=error_category
        )
        self._mirror[experiment_id] = experiment
        self._guard._call(
            _DATABASE,
            self._real.update_status,
            experiment_id,
            status,
            error=error,
            error_category=error_category,
        )
        return experiment

    def store_results(self, experiment_id: str, results: ExperimentResults) -> Experiment:
        """Attach results to the mirrored run, then to the real one."""
        experiment = attach_results(self._mirrored(experiment_id), results)
        self._mirror[experiment_id] = experiment
        self._guard._call(_DATABASE, self._real.store_results, experiment_id, results)
        return experiment

    def heartbeat(self, experiment_id: str) -> Experiment:
        """Stamp the mirrored run, then the real one."""
        experiment = stamp_heartbeat(self._mirrored(experiment_id))
        self._mirror[experiment_id] = experiment
        self._guard._call(_DATABASE, self._real.heartbeat, experiment_id)
        return experiment

    def find_by_input_artifacts(self, artifact_ids: Iterable[str]) -> list[Experiment]:
        """The real tracker's answer."""
        return self._real.find_by_input_artifacts(artifact_ids)

    def record_finished(self, records: FinishedExperiments) -> list[str]:
        """Remember the rows, then store them in the real tracker."""
        self.finished.append(records)
        self._guard._call(_DATABASE, self._real.record_finished, records)
        return list(records.ids)

    def delete_experiment(self, experiment_id: str) -> None:
        """Delete from the real tracker (not guarded: deleting is not recording)."""
        self._real.delete_experiment(experiment_id)

    @contextmanager
    def _session(self) -> Iterator[None]:
        if self._guard.detached(_DATABASE):
            yield
            return
        try:
            held = self._real.session()
            held.__enter__()
        except Exception as exc:
            self._guard.fail(exc, port=_DATABASE)
            yield
            return
        try:
            yield
        except BaseException:
            try:
                held.__exit__(*sys.exc_info())
            except Exception as exc:
                self._guard.fail(exc, port=_DATABASE)
            raise
        try:
            held.__exit__(None, None, None)
        except Exception as exc:
            self._guard.fail(exc, port=_DATABASE)

    def session(self) -> AbstractContextManager[None]:
        """The real tracker's session; a failure to open or close it fails the guard."""
        return self._session()


class GuardedArtifactStore:
    """An :class:`ArtifactStore` whose ``put`` never raises a storage error."""

    def __init__(self, guard: RecordingGuard, real: ArtifactStore) -> None:
        self._guard = guard
        self._real = real
        self.kept: dict[str, bytes] = {}

    def put(
        self,
        data: bytes,
        *,
        kind: str = "file",
        media_type: str = "application/octet-stream",
        name: str | None = None,
    ) -> ArtifactRef:
        """Store in the real store; when it fails, keep the bytes for the spool."""
        ref = self._guard._call(
            _ARTIFACTS, self._real.put, data, kind=kind, media_type=media_type, name=name
        )
        if ref is None:
            data = bytes(data)
            ref = ArtifactRef(
                id=hashlib.sha256(data).hexdigest(),
                size=len(data),
                media_type=media_type,
                kind=kind,
                name=display_name(name),
            )
            self.kept[ref.id] = data
        return ref

    def get(self, artifact_id: str, *, verify: bool = False) -> bytes:
        """Kept bytes, else the real store's."""
        if artifact_id in self.kept:
            return self.kept[artifact_id]
        return self._real.get(artifact_id, verify=verify)

    def exists(self, artifact_id: str) -> bool:
        """True when kept or stored."""
        return artifact_id in self.kept or self._real.exists(artifact_id)

    def verify(self, artifact_id: str) -> None:
        """Verify in the real store (kept bytes were hashed when kept)."""
        if artifact_id not in self.kept:
            self._real.verify(artifact_id)

    def delete(self, artifact_id: str) -> bool:
        """Delete from the real store (not guarded: deleting is not recording)."""
        return self._real.delete(artifact_id)

    def ids(self) -> Iterator[str]:
        """The real store's ids followed by the kept ones."""
        yield from self._real.ids()
        yield from self.kept

    def size(self, artifact_id: str) -> int:
        """Size of kept or stored content."""
        if artifact_id in self.kept:
            return len(self.kept[artifact_id])
        return self._real.size(artifact_id)


class GuardedBatchObserver:
    """A :class:`BatchObserver` (with the ``BatchItemsObserver`` capability) that remembers
    the batch and forwards it while it can.
    """

    def __init__(self, guard: RecordingGuard, real: BatchObserver) -> None:
        self._guard = guard
        self._real = real
        self.batch: Batch | None = None
        self.items: list[BatchItemResult] = []

    def on_batch_started(self, batch: Batch) -> None:
        """Remember and forward the start."""
        self.batch = batch
        self._guard._call(_DATABASE, self._real.on_batch_started, batch)

    def on_item_finished(self, batch: Batch, item: BatchItemResult) -> None:
        """Remember and forward a finished item."""
        self.batch = batch
        self.items.append(item)
        self._guard._call(_DATABASE, self._real.on_item_finished, batch, item)

    def on_items_finished(self, batch: Batch, items: Sequence[BatchItemResult]) -> None:
        """Remember and forward finished items: in one event when the real observer has
        the capability, else one per item (:func:`notify_items_finished`).
        """
        self.batch = batch
        self.items.extend(items)
        self._guard._call(_DATABASE, notify_items_finished, self._real, batch, items)

    def on_batch_finished(self, batch: Batch) -> None:
        """Remember and forward the end."""
        self.batch = batch
        self._guard._call(_DATABASE, self._real.on_batch_finished, batch)
