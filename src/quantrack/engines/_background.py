"""The recording process: engine adapters record a run beside the backtest, not inside it.

Recording a backtrader run is ~20 ms of Python (DuckDB statements, Parquet files, hashing
the data, provenance). In the backtest's own process that time holds the GIL, so every
run pays it, even from a helper thread. A second process pays it on another core
instead: the adapter sends a plain description of the run before ``cerebro.run()`` and
its plain results after, and returns at once.

API::

    from quantrack.engines._background import recording_process

    process = recording_process()          # one per Python process, started on first use
    process.submit(workspace, job, *args)  # job(workspace_in_the_child, *args), in order
    process.drain()                        # wait until every job sent is recorded

What holds:

* **Order.** One recording process per Python process runs the jobs one at a time, in
  the order they were sent.
* **Read your writes.** A DuckDB unit of work of this process on a workspace's file first
  waits for that workspace's jobs (a barrier registered with the DuckDB adapter), so
  ``workspace.tracker.get_experiment(...)`` right after ``adapter.run`` sees the run.
  Other processes see it once it is recorded, typically milliseconds after ``run``
  returns; :meth:`RecordingProcess.drain` waits for that, and so does the interpreter's
  exit.
* **Nothing lost.** A job is kept here until the recording process answers. If that
  process dies, its unanswered jobs are recorded here, in order, and so is every later
  job. Jobs record through a :class:`~quantrack.engines._safety.RecordingGuard`, so a busy
  or full workspace spools the record exactly as in the foreground.
* **Warnings arrive.** Warnings a job logs (``recording.failed``) are logged again by
  this process's structlog when the job's answer arrives.

The process is started as ``python -m quantrack.engines._background``, not through
multiprocessing: spawn and forkserver run the user's ``__main__`` again in the child,
which a script without a main guard does not survive, and fork would copy DuckDB's
threads in whatever state they are in.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import pickle
import queue
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantrack.domain._logging import get_logger

if TYPE_CHECKING:
    from quantrack.workspace import Workspace

__all__ = ["RecordingProcess", "background_supported", "recording_process"]

_log = get_logger("quantrack.engines.background")
#: How long the interpreter's exit waits for jobs still being recorded.
EXIT_WAIT_SECONDS = 120.0
#: How long the recording process keeps a workspace's file after its last job.
HOLD_SECONDS = 2.0
#: How much lower the recording process's CPU priority is than its parent's.
NICENESS = 10


def background_supported() -> bool:
    """True where a recording process can be reached through an inherited socket."""
    return os.name == "posix"


@dataclass
class _Job:
    seq: int
    workspace: Workspace
    fn: Callable[..., None]
    args: tuple[Any, ...]

    def __post_init__(self) -> None:
        # Absolute now: the recording process has its own working folder, and this one's
        # may change before the job is recorded.
        self.root = _key(self.workspace.path)


class RecordingProcess:
    """The recording process, seen from the process whose runs it records."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._send_lock = threading.Lock()
        # Held while jobs run here instead, so they keep their order.
        self._local_lock = threading.RLock()
        self._local = threading.local()
        self._seq = 0
        self._unacked: dict[int, _Job] = {}
        self._roots: collections.Counter[str] = collections.Counter()
        # Workspaces whose file the recording process may still hold, by root.
        self._held: dict[str, Workspace] = {}
        self._conn: Connection | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._socket: socket.socket
        self._outbox: queue.SimpleQueue[tuple[int, str, float, bytes] | None] = queue.SimpleQueue()
        self._closing = False
        self._pid = os.getpid()
        #: Why jobs are recorded in this process instead (None while the child serves).
        self.broken: str | None = None if background_supported() else "not supported here"

    # -- sending -------------------------------------------------------------------------

    def submit(
        self,
        workspace: Workspace,
        fn: Callable[..., None],
        *args: Any,
        sent_as: tuple[Any, ...] | None = None,
    ) -> None:
        """Record ``fn(workspace, *args)`` in the recording process, after every job
        submitted before it. ``fn`` must be a module-level function and ``args`` plain
        data: both travel pickled.

        ``sent_as`` are the args to send instead: a shorter form of ``args`` that ``fn``
        completes in the recording process from what earlier jobs left there (raising if
        they left nothing). ``args`` stay here, for recording here should that process
        fail the job or be lost.
        """
        with self._send_lock:
            with self._lock:
                self._seq += 1
                job = _Job(self._seq, workspace, fn, args)
                if self.broken is None:
                    self._unacked[job.seq] = job
                    self._roots[job.root] += 1
                    if fn is not _release:
                        self._held[job.root] = workspace
            if self.broken is None:
                try:
                    payload = pickle.dumps(
                        (fn, args if sent_as is None else sent_as),
                        protocol=pickle.HIGHEST_PROTOCOL,
                    )
                except Exception as exc:
                    # Not plain after all: record it here, after what went before it.
                    self._forget(job)
                    _log.warning("recording.not_sendable", error=repr(exc))
                    self.drain()
                    self._run_here(job)
                    return
                try:
                    self._started()
                except Exception as exc:
                    self._lost(f"the recording process could not be started ({exc!r})")
                    return
                # The recording process waits for a busy file as long as this one would.
                timeout = float(getattr(workspace.tracker, "timeout", 30.0))
                # A sender thread writes to the socket: a write blocks while the recording
                # process is busy, and the backtest must not wait for that.
                self._outbox.put((job.seq, job.root, timeout, payload))
                return
        self._run_here(job)

    def _started(self) -> None:
        if self._conn is not None:
            return
        ours, theirs = socket.socketpair()
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "quantrack.engines._background", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                close_fds=True,
                # Its own session: Ctrl-C in the terminal interrupts the backtest, not
                # the recording of the runs before it.
                start_new_session=True,
            )
        finally:
            theirs.close()
        # The connection gets its own descriptor; the socket is kept to shut it down, which
        # (unlike closing a descriptor another thread is reading) the child sees at once.
        self._socket = ours
        self._conn = conn = Connection(os.dup(ours.fileno()))
        self._reader = threading.Thread(
            target=self._read, args=(conn,), name="quantrack-recording-answers", daemon=True
        )
        self._reader.start()
        threading.Thread(
            target=self._send, args=(conn,), name="quantrack-recording-sender", daemon=True
        ).start()

    def _send(self, conn: Connection) -> None:
        while True:
            message = self._outbox.get()
            if message is None:
                with contextlib.suppress(OSError):
                    self._socket.shutdown(socket.SHUT_WR)
                return
            try:
                conn.send(message)
            except Exception as exc:
                self._lost(f"the recording process could not be reached ({exc!r})")
                return

    # -- answers -------------------------------------------------------------------------

    def _read(self, conn: Connection) -> None:
        while True:
            try:
                seq, events, error = conn.recv()
            except (EOFError, OSError):
                code = self._child.wait() if self._child is not None else None
                if not self._closing:
                    self._lost(f"the recording process exited (code {code})")
                return
            for level, event, fields in events:
                getattr(_log, level)(event, **fields)
            with self._lock:
                job = self._unacked.get(seq)
            if job is not None and error is not None:
                # A fault outside the job's guard (a bug): record it here instead.
                _log.warning("recording.retried_here", error=error)
                self._run_here(job)
            if job is not None:
                self._forget(job)

    def _forget(self, job: _Job) -> None:
        with self._lock:
            if self._unacked.pop(job.seq, None) is not None:
                self._roots[job.root] -= 1
                if not self._roots[job.root]:
                    del self._roots[job.root]
            self._lock.notify_all()

    def _lost(self, why: str) -> None:
        """The recording process is gone: record what it had not here, and all after."""
        with self._local_lock:
            with self._lock:
                if self.broken is None:
                    self.broken = why
                    _log.warning(
                        "recording.process_lost",
                        reason=why,
                        hint="runs are recorded in this process from now on",
                    )
                jobs = [self._unacked[seq] for seq in sorted(self._unacked)]
                self._held.clear()
            for job in jobs:
                self._run_here(job)
                self._forget(job)

    def _run_here(self, job: _Job) -> None:
        with self._local_lock:
            self._local.here = True
            try:
                job.fn(job.workspace, *job.args)
            except Exception as exc:
                _log.warning("recording.failed", error=repr(exc), where="recording here")
            finally:
                self._local.here = False

    # -- waiting -------------------------------------------------------------------------

    def pending(self, root: str | os.PathLike[str] | None = None) -> int:
        """Jobs sent and not yet recorded (for the workspace at ``root``, or all)."""
        with self._lock:
            return len(self._unacked) if root is None else self._roots.get(_key(root), 0)

    def drain(
        self, root: str | os.PathLike[str] | None = None, *, timeout: float | None = None
    ) -> bool:
        """Wait until the jobs sent so far (for ``root``, or all) are recorded.

        Returns False when ``timeout`` passed first. Returns at once in the thread that
        records jobs here, which must not wait for itself.
        """
        if getattr(self._local, "here", False) or threading.current_thread() is self._reader:
            return True
        key = None if root is None else _key(root)

        def recorded() -> bool:
            return not (self._unacked if key is None else self._roots.get(key))

        with self._lock:
            if not self._lock.wait_for(recorded, timeout=timeout):
                return False
            # The recording process keeps a file between jobs: ask it to let go, so that
            # this process (or the one it hands the workspace to) gets it at once.
            held = [
                workspace
                for held_root, workspace in self._held.items()
                if key is None or held_root == key
            ]
            for workspace in held:
                del self._held[_key(workspace.path)]
        for workspace in held:
            self.submit(workspace, _release)
        with self._lock:
            return self._lock.wait_for(recorded, timeout=timeout)

    def holds(self, root: str | os.PathLike[str]) -> bool:
        """True when jobs for the workspace at ``root`` are unrecorded, or the recording
        process may still hold its file.
        """
        with self._lock:
            if not self._unacked and not self._held:
                return False
            key = _key(root)
            return bool(self._roots.get(key)) or key in self._held

    def close(self, *, timeout: float = EXIT_WAIT_SECONDS) -> None:
        """Wait for every job, then let the recording process end (it is started again
        by the next job).
        """
        if os.getpid() != self._pid:
            return  # a forked copy: the recording process and its answers are the parent's
        self.drain(timeout=timeout)
        with self._send_lock:
            child, reader = self._child, self._reader
            if child is None:
                return
            self._closing = True
            self._outbox.put(None)
            try:
                child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                child.kill()
            if reader is not None:
                reader.join(timeout=timeout)
            if self._conn is not None:
                self._conn.close()
            self._socket.close()
            self._conn = self._child = self._reader = None
            self._closing = False
            self._outbox = queue.SimpleQueue()


