"""Batches on a Dask distributed cluster: how a sweep outgrows one machine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration import batch_jobs as jobs

from quantrack.adapters.executors import dask_executor, is_dask_client, resolve_executor
from quantrack.adapters.memory import (
    InMemoryArtifactStore,
    InMemoryBatchObserver,
    InMemoryExperimentTracker,
)
from quantrack.domain import BatchStatus, ErrorCategory, ExperimentFilter
from quantrack.workspace import Workspace

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """Two single-threaded worker processes on this machine."""
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=50,
    )
    with distributed.Client(cluster) as connected:
        yield connected
    cluster.close()


@pytest.fixture
def workspace() -> Workspace:
    """A workspace on in-memory adapters."""
    return Workspace(
        tracker=InMemoryExperimentTracker(),
        artifacts=InMemoryArtifactStore(),
        observer=InMemoryBatchObserver(),
    )


@pytest.mark.slow
def test_a_dask_client_runs_a_batch_recorded_by_the_parent(
    client: Any, workspace: Workspace
) -> None:
    """Passing the client itself runs items on the cluster; failures keep their category."""
    assert is_dask_client(client)
    batch = workspace.run_batch(
        jobs.fail_odd, [{"x": i} for i in range(8)], name="dask", executor=client
    )
    assert (batch.status, batch.succeeded, batch.failed) == (BatchStatus.PARTIAL, 4, 4)
    assert batch.error_summary == {ErrorCategory.PARAMETER_ERROR: 4}
    runs = workspace.tracker.list_experiments(ExperimentFilter(batch_id=batch.id))
    assert sorted(r.definition.batch_index for r in runs) == list(range(8))


@pytest.mark.slow
def test_a_dask_executor_and_its_timeout(client: Any, workspace: Workspace) -> None:
    """``client.get_executor()`` works as any executor; the parent enforces the timeout."""
    batch = workspace.run_batch(
        jobs.sleepy,
        [{"x": i, "seconds": 3} for i in range(4)],
        name="dask-timeout",
        executor=client.get_executor(),
        timeout=0.5,
    )
    assert (batch.succeeded, batch.failed) == (3, 1)
    assert batch.error_summary == {ErrorCategory.TIMEOUT: 1}


@pytest.mark.slow
def test_the_current_client_is_found(client: Any) -> None:
    """``dask_executor()`` without a client uses the one running in this process."""
    executor = dask_executor()
    assert executor.submit(jobs.square, 3).result(timeout=30) == {"value": 9.0}


def test_anything_else_is_refused_as_an_executor() -> None:
    """A wrong executor names what is accepted."""
    with pytest.raises(TypeError, match=r"concurrent\.futures\.Executor"):
        resolve_executor("dask")
