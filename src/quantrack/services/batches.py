"""Running a batch: one function over many items, observed, parallel and resumable.

A batch runs ``fn(**item)`` for every item on any :class:`concurrent.futures.Executor`
(a process pool by default, a thread pool, or Dask's ``client.get_executor()``) and
records every item as an experiment linked to the batch.

How the work is split, and why:

* **Workers never touch storage.** The worker side (:func:`_execute`) runs the user's
  function and returns a plain, picklable :class:`_Outcome` (metrics, timing, error,
  traceback text, artifact bytes). The parent process is the single writer: it buffers
  finished items and writes them in bulk (``tracker.record_finished``) every
  ``flush_every`` items or ``flush_seconds`` seconds, inside one ``tracker.session()``,
  then tells the observer about each item. Between flushes it holds no database, so
  readers are never locked out of a long sweep.
* **Lifecycle rules come from the domain.** Batch snapshots are derived with
  :func:`~quantrack.domain.lifecycle.start_batch`, :func:`~quantrack.domain.lifecycle.record_item`
  and :func:`~quantrack.domain.lifecycle.finish_batch`; error categories with
  :func:`~quantrack.domain.categorize_error`.
* **Failures stay local to their item.** An exception, a per-item ``timeout`` (category
  ``timeout``) or a worker process that dies (``memory_error`` when it was SIGKILLed, as
  the out-of-memory killer does, else ``unknown``) fails that item only; a broken process
  pool is rebuilt and the other in-flight items are run again.
* **Ctrl-C** stops scheduling, cancels what has not started, records what finished (items
  still running are recorded as cancelled), ends the batch ``cancelled`` and re-raises.
* **Resume and retry.** The batch's item list and settings are stored in ``Batch.params``
  (under ``"function"``, ``"items"``, ``"retries"``, ...), so a batch whose parent process
  was killed can be resumed with :func:`resume_batch` (the caller passes ``fn`` again):
  only items without a recorded result run. :func:`retry_failed` reruns the failed items
  of an ended batch as a new batch whose experiments point at the failed ones
  (``retry_of``, ``attempt + 1``).
* **Reuse.** With ``skip_completed`` an item whose config hash, code hash and input
  fingerprints match a completed experiment of the same strategy is not run: a new
  completed experiment is recorded for the item with the earlier metrics and artifacts
  and ``reused_from`` naming the original run (never a copy of a copy), and the item
  counts as ``reused``.
* **Heartbeats.** While a batch runs, the runner re-announces it every
  ``heartbeat_seconds`` (``on_batch_started`` of a batch already running is a
  resumption that stamps ``heartbeat_at``); :func:`stale` lists batches and experiments
  whose heartbeat is older than a threshold and :func:`reap` fails them as
  ``unknown`` / "process vanished".

Observer failures are isolated by the caller's observer
(:class:`~quantrack.adapters.observers.CompositeBatchObserver`, which
:meth:`Workspace.run_batch <quantrack.workspace.Workspace.run_batch>` always uses); this
module calls the one observer it is given.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as dt
import hashlib
import inspect
import json
import math
import multiprocessing
import os
import pickle
import shutil
import signal
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from quantrack.domain import (
    ArtifactNotFound,
    ArtifactRef,
    Batch,
    BatchItemResult,
    BatchStatus,
    ErrorCategory,
    Experiment,
    ExperimentDefinition,
    ExperimentFilter,
    ExperimentStatus,
    FinishedExperiments,
    InvalidArtifactId,
    InvalidParams,
    InvalidTransition,
    LifecycleError,
    Provenance,
    canonical_json,
    canonical_params,
    categorize_error,
    config_hash,
    new_id,
    utcnow,
)
from quantrack.domain._logging import get_logger
from quantrack.domain.hashing import JsonValue
from quantrack.domain.lifecycle import finish_batch, record_item, start_batch
from quantrack.ports import ArtifactStore, BatchHistory, BatchObserver, ExperimentTracker
from quantrack.services.provenance import collect_provenance
from quantrack.services.recording import describe_exception

__all__ = [
    "BatchStatistics",
    "ItemArtifact",
    "ItemOutput",
    "ItemTimedOut",
    "StaleReport",
    "batch_statistics",
    "get_failed_items",
    "list_batches",
    "reap",
    "resume_batch",
    "retry_failed",
    "run_batch",
    "stale",
]

_log = get_logger("quantrack.batches")

#: A worker may die this many times with an item in flight, without the death being
#: pinned on another item, before that item is failed instead of run again.
_MAX_BREAKS = 3
#: Reason recorded by :func:`reap`.
VANISHED = "process vanished"


# -- what the user's function returns ----------------------------------------------------


@dataclass(frozen=True)
class ItemArtifact:
    """Bytes an item produced, stored by the parent in the artifact store.

    ``kind`` is the artifact's role (``equity_curve``, ``trades``, ...); ``name`` is a
    display name only.
    """

    data: bytes
    kind: str = "file"
    media_type: str = "application/octet-stream"
    name: str | None = None


@dataclass(frozen=True)
class ItemOutput:
    """What one item produced: metrics and, optionally, artifacts.

    The batch function (or its ``metrics_of``) returns either a mapping of metric names to
    numbers, or ``None`` (no metrics), or an ``ItemOutput`` when it also has artifacts.
    A metric that is NaN or infinite is left out (undefined for that item).
    """

    metrics: Mapping[str, float] = field(default_factory=dict)
    artifacts: Sequence[ItemArtifact] = ()


class ItemTimedOut(TimeoutError):
    """An item ran longer than the batch's per-item ``timeout``."""


# -- the worker side -------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    index: int
    attempt: int
    params: Mapping[str, Any]
    timeout: float | None
    marker_dir: str | None


@dataclass(frozen=True)
class _Outcome:
    index: int
    attempt: int
    status: ExperimentStatus
    started_at: dt.datetime
    completed_at: dt.datetime
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: tuple[ItemArtifact, ...] = ()
    error: str | None = None
    category: ErrorCategory | None = None
    trace: str | None = None


def _marker(marker_dir: str, index: int, attempt: int) -> str:
    return os.path.join(marker_dir, f"{index}-{attempt}")


