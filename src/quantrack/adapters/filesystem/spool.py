"""The fallback spool: run records that could not be written, kept until the next open.

When quantrack fails while recording a run (the disk is full, the database stays busy past
its timeout, a bug), the engine adapters still return the backtest's result and write the
run's complete record here instead (see :mod:`quantrack.engines._safety`).
:func:`open_workspace` replays the spool into the workspace the next time it is opened.

Layout, inside the workspace folder::

    spool/
      <record id>.json          one SpoolRecord (format "quantrack-spool/1"), written last
      <record id>.blobs/<sha256> artifact bytes the store did not take, one file each
      corrupt/                  files that could not be read, moved aside for a human

Every file is written to a temporary name and renamed into place, and the JSON file only
after its blobs, so a reader that sees ``<id>.json`` sees a complete record. A replay first
claims the file by renaming it (so two processes opening the workspace at once never
replay the same record twice), then writes the blobs, the experiments and the batch, and
only then deletes the files. Replaying is idempotent: an experiment already stored in a
final state is skipped, one left half-written (pending or running) by the failed attempt is
replaced by the complete record, and batch items already recorded are not sent again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quantrack.domain import (
    Batch,
    BatchItemResult,
    BatchNotFound,
    BatchStatus,
    DuplicateExperiment,
    Experiment,
    ExperimentNotFound,
    FinishedExperiments,
    new_id,
    utcnow,
)
from quantrack.domain._logging import get_logger
from quantrack.ports import ArtifactStore, BatchHistory, BatchObserver, ExperimentTracker

__all__ = [
    "SPOOL_DIR",
    "SPOOL_FORMAT",
    "ReplayReport",
    "SpoolRecord",
    "read_spool_record",
    "replay_spool",
    "write_spool_record",
]

SPOOL_DIR = "spool"
SPOOL_FORMAT: Literal["quantrack-spool/1"] = "quantrack-spool/1"
_CORRUPT_DIR = "corrupt"
_CLAIMED = ".claimed-"

_log = get_logger("quantrack.spool")


class SpoolRecord(BaseModel):
    """Everything needed to write one run (or one sweep) into a workspace later.

    ``experiments`` are single runs in their final state; ``finished`` are sweeps in
    columns; ``batch`` is the batch in its last known state (final when the sweep ended)
    with its ``items``; ``blobs`` lists the artifact ids whose bytes travel with the
    record because the artifact store did not take them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["quantrack-spool/1"] = SPOOL_FORMAT
    id: str = Field(default_factory=new_id)
    created_at: dt.datetime = Field(default_factory=utcnow)
    engine: str = ""
    reason: str = ""
    experiments: tuple[Experiment, ...] = ()
    finished: tuple[FinishedExperiments, ...] = ()
    batch: Batch | None = None
    items: tuple[BatchItemResult, ...] = ()
    blobs: tuple[str, ...] = ()

    @property
    def experiment_ids(self) -> list[str]:
        """Ids of every experiment the record holds."""
        ids = [e.id for e in self.experiments]
        for records in self.finished:
            ids.extend(records.ids)
        return ids


