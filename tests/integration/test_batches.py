"""Batches on real process pools: dead workers, timeouts, Ctrl-C, and a real workspace."""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from tests.integration import batch_jobs as jobs

from quantrack.adapters.memory import (
    InMemoryArtifactStore,
    InMemoryBatchObserver,
    InMemoryExperimentTracker,
)
from quantrack.domain import (
    BatchStatus,
    ErrorCategory,
    ExperimentFilter,
    ExperimentStatus,
)
from quantrack.workspace import Workspace, open_workspace


@pytest.fixture
def workspace() -> Workspace:
    """A workspace on in-memory adapters."""
    return Workspace(
        tracker=InMemoryExperimentTracker(),
        artifacts=InMemoryArtifactStore(),
        observer=InMemoryBatchObserver(),
    )


@pytest.fixture
def pool() -> Iterator[ProcessPoolExecutor]:
    """Two forkserver worker processes (fork after threads is unsafe)."""
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as executor:
        yield executor


def test_a_process_pool_runs_and_records_every_item(
    workspace: Workspace, pool: ProcessPoolExecutor
) -> None:
    """Items run in worker processes; the parent records all of them."""
    batch = workspace.run_batch(
        jobs.square, [{"x": i} for i in range(10)], name="procs", executor=pool
    )
    assert (batch.status, batch.succeeded) == (BatchStatus.COMPLETED, 10)
    runs = workspace.tracker.list_experiments(ExperimentFilter(batch_id=batch.id))
    assert sorted(r.metrics["value"] for r in runs) == [float(i * i) for i in range(10)]


def test_a_worker_killed_by_sigkill_fails_only_its_item_as_memory_error(
    workspace: Workspace, pool: ProcessPoolExecutor
) -> None:
    """SIGKILL (what the OOM killer sends) fails that item; the pool is rebuilt for the rest."""
    batch = workspace.run_batch(
        jobs.die, [{"x": i, "victim": 3} for i in range(8)], name="oom", executor=pool
    )
    assert batch.status is BatchStatus.PARTIAL
    assert (batch.succeeded, batch.failed) == (7, 1)
    assert batch.error_summary == {ErrorCategory.MEMORY_ERROR: 1}
    (failed,) = workspace.get_failed_items(batch.id)
    assert failed.index == 3
    assert "killed by SIGKILL" in (failed.error or "")
    runs = workspace.tracker.list_experiments(ExperimentFilter(batch_id=batch.id))
    assert sorted(r.definition.batch_index for r in runs) == list(range(8))


def test_a_worker_that_exits_or_crashes_fails_its_item_as_unknown(
    workspace: Workspace, pool: ProcessPoolExecutor
) -> None:
    """A worker leaving with an exit code or dying from SIGSEGV is named in the error."""
    batch = workspace.run_batch(
        jobs.hard_exit, [{"x": i, "victim": 1} for i in range(4)], name="exit", executor=pool
    )
    (failed,) = workspace.get_failed_items(batch.id)
    assert failed.error_category is ErrorCategory.UNKNOWN
    assert "exited with code 3" in (failed.error or "")
    batch = workspace.run_batch(
        jobs.die,
        [{"x": i, "victim": 2, "sig": int(signal.SIGSEGV)} for i in range(4)],
        name="segv",
    )
    (failed,) = workspace.get_failed_items(batch.id)
    assert "died from SIGSEGV" in (failed.error or "")
    assert batch.succeeded == 3


def test_an_item_over_its_timeout_in_a_process_is_stopped_and_failed_as_timeout(
    workspace: Workspace, pool: ProcessPoolExecutor
) -> None:
    """The worker stops the item at its timeout and goes on with the next one."""
    batch = workspace.run_batch(
        jobs.busy_wait,
        [{"x": i, "seconds": 30} for i in range(4)],
        name="slow",
        executor=pool,
        timeout=0.5,
    )
    assert (batch.succeeded, batch.failed) == (3, 1)
    (failed,) = workspace.get_failed_items(batch.id)
    assert failed.error_category is ErrorCategory.TIMEOUT
    assert "timeout of 0.5 s" in (failed.error or "")
    run = workspace.tracker.get_experiment(failed.experiment_id or "")
    (trace,) = [a for a in run.artifacts if a.kind == "diagnostics"]
    assert b"ItemTimedOut" in workspace.artifacts.get(trace.id)


def test_ctrl_c_during_a_process_batch_cancels_it_without_hanging(
    workspace: Workspace, pool: ProcessPoolExecutor
) -> None:
    """Ctrl-C ends the batch cancelled with its finished items recorded once each."""
    ctrl_c = jobs.CtrlCAfterFirstItem()
    try:
        with pytest.raises(KeyboardInterrupt):
            workspace.run_batch(
                jobs.sleepy_all,
                [{"x": i, "seconds": 0.2} for i in range(60)],
                name="interrupted",
                executor=pool,
                observer=ctrl_c,
            )
    finally:
        ctrl_c.cancel()
    (batch,) = workspace.observer.list_batches()
    assert batch.status is BatchStatus.CANCELLED
    assert 0 < batch.succeeded < 60
    runs = workspace.tracker.list_experiments(ExperimentFilter(batch_id=batch.id))
    assert len(runs) == batch.finished
    assert {r.status for r in runs} <= {ExperimentStatus.COMPLETED, ExperimentStatus.CANCELLED}


def test_a_real_workspace_records_a_batch_on_the_default_pool(tmp_path: Path) -> None:
    """open_workspace + run_batch with no executor: DuckDB, files and a process pool."""
    workspace = open_workspace(tmp_path / "ws")
    batch = workspace.run_batch(
        jobs.fail_odd, [{"x": i} for i in range(6)], name="real", progress=False
    )
    assert batch.status is BatchStatus.PARTIAL
    reopened = open_workspace(tmp_path / "ws")
    stored = reopened.observer.get_batch(batch.id)
    assert (stored.succeeded, stored.failed) == (3, 3)
    assert stored.error_summary == {ErrorCategory.PARAMETER_ERROR: 3}
    assert [i.index for i in reopened.get_failed_items(batch.id)] == [1, 3, 5]
    stats = reopened.batch_statistics()
    assert (stats.batches, stats.failed) == (1, 3)
    runs = reopened.tracker.list_experiments(ExperimentFilter(batch_id=batch.id))
    failed = next(r for r in runs if r.status is ExperimentStatus.FAILED)
    (trace,) = [a for a in failed.artifacts if a.kind == "diagnostics"]
    assert b"window must be positive" in reopened.artifacts.get(trace.id)
    again = reopened.run_batch(
        jobs.fail_odd, [{"x": i} for i in range(6)], name="real", progress=False
    )
    assert again.reused == 3


def test_an_item_deaf_to_its_alarm_is_killed_by_the_parent(
    workspace: Workspace, pool: ProcessPoolExecutor
) -> None:
    """Code that never returns to Python is stopped by the parent; the rest still run."""
    batch = workspace.run_batch(
        jobs.deaf,
        [{"x": i, "seconds": 60} for i in range(4)],
        name="deaf",
        executor=pool,
        timeout=0.3,
    )
    assert (batch.succeeded, batch.failed) == (3, 1)
    (failed,) = workspace.get_failed_items(batch.id)
    assert failed.index == 0
    assert failed.error_category is ErrorCategory.TIMEOUT
    assert "stopped by the batch runner" in (failed.error or "")
    runs = workspace.tracker.list_experiments(ExperimentFilter(batch_id=batch.id))
    assert sorted(r.definition.batch_index for r in runs) == [0, 1, 2, 3]
