"""The ExperimentTracker contract, run against every tracker adapter in tests/adapters.py.

Only the port's API is used here, so a new adapter joins by adding one factory entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time

import pytest

from quantrack.domain import (
    ArtifactRef,
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
    InvalidFilter,
    InvalidTransition,
    Provenance,
)
from quantrack.ports import ExperimentTracker

S = ExperimentStatus
T0 = dt.datetime(2024, 1, 2, 9, 30, tzinfo=dt.UTC)


def ref(content: str, kind: str = "input") -> ArtifactRef:
    """A reference to content that need not be stored: trackers only keep references."""
    return ArtifactRef(
        id=hashlib.sha256(content.encode()).hexdigest(), size=len(content), kind=kind
    )


def definition(name: str = "run", **fields: object) -> ExperimentDefinition:
    """A small definition; keyword arguments override its fields."""
    return ExperimentDefinition.model_validate({"name": name, **fields})


def new_run(
    tracker: ExperimentTracker,
    status: ExperimentStatus = S.PENDING,
    metrics: dict[str, float] | None = None,
    **fields: object,
) -> Experiment:
    """A stored experiment moved to ``status`` through the port, with ``metrics`` stored."""
    experiment = tracker.create_experiment(definition(**fields))  # type: ignore[arg-type]
    if status is S.PENDING:
        return experiment
    if status is S.CANCELLED and not metrics:
        return tracker.update_status(experiment.id, S.CANCELLED)
    tracker.update_status(experiment.id, S.RUNNING)
    if metrics:
        tracker.store_results(experiment.id, ExperimentResults(metrics=metrics))
    if status is S.RUNNING:
        return tracker.get_experiment(experiment.id)
    if status is S.FAILED:
        return tracker.update_status(
            experiment.id, S.FAILED, error="boom", error_category=ErrorCategory.DATA_ERROR
        )
    return tracker.update_status(experiment.id, status)


def ids(experiments: list[Experiment]) -> list[str]:
    """The ids, in order."""
    return [e.id for e in experiments]


def snapshot(tracker: ExperimentTracker) -> list[Experiment]:
    """Everything the tracker holds, in a fixed order."""
    return sorted(tracker.list_experiments(), key=lambda e: e.id)


def finished_rows(n: int, *, prefix: str = "sweep", **fields: object) -> FinishedExperiments:
    """``n`` completed runs of one sweep, in columns, with two metrics and one artifact each."""
    return FinishedExperiments(
        template=definition("sweep", strategy="sma", engine="vectorbt", tags=("sweep",)),
        ids=tuple(f"{prefix}-{i}" for i in range(n)),
        names=tuple(f"sweep #{i}" for i in range(n)),
        params=tuple({"fast": i, "slow": 10 * i + 10} for i in range(n)),
        metrics={
            "sharpe": tuple(float(i) / 2 for i in range(n)),
            "win_rate": tuple(None if i % 2 else 0.5 for i in range(n)),
        },
        status=(S.COMPLETED,) * n,
        created_at=(T0,) * n,
        started_at=(T0,) * n,
        completed_at=(T0 + dt.timedelta(seconds=1),) * n,
        artifacts=(ref("shared equity file", kind="equity_curve"),),
        row_artifacts=tuple((ref(f"trades {i}", kind="trades"),) for i in range(n)),
        batch_indexes=tuple(range(n)),
        **fields,
    )


# -- create / get ----------------------------------------------------------------------


def test_create_returns_a_pending_experiment_it_can_give_back(tracker: ExperimentTracker) -> None:
    """create_experiment stores a pending run; get_experiment returns an equal snapshot."""
    made = tracker.create_experiment(definition("first", params={"window": 20}, seed=7))
    assert made.status is S.PENDING
    assert made.started_at is None
    assert made.completed_at is None
    assert made.metrics == {}
    assert made.error is None
    assert tracker.get_experiment(made.id) == made


def test_create_keeps_every_definition_field(tracker: ExperimentTracker) -> None:
    """Every field of the definition survives a round trip through the tracker."""
    full = definition(
        "full",
        strategy="sma_cross",
        engine="backtrader",
        params={"fast": 10, "slow": 30.5, "symbols": ["AAA", "BBB"], "opts": {"x": None}},
        inputs=(ref("prices"),),
        provenance=Provenance(git_commit="abc123", python_version="3.11.9", packages={"a": "1"}),
        tags=("b", "a"),
        seed=42,
        description="a description",
        batch_id="batch-1",
        batch_index=3,
        attempt=2,
        retry_of="older-run",
    )
    made = tracker.create_experiment(full)
    assert tracker.get_experiment(made.id).definition == full


def test_create_with_a_given_id(tracker: ExperimentTracker) -> None:
    """A caller-supplied id is used as given."""
    made = tracker.create_experiment(definition(), experiment_id="my-run.1")
    assert made.id == "my-run.1"
    assert tracker.get_experiment("my-run.1").id == "my-run.1"


def test_generated_ids_are_unique(tracker: ExperimentTracker) -> None:
    """Ids the tracker generates never repeat."""
    made = {tracker.create_experiment(definition()).id for _ in range(50)}
    assert len(made) == 50


def test_duplicate_id_is_refused_and_changes_nothing(tracker: ExperimentTracker) -> None:
    """create_experiment raises DuplicateExperiment for a stored id, keeping the original."""
    first = tracker.create_experiment(definition("original"), experiment_id="same")
    with pytest.raises(DuplicateExperiment, match="same"):
        tracker.create_experiment(definition("impostor"), experiment_id="same")
    assert tracker.get_experiment("same") == first
    assert len(tracker.list_experiments()) == 1


def test_get_unknown_raises_not_found(tracker: ExperimentTracker) -> None:
    """get_experiment of an unknown id raises ExperimentNotFound, which is also a KeyError."""
    with pytest.raises(ExperimentNotFound, match="nope") as caught:
        tracker.get_experiment("nope")
    assert isinstance(caught.value, KeyError)


# -- update_status ---------------------------------------------------------------------


def test_running_then_completed_stamps_forward_timestamps(tracker: ExperimentTracker) -> None:
    """Starting stamps started_at, completing stamps completed_at, both moving forward."""
    made = tracker.create_experiment(definition())
    running = tracker.update_status(made.id, S.RUNNING)
    assert running.status is S.RUNNING
    assert running.started_at is not None
    assert running.started_at >= made.created_at
    done = tracker.update_status(made.id, S.COMPLETED)
    assert done.status is S.COMPLETED
    assert done.completed_at is not None
    assert done.completed_at >= running.started_at
    assert done.duration_seconds is not None
    assert done.duration_seconds >= 0
    assert done.error is None
    assert done.error_category is None
    assert tracker.get_experiment(made.id) == done


def test_failed_keeps_error_and_category(tracker: ExperimentTracker) -> None:
    """A failed run stores its error message and category."""
    made = new_run(tracker, S.RUNNING)
    failed = tracker.update_status(
        made.id, S.FAILED, error="KeyError: 'close'", error_category=ErrorCategory.DATA_ERROR
    )
    assert failed.error == "KeyError: 'close'"
    assert failed.error_category is ErrorCategory.DATA_ERROR
    assert tracker.get_experiment(made.id) == failed


def test_failed_without_category_is_unknown(tracker: ExperimentTracker) -> None:
    """A failure without a category is recorded as unknown."""
    made = new_run(tracker, S.RUNNING)
    failed = tracker.update_status(made.id, S.FAILED, error="boom")
    assert failed.error_category is ErrorCategory.UNKNOWN


def test_pending_can_be_cancelled(tracker: ExperimentTracker) -> None:
    """A pending run can be cancelled without ever starting, with an optional reason."""
    made = tracker.create_experiment(definition())
    cancelled = tracker.update_status(made.id, S.CANCELLED, error="user stopped the sweep")
    assert cancelled.status is S.CANCELLED
    assert cancelled.started_at is None
    assert cancelled.completed_at is not None
    assert cancelled.error == "user stopped the sweep"


@pytest.mark.parametrize(
    ("start", "requested"),
    [
        (S.PENDING, S.PENDING),
        (S.PENDING, S.COMPLETED),
        (S.PENDING, S.FAILED),
        (S.RUNNING, S.RUNNING),
        (S.RUNNING, S.PENDING),
        *[(end, to) for end in (S.COMPLETED, S.FAILED, S.CANCELLED) for to in S],
    ],
)
def test_illegal_transitions_raise_and_change_nothing(
    tracker: ExperimentTracker, start: ExperimentStatus, requested: ExperimentStatus
) -> None:
    """An illegal move raises InvalidTransition naming run and statuses; nothing changes."""
    made = new_run(tracker, start)
    before = tracker.get_experiment(made.id)
    with pytest.raises(InvalidTransition) as caught:
        tracker.update_status(made.id, requested, error="x" if requested is S.FAILED else None)
    message = str(caught.value)
    assert made.id in message
    assert start.value in message
    assert requested.value in message
    assert tracker.get_experiment(made.id) == before


def test_failed_without_error_is_refused(tracker: ExperimentTracker) -> None:
    """Failing a run without an error message raises and leaves it running."""
    made = new_run(tracker, S.RUNNING)
    for empty in (None, "", "   "):
        with pytest.raises(InvalidTransition, match="needs an error"):
            tracker.update_status(made.id, S.FAILED, error=empty)
    assert tracker.get_experiment(made.id).status is S.RUNNING


def test_completed_with_error_is_refused(tracker: ExperimentTracker) -> None:
    """Completing a run with an error raises and leaves it running."""
    made = new_run(tracker, S.RUNNING)
    with pytest.raises(InvalidTransition, match="no error"):
        tracker.update_status(made.id, S.COMPLETED, error="but it failed")
    with pytest.raises(InvalidTransition, match="no error"):
        tracker.update_status(made.id, S.COMPLETED, error_category=ErrorCategory.TIMEOUT)
    assert tracker.get_experiment(made.id).status is S.RUNNING


def test_update_unknown_raises_not_found(tracker: ExperimentTracker) -> None:
    """update_status of an unknown id raises ExperimentNotFound."""
    with pytest.raises(ExperimentNotFound):
        tracker.update_status("ghost", S.RUNNING)


def test_status_given_as_text_is_accepted(tracker: ExperimentTracker) -> None:
    """A status given as its text value works like the enum member."""
    made = tracker.create_experiment(definition())
    running = tracker.update_status(made.id, "running")  # type: ignore[arg-type]
    assert running.status is S.RUNNING


# -- store_results / heartbeat ---------------------------------------------------------


def test_results_merge_while_running(tracker: ExperimentTracker) -> None:
    """Later metrics of the same name win; artifacts are listed once each, in order."""
    made = new_run(tracker, S.RUNNING)
    equity, trades = ref("equity", "equity_curve"), ref("trades", "trades")
    tracker.store_results(
        made.id, ExperimentResults(metrics={"sharpe": 1.0, "cagr": 0.1}, artifacts=(equity,))
    )
    merged = tracker.store_results(
        made.id, ExperimentResults(metrics={"sharpe": 1.5}, artifacts=(equity, trades))
    )
    assert merged.metrics == {"sharpe": 1.5, "cagr": 0.1}
    assert merged.artifacts == (equity, trades)
    assert tracker.get_experiment(made.id) == merged
    done = tracker.update_status(made.id, S.COMPLETED)
    assert done.metrics == {"sharpe": 1.5, "cagr": 0.1}
    assert done.artifacts == (equity, trades)


@pytest.mark.parametrize("status", [S.PENDING, S.COMPLETED, S.FAILED, S.CANCELLED])
def test_results_refused_unless_running(
    tracker: ExperimentTracker, status: ExperimentStatus
) -> None:
    """store_results on a run that is not running raises ExperimentNotRunning; nothing changes."""
    made = new_run(tracker, status)
    before = tracker.get_experiment(made.id)
    with pytest.raises(ExperimentNotRunning, match=status.value):
        tracker.store_results(made.id, ExperimentResults(metrics={"sharpe": 1.0}))
    assert tracker.get_experiment(made.id) == before


def test_results_for_unknown_raise_not_found(tracker: ExperimentTracker) -> None:
    """store_results for an unknown id raises ExperimentNotFound."""
    with pytest.raises(ExperimentNotFound):
        tracker.store_results("ghost", ExperimentResults())


def test_heartbeat_stamps_a_running_experiment(tracker: ExperimentTracker) -> None:
    """Heartbeat sets heartbeat_at on a running run, never moving it backwards."""
    made = new_run(tracker, S.RUNNING)
    first = tracker.heartbeat(made.id)
    assert first.heartbeat_at is not None
    assert first.started_at is not None
    assert first.heartbeat_at >= first.started_at
    second = tracker.heartbeat(made.id)
    assert second.heartbeat_at is not None
    assert second.heartbeat_at >= first.heartbeat_at
    assert tracker.get_experiment(made.id).heartbeat_at == second.heartbeat_at


@pytest.mark.parametrize("status", [S.PENDING, S.COMPLETED, S.FAILED, S.CANCELLED])
def test_heartbeat_refused_unless_running(
    tracker: ExperimentTracker, status: ExperimentStatus
) -> None:
    """Heartbeat of a run that is not running raises ExperimentNotRunning; nothing changes."""
    made = new_run(tracker, status)
    before = tracker.get_experiment(made.id)
    with pytest.raises(ExperimentNotRunning):
        tracker.heartbeat(made.id)
    assert tracker.get_experiment(made.id) == before


def test_heartbeat_unknown_raises_not_found(tracker: ExperimentTracker) -> None:
    """Heartbeat of an unknown id raises ExperimentNotFound."""
    with pytest.raises(ExperimentNotFound):
        tracker.heartbeat("ghost")


# -- list_experiments: filters ---------------------------------------------------------


def test_list_all_when_no_filter(tracker: ExperimentTracker) -> None:
    """Without a filter every experiment is listed, newest first."""
    made = [tracker.create_experiment(definition(f"r{i}")) for i in range(5)]
    listed = tracker.list_experiments()
    assert sorted(ids(listed)) == sorted(ids(made))
    assert listed == tracker.list_experiments(ExperimentFilter())
    keys = [(e.created_at, e.id) for e in listed]
    assert keys == sorted(keys, reverse=True)


def test_empty_tracker_lists_nothing(tracker: ExperimentTracker) -> None:
    """An empty tracker lists nothing, whatever the filter."""
    assert tracker.list_experiments() == []
    assert tracker.list_experiments(ExperimentFilter(where="sharpe > 1", limit=3)) == []


def test_filter_by_status_partitions(tracker: ExperimentTracker) -> None:
    """Each status filter returns exactly the runs in that status; together, all of them."""
    made = {status: new_run(tracker, status).id for status in S}
    for status in S:
        assert ids(tracker.list_experiments(ExperimentFilter(status=status))) == [made[status]]
    pair = ExperimentFilter(status=frozenset({S.FAILED, S.CANCELLED}))
    assert set(ids(tracker.list_experiments(pair))) == {made[S.FAILED], made[S.CANCELLED]}


@pytest.mark.parametrize(
    ("field", "wanted", "other"),
    [
        ("name", "alpha", "beta"),
        ("strategy", "sma", "rsi"),
        ("engine", "backtrader", "vectorbt"),
        ("batch_id", "b-1", "b-2"),
    ],
)
def test_filter_by_definition_field(
    tracker: ExperimentTracker, field: str, wanted: str, other: str
) -> None:
    """Filtering by name, strategy, engine or batch_id returns only exact matches."""
    hit = tracker.create_experiment(definition(**{"name": "n", field: wanted}))
    tracker.create_experiment(definition(**{"name": "n", field: other}))
    if field != "batch_id":
        tracker.create_experiment(definition(**{"name": "n", field: wanted.upper()}))
    query = ExperimentFilter.model_validate({field: wanted})
    assert ids(tracker.list_experiments(query)) == [hit.id]


def test_filter_by_tags_requires_all(tracker: ExperimentTracker) -> None:
    """A tags filter returns runs carrying every listed tag."""
    both = tracker.create_experiment(definition(tags=("daily", "equities")))
    one = tracker.create_experiment(definition(tags=("daily",)))
    tracker.create_experiment(definition())
    daily = ExperimentFilter(tags=frozenset({"daily"}))
    assert set(ids(tracker.list_experiments(daily))) == {both.id, one.id}
    need_both = ExperimentFilter(tags=frozenset({"daily", "equities"}))
    assert ids(tracker.list_experiments(need_both)) == [both.id]


def test_filter_by_git_commit(tracker: ExperimentTracker) -> None:
    """A git_commit filter matches the provenance's commit exactly."""
    hit = tracker.create_experiment(definition(provenance=Provenance(git_commit="abc")))
    tracker.create_experiment(definition(provenance=Provenance(git_commit="abd")))
    tracker.create_experiment(definition())
    assert ids(tracker.list_experiments(ExperimentFilter(git_commit="abc"))) == [hit.id]


