"""The "never break the backtest" machinery: guarded ports, the spool file, its replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from quantrack.adapters.filesystem.spool import (
    SPOOL_DIR,
    SpoolRecord,
    read_spool_record,
    replay_spool,
    write_spool_record,
)
from quantrack.adapters.memory import (
    InMemoryArtifactStore,
    InMemoryBatchObserver,
    InMemoryExperimentTracker,
)
from quantrack.domain import (
    Batch,
    BatchItemResult,
    BatchStatus,
    ErrorCategory,
    ExperimentDefinition,
    ExperimentStatus,
    FinishedExperiments,
    WorkspaceBusy,
    utcnow,
)
from quantrack.domain.lifecycle import finish_batch, record_item, start_batch
from quantrack.engines._safety import RecordingGuard
from quantrack.services.recording import track


class DiskFullTracker(InMemoryExperimentTracker):
    """A real in-memory tracker whose writes fail from a chosen method on, like a full disk."""

    def __init__(self, fail_from: str) -> None:
        super().__init__()
        self.fail_from = fail_from
        self.failing = False

    def _maybe_fail(self, method: str) -> None:
        if method == self.fail_from:
            self.failing = True
        if self.failing:
            raise OSError(28, "No space left on device")

    def create_experiment(self, definition, *, experiment_id=None):  # type: ignore[no-untyped-def]
        self._maybe_fail("create_experiment")
        return super().create_experiment(definition, experiment_id=experiment_id)

    def update_status(self, experiment_id, status, **kwargs):  # type: ignore[no-untyped-def]
        self._maybe_fail("update_status")
        return super().update_status(experiment_id, status, **kwargs)

    def store_results(self, experiment_id, results):  # type: ignore[no-untyped-def]
        self._maybe_fail("store_results")
        return super().store_results(experiment_id, results)

    def record_finished(self, records):  # type: ignore[no-untyped-def]
        self._maybe_fail("record_finished")
        return super().record_finished(records)


class FullStore(InMemoryArtifactStore):
    """An artifact store that cannot take any more bytes."""

    def put(self, data, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")


class BusyTracker(InMemoryExperimentTracker):
    """A tracker whose bulk path reports a busy workspace."""

    def record_finished(self, records):  # type: ignore[no-untyped-def]
        raise WorkspaceBusy("runs.duckdb", 0.1, "pid 1234")


def _definition(name: str = "run") -> ExperimentDefinition:
    return ExperimentDefinition(name=name, strategy="tests.Strategy", params={"fast": 10})


def _spooled_run(tmp_path: Path, tracker: InMemoryExperimentTracker) -> RecordingGuard:
    """Record one run through a guard over ``tracker`` and a full artifact store."""
    guard = RecordingGuard(
        tracker,
        FullStore(),
        InMemoryBatchObserver(),
        spool_dir=tmp_path / SPOOL_DIR,
        engine="test",
        label="run",
    )
    with guard, track(guard.tracker, guard.artifacts, _definition()) as run:
        run.log_metric("sharpe", 1.5)
        run.log_artifact(b"equity bytes", kind="equity_curve", name="equity.parquet")
    return guard


def test_failed_recording_is_spooled_with_one_warning(tmp_path: Path) -> None:
    """A tracker failing mid-run leaves one warning and a spool file holding the whole run."""
    with capture_logs() as logs:
        guard = _spooled_run(tmp_path, DiskFullTracker("create_experiment"))
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["recording.failed"]
    assert warnings[0]["spooled"] is True
    assert "No space left on device" in warnings[0]["error"]
    assert guard.spool_file is not None
    assert guard.spool_file.parent == tmp_path / SPOOL_DIR
    record = read_spool_record(guard.spool_file)
    (experiment,) = record.experiments
    assert experiment.status is ExperimentStatus.COMPLETED
    assert experiment.metrics == {"sharpe": 1.5}
    assert len(record.blobs) == 1
    blob = tmp_path / SPOOL_DIR / f"{record.id}.blobs" / record.blobs[0]
    assert blob.read_bytes() == b"equity bytes"


def test_replay_restores_everything_then_deletes_the_spool(tmp_path: Path) -> None:
    """Replaying writes the run and its artifact bytes into the workspace and empties the spool."""
    guard = _spooled_run(tmp_path, DiskFullTracker("create_experiment"))
    experiment_id = guard.record().experiments[0].id
    tracker, store = InMemoryExperimentTracker(), InMemoryArtifactStore()
    report = replay_spool(tmp_path / SPOOL_DIR, tracker, store, InMemoryBatchObserver())
    assert report.experiments == 1
    stored = tracker.get_experiment(experiment_id)
    assert stored.status is ExperimentStatus.COMPLETED
    assert stored.metrics == {"sharpe": 1.5}
    (ref,) = stored.artifacts
    assert store.get(ref.id, verify=True) == b"equity bytes"
    assert ref.kind == "equity_curve"
    assert list((tmp_path / SPOOL_DIR).iterdir()) == []


def test_replaying_twice_never_duplicates(tmp_path: Path) -> None:
    """The same record replayed a second time is recognised and skipped."""
    guard = _spooled_run(tmp_path, DiskFullTracker("create_experiment"))
    record = guard.record()
    tracker, store, observer = (
        InMemoryExperimentTracker(),
        InMemoryArtifactStore(),
        InMemoryBatchObserver(),
    )
    replay_spool(tmp_path / SPOOL_DIR, tracker, store, observer)
    write_spool_record(tmp_path / SPOOL_DIR, record, guard.artifacts.kept)
    again = replay_spool(tmp_path / SPOOL_DIR, tracker, store, observer)
    assert again.experiments == 0
    assert again.skipped == 1
    assert len(tracker) == 1


def test_half_written_run_is_replaced_by_the_complete_record(tmp_path: Path) -> None:
    """A run the workspace saw only as running is completed by the replay, not duplicated."""
    tracker = DiskFullTracker("store_results")
    guard = _spooled_run(tmp_path, tracker)
    experiment_id = guard.record().experiments[0].id
    assert tracker.get_experiment(experiment_id).status is ExperimentStatus.RUNNING
    tracker.failing = False
    tracker.fail_from = ""
    replay_spool(tmp_path / SPOOL_DIR, tracker, InMemoryArtifactStore(), InMemoryBatchObserver())
    assert len(tracker) == 1
    stored = tracker.get_experiment(experiment_id)
    assert stored.status is ExperimentStatus.COMPLETED
    assert stored.metrics == {"sharpe": 1.5}


def test_corrupt_spool_file_is_moved_aside_with_a_warning(tmp_path: Path) -> None:
    """A damaged spool file never breaks the replay: it goes to spool/corrupt/ and is logged."""
    folder = tmp_path / SPOOL_DIR
    folder.mkdir()
    (folder / "broken.json").write_text('{"format": "quantrack-spool/1", "experiments": [')
    with capture_logs() as logs:
        report = replay_spool(
            folder, InMemoryExperimentTracker(), InMemoryArtifactStore(), InMemoryBatchObserver()
        )
    assert report.corrupt == [folder / "corrupt" / "broken.json"]
    assert (folder / "corrupt" / "broken.json").exists()
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "spool.corrupt_file_moved_aside"
    ]


def test_damaged_blob_makes_the_record_corrupt(tmp_path: Path) -> None:
    """A spooled blob whose bytes no longer match their hash is not written into the store."""
    guard = _spooled_run(tmp_path, DiskFullTracker("create_experiment"))
    record = guard.record()
    blob = tmp_path / SPOOL_DIR / f"{record.id}.blobs" / record.blobs[0]
    blob.write_bytes(b"tampered")
    store = InMemoryArtifactStore()
    report = replay_spool(
        tmp_path / SPOOL_DIR, InMemoryExperimentTracker(), store, InMemoryBatchObserver()
    )
    assert len(report.corrupt) == 1
    assert list(store.ids()) == []


def test_busy_workspace_defers_the_record_to_the_next_open(tmp_path: Path) -> None:
    """A record the workspace cannot take now stays in the spool, with a warning."""
    _spooled_run(tmp_path, DiskFullTracker("create_experiment"))
    with capture_logs() as logs:
        report = replay_spool(
            tmp_path / SPOOL_DIR, BusyTracker(), InMemoryArtifactStore(), InMemoryBatchObserver()
        )
    assert len(report.deferred) == 1
    assert len(list((tmp_path / SPOOL_DIR).glob("*.json"))) == 1
    assert "spool.replay_deferred" in [e["event"] for e in logs]
    tracker = InMemoryExperimentTracker()
    replay_spool(tmp_path / SPOOL_DIR, tracker, InMemoryArtifactStore(), InMemoryBatchObserver())
    assert len(tracker) == 1


def test_missing_spool_folder_is_an_empty_spool(tmp_path: Path) -> None:
    """Replaying a workspace that never spooled does nothing."""
    report = replay_spool(
        tmp_path / "nope",
        InMemoryExperimentTracker(),
        InMemoryArtifactStore(),
        InMemoryBatchObserver(),
    )
    assert report.replayed == []
    assert report.corrupt == []


def _sweep_through(guard: RecordingGuard) -> tuple[Batch, list[str]]:
    """Record a three-item batch (one failed item) through the guard's ports."""
    batch = start_batch(Batch(name="sweep", total=3))
    guard.observer.on_batch_started(batch)
    now = utcnow()
    ids = [f"run-{i}" for i in range(3)]
    statuses = (ExperimentStatus.COMPLETED, ExperimentStatus.FAILED, ExperimentStatus.COMPLETED)
    records = FinishedExperiments(
        template=_definition("sweep").model_copy(update={"batch_id": batch.id}),
        ids=tuple(ids),
        params=tuple({"fast": f} for f in (5, 10, 15)),
        metrics={"sharpe": (0.5, None, 1.25)},
        status=statuses,
        created_at=(now,) * 3,
        started_at=(now,) * 3,
        completed_at=(now,) * 3,
        errors=(None, "ValueError: bad window", None),
        error_categories=(None, ErrorCategory.PARAMETER_ERROR, None),
        batch_indexes=(0, 1, 2),
    )
    guard.tracker.record_finished(records)
    for index, status in enumerate(statuses):
        failed = status is ExperimentStatus.FAILED
        item = BatchItemResult(
            index=index,
            experiment_id=ids[index],
            status=status,
            error="ValueError: bad window" if failed else None,
            error_category=ErrorCategory.PARAMETER_ERROR if failed else None,
        )
        batch = record_item(batch, item)
        guard.observer.on_item_finished(batch, item)
    batch = finish_batch(batch)
    guard.observer.on_batch_finished(batch)
    return batch, ids


