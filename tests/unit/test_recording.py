"""The track service: complete, fail, cancel, and what each leaves recorded."""

from __future__ import annotations

import pytest

from quantrack.adapters.memory import InMemoryArtifactStore, InMemoryExperimentTracker
from quantrack.domain import (
    DuplicateExperiment,
    ErrorCategory,
    ExperimentDefinition,
    ExperimentStatus,
)
from quantrack.services.recording import describe_exception, track

S = ExperimentStatus


@pytest.fixture
def tracker() -> InMemoryExperimentTracker:
    """A fresh in-memory tracker."""
    return InMemoryExperimentTracker()


@pytest.fixture
def store() -> InMemoryArtifactStore:
    """A fresh in-memory artifact store."""
    return InMemoryArtifactStore()


def definition() -> ExperimentDefinition:
    """A small definition."""
    return ExperimentDefinition(name="study", params={"lookback": 20})


def test_a_body_that_returns_completes_the_run(
    tracker: InMemoryExperimentTracker, store: InMemoryArtifactStore
) -> None:
    """A normal exit stores the logged metrics and artifacts and completes the run."""
    with track(tracker, store, definition()) as run:
        assert tracker.get_experiment(run.id).status is S.RUNNING
        assert run.experiment.status is S.RUNNING
        run.log_metric("sharpe", 1.25)
        run.log_metrics({"cagr": 0.1, "sharpe": 1.5})
        ref = run.log_artifact(b"a,b\n1,2\n", kind="trades", media_type="text/csv", name="t.csv")
    stored = tracker.get_experiment(run.id)
    assert stored.status is S.COMPLETED
    assert stored.metrics == {"sharpe": 1.5, "cagr": 0.1}
    assert stored.artifacts == (ref,)
    assert store.get(ref.id) == b"a,b\n1,2\n"
    assert stored.error is None
    assert run.experiment == stored
    assert run.metrics == {"sharpe": 1.5, "cagr": 0.1}


def test_a_given_experiment_id_is_used(
    tracker: InMemoryExperimentTracker, store: InMemoryArtifactStore
) -> None:
    """Track records under a caller-supplied id, and refuses one already taken."""
    with track(tracker, store, definition(), experiment_id="mine") as run:
        pass
    assert run.id == "mine"
    with (
        pytest.raises(DuplicateExperiment),
        track(tracker, store, definition(), experiment_id="mine"),
    ):
        pytest.fail("the body must not run")
    assert len(tracker) == 1


def test_add_artifact_lists_an_already_stored_ref(
    tracker: InMemoryExperimentTracker, store: InMemoryArtifactStore
) -> None:
    """add_artifact lists a reference stored elsewhere (a shared sweep file)."""
    shared = store.put(b"equity of the whole sweep", kind="equity_curve")
    with track(tracker, store, definition()) as run:
        run.add_artifact(shared)
    assert tracker.get_experiment(run.id).artifacts == (shared,)


def test_a_body_that_raises_fails_the_run_and_reraises_unchanged(
    tracker: InMemoryExperimentTracker, store: InMemoryArtifactStore
) -> None:
    """The original exception propagates as the same object; the run is failed and categorized."""
    original = KeyError("close")
    with pytest.raises(KeyError) as caught, track(tracker, store, definition()) as run:
        raise original
    assert caught.value is original
    failed = tracker.get_experiment(run.id)
    assert failed.status is S.FAILED
    assert failed.error == "KeyError: 'close'"
    assert failed.error_category is ErrorCategory.DATA_ERROR


def test_a_failure_keeps_metrics_logged_before_it_and_a_traceback(
    tracker: InMemoryExperimentTracker, store: InMemoryArtifactStore
) -> None:
    """Metrics logged before the failure are kept; the traceback is a diagnostics artifact."""

    def strategy_step() -> None:
        raise ValueError("window must be positive")

    with (  # noqa: PT012 - the whole block is the recorded body
        pytest.raises(ValueError, match="window"),
        track(tracker, store, definition()) as run,
    ):
        run.log_metric("bars_seen", 120)
        strategy_step()
    failed = tracker.get_experiment(run.id)
    assert failed.metrics == {"bars_seen": 120.0}
    assert failed.error_category is ErrorCategory.PARAMETER_ERROR
    diagnostics = [ref for ref in failed.artifacts if ref.kind == "diagnostics"]
    assert len(diagnostics) == 1
    assert diagnostics[0].media_type == "text/plain"
    assert diagnostics[0].name == "traceback.txt"
    trace = store.get(diagnostics[0].id, verify=True).decode()
    assert "Traceback (most recent call last)" in trace
    assert "strategy_step" in trace
    assert "ValueError: window must be positive" in trace