def test_filter_by_config_hash(tracker: ExperimentTracker) -> None:
    """A config_hash filter finds every run of the same parameters, however they were typed."""
    a = tracker.create_experiment(definition(params={"fast": 10, "slow": 30}))
    b = tracker.create_experiment(definition(params={"slow": 30.0, "fast": 10.0}))
    tracker.create_experiment(definition(params={"fast": 11, "slow": 30}))
    query = ExperimentFilter(config_hash=a.config_hash)
    assert set(ids(tracker.list_experiments(query))) == {a.id, b.id}


def test_filter_by_creation_window(tracker: ExperimentTracker) -> None:
    """created_after is inclusive, created_before exclusive."""
    first = tracker.create_experiment(definition("first"))
    time.sleep(0.002)
    second = tracker.create_experiment(definition("second"))
    time.sleep(0.002)
    third = tracker.create_experiment(definition("third"))
    window = ExperimentFilter(created_after=second.created_at, created_before=third.created_at)
    assert ids(tracker.list_experiments(window)) == [second.id]
    assert ids(tracker.list_experiments(ExperimentFilter(created_before=second.created_at))) == [
        first.id
    ]
    later = ExperimentFilter(created_after=third.created_at + dt.timedelta(seconds=1))
    assert tracker.list_experiments(later) == []