def test_spooled_sweep_replays_experiments_batch_and_items(tmp_path: Path) -> None:
    """A sweep whose bulk write failed comes back whole: rows, batch status and every item."""
    guard = RecordingGuard(
        DiskFullTracker("record_finished"),
        InMemoryArtifactStore(),
        InMemoryBatchObserver(),
        spool_dir=tmp_path / SPOOL_DIR,
        engine="test",
    )
    with guard:
        batch, ids = _sweep_through(guard)
    assert guard.spool_file is not None
    tracker, observer = InMemoryExperimentTracker(), InMemoryBatchObserver()
    replay_spool(tmp_path / SPOOL_DIR, tracker, InMemoryArtifactStore(), observer)
    assert sorted(e.id for e in tracker.list_experiments()) == ids
    assert tracker.get_experiment("run-1").error_category is ErrorCategory.PARAMETER_ERROR
    stored = observer.get_batch(batch.id)
    assert stored.status is BatchStatus.PARTIAL
    assert [i.index for i in observer.batch_items(batch.id)] == [0, 1, 2]


class FlakyObserver(InMemoryBatchObserver):
    """Records the batch start and the first two items, then its storage fails until fixed."""

    broken = True

    def on_item_finished(self, batch, item):  # type: ignore[no-untyped-def]
        if self.broken and item.index >= 2:
            raise OSError(28, "No space left on device")
        super().on_item_finished(batch, item)


