"""Recording backtrader runs in the recording process (``background``, the default for a
workspace on disk): the record is the same as in-process recording, this process reads it
at once, other processes after a flush or the exit, and nothing is lost when the recording
process dies.

Everything here is real: a real Cerebro, a real recording process (``python -m
quantrack.engines._background``) writing a real DuckDB file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs
from tests.integration import recording_jobs
from tests.integration.bt_strategies import Explodes, SmaCross, cerebro_with

from quantrack import ExperimentStatus, Workspace, open_workspace
from quantrack.adapters.frames import get_frame
from quantrack.adapters.memory import (
    InMemoryArtifactStore,
    InMemoryBatchObserver,
    InMemoryExperimentTracker,
)
from quantrack.engines import _background
from quantrack.engines.backtrader import BacktraderAdapter

BARS = 400


def in_memory_workspace() -> Workspace:
    return Workspace(
        tracker=InMemoryExperimentTracker(),
        artifacts=InMemoryArtifactStore(),
        observer=InMemoryBatchObserver(),
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return open_workspace(tmp_path / "ws")


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A recording process of the test's own, so killing it harms no other test."""
    monkeypatch.setattr(_background, "_shared", {})
    yield
    process = _background._shared.get(str(os.getpid()))
    if process is not None:
        process.close(timeout=30)


def _record(workspace: Workspace, *, background: bool) -> str:
    BacktraderAdapter(workspace, background=background).run(
        cerebro_with(SmaCross, bars=BARS), name=f"sma-{background}"
    )
    (experiment,) = [
        e for e in workspace.tracker.list_experiments() if e.name == f"sma-{background}"
    ]
    return experiment.id


def test_a_background_run_is_the_same_record_and_readable_at_once(workspace: Workspace) -> None:
    """No flush: this process's read waits for the run; the record equals in-process's."""
    there = workspace.tracker.get_experiment(_record(workspace, background=True))
    here = workspace.tracker.get_experiment(_record(workspace, background=False))
    assert _background.recording_process().broken is None  # really recorded over there
    assert there.status is ExperimentStatus.COMPLETED
    assert there.metrics == here.metrics
    assert there.params == here.params
    assert there.definition.config_hash == here.definition.config_hash
    assert [r.id for r in there.definition.inputs] == [r.id for r in here.definition.inputs]
    assert sorted(r.kind for r in there.artifacts) == sorted(r.kind for r in here.artifacts)
    for ref in there.artifacts:
        workspace.artifacts.verify(ref.id)
    kinds = {r.kind: r for r in there.artifacts}
    assert len(get_frame(workspace.artifacts, kinds["equity_curve"])) == BARS
    assert there.started_at is not None
    assert there.completed_at is not None
    assert there.created_at <= there.started_at <= there.completed_at


