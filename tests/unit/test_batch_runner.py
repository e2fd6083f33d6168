"""The batch runner on threads, against every tracker and persisting observer adapter."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from quantrack.adapters.memory import InMemoryArtifactStore
from quantrack.adapters.observers import CompositeBatchObserver
from quantrack.domain import (
    Batch,
    BatchItemResult,
    BatchNotFound,
    BatchStatus,
    ErrorCategory,
    Experiment,
    ExperimentDefinition,
    ExperimentFilter,
    ExperimentStatus,
    InvalidParams,
    LifecycleError,
    Provenance,
)
from quantrack.domain.lifecycle import start_batch
from quantrack.ports import ExperimentTracker
from quantrack.services.batches import (
    ItemArtifact,
    ItemOutput,
    batch_statistics,
    get_failed_items,
    list_batches,
    reap,
    resume_batch,
    retry_failed,
    run_batch,
    stale,
)
from quantrack.workspace import PersistingObserver
from tests.adapters import OBSERVERS, TRACKERS
from tests.integration import batch_jobs as jobs


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    """Two worker threads, shut down after the test."""
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


@pytest.fixture(params=sorted(TRACKERS))
def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[ExperimentTracker, PersistingObserver]:
    """A tracker and a persisting observer of the same kind, sharing one folder."""
    return TRACKERS[request.param](tmp_path), OBSERVERS[request.param](tmp_path)


@pytest.fixture
def tracker(backend: tuple[ExperimentTracker, PersistingObserver]) -> ExperimentTracker:
    """The backend's tracker (overrides the cross-product fixture of conftest)."""
    return backend[0]


