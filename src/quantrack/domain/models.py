"""The domain's data: immutable pydantic models and the status enums.

Every model is frozen: a change (a status transition, stored results) returns a new model,
built by the pure functions in :mod:`quantrack.domain.lifecycle`. Validators here enforce
what must hold of any single value (an empty name, a NaN metric, a failed experiment
without an error); the lifecycle module enforces what may follow what.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from quantrack.domain.hashing import (
    JsonValue,
    canonical_params,
    config_hash,
    config_hash_of_canonical,
)
from quantrack.domain.ids import ID_PATTERN, new_id, utcnow

__all__ = [
    "TERMINAL_BATCH_STATUSES",
    "TERMINAL_STATUSES",
    "ArtifactRef",
    "Batch",
    "BatchItemResult",
    "BatchStatus",
    "ErrorCategory",
    "Experiment",
    "ExperimentDefinition",
    "ExperimentResults",
    "ExperimentStatus",
    "FinishedExperiments",
    "Provenance",
]


class ExperimentStatus(StrEnum):
    """Where an experiment is in its lifecycle (see :mod:`quantrack.domain.lifecycle`)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset(
    {ExperimentStatus.COMPLETED, ExperimentStatus.FAILED, ExperimentStatus.CANCELLED}
)


class BatchStatus(StrEnum):
    """Where a batch is in its lifecycle; the final one is derived from its items."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_BATCH_STATUSES = frozenset(
    {BatchStatus.COMPLETED, BatchStatus.PARTIAL, BatchStatus.FAILED, BatchStatus.CANCELLED}
)


class ErrorCategory(StrEnum):
    """Why a run failed, coarse enough to act on (see :func:`categorize_error`)."""

    DATA_ERROR = "data_error"
    PARAMETER_ERROR = "parameter_error"
    ENGINE_ERROR = "engine_error"
    TIMEOUT = "timeout"
    MEMORY_ERROR = "memory_error"
    UNKNOWN = "unknown"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, defer_build=True)


def _check_id(value: str) -> str:
    if not ID_PATTERN.match(value):
        raise ValueError(
            "must be 1-128 characters of letters, digits, '_', '.', ':' or '-', "
            f"starting with a letter or digit; got {value!r}"
        )
    return value


def _check_utc(value: dt.datetime) -> dt.datetime:
    # A naive timestamp is taken to be UTC, which is what every adapter writes.
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _check_metrics(value: Mapping[str, float]) -> dict[str, float]:
    for name, number in value.items():
        if not name or not name.strip():
            raise ValueError("metric names must not be empty")
        if not math.isfinite(number):
            raise ValueError(
                f"metric {name!r} is {number!r}; metrics must be finite numbers "
                "(leave an undefined metric out, e.g. the win rate of a run with no trades)"
            )
    return dict(value)


def _check_params(value: Mapping[str, Any]) -> dict[str, JsonValue]:
    return canonical_params(value)


def _check_tags(value: Sequence[str]) -> tuple[str, ...]:
    for tag in value:
        if not tag or not tag.strip():
            raise ValueError("tags must not be empty")
    return tuple(sorted(set(value)))


def _check_name(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only white space")
    return value


Id = Annotated[str, AfterValidator(_check_id)]
UtcDatetime = Annotated[dt.datetime, AfterValidator(_check_utc)]
Metrics = Annotated[dict[str, float], AfterValidator(_check_metrics)]
Params = Annotated[dict[str, Any], AfterValidator(_check_params)]
Tags = Annotated[tuple[str, ...], AfterValidator(_check_tags)]
Name = Annotated[str, AfterValidator(_check_name)]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Provenance(_Frozen):
    """Where a run came from: code version, engine, interpreter and packages.

    Every field may be empty: outside a git repository the git fields are ``None``.
    """

    git_commit: str | None = None
    git_branch: str | None = None
    git_dirty: bool | None = None
    git_diff_hash: str | None = None
    engine: str | None = None
    engine_version: str | None = None
    python_version: str | None = None
    platform: str | None = None
    hostname: str | None = None
    entry_point: str | None = None
    packages: dict[str, str] = Field(default_factory=dict)
    code_hash: str | None = None


class ArtifactRef(_Frozen):
    """A reference to content in an :class:`~quantrack.ports.ArtifactStore`.

    ``id`` is the sha256 of the bytes. ``kind`` is the artifact's role for the run
    (``equity_curve``, ``trades``, ``metrics``, ``analyzers``, ``diagnostics``, ``code``,
    ``input``, ``portfolio``, ...). ``name`` is a display name only, never a path into the
    store. ``part`` selects a piece of a shared artifact (the column of one run in a
    sweep's equity-curve file).
    """

    id: str
    size: int = Field(ge=0)
    media_type: str = "application/octet-stream"
    kind: str = "file"
    name: str | None = None
    part: str | None = None

    @field_validator("id")
    @classmethod
    def _sha256(cls, value: str) -> str:
        if not _SHA256.match(value):
            raise ValueError(f"must be 64 lowercase hexadecimal characters; got {value!r}")
        return value

    @field_validator("kind", "media_type")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class ExperimentDefinition(_Frozen):
    """What to run: everything needed to say what a run was, before it runs.

    ``config_hash`` is computed from ``params`` (see :func:`quantrack.config_hash`) unless
    given (as it is when a stored definition is loaded back).
    """

    name: Name
    strategy: str = ""
    engine: str = "python"
    params: Params = Field(default_factory=dict)
    inputs: tuple[ArtifactRef, ...] = ()
    provenance: Provenance = Field(default_factory=Provenance)
    tags: Tags = ()
    seed: int | None = None
    description: str = ""
    batch_id: Id | None = None
    batch_index: int | None = Field(default=None, ge=0)
    attempt: int = Field(default=1, ge=1)
    retry_of: Id | None = None
    reproduces: Id | None = None
    reused_from: Id | None = None
    config_hash: str = ""

    @field_validator("config_hash")
    @classmethod
    def _hash_format(cls, value: str) -> str:
        if value and not _SHA256.match(value):
            raise ValueError(
                f"must be a config_hash() value (64 lowercase hexadecimal characters), or "
                f"left out to be computed from params; got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _hash(self) -> Self:
        if not self.config_hash:
            # Frozen: write the derived value once, during validation.
            self.__dict__["config_hash"] = config_hash(self.params)
        return self


class ExperimentResults(_Frozen):
    """What a running experiment produced: metrics and output artifacts."""

    metrics: Metrics = Field(default_factory=dict)
    artifacts: tuple[ArtifactRef, ...] = ()


class Experiment(_Frozen):
    """A definition plus where it is in its lifecycle and what it produced.

    Build new ones with :func:`quantrack.domain.lifecycle.new_experiment` and change them
    with the lifecycle functions; the validator below rejects any combination of fields
    that the lifecycle can never produce.
    """

    id: Id = Field(default_factory=new_id)
    definition: ExperimentDefinition
    status: ExperimentStatus = ExperimentStatus.PENDING
    created_at: UtcDatetime = Field(default_factory=utcnow)
    started_at: UtcDatetime | None = None
    completed_at: UtcDatetime | None = None
    heartbeat_at: UtcDatetime | None = None
    metrics: Metrics = Field(default_factory=dict)
    artifacts: tuple[ArtifactRef, ...] = ()
    error: str | None = None
    error_category: ErrorCategory | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_lifecycle_fields(
            self.status,
            self.created_at,
            self.started_at,
            self.completed_at,
            self.error,
            self.error_category,
        )
        return self

    @property
    def name(self) -> str:
        """The definition's name."""
        return self.definition.name

    @property
    def params(self) -> dict[str, JsonValue]:
        """The definition's canonical parameters."""
        return self.definition.params

    @property
    def config_hash(self) -> str:
        """The definition's config hash."""
        return self.definition.config_hash

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from start to completion; ``None`` until both are known."""
        if self.started_at is None or self.completed_at is None:
            return None
        return (self.completed_at - self.started_at).total_seconds()

    @property
    def is_terminal(self) -> bool:
        """True once the experiment can no longer change."""
        return self.status in TERMINAL_STATUSES


def _check_lifecycle_fields(
    status: ExperimentStatus,
    created_at: dt.datetime,
    started_at: dt.datetime | None,
    completed_at: dt.datetime | None,
    error: str | None,
    error_category: ErrorCategory | None,
) -> None:
    """Raise ValueError when these fields describe a state the lifecycle cannot reach."""
    if started_at is not None and started_at < created_at:
        raise ValueError("started_at is before created_at; timestamps only move forward")
    if completed_at is not None:
        if completed_at < (started_at or created_at):
            raise ValueError("completed_at is before the start; timestamps only move forward")
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"a {status.value} experiment has no completed_at")
    elif status in TERMINAL_STATUSES:
        raise ValueError(f"a {status.value} experiment needs completed_at")
    if status in (ExperimentStatus.RUNNING, ExperimentStatus.COMPLETED, ExperimentStatus.FAILED):
        if started_at is None:
            raise ValueError(f"a {status.value} experiment needs started_at")
    elif status is ExperimentStatus.PENDING and started_at is not None:
        raise ValueError("a pending experiment has not started")
    if status is ExperimentStatus.FAILED:
        if not error or error_category is None:
            raise ValueError("a failed experiment needs an error message and an error_category")
    elif status is ExperimentStatus.COMPLETED and (error is not None or error_category is not None):
        raise ValueError("a completed experiment has no error")


def _first_non_finite(values: Sequence[float | None]) -> int | None:
    """The index of the first NaN or infinite value, or None when every value is finite."""
    # fsum runs in C; a finite sum proves every term finite (a NaN or an infinity never
    # sums to a finite number). None (an undefined metric) and an overflowing sum of
    # finite terms fall back to checking term by term.
    try:
        if math.isfinite(math.fsum(values)):  # type: ignore[arg-type]  # None -> TypeError
            return None
    except TypeError:
        try:
            if math.isfinite(math.fsum(x for x in values if x is not None)):
                return None
        except OverflowError:
            pass
    except OverflowError:
        pass
    for i, number in enumerate(values):
        if number is not None and not math.isfinite(number):
            return i
    return None


class FinishedExperiments(_Frozen):
    """Many finished experiments in columns: the bulk path for sweeps.

    A sweep of 10,000 runs shares almost everything (strategy, engine, provenance, inputs,
    batch); only params, metrics, timing and outcome vary per run. Holding those in columns
    lets a tracker validate and insert them without building 10,000 models.

    Row ``i`` is the experiment ``ids[i]`` named ``names[i]`` (or ``template.name``), with
    ``params[i]`` and, for every metric column, ``metrics[name][i]`` (``None`` means the
    metric is undefined for that run and is left out). ``artifacts`` are shared by every
    row; ``row_artifacts[i]``, when given, are that row's own. ``status``, ``created_at``,
    ``started_at`` and ``completed_at`` take one value per row, or a single value shared by
    every row (kept as a tuple of that value).
    """

    template: ExperimentDefinition
    ids: tuple[Id, ...]
    names: tuple[str, ...] | None = None
    params: tuple[dict[str, Any], ...]
    metrics: dict[str, tuple[float | None, ...]] = Field(default_factory=dict)
    status: tuple[ExperimentStatus, ...]
    created_at: tuple[UtcDatetime, ...]
    started_at: tuple[UtcDatetime | None, ...]
    completed_at: tuple[UtcDatetime, ...]
    errors: tuple[str | None, ...] | None = None
    error_categories: tuple[ErrorCategory | None, ...] | None = None
    artifacts: tuple[ArtifactRef, ...] = ()
    row_artifacts: tuple[tuple[ArtifactRef, ...], ...] | None = None
    batch_indexes: tuple[int, ...] | None = None
    config_hashes: tuple[str, ...] = ()

    @field_validator("created_at", "started_at", "completed_at", "status", mode="wrap")
    @classmethod
    def _broadcast(
        cls, value: object, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> tuple[object, ...]:
        # One value for every row (a sweep's rows usually share their timestamps and
        # status) is validated once and repeated, instead of given n times.
        if isinstance(value, list | tuple):
            if value and value.count(value[0]) == len(value):
                # `(now,) * n` is common too; count() compares by identity first.
                single: tuple[object, ...] = handler(value[:1])
                return single * len(value)
            return tuple(handler(value))
        ids = info.data.get("ids")
        if ids is None:
            raise ValueError("cannot broadcast one value without valid ids")
        one: tuple[object, ...] = handler((value,))
        return one * len(ids)

    @field_validator("params", mode="wrap")
    @classmethod
    def _params_rows(cls, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        # Plain dicts need no copy here: _validate_rows replaces each with its canonical
        # form (a new dict), which also rejects any value with no canonical form.
        if isinstance(value, list | tuple) and all(type(row) is dict for row in value):
            return tuple(value)
        return handler(value)

    @model_validator(mode="after")
    def _validate_rows(self) -> Self:
        n = len(self.ids)
        columns: dict[str, Sequence[object] | None] = {
            "names": self.names,
            "params": self.params,
            "status": self.status,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "errors": self.errors,
            "error_categories": self.error_categories,
            "row_artifacts": self.row_artifacts,
            "batch_indexes": self.batch_indexes,
        }
        for column, values in columns.items():
            if values is not None and len(values) != n:
                raise ValueError(f"{column} has {len(values)} rows but ids has {n}")
        for metric, values in self.metrics.items():
            if not metric.strip():
                raise ValueError("metric names must not be empty")
            if len(values) != n:
                raise ValueError(f"metric {metric!r} has {len(values)} rows but ids has {n}")
            bad = _first_non_finite(values)
            if bad is not None:
                raise ValueError(
                    f"metric {metric!r} of row {bad} ({self.ids[bad]}) is {values[bad]!r}; "
                    "use None for an undefined metric"
                )
        if len(set(self.ids)) != n:
            raise ValueError("ids must be unique")
        if self.names is not None and not all(name.strip() for name in self.names):
            i = next(i for i, name in enumerate(self.names) if not name.strip())
            raise ValueError(f"name of row {i} is empty")
        self._check_lifecycles(n)
        canonical = tuple(map(canonical_params, self.params))
        self.__dict__["params"] = canonical
        if not self.config_hashes:
            self.__dict__["config_hashes"] = tuple(map(config_hash_of_canonical, canonical))
        elif len(self.config_hashes) != n:
            raise ValueError(f"config_hashes has {len(self.config_hashes)} rows but ids has {n}")
        return self

    def _check_lifecycles(self, n: int) -> None:
        """Apply the lifecycle rules to each distinct combination of lifecycle fields.

        A sweep's rows mostly share status, timestamps and outcome, so checking each
        distinct combination once (in order of first appearance, which reports the first
        bad row) costs a hash per row instead of a Python call per row.
        """
        rows = zip(
            self.status,
            self.created_at,
            self.started_at,
            self.completed_at,
            self.errors or (None,) * n,
            self.error_categories or (None,) * n,
            strict=True,
        )
        for combo in dict.fromkeys(rows):
            status, created, started, completed, error, category = combo
            if status not in TERMINAL_STATUSES:
                i = self._first_row_of(combo, n)
                raise ValueError(
                    f"row {i} ({self.ids[i]}) is {status.value}; "
                    "the bulk path records finished experiments only"
                )
            try:
                _check_lifecycle_fields(status, created, started, completed, error, category)
            except ValueError as exc:
                i = self._first_row_of(combo, n)
                raise ValueError(f"row {i} ({self.ids[i]}): {exc}") from None

    def _first_row_of(self, combo: tuple[object, ...], n: int) -> int:
        rows = zip(
            self.status,
            self.created_at,
            self.started_at,
            self.completed_at,
            self.errors or (None,) * n,
            self.error_categories or (None,) * n,
            strict=True,
        )
        return next(i for i, row in enumerate(rows) if row == combo)

    def __len__(self) -> int:
        return len(self.ids)

    def row_metrics(self, i: int) -> dict[str, float]:
        """The defined metrics of row ``i``."""
        row = {name: values[i] for name, values in self.metrics.items()}
        return {name: float(value) for name, value in row.items() if value is not None}

    def experiments(self) -> Iterator[Experiment]:
        """Each row as a full :class:`Experiment` (for adapters that store models)."""
        errors = self.errors or (None,) * len(self)
        categories = self.error_categories or (None,) * len(self)
        base = self.template.model_dump()
        for i, experiment_id in enumerate(self.ids):
            definition = ExperimentDefinition.model_validate(
                {
                    **base,
                    "name": self.names[i] if self.names is not None else self.template.name,
                    "params": self.params[i],
                    "config_hash": self.config_hashes[i],
                    "batch_index": (
                        self.batch_indexes[i]
                        if self.batch_indexes is not None
                        else self.template.batch_index
                    ),
                }
            )
            own = self.row_artifacts[i] if self.row_artifacts is not None else ()
            yield Experiment(
                id=experiment_id,
                definition=definition,
                status=self.status[i],
                created_at=self.created_at[i],
                started_at=self.started_at[i],
                completed_at=self.completed_at[i],
                metrics=self.row_metrics(i),
                artifacts=self.artifacts + own,
                error=errors[i],
                error_category=categories[i],
            )

    @classmethod
    def from_experiments(cls, experiments: Sequence[Experiment]) -> FinishedExperiments:
        """Columns from finished experiments that share one template definition.

        The first experiment's definition is the template; every row keeps its own name,
        params, batch index and artifacts. Definitions that differ in anything else cannot
        share a template and raise ValueError.
        """
        if not experiments:
            raise ValueError("no experiments given")
        first = experiments[0].definition
        shared = {"name", "params", "config_hash", "batch_index"}
        template_fields = first.model_dump(exclude=shared)
        for experiment in experiments[1:]:
            if experiment.definition.model_dump(exclude=shared) != template_fields:
                raise ValueError(
                    f"experiment {experiment.id} differs from the first in more than "
                    "name, params and batch index; record it separately"
                )
        indexes = [e.definition.batch_index for e in experiments]
        if None in indexes and any(index is not None for index in indexes):
            # A column cannot hold "no index" beside indexes without inventing one.
            raise ValueError(
                "some experiments have a batch_index and some do not; record them separately"
            )
        metric_names = sorted({name for e in experiments for name in e.metrics})
        return cls(
            template=first,
            ids=tuple(e.id for e in experiments),
            names=tuple(e.name for e in experiments),
            params=tuple(e.params for e in experiments),
            metrics={m: tuple(e.metrics.get(m) for e in experiments) for m in metric_names},
            status=tuple(e.status for e in experiments),
            created_at=tuple(e.created_at for e in experiments),
            started_at=tuple(e.started_at for e in experiments),
            completed_at=tuple(e.completed_at for e in experiments),
            errors=tuple(e.error for e in experiments),
            error_categories=tuple(e.error_category for e in experiments),
            row_artifacts=tuple(e.artifacts for e in experiments),
            batch_indexes=(
                tuple(index for index in indexes if index is not None)
                if indexes[0] is not None
                else None
            ),
            config_hashes=tuple(e.config_hash for e in experiments),
        )


class BatchItemResult(_Frozen):
    """The outcome of one item of a batch: which run it became and how it ended."""

    index: int = Field(ge=0)
    experiment_id: Id | None = None
    params: Params = Field(default_factory=dict)
    status: ExperimentStatus
    error: str | None = None
    error_category: ErrorCategory | None = None
    duration_seconds: float | None = Field(default=None, ge=0)
    attempt: int = Field(default=1, ge=1)
    reused: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.status not in TERMINAL_STATUSES:
            raise ValueError(f"an item result is finished; got status {self.status.value!r}")
        if self.status is ExperimentStatus.FAILED:
            if not self.error or self.error_category is None:
                raise ValueError("a failed item needs an error message and an error_category")
        elif self.status is ExperimentStatus.COMPLETED and (
            self.error is not None or self.error_category is not None
        ):
            raise ValueError("a completed item has no error")
        return self

    @property
    def succeeded(self) -> bool:
        """True when the item completed (reused results count as completed)."""
        return self.status is ExperimentStatus.COMPLETED


class Batch(_Frozen):
    """A sweep or any list of runs treated as one unit, with counts of its items.

    ``succeeded + failed + cancelled`` items have finished out of ``total``; the final
    status is derived from them by :func:`quantrack.domain.lifecycle.finish_batch`.
    """

    id: Id = Field(default_factory=new_id)
    name: Name
    status: BatchStatus = BatchStatus.PENDING
    total: int = Field(ge=0)
    succeeded: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    cancelled: int = Field(default=0, ge=0)
    reused: int = Field(default=0, ge=0)
    error_summary: dict[ErrorCategory, int] = Field(default_factory=dict)
    created_at: UtcDatetime = Field(default_factory=utcnow)
    started_at: UtcDatetime | None = None
    completed_at: UtcDatetime | None = None
    heartbeat_at: UtcDatetime | None = None
    params: Params = Field(default_factory=dict)
    tags: Tags = ()
    selection_metric: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.finished > self.total:
            raise ValueError(f"{self.finished} items finished but the batch has only {self.total}")
        if self.reused > self.succeeded:
            raise ValueError("reused items are a subset of succeeded ones")
        if sum(self.error_summary.values()) != self.failed:
            raise ValueError("error_summary must count exactly the failed items")
        if any(count <= 0 for count in self.error_summary.values()):
            raise ValueError("error_summary counts must be positive")
        if self.started_at is not None and self.started_at < self.created_at:
            raise ValueError("started_at is before created_at; timestamps only move forward")
        terminal = self.status in TERMINAL_BATCH_STATUSES
        if terminal != (self.completed_at is not None):
            raise ValueError(
                f"a {self.status.value} batch {'needs' if terminal else 'has no'} completed_at"
            )
        if self.completed_at is not None and self.completed_at < (
            self.started_at or self.created_at
        ):
            raise ValueError("completed_at is before the start; timestamps only move forward")
        if self.status is BatchStatus.RUNNING and self.started_at is None:
            raise ValueError("a running batch needs started_at")
        if self.status is BatchStatus.PENDING and (self.started_at is not None or self.finished):
            raise ValueError("a pending batch has not started")
        return self

    @property
    def finished(self) -> int:
        """Items that have ended, in any way."""
        return self.succeeded + self.failed + self.cancelled

    @property
    def is_terminal(self) -> bool:
        """True once the batch can no longer change."""
        return self.status in TERMINAL_BATCH_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from start to completion; ``None`` until both are known."""
        if self.started_at is None or self.completed_at is None:
            return None
        return (self.completed_at - self.started_at).total_seconds()

    @property
    def throughput(self) -> float | None:
        """Finished items per second over the batch's duration."""
        duration = self.duration_seconds
        if not duration:
            return None
        return self.finished / duration
