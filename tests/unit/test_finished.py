"""FinishedExperiments: the columnar bulk record of a sweep, and its round trip to models."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from pydantic import ValidationError

from quantrack.domain import (
    ArtifactRef,
    ErrorCategory,
    Experiment,
    ExperimentDefinition,
    ExperimentStatus,
    FinishedExperiments,
    InvalidParams,
    Provenance,
    config_hash,
)

S = ExperimentStatus
T0 = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=3)


def ref(text: str, kind: str = "trades") -> ArtifactRef:
    """A reference to ``text``'s content."""
    return ArtifactRef(id=hashlib.sha256(text.encode()).hexdigest(), size=len(text), kind=kind)


def columns(n: int = 3, **overrides: object) -> dict[str, object]:
    """Valid columns for ``n`` completed rows; keyword arguments replace columns."""
    base: dict[str, object] = {
        "template": ExperimentDefinition(name="sweep", strategy="sma", tags=("t",)),
        "ids": tuple(f"r{i}" for i in range(n)),
        "params": tuple({"w": float(i)} for i in range(n)),
        "metrics": {"sharpe": tuple(float(i) for i in range(n))},
        "status": (S.COMPLETED,) * n,
        "created_at": (T0,) * n,
        "started_at": (T0,) * n,
        "completed_at": (T1,) * n,
    }
    return {**base, **overrides}


def test_valid_columns_build_rows() -> None:
    """Valid columns give one canonical row per id, with derived config hashes."""
    rows = FinishedExperiments.model_validate(columns())
    assert len(rows) == 3
    assert rows.params == ({"w": 0}, {"w": 1}, {"w": 2})
    assert rows.config_hashes == tuple(config_hash({"w": i}) for i in range(3))
    assert rows.row_metrics(1) == {"sharpe": 1.0}


@pytest.mark.parametrize(
    "column", ["params", "status", "created_at", "started_at", "completed_at", "names"]
)
def test_length_mismatch_names_the_column(column: str) -> None:
    """A column with a different number of rows than ids is refused, naming it."""
    good = columns(3)
    short = dict(columns(2)) | {"names": ("a", "b")}
    with pytest.raises(ValidationError, match=f"{column} has 2 rows but ids has 3"):
        FinishedExperiments.model_validate({**good, column: short[column]})


def test_metric_length_mismatch_names_the_metric() -> None:
    """A metric column of the wrong length is refused, naming the metric."""
    with pytest.raises(ValidationError, match="metric 'sharpe' has 1 rows but ids has 3"):
        FinishedExperiments.model_validate(columns(metrics={"sharpe": (1.0,)}))


def test_config_hashes_length_mismatch() -> None:
    """Given config hashes must have one per row."""
    with pytest.raises(ValidationError, match="config_hashes has 1 rows"):
        FinishedExperiments.model_validate(columns(config_hashes=("a" * 64,)))


def test_duplicate_ids_are_refused() -> None:
    """Ids within one bulk record must be unique."""
    with pytest.raises(ValidationError, match="ids must be unique"):
        FinishedExperiments.model_validate(columns(ids=("a", "b", "a")))


def test_bad_id_is_refused() -> None:
    """Each id follows the id rule."""
    with pytest.raises(ValidationError, match="must be 1-128 characters"):
        FinishedExperiments.model_validate(columns(ids=("a", "../b", "c")))


@pytest.mark.parametrize("status", [S.PENDING, S.RUNNING])
def test_non_terminal_rows_are_refused(status: ExperimentStatus) -> None:
    """The bulk path records finished experiments only; the row is named."""
    with pytest.raises(ValidationError, match=f"row 1 \\(r1\\) is {status.value}"):
        FinishedExperiments.model_validate(columns(status=(S.COMPLETED, status, S.COMPLETED)))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_metrics_are_refused(value: float) -> None:
    """A NaN or infinite metric is refused naming metric and row; None means undefined."""
    with pytest.raises(ValidationError, match=r"metric 'sharpe' of row 2 \(r2\) is"):
        FinishedExperiments.model_validate(columns(metrics={"sharpe": (1.0, None, value)}))


def test_none_metric_is_left_out() -> None:
    """A None metric value is left out of that row."""
    rows = FinishedExperiments.model_validate(columns(metrics={"sharpe": (1.0, None, 2.0)}))
    assert rows.row_metrics(1) == {}