def test_filters_combine_with_and(tracker: ExperimentTracker) -> None:
    """Several criteria must all hold."""
    hit = new_run(tracker, S.COMPLETED, {"sharpe": 2.0}, strategy="sma", tags=("x",))
    new_run(tracker, S.FAILED, {"sharpe": 2.0}, strategy="sma", tags=("x",))
    new_run(tracker, S.COMPLETED, {"sharpe": 0.5}, strategy="sma", tags=("x",))
    new_run(tracker, S.COMPLETED, {"sharpe": 2.0}, strategy="rsi", tags=("x",))
    query = ExperimentFilter(
        status=S.COMPLETED, strategy="sma", tags=frozenset({"x"}), where="sharpe > 1"
    )
    assert ids(tracker.list_experiments(query)) == [hit.id]


# -- list_experiments: where -----------------------------------------------------------


@pytest.fixture
def scored(tracker: ExperimentTracker) -> dict[str, str]:
    """Four completed runs with metrics and params of several types, by label."""
    specs = {
        "a": ({"sharpe": 2.0, "dd": 10.0}, {"window": 10, "symbol": "AAA", "long": True}),
        "b": ({"sharpe": 1.0, "dd": 25.0}, {"window": 20, "symbol": "BBB", "long": False}),
        "c": ({"sharpe": -0.5}, {"window": 30.5, "symbol": "AAA"}),
        "d": ({}, {"window": "wide", "symbol": 7}),
    }
    return {
        label: new_run(tracker, S.COMPLETED, metrics, params=params).id
        for label, (metrics, params) in specs.items()
    }


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("sharpe > 1", "a"),
        ("sharpe >= 1", "ab"),
        ("sharpe < 0", "c"),
        ("sharpe = 1", "b"),
        ("sharpe == 1.0", "b"),
        ("sharpe != 1", "ac"),
        ("sharpe > 0 and dd < 20", "a"),
        ("sharpe < 0 or dd > 20", "bc"),
        ("sharpe > 1.5 or sharpe < 0 and dd > 0", "a"),
        ("(sharpe > 1.5 or sharpe < 0) and window > 0", "ac"),
        ("window >= 20", "bc"),
        ("window = 'wide'", "d"),
        ("symbol = 'AAA'", "ac"),
        ('symbol = "BBB"', "b"),
        ("symbol = 7", "d"),
        ("symbol > 5", "d"),
        ("long = true", "a"),
        ("long = false", "b"),
        ("long = 1", ""),
        ("window = true", ""),
        ("metrics.sharpe > 0", "ab"),
        ("params.window < 15", "a"),
        ("params.sharpe > 0", ""),
        ("nothing_by_this_name = 1", ""),
        ("dd != 10", "b"),
    ],
)
def test_where_language(
    tracker: ExperimentTracker, scored: dict[str, str], where: str, expected: str
) -> None:
    """where-expressions select by metrics and params; values of another type never match."""
    found = set(ids(tracker.list_experiments(ExperimentFilter(where=where))))
    assert found == {scored[label] for label in expected}


