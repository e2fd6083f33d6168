"""Record vectorbt portfolios, including whole parameter sweeps, in one call.

::

    from quantrack.engines.vectorbt import VectorbtAdapter

    adapter = VectorbtAdapter(workspace)
    result = adapter.record(pf, name="ma-cross", params={"fees": 0.001}, inputs=close)
    pf = adapter.run(build_portfolio, close, name="ma-cross", fast=10, slow=50)

A single-column portfolio becomes one experiment. A portfolio with many columns (vectorbt
broadcasting a parameter grid) becomes one experiment per column, all in one batch, with
each column's parameters read from the column index levels (``fast_window``,
``slow_window``, ``symbol``, ...) and merged with the caller's ``params``. The rows are
written with the tracker's bulk path (:meth:`ExperimentTracker.record_finished`), and the
equity curves of all columns go into ONE shared Parquet artifact (each run's reference
names its column in ``part``), as do the trades.

Metrics are computed by vectorbt itself, for all columns at once (see
:mod:`quantrack.engines._vbt_metrics` and the vectorbt guide for their units).

Recording never breaks the backtest (:mod:`quantrack.engines._safety`): a storage failure
logs one warning, spools the record for the next ``open_workspace()``, and the portfolio is
returned untouched. vectorbt is imported when this module is, never by ``import quantrack``.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantrack.adapters.frames import PARQUET_MEDIA_TYPE, frame_to_parquet, put_json
from quantrack.adapters.memory import InMemoryBatchObserver
from quantrack.domain import (
    ArtifactRef,
    Batch,
    BatchItemResult,
    EngineNotInstalled,
    Experiment,
    ExperimentDefinition,
    ExperimentResults,
    ExperimentStatus,
    FinishedExperiments,
    InvalidParams,
    Provenance,
    canonical_params,
    categorize_error,
    new_id,
    new_ids,
    utcnow,
)

# PickleNotAllowed is re-exported here, where users meet it.
from quantrack.domain.errors import PickleNotAllowed
from quantrack.domain.lifecycle import finish_batch, record_items, start_batch
from quantrack.engines._safety import RecordingGuard
from quantrack.ports import ArtifactStore, BatchObserver, ExperimentTracker
from quantrack.services.provenance import capture_origin
from quantrack.services.recording import describe_exception

try:
    import pandas as pd
    import vectorbt as vbt
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise EngineNotInstalled("vectorbt", "vectorbt") from exc

from quantrack.engines import _vbt_frames as frames
from quantrack.engines._vbt_metrics import METRICS, ColumnAxis, column_axis, start_evaluation

if TYPE_CHECKING:
    import datetime as dt

    from quantrack.workspace import Workspace

__all__ = [
    "METRICS",
    "PickleNotAllowed",
    "RecordResult",
    "VectorbtAdapter",
    "load_portfolio",
]

ENGINE = "vectorbt"
PICKLE_MEDIA_TYPE = "application/x-python-pickle"
_MAX_CODE_BYTES = 1_000_000

InputLike = Any  # a DataFrame, a Series or an ArtifactRef


@dataclass(frozen=True)
class RecordResult:
    """What one :meth:`VectorbtAdapter.record` (or :meth:`~VectorbtAdapter.run`) wrote.

    ``experiment_ids`` has one id per portfolio column, in column order; ``batch_id`` is
    the sweep's batch (``None`` for a single column); ``run_id`` is the experiment that
    recorded a :meth:`~VectorbtAdapter.run` call (the same as the only experiment for a
    single column). ``recorded`` is False when storage failed and the record was spooled
    (to ``spool_file``) instead. ``artifacts`` are the shared artifacts by kind.
    """

    experiment_ids: tuple[str, ...]
    batch_id: str | None = None
    run_id: str | None = None
    labels: tuple[str, ...] = ()
    artifacts: dict[str, ArtifactRef] = field(default_factory=dict)
    recorded: bool = True
    spool_file: Path | None = None

    @property
    def experiment_id(self) -> str:
        """The one experiment of a single-column portfolio.

        Raises ValueError for a sweep, whose runs are in ``experiment_ids``.
        """
        if len(self.experiment_ids) != 1:
            raise ValueError(
                f"this record holds {len(self.experiment_ids)} experiments (a sweep); "
                "use .experiment_ids or .batch_id"
            )
        return self.experiment_ids[0]


@dataclass
class _Prepared:
    """Checked arguments of one recording."""

    name: str
    params: dict[str, Any]
    inputs: list[tuple[str, InputLike]]
    tags: tuple[str, ...]
    strategy: str
    description: str
    provenance: Provenance | None = None
    input_refs: tuple[ArtifactRef, ...] = ()
    code_refs: tuple[ArtifactRef, ...] = ()
    reproduces: str | None = None
    call: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Sweep:
    """What a sweep's records are made of before its metrics are known: the batch as it
    starts, and each column's label, run id, params and item result.
    """

    batch: Batch
    labels: tuple[str, ...]
    ids: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]
    items: tuple[BatchItemResult, ...]
    started_at: dt.datetime
    completed_at: dt.datetime


def _plan_sweep(
    prepared: _Prepared,
    axis: ColumnAxis,
    *,
    started_at: dt.datetime,
    completed_at: dt.datetime,
) -> _Sweep:
    """The sweep's batch, ids, params and item events (see :class:`_Sweep`)."""
    n = len(axis)
    batch = Batch(
        name=prepared.name,
        total=n,
        params=prepared.params,
        tags=prepared.tags,
        created_at=started_at,
    )
    # Drawn together (one clock reading, one read of the random source); ids of the same
    # millisecond differ in their 80 random bits.
    ids = tuple(new_ids(n))
    shared_params = prepared.params
    rows = tuple({**shared_params, **column} for column in axis.params)
    duration = max((completed_at - started_at).total_seconds(), 0.0)
    items = tuple(
        BatchItemResult(
            index=i,
            experiment_id=ids[i],
            params=rows[i],
            status=ExperimentStatus.COMPLETED,
            duration_seconds=duration,
        )
        for i in range(n)
    )
    return _Sweep(
        batch=start_batch(batch, now=started_at),
        labels=axis.labels,
        ids=ids,
        rows=rows,
        items=items,
        started_at=started_at,
        completed_at=completed_at,
    )