_shared: dict[str, RecordingProcess] = {}
_shared_lock = threading.Lock()


def recording_process() -> RecordingProcess:
    """This Python process's recording process (started when the first job is sent).

    Keyed by process id: a forked child must not write into its parent's connection.
    """
    key = str(os.getpid())
    with _shared_lock:
        process = _shared.get(key)
        if process is None:
            from quantrack.adapters.duckdb.connection import wait_before_units

            process = _shared[key] = RecordingProcess()
            wait_before_units(drain_for)
            atexit.register(process.close)
        return process


def drain_for(path: Path) -> None:
    """Wait for the jobs recording into the workspace that holds the file at ``path``."""
    process = _shared.get(str(os.getpid()))
    if process is not None and process.holds(path.parent):
        process.drain(path.parent)


# -- the recording process itself --------------------------------------------------------


def _serve(conn: Connection) -> None:
    import structlog

    from quantrack.adapters.duckdb.connection import hold_files_while_idle
    from quantrack.workspace import open_workspace

    events: list[tuple[str, str, dict[str, Any]]] = []

    def collect(_logger: object, level: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        # This process prints nothing: what matters is logged again by the one whose
        # runs these are.
        if level in ("warning", "error", "critical", "exception"):
            name = str(event.pop("event", ""))
            fields = {key: _plain(value) for key, value in event.items()}
            events.append(("error" if level != "warning" else "warning", name, fields))
        raise structlog.DropEvent

    structlog.configure(processors=[collect], cache_logger_on_first_use=False)
    # Recording is background work: where every core is busy, the backtests come first,
    # and the records catch up when a core is free (a flush or the exit waits for them).
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    # Keep each workspace's file between a run's two messages (a reopen and a checkpoint
    # less per message); the process that sends the runs asks for it when it reads
    # (_release), and another process gets it once it has waited (see the DuckDB adapter).
    hold_files_while_idle(HOLD_SECONDS)
    workspaces: dict[str, Workspace] = {}
    while True:
        try:
            seq, root, timeout, payload = conn.recv()
        except (EOFError, OSError):
            break
        events.clear()
        error = None
        try:
            fn, args = pickle.loads(payload)
            workspace = workspaces.get(root)
            if workspace is None:
                workspace = workspaces[root] = open_workspace(root, timeout=timeout)
            fn(workspace, *args)
        except Exception:
            error = traceback.format_exc()
        conn.send((seq, list(events), error))


def _key(root: str | os.PathLike[str] | None) -> str:
    return str(Path(root).absolute()) if root is not None else ""


def _release(workspace: Workspace) -> None:
    """In the recording process: let go of the workspace's file (its runs' process reads)."""
    close = getattr(workspace.tracker, "close", None)
    if close is not None:
        close()


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
