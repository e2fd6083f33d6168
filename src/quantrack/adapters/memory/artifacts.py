"""An in-memory :class:`~quantrack.ports.ArtifactStore`."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

from quantrack.domain import ArtifactNotFound, ArtifactRef, IntegrityError
from quantrack.domain.artifacts import check_artifact_id, display_name

__all__ = ["InMemoryArtifactStore"]


class InMemoryArtifactStore:
    """Content-addressed bytes in a dict; safe to share between threads."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(
        self,
        data: bytes,
        *,
        kind: str = "file",
        media_type: str = "application/octet-stream",
        name: str | None = None,
    ) -> ArtifactRef:
        """Store ``data`` once per distinct content and return its reference."""
        data = bytes(data)
        artifact_id = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._blobs.setdefault(artifact_id, data)
        return ArtifactRef(
            id=artifact_id,
            size=len(data),
            media_type=media_type,
            kind=kind,
            name=display_name(name),
        )

    def get(self, artifact_id: str, *, verify: bool = False) -> bytes:
        """Return the stored bytes."""
        check_artifact_id(artifact_id)
        try:
            data = self._blobs[artifact_id]
        except KeyError:
            raise ArtifactNotFound(artifact_id) from None
        if verify and hashlib.sha256(data).hexdigest() != artifact_id:
            raise IntegrityError(f"artifact {artifact_id} is damaged: its content hash differs")
        return data

    def exists(self, artifact_id: str) -> bool:
        """True when content with this id is stored."""
        check_artifact_id(artifact_id)
        return artifact_id in self._blobs

    def verify(self, artifact_id: str) -> None:
        """Recompute the hash of the stored content."""
        self.get(artifact_id, verify=True)

    def delete(self, artifact_id: str) -> bool:
        """Remove the content; True when something was removed."""
        check_artifact_id(artifact_id)
        with self._lock:
            return self._blobs.pop(artifact_id, None) is not None

    def ids(self) -> Iterator[str]:
        """Every stored artifact id."""
        with self._lock:
            # Copied under the lock: a put from another thread must not break iteration.
            return iter(list(self._blobs))

    def size(self, artifact_id: str) -> int:
        """Size in bytes of the stored content."""
        return len(self.get(artifact_id))

    def corrupt(self, artifact_id: str, data: bytes) -> None:
        """Replace stored content without changing its id: for testing damage detection."""
        check_artifact_id(artifact_id)
        with self._lock:
            self._blobs[artifact_id] = data
