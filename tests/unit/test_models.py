"""Validation of the domain models: each rejected value names its field and why."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from quantrack.domain import (
    ArtifactRef,
    Batch,
    BatchItemResult,
    BatchStatus,
    ErrorCategory,
    Experiment,
    ExperimentDefinition,
    ExperimentResults,
    ExperimentStatus,
    InvalidParams,
    Provenance,
    config_hash,
)

S = ExperimentStatus
T0 = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
SHA = "a" * 64


def rejects(field: str, why: str) -> pytest.RaisesExc[ValidationError]:
    """Expect a ValidationError whose message names ``field`` and contains ``why``."""
    return pytest.raises(ValidationError, match=rf"(?s){field}.*{why}")


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_empty_name_is_rejected(name: str) -> None:
    """A definition needs a name that is not empty or white space."""
    with rejects("name", "must not be empty"):
        ExperimentDefinition(name=name)


def test_definition_is_frozen() -> None:
    """Models are immutable: assigning a field raises."""
    made = ExperimentDefinition(name="x")
    with pytest.raises(ValidationError, match="frozen"):
        made.name = "y"  # type: ignore[misc]


def test_unknown_fields_are_rejected() -> None:
    """A misspelt field is an error, not silently dropped."""
    with rejects("paramz", "Extra inputs are not permitted"):
        ExperimentDefinition(name="x", paramz={"a": 1})  # type: ignore[call-arg]


def test_definition_derives_its_config_hash() -> None:
    """The config hash is computed from params when not given."""
    made = ExperimentDefinition(name="x", params={"b": 2, "a": 1.0})
    assert made.config_hash == config_hash({"a": 1, "b": 2})
    assert made.params == {"a": 1, "b": 2}


def test_given_config_hash_is_kept() -> None:
    """A stored definition keeps the hash it was saved with."""
    made = ExperimentDefinition(name="x", params={"a": 1}, config_hash=SHA)
    assert made.config_hash == SHA


def test_malformed_config_hash_is_rejected() -> None:
    """A config hash that is not 64 lowercase hex characters is refused."""
    with rejects("config_hash", "64 lowercase hexadecimal"):
        ExperimentDefinition(name="x", config_hash="not-a-hash")


def test_nan_param_is_rejected() -> None:
    """NaN in params raises InvalidParams naming the param's path."""
    with pytest.raises(InvalidParams, match=r"params\.risk\.stop is nan"):
        ExperimentDefinition(name="x", params={"risk": {"stop": float("nan")}})


def test_object_param_is_rejected() -> None:
    """An arbitrary object has no JSON form: InvalidParams names where it is and its type."""
    with pytest.raises(InvalidParams, match=r"params\.model\[0\] is a builtins\.object"):
        ExperimentDefinition(name="x", params={"model": [object()]})


def test_non_string_param_key_is_rejected() -> None:
    """Parameter names must be strings."""
    with rejects("params", "valid string"):
        ExperimentDefinition(name="x", params={1: "a"})


@pytest.mark.parametrize("tags", [("",), ("ok", "  ")])
def test_empty_tag_is_rejected(tags: tuple[str, ...]) -> None:
    """Tags must not be empty."""
    with rejects("tags", "tags must not be empty"):
        ExperimentDefinition(name="x", tags=tags)


def test_tags_are_sorted_and_deduplicated() -> None:
    """Tags are a set, kept sorted."""
    assert ExperimentDefinition(name="x", tags=("b", "a", "b")).tags == ("a", "b")


@pytest.mark.parametrize("field", ["batch_id", "retry_of", "reproduces", "reused_from"])
@pytest.mark.parametrize("bad", ["", "../etc", "a b", "-leading", "x" * 129, "nul\x00"])
def test_bad_ids_are_rejected(field: str, bad: str) -> None:
    """Ids are 1-128 safe characters starting with a letter or digit."""
    with rejects(field, "must be 1-128 characters"):
        ExperimentDefinition.model_validate({"name": "x", field: bad})


def test_experiment_id_is_checked() -> None:
    """An experiment's own id follows the same rule."""
    with rejects("id", "must be 1-128 characters"):
        Experiment(id="../x", definition=ExperimentDefinition(name="x"))


@pytest.mark.parametrize(("field", "value"), [("batch_index", -1), ("attempt", 0)])
def test_negative_counters_are_rejected(field: str, value: int) -> None:
    """A batch index is >= 0 and an attempt >= 1."""
    with rejects(field, "greater than or equal"):
        ExperimentDefinition.model_validate({"name": "x", field: value})


def test_unknown_status_is_rejected() -> None:
    """A status outside the enum names the allowed values."""
    with rejects("status", "'pending', 'running', 'completed', 'failed' or 'cancelled'"):
        Experiment(definition=ExperimentDefinition(name="x"), status="finished")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_metric_is_rejected(value: float) -> None:
    """Metrics must be finite; the message names the metric."""
    with rejects("metrics", "metric 'sharpe' is .*finite"):
        ExperimentResults(metrics={"sharpe": value})


