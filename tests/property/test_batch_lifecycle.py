"""A hypothesis state machine drives every persisting batch observer through batches, and
the bulk lifecycle functions are held to the one-by-one ones they stand for.

The runner's events are built with the domain's lifecycle functions where they are legal
and by hand where they are not; a small model of each batch says what the observer must
then hold. One TestCase per entry of ``tests.adapters.OBSERVERS``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from quantrack.domain import (
    Batch,
    BatchItemResult,
    BatchStatus,
    ErrorCategory,
    ExperimentStatus,
    LifecycleError,
)
from quantrack.domain.batches import accept_item, accept_items
from quantrack.domain.lifecycle import (
    finish_batch,
    record_item,
    record_items,
    start_batch,
)
from quantrack.ports import BatchItemsObserver
from quantrack.workspace import PersistingObserver
from tests.adapters import OBSERVERS
from tests.property.settings import adapter_settings

S = ExperimentStatus
B = BatchStatus


@dataclass
class Expected:
    """What the model says one batch is."""

    started: Batch
    status: BatchStatus = B.RUNNING
    items: dict[tuple[int, int], ExperimentStatus] = field(default_factory=dict)
    categories: dict[ErrorCategory, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """How many items the batch has."""
        return self.started.total

    def count(self, status: ExperimentStatus) -> int:
        """Items that ended in ``status``."""
        return sum(1 for ended in self.items.values() if ended is status)

    def final(self, interrupted: bool) -> BatchStatus:
        """The status the batch earns, by the model's own rule."""
        if interrupted:
            return B.CANCELLED
        succeeded = self.count(S.COMPLETED)
        if succeeded == self.total:
            return B.COMPLETED
        return B.PARTIAL if succeeded else B.FAILED


