"""The :class:`ArtifactStore` port: content-addressed bytes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from quantrack.domain import ArtifactRef

__all__ = ["ArtifactStore"]


@runtime_checkable
class ArtifactStore(Protocol):
    """Stores bytes under the sha256 of their content.

    Ids are exactly 64 lowercase hex characters; anything else raises
    :class:`InvalidArtifactId` before the store is touched. Identical content is stored
    once. No caller ever names a location inside the store.
    """

    def put(
        self,
        data: bytes,
        *,
        kind: str = "file",
        media_type: str = "application/octet-stream",
        name: str | None = None,
    ) -> ArtifactRef:
        """Store ``data`` (once per distinct content) and return its reference.

        ``name`` is a display name only; it is sanitized and never used as a path.
        """
        ...

    def get(self, artifact_id: str, *, verify: bool = False) -> bytes:
        """Return the bytes stored under ``artifact_id``.

        Raises :class:`ArtifactNotFound`; with ``verify=True`` also
        :class:`IntegrityError` when the content no longer matches its id.
        """
        ...

    def exists(self, artifact_id: str) -> bool:
        """True when content with this id is stored."""
        ...

    def verify(self, artifact_id: str) -> None:
        """Recompute the hash of the stored content.

        Raises :class:`ArtifactNotFound`, or :class:`IntegrityError` when it is damaged.
        """
        ...

    def delete(self, artifact_id: str) -> bool:
        """Remove the content; True when something was removed, False when absent."""
        ...

    def ids(self) -> Iterator[str]:
        """Every stored artifact id, in no particular order."""
        ...

    def size(self, artifact_id: str) -> int:
        """Size in bytes of the stored content; raises :class:`ArtifactNotFound`."""
        ...
