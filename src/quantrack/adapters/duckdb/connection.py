"""Opening the database file: one connection per file per process, held only while busy.

DuckDB lets one process at a time open a database file. :class:`Database` is the single
owner of a file's connection inside this process (the tracker and the batch observer of
one workspace share it), and it:

* opens the file on first use, retrying a file held by another process with exponential
  backoff and jitter until the caller's timeout, then raises :class:`WorkspaceBusy` naming
  the process that holds it;
* keeps the connection while a unit of work lasts (:meth:`Database.unit`, nestable,
  thread-safe: one thread at a time uses the connection) and for a short idle window
  afterwards, so a process recording runs one after another does not pay for opening the
  file each time, then lets go of the file;
* yields the file early when another process is waiting for it: a waiter touches
  ``<file>.waiting`` and the holder releases at its next unit-of-work boundary, so a long
  sweep never locks a reader out for more than one unit of work.

Opening means attaching the file to this process's DuckDB engine (an in-memory database
started once, see :class:`_Engine`) and letting go means detaching it, which checkpoints
the write-ahead log into the file and releases DuckDB's lock.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import random
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: DuckDB's own lock is mandatory there
    fcntl = None  # type: ignore[assignment]

from quantrack.domain import NotAQuantrackDatabase, StorageError, WorkspaceBusy

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Database", "database_for", "holder_of", "translate"]

_LOCK_HELD = re.compile(r"Conflicting lock is held in (?P<process>.*?) \(PID (?P<pid>\d+)\)")
# A retry first tries the lock file, which costs a few microseconds, and only opens the
# database once it holds it; short pauses therefore cost nothing while they let a waiter
# take the file within a millisecond or two of its holder letting go (a holder that
# yields to a reader pays for every millisecond of that handover). Halving them saved
# no time overall: on a busy machine the waiter's wake-ups slowed the holder as much.
_FIRST_BACKOFF = 0.001
_MAX_BACKOFF = 0.002
# How often a holder that has let go checks whether the waiter has taken the file, and
# for how long at most (it stops as soon as the waiter has it; a waiter that missed its
# turn, descheduled on a busy machine, costs the holder another close and reopen).
_HANDOVER_POLL = 0.001
_HANDOVER_WAIT = 0.02
# A holder looks for a waiter's note at most this often: a waiter waits _YIELD_AFTER
# anyway, and the look (a stat and a read) is a few percent of a small unit of work.
_WAITER_CHECK_EVERY = 0.005
# A waiter announcement older than this is from a process that gave up or died.
_WAITER_FRESH = 2.0
# How long a waiter waits before a busy holder hands the file over.
_YIELD_AFTER = 0.1
# DuckDB's main header and its two alternating database headers.
_HEADER_BYTES = 3 * 4096
# How long a reaper thread outlives the last connection it closed.
_REAPER_LINGER = 10.0
# How long a connection stays open after its last unit, for files opened from now on
# (see hold_files_while_idle), and how often a reaper holding a file that long looks for
# a waiter.
_IDLE_RELEASE = {"seconds": 0.1}
_IDLE_WAITER_POLL = 0.02

# Each Database attaches its file under its own name in the shared engine.
_ALIASES = itertools.count()

# Called with the file's path before a unit of work of this process that does not already
# hold the file: an engine adapter's recording process (quantrack.engines._background)
# registers a wait for the runs this process sent it, so a read here sees them.
_before_units: list[Callable[[Path], None]] = []


def hold_files_while_idle(seconds: float) -> None:
    """Keep files this process opens from now on for ``seconds`` after their last unit.

    For a process whose only work is writing (an engine adapter's recording process):
    reopening the file costs an attach and letting go a checkpoint, twice per run when
    runs arrive in two messages. Another process that waits for the file still gets it
    once it has waited 0.1 s (the idle holder looks for its note every 20 ms), and
    ``release()`` lets go at once.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds!r}")
    _IDLE_RELEASE["seconds"] = float(seconds)


def wait_before_units(hook: Callable[[Path], None]) -> None:
    """Call ``hook(path)`` before every unit of work that opens the file at ``path``."""
    if hook not in _before_units:
        _before_units.append(hook)