class BatchLifecycle(RuleBasedStateMachine):
    """Random sequences of batch events, checked against the model after every step."""

    adapter_name = "memory"
    batches = Bundle("batches")

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="qt-batches-"))
        self.observer: PersistingObserver = OBSERVERS[self.adapter_name](self.folder)
        self.model: dict[str, Expected] = {}

    def teardown(self) -> None:
        """Release the adapter's folder."""
        shutil.rmtree(self.folder, ignore_errors=True)

    @precondition(lambda self: len(self.model) < 4)
    @rule(target=batches, total=st.integers(min_value=0, max_value=4))
    def start(self, total: int) -> str:
        """A new batch arrives running and is stored as such."""
        batch = start_batch(Batch(name=f"sweep {len(self.model)}", total=total))
        self.observer.on_batch_started(batch)
        self.model[batch.id] = Expected(started=batch)
        return batch.id

    @rule(batch_id=batches)
    def resume(self, batch_id: str) -> None:
        """Starting again resumes a running batch and is refused for an ended one."""
        expected = self.model[batch_id]
        if expected.status is B.RUNNING:
            self.observer.on_batch_started(expected.started)
        else:
            self._refused(batch_id, lambda: self.observer.on_batch_started(expected.started))

    @rule(
        batch_id=batches,
        index=st.integers(min_value=0, max_value=4),
        attempt=st.integers(min_value=1, max_value=2),
        status=st.sampled_from([S.COMPLETED, S.FAILED, S.CANCELLED]),
        category=st.sampled_from(list(ErrorCategory)),
    )
    def item(
        self,
        batch_id: str,
        index: int,
        attempt: int,
        status: ExperimentStatus,
        category: ErrorCategory,
    ) -> None:
        """An item is counted when the model allows it, and refused (changing nothing) if not."""
        expected = self.model[batch_id]
        failed = status is S.FAILED
        result = BatchItemResult(
            index=index,
            attempt=attempt,
            status=status,
            error="it broke" if failed else None,
            error_category=category if failed else None,
        )
        allowed = (
            expected.status is B.RUNNING
            and index < expected.total
            and len(expected.items) < expected.total
            and (index, attempt) not in expected.items
        )
        event = self.observer.get_batch(batch_id)
        if allowed:
            self.observer.on_item_finished(event, result)
            expected.items[(index, attempt)] = status
            if failed:
                expected.categories[category] = expected.categories.get(category, 0) + 1
        else:
            self._refused(batch_id, lambda: self.observer.on_item_finished(event, result))

    @rule(
        batch_id=batches,
        keys=st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=4),
                st.integers(min_value=1, max_value=2),
                st.sampled_from([S.COMPLETED, S.FAILED, S.CANCELLED]),
                st.sampled_from(list(ErrorCategory)),
            ),
            max_size=5,
        ),
    )
    def items(
        self,
        batch_id: str,
        keys: list[tuple[int, int, ExperimentStatus, ErrorCategory]],
    ) -> None:
        """Items sent in one bulk event are all counted when the model allows each in
        turn, and all refused (changing nothing) when it refuses one.
        """
        expected = self.model[batch_id]
        results = [
            BatchItemResult(
                index=index,
                attempt=attempt,
                status=status,
                error="it broke" if status is S.FAILED else None,
                error_category=category if status is S.FAILED else None,
            )
            for index, attempt, status, category in keys
        ]
        taken = set(expected.items)
        allowed = not results or expected.status is B.RUNNING
        for result in results:
            key = (result.index, result.attempt)
            if result.index >= expected.total or len(taken) >= expected.total or key in taken:
                allowed = False
            taken.add(key)
        assert isinstance(self.observer, BatchItemsObserver)
        event = self.observer.get_batch(batch_id)
        if allowed:
            self.observer.on_items_finished(event, results)
            for result in results:
                expected.items[(result.index, result.attempt)] = result.status
                if result.error_category is not None:
                    category = result.error_category
                    expected.categories[category] = expected.categories.get(category, 0) + 1
        else:
            self._refused(batch_id, lambda: self.observer.on_items_finished(event, results))

    @rule(batch_id=batches, interrupted=st.booleans())
    def finish(self, batch_id: str, interrupted: bool) -> None:
        """A batch ends in the status its items earn; an early or second end is refused."""
        expected = self.model[batch_id]
        stored = self.observer.get_batch(batch_id)
        can_end = expected.status is B.RUNNING and (
            interrupted or len(expected.items) == expected.total
        )
        if can_end:
            self.observer.on_batch_finished(finish_batch(stored, interrupted=interrupted))
            expected.status = expected.final(interrupted)
        else:
            claimed = Batch.model_validate(
                {
                    **stored.model_dump(),
                    "status": B.COMPLETED,
                    "completed_at": stored.completed_at or stored.started_at,
                }
            )
            self._refused(batch_id, lambda: self.observer.on_batch_finished(claimed))

    @rule(batch_id=batches, claimed=st.sampled_from([B.COMPLETED, B.PARTIAL, B.FAILED]))
    def finish_with_a_wrong_status(self, batch_id: str, claimed: BatchStatus) -> None:
        """A runner that claims a status the items do not earn is refused."""
        expected = self.model[batch_id]
        if expected.status is not B.RUNNING or len(expected.items) != expected.total:
            return
        if claimed is expected.final(interrupted=False):
            return
        stored = self.observer.get_batch(batch_id)
        wrong = Batch.model_validate(
            {**stored.model_dump(), "status": claimed, "completed_at": stored.started_at}
        )
        self._refused(batch_id, lambda: self.observer.on_batch_finished(wrong))

    def _refused(self, batch_id: str, event: object) -> None:
        """``event()`` must raise LifecycleError and leave the batch and its items as they were."""
        before = self.observer.get_batch(batch_id), self.observer.batch_items(batch_id)
        try:
            event()  # type: ignore[operator]
        except LifecycleError:
            pass
        else:
            raise AssertionError("the observer accepted an event the batch lifecycle forbids")
        assert (self.observer.get_batch(batch_id), self.observer.batch_items(batch_id)) == before

    @invariant()
    def observer_agrees_with_model(self) -> None:
        """Counts, error summaries, items and statuses are what the model says."""
        listed = self.observer.list_batches()
        assert sorted(b.id for b in listed) == sorted(self.model)
        for batch in listed:
            expected = self.model[batch.id]
            assert batch.status is expected.status
            assert batch.total == expected.total
            assert batch.finished <= batch.total
            assert batch.succeeded + batch.failed + batch.cancelled == batch.finished
            assert batch.finished == len(expected.items)
            assert batch.succeeded == expected.count(S.COMPLETED)
            assert batch.failed == expected.count(S.FAILED)
            assert batch.cancelled == expected.count(S.CANCELLED)
            assert sum(batch.error_summary.values()) == batch.failed
            assert batch.error_summary == expected.categories
            items = self.observer.batch_items(batch.id)
            assert [(i.index, i.attempt) for i in items] == sorted(expected.items)
            if batch.is_terminal:
                assert batch.completed_at is not None
                assert batch.started_at is not None
                assert batch.started_at <= batch.completed_at
                if batch.status is not B.CANCELLED:
                    assert batch.status is expected.final(interrupted=False)

    @invariant()
    def status_filters_partition(self) -> None:
        """Listing by each status splits all batches into disjoint, complete parts."""
        union: set[str] = set()
        for status in B:
            ids = {b.id for b in self.observer.list_batches(status=status)}
            assert ids == {i for i, e in self.model.items() if e.status is status}
            assert not union & ids
            union |= ids
        assert union == set(self.model)