@pytest.fixture
def observer(backend: tuple[ExperimentTracker, PersistingObserver]) -> PersistingObserver:
    """The backend's persisting observer."""
    return backend[1]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An empty folder of its own (file-backed adapters share ``tmp_path``)."""
    path = tmp_path / "calls"
    path.mkdir()
    return path


@pytest.fixture
def artifacts() -> InMemoryArtifactStore:
    """A fresh in-memory artifact store."""
    return InMemoryArtifactStore()


def _runs(tracker: ExperimentTracker, batch: Batch) -> list[Experiment]:
    found = tracker.list_experiments(ExperimentFilter(batch_id=batch.id))
    return sorted(found, key=lambda e: (e.definition.batch_index or 0, e.definition.attempt))


def _sweep(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    fn: Any,
    items: list[dict[str, Any]],
    pool: ThreadPoolExecutor,
    **options: Any,
) -> Batch:
    return run_batch(
        tracker, artifacts, observer, fn, items, name="sweep", executor=pool, **options
    )


def test_every_item_becomes_an_experiment_linked_to_the_batch(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
) -> None:
    """Each item is recorded with its params, metrics, timing and batch index."""
    batch = _sweep(tracker, artifacts, observer, jobs.square, [{"x": i} for i in range(5)], pool)
    assert batch.status is BatchStatus.COMPLETED
    assert (batch.total, batch.succeeded, batch.failed) == (5, 5, 0)
    runs = _runs(tracker, batch)
    assert [r.definition.batch_index for r in runs] == [0, 1, 2, 3, 4]
    assert [r.params for r in runs] == [{"x": i} for i in range(5)]
    assert [r.metrics for r in runs] == [{"value": float(i * i)} for i in range(5)]
    assert all(r.status is ExperimentStatus.COMPLETED for r in runs)
    assert all(r.duration_seconds is not None and r.duration_seconds >= 0 for r in runs)
    assert {r.name for r in runs} == {"sweep"}
    assert {r.definition.strategy for r in runs} == {"tests.integration.batch_jobs:square"}
    assert all(r.definition.provenance.code_hash for r in runs)
    stored = observer.get_batch(batch.id)
    assert stored.status is BatchStatus.COMPLETED
    items = observer.batch_items(batch.id)
    assert [(i.index, i.experiment_id) for i in items] == [
        (r.definition.batch_index, r.id) for r in runs
    ]
    # The item list is kept as a JSON artifact, so the batch's own params stay small.
    spec = json.loads(artifacts.get(stored.params["spec"]))
    assert spec["items"] == [{"x": i} for i in range(5)]
    assert stored.params["function"] == "tests.integration.batch_jobs:square"


def test_failed_items_keep_message_category_and_traceback(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
) -> None:
    """A raising item fails alone, with its error, ErrorCategory and a traceback artifact."""
    batch = _sweep(tracker, artifacts, observer, jobs.fail_odd, [{"x": i} for i in range(4)], pool)
    assert batch.status is BatchStatus.PARTIAL
    assert batch.error_summary == {ErrorCategory.PARAMETER_ERROR: 2}
    failed = [r for r in _runs(tracker, batch) if r.status is ExperimentStatus.FAILED]
    assert [r.params["x"] for r in failed] == [1, 3]
    for run in failed:
        assert run.error == f"ValueError: window must be positive, got {run.params['x']}"
        assert run.error_category is ErrorCategory.PARAMETER_ERROR
        (diagnostics,) = [a for a in run.artifacts if a.kind == "diagnostics"]
        trace = artifacts.get(diagnostics.id).decode()
        assert "Traceback" in trace
        assert "fail_odd" in trace
    assert [item.index for item in get_failed_items(observer, batch.id)] == [1, 3]


def test_a_batch_where_every_item_fails_is_failed(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
) -> None:
    """No item succeeded: the derived status is failed."""
    batch = _sweep(tracker, artifacts, observer, jobs.fail_odd, [{"x": 1}, {"x": 3}], pool)
    assert batch.status is BatchStatus.FAILED
    assert observer.get_batch(batch.id).status is BatchStatus.FAILED


def test_an_empty_batch_completes(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
) -> None:
    """A batch of no items is completed at once."""
    batch = _sweep(tracker, artifacts, observer, jobs.square, [], pool)
    assert (batch.status, batch.total) == (BatchStatus.COMPLETED, 0)


def test_metrics_of_turns_an_engine_result_into_metrics(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
) -> None:
    """A function returning an object is read through ``metrics_of``."""
    batch = _sweep(
        tracker,
        artifacts,
        observer,
        jobs.engine_like,
        [{"x": 5}],
        pool,
        metrics_of=jobs.outcome_metrics,
    )
    assert batch.status is BatchStatus.COMPLETED
    assert _runs(tracker, batch)[0].metrics == {"total_return": 0.05}


def test_a_result_that_is_not_metrics_fails_with_a_clear_message(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
) -> None:
    """An object without ``metrics_of``, or a metric that is not a number, fails the item."""
    batch = _sweep(tracker, artifacts, observer, jobs.engine_like, [{"x": 5}], pool)
    (run,) = _runs(tracker, batch)
    assert run.status is ExperimentStatus.FAILED
    assert "pass metrics_of=" in (run.error or "")
    batch = _sweep(tracker, artifacts, observer, jobs.not_a_number, [{"x": 1}], pool)
    (run,) = _runs(tracker, batch)
    assert "metric 'value' is 'high', which is not a number" in (run.error or "")


def test_item_artifacts_are_stored_and_undefined_metrics_left_out(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
) -> None:
    """ItemOutput artifacts land in the store; a NaN metric is left out."""
    batch = _sweep(tracker, artifacts, observer, jobs.with_artifact, [{"x": 7}], pool)
    (run,) = _runs(tracker, batch)
    assert run.metrics == {"value": 7.0}
    (report,) = run.artifacts
    assert report.kind == "report"
    assert artifacts.get(report.id) == b"report 7"
    assert ItemOutput(artifacts=(ItemArtifact(b"x"),)).artifacts[0].kind == "file"


def test_retries_rerun_a_failed_item_as_a_linked_new_attempt(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
    folder: Path,
) -> None:
    """With retries, the failed attempt stays recorded and the next points back at it."""
    items = [{"x": i, "state": str(folder)} for i in range(2)]
    batch = _sweep(tracker, artifacts, observer, jobs.flaky, items, pool, retries=1)
    assert batch.status is BatchStatus.COMPLETED
    assert batch.succeeded == 2
    runs = _runs(tracker, batch)
    assert [(r.definition.batch_index, r.definition.attempt, r.status.value) for r in runs] == [
        (0, 1, "failed"),
        (0, 2, "completed"),
        (1, 1, "failed"),
        (1, 2, "completed"),
    ]
    assert runs[1].definition.retry_of == runs[0].id
    assert runs[0].error_category is ErrorCategory.DATA_ERROR
    assert [i.attempt for i in observer.batch_items(batch.id)] == [2, 2]


def test_completed_items_are_reused_not_rerun(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
    folder: Path,
) -> None:
    """A second sweep reuses matching completed runs and marks them; new items run."""
    calls = str(folder)
    first = _sweep(
        tracker,
        artifacts,
        observer,
        jobs.counted,
        [{"x": i, "calls": calls} for i in range(3)],
        pool,
    )
    second = _sweep(
        tracker,
        artifacts,
        observer,
        jobs.counted,
        [{"x": i, "calls": calls} for i in range(4)],
        pool,
    )
    assert len(list(folder.iterdir())) == 4  # x=0..2 once each, x=3 once
    assert (second.succeeded, second.reused) == (4, 3)
    originals = {r.params["x"]: r for r in _runs(tracker, first)}
    for run in _runs(tracker, second):
        x = run.params["x"]
        if x == 3:
            assert run.definition.reused_from is None
            continue
        assert run.definition.reused_from == originals[x].id
        assert run.metrics == originals[x].metrics
    assert [i.reused for i in observer.batch_items(second.id)] == [True, True, True, False]
    third = _sweep(tracker, artifacts, observer, jobs.counted, [{"x": 0, "calls": calls}], pool)
    (run,) = _runs(tracker, third)
    assert run.definition.reused_from == originals[0].id  # the original, never a copy


def test_reuse_needs_the_same_code_and_can_be_turned_off(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
    folder: Path,
) -> None:
    """Another code hash, other input data, or ``skip_completed=False`` runs the item again."""
    items = [{"x": 1, "calls": str(folder)}]
    _sweep(tracker, artifacts, observer, jobs.counted, items, pool)
    edited = _sweep(
        tracker,
        artifacts,
        observer,
        jobs.counted,
        items,
        pool,
        provenance=Provenance(code_hash="0" * 64),
    )
    prices = artifacts.put(b"date,close\n2024-01-02,101.5\n", kind="input")
    new_data = _sweep(tracker, artifacts, observer, jobs.counted, items, pool, inputs=[prices])
    same_data = _sweep(tracker, artifacts, observer, jobs.counted, items, pool, inputs=[prices])
    forced = _sweep(tracker, artifacts, observer, jobs.counted, items, pool, skip_completed=False)
    assert (edited.reused, new_data.reused, same_data.reused, forced.reused) == (0, 0, 1, 0)
    assert len(list(folder.iterdir())) == 4


def test_an_item_over_its_timeout_fails_as_timeout(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
) -> None:
    """On threads the runner stops waiting at the timeout and records category timeout."""
    batch = _sweep(
        tracker,
        artifacts,
        observer,
        jobs.sleepy,
        [{"x": i, "seconds": 1} for i in range(3)],
        pool,
        timeout=0.3,
    )
    assert batch.status is BatchStatus.PARTIAL
    assert batch.error_summary == {ErrorCategory.TIMEOUT: 1}
    (failed,) = get_failed_items(observer, batch.id)
    assert failed.index == 0
    assert "timeout of 0.3 s" in (failed.error or "")


def test_a_raising_observer_never_stops_the_batch(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
) -> None:
    """Behind the composite, an observer that raises is detached and the batch completes."""

    class Broken:
        def on_batch_started(self, batch: Batch) -> None:
            raise ConnectionError("dashboard unreachable")

        def on_item_finished(self, batch: Batch, item: BatchItemResult) -> None:
            raise AssertionError("detached observers hear nothing")  # pragma: no cover

        def on_batch_finished(self, batch: Batch) -> None:
            raise AssertionError("detached observers hear nothing")  # pragma: no cover

    composite = CompositeBatchObserver(Broken(), observer)
    batch = _sweep(tracker, artifacts, composite, jobs.square, [{"x": i} for i in range(3)], pool)
    assert batch.status is BatchStatus.COMPLETED
    assert observer.get_batch(batch.id).succeeded == 3
    assert len(composite.detached) == 1


def test_ctrl_c_cancels_the_batch_and_keeps_what_finished(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
) -> None:
    """KeyboardInterrupt stops scheduling, records finished items, ends cancelled, re-raises."""
    ctrl_c = jobs.CtrlCAfterFirstItem()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_batch(
                tracker,
                artifacts,
                CompositeBatchObserver(observer, ctrl_c),
                jobs.sleepy_all,
                [{"x": i, "seconds": 0.15} for i in range(40)],
                name="long",
                executor=pool,
                max_in_flight=2,
            )
    finally:
        ctrl_c.cancel()
    (stored,) = observer.list_batches()
    assert stored.status is BatchStatus.CANCELLED
    assert 0 < stored.succeeded < 40
    runs = tracker.list_experiments(ExperimentFilter(batch_id=stored.id))
    assert len({r.definition.batch_index for r in runs}) == len(runs) == stored.finished
    assert stored.cancelled == sum(r.status is ExperimentStatus.CANCELLED for r in runs)


def test_heartbeats_stamp_the_running_batch(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    pool: ThreadPoolExecutor,
) -> None:
    """The runner re-announces a running batch, which the observer keeps as its heartbeat."""
    beats: list[dt.datetime] = []

    class Listener:
        def on_batch_started(self, batch: Batch) -> None:
            assert batch.heartbeat_at is not None
            beats.append(batch.heartbeat_at)

        def on_item_finished(self, batch: Batch, item: BatchItemResult) -> None:
            pass

        def on_batch_finished(self, batch: Batch) -> None:
            pass

    run_batch(
        tracker,
        artifacts,
        Listener(),
        jobs.sleepy,
        [{"x": 0, "seconds": 0.5}],
        name="beat",
        executor=pool,
        heartbeat_seconds=0.1,
    )
    assert len(beats) >= 3
    assert beats == sorted(beats)


@pytest.mark.parametrize(
    ("items", "options", "error", "match"),
    [
        ([{"x": 1}, 5], {}, TypeError, "item 1 is a int"),
        ({"x": 1}, {}, TypeError, "iterable of mappings"),
        ([{"x": float("nan")}], {}, InvalidParams, "item 0: params.x is nan"),
        ([{"x": 1}], {"retries": -1}, ValueError, "retries must be"),
        ([{"x": 1}], {"timeout": 0}, ValueError, "timeout must be a positive number"),
        ([{"x": 1}], {"flush_every": 0}, ValueError, "flush_every"),
        ([{"x": 1}], {"flush_seconds": 0}, ValueError, "flush_seconds must be a positive"),
        ([{"x": 1}], {"heartbeat_seconds": -1.0}, ValueError, "heartbeat_seconds must be"),
    ],
)
def test_bad_input_is_refused_before_anything_is_recorded(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
    items: Any,
    options: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    """Wrong items or settings raise a clear error and leave no batch behind."""
    with pytest.raises(error, match=match):
        _sweep(tracker, artifacts, observer, jobs.square, items, pool, **options)
    assert observer.list_batches() == []
    assert tracker.list_experiments() == []


def test_a_batch_needs_a_name(
    tracker: ExperimentTracker, artifacts: InMemoryArtifactStore, observer: PersistingObserver
) -> None:
    """An empty name is refused before anything is recorded."""
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        run_batch(tracker, artifacts, observer, jobs.square, [{"x": 1}], name=" ")
    assert observer.list_batches() == []


def test_a_function_a_process_pool_cannot_receive_is_refused(
    tracker: ExperimentTracker, artifacts: InMemoryArtifactStore, observer: PersistingObserver
) -> None:
    """A lambda for the default process pool is refused with what to do instead."""
    with pytest.raises(TypeError, match="define it at the top level"):
        run_batch(tracker, artifacts, observer, lambda x: {}, [{"x": 1}], name="b")
    with pytest.raises(TypeError, match="fn must be callable"):
        run_batch(tracker, artifacts, observer, 3, [{"x": 1}], name="b")  # type: ignore[arg-type]


# -- resume, retry, stale, reap -----------------------------------------------------------


class Crash(BaseException):
    """The parent process dying, as seen from inside it."""


class Mortal:
    """Wraps a tracker and an observer; after ``crash()`` both ignore every write,
    as storage would after the parent process was killed.
    """

    def __init__(self, tracker: ExperimentTracker, observer: PersistingObserver, after: int):
        self.tracker = tracker
        self.observer = observer
        self.after = after
        self.dead = False

    # observer side
    def on_batch_started(self, batch: Batch) -> None:
        if not self.dead:
            self.observer.on_batch_started(batch)

    def on_item_finished(self, batch: Batch, item: BatchItemResult) -> None:
        if self.dead:
            return
        if batch.finished > self.after:
            self.dead = True
            raise Crash
        self.observer.on_item_finished(batch, item)

    def on_batch_finished(self, batch: Batch) -> None:
        if not self.dead:
            self.observer.on_batch_finished(batch)

    # tracker side: only what the runner uses
    def __getattr__(self, name: str) -> Any:
        return getattr(self.tracker, name)

    def record_finished(self, records: Any) -> list[str]:
        return [] if self.dead else self.tracker.record_finished(records)


def _crashed_batch(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    calls: Path,
    total: int = 8,
) -> str:
    mortal = Mortal(tracker, observer, after=3)
    with ThreadPoolExecutor(max_workers=1) as executor, pytest.raises(Crash):
        run_batch(
            mortal,  # type: ignore[arg-type]
            artifacts,
            mortal,
            jobs.counted,
            [{"x": i, "calls": str(calls)} for i in range(total)],
            name="crashy",
            executor=executor,
            flush_every=1,
            max_in_flight=1,
        )
    (batch,) = observer.list_batches(status=BatchStatus.RUNNING)
    return batch.id


def test_resume_runs_only_the_items_left_and_never_twice(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    folder: Path,
) -> None:
    """After the parent died, resume records every item exactly once."""
    batch_id = _crashed_batch(tracker, artifacts, observer, folder)
    before = observer.get_batch(batch_id).finished
    with ThreadPoolExecutor(max_workers=2) as executor:
        done = resume_batch(
            tracker, artifacts, observer, observer, batch_id, jobs.counted, executor=executor
        )
    assert done.id == batch_id
    assert done.status is BatchStatus.COMPLETED
    assert done.succeeded == 8
    runs = tracker.list_experiments(ExperimentFilter(batch_id=batch_id))
    assert sorted(r.definition.batch_index for r in runs) == list(range(8))
    assert sorted(i.index for i in observer.batch_items(batch_id)) == list(range(8))
    assert before == 3
    calls = Counter(int(path.name.split("-")[0]) for path in folder.iterdir())
    # Items recorded before the crash (0-3: item 3 written but never reported) ran once;
    # item 4 may have been running when the parent died, so it may have run twice.
    assert [calls[x] for x in (0, 1, 2, 3, 5, 6, 7)] == [1] * 7
    assert calls[4] in (1, 2)


def test_resume_refuses_an_ended_batch_or_another_function(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
    folder: Path,
) -> None:
    """An ended batch, an unknown one, or a different function is refused clearly."""
    ended = _sweep(tracker, artifacts, observer, jobs.square, [{"x": 1}], pool)
    with pytest.raises(LifecycleError, match="already ended"):
        resume_batch(tracker, artifacts, observer, observer, ended.id, jobs.square)
    with pytest.raises(BatchNotFound):
        resume_batch(tracker, artifacts, observer, observer, "nope", jobs.square)
    running = _crashed_batch(tracker, artifacts, observer, folder)
    with pytest.raises(ValueError, match="pass the function the batch was started with"):
        resume_batch(tracker, artifacts, observer, observer, running, jobs.square)


def test_retry_failed_reruns_failed_items_as_a_linked_batch(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
    folder: Path,
) -> None:
    """Failed items run again in a new batch whose runs point at the failed ones."""
    items = [{"x": i, "state": str(folder)} for i in range(3)]
    original = _sweep(tracker, artifacts, observer, jobs.flaky, items, pool)
    assert original.status is BatchStatus.FAILED
    retried = retry_failed(
        tracker, artifacts, observer, observer, original.id, jobs.flaky, executor=pool
    )
    assert retried.id != original.id
    assert retried.name == "sweep (retry)"
    assert retried.params["retry_of_batch"] == original.id
    assert (retried.status, retried.succeeded) == (BatchStatus.COMPLETED, 3)
    first = {r.params["x"]: r for r in _runs(tracker, original)}
    for run in _runs(tracker, retried):
        assert run.definition.retry_of == first[run.params["x"]].id
        assert run.definition.attempt == 2
    again = retry_failed(tracker, artifacts, observer, observer, retried.id, jobs.flaky)
    assert again.id == retried.id  # nothing failed: nothing to do


def test_retry_failed_refuses_a_running_batch_and_bad_counts(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    folder: Path,
) -> None:
    """A running batch must be resumed or reaped first; max_retries must be >= 1."""
    running = _crashed_batch(tracker, artifacts, observer, folder)
    with pytest.raises(LifecycleError, match="resume it"):
        retry_failed(tracker, artifacts, observer, observer, running, jobs.counted)
    with pytest.raises(ValueError, match="max_retries"):
        retry_failed(tracker, artifacts, observer, observer, running, jobs.counted, max_retries=0)


def test_stale_and_reap_fail_what_stopped_beating(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    folder: Path,
) -> None:
    """A batch and a run with old heartbeats are reported, then failed as process vanished."""
    batch_id = _crashed_batch(tracker, artifacts, observer, folder)
    orphan = tracker.create_experiment(ExperimentDefinition(name="orphan"))
    tracker.update_status(orphan.id, ExperimentStatus.RUNNING)
    assert not stale(tracker, observer, 60)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    report = stale(tracker, observer, dt.timedelta(minutes=1), now=later)
    assert [b.id for b in report.batches] == [batch_id]
    assert [e.id for e in report.experiments] == [orphan.id]
    reaped = reap(tracker, artifacts, observer, observer, 60, now=later)
    (batch,) = reaped.batches
    assert batch.status is BatchStatus.PARTIAL
    assert batch.finished == batch.total == 8
    assert batch.error_summary[ErrorCategory.UNKNOWN] >= 1
    vanished = get_failed_items(observer, batch_id)
    assert all("process vanished" in (i.error or "") for i in vanished)
    failed_orphan = tracker.get_experiment(orphan.id)
    assert failed_orphan.status is ExperimentStatus.FAILED
    assert failed_orphan.error_category is ErrorCategory.UNKNOWN
    assert (failed_orphan.error or "").startswith("process vanished")
    runs = tracker.list_experiments(ExperimentFilter(batch_id=batch_id))
    assert sorted(r.definition.batch_index for r in runs) == list(range(8))
    assert not stale(tracker, observer, 60, now=later)
    with pytest.raises(ValueError, match="positive"):
        stale(tracker, observer, 0)


def test_batch_statistics_sum_over_batches_since_a_moment(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
) -> None:
    """Statistics total the items, errors and statuses of the batches since ``since``."""
    _sweep(tracker, artifacts, observer, jobs.fail_odd, [{"x": i} for i in range(4)], pool)
    middle = dt.datetime.now(dt.UTC)
    _sweep(tracker, artifacts, observer, jobs.square, [{"x": i} for i in range(3)], pool)
    everything = batch_statistics(observer)
    assert (everything.batches, everything.items) == (2, 7)
    assert (everything.succeeded, everything.failed) == (5, 2)
    assert everything.by_status == {BatchStatus.PARTIAL: 1, BatchStatus.COMPLETED: 1}
    assert everything.error_summary == {ErrorCategory.PARAMETER_ERROR: 2}
    assert everything.success_rate == pytest.approx(5 / 7)
    assert everything.throughput is not None
    assert everything.throughput > 0
    recent = batch_statistics(observer, since=middle)
    assert (recent.batches, recent.items, recent.failed) == (1, 3, 0)


def test_a_batch_started_elsewhere_cannot_be_resumed(
    tracker: ExperimentTracker, artifacts: InMemoryArtifactStore, observer: PersistingObserver
) -> None:
    """A running batch without run_batch's item list is refused with the reason."""
    batch = start_batch(Batch(name="manual", total=2))
    observer.on_batch_started(batch)
    with pytest.raises(LifecycleError, match="not started by run_batch"):
        resume_batch(tracker, artifacts, observer, observer, batch.id, jobs.square)


