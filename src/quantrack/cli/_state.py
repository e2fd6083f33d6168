"""What every command shares: the options given on the root command, and the workspace.

The workspace is built by a :data:`WorkspaceOpener`, which tests replace (pass
``obj=CliState(opener=...)`` to typer's ``CliRunner.invoke``) to run the commands against
in-memory adapters; the default opener calls :func:`quantrack.open_workspace`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from quantrack.cli._errors import EXIT_BAD_INPUT, EXIT_NOT_FOUND, CliError
from quantrack.domain import Batch, Experiment
from quantrack.workspace import DATABASE_FILE, Workspace, resolve_workspace_path

__all__ = [
    "CliState",
    "WorkspaceOpener",
    "default_opener",
    "open_for",
    "resolve_batch",
    "resolve_experiment",
    "state_of",
]

WorkspaceOpener = Callable[[Path | None, bool, float], Workspace]
"""``opener(path, create, timeout)``: the workspace at ``path`` (``None`` = the default
resolution); with ``create=False`` a missing workspace raises :class:`CliError`."""


def default_opener(path: Path | None, create: bool, timeout: float) -> Workspace:
    """Open the real workspace; refuse to create one unless ``create`` is true."""
    root = resolve_workspace_path(path)
    if not create and not (root / DATABASE_FILE).is_file():
        why = "the folder does not exist" if not root.exists() else f"it has no {DATABASE_FILE}"
        raise CliError(
            f"no quantrack workspace at {root} ({why}); record a run there first, or point "
            "to an existing one with --workspace PATH or $QUANTRACK_HOME",
            exit_code=EXIT_NOT_FOUND,
        )
    # Imported here so that `quantrack --help` does not pay for duckdb.
    from quantrack.workspace import open_workspace

    return open_workspace(root, timeout=timeout)


@dataclass
class CliState:
    """Options of the root command, and the workspaces opened so far (one per path).

    ``configure_logging`` is set by :func:`quantrack.cli.main` only, so running commands
    in-process never reconfigures the caller's logging.
    """

    opener: WorkspaceOpener = default_opener
    workspace: Path | None = None
    json: bool = False
    debug: bool = False
    verbose: int = 0
    timeout: float = 10.0
    configure_logging: bool = False
    _opened: dict[tuple[Path | None, bool], Workspace] = field(default_factory=dict)

    def open(self, path: Path | None = None, *, create: bool = False) -> Workspace:
        """The workspace at ``path`` (else the root ``--workspace``, else the default)."""
        key = (path or self.workspace, create)
        if key not in self._opened:
            self._opened[key] = self.opener(key[0], create, self.timeout)
        return self._opened[key]


def state_of(ctx: typer.Context) -> CliState:
    """The :class:`CliState` of this invocation (created on first use)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def open_for(ctx: typer.Context, path: Path | None, *, create: bool = False) -> Workspace:
    """Open the workspace a command was pointed at."""
    return state_of(ctx).open(path, create=create)


def _pick(kind: str, prefix: str, candidates: list[str], command: str) -> str:
    if not candidates:
        raise CliError(
            f"no {kind} id starts with {prefix!r}; list them with `{command}`",
            exit_code=EXIT_NOT_FOUND,
        )
    if len(candidates) > 1:
        shown = ", ".join(sorted(candidates)[:5])
        more = f" and {len(candidates) - 5} more" if len(candidates) > 5 else ""
        raise CliError(
            f"{kind} id prefix {prefix!r} is ambiguous: it matches {shown}{more}; "
            "type more characters",
            exit_code=EXIT_BAD_INPUT,
        )
    return candidates[0]


def _prefix_candidates(tracker: Any, prefix: str) -> list[str] | None:
    # Trackers that can answer a prefix query themselves (DuckDB) do it in the database;
    # the others are asked for every id.
    for method in ("experiment_ids_by_prefix", "resolve_prefix"):
        finder = getattr(tracker, method, None)
        if callable(finder):
            found = finder(prefix)
            if found is None:
                return []
            if isinstance(found, str):
                return [found]
            return [str(item) for item in found]
    return None


def resolve_experiment(workspace: Workspace, id_or_prefix: str) -> Experiment:
    """The experiment whose id is ``id_or_prefix`` or starts with it (unambiguously).

    Raises :class:`CliError` (exit 3) when none matches and (exit 2) when several do.
    """
    text = id_or_prefix.strip()
    if not text:
        raise CliError("an experiment id must not be empty")
    tracker = workspace.tracker
    try:
        return tracker.get_experiment(text)
    except KeyError:
        pass
    except ValueError:
        # Not even a well-formed id; treat it as a prefix so the message stays the same.
        pass
    candidates = _prefix_candidates(tracker, text)
    if candidates is None:
        candidates = [e.id for e in tracker.list_experiments() if e.id.startswith(text)]
    return tracker.get_experiment(_pick("experiment", text, candidates, "quantrack runs list"))


def resolve_batch(workspace: Workspace, id_or_prefix: str) -> Batch:
    """The batch whose id is ``id_or_prefix`` or starts with it (unambiguously)."""
    text = id_or_prefix.strip()
    if not text:
        raise CliError("a batch id must not be empty")
    observer = workspace.observer
    try:
        return observer.get_batch(text)
    except KeyError:
        pass
    candidates = [b.id for b in observer.list_batches() if b.id.startswith(text)]
    return observer.get_batch(_pick("batch", text, candidates, "quantrack batches list"))
