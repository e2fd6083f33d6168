"""A content-addressed :class:`~quantrack.ports.ArtifactStore` on a folder.

Layout: the artifact with id ``abcdef...`` lives at ``root/ab/cdef...`` (a two-character
fan-out keeps folders small). Writes go to ``root/ab/.tmp-...`` in the same folder, are
fsynced and renamed into place, and the folder is fsynced, so a crash never leaves a partial
file under an artifact's name; :meth:`FilesystemArtifactStore.gc` removes the leftovers.

Nothing a caller passes becomes a path: ids are checked (64 lowercase hex characters)
before the disk is touched, display names are never used for storage, and every file is
opened relative to its fan-out folder with ``O_NOFOLLOW``, so a symlink planted inside the
store is refused instead of being read or written through.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from quantrack.domain import ArtifactNotFound, ArtifactRef, IntegrityError, StorageError
from quantrack.domain.artifacts import check_artifact_id, display_name
from quantrack.services.retention import GcReport

__all__ = ["FilesystemArtifactStore", "GcReport"]

_TEMP_PREFIX = ".tmp-"
_REFRESH_AFTER = 60.0
_CHUNK = 1 << 20
_FANOUT = frozenset(f"{i:02x}" for i in range(256))
# O_NOFOLLOW / O_DIRECTORY are POSIX; on a platform without them the lstat checks remain.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_BINARY = getattr(os, "O_BINARY", 0)


class FilesystemArtifactStore:
    """Content-addressed files under ``root``; safe to share between threads and processes.

    ``root`` is created when missing. Two processes putting the same content at once both
    succeed and leave one file: the rename is atomic and the content is identical.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root).absolute()
        try:
            self._root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the artifact folder {self._root} ({exc.strerror or exc}); "
                "choose a writable workspace folder"
            ) from exc

    @property
    def root(self) -> Path:
        """The folder holding the artifacts."""
        return self._root

    def __repr__(self) -> str:
        return f"FilesystemArtifactStore({str(self._root)!r})"

    # -- the port -------------------------------------------------------------------------

    def put(
        self,
        data: bytes,
        *,
        kind: str = "file",
        media_type: str = "application/octet-stream",
        name: str | None = None,
    ) -> ArtifactRef:
        """Store ``data`` once per distinct content and return its reference.

        Putting content that is already stored costs one hash and one ``stat``.
        """
        data = bytes(data)
        artifact_id = hashlib.sha256(data).hexdigest()
        if not self._touch_existing(artifact_id):
            self._write(artifact_id, [data])
        return _ref(artifact_id, len(data), kind, media_type, name)

    def put_file(
        self,
        path: str | os.PathLike[str],
        *,
        kind: str = "file",
        media_type: str = "application/octet-stream",
        name: str | None = None,
    ) -> ArtifactRef:
        """Store the content of the file at ``path`` without holding it all in memory.

        The file is streamed into a temporary file in the store while it is hashed, then
        renamed into place (or dropped, when that content is already stored). ``name``
        defaults to the file's name.
        """
        source = Path(path)
        try:
            handle = source.open("rb")
        except OSError as exc:
            raise FileNotFoundError(
                f"cannot read {source} to store it as an artifact ({exc.strerror or exc})"
            ) from exc
        with handle:
            artifact_id, size = self._write_stream(handle)
        return _ref(artifact_id, size, kind, media_type, source.name if name is None else name)

    def get(self, artifact_id: str, *, verify: bool = False) -> bytes:
        """Return the stored bytes; with ``verify=True`` re-hash them first."""
        check_artifact_id(artifact_id)
        with self._open_read(artifact_id) as handle:
            data = handle.read()
        if verify and hashlib.sha256(data).hexdigest() != artifact_id:
            raise _damaged(artifact_id)
        return data

    def exists(self, artifact_id: str) -> bool:
        """True when content with this id is stored (as a regular file)."""
        check_artifact_id(artifact_id)
        try:
            return stat.S_ISREG(os.lstat(self._path(artifact_id)).st_mode)
        except OSError:
            return False

    def verify(self, artifact_id: str) -> None:
        """Recompute the hash of the stored content, streaming it."""
        check_artifact_id(artifact_id)
        digest = hashlib.sha256()
        with self._open_read(artifact_id) as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != artifact_id:
            raise _damaged(artifact_id)

    def delete(self, artifact_id: str) -> bool:
        """Remove the content; True when something was removed."""
        check_artifact_id(artifact_id)
        path = self._path(artifact_id)
        self._check_fanout(path.parent, create=False)
        try:
            # unlink never follows a symlink: a planted link is removed, its target kept.
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot delete artifact {artifact_id}: {exc}") from exc
        return True

    def ids(self) -> Iterator[str]:
        """Every stored artifact id (temporary files and foreign entries are skipped)."""
        return iter(sorted(artifact_id for artifact_id, _ in self._entries()))

    def size(self, artifact_id: str) -> int:
        """Size in bytes of the stored content."""
        check_artifact_id(artifact_id)
        try:
            info = os.lstat(self._path(artifact_id))
        except FileNotFoundError:
            raise ArtifactNotFound(artifact_id) from None
        if not stat.S_ISREG(info.st_mode):
            raise _planted(self._path(artifact_id))
        return info.st_size

    # -- maintenance ----------------------------------------------------------------------

    def gc(
        self, keep: set[str], *, dry_run: bool = False, grace_seconds: float = 3600.0
    ) -> GcReport:
        """Remove every artifact whose id is not in ``keep``, and interrupted writes.

        Only files last written (or last put again) more than ``grace_seconds`` ago are
        removed, so an artifact a running experiment stored a moment ago, before the
        experiment lists it, survives; so does another process's in-flight temporary file.
        With ``dry_run=True`` nothing is removed and the report says what would be.
        Compute ``keep`` with :func:`quantrack.services.retention.referenced_artifact_ids`.
        """
        if grace_seconds < 0:
            raise ValueError(f"grace_seconds must be >= 0, got {grace_seconds!r}")
        keep = {check_artifact_id(artifact_id) for artifact_id in keep}
        cutoff = time.time() - grace_seconds
        removed: list[str] = []
        freed = 0
        for artifact_id, info in sorted(self._entries()):
            if artifact_id in keep or info.st_mtime > cutoff:
                continue
            if not dry_run and not self.delete(artifact_id):
                continue
            removed.append(artifact_id)
            freed += info.st_size
        temps = 0
        for path, info in self._temp_files():
            if info.st_mtime > cutoff:
                continue
            if not dry_run:
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
            temps += 1
            freed += info.st_size
        return GcReport(
            removed=tuple(removed), bytes_freed=freed, temp_files_removed=temps, dry_run=dry_run
        )

    # -- internals ------------------------------------------------------------------------

    def _path(self, artifact_id: str) -> Path:
        return self._root / artifact_id[:2] / artifact_id[2:]

    def _check_fanout(self, folder: Path, *, create: bool) -> bool:
        """True when ``folder`` is a real folder inside root; raise if something else is."""
        try:
            info = os.lstat(folder)
        except FileNotFoundError:
            if not create:
                return False
            try:
                folder.mkdir(exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create {folder}: {exc.strerror or exc}") from exc
            info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode):
            raise _planted(folder)
        return True

    def _touch_existing(self, artifact_id: str) -> bool:
        path = self._path(artifact_id)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(info.st_mode):
            raise _planted(path)
        self._check_fanout(path.parent, create=False)
        # Refresh the time so gc's grace period protects content that was just re-used; a
        # read-only store still deduplicates (gc's grace is then counted from the write).
        # Within a minute of the last refresh a sweep's repeated puts skip the metadata write.
        if time.time() - info.st_mtime > _REFRESH_AFTER:
            with contextlib.suppress(OSError):
                os.utime(path, follow_symlinks=False)
        return True

    @contextmanager
    def _open_read(self, artifact_id: str) -> Iterator[BinaryIO]:
        path = self._path(artifact_id)
        if not self._check_fanout(path.parent, create=False):
            raise ArtifactNotFound(artifact_id)
        folder_fd = os.open(path.parent, os.O_RDONLY | _DIRECTORY | _NOFOLLOW)
        try:
            fd = os.open(path.name, os.O_RDONLY | _NOFOLLOW | _BINARY, dir_fd=folder_fd)
        except FileNotFoundError:
            raise ArtifactNotFound(artifact_id) from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):
                raise _planted(path) from exc
            raise StorageError(f"cannot read artifact {artifact_id}: {exc}") from exc
        finally:
            os.close(folder_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _planted(path)
        with os.fdopen(fd, "rb") as handle:
            yield handle

    def _write(self, artifact_id: str, chunks: list[bytes]) -> None:
        path = self._path(artifact_id)
        self._check_fanout(path.parent, create=True)
        temp = path.parent / f"{_TEMP_PREFIX}{path.name[:16]}-{os.getpid()}-{os.urandom(4).hex()}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            self._commit(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _write_stream(self, source: BinaryIO) -> tuple[str, int]:
        # The id is unknown until the stream ends, so the temporary file sits at the root.
        temp = self._root / f"{_TEMP_PREFIX}stream-{os.getpid()}-{os.urandom(6).hex()}"
        digest = hashlib.sha256()
        size = 0
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            artifact_id = digest.hexdigest()
            if self._touch_existing(artifact_id):
                temp.unlink()
            else:
                path = self._path(artifact_id)
                self._check_fanout(path.parent, create=True)
                self._commit(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return artifact_id, size

    def _commit(self, temp: Path, path: Path) -> None:
        # os.replace of a link name replaces the link itself, never its target.
        os.replace(temp, path)
        _fsync_folder(path.parent)

    def _entries(self) -> Iterator[tuple[str, os.stat_result]]:
        for prefix in self._fanout_folders():
            with os.scandir(self._root / prefix) as entries:
                for entry in entries:
                    artifact_id = prefix + entry.name
                    if len(entry.name) != 62 or entry.name.startswith(_TEMP_PREFIX):
                        continue
                    try:
                        check_artifact_id(artifact_id)
                        info = entry.stat(follow_symlinks=False)
                    except (ValueError, OSError):
                        continue
                    if stat.S_ISREG(info.st_mode):
                        yield artifact_id, info

    def _temp_files(self) -> Iterator[tuple[Path, os.stat_result]]:
        folders = [self._root, *(self._root / prefix for prefix in self._fanout_folders())]
        for folder in folders:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if not entry.name.startswith(_TEMP_PREFIX):
                        continue
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISREG(info.st_mode):
                        yield Path(entry.path), info

    def _fanout_folders(self) -> list[str]:
        try:
            with os.scandir(self._root) as entries:
                return sorted(
                    entry.name
                    for entry in entries
                    if entry.name in _FANOUT and entry.is_dir(follow_symlinks=False)
                )
        except FileNotFoundError:
            return []


def _ref(artifact_id: str, size: int, kind: str, media_type: str, name: str | None) -> ArtifactRef:
    return ArtifactRef(
        id=artifact_id, size=size, media_type=media_type, kind=kind, name=display_name(name)
    )


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | _DIRECTORY)
    except OSError:
        return  # platforms that cannot open a folder (Windows) cannot fsync one either
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the rename is still atomic
    finally:
        os.close(fd)


def _damaged(artifact_id: str) -> IntegrityError:
    return IntegrityError(
        f"artifact {artifact_id} is damaged: its content no longer matches its sha256; "
        "restore it from a backup or re-run the experiment that produced it"
    )


def _planted(path: Path) -> IntegrityError:
    # Damage, not a full disk: the store holds something quantrack never writes there.
    return IntegrityError(
        f"{path} in the artifact store is not a regular file (a symlink or folder was put "
        "there); quantrack refuses to follow it. Remove it by hand"
    )
