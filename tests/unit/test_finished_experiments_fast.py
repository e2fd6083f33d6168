"""FinishedExperiments: shared values broadcast to every row, and row-exact errors."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from pydantic import ValidationError

from quantrack.domain import ExperimentDefinition, ExperimentStatus, FinishedExperiments
from quantrack.domain.hashing import config_hash

NOW = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _rows(n: int, **overrides: object) -> FinishedExperiments:
    columns: dict[str, object] = {
        "template": ExperimentDefinition(name="sweep", strategy="sma"),
        "ids": tuple(f"{i:032x}" for i in range(n)),
        "params": tuple({"fast": i, "stop": 0.5, "flag": True, "sym": "A"} for i in range(n)),
        "metrics": {"sharpe": tuple(float(i) for i in range(n))},
        "status": ExperimentStatus.COMPLETED,
        "created_at": NOW,
        "started_at": NOW,
        "completed_at": NOW,
    }
    columns.update(overrides)
    return FinishedExperiments.model_validate(columns)


def test_single_values_are_broadcast_to_every_row() -> None:
    """One status and one timestamp each become a tuple of that value per row."""
    rows = _rows(3)
    assert rows.status == (ExperimentStatus.COMPLETED,) * 3
    assert rows.created_at == (NOW,) * 3
    assert rows.started_at == (NOW,) * 3
    assert rows.completed_at == (NOW,) * 3


def test_naive_broadcast_timestamp_is_taken_as_utc() -> None:
    """A naive shared timestamp is validated once, as UTC, like a per-row one."""
    rows = _rows(2, created_at=NOW.replace(tzinfo=None))
    assert rows.created_at == (NOW, NOW)
    assert rows.created_at[0].tzinfo is dt.UTC


def test_params_are_canonical_and_hashed_like_config_hash() -> None:
    """Rows' params are canonicalized and each hash equals config_hash of the row."""
    rows = _rows(2, params=({"b": 2.0, "a": 1}, {"a": 1.5, "b": "x"}))
    assert rows.params == ({"a": 1, "b": 2}, {"a": 1.5, "b": "x"})
    assert type(rows.params[0]["b"]) is int
    assert rows.config_hashes == (config_hash({"a": 1, "b": 2}), config_hash({"a": 1.5, "b": "x"}))


def test_first_non_finite_metric_is_named_with_its_row() -> None:
    """A NaN metric after an undefined (None) one is reported with its row and id."""
    with pytest.raises(ValidationError, match=r"metric 'sharpe' of row 2 \(0+2\) is nan"):
        _rows(4, metrics={"sharpe": (1.0, None, math.nan, math.inf)})


def test_overflowing_sum_of_finite_metrics_is_accepted() -> None:
    """Huge but finite metrics pass even though their sum overflows."""
    rows = _rows(2, metrics={"sharpe": (1e308, 1e308)})
    assert rows.row_metrics(1) == {"sharpe": 1e308}


def test_first_row_breaking_the_lifecycle_is_reported() -> None:
    """The first row whose timestamps go backwards is named, not a later one."""
    later = NOW + dt.timedelta(seconds=5)
    completed = (later, NOW - dt.timedelta(seconds=1), later, NOW - dt.timedelta(seconds=2))
    with pytest.raises(ValidationError, match=r"row 1 \(0+1\): completed_at is before"):
        _rows(4, completed_at=completed)


def test_unfinished_status_is_rejected_with_its_row() -> None:
    """A running row among finished ones is named as the bulk path's limit."""
    status = (ExperimentStatus.COMPLETED, ExperimentStatus.RUNNING)
    with pytest.raises(ValidationError, match=r"row 1 \(0+1\) is running"):
        _rows(2, status=status, completed_at=(NOW, NOW))


def test_wrong_row_count_is_rejected() -> None:
    """A per-row column of the wrong length names the column and both counts."""
    with pytest.raises(ValidationError, match="created_at has 2 rows but ids has 3"):
        _rows(3, created_at=(NOW, NOW + dt.timedelta(seconds=1)))


def test_params_row_that_is_not_a_mapping_is_rejected() -> None:
    """A params row that is not a dict fails validation instead of being hashed."""
    with pytest.raises(ValidationError, match="params"):
        _rows(2, params=({"a": 1}, ["not", "a", "dict"]))


def test_broadcast_without_valid_ids_is_a_clear_error() -> None:
    """A shared value cannot be broadcast when the ids themselves are invalid."""
    with pytest.raises(ValidationError, match="without valid ids"):
        _rows(2, ids=("not an id", "x"))