class VectorbtAdapter:
    """Records vectorbt Portfolios into a workspace (or into the given ports).

    Pass a :class:`~quantrack.workspace.Workspace`, or the ports themselves (``tracker``
    and ``artifacts`` are required then; without an ``observer`` the batch events of a
    sweep are kept in an in-memory one, ``adapter.observer``). Ports given alongside a
    workspace replace the workspace's.

    ``store_inputs=True`` stores each input frame as Parquet (once per distinct content)
    and references that; by default only a small JSON fingerprint of it (a content hash,
    shape, columns and date range) is stored. ``capture_code=True`` stores the source of
    the function given to :meth:`run` (or of the module calling :meth:`record`).
    """

    def __init__(
        self,
        workspace: Workspace | None = None,
        *,
        tracker: ExperimentTracker | None = None,
        artifacts: ArtifactStore | None = None,
        observer: BatchObserver | None = None,
        store_inputs: bool = False,
        capture_code: bool = True,
    ) -> None:
        # `is None`, not `or`: an empty in-memory tracker has a length of 0 and is falsy.
        if workspace is not None:
            tracker = workspace.tracker if tracker is None else tracker
            artifacts = workspace.artifacts if artifacts is None else artifacts
            observer = workspace.observer if observer is None else observer
        if tracker is None or artifacts is None:
            raise TypeError(
                "VectorbtAdapter needs a workspace (VectorbtAdapter(open_workspace())) or "
                "both tracker= and artifacts= ports"
            )
        if not isinstance(tracker, ExperimentTracker):
            raise TypeError(f"tracker must be an ExperimentTracker, got {type(tracker).__name__}")
        if not isinstance(artifacts, ArtifactStore):
            raise TypeError(f"artifacts must be an ArtifactStore, got {type(artifacts).__name__}")
        if observer is not None and not isinstance(observer, BatchObserver):
            raise TypeError(f"observer must be a BatchObserver, got {type(observer).__name__}")
        self.tracker: ExperimentTracker = tracker
        self.artifacts: ArtifactStore = artifacts
        self.observer: BatchObserver = observer if observer is not None else InMemoryBatchObserver()
        self.workspace = workspace
        self.store_inputs = bool(store_inputs)
        self.capture_code = bool(capture_code)
        self.last_result: RecordResult | None = None

    # -- public API ----------------------------------------------------------------------

    def record(
        self,
        pf: vbt.Portfolio,
        *,
        name: str,
        params: Mapping[str, Any] | None = None,
        inputs: InputLike | Mapping[str, InputLike] | Sequence[InputLike] | None = None,
        tags: Iterable[str] = (),
        strategy: str = "",
        description: str = "",
        equity: bool = True,
        trades: bool = True,
        allow_pickle: bool = False,
        reproduces: str | None = None,
        code_from: object | None = None,
    ) -> RecordResult:
        """Record a finished Portfolio: one experiment per column, a batch for several.

        ``params`` are shared by every column and merged with the parameters read from the
        column index (a name in both raises :class:`InvalidParams`). ``inputs`` are the price frames
        the portfolio was built from (a frame, a mapping of name to frame, or a list;
        :class:`ArtifactRef` s are referenced as they are). ``equity``/``trades`` store
        those frames (one shared Parquet file each); ``allow_pickle=True`` also stores the
        whole Portfolio pickled. ``code_from`` is what to capture the code of (a function,
        class, module or path; by default the calling file); ``reproduces`` is the id of
        the run this one reproduces. Bad arguments raise at once; a storage failure does
        not raise (see the module docstring) and gives ``recorded=False``.

        A portfolio built by your own code cannot be rebuilt by
        :func:`quantrack.reproduce.reproduce`; record it with :meth:`run` for that.
        """
        _check_portfolio(pf)
        prepared = _prepare(name, params, inputs, tags, strategy, description)
        prepared.reproduces = reproduces
        axis = column_axis(pf, single_params_from_index=False)
        _check_param_clash(prepared.params, axis.level_names, len(axis))
        now = utcnow()
        code: object | None = None
        if self.capture_code:
            code = code_from if code_from is not None else _caller_file()
        guard = self._guard(prepared.name)
        with guard:
            result = guard.attempt(
                self._write,
                guard,
                pf,
                prepared,
                started_at=now,
                completed_at=now,
                code=code,
                equity=equity,
                trades=trades,
                allow_pickle=allow_pickle,
                run_id=None,
                axis=axis,
            )
        return self._finish(result, guard)

    def run(
        self,
        fn: Callable[..., vbt.Portfolio],
        *args: Any,
        name: str,
        params: Mapping[str, Any] | None = None,
        inputs: InputLike | Mapping[str, InputLike] | Sequence[InputLike] | None = None,
        tags: Iterable[str] = (),
        equity: bool = True,
        trades: bool = True,
        allow_pickle: bool = False,
        reproduces: str | None = None,
        **kwargs: Any,
    ) -> vbt.Portfolio:
        """Call ``fn(*args, **kwargs)``, which builds a Portfolio, and record it; return it.

        An experiment named ``name`` is running while ``fn`` executes (its params are
        ``params`` plus the plain arguments, positional ones under their parameter names;
        frame and Series arguments are its inputs). When ``fn`` raises, the experiment
        fails with the error's category and a traceback artifact, and the original
        exception is re-raised unchanged. When it returns, the portfolio is recorded as
        by :meth:`record`: a single column on this experiment; several columns as a batch
        of their own, this experiment holding the shared artifacts. What was written is
        in ``adapter.last_result``.

        The call itself is recorded as a ``recipe`` artifact (the function's module and
        name, plain arguments as values, frames and Series as inputs) so that
        :func:`quantrack.reproduce.reproduce` can run it again; ``reproduces`` is the id
        of the run this call reproduces.
        """
        if not callable(fn):
            raise TypeError(f"run() needs a function that returns a Portfolio, got {fn!r}")
        bound = _bound_arguments(fn, args, kwargs)
        call_params = {**_plain_kwargs(bound), **_plain_kwargs(kwargs), **dict(params or {})}
        strategy = _qualified_name(fn)
        prepared = _prepare(name, call_params, inputs, tags, strategy, "")
        prepared.reproduces = reproduces
        prepared.call = _call_recipe(fn, args, kwargs, bound, prepared.inputs)
        code = fn if self.capture_code else None
        guard = self._guard(prepared.name)
        with guard:
            # Not being able to record the start must not stop the backtest either.
            run_id = guard.attempt(self._start_run, guard, prepared, code)
            started = utcnow()
            try:
                pf = fn(*args, **kwargs)
                _check_portfolio(pf, returned_by=strategy)
            except Exception as exc:
                if run_id is not None:
                    guard.attempt(self._fail_run, guard, run_id, exc)
                raise
            except BaseException as exc:
                if run_id is not None:
                    guard.attempt(
                        guard.tracker.update_status,
                        run_id,
                        ExperimentStatus.CANCELLED,
                        error=describe_exception(exc),
                    )
                raise
            axis = guard.attempt(column_axis, pf, single_params_from_index=False)
            clash = _param_clash(prepared.params, axis.level_names, len(axis)) if axis else set()
            if clash:
                # The call worked; a parameter named twice only costs the merged params.
                prepared.params = {k: v for k, v in prepared.params.items() if k not in clash}
            result = guard.attempt(
                self._write,
                guard,
                pf,
                prepared,
                started_at=started,
                completed_at=utcnow(),
                code=code,
                equity=equity,
                trades=trades,
                allow_pickle=allow_pickle,
                run_id=run_id,
                axis=axis,
            )
        self._finish(result, guard, run_id=run_id)
        return pf

    def best(self, batch_id: str, *, metric: str = "sharpe", n: int = 1) -> list[Experiment]:
        """The ``n`` completed runs of the sweep ``batch_id`` with the best ``metric``, best
        first; the batch records that ``metric`` picked them (``Batch.selection_metric``).

        See :func:`quantrack.analysis.pick_best` for the direction and the errors; a
        TypeError says so when the adapter's observer keeps no batches to select from.
        """
        from quantrack.analysis import pick_best
        from quantrack.ports import BatchHistory

        if not isinstance(self.observer, BatchHistory):
            raise TypeError(
                "best() needs an observer that keeps batches (a BatchHistory, such as "
                "InMemoryBatchObserver); pass observer=... or a workspace to the adapter"
            )
        return pick_best(self.tracker, self.observer, batch_id, metric=metric, n=n)

    def load_portfolio(self, ref: ArtifactRef, *, allow_pickle: bool = False) -> vbt.Portfolio:
        """The Portfolio stored by ``record(..., allow_pickle=True)``; see
        :func:`load_portfolio`.
        """
        return load_portfolio(self.artifacts, ref, allow_pickle=allow_pickle)

    def load_equity(self, ref: ArtifactRef) -> pd.Series:
        """One run's equity curve (portfolio value per bar) from its ``equity_curve`` ref.

        Reads only that run's column of a sweep's shared file.
        """
        _check_ref(ref, "equity_curve")
        table = frames.read_parquet_columns(self.artifacts.get(ref.id))
        meta = json.loads((table.schema.metadata or {}).get(b"quantrack", b"{}"))
        index_name = meta.get("index") or table.column_names[0]
        part = ref.part if ref.part is not None else table.column_names[-1]
        if part not in table.column_names:
            raise KeyError(f"equity-curve file {ref.id} has no column {part!r}")
        subset: pd.DataFrame = table.select([index_name, part]).to_pandas()
        series: pd.Series = subset.set_index(index_name)[part]
        series.index.name = None if index_name.startswith("__") else index_name
        return series.rename(part)

    def load_trades(self, ref: ArtifactRef) -> pd.DataFrame:
        """One run's trades from its ``trades`` ref (all rows when the ref has no part)."""
        _check_ref(ref, "trades")
        table = frames.read_parquet_columns(self.artifacts.get(ref.id))
        frame: pd.DataFrame = table.to_pandas()
        if ref.part is not None:
            frame = frame[frame["part"] == ref.part].reset_index(drop=True)
        return frame

    # -- recording -------------------------------------------------------------------------

    def _guard(self, label: str) -> RecordingGuard:
        if self.workspace is not None and (
            self.workspace.tracker is self.tracker
            and self.workspace.artifacts is self.artifacts
            and self.workspace.observer is self.observer
        ):
            return RecordingGuard.for_workspace(self.workspace, engine=ENGINE, label=label)
        spool = None
        if self.workspace is not None and self.workspace.path is not None:
            from quantrack.adapters.filesystem.spool import SPOOL_DIR

            spool = self.workspace.path / SPOOL_DIR
        return RecordingGuard(
            self.tracker,
            self.artifacts,
            self.observer,
            spool_dir=spool,
            engine=ENGINE,
            label=label,
        )

    def _finish(
        self, result: RecordResult | None, guard: RecordingGuard, *, run_id: str | None = None
    ) -> RecordResult:
        if result is None:
            # The write itself failed: what the guard saw is all there is.
            ids = tuple(guard.record().experiment_ids)
            result = RecordResult(experiment_ids=ids, run_id=run_id)
        if guard.failed:
            result = RecordResult(
                experiment_ids=result.experiment_ids,
                batch_id=result.batch_id,
                run_id=result.run_id,
                labels=result.labels,
                artifacts=result.artifacts,
                recorded=False,
                spool_file=guard.spool_file,
            )
        self.last_result = result
        return result

    def _start_run(self, guard: RecordingGuard, prepared: _Prepared, code: object | None) -> str:
        inputs = tuple(self._input_refs(guard.artifacts, prepared.inputs))
        provenance, code_refs = _origin(guard.artifacts, code)
        if prepared.call is not None:
            recipe = _finish_recipe(prepared.call, prepared.inputs, inputs)
            code_refs = (*code_refs, put_json(guard.artifacts, recipe, kind=RECIPE_KIND))
        prepared.code_refs = code_refs
        prepared.provenance = provenance
        prepared.input_refs = inputs
        definition = ExperimentDefinition(
            name=prepared.name,
            strategy=prepared.strategy,
            engine=ENGINE,
            params=prepared.params,
            inputs=inputs,
            provenance=provenance,
            tags=prepared.tags,
            description=prepared.description,
            reproduces=prepared.reproduces,
        )
        with guard.tracker.session():
            experiment = guard.tracker.create_experiment(definition)
            guard.tracker.update_status(experiment.id, ExperimentStatus.RUNNING)
            if code_refs:
                guard.tracker.store_results(experiment.id, ExperimentResults(artifacts=code_refs))
        return experiment.id

    def _fail_run(self, guard: RecordingGuard, run_id: str, exc: Exception) -> None:
        trace = "".join(traceback.format_exception(exc)).encode("utf-8")
        ref = guard.artifacts.put(
            trace, kind="diagnostics", media_type="text/plain", name="traceback.txt"
        )
        with guard.tracker.session():
            guard.tracker.store_results(run_id, ExperimentResults(artifacts=(ref,)))
            guard.tracker.update_status(
                run_id,
                ExperimentStatus.FAILED,
                error=describe_exception(exc),
                error_category=categorize_error(exc),
            )

    def _write(
        self,
        guard: RecordingGuard,
        pf: vbt.Portfolio,
        prepared: _Prepared,
        *,
        started_at: dt.datetime,
        completed_at: dt.datetime,
        code: object | None,
        equity: bool,
        trades: bool,
        allow_pickle: bool,
        run_id: str | None,
        axis: ColumnAxis | None = None,
    ) -> RecordResult:
        store = guard.artifacts
        if axis is None:
            axis = column_axis(pf, single_params_from_index=False)
        n = len(axis)
        # One pass over the bars gives the metrics and, when they are stored, the curves.
        # It runs on worker threads (its numba kernel releases the GIL) while this thread
        # does everything that does not need its results, so on two cores the metrics
        # add little to the time of the sweep's own bookkeeping.
        with start_evaluation(pf, n, value=equity) as pending:
            if prepared.provenance is None:
                prepared.input_refs = tuple(self._input_refs(store, prepared.inputs))
                prepared.provenance, prepared.code_refs = _origin(store, code)
            trades_ref = None
            if trades:
                trades_ref = store.put(
                    frames.table_bytes(frames.trades_table(pf, axis.labels)),
                    kind="trades",
                    media_type=PARQUET_MEDIA_TYPE,
                    name=f"{prepared.name}.trades.parquet",
                )
            sweep = (
                _plan_sweep(prepared, axis, started_at=started_at, completed_at=completed_at)
                if n > 1
                else None
            )
            evaluation = pending.result()
        metrics = evaluation.metrics
        inputs = prepared.input_refs
        provenance = prepared.provenance
        shared: dict[str, ArtifactRef] = {}
        if equity:
            shared["equity_curve"] = store.put(
                frames.table_bytes(frames.equity_table(pf, axis.labels, evaluation.value)),
                kind="equity_curve",
                media_type=PARQUET_MEDIA_TYPE,
                name=f"{prepared.name}.equity.parquet",
            )
        if trades_ref is not None:
            shared["trades"] = trades_ref
        if allow_pickle:
            # vectorbt's own serializer (dill): the plain pickle module cannot hold the
            # Portfolio's cached methods.
            shared["portfolio"] = store.put(
                pf.dumps(),
                kind="portfolio",
                media_type=PICKLE_MEDIA_TYPE,
                name=f"{prepared.name}.portfolio.pkl",
            )
        per_part = [ref for kind, ref in shared.items() if kind in ("equity_curve", "trades")]
        whole = [*prepared.code_refs, *(ref for k, ref in shared.items() if k == "portfolio")]

        if sweep is None:
            row_params = {**prepared.params, **axis.params[0]}
            refs = (*whole, *(ref.model_copy(update={"part": axis.labels[0]}) for ref in per_part))
            row_metrics = {k: v[0] for k, v in metrics.items() if v[0] is not None}
            if run_id is not None:
                # The code refs were stored on the run when it started.
                refs = tuple(ref for ref in refs if ref not in prepared.code_refs)
                with guard.tracker.session():
                    guard.tracker.store_results(
                        run_id, ExperimentResults(metrics=row_metrics, artifacts=refs)
                    )
                    guard.tracker.update_status(run_id, ExperimentStatus.COMPLETED)
                return RecordResult((run_id,), None, run_id, axis.labels, shared)
            template = ExperimentDefinition(
                name=prepared.name,
                strategy=prepared.strategy,
                engine=ENGINE,
                params=row_params,
                inputs=inputs,
                provenance=provenance,
                tags=prepared.tags,
                description=prepared.description,
                reproduces=prepared.reproduces,
            )
            records = FinishedExperiments(
                template=template,
                ids=(new_id(),),
                params=(row_params,),
                metrics={k: (v[0],) for k, v in metrics.items()},
                status=(ExperimentStatus.COMPLETED,),
                created_at=(started_at,),
                started_at=(started_at,),
                completed_at=(completed_at,),
                artifacts=refs,
            )
            with guard.tracker.session():
                guard.tracker.record_finished(records)
            return RecordResult(records.ids, None, None, axis.labels, shared)

        return self._write_sweep(
            guard,
            prepared,
            sweep,
            metrics,
            shared=shared,
            per_part=per_part,
            whole=whole,
            run_id=run_id,
        )

    def _write_sweep(
        self,
        guard: RecordingGuard,
        prepared: _Prepared,
        sweep: _Sweep,
        metrics: dict[str, tuple[float | None, ...]],
        *,
        shared: dict[str, ArtifactRef],
        per_part: list[ArtifactRef],
        whole: list[ArtifactRef],
        run_id: str | None,
    ) -> RecordResult:
        n = len(sweep.ids)
        template = ExperimentDefinition(
            name=prepared.name,
            strategy=prepared.strategy,
            engine=ENGINE,
            params=prepared.params,
            inputs=prepared.input_refs,
            provenance=prepared.provenance,
            tags=prepared.tags,
            description=prepared.description,
            batch_id=sweep.batch.id,
            reproduces=prepared.reproduces,
        )
        row_artifacts = (
            tuple(
                tuple(ref.model_copy(update={"part": label}) for ref in per_part)
                for label in sweep.labels
            )
            if per_part
            else None
        )
        records = FinishedExperiments(
            template=template,
            ids=sweep.ids,
            params=sweep.rows,
            metrics=metrics,
            status=(ExperimentStatus.COMPLETED,) * n,
            created_at=(sweep.started_at,) * n,
            started_at=(sweep.started_at,) * n,
            completed_at=(sweep.completed_at,) * n,
            artifacts=tuple(whole),
            row_artifacts=row_artifacts,
            batch_indexes=tuple(range(n)),
        )
        observer = guard.observer
        observer.on_batch_started(sweep.batch)
        # The columns finish together, so their items are counted in one step and heard in
        # one event (an observer without that capability hears one per item). One unit of
        # work for the runs and the items: a persisting observer buffers the items and
        # writes them in bulk when the session commits.
        batch = record_items(sweep.batch, sweep.items)
        with guard.tracker.session():
            guard.tracker.record_finished(records)
            observer.on_items_finished(batch, sweep.items)
        batch = finish_batch(batch, now=sweep.completed_at)
        observer.on_batch_finished(batch)
        if run_id is not None:
            with guard.tracker.session():
                guard.tracker.store_results(
                    run_id, ExperimentResults(artifacts=tuple(shared.values()))
                )
                guard.tracker.update_status(run_id, ExperimentStatus.COMPLETED)
        return RecordResult(sweep.ids, batch.id, run_id, sweep.labels, shared)

    def _input_refs(
        self, store: ArtifactStore, inputs: list[tuple[str, InputLike]]
    ) -> Iterable[ArtifactRef]:
        for label, value in inputs:
            if isinstance(value, ArtifactRef):
                yield value.model_copy(update={"kind": "input"})
            elif self.store_inputs:
                yield store.put(
                    frame_to_parquet(value),
                    kind="input",
                    media_type=PARQUET_MEDIA_TYPE,
                    name=f"{label}.parquet",
                )
            else:
                yield put_json(store, frames.fingerprint(value), kind="input", name=f"{label}.json")