@contextlib.contextmanager
def _alarm(seconds: float | None) -> Iterator[None]:
    # SIGALRM interrupts Python code in a process pool worker (tasks run on its main
    # thread) and leaves the worker alive; elsewhere the parent enforces the timeout.
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable or seconds is None:
        yield
        return

    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise ItemTimedOut(f"the item ran longer than its timeout of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _clean_output(value: object) -> tuple[dict[str, float], tuple[ItemArtifact, ...]]:
    if value is None:
        return {}, ()
    if isinstance(value, ItemOutput):
        raw, produced = value.metrics, tuple(value.artifacts)
    elif isinstance(value, Mapping):
        raw, produced = value, ()
    else:
        raise TypeError(
            f"the batch function returned a {type(value).__module__}."
            f"{type(value).__qualname__}; return a mapping of metric names to numbers "
            "(or an ItemOutput, or None), or pass metrics_of= to turn its result into one"
        )
    metrics: dict[str, float] = {}
    for name, number in raw.items():
        if not isinstance(name, str) or not name.strip():
            raise TypeError(f"metric names must be non-empty strings; got {name!r}")
        try:
            converted = float(number)
        except (TypeError, ValueError):
            raise TypeError(
                f"metric {name!r} is {number!r}, which is not a number; metrics must be numbers"
            ) from None
        # NaN/inf mean "undefined for this item" (a Sharpe ratio without trades).
        if math.isfinite(converted):
            metrics[name] = converted
    for artifact in produced:
        if not isinstance(artifact, ItemArtifact) or not isinstance(artifact.data, bytes):
            raise TypeError(
                f"ItemOutput.artifacts holds {artifact!r}; give ItemArtifact(data=<bytes>, ...)"
            )
    return metrics, produced


def _execute(
    fn: Callable[..., object],
    metrics_of: Callable[[Any], object] | None,
    task: _Task,
) -> _Outcome:
    """Run one item in a worker and return its outcome; never raises for the item's errors."""
    marker = None
    if task.marker_dir is not None:
        marker = _marker(task.marker_dir, task.index, task.attempt)
        with open(marker, "w", encoding="ascii") as handle:
            handle.write(str(os.getpid()))
    started = utcnow()
    try:
        with _alarm(task.timeout):
            value = fn(**task.params)
            if metrics_of is not None:
                value = metrics_of(value)
            metrics, produced = _clean_output(value)
    except KeyboardInterrupt as exc:
        return _Outcome(
            task.index,
            task.attempt,
            ExperimentStatus.CANCELLED,
            started,
            utcnow(),
            error=describe_exception(exc),
        )
    except Exception as exc:
        return _Outcome(
            task.index,
            task.attempt,
            ExperimentStatus.FAILED,
            started,
            utcnow(),
            error=describe_exception(exc),
            category=categorize_error(exc),
            trace="".join(traceback.format_exception(exc)),
        )
    except BaseException as exc:  # SystemExit from the user's code fails only its item
        return _Outcome(
            task.index,
            task.attempt,
            ExperimentStatus.FAILED,
            started,
            utcnow(),
            error=f"{describe_exception(exc)} (the batch function tried to exit)",
            category=ErrorCategory.UNKNOWN,
            trace="".join(traceback.format_exception(exc)),
        )
    finally:
        if marker is not None:
            with contextlib.suppress(OSError):
                os.unlink(marker)
    return _Outcome(
        task.index,
        task.attempt,
        ExperimentStatus.COMPLETED,
        started,
        utcnow(),
        metrics=metrics,
        artifacts=produced,
    )


# -- the spec stored with a batch ------------------------------------------------------


def _qualified_name(fn: object) -> str:
    module = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{name}"


def _code_hash(fn: object) -> str | None:
    try:
        source = inspect.getsource(fn)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return None
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _Spec:
    """What a batch needs to be resumed or retried, kept in ``Batch.params``."""

    function: str
    metrics_of: str | None
    items: list[dict[str, JsonValue]]
    retries: int
    timeout: float | None
    strategy: str
    engine: str
    description: str
    inputs: list[dict[str, JsonValue]]
    first_attempts: list[int] | None = None
    retry_of: list[str] | None = None
    retry_of_batch: str | None = None

    def to_params(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "metrics_of": self.metrics_of,
            "items": self.items,
            "retries": self.retries,
            "timeout": self.timeout,
            "strategy": self.strategy,
            "engine": self.engine,
            "description": self.description,
            "inputs": self.inputs,
            "first_attempts": self.first_attempts,
            "retry_of": self.retry_of,
            "retry_of_batch": self.retry_of_batch,
        }

    def store(self, artifacts: ArtifactStore) -> dict[str, Any]:
        """The batch's params: a summary and the id of the whole spec, stored as JSON.

        The spec holds every item, and a persisting observer rewrites a batch's params
        on every event, so keeping the items in the params would make a sweep quadratic.
        """
        ref = artifacts.put(
            canonical_json(self.to_params()).encode("utf-8"),
            kind="batch_spec",
            media_type="application/json",
            name="batch-spec.json",
        )
        return {
            "spec": ref.id,
            "function": self.function,
            "retries": self.retries,
            "timeout": self.timeout,
            "retry_of_batch": self.retry_of_batch,
        }

    @classmethod
    def from_batch(cls, batch: Batch, artifacts: ArtifactStore) -> _Spec:
        params: Mapping[str, Any] = batch.params
        spec_id = params.get("spec")
        if isinstance(spec_id, str):
            try:
                loaded = json.loads(artifacts.get(spec_id))
            except (ArtifactNotFound, InvalidArtifactId, ValueError) as exc:
                raise LifecycleError(
                    f"the item list of batch {batch.id} (artifact {spec_id}) cannot be read "
                    f"from the artifact store ({exc}), so quantrack cannot tell which items "
                    "remain"
                ) from exc
            params = loaded if isinstance(loaded, dict) else {}
        if not isinstance(params.get("items"), list) or "function" not in params:
            raise LifecycleError(
                f"batch {batch.id} was not started by run_batch (its params hold no item "
                "list), so quantrack cannot tell which items remain"
            )

        def text(key: str, default: str = "") -> str:
            value = params.get(key)
            return value if isinstance(value, str) else default

        timeout = params.get("timeout")
        retries = params.get("retries")
        items = params["items"]
        assert isinstance(items, list)
        inputs = params.get("inputs")
        first = params.get("first_attempts")
        retry_of = params.get("retry_of")
        metrics_of = params.get("metrics_of")
        retry_batch = params.get("retry_of_batch")
        return cls(
            function=text("function"),
            metrics_of=metrics_of if isinstance(metrics_of, str) else None,
            items=[item if isinstance(item, dict) else {} for item in items],
            retries=retries if isinstance(retries, int) else 0,
            timeout=float(timeout) if isinstance(timeout, int | float) else None,
            strategy=text("strategy"),
            engine=text("engine", "python"),
            description=text("description"),
            inputs=[ref for ref in inputs if isinstance(ref, dict)]
            if isinstance(inputs, list)
            else [],
            first_attempts=[int(a) for a in first if isinstance(a, int)]
            if isinstance(first, list)
            else None,
            retry_of=[str(r) for r in retry_of] if isinstance(retry_of, list) else None,
            retry_of_batch=retry_batch if isinstance(retry_batch, str) else None,
        )

    def first_attempt(self, index: int) -> int:
        return self.first_attempts[index] if self.first_attempts else 1

    def first_retry_of(self, index: int) -> str | None:
        return self.retry_of[index] if self.retry_of else None


# -- the parent side -------------------------------------------------------------------


@dataclass
class _Flight:
    index: int
    attempt: int
    retry_of: str | None
    submitted: float
    started: float | None = None
    breaks: int = 0


@dataclass
class _Row:
    experiment_id: str
    index: int
    attempt: int
    retry_of: str | None
    reused_from: str | None
    status: ExperimentStatus
    created_at: dt.datetime
    started_at: dt.datetime | None
    completed_at: dt.datetime
    metrics: dict[str, float]
    artifacts: tuple[ArtifactRef, ...]
    error: str | None
    category: ErrorCategory | None
    final: bool
    write: bool = True

    def item(self, params: Mapping[str, Any]) -> BatchItemResult:
        duration = None
        if self.started_at is not None:
            duration = max(0.0, (self.completed_at - self.started_at).total_seconds())
        return BatchItemResult(
            index=self.index,
            experiment_id=self.experiment_id,
            params=dict(params),
            status=self.status,
            error=self.error,
            error_category=self.category,
            duration_seconds=duration,
            attempt=self.attempt,
            reused=self.reused_from is not None,
        )


def _default_executor() -> cf.Executor:
    # fork after threads exist (structlog, rich, the runner's own) can deadlock a child.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    try:
        workers = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        workers = os.cpu_count() or 1
    return cf.ProcessPoolExecutor(max_workers=max(1, workers), mp_context=context)


def _rebuilt(pool: cf.ProcessPoolExecutor) -> cf.ProcessPoolExecutor:
    # A broken pool cannot be reused; build the same pool again from its own settings.
    return cf.ProcessPoolExecutor(
        max_workers=getattr(pool, "_max_workers", None),
        mp_context=getattr(pool, "_mp_context", None),
        initializer=getattr(pool, "_initializer", None),
        initargs=getattr(pool, "_initargs", ()),
    )


def _describe_death(exitcode: int | None) -> tuple[str, ErrorCategory]:
    if exitcode is not None and exitcode == -signal.SIGKILL:
        return (
            "WorkerDied: the worker process running this item was killed by SIGKILL, which "
            "is what the out-of-memory killer sends; give the item more memory or run fewer "
            "items at once (max_workers)",
            ErrorCategory.MEMORY_ERROR,
        )
    if exitcode is not None and exitcode < 0:
        try:
            signame = signal.Signals(-exitcode).name
        except ValueError:
            signame = f"signal {-exitcode}"
        return (
            f"WorkerDied: the worker process running this item died from {signame}",
            ErrorCategory.UNKNOWN,
        )
    return (
        f"WorkerDied: the worker process running this item exited with code {exitcode} "
        "(os._exit, or a crash in native code)",
        ErrorCategory.UNKNOWN,
    )


@dataclass(frozen=True)
class _Pacing:
    """How a runner feeds its executor and writes: the settings every batch entry point
    takes, checked once here.
    """

    executor: cf.Executor | None
    max_in_flight: int | None
    flush_every: int
    flush_seconds: float
    heartbeat_seconds: float

    def __post_init__(self) -> None:
        if not isinstance(self.flush_every, int) or self.flush_every < 1:
            raise ValueError(f"flush_every must be a whole number >= 1; got {self.flush_every!r}")
        for label, value in (
            ("flush_seconds", self.flush_seconds),
            ("heartbeat_seconds", self.heartbeat_seconds),
        ):
            if not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{label} must be a positive number of seconds; got {value!r}")


class _Runner:
    """One execution of a batch's remaining items; the parent side of the work."""

    def __init__(
        self,
        *,
        tracker: ExperimentTracker,
        artifacts: ArtifactStore,
        observer: BatchObserver,
        fn: Callable[..., object],
        metrics_of: Callable[[Any], object] | None,
        batch: Batch,
        template: ExperimentDefinition,
        spec: _Spec,
        call_params: Sequence[Mapping[str, Any]],
        hashes: Sequence[str],
        pacing: _Pacing,
    ) -> None:
        self.tracker = tracker
        self.artifacts = artifacts
        self.observer = observer
        self.fn = fn
        self.metrics_of = metrics_of
        self.batch = batch
        self.template = template
        self.spec = spec
        self.call_params = call_params
        self.hashes = hashes
        self.flush_every = pacing.flush_every
        self.flush_seconds = pacing.flush_seconds
        self.heartbeat_seconds = pacing.heartbeat_seconds
        executor, max_in_flight = pacing.executor, pacing.max_in_flight
        self.owned = executor is None
        self.executor = executor if executor is not None else _default_executor()
        self.is_process_pool = isinstance(self.executor, cf.ProcessPoolExecutor)
        workers = getattr(self.executor, "_max_workers", None)
        if max_in_flight is None:
            base = workers if isinstance(workers, int) and workers > 0 else (os.cpu_count() or 1)
            # With a timeout an item's clock starts at submission, so queue no further.
            max_in_flight = base if spec.timeout else 2 * base
        self.max_in_flight = max(1, max_in_flight)
        self.reports_running = isinstance(
            self.executor, cf.ThreadPoolExecutor | cf.ProcessPoolExecutor
        )
        self.marker_dir = (
            tempfile.mkdtemp(prefix="quantrack-batch-") if self.is_process_pool else None
        )
        self.processes: dict[int, Any] = {}
        self.queue: deque[_Flight] = deque()
        self.in_flight: dict[cf.Future[_Outcome], _Flight] = {}
        self.rows: list[_Row] = []
        self.abandoned = False
        self.kills = 0  # workers the runner killed itself: breaks it need not explain
        self.last_flush = time.monotonic()
        self.last_beat = time.monotonic()

    # -- scheduling ----------------------------------------------------------------

    def run(self, tasks: Iterable[tuple[int, int, str | None]], ready: Iterable[_Row]) -> Batch:
        """Run ``tasks`` (index, attempt, retry_of) after recording ``ready`` rows."""
        self.rows.extend(ready)
        self.queue.extend(_Flight(i, a, r, 0.0) for i, a, r in tasks)
        try:
            self._loop()
            self._flush()
            final = finish_batch(self.batch)
        except KeyboardInterrupt:
            self._stop("interrupted (KeyboardInterrupt)")
            raise
        except BaseException as exc:
            _log.error("batch.aborted", batch_id=self.batch.id, error=describe_exception(exc))
            self._stop(f"the batch runner stopped: {describe_exception(exc)}")
            raise
        else:
            self.observer.on_batch_finished(final)
            self.batch = final
            return final
        finally:
            self._shutdown()

    def _loop(self) -> None:
        while self.queue or self.in_flight:
            self._submit_ready()
            done, _ = cf.wait(
                list(self.in_flight),
                timeout=self._tick(),
                return_when=cf.FIRST_COMPLETED,
            )
            broken: list[_Flight] = []
            for future in done:
                flight = self.in_flight.pop(future)
                self._collect(future, flight, broken)
            if broken:
                self._recover(broken)
            self._enforce_timeouts()
            self._housekeeping()

    def _submit_ready(self) -> None:
        while self.queue and len(self.in_flight) < self.max_in_flight:
            flight = self.queue.popleft()
            task = _Task(
                flight.index,
                flight.attempt,
                self.call_params[flight.index],
                self.spec.timeout,
                self.marker_dir,
            )
            try:
                future = self.executor.submit(_execute, self.fn, self.metrics_of, task)
            except BrokenProcessPool:
                self.queue.appendleft(flight)
                self._recover([])
                continue
            flight.submitted = time.monotonic()
            self.in_flight[future] = flight
            if self.is_process_pool:
                self.processes.update(getattr(self.executor, "_processes", None) or {})

    def _tick(self) -> float:
        now = time.monotonic()
        due = min(
            self.last_flush + self.flush_seconds,
            self.last_beat + self.heartbeat_seconds,
        )
        if self.spec.timeout is not None and self.in_flight:
            due = min(due, now + 0.1)
        return max(0.0, min(due - now, 1.0))

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if len(self.rows) >= self.flush_every or now - self.last_flush >= self.flush_seconds:
            self._flush()
        if now - self.last_beat >= self.heartbeat_seconds:
            self._heartbeat()

    def _heartbeat(self) -> None:
        self.last_beat = time.monotonic()
        self.batch = self.batch.model_copy(update={"heartbeat_at": utcnow()})
        # A repeated start of a running batch is a resumption: it stamps the heartbeat.
        self.observer.on_batch_started(self.batch)

    # -- results ---------------------------------------------------------------------

    def _collect(self, future: cf.Future[_Outcome], flight: _Flight, broken: list[_Flight]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            self._accept(flight, future.result())
        elif isinstance(exc, BrokenProcessPool):
            broken.append(flight)
        else:
            # The executor itself failed the item (unpicklable result, a Dask worker lost
            # too often, ...): it never produced an outcome of its own.
            now = utcnow()
            self._accept(
                flight,
                _Outcome(
                    flight.index,
                    flight.attempt,
                    ExperimentStatus.FAILED,
                    now,
                    now,
                    error=describe_exception(exc),
                    category=categorize_error(exc),
                    trace="".join(traceback.format_exception(exc)),
                ),
            )

    def _accept(self, flight: _Flight, outcome: _Outcome) -> None:
        refs = [
            self.artifacts.put(a.data, kind=a.kind, media_type=a.media_type, name=a.name)
            for a in outcome.artifacts
        ]
        if outcome.trace:
            refs.append(
                self.artifacts.put(
                    outcome.trace.encode("utf-8"),
                    kind="diagnostics",
                    media_type="text/plain",
                    name="traceback.txt",
                )
            )
        first = self.spec.first_attempt(flight.index)
        retry = (
            outcome.status is ExperimentStatus.FAILED and flight.attempt - first < self.spec.retries
        )
        started = outcome.started_at
        completed = max(outcome.completed_at, started)
        row = _Row(
            experiment_id=new_id(),
            index=flight.index,
            attempt=flight.attempt,
            retry_of=flight.retry_of,
            reused_from=None,
            status=outcome.status,
            created_at=started,
            started_at=started,
            completed_at=completed,
            metrics=outcome.metrics,
            artifacts=tuple(refs),
            error=outcome.error,
            category=outcome.category,
            final=not retry,
        )
        self.rows.append(row)
        if retry:
            self.queue.append(_Flight(flight.index, flight.attempt + 1, row.experiment_id, 0.0))

    def _fail(self, flight: _Flight, error: str, category: ErrorCategory) -> None:
        now = utcnow()
        self._accept(
            flight,
            _Outcome(
                flight.index,
                flight.attempt,
                ExperimentStatus.FAILED,
                now,
                now,
                error=error,
                category=category,
            ),
        )

    # -- dead workers and timeouts ---------------------------------------------------

    def _recover(self, broken: list[_Flight]) -> None:
        """A worker died: fail the item it was running, run the others again."""
        if not self.is_process_pool:
            raise RuntimeError("a process pool broke but the executor is not one")
        # Every pending future of a broken pool fails at once; gather them all.
        if self.in_flight:
            done, _ = cf.wait(list(self.in_flight), timeout=5.0)
            for future in done:
                flight = self.in_flight.pop(future)
                self._collect(future, flight, broken)
            for future, flight in list(self.in_flight.items()):
                future.cancel()
                broken.append(flight)
                del self.in_flight[future]
        self.processes.update(getattr(self.executor, "_processes", None) or {})
        culprits = 0
        retry: list[_Flight] = []
        for flight in sorted(broken, key=lambda f: f.index):
            exitcode = self._marker_exitcode(flight)
            # SIGTERM and a clean exit are the pool stopping a worker that was still
            # running an item when another one broke the pool: that item is run again.
            if exitcode is not None and exitcode not in (0, -signal.SIGTERM):
                culprits += 1
                message, category = _describe_death(exitcode)
                self._fail(flight, message, category)
            else:
                retry.append(flight)
        explained = culprits > 0 or self.kills > 0
        self.kills = 0
        for flight in retry:
            if not explained:
                flight.breaks += 1
            if flight.breaks >= _MAX_BREAKS:
                self._fail(
                    flight,
                    f"WorkerDied: a worker process died {flight.breaks} times while this item "
                    "was in flight and the death could not be pinned on another item",
                    ErrorCategory.UNKNOWN,
                )
            else:
                self.queue.appendleft(flight)
        _log.warning(
            "batch.worker_died",
            batch_id=self.batch.id,
            failed_items=culprits,
            rescheduled_items=len(retry),
        )
        self._replace_pool()

    def _marker_exitcode(self, flight: _Flight) -> int | None:
        if self.marker_dir is None:
            return None
        path = _marker(self.marker_dir, flight.index, flight.attempt)
        try:
            with open(path, encoding="ascii") as handle:
                pid = int(handle.read().strip() or 0)
            os.unlink(path)
        except (OSError, ValueError):
            return None
        process = self.processes.get(pid)
        if process is None:
            return None
        process.join(timeout=5.0)
        code = process.exitcode
        return code if isinstance(code, int) else None

    def _replace_pool(self) -> None:
        old = self.executor
        assert isinstance(old, cf.ProcessPoolExecutor)
        if self.owned:
            old.shutdown(wait=False, cancel_futures=True)
        self.executor = _rebuilt(old)
        self.owned = True
        self.processes = {}

    def _enforce_timeouts(self) -> None:
        timeout = self.spec.timeout
        if timeout is None or not self.in_flight:
            return
        now = time.monotonic()
        # Process workers stop themselves with SIGALRM; the parent is the backstop for
        # code that never returns to the interpreter, and the only guard elsewhere.
        grace = max(2.0, timeout / 2) if self.is_process_pool else 0.0
        expired = []
        for future, flight in self.in_flight.items():
            if flight.started is None and (not self.reports_running or future.running()):
                flight.started = flight.submitted if not self.reports_running else now
            if flight.started is not None and now - flight.started > timeout + grace:
                expired.append(future)
        for future in expired:
            flight = self.in_flight.pop(future)
            self._stop_running(future, flight)
            self._fail(
                flight,
                f"ItemTimedOut: the item ran longer than its timeout of {timeout:g} s and was "
                "stopped by the batch runner",
                ErrorCategory.TIMEOUT,
            )

    def _stop_running(self, future: cf.Future[_Outcome], flight: _Flight) -> None:
        if future.cancel():
            return
        if self.marker_dir is not None:
            path = _marker(self.marker_dir, flight.index, flight.attempt)
            try:
                with open(path, encoding="ascii") as handle:
                    pid = int(handle.read().strip() or 0)
                os.unlink(path)
            except (OSError, ValueError):
                pid = 0
            if pid > 0:
                # The pool breaks; _recover runs the other in-flight items again.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    self.kills += 1
                return
        # A thread cannot be stopped: its result is ignored when it arrives.
        self.abandoned = True

    # -- writing ---------------------------------------------------------------------

    def _flush(self) -> None:
        self.last_flush = time.monotonic()
        if not self.rows:
            return
        rows, self.rows = self.rows, []
        groups: dict[tuple[int, str | None, str | None], list[_Row]] = {}
        for row in rows:
            if row.write:
                groups.setdefault((row.attempt, row.retry_of, row.reused_from), []).append(row)
        # One session for the runs and the item events: an observer storing into the same
        # workspace shares the unit of work, so a flush costs one commit, not one per item.
        with self.tracker.session():
            for (attempt, retry_of, reused_from), group in groups.items():
                self.tracker.record_finished(self._records(group, attempt, retry_of, reused_from))
            for row in rows:
                if row.final:
                    item = row.item(self.spec.items[row.index])
                    self.batch = record_item(self.batch, item)
                    self.observer.on_item_finished(self.batch, item)

    def _records(
        self, group: list[_Row], attempt: int, retry_of: str | None, reused_from: str | None
    ) -> FinishedExperiments:
        template = self.template.model_copy(
            update={"attempt": attempt, "retry_of": retry_of, "reused_from": reused_from}
        )
        names = sorted({name for row in group for name in row.metrics})
        return FinishedExperiments(
            template=template,
            ids=tuple(row.experiment_id for row in group),
            params=tuple(self.spec.items[row.index] for row in group),
            metrics={n: tuple(row.metrics.get(n) for row in group) for n in names},
            status=tuple(row.status for row in group),
            created_at=tuple(row.created_at for row in group),
            started_at=tuple(row.started_at for row in group),
            completed_at=tuple(row.completed_at for row in group),
            errors=tuple(row.error for row in group),
            error_categories=tuple(row.category for row in group),
            row_artifacts=tuple(row.artifacts for row in group),
            batch_indexes=tuple(row.index for row in group),
            config_hashes=tuple(self.hashes[row.index] for row in group),
        )

    # -- stopping --------------------------------------------------------------------

    def _stop(self, reason: str) -> None:
        """Record what finished, cancel the rest, and end the batch cancelled."""
        for future in list(self.in_flight):
            future.cancel()
        now = utcnow()
        for future, flight in list(self.in_flight.items()):
            if future.done() and not future.cancelled() and future.exception() is None:
                self._accept(flight, future.result())
            else:
                self.rows.append(
                    _Row(
                        experiment_id=new_id(),
                        index=flight.index,
                        attempt=flight.attempt,
                        retry_of=flight.retry_of,
                        reused_from=None,
                        status=ExperimentStatus.CANCELLED,
                        created_at=now,
                        started_at=None,
                        completed_at=now,
                        metrics={},
                        artifacts=(),
                        error=reason,
                        category=None,
                        final=True,
                    )
                )
        self.in_flight.clear()
        self.queue.clear()
        try:
            self._flush()
        except Exception as exc:  # storage failing too must not hide the first error
            _log.error("batch.flush_failed", batch_id=self.batch.id, error=describe_exception(exc))
        try:
            final = finish_batch(self.batch, interrupted=True)
            self.observer.on_batch_finished(final)
            self.batch = final
        except Exception as exc:
            _log.error("batch.finish_failed", batch_id=self.batch.id, error=describe_exception(exc))

    def _shutdown(self) -> None:
        if self.owned:
            # Waiting on an abandoned (timed-out) thread or an interrupted pool would hang.
            self.executor.shutdown(
                wait=not self.abandoned and self.batch.status is not BatchStatus.CANCELLED,
                cancel_futures=True,
            )
        if self.marker_dir is not None:
            shutil.rmtree(self.marker_dir, ignore_errors=True)


# -- preparing a batch -----------------------------------------------------------------


def _check_settings(retries: int, timeout: float | None) -> None:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"retries must be a whole number of extra attempts >= 0; got {retries!r}")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ValueError(
            f"timeout must be a positive number of seconds per item, or None; got {timeout!r}"
        )


def _check_function(fn: object, label: str, executor: cf.Executor | None) -> None:
    if not callable(fn):
        raise TypeError(f"{label} must be callable; got {fn!r}")
    if executor is None or isinstance(executor, cf.ProcessPoolExecutor):
        try:
            pickle.dumps(fn)
        except Exception as exc:
            raise TypeError(
                f"{label} {_qualified_name(fn)} cannot be sent to a worker process "
                f"({describe_exception(exc)}); define it at the top level of an importable "
                "module, or pass executor=ThreadPoolExecutor() to run items in threads"
            ) from exc


def _check_functions(fn: object, metrics_of: object | None, executor: cf.Executor | None) -> None:
    _check_function(fn, "fn", executor)
    if metrics_of is not None:
        _check_function(metrics_of, "metrics_of", executor)


def _started(observer: BatchObserver, batch: Batch) -> Batch:
    """``batch`` moved to running with its first heartbeat, and the observers told."""
    batch = start_batch(batch)
    batch = batch.model_copy(update={"heartbeat_at": batch.started_at})
    observer.on_batch_started(batch)
    return batch


def _prepare_items(
    items: Iterable[Mapping[str, Any]],
) -> tuple[list[Mapping[str, Any]], list[dict[str, JsonValue]]]:
    if isinstance(items, Mapping | str | bytes):
        raise TypeError(
            "items must be an iterable of mappings (one dict of keyword arguments per item), "
            f"not a single {type(items).__name__}"
        )
    originals: list[Mapping[str, Any]] = []
    canonical: list[dict[str, JsonValue]] = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise TypeError(
                f"item {index} is a {type(item).__name__}; each item must be a mapping of "
                "keyword arguments for the batch function, e.g. {'fast': 10, 'slow': 50}"
            )
        try:
            canonical.append(canonical_params(item))
        except InvalidParams as exc:
            raise InvalidParams(f"item {index}: {exc}") from exc
        originals.append(item)
    return originals, canonical


def _input_key(inputs: Iterable[ArtifactRef] | Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    ids = []
    for ref in inputs:
        value = ref.id if isinstance(ref, ArtifactRef) else ref.get("id")
        ids.append(str(value))
    return tuple(sorted(ids))


def _reuse_index(
    tracker: ExperimentTracker, template: ExperimentDefinition
) -> dict[tuple[str, str | None, tuple[str, ...]], Experiment]:
    """Completed experiments of the same strategy and engine, by their reuse key."""
    found = tracker.list_experiments(
        ExperimentFilter(
            status=frozenset({ExperimentStatus.COMPLETED}),
            strategy=template.strategy,
            engine=template.engine,
        )
    )
    index: dict[tuple[str, str | None, tuple[str, ...]], Experiment] = {}
    # Newest first, so the oldest matching run is assigned last and wins.
    for experiment in sorted(found, key=lambda e: (e.created_at, e.id), reverse=True):
        definition = experiment.definition
        key = (
            definition.config_hash,
            definition.provenance.code_hash,
            _input_key(definition.inputs),
        )
        index[key] = experiment
    return index


def _reused_rows(
    tracker: ExperimentTracker,
    template: ExperimentDefinition,
    hashes: Sequence[str],
    indexes: Iterable[int],
) -> tuple[list[_Row], set[int]]:
    matches = _reuse_index(tracker, template)
    if not matches:
        return [], set()
    code = template.provenance.code_hash
    inputs = _input_key(template.inputs)
    now = utcnow()
    rows: list[_Row] = []
    for index in indexes:
        earlier = matches.get((hashes[index], code, inputs))
        if earlier is None:
            continue
        rows.append(
            _Row(
                experiment_id=new_id(),
                index=index,
                attempt=1,
                retry_of=None,
                reused_from=earlier.definition.reused_from or earlier.id,
                status=ExperimentStatus.COMPLETED,
                created_at=now,
                started_at=now,
                completed_at=now,
                metrics=dict(earlier.metrics),
                artifacts=earlier.artifacts,
                error=None,
                category=None,
                final=True,
            )
        )
    return rows, {row.index for row in rows}


def _template(
    name: str,
    spec: _Spec,
    batch_id: str,
    provenance: Provenance,
    tags: Iterable[str],
) -> ExperimentDefinition:
    return ExperimentDefinition(
        name=name,
        strategy=spec.strategy,
        engine=spec.engine,
        inputs=tuple(ArtifactRef.model_validate(ref) for ref in spec.inputs),
        provenance=provenance,
        tags=tuple(tags),
        description=spec.description,
        batch_id=batch_id,
    )


def _provenance(fn: Callable[..., object], provenance: Provenance | None) -> Provenance:
    module = getattr(fn, "__module__", None)
    given = provenance or collect_provenance(modules=[module] if isinstance(module, str) else [])
    if given.code_hash is None:
        # Without a code hash, skip_completed would reuse results of code since edited.
        return given.model_copy(update={"code_hash": _code_hash(fn)})
    return given


def run_batch(
    tracker: ExperimentTracker,
    artifacts: ArtifactStore,
    observer: BatchObserver,
    fn: Callable[..., object],
    items: Iterable[Mapping[str, Any]],
    *,
    name: str,
    executor: cf.Executor | None = None,
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
    max_in_flight: int | None = None,
    flush_every: int = 500,
    flush_seconds: float = 1.0,
    heartbeat_seconds: float = 30.0,
) -> Batch:
    """Run ``fn(**item)`` for every item as one batch and return the finished batch.

    ``fn`` returns a mapping of metric names to numbers, ``None``, or an
    :class:`ItemOutput`; when it returns anything else (a portfolio, a strategy),
    ``metrics_of`` (run in the worker) turns that into one. Each item becomes an
    experiment named ``name`` in the batch (``strategy`` defaults to ``fn``'s qualified
    name). ``executor`` is any :class:`concurrent.futures.Executor` (the caller keeps
    ownership: it is not shut down); ``None`` runs a process pool sized to the machine.
    A failed item is run again up to ``retries`` times; ``timeout`` bounds each item in
    seconds. ``provenance.code_hash`` defaults to a hash of ``fn``'s source.

    Raises TypeError or :class:`InvalidParams` (before anything is recorded) for items
    that are not mappings of canonical parameters or a function a process pool cannot
    receive, ValueError for bad settings, and re-raises ``KeyboardInterrupt`` after
    ending the batch ``cancelled``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string naming the batch; got {name!r}")
    _check_settings(retries, timeout)
    pacing = _Pacing(executor, max_in_flight, flush_every, flush_seconds, heartbeat_seconds)
    _check_functions(fn, metrics_of, executor)
    originals, canonical = _prepare_items(items)
    input_refs = tuple(inputs)
    spec = _Spec(
        function=_qualified_name(fn),
        metrics_of=_qualified_name(metrics_of) if metrics_of is not None else None,
        items=canonical,
        retries=retries,
        timeout=float(timeout) if timeout is not None else None,
        strategy=strategy if strategy is not None else _qualified_name(fn),
        engine=engine,
        description=description,
        inputs=[ref.model_dump(mode="json") for ref in input_refs],
    )
    tags = tuple(tags)
    batch = Batch(name=name, total=len(canonical), params=spec.store(artifacts), tags=tags)
    template = _template(name, spec, batch.id, _provenance(fn, provenance), tags)
    hashes = [config_hash(item) for item in canonical]
    reused: list[_Row] = []
    skip: set[int] = set()
    if skip_completed:
        reused, skip = _reused_rows(tracker, template, hashes, range(len(canonical)))
    batch = _started(observer, batch)
    runner = _Runner(
        tracker=tracker,
        artifacts=artifacts,
        observer=observer,
        fn=fn,
        metrics_of=metrics_of,
        batch=batch,
        template=template,
        spec=spec,
        call_params=originals,
        hashes=hashes,
        pacing=pacing,
    )
    tasks = [(i, 1, None) for i in range(len(canonical)) if i not in skip]
    return runner.run(tasks, reused)


def resume_batch(
    tracker: ExperimentTracker,
    artifacts: ArtifactStore,
    observer: BatchObserver,
    history: BatchHistory,
    batch_id: str,
    fn: Callable[..., object],
    *,
    metrics_of: Callable[[Any], object] | None = None,
    executor: cf.Executor | None = None,
    skip_completed: bool = True,
    provenance: Provenance | None = None,
    max_in_flight: int | None = None,
    flush_every: int = 500,
    flush_seconds: float = 1.0,
    heartbeat_seconds: float = 30.0,
) -> Batch:
    """Finish a batch whose process died: run only its items with no recorded result.

    ``fn`` (and ``metrics_of``, if the batch had one) must be the functions the batch was
    started with; items receive their stored, canonical params. An item whose experiment
    was written but never reported to the observer is reported, not run again; an item
    whose last attempt failed with retries left runs its next attempt. Raises
    :class:`BatchNotFound`, :class:`LifecycleError` for a batch that has ended (use
    :func:`retry_failed`) or was not started by :func:`run_batch`, and ValueError when
    ``fn`` is not the batch's function.
    """
    pacing = _Pacing(executor, max_in_flight, flush_every, flush_seconds, heartbeat_seconds)
    stored = history.get_batch(batch_id)
    if stored.is_terminal:
        raise LifecycleError(
            f"batch {batch_id} has already ended ({stored.status.value}); there is nothing "
            "to resume. Rerun its failed items with retry_failed(), or run the items again "
            "with skip_completed=True"
        )
    spec = _Spec.from_batch(stored, artifacts)
    _check_function(fn, "fn", executor)
    if _qualified_name(fn) != spec.function:
        raise ValueError(
            f"batch {batch_id} runs {spec.function}, not {_qualified_name(fn)}; pass the "
            "function the batch was started with"
        )
    if (metrics_of is None) != (spec.metrics_of is None):
        raise ValueError(
            f"batch {batch_id} was started with metrics_of={spec.metrics_of}; pass the same"
        )
    if metrics_of is not None:
        _check_function(metrics_of, "metrics_of", executor)
    template = _template(stored.name, spec, stored.id, _provenance(fn, provenance), stored.tags)
    hashes = [config_hash(item) for item in spec.items]
    recorded = {item.index for item in history.batch_items(batch_id)}
    latest: dict[int, Experiment] = {}
    for experiment in tracker.list_experiments(ExperimentFilter(batch_id=batch_id)):
        index = experiment.definition.batch_index
        if index is None or index in recorded or not experiment.is_terminal:
            continue
        if index not in latest or experiment.definition.attempt > latest[index].definition.attempt:
            latest[index] = experiment
    ready: list[_Row] = []
    tasks: list[tuple[int, int, str | None]] = []
    for index in range(len(spec.items)):
        if index in recorded:
            continue
        last = latest.get(index)
        if last is None:
            tasks.append((index, spec.first_attempt(index), spec.first_retry_of(index)))
            continue
        attempt = last.definition.attempt
        if (
            last.status is ExperimentStatus.FAILED
            and attempt - spec.first_attempt(index) < spec.retries
        ):
            tasks.append((index, attempt + 1, last.id))
            continue
        ready.append(_reported_row(last, index))
    if skip_completed:
        fresh = [i for i, attempt, _ in tasks if attempt == 1]
        reused, skip = _reused_rows(tracker, template, hashes, fresh)
        ready.extend(reused)
        tasks = [task for task in tasks if task[0] not in skip]
    batch = stored.model_copy(update={"heartbeat_at": utcnow()})
    observer.on_batch_started(batch)
    _log.info("batch.resumed", batch_id=batch_id, remaining=len(tasks), already_recorded=len(ready))
    runner = _Runner(
        tracker=tracker,
        artifacts=artifacts,
        observer=observer,
        fn=fn,
        metrics_of=metrics_of,
        batch=batch,
        template=template,
        spec=spec,
        call_params=spec.items,
        hashes=hashes,
        pacing=pacing,
    )
    return runner.run(tasks, ready)


def _reported_row(experiment: Experiment, index: int) -> _Row:
    """A row for an experiment already stored: reported to the observer, not written."""
    definition = experiment.definition
    return _Row(
        experiment_id=experiment.id,
        index=index,
        attempt=definition.attempt,
        retry_of=definition.retry_of,
        reused_from=definition.reused_from,
        status=experiment.status,
        created_at=experiment.created_at,
        started_at=experiment.started_at,
        completed_at=experiment.completed_at or experiment.created_at,
        metrics=dict(experiment.metrics),
        artifacts=experiment.artifacts,
        error=experiment.error,
        category=experiment.error_category,
        final=True,
        write=False,
    )


def retry_failed(
    tracker: ExperimentTracker,
    artifacts: ArtifactStore,
    observer: BatchObserver,
    history: BatchHistory,
    batch_id: str,
    fn: Callable[..., object],
    *,
    max_retries: int = 1,
    metrics_of: Callable[[Any], object] | None = None,
    executor: cf.Executor | None = None,
    timeout: float | None = None,
    provenance: Provenance | None = None,
    max_in_flight: int | None = None,
    flush_every: int = 500,
    flush_seconds: float = 1.0,
    heartbeat_seconds: float = 30.0,
) -> Batch:
    """Rerun the failed items of an ended batch as a new batch, and return the new batch.

    Terminal states are final, so the retries form a new batch named ``"<name> (retry)"``
    whose ``params["retry_of_batch"]`` is ``batch_id``; each of its experiments points at
    the failed one (``retry_of``) with ``attempt`` one higher. Each failed item is run up
    to ``max_retries`` times, stopping at its first success. ``timeout`` defaults to the
    original batch's. When nothing failed, the original batch is returned unchanged.

    Raises :class:`BatchNotFound`, :class:`LifecycleError` for a batch still running
    (resume it, or :func:`reap` it, first), ValueError for ``max_retries < 1``.
    """
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 1:
        raise ValueError(f"max_retries must be a whole number >= 1; got {max_retries!r}")
    original = history.get_batch(batch_id)
    if not original.is_terminal:
        raise LifecycleError(
            f"batch {batch_id} is still {original.status.value}; resume it with "
            "resume_batch() (or reap() it if its process is gone) before retrying its items"
        )
    spec = _Spec.from_batch(original, artifacts)
    failed = [
        item for item in history.batch_items(batch_id) if item.status is ExperimentStatus.FAILED
    ]
    if not failed:
        _log.info("batch.nothing_to_retry", batch_id=batch_id)
        return original
    items = [
        spec.items[item.index] if item.index < len(spec.items) else item.params for item in failed
    ]
    retry_spec = _Spec(
        function=_qualified_name(fn),
        metrics_of=_qualified_name(metrics_of) if metrics_of is not None else None,
        items=[dict(item) for item in items],
        retries=max_retries - 1,
        timeout=float(timeout) if timeout is not None else spec.timeout,
        strategy=spec.strategy,
        engine=spec.engine,
        description=spec.description,
        inputs=spec.inputs,
        first_attempts=[item.attempt + 1 for item in failed],
        retry_of=[item.experiment_id or "" for item in failed],
        retry_of_batch=batch_id,
    )
    _check_settings(0, retry_spec.timeout)
    pacing = _Pacing(executor, max_in_flight, flush_every, flush_seconds, heartbeat_seconds)
    _check_functions(fn, metrics_of, executor)
    batch = Batch(
        name=f"{original.name} (retry)",
        total=len(items),
        params=retry_spec.store(artifacts),
        tags=original.tags,
    )
    template = _template(
        original.name, retry_spec, batch.id, _provenance(fn, provenance), original.tags
    )
    batch = _started(observer, batch)
    runner = _Runner(
        tracker=tracker,
        artifacts=artifacts,
        observer=observer,
        fn=fn,
        metrics_of=metrics_of,
        batch=batch,
        template=template,
        spec=retry_spec,
        call_params=retry_spec.items,
        hashes=[config_hash(item) for item in retry_spec.items],
        pacing=pacing,
    )
    tasks = [
        (j, retry_spec.first_attempt(j), retry_spec.first_retry_of(j) or None)
        for j in range(len(items))
    ]
    return runner.run(tasks, [])


# -- queries ---------------------------------------------------------------------------


def list_batches(
    history: BatchHistory,
    *,
    status: BatchStatus | str | None = None,
    since: dt.datetime | None = None,
    limit: int | None = None,
) -> list[Batch]:
    """Batches newest first: those in ``status``, created at or after ``since``, at most
    ``limit``. Raises ValueError for an unknown status or a limit below 1.
    """
    wanted = BatchStatus(status) if status is not None else None
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a whole number >= 1, or None; got {limit!r}")
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)  # naive means UTC, as everywhere in quantrack
    try:
        return history.list_batches(status=wanted, since=since, limit=limit)
    except TypeError:
        # A BatchHistory written before `since` joined the port: filter here instead.
        found = [
            b for b in history.list_batches(status=wanted) if since is None or b.created_at >= since
        ]
        return found[:limit] if limit is not None else found


def get_failed_items(history: BatchHistory, batch_id: str) -> list[BatchItemResult]:
    """The batch's failed items (their last attempt), by index; raises :class:`BatchNotFound`."""
    return [
        item for item in history.batch_items(batch_id) if item.status is ExperimentStatus.FAILED
    ]


@dataclass(frozen=True)
class BatchStatistics:
    """Totals across batches: how many ran, how their items ended, and how fast."""

    batches: int
    by_status: dict[BatchStatus, int]
    items: int
    succeeded: int
    failed: int
    cancelled: int
    reused: int
    error_summary: dict[ErrorCategory, int]
    duration_seconds: float
    throughput: float | None

    @property
    def success_rate(self) -> float | None:
        """Succeeded items over finished ones; ``None`` before any item finished."""
        finished = self.succeeded + self.failed + self.cancelled
        return self.succeeded / finished if finished else None


def batch_statistics(history: BatchHistory, since: dt.datetime | None = None) -> BatchStatistics:
    """Totals over the batches created at or after ``since`` (all when ``None``).

    ``throughput`` is finished items per second over the summed durations of the ended
    batches.
    """
    batches = list_batches(history, since=since)
    by_status: dict[BatchStatus, int] = {}
    errors: dict[ErrorCategory, int] = {}
    duration = 0.0
    ended_items = 0
    for batch in batches:
        by_status[batch.status] = by_status.get(batch.status, 0) + 1
        for category, count in batch.error_summary.items():
            errors[category] = errors.get(category, 0) + count
        if batch.duration_seconds is not None:
            duration += batch.duration_seconds
            ended_items += batch.finished
    return BatchStatistics(
        batches=len(batches),
        by_status=by_status,
        items=sum(b.total for b in batches),
        succeeded=sum(b.succeeded for b in batches),
        failed=sum(b.failed for b in batches),
        cancelled=sum(b.cancelled for b in batches),
        reused=sum(b.reused for b in batches),
        error_summary=errors,
        duration_seconds=duration,
        throughput=ended_items / duration if duration > 0 else None,
    )


# -- heartbeats ------------------------------------------------------------------------


@dataclass(frozen=True)
class StaleReport:
    """Running batches and experiments whose process stopped sending heartbeats."""

    batches: list[Batch]
    experiments: list[Experiment]

    def __bool__(self) -> bool:
        return bool(self.batches or self.experiments)


def _cutoff(older_than: dt.timedelta | float, now: dt.datetime | None) -> dt.datetime:
    if isinstance(older_than, bool) or not isinstance(older_than, dt.timedelta | int | float):
        raise TypeError(f"older_than must be a timedelta or seconds; got {older_than!r}")
    age = older_than if isinstance(older_than, dt.timedelta) else dt.timedelta(seconds=older_than)
    if age <= dt.timedelta(0):
        raise ValueError(f"older_than must be positive; got {older_than!r}")
    return (now or utcnow()) - age


def stale(
    tracker: ExperimentTracker,
    history: BatchHistory,
    older_than: dt.timedelta | float,
    *,
    now: dt.datetime | None = None,
) -> StaleReport:
    """Running batches and experiments last heard from before ``now - older_than``.

    The last sign of life is the heartbeat, else the start. Raises ValueError or
    TypeError for an ``older_than`` that is not a positive duration.
    """
    cutoff = _cutoff(older_than, now)
    batches = [
        b
        for b in history.list_batches(status=BatchStatus.RUNNING)
        if (b.heartbeat_at or b.started_at or b.created_at) < cutoff
    ]
    experiments = [
        e
        for e in tracker.list_experiments(
            ExperimentFilter(status=frozenset({ExperimentStatus.RUNNING}))
        )
        if (e.heartbeat_at or e.started_at or e.created_at) < cutoff
    ]
    return StaleReport(batches=batches, experiments=experiments)


def reap(
    tracker: ExperimentTracker,
    artifacts: ArtifactStore,
    observer: BatchObserver,
    history: BatchHistory,
    older_than: dt.timedelta | float,
    *,
    now: dt.datetime | None = None,
) -> StaleReport:
    """Fail what :func:`stale` finds, with category ``unknown`` and "process vanished".

    A stale experiment is failed. A stale batch gets its unfinished items recorded as
    failed experiments (items written before the process died are reported as they
    were) and then ends with its derived status. Returns what was reaped; something
    finished concurrently by its own process is left alone.
    """
    report = stale(tracker, history, older_than, now=now)
    reaped_experiments: list[Experiment] = []
    for experiment in report.experiments:
        last = experiment.heartbeat_at or experiment.started_at or experiment.created_at
        try:
            reaped_experiments.append(
                tracker.update_status(
                    experiment.id,
                    ExperimentStatus.FAILED,
                    error=f"{VANISHED}: no heartbeat since {last.isoformat()}",
                    error_category=ErrorCategory.UNKNOWN,
                )
            )
        except InvalidTransition:
            continue
    reaped_batches = [
        _reap_batch(tracker, artifacts, observer, history, batch) for batch in report.batches
    ]
    return StaleReport(batches=reaped_batches, experiments=reaped_experiments)


def _reap_batch(
    tracker: ExperimentTracker,
    artifacts: ArtifactStore,
    observer: BatchObserver,
    history: BatchHistory,
    batch: Batch,
) -> Batch:
    try:
        spec = _Spec.from_batch(batch, artifacts)
    except LifecycleError:
        items: list[dict[str, JsonValue]] = []
        template = ExperimentDefinition(name=batch.name, batch_id=batch.id, tags=batch.tags)
    else:
        items = spec.items
        template = _template(batch.name, spec, batch.id, Provenance(), batch.tags)
    recorded = {item.index for item in history.batch_items(batch.id)}
    written: dict[int, Experiment] = {}
    for experiment in tracker.list_experiments(ExperimentFilter(batch_id=batch.id)):
        index = experiment.definition.batch_index
        if index is None or index in recorded or not experiment.is_terminal:
            continue
        if (
            index not in written
            or experiment.definition.attempt > written[index].definition.attempt
        ):
            written[index] = experiment
    last = batch.heartbeat_at or batch.started_at or batch.created_at
    now = utcnow()
    error = f"{VANISHED}: the batch's process sent no heartbeat since {last.isoformat()}"
    rows: list[_Row] = []
    for index in range(batch.total):
        if index in recorded:
            continue
        if index in written:
            rows.append(_reported_row(written[index], index))
            continue
        rows.append(
            _Row(
                experiment_id=new_id(),
                index=index,
                attempt=1,
                retry_of=None,
                reused_from=None,
                status=ExperimentStatus.FAILED,
                created_at=now,
                started_at=now,
                completed_at=now,
                metrics={},
                artifacts=(),
                error=error,
                category=ErrorCategory.UNKNOWN,
                final=True,
            )
        )
    to_write = [row for row in rows if row.write]
    if to_write:
        with tracker.session():
            tracker.record_finished(
                FinishedExperiments(
                    template=template,
                    ids=tuple(row.experiment_id for row in to_write),
                    params=tuple(
                        items[row.index] if row.index < len(items) else {} for row in to_write
                    ),
                    status=tuple(row.status for row in to_write),
                    created_at=tuple(row.created_at for row in to_write),
                    started_at=tuple(row.started_at for row in to_write),
                    completed_at=tuple(row.completed_at for row in to_write),
                    errors=tuple(row.error for row in to_write),
                    error_categories=tuple(row.category for row in to_write),
                    batch_indexes=tuple(row.index for row in to_write),
                )
            )
    current = batch
    for row in rows:
        item = row.item(items[row.index] if row.index < len(items) else {})
        current = record_item(current, item)
        observer.on_item_finished(current, item)
    final = finish_batch(current)
    observer.on_batch_finished(final)
    _log.warning("batch.reaped", batch_id=batch.id, status=final.status.value, reason=VANISHED)
    return final
