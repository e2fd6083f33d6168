"""The composition root: :func:`open_workspace` builds the adapters and wires the services.

Nothing else in quantrack constructs a DuckDB or filesystem adapter. A workspace is one
folder holding ``runs.duckdb`` (experiments and batches) and ``artifacts/`` (content-
addressed files). Application code receives the workspace, or only the ports it needs
(``workspace.tracker``), and never learns which technology is behind them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from quantrack.domain import ArtifactRef, ExperimentDefinition, WorkspaceUnwritable
from quantrack.ports import ArtifactStore, BatchHistory, BatchObserver, ExperimentTracker
from quantrack.services.recording import Run, track

__all__ = ["DATABASE_FILE", "Workspace", "open_workspace", "resolve_workspace_path"]

DATABASE_FILE = "runs.duckdb"
ARTIFACTS_DIR = "artifacts"
_PROJECT_MARKERS = (".git", "pyproject.toml")


class PersistingObserver(BatchObserver, BatchHistory, Protocol):
    """A batch observer that also answers questions about the batches it kept."""


@dataclass(frozen=True)
class Workspace:
    """The ports of one workspace, and the use cases built on them.

    Build it with :func:`open_workspace`; tests may build one from in-memory adapters
    (see :mod:`quantrack.testing`).
    """

    tracker: ExperimentTracker
    artifacts: ArtifactStore
    observer: PersistingObserver
    path: Path | None = None

    @contextmanager
    def track(
        self,
        name: str,
        *,
        strategy: str = "",
        engine: str = "python",
        params: Mapping[str, Any] | None = None,
        inputs: Iterable[ArtifactRef] = (),
        tags: Iterable[str] = (),
        seed: int | None = None,
        description: str = "",
    ) -> Iterator[Run]:
        """Record the body of a ``with`` block as one experiment.

        See :func:`quantrack.services.recording.track` for the lifecycle it follows.
        """
        definition = ExperimentDefinition(
            name=name,
            strategy=strategy,
            engine=engine,
            params=dict(params or {}),
            inputs=tuple(inputs),
            tags=tuple(tags),
            seed=seed,
            description=description,
        )
        with track(self.tracker, self.artifacts, definition) as run:
            yield run


def resolve_workspace_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Where a workspace lives: ``path`` if given, else ``$QUANTRACK_HOME``, else
    ``.quantrack/`` at the project root (the nearest folder upward from the current one
    holding ``.git`` or ``pyproject.toml``), else ``~/.quantrack``.
    """
    if path is not None:
        return Path(path).expanduser()
    home = os.environ.get("QUANTRACK_HOME")
    if home:
        return Path(home).expanduser()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).exists() for marker in _PROJECT_MARKERS):
            return folder / ".quantrack"
    return Path.home() / ".quantrack"


def open_workspace(
    path: str | os.PathLike[str] | None = None, *, timeout: float = 30.0
) -> Workspace:
    """Open (creating if needed) the workspace at ``path`` (see
    :func:`resolve_workspace_path`) and wire its adapters.

    ``timeout`` is how long a call waits for a database file that another process holds
    before raising :class:`WorkspaceBusy`. Raises :class:`WorkspaceUnwritable` when the
    folder cannot be created or written.
    """
    # Adapters are imported here, not at module level, so `import quantrack` stays fast
    # and free of duckdb.
    from quantrack.adapters.duckdb import DuckDBBatchObserver, DuckDBExperimentTracker
    from quantrack.adapters.filesystem import FilesystemArtifactStore

    root = resolve_workspace_path(path)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise WorkspaceUnwritable(
            f"cannot write to workspace folder {root} ({exc.strerror or exc}); choose "
            "another with open_workspace(path) or $QUANTRACK_HOME"
        ) from exc
    database = root / DATABASE_FILE
    return Workspace(
        tracker=DuckDBExperimentTracker(database, timeout=timeout),
        artifacts=FilesystemArtifactStore(root / ARTIFACTS_DIR),
        observer=DuckDBBatchObserver(database, timeout=timeout),
        path=root,
    )