def test_another_process_sees_the_run_after_flush(workspace: Workspace) -> None:
    adapter = BacktraderAdapter(workspace)
    adapter.run(cerebro_with(SmaCross, bars=BARS), name="seen-elsewhere")
    assert adapter.flush(timeout=60)
    assert workspace.path is not None
    listing = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from quantrack import open_workspace; "
            "print([(e.name, e.status.value) for e in "
            "open_workspace(sys.argv[1]).tracker.list_experiments()])",
            str(workspace.path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert listing.stdout.strip() == "[('seen-elsewhere', 'completed')]"


def test_another_process_gets_the_file_the_recording_process_keeps(workspace: Workspace) -> None:
    """The recording process keeps the file between runs; a reader waiting for it (with a
    1 s timeout, far below how long the file is kept idle) still gets it, no flush.
    """
    adapter = BacktraderAdapter(workspace)
    adapter.run(cerebro_with(SmaCross, bars=BARS), name="kept")
    assert workspace.path is not None
    reader = (
        "import sys; from quantrack import open_workspace; "
        "ws = open_workspace(sys.argv[1], timeout=1.0); "
        "print(len(ws.tracker.list_experiments()))"
    )
    for ran in (1, 2):  # the second time the recording process surely holds the file idle
        listing = subprocess.run(
            [sys.executable, "-c", reader, str(workspace.path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert listing.returncode == 0, listing.stderr
        assert 0 <= int(listing.stdout) <= ran  # what had been recorded when it read
        adapter.run(cerebro_with(SmaCross, bars=BARS), name="kept")
    assert len(workspace.tracker.list_experiments()) == 3


def test_a_strategy_that_raises_is_failed_by_the_recording_process(workspace: Workspace) -> None:
    for background in (True, False):
        with pytest.raises(ZeroDivisionError):
            BacktraderAdapter(workspace, background=background).run(
                cerebro_with(Explodes, bars=300, at=50), name=f"boom-{background}"
            )
    failed = {e.name: e for e in workspace.tracker.list_experiments()}
    experiment, here = failed["boom-True"], failed["boom-False"]
    assert experiment.status is ExperimentStatus.FAILED
    assert experiment.error == here.error == "ZeroDivisionError: strategy bug after 50 bars"
    assert experiment.error_category is here.error_category
    (trace,) = [r for r in experiment.artifacts if r.kind == "diagnostics"]
    assert b"ZeroDivisionError" in workspace.artifacts.get(trace.id)


def test_the_exit_waits_for_runs_still_being_recorded(tmp_path: Path) -> None:
    """A script that exits right after ``run`` still leaves its run recorded."""
    script = textwrap.dedent(
        """
        import sys
        from tests.integration.bt_strategies import SmaCross, cerebro_with
        from quantrack import open_workspace
        from quantrack.engines.backtrader import BacktraderAdapter

        adapter = BacktraderAdapter(open_workspace(sys.argv[1]))
        for n in range(3):
            adapter.run(cerebro_with(SmaCross, bars=300), name=f"run-{n}")
        """
    )
    folder = tmp_path / "ws"
    subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        check=True,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    experiments = open_workspace(folder).tracker.list_experiments()
    assert sorted(e.name for e in experiments) == ["run-0", "run-1", "run-2"]
    assert {e.status for e in experiments} == {ExperimentStatus.COMPLETED}


@pytest.mark.usefixtures("fresh_process")
def test_a_killed_recording_process_loses_nothing(workspace: Workspace) -> None:
    """Its unanswered runs, and every later one, are recorded in this process instead."""
    adapter = BacktraderAdapter(workspace)
    adapter.run(cerebro_with(SmaCross, bars=BARS), name="before")
    assert adapter.flush(timeout=60)
    process = _background.recording_process()
    child = process._child
    assert child is not None
    with capture_logs() as logs:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        adapter.run(cerebro_with(SmaCross, bars=BARS), name="after")
        assert adapter.flush(timeout=60)
    assert process.broken is not None
    assert "exited" in process.broken
    assert [e["event"] for e in logs if e["event"] == "recording.process_lost"] == [
        "recording.process_lost"
    ]
    experiments = {e.name: e for e in workspace.tracker.list_experiments()}
    assert set(experiments) == {"before", "after"}
    assert experiments["after"].status is ExperimentStatus.COMPLETED
    assert experiments["after"].metrics == experiments["before"].metrics


@pytest.mark.usefixtures("fresh_process")
def test_a_job_sent_short_is_recorded_here_in_full_when_the_recording_process_fails_it(
    workspace: Workspace,
) -> None:
    """The recording process gets ``sent_as``; should it fail the job, this process records
    the job with the full args it kept, and says so.
    """
    process = _background.recording_process()
    marks = workspace.path / "marks.txt"
    with capture_logs() as logs:
        process.submit(
            workspace, recording_jobs.note, str(marks), "full", sent_as=(str(marks), "short")
        )
        process.submit(
            workspace,
            recording_jobs.note_unless_short,
            str(marks),
            "full again",
            sent_as=(str(marks), "short again"),
        )
        assert process.drain(timeout=60)
    child = process._child
    assert child is not None
    assert marks.read_text().splitlines() == [f"{child.pid} short", f"{os.getpid()} full again"]
    (retried,) = [e for e in logs if e["event"] == "recording.retried_here"]
    assert "nothing here to complete 'short again'" in retried["error"]
    assert process.broken is None  # one failed job does not give up the recording process


@pytest.mark.usefixtures("fresh_process")
def test_a_job_too_big_for_the_socket_arrives_and_later_jobs_keep_their_order(
    workspace: Workspace,
) -> None:
    """The socket takes what it can at once; the sender thread writes the rest, and jobs
    submitted meanwhile queue behind it.
    """
    process = _background.recording_process()
    marks = str(workspace.path / "marks.txt")
    big = os.urandom(3 * _background.SEND_BUFFER_BYTES)
    process.submit(workspace, recording_jobs.note, marks, "first")
    process.submit(workspace, recording_jobs.note_size, marks, "big", big)
    for n in range(3):
        process.submit(workspace, recording_jobs.note, marks, f"after {n}")
    assert process.drain(timeout=60)
    child = process._child
    assert child is not None
    assert Path(marks).read_text().splitlines() == [
        f"{child.pid} first",
        f"{child.pid} big {len(big)}",
        f"{child.pid} after 0",
        f"{child.pid} after 1",
        f"{child.pid} after 2",
    ]


@pytest.mark.usefixtures("fresh_process")
def test_after_close_the_next_job_starts_a_new_recording_process(workspace: Workspace) -> None:
    """close() waits for every job and ends the recording process and its sender thread;
    the next job starts both anew.
    """
    process = _background.recording_process()
    marks = str(workspace.path / "marks.txt")
    others = set(_senders())
    process.submit(workspace, recording_jobs.note, marks, "before")
    first = process._child
    assert first is not None
    (sender,) = set(_senders()) - others
    process.close(timeout=60)
    assert first.poll() == 0
    sender.join(timeout=30)
    assert not sender.is_alive()
    process.submit(workspace, recording_jobs.note, marks, "after")
    assert process.drain(timeout=60)
    second = process._child
    assert second is not None
    assert second.pid != first.pid
    assert Path(marks).read_text().splitlines() == [f"{first.pid} before", f"{second.pid} after"]
    assert len(set(_senders()) - others) == 1
    assert process.broken is None


def _senders() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "quantrack-recording-sender"]


@pytest.mark.usefixtures("fresh_process")
def test_a_recording_process_killed_mid_job_is_noticed_by_the_wait(workspace: Workspace) -> None:
    """Answers are read only when this process submits or waits: waiting notices the loss
    and records the unanswered job here.
    """
    process = _background.recording_process()
    marks = str(workspace.path / "marks.txt")
    process.submit(workspace, recording_jobs.note, marks, "answered")
    assert process.drain(timeout=60)
    gate = workspace.path / "gate"
    process.submit(workspace, recording_jobs.note_when, marks, "unanswered", str(gate))
    child = process._child
    assert child is not None
    with capture_logs() as logs:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        gate.touch()
        assert process.drain(timeout=60)
    assert Path(marks).read_text().splitlines() == [
        f"{child.pid} answered",
        f"{os.getpid()} unanswered",
    ]
    assert process.broken is not None
    assert "exited" in process.broken
    assert [e["event"] for e in logs if e["event"] == "recording.process_lost"] == [
        "recording.process_lost"
    ]


@given(
    messages=st.lists(st.tuples(st.integers(), st.binary(max_size=300)), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=64), max_size=40),
)
def test_frames_arrive_whole_however_the_bytes_are_cut(
    messages: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    """A socket delivers bytes in pieces of any size; the inbox gives back each message."""
    stream = b"".join(b"".join(_background._frame(meta, payload)) for meta, payload in messages)
    inbox = _background._Inbox()
    received = []
    position = 0
    for cut in [*cuts, len(stream)]:
        received.extend(inbox.feed(stream[position : position + cut]))
        position += cut
    assert received == messages


def test_the_recording_process_yields_the_cpu_to_the_backtests(workspace: Workspace) -> None:
    """Where every core is busy, the scheduler favours the backtest over its recording."""
    _record(workspace, background=True)
    child = _background.recording_process()._child
    assert child is not None
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    expected = min(19, ours + _background.NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, child.pid) == expected > ours


def test_background_needs_a_workspace_on_disk() -> None:
    with pytest.raises(ValueError, match="workspace on disk"):
        BacktraderAdapter(
            tracker=InMemoryExperimentTracker(),
            artifacts=InMemoryArtifactStore(),
            background=True,
        )
    with pytest.raises(ValueError, match="workspace on disk"):
        BacktraderAdapter(in_memory_workspace(), background=True)
    # By default an in-memory workspace is simply recorded in this process.
    memory = in_memory_workspace()
    BacktraderAdapter(memory).run(cerebro_with(SmaCross, bars=200), name="here")
    (experiment,) = memory.tracker.list_experiments()
    assert experiment.status is ExperimentStatus.COMPLETED
