"""The DuckDB tracker on a real database file: bad input, hostile strings, SQL, ids."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import duckdb
import pytest

from quantrack.adapters.duckdb import DuckDBBatchObserver, DuckDBExperimentTracker
from quantrack.adapters.memory import InMemoryExperimentTracker
from quantrack.domain import (
    ArtifactRef,
    DuplicateExperiment,
    ExperimentDefinition,
    ExperimentFilter,
    ExperimentNotFound,
    ExperimentNotRunning,
    ExperimentResults,
    ExperimentStatus,
    FinishedExperiments,
    InvalidFilter,
    InvalidTransition,
    Provenance,
)
from quantrack.domain.query import Comparison

_TABLES = (
    "qt_experiments",
    "qt_params",
    "qt_metrics",
    "qt_metric_names",
    "qt_inputs",
    "qt_artifacts",
    "qt_batches",
    "qt_batch_items",
)
_SHA = "ab" * 32


def snapshot(tracker: DuckDBExperimentTracker) -> dict[str, list[str]]:
    """Every row of every table, read with a plain DuckDB connection."""
    tracker.close()
    con = duckdb.connect(str(tracker.path), read_only=True)
    try:
        return {t: sorted(map(repr, con.execute(f"SELECT * FROM {t}").fetchall())) for t in _TABLES}
    finally:
        con.close()


@pytest.fixture
def tracker(tmp_path: Path) -> DuckDBExperimentTracker:
    """A tracker on a fresh file holding one running and one completed experiment."""
    t = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    running = t.create_experiment(
        ExperimentDefinition(name="running", params={"w": 5}), experiment_id="run-1"
    )
    t.update_status(running.id, ExperimentStatus.RUNNING)
    done = t.create_experiment(ExperimentDefinition(name="done"), experiment_id="done-1")
    t.update_status(done.id, ExperimentStatus.RUNNING)
    t.update_status(done.id, ExperimentStatus.COMPLETED)
    return t


def test_unknown_id_raises_and_changes_nothing(tracker: DuckDBExperimentTracker) -> None:
    """Every call on an unknown id raises ExperimentNotFound and leaves the file as it was."""
    before = snapshot(tracker)
    with pytest.raises(ExperimentNotFound):
        tracker.get_experiment("nope")
    with pytest.raises(ExperimentNotFound):
        tracker.update_status("nope", ExperimentStatus.RUNNING)
    with pytest.raises(ExperimentNotFound):
        tracker.store_results("nope", ExperimentResults(metrics={"x": 1.0}))
    with pytest.raises(ExperimentNotFound):
        tracker.delete_experiment("nope")
    assert snapshot(tracker) == before


def test_duplicate_id_raises_and_changes_nothing(tracker: DuckDBExperimentTracker) -> None:
    """Creating an id twice raises DuplicateExperiment and stores nothing new."""
    before = snapshot(tracker)
    with pytest.raises(DuplicateExperiment):
        tracker.create_experiment(ExperimentDefinition(name="again"), experiment_id="run-1")
    assert snapshot(tracker) == before


def test_illegal_transition_raises_and_changes_nothing(tracker: DuckDBExperimentTracker) -> None:
    """Moving out of a terminal state, or failing without an error, changes nothing."""
    before = snapshot(tracker)
    with pytest.raises(InvalidTransition):
        tracker.update_status("done-1", ExperimentStatus.RUNNING)
    with pytest.raises(InvalidTransition):
        tracker.update_status("run-1", ExperimentStatus.FAILED)
    assert snapshot(tracker) == before


def test_results_on_finished_run_raise_and_change_nothing(
    tracker: DuckDBExperimentTracker,
) -> None:
    """store_results and heartbeat on a completed run raise ExperimentNotRunning."""
    before = snapshot(tracker)
    with pytest.raises(ExperimentNotRunning):
        tracker.store_results("done-1", ExperimentResults(metrics={"sharpe": 1.0}))
    with pytest.raises(ExperimentNotRunning):
        tracker.heartbeat("done-1")
    assert snapshot(tracker) == before


def test_bulk_duplicate_stores_none(tracker: DuckDBExperimentTracker) -> None:
    """A bulk insert holding one taken id stores none of its rows."""
    before = snapshot(tracker)
    now = dt.datetime.now(dt.UTC)
    records = FinishedExperiments(
        template=ExperimentDefinition(name="sweep"),
        ids=("fresh-1", "run-1"),
        params=({"a": 1}, {"a": 2}),
        status=(ExperimentStatus.COMPLETED,) * 2,
        created_at=(now,) * 2,
        started_at=(now,) * 2,
        completed_at=(now,) * 2,
    )
    with pytest.raises(DuplicateExperiment, match="run-1"):
        tracker.record_finished(records)
    assert snapshot(tracker) == before


HOSTILE = [
    "it's",
    'say "hi"',
    "x'; DROP TABLE qt_experiments; --",
    "nul\x00byte",
    "ünïcødé ✓ 日本",
    "long" * 5000,
    "\\back\\slash%_",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_round_trip(tmp_path: Path, text: str) -> None:
    """Quotes, SQL, NUL bytes, unicode and long strings are stored and returned exactly."""
    tracker = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    definition = ExperimentDefinition(
        name=text,
        strategy=text,
        params={"p": text, text: 1},
        tags=(text,),
        description=text,
        provenance=Provenance(git_commit=text, packages={text: text}),
        inputs=(ArtifactRef(id=_SHA, size=1, name=text, kind="input"),),
    )
    created = tracker.create_experiment(definition)
    tracker.update_status(created.id, ExperimentStatus.RUNNING)
    tracker.store_results(created.id, ExperimentResults(metrics={text: 1.5}))
    stored = tracker.update_status(
        created.id, ExperimentStatus.FAILED, error=text, error_category=None
    )
    loaded = tracker.get_experiment(created.id)
    assert loaded == stored
    assert loaded.definition == definition
    assert loaded.error == text
    assert loaded.metrics == {text: 1.5}
    found = tracker.list_experiments(
        ExperimentFilter(name=text, strategy=text, tags=frozenset({text}), git_commit=text)
    )
    assert [e.id for e in found] == [created.id]
    by_param = ExperimentFilter(where=Comparison(field="p", op="=", value=text))
    assert [e.id for e in tracker.list_experiments(by_param)] == [created.id]
    assert snapshot(tracker)["qt_experiments"]  # the table survived


def _populate(tracker: object) -> None:
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    rows = 12
    records = FinishedExperiments(
        template=ExperimentDefinition(name="sweep", strategy="sma", tags=("a",)),
        ids=tuple(f"id-{i:02d}" for i in range(rows)),
        params=tuple(
            {
                "window": i % 4,
                "symbol": "AAA" if i % 3 else "BBB",
                "long": i % 2 == 0,
                "ratio": i / 4,
                "nested": [i],
                **({"sharpe": "shadow"} if i == 5 else {}),
            }
            for i in range(rows)
        ),
        metrics={
            "sharpe": tuple(None if i % 5 == 0 else (i % 6) * 0.5 for i in range(rows)),
            "cagr": tuple(float(i) for i in range(rows)),
        },
        status=(ExperimentStatus.COMPLETED,) * rows,
        created_at=tuple(now + dt.timedelta(seconds=i % 3) for i in range(rows)),
        started_at=tuple(now + dt.timedelta(seconds=i % 3) for i in range(rows)),
        completed_at=tuple(now + dt.timedelta(seconds=5) for _ in range(rows)),
    )
    tracker.record_finished(records)  # type: ignore[attr-defined]


WHERES = [
    "sharpe > 1",
    "sharpe >= 1 and window = 2",
    "sharpe = 'x'",
    "window != 1 or symbol = 'BBB'",
    "long = true and ratio < 2",
    "long = 1",
    "symbol > 'AAA'",
    "params.sharpe = 'shadow'",
    "metrics.cagr <= 3 or (window = 3 and sharpe != 0)",
    "nested = 1",
    "missing = 1",
    "ratio = 0.75",
]


@pytest.mark.parametrize("where", WHERES)
@pytest.mark.parametrize("order_by", ["created_at", "sharpe", "cagr"])
@pytest.mark.parametrize("descending", [True, False])
def test_filters_agree_with_the_reference(
    tmp_path: Path, where: str, order_by: str, descending: bool
) -> None:
    """Compiled SQL filters and orders exactly as the in-memory reference evaluates."""
    duck = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    memory = InMemoryExperimentTracker()
    _populate(duck)
    _populate(memory)
    query = ExperimentFilter(where=where, order_by=order_by, descending=descending)
    got = [e.id for e in duck.list_experiments(query)]
    assert got == [e.id for e in memory.list_experiments(query)]
    limited = query.model_copy(update={"limit": 3})
    assert [e.id for e in duck.list_experiments(limited)] == got[:3]


def test_loaded_sweep_equals_reference(tmp_path: Path) -> None:
    """Every bulk-recorded row reads back equal to the model the reference stores."""
    duck = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    memory = InMemoryExperimentTracker()
    _populate(duck)
    _populate(memory)
    assert duck.list_experiments() == memory.list_experiments()


def test_order_by_unknown_metric_is_refused(tracker: DuckDBExperimentTracker) -> None:
    """Ordering by a metric no run has raises InvalidFilter naming the known ones."""
    tracker.store_results("run-1", ExperimentResults(metrics={"sharpe": 1.0}))
    with pytest.raises(InvalidFilter, match="sharpe"):
        tracker.list_experiments(ExperimentFilter(order_by="drop_table"))


def test_deleting_the_last_holder_forgets_the_metric(tracker: DuckDBExperimentTracker) -> None:
    """Once no stored run has a metric, ordering by it is refused again."""
    tracker.store_results("run-1", ExperimentResults(metrics={"only_here": 1.0}))
    assert tracker.list_experiments(ExperimentFilter(order_by="only_here"))
    tracker.delete_experiment("run-1")
    with pytest.raises(InvalidFilter):
        tracker.list_experiments(ExperimentFilter(order_by="only_here"))


def test_big_integers_and_nested_params_round_trip(tmp_path: Path) -> None:
    """Params beyond 2**53, floats, lists, dicts and None come back exactly."""
    tracker = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    params = {
        "big": 2**70,
        "negative_big": -(2**60) - 1,
        "float_big": 1e20,
        "half": 0.5,
        "none": None,
        "items": [1, "a", {"b": [True]}],
    }
    created = tracker.create_experiment(ExperimentDefinition(name="p", params=params))
    assert tracker.get_experiment(created.id).params == params


def test_resolve_prefix(tracker: DuckDBExperimentTracker) -> None:
    """A unique prefix resolves; a short, ambiguous or unknown one says why it cannot."""
    tracker.create_experiment(ExperimentDefinition(name="x"), experiment_id="run-2")
    assert tracker.resolve_prefix("done") == "done-1"
    assert tracker.resolve_prefix("run-1") == "run-1"
    assert tracker.experiment_ids_by_prefix("run-") == ["run-1", "run-2"]
    with pytest.raises(InvalidFilter, match="run-1, run-2"):
        tracker.resolve_prefix("run-")
    with pytest.raises(InvalidFilter, match="at least 4"):
        tracker.resolve_prefix("do")
    with pytest.raises(ExperimentNotFound):
        tracker.resolve_prefix("zzzz")


def test_query_reads_the_views(tracker: DuckDBExperimentTracker) -> None:
    """query() runs SQL over the documented views and returns columns and rows."""
    tracker.store_results("run-1", ExperimentResults(metrics={"sharpe": 2.0}))
    columns, rows = tracker.query(
        "SELECT e.name, m.value FROM experiments e JOIN metrics m ON m.experiment_id = e.id "
        "WHERE m.name = 'sharpe'"
    )
    assert columns == ["name", "value"]
    assert rows == [("running", 2.0)]
    _, params = tracker.query("SELECT name, value_num FROM params")
    assert params == [("w", 5.0)]
    _, tags = tracker.query("SELECT count(*) FROM experiment_tags")
    assert tags == [(0,)]


def test_query_cannot_write(tracker: DuckDBExperimentTracker) -> None:
    """Writing through query() fails with InvalidFilter and the data stays."""
    before = snapshot(tracker)
    with pytest.raises(InvalidFilter, match=r"read-only|read only"):
        tracker.query("DELETE FROM qt_experiments")
    with pytest.raises(InvalidFilter):
        tracker.query("DROP VIEW experiments")
    with pytest.raises(InvalidFilter, match="no_such_table"):
        tracker.query("SELECT * FROM no_such_table")
    assert snapshot(tracker) == before


def test_session_is_one_unit_shared_by_threads(tmp_path: Path) -> None:
    """Threads sharing a tracker, inside and outside sessions, all get their writes stored."""
    tracker = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    observer = DuckDBBatchObserver(tmp_path / "runs.duckdb", timeout=10.0)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(10):
                with tracker.session(), tracker.session():
                    e = tracker.create_experiment(ExperimentDefinition(name=f"t{n}-{i}"))
                    tracker.update_status(e.id, ExperimentStatus.RUNNING)
                tracker.update_status(e.id, ExperimentStatus.COMPLETED)
                observer.list_batches()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    done = tracker.list_experiments(ExperimentFilter(status=ExperimentStatus.COMPLETED))
    assert len(done) == 40


def _create_then_complete_pending(tracker: DuckDBExperimentTracker) -> None:
    with tracker.session():
        tracker.create_experiment(ExperimentDefinition(name="kept"), experiment_id="kept-1")
        tracker.update_status("kept-1", ExperimentStatus.COMPLETED)


def test_session_error_keeps_earlier_calls(tmp_path: Path) -> None:
    """A lifecycle error leaving a session is raised; calls before it stay recorded."""
    tracker = DuckDBExperimentTracker(tmp_path / "runs.duckdb", timeout=10.0)
    with pytest.raises(InvalidTransition):
        _create_then_complete_pending(tracker)
    tracker.close()
    assert tracker.get_experiment("kept-1").status is ExperimentStatus.PENDING


def test_data_survives_reopening(tracker: DuckDBExperimentTracker) -> None:
    """A second tracker object on the same file sees everything the first stored."""
    tracker.store_results(
        "run-1",
        ExperimentResults(
            metrics={"sharpe": 1.25},
            artifacts=(ArtifactRef(id=_SHA, size=3, kind="trades", part="col-1"),),
        ),
    )
    expected = tracker.get_experiment("run-1")
    tracker.close()
    other = DuckDBExperimentTracker(tracker.path)
    assert other.get_experiment("run-1") == expected
    assert other.find_by_input_artifacts([_SHA]) == []