def load_portfolio(
    store: ArtifactStore, ref: ArtifactRef, *, allow_pickle: bool = False
) -> vbt.Portfolio:
    """Unpickle the Portfolio stored under ``ref`` (a ``portfolio`` artifact).

    Unpickling runs code from the file, so it needs ``allow_pickle=True``: pass it only
    for a workspace you trust. Raises :class:`PickleNotAllowed` without it, ValueError for
    a reference that is not a pickled portfolio, and :class:`ArtifactNotFound`.
    """
    _check_ref(ref, "portfolio")
    if allow_pickle is not True:
        raise PickleNotAllowed(
            f"artifact {ref.id} is a pickled Portfolio; loading a pickle runs code from it, "
            "so pass allow_pickle=True if (and only if) you trust this workspace"
        )
    pf = vbt.Portfolio.loads(store.get(ref.id, verify=True))
    _check_portfolio(pf)
    return pf


# -- argument checks ------------------------------------------------------------------------


def _check_portfolio(pf: object, *, returned_by: str | None = None) -> None:
    if not isinstance(pf, vbt.Portfolio):
        where = f"{returned_by} returned" if returned_by else "expected a vectorbt Portfolio, got"
        raise TypeError(
            f"{where} {type(pf).__module__}.{type(pf).__qualname__}; "
            "build one with vbt.Portfolio.from_signals / from_orders / from_holding"
        )


