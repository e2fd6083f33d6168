"""Filesystem adapters: the content-addressed artifact store (and the fallback spool)."""

from quantrack.adapters.filesystem.artifacts import FilesystemArtifactStore, GcReport

__all__ = ["FilesystemArtifactStore", "GcReport"]