def _test_case_for(name: str) -> type:
    machine = type(f"BatchLifecycle_{name}", (BatchLifecycle,), {"adapter_name": name})
    case: type = machine.TestCase  # type: ignore[attr-defined]
    case.settings = adapter_settings(name)  # type: ignore[attr-defined]
    if name != "memory":
        # File-backed adapters do real I/O on every step: several seconds per machine.
        case.pytestmark = [pytest.mark.slow]  # type: ignore[attr-defined]
    return case


for _name in sorted(OBSERVERS):
    globals()[f"TestBatchLifecycle_{_name}"] = _test_case_for(_name)


# -- the bulk lifecycle functions give exactly what the one-by-one path gives -----------

_ITEM = st.builds(
    lambda index, attempt, status, category, reused: BatchItemResult(
        index=index,
        attempt=attempt,
        status=status,
        error="it broke" if status is S.FAILED else None,
        error_category=category if status is S.FAILED else None,
        reused=reused and status is S.COMPLETED,
    ),
    st.integers(min_value=0, max_value=6),
    st.integers(min_value=1, max_value=2),
    st.sampled_from([S.COMPLETED, S.FAILED, S.CANCELLED]),
    st.sampled_from(list(ErrorCategory)),
    st.booleans(),
)


@st.composite
def _batches(draw: st.DrawFn) -> Batch:
    """A batch in any status, some of its items already counted."""
    total = draw(st.integers(min_value=0, max_value=6))
    batch = Batch(name="sweep", total=total)
    if draw(st.booleans()):
        batch = start_batch(batch)
        for item in draw(st.lists(_ITEM, max_size=total)):
            with contextlib.suppress(LifecycleError):
                batch = record_item(batch, item)
        if draw(st.booleans()):
            batch = finish_batch(batch, interrupted=True)
    return batch


def _outcome(fn: object) -> object:
    """What ``fn()`` returns, or the type and message of the LifecycleError it raises."""
    try:
        return fn()  # type: ignore[operator]
    except LifecycleError as exc:
        return (type(exc), str(exc))


def _fold_record(batch: Batch, items: list[BatchItemResult]) -> Batch:
    for item in items:
        batch = record_item(batch, item)
    return batch


@given(batch=_batches(), items=st.lists(_ITEM, max_size=8))
def test_record_items_is_record_item_folded(batch: Batch, items: list[BatchItemResult]) -> None:
    """record_items gives the batch (or the error) that folding record_item gives."""
    folded = _outcome(lambda: _fold_record(batch, items))
    bulk = _outcome(lambda: record_items(batch, items))
    assert bulk == folded
    if isinstance(bulk, Batch):
        assert bulk.model_dump() == folded.model_dump()  # type: ignore[union-attr]


@given(
    batch=_batches(),
    items=st.lists(_ITEM, max_size=8),
    seen=st.sets(st.tuples(st.integers(0, 6), st.integers(1, 2)), max_size=4),
)
def test_accept_items_is_accept_item_folded(
    batch: Batch, items: list[BatchItemResult], seen: set[tuple[int, int]]
) -> None:
    """accept_items gives the batch (or the error) that folding accept_item gives."""

    def folded() -> Batch:
        stored, keys = batch, set(seen)
        for item in items:
            key = (item.index, item.attempt)
            stored = accept_item(stored, item, key in keys)
            keys.add(key)
        return stored

    expected = _outcome(folded)
    bulk = _outcome(lambda: accept_items(batch, items, frozenset(seen)))
    assert bulk == expected
