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
  job (noticed when this process next sends a job or waits for one, at the latest at
  its exit). Jobs record through a :class:`~quantrack.engines._safety.RecordingGuard`, so
  a busy or full workspace spools the record exactly as in the foreground.
* **Warnings arrive.** Warnings a job logs (``recording.failed``) are logged again by
  this process's structlog when the job's answer is read.
* **The backtest is not interrupted.** The thread that submits a job writes it to the
  socket without waiting, and answers are read when a job is submitted or waited for:
  no thread of ours wakes up during the backtest to take the interpreter lock from it.
  Only a job the socket cannot take at once (the recording process is behind) is left
  to a sender thread. The recording process runs at a lower CPU priority.

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
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
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
        # Held while sending; the sender thread waits on it for a backlog.
        self._send_lock = threading.Condition()
        # Held while taking in answers (re-entered when a failed job is recorded here).
        self._recv_lock = threading.RLock()
        # Held while jobs run here instead, so they keep their order.
        self._local_lock = threading.RLock()
        self._local = threading.local()
        self._seq = 0
        self._unacked: dict[int, _Job] = {}
        self._roots: collections.Counter[str] = collections.Counter()
        # Workspaces whose file the recording process may still hold, by root.
        self._held: dict[str, Workspace] = {}
        self._child: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._inbox = _Inbox()
        # Bytes the socket did not take at once, in order; the sender thread writes them.
        self._backlog: collections.deque[bytes | memoryview] = collections.deque()
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
        # Answers that arrived since the last call: they free their jobs, and a recording
        # process that has gone is noticed before anything more is written to it.
        self._collect(wait=0.0)
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
                    sock = self._started()
                except Exception as exc:
                    self._lost(f"the recording process could not be started ({exc!r})")
                    return
                # The recording process waits for a busy file as long as this one would.
                timeout = float(getattr(workspace.tracker, "timeout", 30.0))
                self._write(sock, _frame((job.seq, job.root, timeout), payload))
                return
        self._run_here(job)

    def _started(self) -> socket.socket:
        if self._socket is not None:
            return self._socket
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
        # Room for a run's description (its data feed, typically) in one write that does
        # not wait; the system caps it where it allows less.
        with contextlib.suppress(OSError):
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        self._socket = ours
        threading.Thread(
            target=self._send_backlog, args=(ours,), name="quantrack-recording-sender", daemon=True
        ).start()
        return ours

    def _write(self, sock: socket.socket, frame: list[bytes]) -> None:
        """Send ``frame`` without waiting: what the socket does not take at once (the
        recording process is behind) goes to the sender thread, as does everything after
        it until that is sent.

        The backtest's own thread writes, so that no thread of ours wakes up and takes the
        interpreter lock from the backtest: each such switch costs it more than the write.
        """
        if not self._backlog:
            try:
                sent = sock.sendmsg(frame, [], socket.MSG_DONTWAIT)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._lost(f"the recording process could not be reached ({exc!r})")
                return
            if sent == sum(len(part) for part in frame):
                return
            self._backlog.append(memoryview(b"".join(frame))[sent:])
        else:
            self._backlog.append(b"".join(frame))
        self._send_lock.notify_all()

    def _send_backlog(self, sock: socket.socket) -> None:
        # One sender thread per socket: it ends when its socket is closed (a later
        # recording process has a socket, and a sender thread, of its own).
        while True:
            with self._send_lock:
                self._send_lock.wait_for(lambda: self._socket is not sock or bool(self._backlog))
                if self._socket is not sock:
                    return
                head = self._backlog[0]
            try:
                sock.sendall(head)
            except OSError as exc:
                self._lost(f"the recording process could not be reached ({exc!r})")
                return
            with self._send_lock:
                self._backlog.popleft()

    # -- answers -------------------------------------------------------------------------

    def _collect(self, wait: float) -> None:
        """Take in the recording process's answers, waiting up to ``wait`` seconds for the
        first. Answers are read when this process sends or waits, never by a thread of
        their own (see :meth:`_write`).
        """
        sock = self._socket
        if sock is None:
            return
        if not (
            self._recv_lock.acquire(timeout=wait)
            if wait > 0
            else self._recv_lock.acquire(blocking=False)
        ):
            return  # another thread is reading them
        try:
            if sock is not self._socket:
                return  # closed meanwhile
            if wait > 0:
                poller = select.poll()
                poller.register(sock, select.POLLIN)
                if not poller.poll(wait * 1000):
                    return
            answers: list[tuple[Any, bytes]] = []
            ended = False
            while True:
                try:
                    data = sock.recv(RECEIVE_BYTES, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    ended = True
                    break
                answers.extend(self._inbox.feed(data))
            for (seq, events, error), _payload in answers:
                self._answered(seq, events, error)
            if ended and not self._closing and self.broken is None:
                code = self._child.wait() if self._child is not None else None
                self._lost(f"the recording process exited (code {code})")
        finally:
            self._recv_lock.release()

    def _answered(
        self, seq: int, events: list[tuple[str, str, dict[str, Any]]], error: str | None
    ) -> None:
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
        self._collect(wait=0.0)
        with self._lock:
            return len(self._unacked) if root is None else self._roots.get(_key(root), 0)

    def drain(
        self, root: str | os.PathLike[str] | None = None, *, timeout: float | None = None
    ) -> bool:
        """Wait until the jobs sent so far (for ``root``, or all) are recorded.

        Returns False when ``timeout`` passed first. Returns at once in the thread that
        records jobs here, which must not wait for itself.
        """
        if getattr(self._local, "here", False):
            return True
        key = None if root is None else _key(root)
        deadline = None if timeout is None else time.monotonic() + timeout

        def recorded() -> bool:
            return not (self._unacked if key is None else self._roots.get(key))

        if not self._await(recorded, deadline):
            return False
        # The recording process keeps a file between jobs: ask it to let go, so that
        # this process (or the one it hands the workspace to) gets it at once.
        with self._lock:
            held = [
                workspace
                for held_root, workspace in self._held.items()
                if key is None or held_root == key
            ]
            for workspace in held:
                del self._held[_key(workspace.path)]
        for workspace in held:
            self.submit(workspace, _release)
        return self._await(recorded, deadline)

    def _await(self, done: Callable[[], bool], deadline: float | None) -> bool:
        while True:
            with self._lock:
                if done():
                    return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            # In slices: another thread may be the one reading, or the jobs may be
            # recorded here (the process was lost), which only the condition tells.
            wait = WAIT_SLICE_SECONDS if left is None else min(left, WAIT_SLICE_SECONDS)
            if self.broken is None:
                self._collect(wait=wait)
            else:
                with self._lock:
                    self._lock.wait_for(done, timeout=wait)

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
            child, sock = self._child, self._socket
            if child is None or sock is None:
                return
            self._closing = True
            # The recording process ends when it has read everything sent (the sender
            # thread finishes the backlog first).
            self._send_lock.wait_for(lambda: not self._backlog, timeout=timeout)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        self._collect(wait=0.0)  # its last answers (and warnings)
        with self._recv_lock, self._send_lock:
            sock.close()
            self._socket = self._child = None
            self._inbox = _Inbox()
            self._backlog.clear()
            self._closing = False
            self._send_lock.notify_all()  # its sender thread ends


#: How many bytes the socket to the recording process may hold (the system may cap it).
SEND_BUFFER_BYTES = 4 << 20
RECEIVE_BYTES = 1 << 16
#: How often a waiting thread looks again (another thread may be reading the answers).
WAIT_SLICE_SECONDS = 0.05
#: A frame: its body's length and the length of the meta at the body's start.
_HEADER = struct.Struct("<QI")


def _frame(meta: object, payload: bytes = b"") -> list[bytes]:
    """A message as the parts to write: header, pickled ``meta``, ``payload``."""
    head = pickle.dumps(meta, protocol=pickle.HIGHEST_PROTOCOL)
    return [_HEADER.pack(len(head) + len(payload), len(head)), head, payload]


class _Inbox:
    """Bytes read from a socket, cut into the frames :func:`_frame` made."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[Any, bytes]]:
        """Add ``data``; return each frame completed, as (meta, payload)."""
        buffer = self._buffer
        buffer += data
        frames = []
        start = 0
        while len(buffer) - start >= _HEADER.size:
            body, head = _HEADER.unpack_from(buffer, start)
            end = start + _HEADER.size + body
            if len(buffer) < end:
                break
            middle = start + _HEADER.size + head
            frames.append(
                (pickle.loads(buffer[start + _HEADER.size : middle]), bytes(buffer[middle:end]))
            )
            start = end
        del buffer[:start]
        return frames


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


def _serve(sock: socket.socket) -> None:
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
    inbox = _Inbox()
    while True:
        try:
            data = sock.recv(RECEIVE_BYTES)
        except OSError:
            break
        if not data:
            break
        for (seq, root, timeout), payload in inbox.feed(data):
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
            sock.sendall(b"".join(_frame((seq, list(events), error))))


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
    _serve(socket.socket(fileno=int(sys.argv[1])))