def test_batch_replay_resumes_and_skips_items_already_recorded(tmp_path: Path) -> None:
    """The replay sends only the items the observer missed, then ends the batch."""
    observer = FlakyObserver()
    guard = RecordingGuard(
        InMemoryExperimentTracker(),
        InMemoryArtifactStore(),
        observer,
        spool_dir=tmp_path / SPOOL_DIR,
        engine="test",
    )
    with guard:
        batch, _ids = _sweep_through(guard)
    assert observer.get_batch(batch.id).status is BatchStatus.RUNNING
    assert len(observer.batch_items(batch.id)) == 2
    observer.broken = False
    replay_spool(
        tmp_path / SPOOL_DIR, InMemoryExperimentTracker(), InMemoryArtifactStore(), observer
    )
    assert [i.index for i in observer.batch_items(batch.id)] == [0, 1, 2]
    assert observer.get_batch(batch.id).status is BatchStatus.PARTIAL


def test_guard_without_spool_folder_keeps_the_record_and_warns(tmp_path: Path) -> None:
    """An in-memory workspace cannot spool; the warning says the record was not kept."""
    guard = RecordingGuard(
        DiskFullTracker("create_experiment"),
        InMemoryArtifactStore(),
        InMemoryBatchObserver(),
        spool_dir=None,
        engine="test",
    )
    with capture_logs() as logs, guard, track(guard.tracker, guard.artifacts, _definition()):
        pass
    assert guard.spool_file is None
    assert [e["spooled"] for e in logs if e["event"] == "recording.failed"] == [False]
    assert guard.record().experiments[0].status is ExperimentStatus.COMPLETED


