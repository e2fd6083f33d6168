"""Export one experiment as a browsable folder, beside the composition root.

:func:`export_experiment` materializes a recorded run for people and tools that do not
speak quantrack::

    dest/
      results/    equity curve and trades (CSV and Parquet), metrics (CSV, Parquet, JSON)
      code/       the captured strategy code, in its original relative layout
      artifacts/  every other artifact of the run, by kind
      metadata/experiment.json   id, timestamps, engine and Python versions, entry point,
                                 captured files, input artifacts, params, metrics

It lives outside ``services`` because it converts frames with pandas. Every artifact is
verified against its hash as it is read, so an export never silently carries damage.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from quantrack.adapters.frames import JSON_MEDIA_TYPE, PARQUET_MEDIA_TYPE, frame_from_parquet
from quantrack.domain import ArtifactRef, Experiment
from quantrack.domain.artifacts import display_name
from quantrack.services.code_capture import CODE_KIND, MANIFEST_KIND, read_manifest

if TYPE_CHECKING:
    import pandas as pd

    from quantrack.workspace import Workspace

__all__ = ["EXPORT_FORMAT", "export_experiment"]

EXPORT_FORMAT = "quantrack-export/1"
_FRAME_KINDS = ("equity_curve", "trades")
_METADATA = PurePosixPath("metadata/experiment.json")


def export_experiment(
    workspace: Workspace,
    experiment_id: str,
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> Path:
    """Write experiment ``experiment_id`` of ``workspace`` as a folder at ``dest``.

    ``dest`` must not exist or be empty; with ``overwrite=True`` an earlier export there
    is replaced (a non-empty folder that is not a quantrack export is never touched).
    The folder is assembled beside ``dest`` and renamed into place, so a failed export
    leaves nothing half-written. Returns ``dest``.

    Raises :class:`ExperimentNotFound`, :class:`IntegrityError` for a damaged artifact,
    and FileExistsError for a non-empty ``dest``.
    """
    target = Path(dest).absolute()
    experiment = workspace.tracker.get_experiment(experiment_id)
    _check_destination(target, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.export-", dir=target.parent))
    try:
        _write_export(workspace, experiment, staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _check_destination(target: Path, *, overwrite: bool) -> None:
    if not target.exists():
        return
    if not target.is_dir() or target.is_symlink():
        raise FileExistsError(f"cannot export to {target}: it exists and is not a folder")
    if not any(target.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(
            f"cannot export to {target}: the folder is not empty; choose a new folder or "
            "pass overwrite=True to replace an earlier export"
        )
    if not (target / _METADATA).is_file():
        raise FileExistsError(
            f"refusing to overwrite {target}: it is not empty and holds no quantrack export "
            f"({_METADATA} is missing); choose a new or empty folder"
        )


def _write_export(workspace: Workspace, experiment: Experiment, root: Path) -> None:
    store = workspace.artifacts
    results = root / "results"
    results.mkdir()
    used_names: set[str] = set()
    code_files: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    manifests = [ref for ref in experiment.artifacts if ref.kind == MANIFEST_KIND]
    code_ids = set()
    for manifest in manifests:
        for relative, artifact_id in read_manifest(store, manifest).items():
            data = store.get(artifact_id, verify=True)
            _write_inside(root / "code", relative, data)
            code_files.append({"path": relative, "id": artifact_id, "size": len(data)})
            code_ids.add(artifact_id)
    for ref in experiment.artifacts:
        if ref.kind == MANIFEST_KIND or (ref.kind == CODE_KIND and ref.id in code_ids):
            continue
        data = store.get(ref.id, verify=True)
        if ref.kind in _FRAME_KINDS:
            frame = _as_frame(ref, data)
            if frame is not None:
                stem = _unique(ref.kind, used_names)
                frame.to_parquet(results / f"{stem}.parquet")
                frame.to_csv(results / f"{stem}.csv")
                continue
        if ref.kind == CODE_KIND:
            relative = _unique(display_name(ref.name) or ref.id, used_names)
            _write_inside(root / "code", relative, data)
            code_files.append({"path": relative, "id": ref.id, "size": len(data)})
            continue
        filename = _unique(display_name(ref.name) or f"{ref.id[:16]}", used_names)
        relative = f"{_safe_component(ref.kind)}/{filename}"
        _write_inside(root / "artifacts", relative, data)
        others.append({**_describe(ref), "path": f"artifacts/{relative}"})
    _write_metrics(experiment, results)
    metadata = _metadata(experiment, code_files, others)
    _write_inside(
        root,
        str(_METADATA),
        (json.dumps(metadata, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode(),
    )


def _as_frame(ref: ArtifactRef, data: bytes) -> pd.DataFrame | None:
    import pandas as pd

    if ref.media_type == PARQUET_MEDIA_TYPE:
        frame = frame_from_parquet(data)
    elif ref.media_type == JSON_MEDIA_TYPE:
        document = json.loads(data.decode("utf-8"))
        try:
            frame = pd.DataFrame(document)
        except (ValueError, TypeError):
            return None  # not tabular (a scalar-valued document): exported as a file
    else:
        return None
    if ref.part is not None:
        # One run's piece of a sweep's shared file: its column of a wide equity table, or
        # its rows of a long trades table.
        if ref.part in frame.columns:
            frame = frame[[ref.part]]
        elif "part" in frame.columns:
            frame = frame[frame["part"].astype(str) == ref.part].reset_index(drop=True)
    return frame


def _write_metrics(experiment: Experiment, results: Path) -> None:
    import pandas as pd

    metrics = dict(sorted(experiment.metrics.items()))
    frame = pd.DataFrame({"metric": list(metrics), "value": list(metrics.values())})
    frame = frame.astype({"metric": "string", "value": "float64"})
    frame.to_csv(results / "metrics.csv", index=False)
    frame.to_parquet(results / "metrics.parquet", index=False)
    (results / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", "utf-8")


def _metadata(
    experiment: Experiment, code_files: list[dict[str, Any]], others: list[dict[str, Any]]
) -> dict[str, Any]:
    definition = experiment.definition
    provenance = definition.provenance
    return {
        "format": EXPORT_FORMAT,
        "id": experiment.id,
        "name": definition.name,
        "status": experiment.status.value,
        "strategy": definition.strategy,
        "created_at": _iso(experiment.created_at),
        "started_at": _iso(experiment.started_at),
        "completed_at": _iso(experiment.completed_at),
        "duration_seconds": experiment.duration_seconds,
        "framework": {
            "engine": provenance.engine or definition.engine,
            "version": provenance.engine_version,
        },
        "python_version": provenance.python_version,
        "platform": provenance.platform,
        "hostname": provenance.hostname,
        "entry_point": provenance.entry_point,
        "git": {
            "commit": provenance.git_commit,
            "branch": provenance.git_branch,
            "dirty": provenance.git_dirty,
            "diff_hash": provenance.git_diff_hash,
        },
        "packages": provenance.packages,
        "code_hash": provenance.code_hash,
        "captured_files": sorted(code_files, key=lambda item: str(item["path"])),
        "input_artifacts": [_describe(ref) for ref in definition.inputs],
        "other_artifacts": others,
        "params": definition.params,
        "config_hash": definition.config_hash,
        "metrics": dict(sorted(experiment.metrics.items())),
        "tags": list(definition.tags),
        "seed": definition.seed,
        "batch_id": definition.batch_id,
        "error": experiment.error,
        "error_category": experiment.error_category.value if experiment.error_category else None,
    }


def _describe(ref: ArtifactRef) -> dict[str, Any]:
    return ref.model_dump(exclude_none=True)


def _iso(moment: Any) -> str | None:
    return None if moment is None else str(moment.isoformat())


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}_{n}"
    used.add(candidate)
    return candidate


def _safe_component(name: str) -> str:
    return display_name(name) or "artifact"


def _write_inside(root: Path, relative: str, data: bytes) -> None:
    """Write ``data`` at ``root/relative``, refusing any path that leaves ``root``."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise ValueError(f"refusing to export to {relative!r}: it leaves the export folder")
    path = root.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