def test_a_batch_whose_item_list_is_gone_cannot_be_resumed(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    folder: Path,
) -> None:
    """Without its stored item list the batch cannot be resumed, and the error says why."""
    batch_id = _crashed_batch(tracker, artifacts, observer, folder)
    artifacts.delete(observer.get_batch(batch_id).params["spec"])
    with pytest.raises(LifecycleError, match="cannot be read from the artifact store"):
        resume_batch(tracker, artifacts, observer, observer, batch_id, jobs.counted)


def test_list_batches_filters_by_status_since_and_limit(
    tracker: ExperimentTracker,
    artifacts: InMemoryArtifactStore,
    observer: PersistingObserver,
    pool: ThreadPoolExecutor,
) -> None:
    """Batches come newest first, filtered by status and creation time, and limited."""
    first = _sweep(tracker, artifacts, observer, jobs.fail_odd, [{"x": 1}], pool)
    middle = dt.datetime.now(dt.UTC)
    second = _sweep(tracker, artifacts, observer, jobs.square, [{"x": 1}], pool)
    third = _sweep(tracker, artifacts, observer, jobs.square, [{"x": 2}], pool)
    assert [b.id for b in list_batches(observer)] == [third.id, second.id, first.id]
    assert [b.id for b in list_batches(observer, status="failed")] == [first.id]
    assert [b.id for b in list_batches(observer, since=middle)] == [third.id, second.id]
    assert [b.id for b in list_batches(observer, limit=1)] == [third.id]
    with pytest.raises(ValueError, match="limit must be"):
        list_batches(observer, limit=0)
    with pytest.raises(ValueError, match="bogus"):
        list_batches(observer, status="bogus")
