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
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import re
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
_FIRST_BACKOFF = 0.005
_MAX_BACKOFF = 0.05
# A waiter announcement older than this is from a process that gave up or died.
_WAITER_FRESH = 2.0
# How long a waiter waits before a busy holder hands the file over.
_YIELD_AFTER = 0.1


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
        self._prepare: Callable[[duckdb.DuckDBPyConnection], None] | None = None
        self._waiting_file = path.with_name(path.name + ".waiting")
        self._lock_path = path.with_name(path.name + ".lock")
        self._lock_fd: int | None = None
        # Rows read or written during the current outermost unit. Nobody else can change
        # the file meanwhile, so they stay true until the unit ends.
        self.cache: dict[object, Any] = {}
        # Facts about the file that stay true while this connection holds it (no other
        # process can write meanwhile); forgotten when it closes or a unit rolls back.
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
            if self._depth:
                return
            self._close()
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
        try:
            stamp = self._waiting_file.stat().st_mtime
            since = float(self._waiting_file.read_text().split()[1])
        except (OSError, ValueError, IndexError):
            return False
        now = time.time()
        return now - stamp < _WAITER_FRESH and now - since >= _YIELD_AFTER

    def _let_waiter_in(self) -> None:
        # The waiter removes its note once it has the file (or gives up); wait for that,
        # a little longer than its longest backoff, before competing for the file again.
        deadline = time.monotonic() + 3 * _MAX_BACKOFF
        while time.monotonic() < deadline and self._waiting_file.exists():
            if self._take_flock() is not None:
                break  # another process has taken the file
            self._drop_flock()
            time.sleep(0.005)
        time.sleep(random.random() * 0.01)

    def _open(self, timeout: float) -> duckdb.DuckDBPyConnection:
        con = self._retry(lambda: duckdb.connect(str(self.path)), timeout)
        try:
            if self._prepare is not None:
                self._prepare(con)
        except BaseException:
            con.close()
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
        # Advisory only: without the file the holder still lets go once idle.
        with contextlib.suppress(OSError):
            self._waiting_file.write_text(f"{os.getpid()} {first_wait}")

    def _forget_waiter(self) -> None:
        try:
            if self._waiting_file.read_text().split()[0] == str(os.getpid()):
                self._waiting_file.unlink()
        except (OSError, IndexError):
            pass  # another waiter owns or removed it

    def _close(self) -> None:
        self.held.clear()
        if self._con is not None:
            con, self._con = self._con, None
            # A connection that failed mid-write may refuse to close; nothing is left to save.
            with contextlib.suppress(duckdb.Error):
                con.close()
            self._drop_flock()
        self._wake.notify_all()

    def _start_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(
                target=self._reap, name=f"quantrack-release-{self.path.name}", daemon=True
            )
            self._reaper.start()
        else:
            self._wake.notify_all()

    def _reap(self) -> None:
        with self._lock:
            while self._con is not None:
                if self._depth == 0:
                    idle = time.monotonic() - self._idle_since
                    if idle >= self._idle_release:
                        self._close()
                        break
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
        database.release()


atexit.register(_release_all)


def database_for(path: Path) -> Database:
    """This process's :class:`Database` for ``path`` (one per file)."""
    key = Path(os.path.abspath(path))
    with _DATABASES_LOCK:
        database = _DATABASES.get(key)
        if database is None:
            database = _DATABASES[key] = Database(key)
        return database