# -- list_experiments: ordering and limit ----------------------------------------------


def test_order_by_metric_missing_last(tracker: ExperimentTracker, scored: dict[str, str]) -> None:
    """Ordering by a metric puts runs without it last, in both directions."""
    down = tracker.list_experiments(ExperimentFilter(order_by="sharpe"))
    assert ids(down) == [scored["a"], scored["b"], scored["c"], scored["d"]]
    up = tracker.list_experiments(ExperimentFilter(order_by="sharpe", descending=False))
    assert ids(up) == [scored["c"], scored["b"], scored["a"], scored["d"]]
    by_dd = tracker.list_experiments(ExperimentFilter(order_by="dd", descending=False))
    assert ids(by_dd)[:2] == [scored["a"], scored["b"]]
    assert set(ids(by_dd)[2:]) == {scored["c"], scored["d"]}


def test_order_ties_are_broken_by_id(tracker: ExperimentTracker) -> None:
    """Runs with equal metric values come back in id order, so the order is total."""
    made = [new_run(tracker, S.COMPLETED, {"sharpe": 1.0}) for _ in range(6)]
    down = ids(tracker.list_experiments(ExperimentFilter(order_by="sharpe")))
    assert down == sorted(ids(made), reverse=True)
    up = ids(tracker.list_experiments(ExperimentFilter(order_by="sharpe", descending=False)))
    assert up == sorted(ids(made))