def test_empty_metric_name_is_rejected() -> None:
    """A metric needs a name."""
    with rejects("metrics", "metric names must not be empty"):
        ExperimentResults(metrics={" ": 1.0})


def test_artifact_ref_checks_id_and_size() -> None:
    """An artifact reference needs a sha256 id and a size that is not negative."""
    with rejects("id", "64 lowercase hexadecimal"):
        ArtifactRef(id="A" * 64, size=1)
    with rejects("size", "greater than or equal to 0"):
        ArtifactRef(id=SHA, size=-1)
    with rejects("kind", "must not be empty"):
        ArtifactRef(id=SHA, size=1, kind=" ")


def test_negative_item_duration_is_rejected() -> None:
    """An item's duration cannot be negative."""
    with rejects("duration_seconds", "greater than or equal to 0"):
        BatchItemResult(index=0, status=S.COMPLETED, duration_seconds=-0.1)


def test_item_results_follow_the_error_rules() -> None:
    """An item is finished; a failed one has an error and category, a completed one none."""
    with rejects("BatchItemResult", "an item result is finished"):
        BatchItemResult(index=0, status=S.RUNNING)
    with rejects("BatchItemResult", "needs an error message"):
        BatchItemResult(index=0, status=S.FAILED, error="x")
    with rejects("BatchItemResult", "a completed item has no error"):
        BatchItemResult(index=0, status=S.COMPLETED, error="x")


def test_naive_timestamps_are_taken_as_utc() -> None:
    """A naive timestamp is read as UTC; an aware one is converted to UTC."""
    naive = Experiment(
        definition=ExperimentDefinition(name="x"), created_at=dt.datetime(2024, 1, 2)
    )
    assert naive.created_at == T0
    assert naive.created_at.tzinfo is dt.UTC
    paris = dt.timezone(dt.timedelta(hours=1))
    aware = Experiment(
        definition=ExperimentDefinition(name="x"),
        created_at=dt.datetime(2024, 1, 2, 1, tzinfo=paris),
    )
    assert aware.created_at == T0


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"status": S.RUNNING}, "needs started_at"),
        ({"status": S.COMPLETED, "started_at": T0}, "needs completed_at"),
        ({"status": S.PENDING, "started_at": T0}, "pending experiment has not started"),
        ({"status": S.RUNNING, "started_at": T0, "completed_at": T0}, "has no completed_at"),
        ({"started_at": T0 - dt.timedelta(seconds=1)}, "started_at is before created_at"),
        (
            {"status": S.FAILED, "started_at": T0, "completed_at": T0, "error": "x"},
            "needs an error message and an error_category",
        ),
        (
            {
                "status": S.COMPLETED,
                "started_at": T0,
                "completed_at": T0,
                "error_category": ErrorCategory.UNKNOWN,
            },
            "a completed experiment has no error",
        ),
        (
            {
                "status": S.CANCELLED,
                "started_at": T0 + dt.timedelta(seconds=2),
                "completed_at": T0 + dt.timedelta(seconds=1),
            },
            "completed_at is before the start",
        ),
    ],
)
def test_impossible_experiment_states_are_rejected(fields: dict[str, object], why: str) -> None:
    """An Experiment whose fields the lifecycle can never produce is refused, saying why."""
    with rejects("Experiment", why):
        Experiment.model_validate(
            {"definition": ExperimentDefinition(name="x"), "created_at": T0, **fields}
        )


def test_experiment_properties() -> None:
    """name, params, config_hash and duration are read through from the definition and times."""
    made = Experiment(
        definition=ExperimentDefinition(name="n", params={"a": 1}),
        status=S.COMPLETED,
        created_at=T0,
        started_at=T0,
        completed_at=T0 + dt.timedelta(seconds=2.5),
    )
    assert (made.name, made.params) == ("n", {"a": 1})
    assert made.config_hash == config_hash({"a": 1})
    assert made.duration_seconds == 2.5
    assert made.is_terminal


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"total": -1}, "greater than or equal to 0"),
        ({"total": 1, "succeeded": 2, "status": BatchStatus.RUNNING}, "2 items finished"),
        ({"total": 2, "succeeded": 1, "reused": 2, "status": BatchStatus.RUNNING}, "reused"),
        ({"total": 2, "failed": 1, "status": BatchStatus.RUNNING}, "error_summary must count"),
        ({"total": 2, "status": BatchStatus.RUNNING}, "running batch needs started_at"),
        ({"total": 2, "status": BatchStatus.COMPLETED}, "needs completed_at"),
        ({"total": 2, "succeeded": 1}, "pending batch has not started"),
        ({"total": 2, "name": ""}, "must not be empty"),
    ],
)
def test_impossible_batch_states_are_rejected(fields: dict[str, object], why: str) -> None:
    """A Batch with inconsistent counts or timestamps is refused, saying why."""
    with rejects("Batch", why):
        Batch.model_validate({"name": "b", "created_at": T0, **fields})


def test_provenance_defaults_are_empty() -> None:
    """Outside git every provenance field may be empty."""
    assert Provenance().git_commit is None
    assert Provenance().packages == {}