def test_unfinished_run_is_spooled_as_cancelled(tmp_path: Path) -> None:
    """A run the engine never finished is spooled cancelled, since only final runs replay."""
    guard = RecordingGuard(
        DiskFullTracker("create_experiment"),
        InMemoryArtifactStore(),
        InMemoryBatchObserver(),
        spool_dir=tmp_path / SPOOL_DIR,
        engine="test",
    )
    with guard:
        experiment = guard.tracker.create_experiment(_definition())
        guard.tracker.update_status(experiment.id, ExperimentStatus.RUNNING)
    (spooled,) = read_spool_record(guard.spool_file or Path()).experiments
    assert spooled.status is ExperimentStatus.CANCELLED
    assert spooled.error == "recording stopped before the run finished"


def test_guard_does_not_swallow_the_engines_own_error(tmp_path: Path) -> None:
    """Only quantrack's failures are absorbed; the body's own exception propagates unchanged."""
    guard = RecordingGuard(
        InMemoryExperimentTracker(),
        InMemoryArtifactStore(),
        InMemoryBatchObserver(),
        spool_dir=tmp_path / SPOOL_DIR,
        engine="test",
    )
    error = ZeroDivisionError("strategy bug")
    with pytest.raises(ZeroDivisionError) as caught, guard:
        raise error
    assert caught.value is error
    assert not guard.failed
    assert not (tmp_path / SPOOL_DIR).exists()


def test_spool_record_is_plain_json(tmp_path: Path) -> None:
    """The spool file is versioned JSON a person can read."""
    guard = _spooled_run(tmp_path, DiskFullTracker("create_experiment"))
    document = json.loads((guard.spool_file or Path()).read_text())
    assert document["format"] == "quantrack-spool/1"
    assert document["engine"] == "test"
    assert SpoolRecord.model_validate(document).experiment_ids == [document["experiments"][0]["id"]]


def test_asking_for_the_record_mid_run_changes_nothing(tmp_path: Path) -> None:
    """guard.record() shows an unfinished run as cancelled but the run can still complete."""
    guard = RecordingGuard(
        InMemoryExperimentTracker(),
        InMemoryArtifactStore(),
        InMemoryBatchObserver(),
        spool_dir=tmp_path / SPOOL_DIR,
        engine="test",
    )
    with guard:
        experiment = guard.tracker.create_experiment(_definition())
        guard.tracker.update_status(experiment.id, ExperimentStatus.RUNNING)
        assert guard.record().experiments[0].status is ExperimentStatus.CANCELLED
        done = guard.tracker.update_status(experiment.id, ExperimentStatus.COMPLETED)
    assert done.status is ExperimentStatus.COMPLETED
    assert guard.record().experiments[0].status is ExperimentStatus.COMPLETED


def test_failing_database_does_not_keep_artifacts_out_of_a_working_store(
    tmp_path: Path,
) -> None:
    """Ports detach separately: with the database down, artifacts still reach the store."""
    store = InMemoryArtifactStore()
    guard = RecordingGuard(
        DiskFullTracker("create_experiment"),
        store,
        InMemoryBatchObserver(),
        spool_dir=tmp_path / SPOOL_DIR,
        engine="test",
    )
    with guard, track(guard.tracker, guard.artifacts, _definition()) as run:
        ref = run.log_artifact(b"equity bytes", kind="equity_curve")
    assert guard.detached("database")
    assert not guard.detached("artifacts")
    assert store.get(ref.id) == b"equity bytes"
    record = read_spool_record(guard.spool_file or Path())
    assert record.blobs == ()
    assert record.experiments[0].artifacts == (ref,)
