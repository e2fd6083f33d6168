"""Record every backtrader run: change ``cerebro.run()`` to ``adapter.run(cerebro, name=...)``.

::

    from quantrack.engines.backtrader import BacktraderAdapter

    adapter = BacktraderAdapter()              # the default workspace, or pass one
    results = adapter.run(cerebro, name="sma-cross")   # exactly what cerebro.run() returns

What a recorded run holds:

* **Lifecycle** — pending when defined, running when ``cerebro.run()`` starts, completed
  afterwards; when backtrader raises, failed with the message, the traceback (a
  ``diagnostics`` artifact) and the error category, and the exception reaches the caller
  unchanged; Ctrl-C cancels it. (:func:`quantrack.services.recording.track` does this.)
* **Params** — the strategy's own params at top level (so ``--where "fast < 10"`` works),
  the caller's ``params`` beside them, and under ``"backtrader"`` the strategy classes,
  the data feeds (name, timeframe, first and last bar when known) and the broker (starting
  cash, commission scheme). The config hash covers all of it.
* **Metrics** — from backtrader's own analyzers, added under ``quantrack_*`` names unless
  the user already added the same analyzer with the same settings: ``final_value``,
  ``total_return`` and ``annual_return`` (percent, from ``Returns``), ``sharpe``
  (``SharpeRatio``, daily, annualized, risk-free rate 0), ``max_drawdown`` (percent) and
  ``max_drawdown_length`` (bars, from ``DrawDown``), ``trades``, ``won``, ``lost``,
  ``win_rate`` (percent), ``profit_factor``, ``avg_trade`` (from ``TradeAnalyzer``, net of
  commission) and ``exposure`` (percent of bars with an open position). A metric that is
  undefined for the run (no trades → no win rate) is left out. On daily data ``Returns``
  and ``SharpeRatio`` are not run bar by bar but derived from the equity curve after the
  run with their formulas, to the same floats (see :func:`_derived`; tested).
* **Artifacts** — ``equity_curve`` (time, value, cash) and ``trades`` (one row per closed
  trade) as Parquet, ``analyzers`` (every analyzer's full output, the user's included) as
  JSON, the strategy's source as ``code``; as inputs, a content fingerprint of every data
  feed (``kind="input"``; see :func:`input_fingerprint`) and, with ``store_inputs=True``,
  the feed's data itself as Parquet (``kind="input_data"``).
* **Sweeps** — a run after ``cerebro.optstrategy(...)`` becomes one batch with one
  experiment per parameter combination (``maxcpus > 1`` works: results are gathered in
  the parent, the only writer). A combination that raises becomes a failed item with its
  category, the others complete, and the batch ends ``partial``; the failed combination
  is left out of the returned list, which otherwise is what ``cerebro.run()`` returns.
* **Never break the backtest** — recording goes through
  :class:`~quantrack.engines._safety.RecordingGuard`: if quantrack fails, the result is
  still returned, one warning is logged and the record is spooled for the next open.

backtrader is imported when this module is; without it, importing the module raises
:class:`~quantrack.EngineNotInstalled`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import inspect
import itertools
import json
import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from quantrack.adapters.frames import (
    JSON_MEDIA_TYPE,
    PARQUET_MEDIA_TYPE,
    frame_to_parquet,
    put_frame,
    put_json,
)
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
    utcnow,
)
from quantrack.domain._logging import get_logger
from quantrack.domain.artifacts import display_name
from quantrack.domain.hashing import canonical_value
from quantrack.domain.lifecycle import (
    attach_results,
    finish_batch,
    new_experiment,
    record_item,
    start_batch,
    transition,
)
from quantrack.engines._safety import RecordingGuard
from quantrack.ports import ArtifactStore, BatchObserver, ExperimentTracker
from quantrack.services.code_capture import CodePlan, find_code
from quantrack.services.provenance import (
    capture_origin,
    collect_provenance,
    current_entry_point,
)
from quantrack.services.recording import Run, RunEnd, close_run, describe_exception, open_run

try:
    import backtrader as bt
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise EngineNotInstalled("backtrader", "backtrader") from exc

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from quantrack.engines._background import RecordingProcess
    from quantrack.workspace import Workspace

__all__ = [
    "ENGINE",
    "RECORDER",
    "BacktraderAdapter",
    "FailedCombination",
    "RunRecorder",
    "compute_metrics",
    "input_fingerprint",
]

ENGINE = "backtrader"
PARAMS_KEY = "backtrader"
_log = get_logger("quantrack.engines.backtrader")
_EPOCH_ORDINAL = 719163  # dt.date(1970, 1, 1).toordinal(): backtrader counts days from year 1


# -- the analyzer the adapter adds (a top-level class, so sweeps can pickle it) ----------


class RunRecorder(bt.Analyzer):  # type: ignore[misc]
    """The one analyzer quantrack adds to a run: everything the record needs, collected
    with as little work per bar as backtrader allows.

    Per bar it keeps only the broker's cash and value, which backtrader hands the strategy
    (``notify_cashvalue``) on every bar anyway; the bars' times are read from the
    strategy's clock after the run. Trades and orders arrive as notifications, which are
    rare. When the run stops it turns them into columns, the closed trades, the exposure
    and plain notes of the trades, from which the output of backtrader's ``DrawDown`` and
    ``TradeAnalyzer`` is computed after the run with their code (see :func:`_drawdown_of`
    and :func:`_trade_analysis_of`): those analyzers do their work on every bar, which
    costs more than a simple strategy's own logic.

    ``get_analysis()`` holds plain data only: in a sweep it travels back from the worker,
    and a recording process may record it.
    """

    def start(self) -> None:
        """Plug into the run's notifications; note the starting value and the wall-clock start."""
        strategy = self.strategy
        cerebro = strategy.env
        self._notes: list[float] = []
        note = self._notes.append
        # After the run the strategy's datetime line holds each bar's time, except with
        # replayed data (a bar updated in place is notified once per update) or exactbars
        # (only the last bars are kept): only then is the time noted as it passes.
        self._times_noted = bool(cerebro._exactbars) or bool(
            cerebro._doreplay or any(data.replaying for data in cerebro.datas)
        )
        if self._times_noted:
            clock = strategy.lines.datetime

            def note_cashvalue(cash: float, value: float) -> None:
                note(clock[0])
                note(cash)
                note(value)

        else:

            def note_cashvalue(cash: float, value: float) -> None:
                note(cash)
                note(value)

        self._trades: list[Any] = []
        # (bar index, any position open from that bar on): positions change only when
        # orders execute, and executions are notified before the bar's value is.
        self._changes: list[tuple[int, bool]] = []
        self._positions = getattr(strategy.broker, "positions", None)
        self._plugged: list[tuple[Any, str]] = []
        if self._may_step_aside():
            self._step_aside(note_cashvalue)
        else:
            # Backtrader calls four hooks of every analyzer on every bar, each through the
            # base class's loop over child analyzers: the recorder needs one of them, so
            # the others become one no-op call and that one the closure.
            for hook in ("_next", "_prenext", "_nextstart", "_notify_fund"):
                self._plug(self, hook, _skip)
            self._plug(self, "_notify_cashvalue", note_cashvalue)
        # Read where backtrader's Returns reads it, so derived returns match it exactly.
        self.value_start = float(strategy.broker.getvalue())
        self.wall_start = time.time()
        self.analysis: dict[str, Any] = {}

    def _may_step_aside(self) -> bool:
        """True when the strategy's own notifications carry all the recorder needs and it
        is the last of the strategy's analyzers (so leaving their list skips none).

        The strategy is not told of historical orders added without ``notify``.
        """
        analyzers = self.strategy.analyzers
        return (
            bool(analyzers._items)
            and analyzers._items[-1] is self
            and len(analyzers._names) == len(analyzers._items)
            and all(notify for _orders, notify in self.strategy.env._ohistory)
        )

    def _step_aside(self, note_cashvalue: Callable[[float, float], None]) -> None:
        """Leave the strategy's analyzers for the run and hear its notifications instead.

        Backtrader calls the strategy's ``notify_cashvalue`` on every bar anyway; being in
        the analyzers' list would add a loop step and three calls per bar, most of what
        recording costs a simple backtest. The recorder rejoins the list when the strategy
        stops, before backtrader stops the analyzers, so its results are where every
        analyzer's are (and travel back from a sweep's workers).
        """
        strategy = self.strategy
        analyzers = strategy.analyzers
        name = analyzers._names.pop()
        analyzers._items.pop()
        for hook, ours in (
            ("notify_cashvalue", note_cashvalue),
            ("notify_order", self.notify_order),
            ("notify_trade", self.notify_trade),
        ):
            self._plug(strategy, hook, _after(strategy, hook, ours))
        stop = strategy.stop

        def stop_and_rejoin() -> None:
            stop()
            self._unplug()
            analyzers._items.append(self)
            analyzers._names.append(name)

        self._plug(strategy, "stop", stop_and_rejoin)

    def _plug(self, owner: Any, hook: str, fn: Callable[..., None]) -> None:
        owner.__dict__[hook] = fn
        self._plugged.append((owner, hook))

    def _unplug(self) -> None:
        # The closures may not travel back from a sweep's worker: back to the classes' own.
        for owner, hook in self._plugged:
            owner.__dict__.pop(hook, None)
        self._plugged = []

    def notify_trade(self, trade: Any) -> None:
        """Keep the notification (backtrader notifies a copy of the trade as it was then)."""
        self._trades.append(trade)

    def notify_order(self, order: Any) -> None:
        """After an execution, note whether any position is open from this bar on."""
        if not order.executed.size:
            return
        strategy = self.strategy
        if self._positions is not None:
            held = any(position.size for position in self._positions.values())
        else:
            held = any(strategy.getposition(data).size for data in strategy.datas)
        self._changes.append((len(self._notes) // (3 if self._times_noted else 2), held))

    def stop(self) -> None:
        """Turn what was collected into plain data, and let go of backtrader's objects."""
        import numpy as np

        self._unplug()
        strategy = self.strategy
        notes = np.array(self._notes, dtype="float64").reshape(-1, 3 if self._times_noted else 2)
        if self._times_noted:
            times, cash, values = notes[:, 0], notes[:, 1], notes[:, 2]
        else:
            cash, values = notes[:, 0], notes[:, 1]
            line = strategy.lines.datetime.array
            if len(line) != len(notes):
                raise RuntimeError(
                    f"quantrack's recorder saw {len(notes)} updates but the strategy's clock "
                    f"holds {len(line)} bars; please report this run's cerebro settings"
                )
            times = np.frombuffer(line, dtype="float64").copy()
        bars = len(values)
        self.analysis = {
            "datetime": times,
            "value": values,
            "cash": cash,
            "value_start": self.value_start,
            "value_end": float(strategy.broker.getvalue()),
            "exposure": _exposure(self._changes, bars),
            "closed_trades": _closed_trades(self._trades, strategy.broker),
            "trade_notes": [_trade_note(trade) for trade in self._trades],
            "wall_start": self.wall_start,
            "wall_stop": time.time(),
        }
        # Trades hold their data feed and the positions their broker: neither may travel
        # back from a sweep's worker.
        self._trades, self._positions, self._changes, self._notes = [], None, [], []

    def get_analysis(self) -> dict[str, Any]:
        """Everything collected (see the class doc)."""
        return self.analysis


def _skip(*_args: Any) -> None:
    """Stands in for the per-bar analyzer hooks the recorder has no use for."""


def _after(strategy: Any, hook: str, ours: Callable[..., None]) -> Callable[..., None]:
    """``ours``, to be called where backtrader calls the strategy's ``hook``: after the
    strategy's own, when its class has one.
    """
    if getattr(type(strategy), hook) is getattr(bt.Strategy, hook):
        return ours  # backtrader's empty default: nothing to call first
    theirs = getattr(strategy, hook)

    def both(*args: Any) -> None:
        theirs(*args)
        ours(*args)

    return both


def _exposure(changes: Sequence[tuple[int, bool]], bars: int) -> float | None:
    """Percent of ``bars`` with a position open, from the position changes."""
    if not bars:
        return None
    in_market = 0
    since: int | None = None  # the bar a position was last opened from, while one is open
    for index, held in changes:
        if held and since is None:
            since = index
        elif not held and since is not None:
            in_market += min(index, bars) - since
            since = None
    if since is not None:
        in_market += bars - since
    return 100.0 * in_market / bars


def _closed_trades(notified: Sequence[Any], broker: Any) -> list[dict[str, Any]]:
    """One row per closed trade: entry and exit time and price, size, PnL, commission, bars.

    ``size`` is the largest size the trade reached (negative for shorts); ``exit_price`` is
    the average exit price implied by the trade's gross PnL under its commission scheme.
    """
    rows: list[dict[str, Any]] = []
    peaks: dict[int, float] = {}
    for trade in notified:
        if trade.isopen:
            peak = peaks.get(trade.ref, 0.0)
            if abs(trade.size) > abs(peak):
                peaks[trade.ref] = float(trade.size)
            continue
        if not trade.isclosed:
            continue
        size = peaks.pop(trade.ref, 0.0)
        mult = float(getattr(broker.getcommissioninfo(trade.data).p, "mult", 1.0) or 1.0)
        rows.append(
            {
                "data": trade.data._name or "",
                "entry_time": trade.dtopen,
                "exit_time": trade.dtclose,
                "entry_price": float(trade.price),
                "exit_price": trade.price + trade.pnl / (size * mult) if size else None,
                "size": size,
                "pnl": float(trade.pnl),
                "pnl_net": float(trade.pnlcomm),
                "commission": float(trade.commission),
                "bars": int(trade.barlen),
            }
        )
    return rows


def _drawdown_of(values: Sequence[float]) -> dict[str, Any]:
    """What backtrader's ``DrawDown`` reports for a run whose broker values were ``values``.

    DrawDown updates its peak and then its figures on every bar, in this order of
    operations; numpy applies the same IEEE operations to all bars at once, so the floats
    are the analyzer's (tested). A peak of zero, where DrawDown itself would divide by
    zero, gives no percentages.
    """
    import numpy as np

    out: dict[str, Any] = {"len": 0, "drawdown": 0.0, "moneydown": 0.0}
    top: dict[str, Any] = {"len": 0.0, "drawdown": 0.0, "moneydown": 0.0}
    if len(values):
        value = np.asarray(values, dtype="float64")
        peak = np.maximum.accumulate(value)
        moneydown = peak - value
        with np.errstate(divide="ignore", invalid="ignore"):
            drawdown = 100.0 * moneydown / peak
        # DrawDown's length counts consecutive bars under the peak and restarts at zero.
        under = drawdown != 0.0
        positions = np.arange(1, len(value) + 1)
        restart = np.maximum.accumulate(np.where(under, 0, positions))
        lengths = np.where(under, positions - restart, 0)
        out = {
            "len": int(lengths[-1]),
            "drawdown": _finite(drawdown[-1]),
            "moneydown": float(moneydown[-1]),
        }
        # Starting from DrawDown's 0.0; fmax skips NaN as Python's max(0.0, nan) does.
        top = {
            "len": max(0.0, int(lengths.max())),
            "drawdown": float(np.fmax.reduce(drawdown, initial=0.0)),
            "moneydown": float(np.fmax.reduce(moneydown, initial=0.0)),
        }
    return {**out, "max": top}


class _TradeNote(NamedTuple):
    """What ``TradeAnalyzer`` reads of a trade notification (see :func:`_trade_note`)."""

    status: int
    justopened: bool
    long: bool
    pnl: float
    pnlcomm: float
    barlen: int


class _NotedTrade(_TradeNote):
    """A note as ``TradeAnalyzer`` reads a trade: with the status constant it compares to."""

    Closed = bt.Trade.Closed


def _trade_note(trade: Any) -> tuple[int, bool, bool, float, float, int]:
    """The fields of a :class:`_TradeNote` of one notified trade, as a plain tuple: a run's
    notes travel to a recording process, and plain tuples pickle several times faster.
    """
    return (
        int(trade.status),
        bool(trade.justopened),
        bool(trade.long),
        float(trade.pnl),
        float(trade.pnlcomm),
        int(trade.barlen),
    )


def _trade_analysis_of(notes: Sequence[tuple[Any, ...]]) -> Any:
    """What backtrader's ``TradeAnalyzer`` reports for these trade notifications.

    TradeAnalyzer looks at nothing but the trades it is notified of, so its own code is
    fed notes of the run's notifications after the run: its figures, without its per-bar
    cost (and, in a recording process, without the backtest waiting for it).
    """
    analyzer = object.__new__(bt.analyzers.TradeAnalyzer)
    analyzer.create_analysis()
    for note in notes:
        analyzer.notify_trade(_NotedTrade(*note))
    analyzer.stop()
    return analyzer.get_analysis()


@dataclass(frozen=True)
class _Wanted:
    key: str
    cls: type
    kwargs: Mapping[str, Any]


def _wanted_analyzers() -> tuple[_Wanted, ...]:
    """The analyzers whose outputs the metrics come from, keyed by metric source."""
    return (
        _Wanted("returns", bt.analyzers.Returns, {}),
        _Wanted(
            "sharpe",
            bt.analyzers.SharpeRatio,
            {"timeframe": bt.TimeFrame.Days, "annualize": True, "riskfreerate": 0.0},
        ),
        _Wanted("drawdown", bt.analyzers.DrawDown, {}),
        _Wanted("trades", bt.analyzers.TradeAnalyzer, {}),
    )


#: The key (and ``quantrack_<key>`` the name) of the :class:`RunRecorder` in a run.
RECORDER = "recorder"


def _analyzer_names(entries: Sequence[tuple[type, tuple[Any, ...], dict[str, Any]]]) -> list[str]:
    """The names backtrader will give the analyzers ``entries`` (see Strategy._addanalyzer)."""
    counts: dict[str, int] = {}
    names = []
    for cls, _args, kwargs in entries:
        base = kwargs.get("_name", "") or cls.__name__.lower()
        n = counts.get(base, 0)
        counts[base] = n + 1
        names.append(base + (str(n) if n else ""))
    return names


def _valued_by_backbroker(cerebro: Any) -> bool:
    """True when the values analyzers see are backtrader's own broker's, not a fund's."""
    broker = cerebro.getbroker()
    return type(broker) is bt.brokers.BackBroker and not broker.fundmode


def _derivable(cerebro: Any) -> bool:
    """True when Returns and SharpeRatio can be derived bit for bit from the equity curve.

    That needs backtrader's own broker valuing the portfolio (not fund mode), and feeds in
    days without a time zone, so that a bar's day is the integer part of its float date.
    """
    return _valued_by_backbroker(cerebro) and all(
        data._timeframe == bt.TimeFrame.Days and getattr(data.p, "tz", None) is None
        for data in cerebro.datas
    )


def _derived_sources(cerebro: Any) -> tuple[str, ...]:
    """The metric sources computed after the run instead of by an analyzer on every bar.

    TradeAnalyzer always is (it sees nothing but trades); DrawDown when the values it would
    see are the broker's; Returns and SharpeRatio when :func:`_derivable`.
    """
    keys = ["trades"]
    if _valued_by_backbroker(cerebro):
        keys.append("drawdown")
    if _derivable(cerebro):
        keys.extend(("returns", "sharpe"))
    return tuple(keys)


def _ensure_analyzers(cerebro: Any) -> dict[str, str]:
    """Add what the metrics need; return metric source → analyzer name.

    A source the user already has an analyzer for (same class, same settings) is read from
    theirs. Of the others, those in :func:`_derived_sources` are computed after the run (by
    the :class:`RunRecorder`, or from its equity curve) and are missing from the result;
    the rest get a backtrader analyzer named ``quantrack_<source>``. The recorder itself is
    always added, under :data:`RECORDER`.
    """
    found: dict[str, str] = {}
    existing = list(cerebro.analyzers)
    names = _analyzer_names(existing)
    derivable = _derived_sources(cerebro)
    for wanted in _wanted_analyzers():
        for (cls, args, kwargs), name in zip(existing, names, strict=True):
            own = {k: v for k, v in kwargs.items() if k != "_name"}
            if cls is wanted.cls and not args and own == dict(wanted.kwargs):
                found[wanted.key] = name
                break
        else:
            if wanted.key in derivable:
                continue
            name = f"quantrack_{wanted.key}"
            cerebro.addanalyzer(wanted.cls, _name=name, **wanted.kwargs)
            found[wanted.key] = name
    cerebro.addanalyzer(RunRecorder, _name=f"quantrack_{RECORDER}")
    found[RECORDER] = f"quantrack_{RECORDER}"
    return found


def _derived(equity: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """What backtrader's ``Returns`` and ``SharpeRatio`` (daily, annualized, risk-free 0)
    report for a run on daily data, computed from its equity curve with their formulas,
    in their order of operations (so the floats are identical; tested).
    """
    import numpy as np

    # TimeReturn keeps, per day, the last value of that day over the last value of the
    # day before (the starting value before the first day).
    days_of_bars = np.floor(np.asarray(equity["datetime"], dtype="float64"))
    values = np.asarray(equity["value"], dtype="float64")
    last = np.flatnonzero(np.append(days_of_bars[1:] != days_of_bars[:-1], True))
    last_of_day = values[last] if len(values) else values
    days = len(last_of_day)
    # No bar, no figures (backtrader's Returns would divide by zero days).
    out: dict[str, dict[str, Any]] = {"returns": {}}
    start, end = equity["value_start"], equity["value_end"]
    if days:
        try:
            growth = end / start
        except ZeroDivisionError:
            rtot = float("-inf")
        else:
            rtot = float("-inf") if growth <= 0.0 else math.log(growth)
        ravg = rtot / days
        tann = bt.analyzers.Returns._TANN[bt.TimeFrame.Days]
        rnorm = math.expm1(ravg * tann) if ravg > float("-inf") else ravg
        out["returns"] = {"rtot": rtot, "ravg": ravg, "rnorm": rnorm, "rnorm100": rnorm * 100.0}
    factor = bt.analyzers.SharpeRatio.RATEFACTORS[bt.TimeFrame.Days]
    wanted = {w.key: w for w in _wanted_analyzers()}["sharpe"]
    rate = pow(1.0 + wanted.kwargs["riskfreerate"], 1.0 / factor) - 1.0
    excess: list[float] = []
    previous = np.concatenate(([start], last_of_day[:-1]))
    # A worthless portfolio has no return to speak of (SharpeRatio would divide by zero).
    if days and (previous != 0.0).all():
        excess = (last_of_day / previous - 1.0 - rate).tolist()
    ratio: float | None = None
    if excess:
        average = bt.mathsupport.average(excess)
        try:
            deviation = bt.mathsupport.standarddev(excess, avgx=average, bessel=False)
            ratio = math.sqrt(factor) * (average / deviation)
        except (ValueError, TypeError, ZeroDivisionError):
            ratio = None
    out["sharpe"] = {"sharperatio": ratio}
    return out


# -- values: params, JSON, times --------------------------------------------------------


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _plain(value: Any) -> Any:
    """A canonical param value; objects without one are recorded by name or repr."""
    try:
        return canonical_value(value)
    except InvalidParams:
        if inspect.isclass(value) or inspect.isroutine(value):
            return _qualified(value)
        return repr(value)


def _jsonable(value: Any) -> Any:
    """Analyzer output made JSON-safe: mappings with string keys, NaN/inf as None."""
    if isinstance(value, Mapping):
        return {_json_key(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _jsonable(value.tolist())
    return repr(value)


def _json_key(key: Any) -> str:
    if isinstance(key, dt.datetime | dt.date):
        return key.isoformat()
    return str(key)


def _timestamp(moment: Any) -> str | None:
    if moment is None:
        return None
    if isinstance(moment, float):
        return str(bt.num2date(moment).isoformat())
    isoformat = getattr(moment, "isoformat", None)
    return str(isoformat() if isoformat is not None else moment)


# -- inputs -----------------------------------------------------------------------------


def _frame_fingerprint(frame: pd.DataFrame) -> dict[str, Any]:
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    digest.update(json.dumps([str(c) for c in frame.columns]).encode())
    index = frame.index
    return {
        "format": "quantrack-input-fingerprint/1",
        "rows": len(frame),
        "columns": [str(c) for c in frame.columns],
        "first": _timestamp(index[0]) if len(index) else None,
        "last": _timestamp(index[-1]) if len(index) else None,
        "content_sha256": digest.hexdigest(),
    }


def _source_of(data: Any) -> Any:
    """What a feed reads: a DataFrame, a file path, or None when neither is known."""
    import pandas as pd

    source = getattr(getattr(data, "p", None), "dataname", None)
    if isinstance(source, pd.DataFrame):
        return source
    if isinstance(source, str | os.PathLike) and Path(source).is_file():
        return Path(source)
    return None


def _fingerprint_bytes(source: Any) -> bytes | None:
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        document = _frame_fingerprint(source)
    elif isinstance(source, Path):
        document = {
            "format": "quantrack-input-fingerprint/1",
            "bytes": source.stat().st_size,
            "content_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        }
    else:
        return None
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def input_fingerprint(source: Any, *, name: str | None = None) -> ArtifactRef:
    """The input artifact reference the adapter records for ``source``.

    ``source`` is a backtrader data feed, a pandas DataFrame, or a path to a data file.
    The reference depends only on the content, so
    ``tracker.find_by_input_artifacts([input_fingerprint(df).id])`` finds every run that
    used this data. Raises TypeError for a feed whose content quantrack cannot read (a
    live feed, a resampled one).
    """
    raw = source if isinstance(source, str | os.PathLike) else None
    resolved = Path(raw) if raw is not None else _source_of(source)
    if resolved is None and not isinstance(source, bt.AbstractDataBase):
        resolved = source
    payload = _fingerprint_bytes(resolved)
    if payload is None:
        raise TypeError(
            f"cannot fingerprint a {type(source).__name__}; pass a pandas DataFrame, a path "
            "to a data file, or a feed built on one (PandasData, GenericCSVData, ...)"
        )
    return ArtifactRef(
        id=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
        media_type=JSON_MEDIA_TYPE,
        kind="input",
        name=display_name(name),
    )


# -- the recipe: what quantrack.reproduce needs to rebuild the cerebro -------------------

RECIPE_KIND = "recipe"
RECIPE_FORMAT = "quantrack-recipe/1"


def _encode(value: Any) -> tuple[bool, Any]:
    """``(True, json)`` when ``value`` survives a JSON round trip as itself (dates tagged)."""
    if value is None or isinstance(value, bool | int | float | str):
        return (isinstance(value, float) and not math.isfinite(value)) is False, value
    if isinstance(value, dt.datetime):
        return True, {"__datetime__": value.isoformat()}
    if isinstance(value, dt.date):
        return True, {"__date__": value.isoformat()}
    if isinstance(value, dt.time):
        return True, {"__time__": value.isoformat()}
    if isinstance(value, list | tuple):
        items = [_encode(v) for v in value]
        if all(ok for ok, _ in items):
            return True, {
                "__tuple__" if isinstance(value, tuple) else "__list__": [v for _, v in items]
            }
    return False, repr(value)


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # numpy and pandas values compare elementwise or refuse
        return False


def _encoded_kwargs(cls: type, values: Mapping[str, Any], *, only_changed: bool) -> dict[str, Any]:
    """``{"params": {...}, "opaque": [...]}``: the settings that differ from ``cls``'s
    defaults (or all of ``values``); ``opaque`` names those with no faithful JSON form.
    """
    defaults = _defaults(cls)
    params: dict[str, Any] = {}
    opaque: list[str] = []
    for key, value in values.items():
        if key in ("dataname", "_name"):
            continue
        if only_changed and key in defaults and _same(defaults[key], value):
            continue
        ok, encoded = _encode(value)
        params[str(key)] = encoded
        if not ok:
            opaque.append(str(key))
    return {"params": params, "opaque": opaque}


@functools.lru_cache(maxsize=256)
def _defaults(cls: type) -> Mapping[str, Any]:
    """A backtrader class's param defaults (fixed when the class is made; read, not copied,
    by every run's recipe).
    """
    return MappingProxyType(dict(cls.params._getitems()) if hasattr(cls, "params") else {})


def _class_entry(cls: type) -> dict[str, str]:
    return {"module": str(cls.__module__), "qualname": str(cls.__qualname__)}


def _recipe(
    cerebro: Any,
    combination: Sequence[tuple[Any, Sequence[Any], Mapping[str, Any]]],
    sources: Sequence[Any],
    run_kwargs: Mapping[str, Any],
) -> dict[str, Any]:
    """How to rebuild this cerebro; the per-run strategy params are in the run's params.

    Each feed's ``fingerprint`` and ``data`` (artifact ids) are filled in when the run's
    inputs are stored (:func:`_stored`).
    """
    feeds = []
    for data, source in zip(cerebro.datas, sources, strict=True):
        is_file = isinstance(source, Path)
        feeds.append(
            {
                **_class_entry(type(data)),
                **_encoded_kwargs(type(data), data.p._getkwargs(), only_changed=True),
                "name": data._name or "",
                "source": None if source is None else ("file" if is_file else "frame"),
                "fingerprint": None,
                "data": None,
                "file_name": display_name(source.name) if is_file else None,
            }
        )
    broker = cerebro.getbroker()
    commission = [
        {
            "key": key,
            **_class_entry(type(info)),
            **_encoded_kwargs(type(info), info.p._getkwargs(), only_changed=True),
        }
        for key, info in getattr(broker, "comminfo", {}).items()
    ]
    strategies = []
    for cls, args, kwargs in combination:
        entry = {**_class_entry(cls), **_encoded_kwargs(cls, kwargs, only_changed=False)}
        entry["args_opaque"] = not all(_encode(a)[0] for a in args)
        # Where the code lives now, so a reproduction can say whether it has changed since.
        entry["file"] = getattr(sys.modules.get(cls.__module__), "__file__", None)
        strategies.append(entry)

    def added(entries: Iterable[tuple[type, Sequence[Any], Mapping[str, Any]]]) -> list[Any]:
        out = []
        for cls, args, kwargs in entries:
            if str(kwargs.get("_name", "")).startswith("quantrack_"):
                continue
            encoded_args = [_encode(a) for a in args]
            out.append(
                {
                    **_class_entry(cls),
                    **_encoded_kwargs(cls, kwargs, only_changed=False),
                    "_name": kwargs.get("_name"),
                    "args": [v for _, v in encoded_args],
                    "args_opaque": not all(ok for ok, _ in encoded_args),
                }
            )
        return out

    sizers = []
    for key, (cls, args, kwargs) in getattr(cerebro, "sizers", {}).items():
        sizers.append({"key": key, **added([(cls, args, kwargs)])[0]})
    return {
        "format": RECIPE_FORMAT,
        "engine": ENGINE,
        "strategies": strategies,
        "feeds": feeds,
        "broker": {
            **_class_entry(type(broker)),
            **_encoded_kwargs(type(broker), broker.p._getkwargs(), only_changed=True),
        },
        "commission": commission,
        "sizers": sizers,
        "analyzers": added(cerebro.analyzers),
        "observers": [
            {**entry, "multi": bool(multi)}
            for (multi, *_), entry in zip(
                cerebro.observers,
                added((cls, args, kwargs) for _m, cls, args, kwargs in cerebro.observers),
                strict=True,
            )
        ],
        "cerebro": _encoded_kwargs(
            type(cerebro), {**cerebro.p._getkwargs(), **run_kwargs}, only_changed=True
        ),
    }


# -- describing a run before it runs ---------------------------------------------------


@dataclass
class _Description:
    """A run as described from its cerebro before it runs, in plain data.

    Everything the record needs from backtrader's objects, and nothing that holds them, so
    a recording process can store it (:func:`_stored`) while the backtest runs here.
    """

    name: str
    strategy: str = ""
    caller_params: dict[str, Any] = field(default_factory=dict)
    feeds: list[dict[str, Any]] = field(default_factory=list)
    broker: dict[str, Any] = field(default_factory=dict)
    sizers: dict[str, Any] = field(default_factory=dict)
    #: (feed name, its DataFrame or file path, or None when neither is known), per feed.
    sources: list[tuple[str, Any]] = field(default_factory=list)
    #: Where each feed's DataFrame holds its bars' times (see :func:`_stamp_column`).
    stamp_columns: list[str | bool] = field(default_factory=list)
    recipe: dict[str, Any] | None = None
    code: CodePlan | None = None
    entry_point: str | None = None
    cwd: str | None = None
    tags: tuple[str, ...] = ()
    description: str = ""
    seed: int | None = None
    reproduces: str | None = None

    def params(
        self, combination: Sequence[tuple[Any, Sequence[Any], Mapping[str, Any]]]
    ) -> dict[str, Any]:
        """The params of one run of ``combination`` (a (class, args, kwargs) per strategy)."""
        strategies = []
        flat: dict[str, Any] = {}
        for cls, args, kwargs in combination:
            own = {key: _plain(value) for key, value in cls.params._getitems()}
            own.update({key: _plain(value) for key, value in kwargs.items()})
            entry: dict[str, Any] = {"class": _qualified(cls), "params": own}
            if args:
                entry["args"] = [_plain(a) for a in args]
            strategies.append(entry)
            for key, value in own.items():
                flat.setdefault(key, value)
        for key, value in self.caller_params.items():
            if key in flat and flat[key] != value:
                raise ValueError(
                    f"params[{key!r}] = {value!r} conflicts with the strategy's own parameter "
                    f"{key} = {flat[key]!r}; rename your param or leave it out"
                )
            flat[key] = value
        flat[PARAMS_KEY] = {
            "strategies": strategies,
            "data": self.feeds,
            "broker": self.broker,
            "sizers": self.sizers,
        }
        return flat


@dataclass
class _Spec:
    """What every experiment of one ``adapter.run`` call shares, once stored."""

    described: _Description
    inputs: tuple[ArtifactRef, ...]
    provenance: Provenance
    code: tuple[ArtifactRef, ...]

    def definition(self, params: Mapping[str, Any], **extra: Any) -> ExperimentDefinition:
        """The definition of one run with these params."""
        described = self.described
        return ExperimentDefinition(
            name=described.name,
            strategy=described.strategy,
            engine=ENGINE,
            params=dict(params),
            inputs=self.inputs,
            provenance=self.provenance,
            tags=described.tags,
            seed=described.seed,
            description=described.description,
            reproduces=described.reproduces,
            **extra,
        )


def _stored(described: _Description, artifacts: ArtifactStore, *, store_inputs: bool) -> _Spec:
    """Store what describes a run (feed fingerprints and data, captured code, the recipe)
    and collect its provenance: the part of describing a run that needs no backtrader.
    """
    inputs: list[ArtifactRef] = []
    recipe = described.recipe
    # The bar span is read from the data here, off the backtest's critical path.
    for feed, (_name, source), column in zip(
        described.feeds, described.sources, described.stamp_columns, strict=True
    ):
        feed.update(_bar_span(source, column))
    for position, (feed_name, source) in enumerate(described.sources):
        payload = _fingerprint_bytes(source)
        if payload is None:
            continue
        fingerprint = artifacts.put(
            payload, kind="input", media_type=JSON_MEDIA_TYPE, name=f"{feed_name}.fingerprint.json"
        )
        inputs.append(fingerprint)
        stored: ArtifactRef | None = None
        if store_inputs:
            if isinstance(source, Path):
                raw, media, stored_name = source.read_bytes(), "text/csv", source.name
            else:
                raw, media = frame_to_parquet(source), PARQUET_MEDIA_TYPE
                stored_name = f"{feed_name}.parquet"
            stored = artifacts.put(raw, kind="input_data", media_type=media, name=stored_name)
            inputs.append(stored)
        if recipe is not None:
            feed = recipe["feeds"][position]
            feed["fingerprint"] = fingerprint.id
            feed["data"] = stored.id if stored is not None else None
    version = str(bt.__version__)
    code: tuple[ArtifactRef, ...] = ()
    try:
        provenance, captured = capture_origin(
            artifacts,
            described.code,
            engine=ENGINE,
            engine_version=version,
            modules=("backtrader",),
            entry_point=described.entry_point,
            cwd=described.cwd,
        )
        code = captured.refs if captured is not None else ()
    except Exception as exc:
        # Code that cannot be stored must not cost the run its record: keep it, without.
        _log.warning("backtrader.code_capture_failed", error=describe_exception(exc))
        provenance = collect_provenance(
            engine=ENGINE,
            engine_version=version,
            modules=("backtrader",),
            entry_point=described.entry_point,
            cwd=described.cwd,
        )
    if recipe is not None:
        try:
            ref = put_json(artifacts, recipe, kind=RECIPE_KIND, name="recipe.json")
            code = (*code, ref)
        except Exception as exc:
            # Without a recipe the run cannot be reproduced, but it is still worth keeping.
            _log.warning("backtrader.recipe_failed", error=describe_exception(exc))
    return _Spec(described, tuple(inputs), provenance, code)


def _feed_info(data: Any, position: int) -> dict[str, Any]:
    """A feed's params; its first and last bar are added from its data by
    :func:`_bar_span`, where the run's inputs are stored.
    """
    info: dict[str, Any] = {
        "name": data._name or f"data{position}",
        "feed": _qualified(type(data)),
        "timeframe": bt.TimeFrame.getname(data._timeframe, data._compression),
        "compression": int(data._compression),
    }
    for bound in ("fromdate", "todate"):
        value = getattr(data.p, bound, None)
        if value is not None:
            info[bound] = _timestamp(value)
    return info


def _stamp_column(data: Any) -> str | bool:
    """Where a feed's DataFrame holds its bars' times: ``True`` for the index, a column's
    name, or ``False`` when backtrader reads them otherwise (a column number, say).
    """
    column = getattr(data.p, "datetime", None)
    return True if column is None else column if isinstance(column, str) else False


def _bar_span(source: Any, column: str | bool) -> dict[str, Any]:
    """``first`` and ``last``: the times of a DataFrame feed's first and last bar."""
    import pandas as pd

    if not isinstance(source, pd.DataFrame) or not len(source) or column is False:
        return {}
    if column is True:
        stamps = source.index
    elif column in source.columns:
        stamps = pd.DatetimeIndex(source[column])
    else:
        return {}
    return {"first": _timestamp(stamps[0]), "last": _timestamp(stamps[-1])} if len(stamps) else {}


def _broker_info(cerebro: Any) -> dict[str, Any]:
    broker = cerebro.getbroker()
    cash = getattr(broker, "startingcash", None)
    if cash is None:
        cash = broker.getcash()
    schemes = {}
    for key, comminfo in getattr(broker, "comminfo", {}).items():
        settings = {k: _plain(v) for k, v in comminfo.p._getkwargs().items()}
        schemes["default" if key is None else str(key)] = {
            "class": _qualified(type(comminfo)),
            **settings,
        }
    return {"class": _qualified(type(broker)), "cash": float(cash), "commission": schemes}


def _sizer_info(cerebro: Any) -> dict[str, Any]:
    """Sizers by the strategy index they apply to (``default`` for all)."""
    sizers = {}
    for key, (cls, args, kwargs) in getattr(cerebro, "sizers", {}).items():
        entry: dict[str, Any] = {"class": _qualified(cls)}
        entry.update({k: _plain(v) for k, v in cls.params._getitems()})
        entry.update({k: _plain(v) for k, v in kwargs.items()})
        if args:
            entry["args"] = [_plain(a) for a in args]
        sizers["default" if key is None else str(key)] = entry
    return sizers


# -- the sweep's per-combination isolation ---------------------------------------------


class FailedCombination:
    """A sweep combination that raised: what backtrader would have lost with the sweep."""

    def __init__(self, exc: Exception, started: float) -> None:
        self.error = describe_exception(exc)
        self.category = categorize_error(exc)
        self.traceback = "".join(traceback.format_exception(exc))
        self.wall_start = started
        self.wall_stop = time.time()

    def __repr__(self) -> str:
        return f"FailedCombination({self.error!r}, category={self.category.value!r})"


def _ignore(_result: Any) -> None:
    return None


class _ParentCallback:
    """An optimization callback that only runs in the parent process.

    backtrader pickles the whole cerebro, callbacks included, into every ``maxcpus > 1``
    worker; the recording callback holds the workspace, so it travels as a no-op instead.
    """

    def __init__(self, fn: Callable[[Any], None]) -> None:
        self.fn = fn

    def __call__(self, result: Any) -> None:
        self.fn(result)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_ParentCallback, (_ignore,))


class _IsolatedCombinations:
    """Replaces ``cerebro.runstrategies`` during a sweep so one combination's exception
    becomes a :class:`FailedCombination` result instead of ending the whole sweep.

    A top-level class holding the cerebro, so it pickles into ``maxcpus > 1`` workers.
    """

    def __init__(self, cerebro: Any) -> None:
        self.cerebro = cerebro

    def __call__(self, iterstrat: Iterable[Any], predata: bool = False) -> list[Any]:
        started = time.time()
        try:
            result: list[Any] = type(self.cerebro).runstrategies(
                self.cerebro, iterstrat, predata=predata
            )
        except Exception as exc:
            return [FailedCombination(exc, started)]
        return result


# -- reading results --------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _sub(mapping: Any, *keys: str) -> Any:
    """``mapping[k1][k2]...`` without creating keys (backtrader's AutoDicts would)."""
    for key in keys:
        if not isinstance(mapping, Mapping) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def _finished(strategy: Any, names: Mapping[str, str]) -> dict[str, Any]:
    """A finished strategy's (or OptReturn's) analyses as plain data: the recorder's
    columns under :data:`RECORDER`, every other analyzer's output in its JSON form by name.

    Everything after this needs no backtrader objects, so it can happen in a recording
    process.
    """
    recorder = names[RECORDER]
    return {
        RECORDER: strategy.analyzers.getbyname(recorder).get_analysis(),
        "analyzers": {
            name: _jsonable(analyzer.get_analysis())
            for name, analyzer in strategy.analyzers.getitems()
            if name != recorder
        },
    }


def _sources(finished: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """Each metric source's analysis (keyed as in :func:`_wanted_analyzers`, plus
    ``equity``, the recorder's): from its analyzer, or derived from the recorder's columns.
    """
    recorded = finished[RECORDER]
    analyses = finished["analyzers"]
    found = {key: analyses[name] for key, name in names.items() if key != RECORDER}
    if "drawdown" not in found:
        found["drawdown"] = _drawdown_of(recorded["value"])
    if "trades" not in found:
        found["trades"] = _trade_analysis_of(recorded["trade_notes"])
    if "returns" not in found or "sharpe" not in found:
        derived = _derived(recorded)
        found.setdefault("returns", derived["returns"])
        found.setdefault("sharpe", derived["sharpe"])
    found["equity"] = recorded
    return found


def compute_metrics(strategy: Any, names: Mapping[str, str]) -> dict[str, float]:
    """The run's metrics from its analyzers (``names``: metric source → analyzer name).

    A source missing from ``names`` was derived after the run with backtrader's formulas
    (see :func:`_ensure_analyzers`).
    """
    return _metrics(_sources(_finished(strategy, names), names))


def _metrics(sources: Mapping[str, Any]) -> dict[str, float]:
    metrics: dict[str, float | None] = {}
    equity = sources["equity"]
    if len(equity["value"]):
        metrics["final_value"] = _finite(equity["value"][-1])
        metrics["exposure"] = equity["exposure"]
    returns = sources["returns"]
    rtot = _finite(returns.get("rtot"))
    if rtot is not None:
        metrics["total_return"] = math.expm1(rtot) * 100.0
    metrics["annual_return"] = _finite(returns.get("rnorm100"))
    metrics["sharpe"] = _finite(sources["sharpe"].get("sharperatio"))
    drawdown = sources["drawdown"]
    metrics["max_drawdown"] = _finite(_sub(drawdown, "max", "drawdown"))
    metrics["max_drawdown_length"] = _finite(_sub(drawdown, "max", "len"))
    trades = sources["trades"]
    closed = int(_sub(trades, "total", "closed") or 0)
    metrics["trades"] = float(closed)
    if closed:
        won = int(_sub(trades, "won", "total") or 0)
        lost = int(_sub(trades, "lost", "total") or 0)
        metrics["won"] = float(won)
        metrics["lost"] = float(lost)
        metrics["win_rate"] = 100.0 * won / closed
        metrics["avg_trade"] = _finite(_sub(trades, "pnl", "net", "average"))
        gains = _finite(_sub(trades, "won", "pnl", "total")) or 0.0
        losses = _finite(_sub(trades, "lost", "pnl", "total")) or 0.0
        if losses:
            metrics["profit_factor"] = gains / abs(losses)
    return {key: value for key, value in metrics.items() if value is not None}


def _analyzers_document(
    finished: Mapping[str, Any], names: Mapping[str, str], sources: Mapping[str, Any]
) -> dict[str, Any]:
    # The recorder's columns are stored as the equity curve and the trades instead.
    document = dict(finished["analyzers"])
    # Derived outputs sit where the analyzer's would have, so the document keeps its shape.
    for wanted in _wanted_analyzers():
        if wanted.key not in names:
            document[f"quantrack_{wanted.key}"] = _jsonable(sources[wanted.key])
    return document


def _micros(nums: Sequence[float] | Any) -> Any:
    """Backtrader's float dates (days since year 1) as microseconds since the epoch."""
    import numpy as np

    return np.round((np.asarray(nums, dtype="float64") - _EPOCH_ORDINAL) * 86_400e6).astype("int64")


def _equity_table(equity: Mapping[str, Any]) -> pa.Table:
    # Arrow tables straight from the recorder's lists: pandas' conversion would cost more
    # than writing the file.
    import pyarrow as pa

    return pa.table(
        {
            "time": pa.array(_micros(equity["datetime"]), type=pa.timestamp("us")),
            "value": pa.array(equity["value"], type=pa.float64()),
            "cash": pa.array(equity["cash"], type=pa.float64()),
        }
    )


_TRADE_TYPES = {
    "data": "string",
    "entry_time": "time",
    "exit_time": "time",
    "entry_price": "float64",
    "exit_price": "float64",
    "size": "float64",
    "pnl": "float64",
    "pnl_net": "float64",
    "commission": "float64",
    "bars": "int64",
}


def _trades_table(equity: Mapping[str, Any]) -> pa.Table:
    import pyarrow as pa

    rows = equity["closed_trades"]
    columns: dict[str, Any] = {}
    for column, kind in _TRADE_TYPES.items():
        values = [row[column] for row in rows]
        if kind == "time":
            columns[column] = pa.array(_micros(values), type=pa.timestamp("us"))
        else:  # a None exit price stays null
            columns[column] = pa.array(values, type=getattr(pa, kind)())
    return pa.table(columns)


def _outputs(
    finished: Mapping[str, Any], names: Mapping[str, str], artifacts: ArtifactStore
) -> tuple[dict[str, float], list[ArtifactRef]]:
    """Metrics and stored output artifacts of one finished run (see :func:`_finished`)."""
    sources = _sources(finished, names)
    metrics = _metrics(sources)
    equity = finished[RECORDER]
    refs = [
        put_frame(
            artifacts, _equity_table(equity), kind="equity_curve", name="equity_curve.parquet"
        ),
        put_frame(artifacts, _trades_table(equity), kind="trades", name="trades.parquet"),
        put_json(
            artifacts,
            _analyzers_document(finished, names, sources),
            kind="analyzers",
            name="analyzers.json",
        ),
    ]
    return metrics, refs


# -- the adapter ------------------------------------------------------------------------


@dataclass
class _Sweep:
    batch: Batch
    created_at: dt.datetime
    experiments: list[Experiment] = field(default_factory=list)
    next_index: int = 0


class BacktraderAdapter:
    """Records backtrader runs into a workspace (or into ports given explicitly).

    ``workspace`` defaults to :func:`~quantrack.open_workspace` (opened on the first run);
    tests and applications may pass ``tracker``, ``artifacts`` and ``observer`` instead.
    ``store_inputs`` also stores each feed's data as Parquet; ``capture_code`` stores the
    strategy's source.

    ``background`` (default: on for a workspace on disk) records single runs in a
    recording process (:mod:`quantrack.engines._background`) on another core, so the
    backtest does not wait for the database and the files: ``run`` returns as soon as
    backtrader does. Reads of the workspace from this process wait for the runs sent
    before them, and the interpreter's exit waits for all; :meth:`flush` waits by hand
    (before another process reads the workspace, say). ``background=False`` records
    before ``run`` returns. Sweeps are always recorded in this process.
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
        background: bool | None = None,
    ) -> None:
        given = [p for p in (tracker, artifacts, observer) if p is not None]
        if background and (given or (workspace is not None and workspace.path is None)):
            raise ValueError(
                "background recording needs a workspace on disk (the recording process "
                "opens it), not explicit ports or an in-memory workspace; pass "
                "background=False or open_workspace(path)"
            )
        if workspace is not None and given:
            raise ValueError("pass either a workspace or explicit ports, not both")
        if given and (tracker is None or artifacts is None):
            raise ValueError(
                "explicit ports need at least a tracker and an artifact store "
                "(BacktraderAdapter(tracker=..., artifacts=...))"
            )
        self._workspace = workspace
        self._tracker = tracker
        self._artifacts = artifacts
        self._observer = observer
        self.store_inputs = store_inputs
        self.capture_code = capture_code
        self.background = background

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every run this process sent to the recording process is recorded.

        Returns False when ``timeout`` (seconds) passed first. Without background
        recording there is nothing to wait for.
        """
        from quantrack.engines._background import recording_process

        return recording_process().drain(timeout=timeout)

    def _recording_process(self) -> RecordingProcess | None:
        """The recording process to record single runs in, or None to record here."""
        if self.background is False or self._workspace is None:
            return None
        from quantrack.adapters.duckdb import DuckDBExperimentTracker
        from quantrack.engines._background import recording_process

        workspace = self._workspace
        on_disk = workspace.path is not None and isinstance(
            workspace.tracker, DuckDBExperimentTracker
        )
        if not on_disk:
            if self.background:
                raise ValueError(
                    "background recording needs a workspace on disk (open_workspace(path)); "
                    "this one lives in memory: pass background=False"
                )
            return None
        # Once the process is lost (or where none can run) it records here, in order.
        return recording_process()

    def best(self, batch_id: str, *, metric: str = "sharpe", n: int = 1) -> list[Experiment]:
        """The ``n`` completed runs of the sweep ``batch_id`` with the best ``metric``, best
        first; the batch records that ``metric`` picked them (``Batch.selection_metric``).

        See :func:`quantrack.analysis.pick_best` for the direction and the errors; a
        TypeError says so when the adapter's observer keeps no batches to select from.
        """
        from quantrack.analysis import pick_best
        from quantrack.ports import BatchHistory

        if self._tracker is not None:
            tracker, history = self._tracker, self._observer
        else:
            if self._workspace is None:
                from quantrack.workspace import open_workspace

                self._workspace = open_workspace()
            tracker, history = self._workspace.tracker, self._workspace.observer
        if not isinstance(history, BatchHistory):
            raise TypeError(
                "best() needs an observer that keeps batches (a BatchHistory, such as "
                "InMemoryBatchObserver); pass observer=... or a workspace to the adapter"
            )
        return pick_best(tracker, history, batch_id, metric=metric, n=n)

    def _guard(self, label: str) -> RecordingGuard:
        if self._tracker is not None and self._artifacts is not None:
            from quantrack.adapters.memory import InMemoryBatchObserver

            return RecordingGuard(
                self._tracker,
                self._artifacts,
                self._observer if self._observer is not None else InMemoryBatchObserver(),
                spool_dir=None,
                engine=ENGINE,
                label=label,
            )
        if self._workspace is None:
            from quantrack.workspace import open_workspace

            self._workspace = open_workspace()
        return RecordingGuard.for_workspace(self._workspace, engine=ENGINE, label=label)

    def run(
        self,
        cerebro: Any,
        *,
        name: str,
        params: Mapping[str, Any] | None = None,
        tags: Iterable[str] = (),
        description: str = "",
        seed: int | None = None,
        reproduces: str | None = None,
        **run_kwargs: Any,
    ) -> Any:
        """Run ``cerebro`` (``cerebro.run(**run_kwargs)``) and record it; return its result.

        ``name`` names the run; ``params`` are extra params recorded beside the
        strategy's; ``tags``, ``description`` and ``seed`` go on the definition;
        ``reproduces`` is the id of the run this one reproduces (set by
        :func:`quantrack.reproduce.reproduce`).

        Raises TypeError for something that is not a ``bt.Cerebro``, ValueError for an
        empty name, a cerebro without data, or params that clash with the strategy's,
        :class:`~quantrack.InvalidParams` for params with no JSON form, and whatever
        backtrader raises, unchanged.
        """
        if not isinstance(cerebro, bt.Cerebro):
            raise TypeError(
                f"adapter.run expects a backtrader Cerebro, got {type(cerebro).__name__}"
            )
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if not cerebro.datas:
            raise ValueError(
                "cerebro has no data feeds, so backtrader would run nothing; add one with "
                "cerebro.adddata(feed) before adapter.run"
            )
        caller = canonical_params(dict(params or {}))
        if PARAMS_KEY in caller:
            raise ValueError(
                f"params may not use the key {PARAMS_KEY!r}; the adapter records the "
                "strategy, data and broker under it"
            )
        tags = tuple(tags)
        for tag in tags:
            if not isinstance(tag, str) or not tag.strip():
                raise ValueError(f"tags must be non-empty strings, got {tag!r}")
        optimizing = bool(cerebro._dooptimize)
        if optimizing:
            # optstrategy stores one-shot iterators; lists let us count and name the combos.
            cerebro.strats = [list(entries) for entries in cerebro.strats]
        if cerebro.strats:
            combinations = list(itertools.product(*cerebro.strats))
        else:  # backtrader runs its base Strategy when none was added
            combinations = [((bt.Strategy, (), {}),)]
        # Clashing caller params are the caller's mistake: say so before running anything.
        probe = _Description(name, caller_params=caller)
        for combination in combinations:
            probe.params(combination)

        try:
            guard = self._guard(name)
        except Exception as exc:
            # Not even a workspace to spool into: run unrecorded rather than not at all.
            _log.warning(
                "recording.failed",
                engine=ENGINE,
                run=name,
                error=describe_exception(exc),
                spooled=False,
                hint="the workspace could not be opened, so the backtest ran unrecorded",
            )
            return cerebro.run(**run_kwargs)
        with guard:
            names = guard.attempt(_ensure_analyzers, cerebro)

            def describe() -> _Description:
                return self._describe(
                    cerebro,
                    combinations[0],
                    name,
                    caller,
                    tags,
                    description,
                    seed,
                    run_kwargs=run_kwargs,
                    reproduces=reproduces,
                )

            if not optimizing:
                return self._run_single(
                    guard, cerebro, describe, names, combinations[0], run_kwargs
                )
            described = guard.attempt(describe)
            spec = None
            if described is not None:
                spec = guard.attempt(
                    _stored, described, guard.artifacts, store_inputs=self.store_inputs
                )
            if spec is None or names is None:
                return cerebro.run(**run_kwargs)
            return self._run_sweep(guard, cerebro, spec, names, combinations, run_kwargs)

    def _describe(
        self,
        cerebro: Any,
        combination: Sequence[tuple[Any, Any, Any]],
        name: str,
        caller: dict[str, Any],
        tags: tuple[str, ...],
        description: str,
        seed: int | None,
        *,
        run_kwargs: Mapping[str, Any],
        reproduces: str | None,
    ) -> _Description:
        sources = [_source_of(data) for data in cerebro.datas]
        strategy_cls = combination[0][0]
        code: CodePlan | None = None
        if self.capture_code:
            try:
                code = find_code(strategy_cls)
            except Exception as exc:
                # A bad strategy.yaml must not cost the run its record: keep it, without code.
                _log.warning("backtrader.code_capture_failed", error=describe_exception(exc))
        try:
            recipe: dict[str, Any] | None = _recipe(cerebro, combination, sources, run_kwargs)
        except Exception as exc:
            # Without a recipe the run cannot be reproduced, but it is still worth keeping.
            _log.warning("backtrader.recipe_failed", error=describe_exception(exc))
            recipe = None
        return _Description(
            name=name,
            strategy=_qualified(strategy_cls),
            caller_params=caller,
            feeds=[_feed_info(data, i) for i, data in enumerate(cerebro.datas)],
            stamp_columns=[_stamp_column(data) for data in cerebro.datas],
            broker=_broker_info(cerebro),
            sizers=_sizer_info(cerebro),
            sources=[
                (data._name or f"data{position}", source)
                for position, (data, source) in enumerate(zip(cerebro.datas, sources, strict=True))
            ],
            recipe=recipe,
            code=code,
            entry_point=current_entry_point(),
            cwd=os.getcwd(),
            tags=tags,
            description=description,
            seed=seed,
            reproduces=reproduces,
        )

    def _run_single(
        self,
        guard: RecordingGuard,
        cerebro: Any,
        describe: Callable[[], _Description],
        names: Mapping[str, str] | None,
        combination: Sequence[tuple[Any, Any, Any]],
        run_kwargs: Mapping[str, Any],
    ) -> Any:
        """One run, recorded by :func:`_open_recorded` and :func:`_close_recorded`.

        In the recording process when there is one; else here, with the opening done by a
        helper thread while backtrader runs (that work mostly waits on git and the
        database, not on Python).
        """
        described = guard.attempt(describe)
        if described is None or names is None:
            return cerebro.run(**run_kwargs)
        start = _RunStart(
            described, described.params(combination), new_id(), store_inputs=self.store_inputs
        )
        close: Callable[[RunEnd, Mapping[str, Any] | None], None]
        process = guard.attempt(self._recording_process)
        if process is not None and self._workspace is not None:
            workspace = self._workspace
            process.submit(workspace, _open_job, start)

            def close(end: RunEnd, finished: Mapping[str, Any] | None) -> None:
                # The recording process has the start since the opening: send its id.
                tail = (end, finished, names)
                process.submit(
                    workspace, _close_job, start, *tail, sent_as=(start.experiment_id, *tail)
                )

        else:
            opened: list[Run | None] = []
            helper = threading.Thread(
                target=lambda: opened.append(guard.attempt(_open_recorded, guard, start)),
                name="quantrack-open-run",
                daemon=True,
            )
            helper.start()

            def close(end: RunEnd, finished: Mapping[str, Any] | None) -> None:
                helper.join()
                _close_recorded(guard, opened[0], start, end, finished, names)

        try:
            result = cerebro.run(**run_kwargs)
        except BaseException as exc:
            close(RunEnd.of(exc), None)
            raise
        close(RunEnd(), guard.attempt(_finished, result[0], names) if result else None)
        return result

    def _run_sweep(
        self,
        guard: RecordingGuard,
        cerebro: Any,
        spec: _Spec,
        names: Mapping[str, str],
        combinations: list[Any],
        run_kwargs: Mapping[str, Any],
    ) -> Any:
        grid: dict[str, list[Any]] = {}
        for combination in combinations:
            for _cls, _args, kwargs in combination:
                for key, value in kwargs.items():
                    values = grid.setdefault(key, [])
                    plain = _plain(value)
                    if plain not in values:
                        values.append(plain)
        batch = Batch(
            name=spec.described.name,
            total=len(combinations),
            params={"engine": ENGINE, "strategy": spec.described.strategy, "grid": grid},
            tags=spec.described.tags,
        )
        sweep = _Sweep(batch=start_batch(batch), created_at=utcnow())
        guard.observer.on_batch_started(sweep.batch)

        def on_combination(result: list[Any]) -> None:
            index = sweep.next_index
            sweep.next_index += 1
            guard.attempt(
                self._record_combination, guard, sweep, spec, names, index, combinations, result
            )

        callback = _ParentCallback(on_combination)
        cerebro.optcallback(callback)
        cerebro.runstrategies = _IsolatedCombinations(cerebro)
        try:
            results = cerebro.run(**run_kwargs)
        except KeyboardInterrupt:
            guard.attempt(self._end_sweep, guard, sweep, interrupted=True)
            raise
        except Exception as exc:
            guard.attempt(self._fail_rest, guard, sweep, spec, combinations, exc)
            guard.attempt(self._end_sweep, guard, sweep, interrupted=False)
            raise
        finally:
            del cerebro.runstrategies
            cerebro.optcbs.remove(callback)
        guard.attempt(self._end_sweep, guard, sweep, interrupted=False)
        return [r for r in results if not (r and isinstance(r[0], FailedCombination))]

    @staticmethod
    def _record_combination(
        guard: RecordingGuard,
        sweep: _Sweep,
        spec: _Spec,
        names: Mapping[str, str],
        index: int,
        combinations: list[Any],
        result: list[Any],
    ) -> None:
        params = spec.described.params(combinations[index])
        definition = spec.definition(params, batch_id=sweep.batch.id, batch_index=index)
        experiment = new_experiment(definition, now=sweep.created_at)
        if not result:
            # The strategy raised StrategySkipError: backtrader ran nothing for these params.
            experiment = transition(experiment, ExperimentStatus.RUNNING)
            experiment = transition(
                experiment,
                ExperimentStatus.CANCELLED,
                error="skipped by the strategy (StrategySkipError)",
            )
        elif isinstance(result[0], FailedCombination):
            failure: FailedCombination = result[0]
            experiment = transition(
                experiment, ExperimentStatus.RUNNING, now=_utc(failure.wall_start)
            )
            trace = guard.artifacts.put(
                failure.traceback.encode("utf-8"),
                kind="diagnostics",
                media_type="text/plain",
                name="traceback.txt",
            )
            experiment = attach_results(
                experiment, ExperimentResults(artifacts=(*spec.code, trace))
            )
            experiment = transition(
                experiment,
                ExperimentStatus.FAILED,
                error=failure.error,
                error_category=failure.category,
                now=_utc(failure.wall_stop),
            )
        else:
            finished = _finished(result[0], names)
            recorded = finished[RECORDER]
            experiment = transition(
                experiment, ExperimentStatus.RUNNING, now=_utc(recorded["wall_start"])
            )
            metrics, refs = _outputs(finished, names, guard.artifacts)
            refs[:0] = spec.code
            experiment = attach_results(
                experiment, ExperimentResults(metrics=metrics, artifacts=tuple(refs))
            )
            experiment = transition(
                experiment, ExperimentStatus.COMPLETED, now=_utc(recorded["wall_stop"])
            )
        _finish_item(guard, sweep, index, experiment)

    @staticmethod
    def _fail_rest(
        guard: RecordingGuard,
        sweep: _Sweep,
        spec: _Spec,
        combinations: list[Any],
        exc: Exception,
    ) -> None:
        """The sweep itself broke: its unfinished combinations fail with that error."""
        for index in range(sweep.next_index, len(combinations)):
            definition = spec.definition(
                spec.described.params(combinations[index]),
                batch_id=sweep.batch.id,
                batch_index=index,
            )
            experiment = new_experiment(definition, now=sweep.created_at)
            experiment = transition(experiment, ExperimentStatus.RUNNING)
            experiment = transition(
                experiment,
                ExperimentStatus.FAILED,
                error=describe_exception(exc),
                error_category=categorize_error(exc),
            )
            _finish_item(guard, sweep, index, experiment)
        sweep.next_index = len(combinations)

    @staticmethod
    def _end_sweep(guard: RecordingGuard, sweep: _Sweep, *, interrupted: bool) -> None:
        if sweep.experiments:
            with guard.tracker.session():
                guard.tracker.record_finished(
                    FinishedExperiments.from_experiments(sweep.experiments)
                )
        sweep.batch = finish_batch(sweep.batch, interrupted=interrupted)
        guard.observer.on_batch_finished(sweep.batch)


def _finish_item(guard: RecordingGuard, sweep: _Sweep, index: int, experiment: Experiment) -> None:
    sweep.experiments.append(experiment)
    item = BatchItemResult(
        index=index,
        experiment_id=experiment.id,
        params=experiment.params,
        status=experiment.status,
        error=experiment.error,
        error_category=experiment.error_category,
        duration_seconds=experiment.duration_seconds,
    )
    sweep.batch = record_item(sweep.batch, item)
    guard.observer.on_item_finished(sweep.batch, item)


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


# -- recording one run, here or in the recording process ---------------------------------


@dataclass(frozen=True)
class _RunStart:
    """What recording a single run needs from before it ran, as plain data."""

    described: _Description
    params: dict[str, Any]
    experiment_id: str
    store_inputs: bool = False


def _open_recorded(guard: RecordingGuard, start: _RunStart) -> Run:
    """Store the run's description and move it to running."""
    spec = _stored(start.described, guard.artifacts, store_inputs=start.store_inputs)
    # The params were taken before the feeds' bar spans were read (see _stored).
    own = {**start.params[PARAMS_KEY], "data": spec.described.feeds}
    run = open_run(
        guard.tracker,
        guard.artifacts,
        spec.definition({**start.params, PARAMS_KEY: own}),
        experiment_id=start.experiment_id,
    )
    for ref in spec.code:
        run.add_artifact(ref)
    return run


def _close_recorded(
    guard: RecordingGuard,
    run: Run | None,
    start: _RunStart,
    end: RunEnd,
    finished: Mapping[str, Any] | None,
    names: Mapping[str, str],
) -> None:
    """Store the run's metrics and outputs and end it as ``end`` says.

    ``run`` is None when opening it failed or happened in a process that is gone: it is
    opened first. A failure to build the outputs still ends the run (without them).
    """
    if run is None:
        run = guard.attempt(_open_recorded, guard, start)
        if run is None:
            return
    if finished is not None:
        outputs = guard.attempt(_outputs, finished, names, guard.artifacts)
        if outputs is not None:
            metrics, refs = outputs
            run.log_metrics(metrics)
            for ref in refs:
                run.add_artifact(ref)
    guard.attempt(close_run, guard.tracker, run, end)


#: Runs the recording process has opened and not yet closed, by experiment id.
_open_runs: dict[str, tuple[RecordingGuard, Run | None, _RunStart]] = {}


def _open_job(workspace: Workspace, start: _RunStart) -> None:
    """In the recording process: open the run while the backtest runs."""
    guard = RecordingGuard.for_workspace(workspace, engine=ENGINE, label=start.described.name)
    _open_runs[start.experiment_id] = (guard, guard.attempt(_open_recorded, guard, start), start)


def _close_job(
    workspace: Workspace,
    start: _RunStart | str,
    end: RunEnd,
    finished: Mapping[str, Any] | None,
    names: Mapping[str, str],
) -> None:
    """In the recording process: record the finished run; spool it if that fails.

    ``start`` is the run's start, or the id of a run :func:`_open_job` opened here.
    """
    experiment_id = start if isinstance(start, str) else start.experiment_id
    opened = _open_runs.pop(experiment_id, None)
    if opened is not None:
        guard, run, start = opened
    elif isinstance(start, str):
        raise LookupError(f"run {start} was not opened here; it is recorded where it ran")
    else:
        guard = RecordingGuard.for_workspace(workspace, engine=ENGINE, label=start.described.name)
        run = None
    with guard:
        _close_recorded(guard, run, start, end, finished, names)