class _Engine:
    """This process's DuckDB engine: an in-memory database that files are attached to.

    Starting DuckDB costs ~11 ms (it builds a catalog of ~3,000 functions) whether or
    not it opens a file, while attaching a file to a running engine costs ~1 ms. The
    engine holds no file, so keeping it for the life of the process keeps the rule that
    a file is held only while it is used, and makes holding it briefly cheap.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the engine (started on first use)."""
        with self._lock:
            if self._con is None:
                # One thread: a unit of work is a handful of small statements, and
                # handing each to a second worker thread cost more than it saved (a
                # lifecycle took 4.1 ms with two threads, 3.3 ms with one; bulk inserts
                # and the top-10 query over 1,000,000 runs were no slower). Plain SQL
                # (`query()`) runs in an engine of its own with DuckDB's defaults.
                # An in-memory engine would spill big sorts into `.tmp` in the caller's
                # working directory; this process's own folder keeps them out of the way.
                spill = Path(tempfile.gettempdir()) / f"quantrack-{os.getpid()}.duckdb.tmp"
                self._con = duckdb.connect(
                    ":memory:", config={"threads": 1, "temp_directory": str(spill)}
                )
            return self._con.cursor()

    def close(self) -> None:
        """Close the engine, and with it every file still attached; the next unit of
        work starts a new one.
        """
        with self._lock:
            con, self._con = self._con, None
        if con is not None:
            with contextlib.suppress(duckdb.Error):
                con.close()

    def forget(self) -> None:
        """In a forked child: drop the parent's engine without using or closing it."""
        self._lock = threading.Lock()
        _keep_from_parent(self._con)
        self._con = None


_ENGINE = _Engine()
# In a forked child, the parent's DuckDB objects: never used, and never freed either,
# since freeing one closes it, which crashes in a child (DuckDB's state is the parent's).
_FROM_PARENT: list[object] = []


def _keep_from_parent(con: duckdb.DuckDBPyConnection | None) -> None:
    if con is not None:
        _FROM_PARENT.append(con)


def holder_of(message: str) -> str | None:
    """``"PID 123 (/usr/bin/python)"`` from DuckDB's lock-conflict message, if it names one."""
    match = _LOCK_HELD.search(message)
    if match is None:
        return None
    return f"PID {match['pid']} ({match['process']})"


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


def translate(exc: duckdb.Error, path: Path) -> StorageError:
    """A quantrack error for a DuckDB error that no adapter rule explains."""
    text = str(exc)
    if "not a valid DuckDB database file" in text or "Corrupt" in text or "corrupt" in text:
        return NotAQuantrackDatabase(
            f"{path} is not a quantrack database or is damaged ({text}); it was left "
            "untouched: point the workspace somewhere else or move the file away"
        )
    return StorageError(f"database {path}: {text}")