def _check_ref(ref: object, kind: str) -> None:
    if not isinstance(ref, ArtifactRef):
        raise TypeError(f"expected an ArtifactRef of kind {kind!r}, got {type(ref).__name__}")
    if ref.kind != kind:
        raise ValueError(
            f"artifact {ref.id} is of kind {ref.kind!r}, not {kind!r}; pick the {kind!r} "
            "reference from the experiment's artifacts"
        )


def _prepare(
    name: object,
    params: Mapping[str, Any] | None,
    inputs: object,
    tags: Iterable[str],
    strategy: str,
    description: str,
) -> _Prepared:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string naming the run, got {name!r}")
    if params is not None and not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of name to value, got {type(params).__name__}")
    clean = canonical_params(dict(params or {}))  # raises InvalidParams with the bad key
    if isinstance(tags, str):
        raise TypeError(f"tags must be a list of strings, got the string {tags!r}")
    tag_list = tuple(tags)
    for tag in tag_list:
        if not isinstance(tag, str) or not tag.strip():
            raise ValueError(f"tags must be non-empty strings, got {tag!r}")
    return _Prepared(
        name=name,
        params=clean,
        inputs=_inputs(inputs),
        tags=tag_list,
        strategy=strategy,
        description=description,
    )


def _inputs(inputs: object) -> list[tuple[str, InputLike]]:
    if inputs is None:
        return []
    if isinstance(inputs, pd.DataFrame | pd.Series | ArtifactRef):
        items: list[tuple[str, object]] = [(_input_name(inputs, 0), inputs)]
    elif isinstance(inputs, Mapping):
        items = [(str(key), value) for key, value in inputs.items()]
    elif isinstance(inputs, list | tuple):
        items = [(_input_name(value, i), value) for i, value in enumerate(inputs)]
    else:
        raise TypeError(
            f"inputs must be a DataFrame, a Series, an ArtifactRef, or a dict or list of "
            f"them, got {type(inputs).__name__}"
        )
    for label, value in items:
        if not isinstance(value, pd.DataFrame | pd.Series | ArtifactRef):
            raise TypeError(
                f"input {label!r} is a {type(value).__name__}; pass the price DataFrame or "
                "Series itself (or an ArtifactRef of one already stored)"
            )
    return items