def test_empty_metric_name_and_row_name_are_refused() -> None:
    """Metric names and row names must not be empty."""
    with pytest.raises(ValidationError, match="metric names must not be empty"):
        FinishedExperiments.model_validate(columns(metrics={" ": (1.0, 1.0, 1.0)}))
    with pytest.raises(ValidationError, match="name of row 1 is empty"):
        FinishedExperiments.model_validate(columns(names=("a", "", "c")))


def test_row_lifecycle_rules_apply() -> None:
    """Each row obeys the experiment invariants; the error names the row."""
    with pytest.raises(ValidationError, match=r"row 0 \(r0\): a failed experiment needs"):
        FinishedExperiments.model_validate(columns(status=(S.FAILED, S.COMPLETED, S.COMPLETED)))
    with pytest.raises(ValidationError, match=r"row 2 \(r2\): completed_at is before"):
        FinishedExperiments.model_validate(columns(completed_at=(T1, T1, T0 - dt.timedelta(1))))


def test_bad_params_are_refused() -> None:
    """Params of any row that cannot be canonicalized are refused."""
    with pytest.raises(InvalidParams, match=r"params\.w is nan"):
        FinishedExperiments.model_validate(
            columns(params=({"w": 1}, {"w": float("nan")}, {"w": 2}))
        )


def test_experiments_builds_full_models() -> None:
    """experiments() turns rows into Experiments sharing the template."""
    rows = FinishedExperiments.model_validate(
        columns(
            names=("a", "b", "c"),
            status=(S.COMPLETED, S.FAILED, S.CANCELLED),
            errors=(None, "boom", None),
            error_categories=(None, ErrorCategory.TIMEOUT, None),
            artifacts=(ref("shared", "equity_curve"),),
            row_artifacts=((ref("t0"),), (), (ref("t2"),)),
            batch_indexes=(0, 1, 2),
        )
    )
    made = list(rows.experiments())
    assert [e.id for e in made] == ["r0", "r1", "r2"]
    assert [e.name for e in made] == ["a", "b", "c"]
    assert made[1].error == "boom"
    assert made[1].error_category is ErrorCategory.TIMEOUT
    assert made[0].artifacts == (ref("shared", "equity_curve"), ref("t0"))
    assert made[1].artifacts == (ref("shared", "equity_curve"),)
    assert [e.definition.batch_index for e in made] == [0, 1, 2]
    assert all(e.definition.strategy == "sma" and e.definition.tags == ("t",) for e in made)
    assert [e.config_hash for e in made] == list(rows.config_hashes)
    assert made[0].duration_seconds == 3.0


def test_round_trip_through_from_experiments() -> None:
    """from_experiments(xs).experiments() gives back xs."""
    template = ExperimentDefinition(
        name="sweep", engine="vectorbt", provenance=Provenance(git_commit="abc"), batch_id="b1"
    )
    originals = [
        Experiment(
            id=f"x{i}",
            definition=template.model_copy(
                update={
                    "name": f"sweep {i}",
                    "params": {"w": i},
                    "config_hash": config_hash({"w": i}),
                    "batch_index": i,
                }
            ),
            status=S.FAILED if i == 1 else S.COMPLETED,
            created_at=T0,
            started_at=T0,
            completed_at=T1 + dt.timedelta(seconds=i),
            metrics={"sharpe": float(i)} if i != 2 else {},
            artifacts=(ref(f"trades {i}"),),
            error="boom" if i == 1 else None,
            error_category=ErrorCategory.DATA_ERROR if i == 1 else None,
        )
        for i in range(3)
    ]
    rows = FinishedExperiments.from_experiments(originals)
    assert list(rows.experiments()) == originals


def test_from_experiments_refusals() -> None:
    """from_experiments needs at least one run, all sharing one template."""
    with pytest.raises(ValueError, match="no experiments given"):
        FinishedExperiments.from_experiments([])
    base = {"status": S.COMPLETED, "created_at": T0, "started_at": T0, "completed_at": T1}
    one = Experiment.model_validate(
        {"id": "a", "definition": ExperimentDefinition(name="x", strategy="sma"), **base}
    )
    two = Experiment.model_validate(
        {"id": "b", "definition": ExperimentDefinition(name="x", strategy="rsi"), **base}
    )
    with pytest.raises(ValueError, match="experiment b differs from the first"):
        FinishedExperiments.from_experiments([one, two])
    indexed = Experiment.model_validate(
        {
            "id": "c",
            "definition": ExperimentDefinition(name="x", strategy="sma", batch_index=0),
            **base,
        }
    )
    with pytest.raises(ValueError, match="some experiments have a batch_index and some do not"):
        FinishedExperiments.from_experiments([one, indexed])
