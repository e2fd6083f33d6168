"""Filling a workspace with runs and a sweep for the CLI tests (any adapters)."""

from __future__ import annotations

import datetime as dt
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from quantrack.domain import (
    ArtifactRef,
    Batch,
    BatchItemResult,
    ExperimentDefinition,
    ExperimentStatus,
    FinishedExperiments,
    new_id,
)
from quantrack.domain.lifecycle import finish_batch, record_item, start_batch
from quantrack.services.code_capture import capture_code
from quantrack.services.recording import track
from quantrack.workspace import Workspace

STRATEGY_V1 = "def signal(fast, slow):\n    return fast > slow\n"
STRATEGY_V2 = "def signal(fast, slow):\n    return fast >= slow\n"


@dataclass
class Recorded:
    """Ids of what :func:`populate` recorded."""

    runs: dict[str, str] = field(default_factory=dict)
    batch_id: str = ""
    batch_runs: list[str] = field(default_factory=list)
    input_id: str = ""


def parquet(frame: pd.DataFrame) -> bytes:
    """The frame as Parquet bytes."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def curve(seed: int, n: int = 120) -> pd.Series:
    """A made-up equity curve of ``n`` business days."""
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0005, 0.01, n)
    index = pd.bdate_range("2023-01-02", periods=n)
    return pd.Series(10_000 * np.cumprod(1 + returns), index=index)


def _capture(ws: Workspace, source: str) -> tuple[ArtifactRef, ...]:
    """Store ``source`` as a strategy file the way engines capture code."""
    folder = Path(tempfile.mkdtemp(prefix="qt-cli-code-"))
    path = folder / "strategy.py"
    path.write_text(source)
    return capture_code(ws.artifacts, path).refs


def populate(ws: Workspace) -> Recorded:
    """Three completed runs, one failed run and a 12-item sweep of which one failed."""
    recorded = Recorded()
    prices = ws.artifacts.put(b"date,close\n2023-01-02,100\n", kind="input", name="AAA.csv")
    recorded.input_id = prices.id
    for name, fast, sharpe, code in (
        ("sma-fast", 10, 1.5, STRATEGY_V1),
        ("sma-mid", 11, 0.8, STRATEGY_V2),
        ("sma-slow", 30, 0.2, STRATEGY_V1),
    ):
        definition = ExperimentDefinition(
            name=name,
            strategy="sma",
            engine="python",
            params={"fast": fast, "slow": 50, "symbol": "AAA"},
            inputs=(prices,) if name != "sma-slow" else (),
            tags=("cli-test",),
        )
        with track(ws.tracker, ws.artifacts, definition) as run:
            run.log_metrics({"sharpe": sharpe, "max_drawdown": 10.0 + fast, "trades": 7.0})
            frame = pd.DataFrame({"time": curve(fast).index, "value": curve(fast).to_numpy()})
            run.log_artifact(
                parquet(frame),
                kind="equity_curve",
                media_type="application/vnd.apache.parquet",
                name="equity.parquet",
            )
            for ref in _capture(ws, code):
                run.add_artifact(ref)
        recorded.runs[name] = run.id
    try:
        broken = ExperimentDefinition(name="sma-broken", strategy="sma", params={"fast": -1})
        with track(ws.tracker, ws.artifacts, broken):
            raise ValueError("fast must be positive")
    except ValueError:
        pass
    recorded.runs["sma-broken"] = ws.tracker.list_experiments()[0].id
    _sweep(ws, recorded)
    return recorded


def _sweep(ws: Workspace, recorded: Recorded) -> None:
    grid = [(fast, slow) for fast in (5, 10, 15) for slow in (20, 40, 60, 80)]
    columns = {f"{f}_{s}": curve(f * 100 + s) for f, s in grid}
    shared = ws.artifacts.put(
        parquet(pd.DataFrame(columns).rename_axis("date").reset_index()),
        kind="equity_curve",
        media_type="application/vnd.apache.parquet",
        name="sweep-equity.parquet",
    )
    batch = start_batch(Batch(name="ma-grid", total=len(grid)))
    ws.observer.on_batch_started(batch)
    now = dt.datetime.now(dt.UTC)
    ids = tuple(new_id() for _ in grid)
    failed = len(grid) - 1
    statuses = tuple(
        ExperimentStatus.FAILED if i == failed else ExperimentStatus.COMPLETED
        for i in range(len(grid))
    )
    template = ExperimentDefinition(
        name="ma-grid", strategy="ma-cross", engine="vectorbt", batch_id=batch.id
    )
    ws.tracker.record_finished(
        FinishedExperiments(
            template=template,
            ids=ids,
            names=tuple(f"ma-grid {f}/{s}" for f, s in grid),
            params=tuple({"fast_window": f, "slow_window": s} for f, s in grid),
            metrics={
                "sharpe": tuple(
                    None if i == failed else round(0.1 * f - 0.01 * s, 4)
                    for i, (f, s) in enumerate(grid)
                )
            },
            status=statuses,
            created_at=(now,) * len(grid),
            started_at=(now,) * len(grid),
            completed_at=(now,) * len(grid),
            errors=tuple(
                "ZeroDivisionError: no bars" if s is ExperimentStatus.FAILED else None
                for s in statuses
            ),
            error_categories=tuple(
                "data_error" if s is ExperimentStatus.FAILED else None for s in statuses
            ),  # type: ignore[arg-type]
            row_artifacts=tuple(
                (ArtifactRef.model_validate({**shared.model_dump(), "part": f"{f}_{s}"}),)
                for f, s in grid
            ),
            batch_indexes=tuple(range(len(grid))),
        )
    )
    for i, ((f, s), experiment_id) in enumerate(zip(grid, ids, strict=True)):
        item = BatchItemResult(
            index=i,
            experiment_id=experiment_id,
            params={"fast_window": f, "slow_window": s},
            status=statuses[i],
            error="ZeroDivisionError: no bars" if i == failed else None,
            error_category="data_error" if i == failed else None,  # type: ignore[arg-type]
        )
        batch = record_item(batch, item)
        ws.observer.on_item_finished(batch, item)
    batch = finish_batch(batch)
    ws.observer.on_batch_finished(batch)
    recorded.batch_id = batch.id
    recorded.batch_runs = list(ids)