def _input_name(value: object, i: int) -> str:
    if isinstance(value, pd.Series) and value.name is not None:
        return str(value.name)
    if isinstance(value, ArtifactRef) and value.name:
        return value.name
    return f"input_{i}"


def _param_clash(params: Mapping[str, Any], level_names: Sequence[str], n: int) -> set[str]:
    if n == 1 and level_names == ("column",):
        return set()
    return set(params) & set(level_names)


def _check_param_clash(params: Mapping[str, Any], level_names: Sequence[str], n: int) -> None:
    clash = _param_clash(params, level_names, n)
    if clash:
        raise InvalidParams(
            f"parameter(s) {', '.join(sorted(clash))} are given in params and are also levels "
            "of the portfolio's columns; each column's value is read from its index, so leave "
            "them out of params"
        )


def _plain_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    # Keyword arguments that are plain values are the call's parameters; frames and
    # objects are inputs or machinery, not parameters.
    plain: dict[str, Any] = {}
    for key, value in kwargs.items():
        if value is None or isinstance(value, bool | int | float | str):
            plain[key] = value
        elif isinstance(value, list | tuple) and all(
            isinstance(v, bool | int | float | str) for v in value
        ):
            plain[key] = list(value)
    return plain


# -- the recipe: what quantrack.reproduce needs to call the function again -------------------

