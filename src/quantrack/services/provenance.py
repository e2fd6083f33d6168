"""Provenance: where a run came from, collected cheaply enough to do for every run.

:func:`collect_provenance` fills a :class:`~quantrack.domain.Provenance` with the git state
of the working tree (commit, branch, dirty flag, a hash of the uncommitted changes), the
engine and its version, the interpreter, platform and host, the entry point, and the
versions of the distributions that provide the modules a strategy imports.

It never fails a run: outside a git repository, or without git installed, the git fields
stay ``None`` and one warning is logged (once per folder and process, not once per run).

Speed: what cannot change while a process lives (interpreter, platform, host, the map from
modules to distributions, distribution versions) is computed once per process. The git
state costs one ``git status`` call (two when the tree is dirty) and is reused for
``git_cache_seconds`` (2 s by default), so a sweep recording hundreds of runs a second
does not spawn hundreds of processes; :func:`clear_provenance_cache` forgets it.

A cached state is only reused while the repository looks the same: its ``HEAD``, the
branch ref it points to, ``packed-refs``, the index and the work tree's top folder are
stat'ed (a few microseconds) and any change (a commit, a checkout, ``git add``, a new or
deleted top-level file) reads the state again at once. :func:`capture_origin` also keys
the cache on the captured code's hash, so editing the strategy or a module it imports is
noticed on the next run; since those edits, and all of git's own, are noticed at once, it
reuses the state for up to ``_ORIGIN_GIT_SECONDS`` (30 s): only an unstaged edit to a file
the strategy does not import can take that long to show.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from quantrack.domain import Provenance
from quantrack.domain._logging import get_logger
from quantrack.ports import ArtifactStore
from quantrack.services.code_capture import CapturedCode, capture_code

__all__ = [
    "GitState",
    "capture_origin",
    "clear_provenance_cache",
    "collect_provenance",
    "current_entry_point",
    "git_state",
    "package_versions",
]

_log = get_logger(__name__)

_GIT_TIMEOUT = 10.0
# Untracked files larger than this are identified by name and size, not content: hashing
# a stray multi-gigabyte data file on every run would dwarf the backtest.
_UNTRACKED_HASH_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True)
class GitState:
    """The git fields of a :class:`Provenance`; all ``None`` outside a repository."""

    commit: str | None = None
    branch: str | None = None
    dirty: bool | None = None
    diff_hash: str | None = None


# Long enough that a researcher re-running a backtest every few seconds does not pay a git
# process per run; see the module docstring for what is still noticed at once.
_ORIGIN_GIT_SECONDS = 30.0

_lock = threading.Lock()
_git_cache: dict[Path, tuple[float, tuple[object, ...], GitState]] = {}
_warned: set[str] = set()


def clear_provenance_cache() -> None:
    """Forget cached git states, the module-to-distribution map and warnings given."""
    with _lock:
        _git_cache.clear()
        _warned.clear()
    _distributions.cache_clear()
    _version.cache_clear()


def collect_provenance(
    *,
    engine: str | None = None,
    engine_version: str | None = None,
    modules: Iterable[str | ModuleType] = (),
    entry_point: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    code_hash: str | None = None,
    git_cache_seconds: float = 2.0,
) -> Provenance:
    """The provenance of a run started now from ``cwd`` (the current folder by default).

    ``modules`` are what the strategy imports (names or module objects); the versions of
    the installed distributions providing them are recorded. ``engine_version`` defaults
    to the installed version of the distribution named ``engine``. ``entry_point``
    defaults to the ``__main__`` module's file, else ``sys.argv[0]``.
    """
    folder = Path(cwd) if cwd is not None else Path.cwd()
    git = git_state(folder, max_age=git_cache_seconds, watch=code_hash)
    if engine and engine_version is None:
        engine_version = _version(engine)
    return Provenance(
        git_commit=git.commit,
        git_branch=git.branch,
        git_dirty=git.dirty,
        git_diff_hash=git.diff_hash,
        engine=engine,
        engine_version=engine_version,
        python_version=_python_version(),
        platform=_platform(),
        hostname=_hostname(),
        entry_point=entry_point if entry_point is not None else current_entry_point(),
        packages=package_versions(modules),
        code_hash=code_hash,
    )


def capture_origin(
    store: ArtifactStore,
    code_from: object | None,
    *,
    engine: str | None = None,
    engine_version: str | None = None,
    modules: Iterable[str | ModuleType] = (),
    entry_point: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> tuple[Provenance, CapturedCode | None]:
    """Capture the code behind ``code_from`` into ``store`` and collect the provenance.

    The one call an engine adapter or :meth:`Workspace.track` makes per run: the
    provenance carries the captured code's ``code_hash``, the versions of the
    distributions the code imports (plus ``modules``), and the git state of the folder the
    code was captured from (else of ``cwd``, by default the current folder).
    ``code_from=None`` skips capture; a :class:`CodePlan` (from :func:`find_code`, maybe
    in another process) is stored as found.
    """
    captured = capture_code(store, code_from) if code_from is not None else None
    imported = captured.packages if captured is not None else ()
    provenance = collect_provenance(
        engine=engine,
        engine_version=engine_version,
        modules=(*imported, *modules),
        entry_point=entry_point,
        # The git state that matters is the code's, wherever the process was started.
        cwd=captured.root if captured is not None else cwd,
        code_hash=captured.code_hash if captured is not None else None,
        git_cache_seconds=_ORIGIN_GIT_SECONDS if captured is not None else 2.0,
    )
    return provenance, captured


def package_versions(modules: Iterable[str | ModuleType]) -> dict[str, str]:
    """``{distribution: version}`` for the installed distributions providing ``modules``.

    Standard-library and local modules (no installed distribution) are left out.
    """
    found: dict[str, str] = {}
    for module in modules:
        name = module.__name__ if isinstance(module, ModuleType) else str(module)
        top = name.split(".", 1)[0]
        if not top or top in sys.stdlib_module_names:
            continue
        for distribution in _distributions().get(top, ()):
            version = _version(distribution)
            if version is not None:
                found[distribution] = version
    return dict(sorted(found.items()))


def git_state(
    folder: str | os.PathLike[str], *, max_age: float = 2.0, watch: object = None
) -> GitState:
    """The git state of the repository holding ``folder``, reused for ``max_age`` seconds
    while the repository's HEAD, refs, index and top folder are unchanged and ``watch``
    (any hashable, such as a code hash) equals the value it was read with.
    """
    key = Path(folder).absolute()
    signature = (_repository_signature(key), watch)
    now = time.monotonic()
    with _lock:
        cached = _git_cache.get(key)
    if cached is not None and now - cached[0] <= max_age and cached[1] == signature:
        return cached[2]
    state = _read_git_state(key)
    with _lock:
        _git_cache[key] = (now, signature, state)
    return state


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return (found.st_mtime_ns, found.st_size, found.st_ino)


def _repository_signature(folder: Path) -> tuple[object, ...] | None:
    """Stats of what git changes on a commit, checkout, reset or ``git add``.

    ``None`` outside a repository (then only ``max_age`` bounds the cache).
    """
    for top in (folder, *folder.parents):
        dot_git = top / ".git"
        if dot_git.is_dir():
            git_dir = dot_git
            break
        if dot_git.is_file():  # a linked worktree or submodule: "gitdir: <path>"
            try:
                pointer = dot_git.read_text("utf-8").strip()
            except OSError:
                return None
            if not pointer.startswith("gitdir:"):
                return None
            git_dir = (top / pointer.removeprefix("gitdir:").strip()).resolve()
            break
    else:
        return None
    common = git_dir
    with contextlib.suppress(OSError):  # only linked worktrees have a commondir
        common = (git_dir / (git_dir / "commondir").read_text("utf-8").strip()).resolve()
    try:
        head = (git_dir / "HEAD").read_bytes()
    except OSError:
        return None
    ref = head.removeprefix(b"ref:").strip().decode("utf-8", "replace")
    ref_key = _stat_key(common / ref) if head.startswith(b"ref:") else None
    return (
        str(git_dir),
        head,
        ref_key,
        _stat_key(common / "packed-refs"),
        _stat_key(git_dir / "index"),
        _stat_key(top),
    )


def _read_git_state(folder: Path) -> GitState:
    status = _git(folder, "status", "--porcelain=v2", "--branch", "-z", "--untracked-files=all")
    if status is None:
        return GitState()
    commit: str | None = None
    branch: str | None = None
    changed = False
    untracked: list[str] = []
    for entry in status.decode("utf-8", "surrogateescape").split("\0"):
        if entry.startswith("# branch.oid "):
            oid = entry.removeprefix("# branch.oid ")
            commit = None if oid == "(initial)" else oid
        elif entry.startswith("# branch.head "):
            head = entry.removeprefix("# branch.head ")
            branch = None if head == "(detached)" else head
        elif entry.startswith("? "):
            untracked.append(entry[2:])
        elif entry and not entry.startswith("#"):
            changed = True
    dirty = changed or bool(untracked)
    diff_hash = _diff_hash(folder, untracked) if dirty and commit else None
    if dirty and not commit:
        diff_hash = _untracked_hash(folder, untracked, hashlib.sha256())
    return GitState(commit=commit, branch=branch, dirty=dirty, diff_hash=diff_hash)


def _diff_hash(folder: Path, untracked: list[str]) -> str | None:
    diff = _git(folder, "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff")
    if diff is None:
        return None
    digest = hashlib.sha256(diff)
    return _untracked_hash(folder, untracked, digest)


def _untracked_hash(folder: Path, untracked: list[str], digest: hashlib._Hash) -> str:
    top = _git(folder, "rev-parse", "--show-toplevel")
    root = Path(top.decode().strip()) if top else folder
    for name in sorted(untracked):
        digest.update(b"\0untracked\0" + name.encode("utf-8", "surrogateescape") + b"\0")
        path = root / name
        try:
            size = path.stat().st_size
            if size > _UNTRACKED_HASH_LIMIT:
                digest.update(f"size={size}".encode())
                continue
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        except OSError:
            digest.update(b"unreadable")
    return digest.hexdigest()


def _git(folder: Path, *args: str) -> bytes | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            timeout=_GIT_TIMEOUT,
            check=False,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
        )
    except FileNotFoundError:
        _warn_once("git", "git is not installed; provenance has no git fields")
        return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        _warn_once(f"error:{folder}", f"git could not run ({exc}); provenance has no git fields")
        return None
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        _warn_once(
            f"repo:{folder}",
            f"{folder} is not in a usable git repository; provenance has no git fields",
            git_said=reason[0] if reason else "",
        )
        return None
    return done.stdout


def _warn_once(key: str, message: str, **details: str) -> None:
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    _log.warning(message, **details)


@functools.cache
def _distributions() -> dict[str, list[str]]:
    # Slow (it reads every installed distribution's file list): once per process.
    return dict(importlib.metadata.packages_distributions())


@functools.cache
def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _python_version() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"


@functools.cache
def _platform() -> str:
    return platform.platform()


@functools.cache
def _hostname() -> str:
    return socket.gethostname()


def current_entry_point() -> str | None:
    """The file (else ``argv[0]``) the running program was started from."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if isinstance(path, str) and path:
        return str(Path(path).absolute())
    if sys.argv and sys.argv[0]:
        return sys.argv[0]
    return None
