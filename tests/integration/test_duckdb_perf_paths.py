"""The DuckDB adapters' fast paths behave exactly like the slow ones they replace.

Inside a session the batch observer buffers item events, and the tracker the experiments
the session created, and both write them when the session commits; these tests pin that
what ends up in the file is what the in-memory adapters hold, that every event is still
checked when it arrives, and that the buffer is exactly as durable as the session.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from quantrack.adapters.duckdb import DuckDBBatchObserver, DuckDBExperimentTracker
from quantrack.adapters.duckdb.connection import database_for
from quantrack.adapters.memory import InMemoryBatchObserver, InMemoryExperimentTracker
from quantrack.domain import (
    ArtifactRef,
    Batch,
    BatchItemResult,
    BatchStatus,
    DuplicateExperiment,
    ErrorCategory,
    Experiment,
    ExperimentDefinition,
    ExperimentFilter,
    ExperimentNotFound,
    ExperimentNotRunning,
    ExperimentResults,
    ExperimentStatus,
    FinishedExperiments,
    InvalidTransition,
    LifecycleError,
    StorageError,
)
from quantrack.domain.lifecycle import finish_batch, record_item, start_batch

S = ExperimentStatus
T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)
HOSTILE = "it's; DROP TABLE qt_batch_items; --\x00 ünï ☃"


def started(total: int, batch_id: str = "sweep") -> Batch:
    """A running batch of ``total`` items."""
    pending = Batch(id=batch_id, name=HOSTILE, total=total, created_at=T0, params={"g": [1]})
    return start_batch(pending, now=T0)


def item(index: int, attempt: int = 1) -> BatchItemResult:
    """An item whose status, error and params vary with its index."""
    status = (S.COMPLETED, S.FAILED, S.CANCELLED)[index % 3]
    fields: dict[str, object] = {}
    if status is S.FAILED:
        fields["error"] = f"{HOSTILE} {index}"
        fields["error_category"] = (ErrorCategory.DATA_ERROR, ErrorCategory.TIMEOUT)[index % 2]
    return BatchItemResult.model_validate(
        {
            "index": index,
            "attempt": attempt,
            "status": status,
            "experiment_id": f"run-{index}-{attempt}",
            "params": {"fast": index, "name": HOSTILE, "w": [index, 0.5]},
            "duration_seconds": index / 7,
            "reused": status is S.COMPLETED and index % 2 == 0,
            **fields,
        }
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[tuple[DuckDBExperimentTracker, DuckDBBatchObserver]]:
    """A tracker and an observer sharing one real database file."""
    path = tmp_path / "qt.duckdb"
    tracker, observer = DuckDBExperimentTracker(path), DuckDBBatchObserver(path)
    yield tracker, observer
    observer.close()


def test_items_in_sessions_are_stored_as_the_memory_observer_holds_them(
    workspace: tuple[DuckDBExperimentTracker, DuckDBBatchObserver],
) -> None:
    """Events fed inside sessions (several, as the runner's flushes) end up as in memory."""
    tracker, observer = workspace
    memory = InMemoryBatchObserver()
    batch = started(30)
    for target in (observer, memory):
        target.on_batch_started(batch)
    runner = batch
    for chunk in (range(12), range(12, 25), range(25, 30)):
        with tracker.session():
            for index in chunk:
                one = item(index)
                runner = record_item(runner, one)
                observer.on_item_finished(runner, one)
                memory.on_item_finished(runner, one)
    final = finish_batch(runner)
    with tracker.session():
        observer.on_batch_finished(final)
    memory.on_batch_finished(final)
    observer.close()
    assert observer.batch_items(batch.id) == memory.batch_items(batch.id)
    assert observer.get_batch(batch.id) == memory.get_batch(batch.id)
    assert observer.get_batch(batch.id).status is BatchStatus.PARTIAL


def test_a_duplicate_of_a_buffered_item_is_refused_at_once(
    workspace: tuple[DuckDBExperimentTracker, DuckDBBatchObserver],
) -> None:
    """An (index, attempt) seen earlier in the same session raises when it arrives."""
    tracker, observer = workspace
    batch = started(5)
    observer.on_batch_started(batch)
    with tracker.session():
        observer.on_item_finished(record_item(batch, item(0)), item(0))
        with pytest.raises(LifecycleError, match="already recorded"):
            observer.on_item_finished(batch, item(0))
        observer.on_item_finished(batch, item(0, attempt=2))
    assert [(i.index, i.attempt) for i in observer.batch_items(batch.id)] == [(0, 1), (0, 2)]
    assert observer.get_batch(batch.id).finished == 2


def test_a_duplicate_of_an_item_stored_by_an_earlier_session_is_refused(
    workspace: tuple[DuckDBExperimentTracker, DuckDBBatchObserver],
) -> None:
    """Keys written by an earlier session are checked by the next one's buffer."""
    tracker, observer = workspace
    batch = started(5)
    observer.on_batch_started(batch)
    with tracker.session():
        observer.on_item_finished(batch, item(1))
    with tracker.session():
        observer.on_item_finished(batch, item(2))
        with pytest.raises(LifecycleError, match="item 1"):
            observer.on_item_finished(batch, item(1))
    assert [i.index for i in observer.batch_items(batch.id)] == [1, 2]


def test_reads_inside_a_session_see_the_buffered_items(
    workspace: tuple[DuckDBExperimentTracker, DuckDBBatchObserver],
) -> None:
    """get_batch, batch_items and list_batches inside the session include its events."""
    tracker, observer = workspace
    batch = started(4)
    observer.on_batch_started(batch)
    with tracker.session():
        observer.on_item_finished(batch, item(0))
        observer.on_item_finished(batch, item(1))
        assert observer.get_batch(batch.id).finished == 2
        observer.on_item_finished(batch, item(2))
        assert [i.index for i in observer.batch_items(batch.id)] == [0, 1, 2]
        assert observer.list_batches()[0].failed == 1
        with pytest.raises(LifecycleError, match="already recorded"):
            observer.on_item_finished(batch, item(1))


def test_finishing_inside_the_session_counts_its_buffered_items(
    workspace: tuple[DuckDBExperimentTracker, DuckDBBatchObserver],
) -> None:
    """on_batch_finished in the same session checks the final status against its items."""
    tracker, observer = workspace
    batch = started(3)
    observer.on_batch_started(batch)
    with tracker.session():
        for index in range(3):
            batch = record_item(batch, item(index))
            observer.on_item_finished(batch, item(index))
        observer.on_batch_finished(finish_batch(batch))
    assert observer.get_batch(batch.id).status is BatchStatus.PARTIAL
    assert len(observer.batch_items(batch.id)) == 3


def test_a_session_rolled_back_by_the_database_keeps_none_of_its_items(
    workspace: tuple[DuckDBExperimentTracker, DuckDBBatchObserver],
) -> None:
    """When the session's transaction is rolled back, its buffered items are dropped too."""
    tracker, observer = workspace
    batch = started(3)
    observer.on_batch_started(batch)
    database = database_for(tracker.path)

    def doomed() -> None:
        with database.unit(5.0) as con:
            observer.on_item_finished(batch, item(0))
            con.execute("SELECT * FROM no_such_table")

    with pytest.raises(duckdb.Error):
        doomed()
    assert observer.batch_items(batch.id) == []
    assert observer.get_batch(batch.id).finished == 0
    observer.on_item_finished(batch, item(0))
    assert observer.get_batch(batch.id).finished == 1


def test_a_session_ended_by_an_exception_keeps_the_items_it_accepted(
    workspace: tuple[DuckDBExperimentTracker, DuckDBBatchObserver],
) -> None:
    """Like the runs of the session, accepted items are committed when code raises."""
    tracker, observer = workspace
    batch = started(3)
    observer.on_batch_started(batch)

    def interrupted() -> None:
        with tracker.session():
            observer.on_item_finished(batch, item(0))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert [i.index for i in observer.batch_items(batch.id)] == [0]


def test_a_buffered_write_that_fails_at_commit_undoes_the_whole_session(
    workspace: tuple[DuckDBExperimentTracker, DuckDBBatchObserver],
) -> None:
    """A conflicting row written behind the buffer's back fails the commit, all or nothing."""
    tracker, observer = workspace
    batch = started(3)
    observer.on_batch_started(batch)
    database = database_for(tracker.path)

    def conflicting() -> None:
        with database.unit(5.0) as con:
            observer.on_item_finished(batch, item(0))
            # Not through the observer, so its buffer does not know this key.
            con.execute(
                'INSERT INTO qt_batch_items (batch_id, "index", attempt, params, status, reused) '
                "VALUES (?, 1, 1, '{}', 'completed', false)",
                [batch.id],
            )
            observer.on_item_finished(batch, item(1))

    with pytest.raises(StorageError, match=r"qt\.duckdb"):
        conflicting()
    assert observer.batch_items(batch.id) == []
    assert observer.get_batch(batch.id).finished == 0


def test_before_commit_outside_a_unit_is_refused(tmp_path: Path) -> None:
    """Registering a commit hook with no unit of work in progress says what is missing."""
    database = database_for(tmp_path / "qt.duckdb")
    with pytest.raises(StorageError, match="unit of work"):
        database.before_commit(lambda con: None)


# -- the tracker: experiments created in a session are written when it commits ----------


def definition(name: str = HOSTILE, **params: object) -> ExperimentDefinition:
    """A small definition with hostile strings and an input artifact."""
    return ExperimentDefinition(
        name=name,
        strategy="sma",
        params={"fast": 5, "label": HOSTILE, "grid": [1, 2], **params},
        inputs=(ArtifactRef(id="ab" * 32, size=3, kind="data", name="prices"),),
        tags=("t1", HOSTILE),
    )


def lifecycle(tracker: DuckDBExperimentTracker | InMemoryExperimentTracker) -> Experiment:
    """Create → running → results (twice) → completed; return the final experiment."""
    created = tracker.create_experiment(definition(), experiment_id="life-1")
    tracker.update_status(created.id, S.RUNNING)
    tracker.store_results(created.id, ExperimentResults(metrics={"sharpe": 1.5, "cagr": 0.1}))
    tracker.store_results(
        created.id,
        ExperimentResults(
            metrics={"sharpe": 2.0},
            artifacts=(ArtifactRef(id="cd" * 32, size=9, kind="trades", name="trades"),),
        ),
    )
    return tracker.update_status(created.id, S.COMPLETED)


def _same(a: Experiment, b: Experiment) -> None:
    """Assert two experiments agree on everything but their timestamps."""
    assert a.definition == b.definition
    assert (a.status, a.metrics, a.artifacts, a.error) == (
        b.status,
        b.metrics,
        b.artifacts,
        b.error,
    )


def test_a_lifecycle_in_a_session_is_stored_as_in_memory(
    workspace: tuple[DuckDBExperimentTracker, DuckDBBatchObserver],
) -> None:
    """A whole lifecycle in one session ends up in the file as the memory tracker holds it."""
    tracker, _ = workspace
    memory = InMemoryExperimentTracker()
    with tracker.session():
        returned = lifecycle(tracker)
    expected = lifecycle(memory)
    tracker.close()
    stored = tracker.get_experiment("life-1")
    _same(stored, expected)
    assert stored == returned
    listed = tracker.list_experiments(ExperimentFilter(order_by="sharpe", limit=5))
    assert [e.id for e in listed] == ["life-1"]
    assert [e.id for e in tracker.find_by_input_artifacts(["ab" * 32])] == ["life-1"]


def test_queries_inside_the_session_see_the_unwritten_experiments(
    workspace: tuple[DuckDBExperimentTracker, DuckDBBatchObserver],
) -> None:
    """list, prefix lookup and bulk writes in the same session include what it created."""
    tracker, _ = workspace
    with tracker.session():
        first = tracker.create_experiment(definition("a"), experiment_id="same-a")
        second = tracker.create_experiment(definition("b"), experiment_id="same-b")
        assert {e.id for e in tracker.list_experiments()} == {first.id, second.id}
        assert tracker.experiment_ids_by_prefix("same-") == ["same-a", "same-b"]
        third = tracker.create_experiment(definition("c"), experiment_id="same-c")
        tracker.update_status(third.id, S.RUNNING)
    assert tracker.get_experiment("same-c").status is S.RUNNING
    assert len(tracker.list_experiments()) == 3


def test_a_duplicate_id_in_the_same_session_is_refused(
    workspace: tuple[DuckDBExperimentTracker, DuckDBBatchObserver],
) -> None:
    """Creating an id twice before the session commits raises DuplicateExperiment."""
    tracker, _ = workspace
    with tracker.session():
        tracker.create_experiment(definition(), experiment_id="twice")
        with pytest.raises(DuplicateExperiment):
            tracker.create_experiment(definition("other"), experiment_id="twice")
    assert [e.definition.name for e in tracker.list_experiments()] == [HOSTILE]


def test_lifecycle_rules_hold_for_unwritten_experiments(
    workspace: tuple[DuckDBExperimentTracker, DuckDBBatchObserver],
) -> None:
    """Results on a pending run and a move out of a terminal state are refused in a session."""
    tracker, _ = workspace
    with tracker.session():
        created = tracker.create_experiment(definition(), experiment_id="rules")
        with pytest.raises(ExperimentNotRunning):
            tracker.store_results(created.id, ExperimentResults(metrics={"sharpe": 1.0}))
        tracker.update_status(created.id, S.CANCELLED)
        with pytest.raises(InvalidTransition):
            tracker.update_status(created.id, S.RUNNING)
    stored = tracker.get_experiment("rules")
    assert (stored.status, stored.metrics) == (S.CANCELLED, {})


def test_a_rolled_back_session_writes_none_of_its_experiments(
    workspace: tuple[DuckDBExperimentTracker, DuckDBBatchObserver],
) -> None:
    """A session the database rolls back leaves no trace of the runs it created."""
    tracker, _ = workspace
    database = database_for(tracker.path)

    def doomed() -> None:
        with database.unit(5.0) as con:
            tracker.create_experiment(definition(), experiment_id="gone")
            con.execute("SELECT * FROM no_such_table")

    with pytest.raises(duckdb.Error):
        doomed()
    with pytest.raises(ExperimentNotFound):
        tracker.get_experiment("gone")
    assert tracker.list_experiments() == []


def test_bulk_records_after_creates_in_one_session_get_their_own_rows(
    workspace: tuple[DuckDBExperimentTracker, DuckDBBatchObserver],
) -> None:
    """record_finished after unwritten creates in one session overwrites none of them."""
    tracker, _ = workspace
    with tracker.session():
        tracker.create_experiment(definition("solo"), experiment_id="solo")
        tracker.record_finished(
            FinishedExperiments(
                template=definition("bulk"),
                ids=("bulk-1", "bulk-2"),
                params=({"fast": 1}, {"fast": 2}),
                metrics={"sharpe": (0.5, 0.7)},
                status=(S.COMPLETED, S.COMPLETED),
                created_at=(T0, T0),
                started_at=(T0, T0),
                completed_at=(T0, T0),
            )
        )
        tracker.update_status("solo", S.RUNNING)
        tracker.store_results("solo", ExperimentResults(metrics={"sharpe": 0.9}))
    best = tracker.list_experiments(ExperimentFilter(order_by="sharpe"))
    assert [(e.id, e.metrics["sharpe"]) for e in best] == [
        ("solo", 0.9),
        ("bulk-2", 0.7),
        ("bulk-1", 0.5),
    ]
    assert tracker.get_experiment("bulk-1").definition.params["fast"] == 1


# -- reading never loads the bulk-write libraries -----------------------------------------

_READER = """
import sys
from pathlib import Path
from quantrack.adapters.duckdb import DuckDBExperimentTracker
from quantrack.domain import ExperimentFilter
tracker = DuckDBExperimentTracker(Path(sys.argv[1]))
everything = tracker.list_experiments()
page = tracker.list_experiments(ExperimentFilter(order_by="sharpe", limit=3))
assert len(everything) == 150, len(everything)
assert all(e.params["fast"] == int(e.id.split("-")[1]) for e in everything)
assert all(e.metrics["sharpe"] == int(e.id.split("-")[1]) / 10 for e in everything)
assert [e.id for e in page] == ["bulk-149", "bulk-148", "bulk-147"], page
loaded = sorted(m for m in ("pyarrow", "pandas", "numpy") if m in sys.modules)
assert not loaded, loaded
"""


def test_reading_many_experiments_loads_neither_pyarrow_nor_pandas(tmp_path: Path) -> None:
    """A process that only reads (as the CLI does) gets full rows without those imports."""
    path = tmp_path / "qt.duckdb"
    writer = DuckDBExperimentTracker(path)
    n = 150  # more than one short page, so the rows are fetched by a bound list
    writer.record_finished(
        FinishedExperiments(
            template=definition("bulk"),
            ids=tuple(f"bulk-{i}" for i in range(n)),
            params=tuple({"fast": i} for i in range(n)),
            metrics={"sharpe": tuple(i / 10 for i in range(n))},
            status=(S.COMPLETED,) * n,
            created_at=(T0,) * n,
            started_at=(T0,) * n,
            completed_at=(T0,) * n,
        )
    )
    writer.close()
    done = subprocess.run(
        [sys.executable, "-c", _READER, str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