RECIPE_KIND = "recipe"
RECIPE_FORMAT = "quantrack-recipe/1"


def _bound_arguments(
    fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """The call's arguments by parameter name (``{}`` when the signature says nothing)."""
    import inspect

    try:
        return dict(inspect.signature(fn).bind_partial(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        return {}


def _call_recipe(
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    bound: Mapping[str, Any],
    inputs: list[tuple[str, InputLike]],
) -> dict[str, Any]:
    """How to call ``fn`` again; frame arguments are appended to ``inputs`` (once each)."""
    names = list(bound)

    def encode(value: Any, label: str) -> dict[str, Any]:
        if value is None or isinstance(value, bool | int | float | str):
            return {"value": value}
        if isinstance(value, list | tuple) and all(
            v is None or isinstance(v, bool | int | float | str) for v in value
        ):
            return {"value": list(value), "tuple": isinstance(value, tuple)}
        if isinstance(value, pd.DataFrame | pd.Series):
            for existing, frame in inputs:
                if frame is value:
                    label = existing
                    break
            else:
                inputs.append((label, value))
            freq = getattr(value.index, "freqstr", None)
            entry: dict[str, Any] = {"input": label, "freq": freq}
            if isinstance(value, pd.Series):
                name = value.name
                entry["series"] = True
                entry["series_name"] = name if isinstance(name, str | int | None) else str(name)
            return entry
        return {"opaque": f"{type(value).__module__}.{type(value).__qualname__}"}

    positional = [
        encode(value, names[i] if i < len(names) else f"arg{i}") for i, value in enumerate(args)
    ]
    keyword = {key: encode(value, key) for key, value in kwargs.items()}
    qualname = getattr(fn, "__qualname__", "") or ""
    return {
        "format": RECIPE_FORMAT,
        "engine": ENGINE,
        "function": {
            "module": getattr(fn, "__module__", None),
            "qualname": qualname,
            # Where the code lives now, so a reproduction can say whether it changed since.
            "file": getattr(sys.modules.get(getattr(fn, "__module__", "") or ""), "__file__", None),
        },
        "args": positional,
        "kwargs": keyword,
    }


def _finish_recipe(
    call: dict[str, Any],
    inputs: Sequence[tuple[str, InputLike]],
    refs: Sequence[ArtifactRef],
) -> dict[str, Any]:
    """``call`` with each input label resolved to the id and media type of its artifact."""
    by_label = {label: ref for (label, _value), ref in zip(inputs, refs, strict=True)}

    def resolve(entry: dict[str, Any]) -> dict[str, Any]:
        if "input" not in entry:
            return entry
        ref = by_label[entry["input"]]
        return {**entry, "artifact": ref.id, "stored": ref.media_type == PARQUET_MEDIA_TYPE}

    return {
        **call,
        "args": [resolve(entry) for entry in call["args"]],
        "kwargs": {key: resolve(entry) for key, entry in call["kwargs"].items()},
    }


# -- provenance and code -------------------------------------------------------------------


def _qualified_name(fn: object) -> str:
    module = getattr(fn, "__module__", None) or ""
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}" if module else str(qualname)


def _caller_file() -> str | None:
    # The file of the code that called record(): two frames up (record -> _caller_file).
    path = Path(sys._getframe(2).f_code.co_filename)
    return str(path) if path.suffix == ".py" and path.is_file() else None


def _origin(
    store: ArtifactStore, code: object | None
) -> tuple[Provenance, tuple[ArtifactRef, ...]]:
    """The provenance of the run and the references of its captured code."""
    provenance, captured = capture_origin(
        store,
        code,
        engine=ENGINE,
        engine_version=str(vbt.__version__),
        modules=("vectorbt", "pandas", "numpy"),
    )
    return provenance, captured.refs if captured is not None else ()
