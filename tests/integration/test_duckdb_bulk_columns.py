"""The bulk path's column building on a real DuckDB file: every shape of column a sweep
can hand in reads back exactly as the in-memory reference stores it.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import duckdb

from quantrack.adapters.duckdb import DuckDBExperimentTracker
from quantrack.adapters.memory import InMemoryExperimentTracker
from quantrack.domain import (
    ArtifactRef,
    ErrorCategory,
    ExperimentDefinition,
    ExperimentFilter,
    ExperimentStatus,
    FinishedExperiments,
)

_T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)


def _ref(i: int, *, name: str | None = None, part: str | None = None) -> ArtifactRef:
    return ArtifactRef(
        id=f"{i:064x}",
        size=10 + i,
        media_type="application/json",
        kind="trades",
        name=name,
        part=part,
    )


def _varied(n: int) -> FinishedExperiments:
    """Rows that share as little as possible: own names, statuses, times, errors,
    artifacts, and params whose names, kinds and presence differ from row to row.
    """
    statuses = (ExperimentStatus.COMPLETED, ExperimentStatus.FAILED, ExperimentStatus.CANCELLED)
    status = tuple(statuses[i % 3] for i in range(n))
    return FinishedExperiments(
        template=ExperimentDefinition(
            name="unused", strategy="sma", engine="vectorbt", tags=("a", "b"), batch_id="b-1"
        ),
        ids=tuple(f"run-{i:04d}" for i in range(n)),
        names=tuple(f"name {i} 'quoted'; drop table x" for i in range(n)),
        params=tuple(
            {
                "int": i,
                "float": i + 0.25,
                "flag": i % 2 == 0,
                "text": f"S{i % 4} é",
                "mixed": i if i % 2 else f"t{i}",
                "big": 2**60 + i,
                "nested": [i, {"k": None}],
                **({"sometimes": f"only {i}"} if i % 5 == 0 else {}),
            }
            for i in range(n)
        ),
        metrics={
            "sharpe": tuple(None if i % 4 == 0 else i / 10 for i in range(n)),
            "never": tuple(None for _ in range(n)),
            "count": tuple(float(i) for i in range(n)),
        },
        status=status,
        created_at=tuple(_T0 + dt.timedelta(seconds=i) for i in range(n)),
        started_at=tuple(
            None if s is ExperimentStatus.CANCELLED else _T0 + dt.timedelta(seconds=i + 1)
            for i, s in enumerate(status)
        ),
        completed_at=tuple(_T0 + dt.timedelta(seconds=i + 2) for i in range(n)),
        errors=tuple("boom\x00 'x'" if s is ExperimentStatus.FAILED else None for s in status),
        error_categories=tuple(
            ErrorCategory.DATA_ERROR if s is ExperimentStatus.FAILED else None for s in status
        ),
        artifacts=(_ref(0, name="shared"),),
        row_artifacts=tuple(
            (_ref(i + 1, name=None if i % 2 else f"own {i}", part="p" if i % 3 else None),)
            if i % 2 == 0
            else ()
            for i in range(n)
        ),
        batch_indexes=tuple(range(n)),
    )


def test_rows_that_share_nothing_read_back_as_the_reference_holds_them(tmp_path: Path) -> None:
    """Per-row names, statuses, times (some missing), errors, artifacts, mixed params."""
    records = _varied(37)
    duck = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    memory = InMemoryExperimentTracker()
    assert duck.record_finished(records) == memory.record_finished(records)
    assert duck.list_experiments() == memory.list_experiments()
    for experiment in memory.list_experiments():
        assert duck.get_experiment(experiment.id) == experiment


def test_metric_columns_without_a_value_are_not_known_names(tmp_path: Path) -> None:
    """A metric that is None in every row stores no rows and cannot be ordered by."""
    duck = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    duck.record_finished(_varied(8))
    _, rows = duck.query("SELECT DISTINCT name FROM metrics ORDER BY name")
    assert rows == [("count",), ("sharpe",)]
    ordered = duck.list_experiments(ExperimentFilter(order_by="sharpe", limit=2))
    assert [e.metrics["sharpe"] for e in ordered] == [0.7, 0.6]


def test_params_are_stored_in_run_order_with_one_typed_value(tmp_path: Path) -> None:
    """Each param row sets exactly one value column, and rows follow the runs' order."""
    duck = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    duck.record_finished(_varied(11))
    duck.close()
    con = duckdb.connect(str(tmp_path / "runs.duckdb"), read_only=True)
    try:
        seqs = [row[0] for row in con.execute("SELECT seq FROM qt_params").fetchall()]
        set_counts = con.execute(
            "SELECT DISTINCT (value_num IS NOT NULL)::INT + (value_text IS NOT NULL)::INT "
            "+ (value_bool IS NOT NULL)::INT + (value_json IS NOT NULL AND value_num IS NULL)::INT "
            "FROM qt_params"
        ).fetchall()
        flags = con.execute(
            "SELECT value_bool FROM params WHERE name = 'flag' ORDER BY experiment_id"
        ).fetchall()
    finally:
        con.close()
    assert seqs == sorted(seqs)
    assert set_counts == [(1,)]
    assert [row[0] for row in flags] == [i % 2 == 0 for i in range(11)]


def test_the_bulk_path_imports_neither_pandas_nor_pyarrow(tmp_path: Path) -> None:
    """Recording a sweep in a fresh process loads numpy only (pandas costs 0.3 s)."""
    script = f"""
import sys, datetime as dt
from pathlib import Path
from quantrack.adapters.duckdb import DuckDBExperimentTracker
from quantrack.domain import ExperimentDefinition, ExperimentStatus, FinishedExperiments
now = dt.datetime.now(dt.UTC)
records = FinishedExperiments(
    template=ExperimentDefinition(name="s"), ids=("a", "b"),
    params=({{"x": 1, "s": "t"}}, {{"x": 2, "s": "u"}}), metrics={{"m": (1.0, None)}},
    status=ExperimentStatus.COMPLETED, created_at=now, started_at=now, completed_at=now,
)
tracker = DuckDBExperimentTracker(Path({str(tmp_path / "runs.duckdb")!r}))
tracker.record_finished(records)
assert sorted(e.id for e in tracker.list_experiments()) == ["a", "b"]
print(sorted(m for m in ("pandas", "pyarrow") if m in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