def test_keyboard_interrupt_cancels_the_run(
    tracker: InMemoryExperimentTracker, store: InMemoryArtifactStore
) -> None:
    """Ctrl-C cancels the run, keeps its metrics, records why, and is re-raised."""
    with (  # noqa: PT012 - the whole block is the recorded body
        pytest.raises(KeyboardInterrupt),
        track(tracker, store, definition()) as run,
    ):
        run.log_metric("partial", 1.0)
        raise KeyboardInterrupt
    cancelled = tracker.get_experiment(run.id)
    assert cancelled.status is S.CANCELLED
    assert cancelled.error == "KeyboardInterrupt"
    assert cancelled.error_category is None
    assert cancelled.metrics == {"partial": 1.0}
    assert cancelled.started_at is not None


def test_system_exit_cancels_too(
    tracker: InMemoryExperimentTracker, store: InMemoryArtifactStore
) -> None:
    """Any BaseException that is not an Exception cancels the run."""
    with pytest.raises(SystemExit), track(tracker, store, definition()) as run:
        raise SystemExit(3)
    assert tracker.get_experiment(run.id).status is S.CANCELLED
    assert tracker.get_experiment(run.id).error == "SystemExit: 3"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_metric_is_refused_at_log_time(
    tracker: InMemoryExperimentTracker, store: InMemoryArtifactStore, value: float
) -> None:
    """log_metric raises at once for NaN/inf, naming the metric; the run fails on that error."""
    with (  # noqa: PT012 - the whole block is the recorded body
        pytest.raises(ValueError, match="metric 'sharpe' is"),
        track(tracker, store, definition()) as run,
    ):
        run.log_metric("ok", 1.0)
        run.log_metric("sharpe", value)
    failed = tracker.get_experiment(run.id)
    assert failed.status is S.FAILED
    assert failed.metrics == {"ok": 1.0}
    assert "sharpe" in (failed.error or "")


@pytest.mark.parametrize("name", ["", "  "])
def test_empty_metric_name_is_refused_at_log_time(
    tracker: InMemoryExperimentTracker, store: InMemoryArtifactStore, name: str
) -> None:
    """log_metric raises at once for an empty metric name."""
    with (
        pytest.raises(ValueError, match="metric name must be a non-empty string"),
        track(tracker, store, definition()) as run,
    ):
        run.log_metric(name, 1.0)
    assert tracker.get_experiment(run.id).status is S.FAILED


def test_non_numeric_metric_is_refused_at_log_time(
    tracker: InMemoryExperimentTracker, store: InMemoryArtifactStore
) -> None:
    """A metric value that is not a number raises where it was logged."""
    with (
        pytest.raises(ValueError, match="could not convert"),
        track(tracker, store, definition()) as run,
    ):
        run.log_metric("sharpe", "high")  # type: ignore[arg-type]
    assert tracker.get_experiment(run.id).status is S.FAILED


def test_nothing_is_stored_for_the_run_outside_the_tracker(
    tracker: InMemoryExperimentTracker, store: InMemoryArtifactStore
) -> None:
    """A run that logs no artifacts stores nothing in the artifact store."""
    with track(tracker, store, definition()):
        pass
    assert list(store.ids()) == []


def test_describe_exception() -> None:
    """A failure is described as 'Type: message', or just the type without a message."""
    assert describe_exception(ValueError("bad")) == "ValueError: bad"
    assert describe_exception(KeyboardInterrupt()) == "KeyboardInterrupt"
    assert describe_exception(RuntimeError("  ")) == "RuntimeError"


def test_a_recording_problem_never_hides_the_body_error(
    tracker: InMemoryExperimentTracker, store: InMemoryArtifactStore
) -> None:
    """If the failure cannot be recorded, the body's exception still propagates, with a note."""
    original = ZeroDivisionError("division by zero")
    with (  # noqa: PT012 - the whole block is the recorded body
        pytest.raises(ZeroDivisionError) as caught,
        track(tracker, store, definition()) as run,
    ):
        tracker.delete_experiment(run.id)
        raise original
    assert caught.value is original
    notes = getattr(original, "__notes__", [])
    assert len(notes) == 1
    assert notes[0].startswith("quantrack could not record this failure: ExperimentNotFound")