@dataclass
class ReplayReport:
    """What one :func:`replay_spool` call did."""

    replayed: list[str] = field(default_factory=list)
    experiments: int = 0
    skipped: int = 0
    corrupt: list[Path] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_spool_record(folder: Path, record: SpoolRecord, blobs: dict[str, bytes]) -> Path:
    """Write ``record`` and the bytes of its ``blobs`` into ``folder``; return the JSON path.

    ``blobs`` maps artifact id (the sha256 of the bytes) to bytes; only the ids listed in
    ``record.blobs`` are written. Raises OSError when the folder cannot be written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if record.blobs:
        blob_dir = folder / f"{record.id}.blobs"
        blob_dir.mkdir(exist_ok=True)
        for artifact_id in record.blobs:
            _write_atomically(blob_dir / artifact_id, blobs[artifact_id])
    path = folder / f"{record.id}.json"
    _write_atomically(path, record.model_dump_json().encode("utf-8"))
    return path


def read_spool_record(path: Path) -> SpoolRecord:
    """Parse one spool file; raises ValueError (pydantic's ValidationError) when damaged."""
    return SpoolRecord.model_validate_json(path.read_bytes())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claimable(folder: Path) -> list[Path]:
    """Spool files to replay: unclaimed ones, and claims left by processes that died."""
    found = sorted(folder.glob("*.json"))
    for claimed in sorted(folder.glob(f"*.json{_CLAIMED}*")):
        pid_text = claimed.name.rsplit(_CLAIMED, 1)[1]
        if not pid_text.isdigit() or not _pid_alive(int(pid_text)):
            found.append(claimed)
    return found


def _move_aside(folder: Path, path: Path, reason: str, report: ReplayReport) -> None:
    corrupt = folder / _CORRUPT_DIR
    corrupt.mkdir(exist_ok=True)
    name = path.name.split(_CLAIMED, 1)[0]
    target = corrupt / name
    os.replace(path, target)
    blob_dir = folder / name.replace(".json", ".blobs")
    if blob_dir.is_dir():
        os.replace(blob_dir, corrupt / blob_dir.name)
    report.corrupt.append(target)
    _log.warning(
        "spool.corrupt_file_moved_aside",
        file=str(path),
        moved_to=str(target),
        reason=reason,
    )


def replay_spool(
    folder: Path,
    tracker: ExperimentTracker,
    artifacts: ArtifactStore,
    observer: BatchObserver,
) -> ReplayReport:
    """Write every record spooled in ``folder`` into the given ports, then delete it.

    Never raises for a spool problem: a file that cannot be parsed (or whose blobs are
    missing or damaged) is moved to ``folder/corrupt/`` with a warning; a record the
    workspace cannot take right now (busy, full) is left in place for the next open, with
    a warning. A missing folder is an empty spool.
    """
    report = ReplayReport()
    if not folder.is_dir():
        return report
    for path in _claimable(folder):
        claimed = folder / f"{path.name.split(_CLAIMED, 1)[0]}{_CLAIMED}{os.getpid()}"
        try:
            os.replace(path, claimed)
        except FileNotFoundError:
            continue  # another process claimed it first
        try:
            record = read_spool_record(claimed)
            blobs = _read_blobs(folder, record)
        except (ValidationError, ValueError, OSError) as exc:
            _move_aside(folder, claimed, str(exc).splitlines()[0], report)
            continue
        try:
            written, skipped = _replay_record(record, blobs, tracker, artifacts, observer)
        except Exception as exc:
            # The workspace cannot take it now; release the claim and try on the next open.
            os.replace(claimed, folder / claimed.name.split(_CLAIMED, 1)[0])
            report.deferred.append(record.id)
            _log.warning(
                "spool.replay_deferred",
                record=record.id,
                error=f"{type(exc).__name__}: {exc}",
                hint="the record stays in the spool and is replayed on the next open",
            )
            continue
        claimed.unlink()
        shutil.rmtree(folder / f"{record.id}.blobs", ignore_errors=True)
        report.replayed.append(record.id)
        report.experiments += written
        report.skipped += skipped
        _log.info("spool.replayed", record=record.id, experiments=written, already_present=skipped)
    return report


def _read_blobs(folder: Path, record: SpoolRecord) -> dict[str, bytes]:
    blobs: dict[str, bytes] = {}
    for artifact_id in record.blobs:
        path = folder / f"{record.id}.blobs" / artifact_id
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != artifact_id:
            raise ValueError(f"spooled blob {artifact_id} is damaged: its content hash differs")
        blobs[artifact_id] = data
    return blobs


def _replay_record(
    record: SpoolRecord,
    blobs: dict[str, bytes],
    tracker: ExperimentTracker,
    artifacts: ArtifactStore,
    observer: BatchObserver,
) -> tuple[int, int]:
    """Write one record; return (experiments written, experiments already present)."""
    kinds = _blob_kinds(record)
    for artifact_id, data in blobs.items():
        media_type, kind = kinds.get(artifact_id, ("application/octet-stream", "file"))
        artifacts.put(data, kind=kind, media_type=media_type)
    written = skipped = 0
    for experiment in record.experiments:
        done = _replay_rows(tracker, FinishedExperiments.from_experiments([experiment]))
        written += done
        skipped += 1 - done
    for records in record.finished:
        done = _replay_rows(tracker, records)
        written += done
        skipped += len(records) - done
    if record.batch is not None:
        _replay_batch(record.batch, record.items, observer)
    return written, skipped


def _blob_kinds(record: SpoolRecord) -> dict[str, tuple[str, str]]:
    kinds: dict[str, tuple[str, str]] = {}
    refs = [ref for e in record.experiments for ref in (*e.artifacts, *e.definition.inputs)]
    for records in record.finished:
        refs.extend(records.artifacts)
        refs.extend(records.template.inputs)
        for row in records.row_artifacts or ():
            refs.extend(row)
    for ref in refs:
        kinds.setdefault(ref.id, (ref.media_type, ref.kind))
    return kinds


def _replay_rows(tracker: ExperimentTracker, records: FinishedExperiments) -> int:
    """Store the rows not already stored in a final state; return how many were stored."""
    try:
        tracker.record_finished(records)
    except DuplicateExperiment:
        pass
    else:
        return len(records)
    # Some rows are already there: keep final ones, replace half-written ones.
    missing: list[Experiment] = []
    for experiment in records.experiments():
        try:
            stored = tracker.get_experiment(experiment.id)
        except ExperimentNotFound:
            missing.append(experiment)
            continue
        if not stored.is_terminal:
            tracker.delete_experiment(experiment.id)
            missing.append(experiment)
    for experiment in missing:
        # One at a time: the rows need not share a template once some are left out.
        tracker.record_finished(FinishedExperiments.from_experiments([experiment]))
    return len(missing)


def _replay_batch(
    batch: Batch, items: tuple[BatchItemResult, ...], observer: BatchObserver
) -> None:
    seen: set[tuple[int, int]] = set()
    stored: Batch | None = None
    if isinstance(observer, BatchHistory):
        try:
            stored = observer.get_batch(batch.id)
        except BatchNotFound:
            stored = None
        if stored is not None:
            if stored.is_terminal:
                return
            seen = {(item.index, item.attempt) for item in observer.batch_items(batch.id)}
    running = Batch(
        id=batch.id,
        name=batch.name,
        status=BatchStatus.RUNNING,
        total=batch.total,
        created_at=batch.created_at,
        started_at=batch.started_at or batch.created_at,
        params=batch.params,
        tags=batch.tags,
        selection_metric=batch.selection_metric,
    )
    if stored is None:
        observer.on_batch_started(running)
    for item in items:
        if (item.index, item.attempt) not in seen:
            observer.on_item_finished(running, item)
    if batch.is_terminal:
        observer.on_batch_finished(batch)
