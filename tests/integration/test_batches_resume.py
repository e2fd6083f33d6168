"""A batch whose parent process is SIGKILLed mid-way is resumed from the workspace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.integration import batch_jobs as jobs

from quantrack.domain import BatchStatus, ExperimentFilter
from quantrack.workspace import open_workspace

pytest.importorskip("quantrack.adapters.duckdb")

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 16

CHILD = """
import sys
from quantrack import open_workspace
from tests.integration import batch_jobs as jobs

workspace = open_workspace(sys.argv[1])
workspace.run_batch(
    jobs.counted,
    [{"x": i, "calls": sys.argv[2], "delay": 0.3} for i in range(int(sys.argv[3]))],
    name="doomed",
    progress=False,
)
"""


@pytest.mark.slow
def test_a_batch_killed_with_its_parent_resumes_with_every_item_once(tmp_path: Path) -> None:
    """SIGKILL the parent (and its pool) mid-batch; resume records each item exactly once."""
    home, calls = tmp_path / "ws", tmp_path / "calls"
    calls.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home), str(calls), str(TOTAL)],
        cwd=ROOT,
        env=env,
        start_new_session=True,  # so the kill reaches the worker processes too
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        batch_id = _wait_for_progress(home, child, at_least=4)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    workspace = open_workspace(home)
    interrupted = workspace.observer.get_batch(batch_id)
    assert interrupted.status is BatchStatus.RUNNING
    assert interrupted.finished < TOTAL
    recorded_before = {i.index for i in workspace.observer.batch_items(batch_id)}

    with ThreadPoolExecutor(max_workers=4) as executor:
        done = workspace.resume_batch(batch_id, jobs.counted, executor=executor, progress=False)

    assert done.id == batch_id
    assert (done.status, done.succeeded, done.total) == (BatchStatus.COMPLETED, TOTAL, TOTAL)
    runs = workspace.tracker.list_experiments(ExperimentFilter(batch_id=batch_id))
    assert sorted(r.definition.batch_index for r in runs) == list(range(TOTAL))
    items = workspace.observer.batch_items(batch_id)
    assert sorted(i.index for i in items) == list(range(TOTAL))
    ran = Counter(int(path.name.split("-")[0]) for path in calls.iterdir())
    assert all(ran[index] == 1 for index in recorded_before)
    assert set(ran) == set(range(TOTAL))


def _wait_for_progress(home: Path, child: subprocess.Popen[bytes], at_least: int) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if child.poll() is not None:
            stderr = child.stderr.read().decode() if child.stderr else ""
            pytest.fail(f"the batch process ended early ({child.returncode}): {stderr}")
        if (home / "runs.duckdb").exists():
            batches = open_workspace(home).observer.list_batches()
            if batches and batches[0].finished >= at_least:
                return batches[0].id
        time.sleep(0.1)
    pytest.fail("the batch process made no progress in 120 s")