def test_order_by_created_at_ascending(tracker: ExperimentTracker) -> None:
    """Ordering by created_at ascending gives oldest first."""
    made = []
    for i in range(4):
        made.append(tracker.create_experiment(definition(f"r{i}")))
        time.sleep(0.002)
    up = tracker.list_experiments(ExperimentFilter(descending=False))
    assert ids(up) == ids(made)


def test_order_by_unknown_metric_is_invalid(tracker: ExperimentTracker) -> None:
    """Ordering by a metric no stored run has raises InvalidFilter naming it."""
    new_run(tracker, S.COMPLETED, {"sharpe": 1.0})
    with pytest.raises(InvalidFilter, match="sharp"):
        tracker.list_experiments(ExperimentFilter(order_by="sharp"))


def test_limit_keeps_the_first_in_order(tracker: ExperimentTracker) -> None:
    """Limit returns the first n of the ordered result."""
    made = [new_run(tracker, S.COMPLETED, {"sharpe": float(i)}) for i in range(5)]
    best = tracker.list_experiments(ExperimentFilter(order_by="sharpe", limit=2))
    assert ids(best) == [made[4].id, made[3].id]
    assert len(tracker.list_experiments(ExperimentFilter(limit=10))) == 5


# -- hostile strings -------------------------------------------------------------------