class Database:
    """The connection to one database file, shared by every adapter of this process.

    ``prepare`` runs once per connection opened (the schema check and migrations).
    """

    def __init__(self, path: Path, *, idle_release: float = 0.1) -> None:
        self.path = path
        self._idle_release = idle_release
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._depth = 0
        self._opened_at = 0.0
        self._idle_since = 0.0
        self._reaper: threading.Thread | None = None
        self._reaper_sleeping = False
        self._stopping = False
        # The file's fingerprint when this process last let go of it, prepared.
        self._verified: tuple[object, ...] | None = None
        self._prepared = False
        self._prepare: Callable[[duckdb.DuckDBPyConnection], None] | None = None
        self._alias = f"quantrack_{next(_ALIASES)}"
        self._next_waiter_check = 0.0
        self._waiting_file = path.with_name(path.name + ".waiting")
        self._lock_path = path.with_name(path.name + ".lock")
        self._lock_fd: int | None = None
        # Rows read or written during the current outermost unit. Nobody else can change
        # the file meanwhile, so they stay true until the unit ends.
        self.cache: dict[object, Any] = {}
        # Facts about the file that stay true while no other process writes to it (the
        # next free seq, the metric names stored): kept while this process holds the
        # file, and across letting go of it when it is found unchanged on reopening (the
        # fingerprint check that skips the schema check); forgotten when a unit rolls
        # back or the file changed meanwhile.
        self.held: dict[str, Any] = {}
        # Writes buffered during the current outermost unit, run just before it commits.
        self._before_commit: list[Callable[[duckdb.DuckDBPyConnection], None]] = []

    def set_prepare(self, prepare: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
        """Run ``prepare`` on every connection this database opens, before any use."""
        with self._lock:
            self._prepare = prepare

    @contextmanager
    def unit(self, timeout: float) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection, held by this thread for the ``with`` block (nestable).

        The outermost unit is one transaction: committed when the block ends (also when
        it ends with a quantrack error, which is raised before anything is written),
        rolled back when DuckDB itself failed. No other process can open the file and
        no other thread can use the connection meanwhile, so nobody sees the
        intermediate states; a unit pays for one durable commit, not one per call.
        """
        if not self._depth:
            for hook in _before_units:
                hook(self.path)
        with self._lock:
            if self._depth == 0 and self._con is not None and self._should_yield():
                self._close()
                self._lock.release()
                try:
                    self._let_waiter_in()
                finally:
                    self._lock.acquire()
            if self._con is None:
                self._con = self._open(timeout)
            con = self._con
            outermost = self._depth == 0
            self._depth += 1
            try:
                if outermost:
                    self.cache.clear()
                    self._before_commit.clear()
                    con.execute("BEGIN TRANSACTION")
                try:
                    yield con
                except duckdb.Error:
                    if outermost:
                        self._rollback(con)
                    raise
                except BaseException:
                    if outermost:
                        self._commit_or_rollback(con, raising=False)
                    raise
                if outermost:
                    self._commit_or_rollback(con, raising=True)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.cache.clear()
                    self._before_commit.clear()
                    self._idle_since = time.monotonic()
                    self._start_reaper()

    def _rollback(self, con: duckdb.DuckDBPyConnection) -> None:
        self.held.clear()
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")

    def _commit_or_rollback(self, con: duckdb.DuckDBPyConnection, *, raising: bool) -> None:
        hooks, self._before_commit = self._before_commit, []
        try:
            for hook in hooks:
                hook(con)
            con.execute("COMMIT")
        except duckdb.Error as exc:
            # The transaction was aborted by an earlier failure inside the unit.
            self._rollback(con)
            if raising:
                raise translate(exc, self.path) from exc
        except BaseException:
            # A buffered write that cannot be made takes the unit with it: all or nothing.
            self._rollback(con)
            if raising:
                raise

    def release(self) -> None:
        """Close the connection now unless a unit of work is using it."""
        with self._lock:
            if not self._depth:
                self._close()

    def _stop(self) -> None:
        """Let go of the file and end the reaper thread (the interpreter is exiting)."""
        with self._lock:
            self._stopping = True
            if not self._depth:
                self._close()
            self._wake.notify_all()
            reaper = self._reaper
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join(timeout=1.0)

    def before_commit(self, hook: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
        """Run ``hook`` with the connection just before the current outermost unit commits.

        Only inside a unit of work. A hook that fails rolls the whole unit back, so what
        it writes is as durable as the unit, no more and no less. Hooks are forgotten when
        the unit ends, whether it committed or not.
        """
        if not self._depth:
            raise StorageError("before_commit needs a unit of work in progress")
        self._before_commit.append(hook)

    @property
    def nested(self) -> bool:
        """True inside a unit of work that itself runs inside another (a session)."""
        return self._depth > 1

    @property
    def busy(self) -> bool:
        """True while a unit of work of this process holds the connection."""
        return self._depth > 0

    @contextmanager
    def read_only(self, timeout: float) -> Iterator[duckdb.DuckDBPyConnection]:
        """A separate read-only connection for the ``with`` block, with no access to
        other files.

        DuckDB refuses two configurations of one file in a process, so the shared
        connection is closed first; inside a unit of work that is impossible.
        """
        for hook in _before_units:
            hook(self.path)
        with self._lock:
            if self._depth:
                raise StorageError(
                    "cannot run a read-only query inside a session of the same workspace; "
                    "run it after the session ends"
                )
            self._close()
            con = self._retry(
                lambda: duckdb.connect(
                    str(self.path),
                    read_only=True,
                    config={"enable_external_access": False},
                ),
                timeout,
            )
            try:
                yield con
            finally:
                with contextlib.suppress(duckdb.Error):
                    con.close()
                self._drop_flock()

    # -- internals ---------------------------------------------------------------------

    def _should_yield(self) -> bool:
        # Another process announced (see _announce_waiter) that it has been waiting for
        # the file; hand it over once it has waited a little, so a busy writer still
        # batches several units per opening.
        checked = time.monotonic()
        if checked < self._next_waiter_check:
            return False
        self._next_waiter_check = checked + _WAITER_CHECK_EVERY
        try:
            stamp = self._waiting_file.stat().st_mtime
            since = float(self._waiting_file.read_text().split()[1])
        except (OSError, ValueError, IndexError):
            return False
        now = time.time()
        return now - stamp < _WAITER_FRESH and now - since >= _YIELD_AFTER

    def _let_waiter_in(self) -> None:
        # The waiter removes its note once it has the file (or gives up); wait for that
        # before competing for the file again.
        deadline = time.monotonic() + _HANDOVER_WAIT
        while time.monotonic() < deadline and self._waiting_file.exists():
            if self._take_flock() is not None:
                break  # another process has taken the file
            self._drop_flock()
            time.sleep(_HANDOVER_POLL)
        time.sleep(random.random() * _FIRST_BACKOFF)

    def _attach(self) -> duckdb.DuckDBPyConnection:
        # A connection of its own, so `USE` (which makes the file's tables the default
        # for unqualified names) and transactions stay apart from other files' units.
        con = _ENGINE.cursor()
        try:
            con.execute("ATTACH ? AS " + self._alias, [str(self.path)])
            con.execute("USE " + self._alias)
        except BaseException:
            con.close()
            raise
        return con

    def _detach(self, con: duckdb.DuckDBPyConnection) -> None:
        # Detaching closes the file (and checkpoints its write-ahead log into it).
        try:
            con.execute("USE memory")
            con.execute("DETACH " + self._alias)
        finally:
            con.close()

    def _fingerprint(self) -> tuple[object, ...] | None:
        """What identifies the file's state: its identity, size and time, and DuckDB's
        headers (rewritten, with a new iteration number, by every checkpoint); ``None``
        while a write-ahead log holds changes not yet checkpointed into the file.
        """
        try:
            if self.path.with_name(self.path.name + ".wal").exists():
                return None
            fd = os.open(self.path, os.O_RDONLY)
            try:
                stat = os.fstat(fd)
                headers = os.pread(fd, _HEADER_BYTES, 0)
            finally:
                os.close(fd)
        except OSError:
            return None
        return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, headers)

    def _open(self, timeout: float) -> duckdb.DuckDBPyConnection:
        con = self._retry(self._attach, timeout)
        try:
            # A file unchanged since this process let go of it, prepared, needs no new
            # check of its schema (a statement, ~5% of a small unit of work): a file
            # another process migrated or wrote to has new headers (or a log).
            verified, self._verified = self._verified, None
            if verified is None or self._fingerprint() != verified:
                # Another process may have written: what this one knew may be stale (a
                # writer handing the file to a reader and back keeps it: two statements
                # fewer per handover).
                self.held.clear()
                if self._prepare is not None:
                    self._prepare(con)
            self._prepared = True
        except BaseException:
            self._prepared = False
            self._let_go(con)
            self._drop_flock()
            raise
        self._opened_at = time.monotonic()
        self._forget_waiter()
        return con

    def _retry(
        self, connect: Callable[[], duckdb.DuckDBPyConnection], timeout: float
    ) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + timeout
        first_wait = time.time()
        delay = _FIRST_BACKOFF
        while True:
            cause: duckdb.Error | None = None
            holder = self._take_flock()
            if holder is None:
                try:
                    return connect()
                except duckdb.Error as exc:
                    self._drop_flock()
                    if not _is_lock_conflict(exc):
                        raise translate(exc, self.path) from exc
                    cause, holder = exc, holder_of(str(exc))
            if time.monotonic() >= deadline:
                self._forget_waiter()
                raise WorkspaceBusy(str(self.path), timeout, holder or None) from cause
            self._announce_waiter(first_wait)
            # Jitter keeps several waiting processes from retrying in lockstep.
            pause = min(delay * (0.5 + random.random()), deadline - time.monotonic())
            time.sleep(max(pause, 0.0))
            delay = min(delay * 2, _MAX_BACKOFF)

    def _take_flock(self) -> str | None:
        """Take the lock file; ``None`` when taken, else who holds it (maybe ``""``).

        DuckDB's own lock is a POSIX record lock, which a process silently loses when
        any of its descriptors of the file is closed; this second, open-file lock
        (flock) keeps quantrack processes strictly one at a time on the file.
        """
        if fcntl is None:
            return None
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None  # an unwritable or missing folder: DuckDB will say so
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                pid = os.read(fd, 64).decode(errors="replace").strip()
            except OSError:
                pid = ""
            os.close(fd)
            return f"PID {pid} (quantrack)" if pid else ""
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd
        return None

    def _drop_flock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None and fcntl is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _announce_waiter(self, first_wait: float) -> None:
        # Advisory only: without the file the holder still lets go once idle. Written in
        # place on every retry, which also keeps its time fresh: truncating it to nothing
        # and writing it again (write_text) cost up to 3-4 ms, since ext4 flushes such a
        # file when it is closed; that stretched a retry's 1-2 ms pause to ~5 ms and put
        # a disk write beside the holder's commits.
        data = f"{os.getpid()} {first_wait}".encode()
        with contextlib.suppress(OSError):
            fd = os.open(self._waiting_file, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, data, 0)
                os.ftruncate(fd, len(data))
            finally:
                os.close(fd)

    def _forget_waiter(self) -> None:
        try:
            if self._waiting_file.read_text().split()[0] == str(os.getpid()):
                self._waiting_file.unlink()
        except (OSError, IndexError):
            pass  # another waiter owns or removed it

    def _close(self) -> None:
        if self._con is not None:
            con, self._con = self._con, None
            detached = self._let_go(con)
            # Taken before the lock file is let go of, so no quantrack process has
            # written in between.
            if detached and self._prepared:
                self._verified = self._fingerprint()
            if self._verified is None:
                self.held.clear()
            self._prepared = False
            self._drop_flock()
        self._wake.notify_all()

    def _forget_parent(self) -> None:
        """In a forked child: drop the parent's connection and lock without using them."""
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        _keep_from_parent(self._con)
        self._con = None
        self._depth = 0
        self._reaper = None
        self._reaper_sleeping = False
        self._verified = None
        self._prepared = False
        self.cache.clear()
        self.held.clear()
        self._before_commit.clear()
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _let_go(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Detach the file; ``False`` when that failed and it was let go of otherwise."""
        try:
            self._detach(con)
        except duckdb.Error:
            # A connection that failed mid-write may refuse to detach; nothing is left to
            # save, but the file must be let go of: try from a fresh connection, and as a
            # last resort close the engine (and with it every file this process holds).
            try:
                with contextlib.closing(_ENGINE.cursor()) as other:
                    other.execute("DETACH DATABASE IF EXISTS " + self._alias)
            except duckdb.Error:
                _ENGINE.close()
            return False
        return True

    def _start_reaper(self) -> None:
        # The reaper outlives the connection it closes and sleeps until the next one, so
        # an opening does not pay for starting a thread (0.1-1.5 ms: the new thread must
        # be scheduled before start() returns). A sleeping reaper is woken; a watching one
        # is not, it wakes at the end of the idle window anyway and looks again.
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(
                target=self._reap, name=f"quantrack-release-{self.path.name}", daemon=True
            )
            self._reaper.start()
        elif self._reaper_sleeping:
            self._wake.notify_all()

    def _reap(self) -> None:
        with self._lock:
            while not self._stopping:
                if self._con is None:
                    # A file nobody has used for a while does not keep a thread.
                    self._reaper_sleeping = True
                    woken = self._wake.wait(_REAPER_LINGER)
                    self._reaper_sleeping = False
                    if not woken and self._con is None:
                        break
                elif self._depth == 0:
                    idle = time.monotonic() - self._idle_since
                    # A long idle window must not keep a waiting reader out.
                    long_hold = self._idle_release > _YIELD_AFTER
                    if idle >= self._idle_release or (long_hold and self._should_yield()):
                        self._close()
                    elif long_hold:
                        self._wake.wait(min(self._idle_release - idle, _IDLE_WAITER_POLL))
                    else:
                        self._wake.wait(self._idle_release - idle)
                else:
                    self._wake.wait(self._idle_release)
            self._reaper = None


_DATABASES: dict[Path, Database] = {}
_DATABASES_LOCK = threading.Lock()


def _release_all() -> None:
    # A reaper thread still waiting when the interpreter shuts down aborts the process.
    with _DATABASES_LOCK:
        databases = list(_DATABASES.values())
    for database in databases:
        database._stop()


atexit.register(_release_all)


def _after_fork_in_child() -> None:
    # A forked child inherits the parent's engine and connections as copied memory, and
    # locks some other thread may have held: it must neither use nor close them (closing
    # would detach, and so checkpoint, the parent's files). It starts afresh instead; the
    # lock file's descriptor is closed without unlocking, which leaves the parent's lock.
    _ENGINE.forget()
    for database in _DATABASES.values():
        database._forget_parent()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def database_for(path: Path) -> Database:
    """This process's :class:`Database` for ``path`` (one per file)."""
    key = Path(os.path.abspath(path))
    with _DATABASES_LOCK:
        database = _DATABASES.get(key)
        if database is None:
            database = _DATABASES[key] = Database(key, idle_release=_IDLE_RELEASE["seconds"])
        return database
