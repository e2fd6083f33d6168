"""A hypothesis state machine drives every tracker adapter through the experiment lifecycle.

The machine keeps a small model of what each experiment must be (written out here, not
taken from the domain, so the two can disagree) and after every step checks the adapter
against it. One TestCase per entry of ``tests.adapters.TRACKERS``.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from quantrack.domain import (
    ErrorCategory,
    Experiment,
    ExperimentDefinition,
    ExperimentFilter,
    ExperimentNotRunning,
    ExperimentResults,
    ExperimentStatus,
    FinishedExperiments,
    InvalidTransition,
)
from quantrack.ports import ExperimentTracker
from tests.adapters import TRACKERS
from tests.property.settings import adapter_settings

S = ExperimentStatus
TERMINAL = {S.COMPLETED, S.FAILED, S.CANCELLED}
# The model's own copy of the lifecycle, so a wrong table in the domain is caught.
ALLOWED = {
    S.PENDING: {S.RUNNING, S.CANCELLED},
    S.RUNNING: {S.COMPLETED, S.FAILED, S.CANCELLED},
    S.COMPLETED: set(),
    S.FAILED: set(),
    S.CANCELLED: set(),
}

metric_names = st.sampled_from(["sharpe", "cagr", "max_drawdown"])
metric_values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
errors = st.sampled_from([None, "", "KeyError: 'close'", "boom"])
categories = st.sampled_from([None, *ErrorCategory])


@dataclass
class Expected:
    """What the model says one experiment is."""

    status: ExperimentStatus = S.PENDING
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    category: ErrorCategory | None = None
    # The last snapshot read back, to check that time never runs backwards.
    seen: Experiment | None = None


def legal(
    current: ExperimentStatus,
    requested: ExperimentStatus,
    error: str | None,
    category: ErrorCategory | None,
) -> bool:
    """Whether the model allows this move with this error."""
    if requested not in ALLOWED[current]:
        return False
    if requested is S.FAILED:
        return bool(error and error.strip())
    if requested in (S.COMPLETED, S.RUNNING):
        return not error and category is None
    return True


class ExperimentLifecycle(RuleBasedStateMachine):
    """Random sequences of port calls, checked against the model after every step."""

    adapter_name = "memory"
    experiments = Bundle("experiments")

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="qt-lifecycle-"))
        self.tracker: ExperimentTracker = TRACKERS[self.adapter_name](self.folder)
        self.model: dict[str, Expected] = {}
        self.bulk_batches = 0
        # One unit of work per run: file-backed adapters keep their connection open
        # instead of reopening the database for every call.
        self.session = self.tracker.session()
        self.session.__enter__()

    def teardown(self) -> None:
        """Close the session and release the adapter's folder."""
        self.session.__exit__(None, None, None)
        shutil.rmtree(self.folder, ignore_errors=True)

    @initialize(target=experiments)
    def first(self) -> str:
        """Every run starts with one experiment."""
        return self._create("first")

    @rule(target=experiments, name=st.sampled_from(["a", "b", "O'Brien; --"]))
    def create(self, name: str) -> str:
        """Creating gives a pending experiment."""
        return self._create(name)

    def _create(self, name: str) -> str:
        made = self.tracker.create_experiment(ExperimentDefinition(name=name))
        assert made.status is S.PENDING
        self.model[made.id] = Expected()
        return made.id

    @rule(
        experiment_id=experiments,
        requested=st.sampled_from(list(S)),
        error=errors,
        category=categories,
    )
    def move(
        self,
        experiment_id: str,
        requested: ExperimentStatus,
        error: str | None,
        category: ErrorCategory | None,
    ) -> None:
        """A legal move succeeds as the model says; an illegal one raises and changes nothing."""
        assert experiment_id in self.model, "a deleted id was drawn again"
        expected = self.model[experiment_id]
        before = self.tracker.get_experiment(experiment_id)
        if legal(expected.status, requested, error, category):
            after = self.tracker.update_status(
                experiment_id, requested, error=error, error_category=category
            )
            expected.status = requested
            if requested is S.FAILED:
                expected.error = error
                expected.category = category or ErrorCategory.UNKNOWN
            elif requested is S.CANCELLED:
                expected.error = error or None
                expected.category = category
            assert after.status is requested
        else:
            try:
                self.tracker.update_status(
                    experiment_id, requested, error=error, error_category=category
                )
            except InvalidTransition:
                pass
            else:
                raise AssertionError(
                    f"{expected.status.value} → {requested.value} (error={error!r}, "
                    f"category={category}) was accepted but the lifecycle forbids it"
                )
            assert self.tracker.get_experiment(experiment_id) == before

    @rule(
        experiment_id=experiments,
        metrics=st.dictionaries(metric_names, metric_values, max_size=3),
    )
    def store(self, experiment_id: str, metrics: dict[str, float]) -> None:
        """Results are stored only while running; otherwise refused, changing nothing."""
        assert experiment_id in self.model, "a deleted id was drawn again"
        expected = self.model[experiment_id]
        before = self.tracker.get_experiment(experiment_id)
        if expected.status is S.RUNNING:
            self.tracker.store_results(experiment_id, ExperimentResults(metrics=metrics))
            expected.metrics.update(metrics)
        else:
            try:
                self.tracker.store_results(experiment_id, ExperimentResults(metrics=metrics))
            except ExperimentNotRunning:
                pass
            else:
                raise AssertionError(f"results were stored on a {expected.status.value} run")
            assert self.tracker.get_experiment(experiment_id) == before

    @rule(experiment_id=experiments)
    def beat(self, experiment_id: str) -> None:
        """A heartbeat is accepted only while running."""
        assert experiment_id in self.model, "a deleted id was drawn again"
        if self.model[experiment_id].status is S.RUNNING:
            self.tracker.heartbeat(experiment_id)
        else:
            before = self.tracker.get_experiment(experiment_id)
            try:
                self.tracker.heartbeat(experiment_id)
            except ExperimentNotRunning:
                pass
            else:
                raise AssertionError("a run that is not running accepted a heartbeat")
            assert self.tracker.get_experiment(experiment_id) == before

    @rule(experiment_id=consumes(experiments))
    def delete(self, experiment_id: str) -> None:
        """Deleting removes the experiment from the tracker and the model."""
        assert experiment_id in self.model, "a deleted id was drawn again"
        self.tracker.delete_experiment(experiment_id)
        del self.model[experiment_id]

    @precondition(lambda self: self.bulk_batches < 3)
    @rule(
        outcomes=st.lists(st.sampled_from(sorted(TERMINAL)), min_size=1, max_size=4),
        sharpe=metric_values,
    )
    def bulk(self, outcomes: list[ExperimentStatus], sharpe: float) -> None:
        """A bulk write of finished rows adds exactly those rows."""
        self.bulk_batches += 1
        now = dt.datetime.now(dt.UTC)
        n = len(outcomes)
        ids = tuple(f"bulk{self.bulk_batches}-{i}" for i in range(n))
        failed = [status is S.FAILED for status in outcomes]
        rows = FinishedExperiments(
            template=ExperimentDefinition(name="sweep"),
            ids=ids,
            params=tuple({"i": i} for i in range(n)),
            metrics={"sharpe": (sharpe,) * n},
            status=tuple(outcomes),
            created_at=(now,) * n,
            started_at=(now,) * n,
            completed_at=(now,) * n,
            errors=tuple("bulk failure" if f else None for f in failed),
            error_categories=tuple(ErrorCategory.DATA_ERROR if f else None for f in failed),
        )
        assert self.tracker.record_finished(rows) == list(ids)
        for experiment_id, status, is_failed in zip(ids, outcomes, failed, strict=True):
            self.model[experiment_id] = Expected(
                status=status,
                metrics={"sharpe": sharpe},
                error="bulk failure" if is_failed else None,
                category=ErrorCategory.DATA_ERROR if is_failed else None,
            )

    @invariant()
    def adapter_agrees_with_model(self) -> None:
        """Every stored experiment is what the model says, and time never ran backwards."""
        listed = self.tracker.list_experiments()
        assert sorted(e.id for e in listed) == sorted(self.model)
        for experiment in listed:
            expected = self.model[experiment.id]
            assert experiment == self.tracker.get_experiment(experiment.id)
            assert experiment.status is expected.status
            assert experiment.metrics == expected.metrics
            assert experiment.error == expected.error
            assert experiment.error_category == expected.category
            if experiment.status is S.FAILED:
                assert experiment.error
                assert experiment.error_category is not None
            if experiment.status is S.COMPLETED:
                assert experiment.error is None
                assert experiment.error_category is None
            started = experiment.started_at or experiment.created_at
            assert experiment.created_at <= started
            if experiment.completed_at is not None:
                assert started <= experiment.completed_at
            previous = expected.seen
            if previous is not None:
                if previous.is_terminal:
                    assert experiment == previous, "a terminal experiment changed"
                assert experiment.created_at == previous.created_at
                if previous.started_at is not None:
                    assert experiment.started_at == previous.started_at
                if previous.heartbeat_at is not None:
                    assert experiment.heartbeat_at is not None
                    assert experiment.heartbeat_at >= previous.heartbeat_at
            expected.seen = experiment

    @invariant()
    def status_filters_partition(self) -> None:
        """Listing by each status splits all experiments into disjoint, complete parts."""
        parts = {
            status: {e.id for e in self.tracker.list_experiments(ExperimentFilter(status=status))}
            for status in S
        }
        union: set[str] = set()
        for status, ids in parts.items():
            assert ids == {i for i, e in self.model.items() if e.status is status}
            assert not union & ids
            union |= ids
        assert union == set(self.model)


def _test_case_for(name: str) -> type:
    machine = type(f"ExperimentLifecycle_{name}", (ExperimentLifecycle,), {"adapter_name": name})
    case: type = machine.TestCase  # type: ignore[attr-defined]
    case.settings = adapter_settings(name)  # type: ignore[attr-defined]
    if name != "memory":
        # File-backed adapters do real I/O on every step: several seconds per machine.
        case.pytestmark = [pytest.mark.slow]  # type: ignore[attr-defined]
    return case


for _name in sorted(TRACKERS):
    globals()[f"TestExperimentLifecycle_{_name}"] = _test_case_for(_name)