HOSTILE = [
    "O'Brien",
    '"double" quotes',
    "'; drop table experiments; --",
    "back\\slash % _ wildcard*",
    "nul\x00byte",
    "x" * 10_000,
    "unicode ☃ 日本語 🚀 e\u0301",
    "new\nline\ttab",
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_strings_are_stored_and_found_exactly(
    tracker: ExperimentTracker, text: str
) -> None:
    """Strings built to break SQL round-trip exactly and work as filter values."""
    made = new_run(
        tracker,
        S.FAILED,
        name=text,
        strategy=text,
        engine=text,
        tags=(text,),
        description=text,
        params={text: text, "nested": {"k": [text]}},
        provenance=Provenance(git_commit=text),
    )
    tracker.create_experiment(definition("bystander", params={"k": "v"}))
    got = tracker.get_experiment(made.id)
    assert got == made
    assert got.name == text
    assert got.params[text] == text
    for query in (
        ExperimentFilter(name=text),
        ExperimentFilter(strategy=text),
        ExperimentFilter(engine=text),
        ExperimentFilter(tags=frozenset({text})),
        ExperimentFilter(git_commit=text),
    ):
        assert ids(tracker.list_experiments(query)) == [made.id]
    assert len(tracker.list_experiments()) == 2


@pytest.mark.parametrize("text", HOSTILE[:4] + HOSTILE[6:], ids=range(6))
def test_hostile_strings_in_where_literals(tracker: ExperimentTracker, text: str) -> None:
    """A where literal holding SQL metacharacters matches only the run holding that text."""
    hit = tracker.create_experiment(definition(params={"label": text}))
    tracker.create_experiment(definition(params={"label": "plain"}))
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    query = ExperimentFilter(where=f"label = '{escaped}'")
    assert ids(tracker.list_experiments(query)) == [hit.id]


def test_hostile_error_message_round_trips(tracker: ExperimentTracker) -> None:
    """A failure message with quotes, NUL and unicode is stored exactly."""
    made = new_run(tracker, S.RUNNING)
    message = "ValueError: can't parse 'x'; drop table experiments; -- \x00 ☃"
    tracker.update_status(made.id, S.FAILED, error=message)
    assert tracker.get_experiment(made.id).error == message


# -- bulk ------------------------------------------------------------------------------


def test_record_finished_stores_every_row(tracker: ExperimentTracker) -> None:
    """record_finished stores each row, readable by get and list with its own data."""
    rows = finished_rows(5)
    assert tracker.record_finished(rows) == list(rows.ids)
    assert len(tracker.list_experiments()) == 5
    for i in range(5):
        got = tracker.get_experiment(f"sweep-{i}")
        assert got.status is S.COMPLETED
        assert got.name == f"sweep #{i}"
        assert got.params == {"fast": i, "slow": 10 * i + 10}
        assert got.config_hash == rows.config_hashes[i]
        assert got.definition.strategy == "sma"
        assert got.definition.engine == "vectorbt"
        assert got.definition.batch_index == i
        expected = {"sharpe": i / 2} if i % 2 else {"sharpe": i / 2, "win_rate": 0.5}
        assert got.metrics == expected
        assert got.artifacts == (
            ref("shared equity file", "equity_curve"),
            ref(f"trades {i}", "trades"),
        )
        assert got.duration_seconds == 1.0
    best = tracker.list_experiments(ExperimentFilter(order_by="sharpe", limit=1))
    assert ids(best) == ["sweep-4"]
    assert len(tracker.list_experiments(ExperimentFilter(tags=frozenset({"sweep"})))) == 5
    assert ids(tracker.list_experiments(ExperimentFilter(where="fast = 3"))) == ["sweep-3"]


def test_record_finished_matches_the_rows_as_models(tracker: ExperimentTracker) -> None:
    """What the tracker returns equals FinishedExperiments.experiments() row by row."""
    rows = finished_rows(3)
    tracker.record_finished(rows)
    for expected in rows.experiments():
        assert tracker.get_experiment(expected.id) == expected


def test_record_finished_with_failures_and_cancellations(tracker: ExperimentTracker) -> None:
    """Bulk rows may be failed (with error and category) or cancelled."""
    rows = FinishedExperiments(
        template=definition("mixed"),
        ids=("ok", "bad", "stopped"),
        params=({"x": 1}, {"x": 2}, {"x": 3}),
        status=(S.COMPLETED, S.FAILED, S.CANCELLED),
        created_at=(T0,) * 3,
        started_at=(T0, T0, None),
        completed_at=(T0,) * 3,
        errors=(None, "ZeroDivisionError", None),
        error_categories=(None, ErrorCategory.PARAMETER_ERROR, None),
    )
    tracker.record_finished(rows)
    bad = tracker.get_experiment("bad")
    assert bad.status is S.FAILED
    assert bad.error == "ZeroDivisionError"
    assert bad.error_category is ErrorCategory.PARAMETER_ERROR
    assert tracker.get_experiment("stopped").status is S.CANCELLED
    assert ids(tracker.list_experiments(ExperimentFilter(status=S.FAILED))) == ["bad"]


def test_record_finished_is_all_or_none_on_duplicate(tracker: ExperimentTracker) -> None:
    """A bulk write with one already-stored id raises DuplicateExperiment and stores no row."""
    existing = tracker.create_experiment(definition("existing"), experiment_id="sweep-3")
    before = snapshot(tracker)
    with pytest.raises(DuplicateExperiment, match="sweep-3"):
        tracker.record_finished(finished_rows(5))
    assert snapshot(tracker) == before
    assert tracker.get_experiment("sweep-3") == existing


def test_record_finished_twice_is_refused(tracker: ExperimentTracker) -> None:
    """Recording the same rows twice stores them once."""
    tracker.record_finished(finished_rows(3))
    before = snapshot(tracker)
    with pytest.raises(DuplicateExperiment):
        tracker.record_finished(finished_rows(3))
    assert snapshot(tracker) == before


def test_record_finished_hostile_strings(tracker: ExperimentTracker) -> None:
    """Bulk rows keep quotes, NUL bytes and unicode in names and params exactly."""
    texts = HOSTILE[:5]
    rows = FinishedExperiments(
        template=definition("hostile", tags=(HOSTILE[2],)),
        ids=tuple(f"h{i}" for i in range(len(texts))),
        names=tuple(texts),
        params=tuple({"text": text} for text in texts),
        status=(S.COMPLETED,) * len(texts),
        created_at=(T0,) * len(texts),
        started_at=(T0,) * len(texts),
        completed_at=(T0,) * len(texts),
    )
    tracker.record_finished(rows)
    for i, text in enumerate(texts):
        got = tracker.get_experiment(f"h{i}")
        assert got.name == text
        assert got.params == {"text": text}
        assert got.definition.tags == (HOSTILE[2],)


# -- find_by_input_artifacts / delete / session ----------------------------------------


def test_find_by_input_artifacts(tracker: ExperimentTracker) -> None:
    """Runs that used any of the given inputs are found, newest first; others are not."""
    prices, other, unused = ref("prices"), ref("other"), ref("unused")
    first = tracker.create_experiment(definition(inputs=(prices,)))
    time.sleep(0.002)
    second = tracker.create_experiment(definition(inputs=(other, prices)))
    time.sleep(0.002)
    third = tracker.create_experiment(definition(inputs=(other,)))
    tracker.create_experiment(definition())
    assert ids(tracker.find_by_input_artifacts([prices.id])) == [second.id, first.id]
    both = tracker.find_by_input_artifacts(iter([prices.id, other.id]))
    assert ids(both) == [third.id, second.id, first.id]
    assert tracker.find_by_input_artifacts([unused.id]) == []
    assert tracker.find_by_input_artifacts([]) == []


def test_delete_removes_only_that_experiment(tracker: ExperimentTracker) -> None:
    """delete_experiment removes the run; others are untouched; the id is then unknown."""
    gone = new_run(tracker, S.COMPLETED, {"sharpe": 1.0}, inputs=(ref("prices"),))
    kept = new_run(tracker, S.COMPLETED, {"sharpe": 2.0})
    tracker.delete_experiment(gone.id)
    with pytest.raises(ExperimentNotFound):
        tracker.get_experiment(gone.id)
    assert ids(tracker.list_experiments()) == [kept.id]
    assert tracker.find_by_input_artifacts([ref("prices").id]) == []
    assert tracker.get_experiment(kept.id) == kept


def test_delete_unknown_raises_not_found(tracker: ExperimentTracker) -> None:
    """delete_experiment of an unknown id raises ExperimentNotFound and removes nothing."""
    kept = tracker.create_experiment(definition())
    with pytest.raises(ExperimentNotFound):
        tracker.delete_experiment("ghost")
    assert ids(tracker.list_experiments()) == [kept.id]


def test_deleted_id_can_be_reused(tracker: ExperimentTracker) -> None:
    """After deletion an id is free again."""
    tracker.create_experiment(definition("old"), experiment_id="reuse")
    tracker.delete_experiment("reuse")
    fresh = tracker.create_experiment(definition("new"), experiment_id="reuse")
    assert tracker.get_experiment("reuse") == fresh


def test_sessions_nest_and_work_inside(tracker: ExperimentTracker) -> None:
    """Calls work inside nested sessions and their effects persist after them."""
    with tracker.session():
        made = tracker.create_experiment(definition())
        with tracker.session():
            tracker.update_status(made.id, S.RUNNING)
        tracker.store_results(made.id, ExperimentResults(metrics={"m": 1.0}))
    with tracker.session():
        pass
    assert tracker.get_experiment(made.id).metrics == {"m": 1.0}


def test_an_error_inside_a_session_keeps_earlier_calls(tracker: ExperimentTracker) -> None:
    """A rejected call inside a session does not undo the calls that succeeded before it."""
    with tracker.session():
        made = tracker.create_experiment(definition())
        with pytest.raises(InvalidTransition):
            tracker.update_status(made.id, S.COMPLETED)
    assert tracker.get_experiment(made.id).status is S.PENDING


def test_returned_snapshots_do_not_change(tracker: ExperimentTracker) -> None:
    """A returned experiment is a snapshot: later changes do not alter it."""
    made = tracker.create_experiment(definition())
    tracker.update_status(made.id, S.RUNNING)
    assert made.status is S.PENDING


def test_racing_moves_cannot_both_succeed(tracker: ExperimentTracker) -> None:
    """Of several threads moving one running run to a final status, exactly one wins."""
    made = new_run(tracker, S.RUNNING)
    start = threading.Barrier(6)
    outcomes: list[str] = []

    def finish(status: ExperimentStatus) -> None:
        start.wait()
        try:
            error = "lost the race" if status is S.FAILED else None
            tracker.update_status(made.id, status, error=error)
            outcomes.append(status.value)
        except InvalidTransition:
            outcomes.append("refused")

    workers = [
        threading.Thread(target=finish, args=(status,))
        for status in (S.COMPLETED, S.FAILED, S.CANCELLED) * 2
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    winners = [outcome for outcome in outcomes if outcome != "refused"]
    assert len(outcomes) == 6
    assert len(winners) == 1
    assert tracker.get_experiment(made.id).status.value == winners[0]
