"""The where-language parser, its reference semantics, and ExperimentFilter validation."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from quantrack.domain import (
    Comparison,
    ExperimentFilter,
    ExperimentStatus,
    InvalidFilter,
    Logical,
    parse_where,
)
from quantrack.domain.query import compare, evaluate, resolve_scope


def c(field: str, op: str, value: object, scope: str = "auto") -> Comparison:
    """A comparison node."""
    return Comparison.model_validate({"field": field, "op": op, "value": value, "scope": scope})


def test_single_comparison() -> None:
    """A name, an operator and a literal make one comparison."""
    assert parse_where("sharpe > 1") == c("sharpe", ">", 1)


@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">="])
def test_every_operator(op: str) -> None:
    """Each comparison operator parses to itself."""
    assert parse_where(f"x {op} 2") == c("x", op, 2)


def test_double_equals_is_equals() -> None:
    """'==' is accepted as '='."""
    assert parse_where("x == 2") == c("x", "=", 2)


def test_and_binds_tighter_than_or() -> None:
    """A or b and c parses as a or (b and c)."""
    assert parse_where("a > 1 or b < 2 and c = 3") == Logical(
        op="or", items=(c("a", ">", 1), Logical(op="and", items=(c("b", "<", 2), c("c", "=", 3))))
    )


def test_parentheses_override_precedence() -> None:
    """(a or b) and c keeps the grouping."""
    assert parse_where("(a > 1 or b < 2) and c = 3") == Logical(
        op="and", items=(Logical(op="or", items=(c("a", ">", 1), c("b", "<", 2))), c("c", "=", 3))
    )


def test_chains_flatten_and_nested_parentheses() -> None:
    """A and b and c is one node of three; redundant parentheses change nothing."""
    assert parse_where("((a = 1)) and b = 2 and (c = 3)") == Logical(
        op="and", items=(c("a", "=", 1), c("b", "=", 2), c("c", "=", 3))
    )


def test_keywords_are_case_insensitive() -> None:
    """AND, Or and TRUE work like and, or and true."""
    assert parse_where("a = TRUE Or b = False AND c = 1") == Logical(
        op="or",
        items=(c("a", "=", True), Logical(op="and", items=(c("b", "=", False), c("c", "=", 1)))),
    )


def test_prefixes_choose_the_scope() -> None:
    """metrics.x and params.x say which side a name is on."""
    assert parse_where("metrics.sharpe > 0") == c("sharpe", ">", 0, "metric")
    assert parse_where("params.window <= 20") == c("window", "<=", 20, "param")


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("1", 1),
        ("-3", -3),
        ("+2", 2),
        ("1.5", 1.5),
        (".5", 0.5),
        ("1.", 1.0),
        ("-1.5e3", -1500.0),
        ("2E-2", 0.02),
        ("'AAA'", "AAA"),
        ('"AAA"', "AAA"),
        ("''", ""),
        (r"'it\'s'", "it's"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'back\\slash'", "back\\slash"),
        ("'and or ( ) = 1'", "and or ( ) = 1"),
        ("'日本 ☃'", "日本 ☃"),
        ("true", True),
        ("false", False),
    ],
)
def test_literals(literal: str, value: object) -> None:
    """Numbers, single- and double-quoted strings (with escapes) and booleans parse exactly."""
    parsed = parse_where(f"x = {literal}")
    assert isinstance(parsed, Comparison)
    assert parsed.value == value
    assert type(parsed.value) is type(value)


def test_whitespace_is_free() -> None:
    """Spaces are optional between tokens and allowed around them."""
    assert parse_where("  a>=1and b<2 ") == parse_where("a >= 1 and b < 2")


@pytest.mark.parametrize(
    ("text", "column", "why"),
    [
        ("", 1, "the expression is empty"),
        ("   ", 1, "the expression is empty"),
        ("sharpe", 7, "ends too early"),
        ("a >", 4, "ends too early"),
        ("a > 1 and", 10, "ends too early"),
        ("a ? 1", 3, "unexpected character '?'"),
        ("a = 1 & b = 2", 7, "unexpected character '&'"),
        ("> 1", 1, "expected a metric or param name"),
        ("and > 1", 1, "expected a metric or param name, got 'and'"),
        ("a > 1 or or b < 2", 10, "got 'or'"),
        ("true = 1", 1, "got 'true'"),
        ("a > b", 5, "expected a number, a quoted string, true or false, got 'b'"),
        ("a == == 1", 6, "expected a number"),
        ("a 1", 3, "expected a comparison"),
        ("a > 1 b", 7, "unexpected 'b'; expected 'and', 'or' or the end"),
        ("a > 1)", 6, "unexpected '\\)'"),
        ("(a > 1", 7, "missing '\\)'"),
        ("(a > 1 b", 8, "missing '\\)'"),
        ("()", 2, "got '\\)'"),
        ("foo.a > 1", 1, "unknown prefix 'foo'"),
        ("x.y.z > 1", 4, "unexpected character '.'"),
        ("a = 'x", 5, "unterminated string"),
        ('a = "x', 5, "unterminated string"),
        ("a > 1e", 6, "unexpected 'e'"),
    ],
)
def test_syntax_errors_report_the_column(text: str, column: int, why: str) -> None:
    """Every syntax error raises InvalidFilter with the 1-based column of the culprit."""
    with pytest.raises(InvalidFilter, match=why) as caught:
        parse_where(text)
    assert caught.value.column == column
    assert f"at column {column}:" in str(caught.value)
    # The message draws a caret under the culprit.
    lines = str(caught.value).splitlines()
    assert lines[-1].index("^") - 2 == column - 1


def test_invalid_filter_is_a_value_error() -> None:
    """InvalidFilter is also a ValueError."""
    with pytest.raises(ValueError, match="column"):
        parse_where("(")


def test_comparison_refuses_bad_names_and_non_finite_values() -> None:
    """A hand-built comparison needs a plain name and a finite number."""
    with pytest.raises(ValidationError, match="not a metric or param name"):
        c("drop table", "=", 1)
    with pytest.raises(ValidationError, match="NaN or infinity"):
        c("x", "=", float("nan"))
    with pytest.raises(ValidationError):
        c("x", "~", 1)


# -- reference semantics ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "op", "literal", "expected"),
    [
        (2.0, ">", 1, True),
        (1, "=", 1.0, True),
        (1.5, "<=", 1.5, True),
        ("AAA", "=", "AAA", True),
        ("AAA", "<", "BBB", True),
        (True, "=", True, True),
        (False, "!=", True, True),
        (None, "!=", 1, False),
        ("1", "=", 1, False),
        (1, "=", "1", False),
        (True, "=", 1, False),
        (1, "=", True, False),
        ([1], "=", 1, False),
        ("x", "!=", 1, False),
    ],
)
def test_compare_requires_matching_types(
    stored: object, op: str, literal: bool | float | str, expected: bool
) -> None:
    """A comparison matches only when stored and literal types agree; missing never matches."""
    assert compare(stored, op, literal) is expected


def test_bare_names_resolve_to_metrics_first() -> None:
    """A bare name is a metric when any run has that metric, else a param."""
    assert resolve_scope(c("sharpe", ">", 0), {"sharpe"}) == "metric"
    assert resolve_scope(c("window", ">", 0), {"sharpe"}) == "param"
    assert resolve_scope(c("sharpe", ">", 0, "param"), {"sharpe"}) == "param"


def test_evaluate() -> None:
    """Evaluate applies and/or over metrics and params."""
    expression = parse_where("(sharpe > 1 or window = 5) and params.symbol = 'AAA'")
    names = {"sharpe"}
    assert evaluate(expression, {"sharpe": 2.0}, {"symbol": "AAA"}, names)
    assert evaluate(expression, {}, {"window": 5, "symbol": "AAA"}, names)
    assert not evaluate(expression, {"sharpe": 2.0}, {"symbol": "BBB"}, names)
    assert not evaluate(expression, {"sharpe": 0.5}, {"window": 6, "symbol": "AAA"}, names)


# -- ExperimentFilter ------------------------------------------------------------------


def test_filter_parses_where_text() -> None:
    """A where string is parsed when the filter is built."""
    assert ExperimentFilter(where="a > 1").where == c("a", ">", 1)


def test_filter_where_error_names_the_field_and_column() -> None:
    """A bad where string fails validation naming the field and the column."""
    with pytest.raises(ValidationError, match=r"(?s)where.*column 4"):
        ExperimentFilter(where="a >")


def test_filter_status_accepts_one_or_many() -> None:
    """Status may be one status (or its text) or a set; an empty set means any."""
    assert ExperimentFilter(status="failed").status == frozenset({ExperimentStatus.FAILED})
    both = ExperimentFilter(status=frozenset({"failed", "cancelled"}))
    assert both.status == frozenset({ExperimentStatus.FAILED, ExperimentStatus.CANCELLED})
    assert ExperimentFilter(status=frozenset()).status is None
    with pytest.raises(ValidationError, match="status"):
        ExperimentFilter(status="finished")


@pytest.mark.parametrize(
    ("fields", "field", "why"),
    [
        ({"limit": 0}, "limit", "greater than 0"),
        ({"limit": -5}, "limit", "greater than 0"),
        ({"order_by": "sharpe desc"}, "order_by", "is not 'created_at' or a metric name"),
        ({"order_by": "'; drop"}, "order_by", "is not 'created_at' or a metric name"),
        ({"statuses": "failed"}, "statuses", "Extra inputs are not permitted"),
        ({"created_after": "yesterday"}, "created_after", "datetime"),
    ],
)
def test_filter_rejects_bad_fields(fields: dict[str, object], field: str, why: str) -> None:
    """Bad filter fields fail validation naming the field and why."""
    with pytest.raises(ValidationError, match=rf"(?s){field}.*{why}"):
        ExperimentFilter.model_validate(fields)


def test_filter_tags_accept_one_tag_as_text() -> None:
    """A single tag given as text is that tag, not a set of characters."""
    assert ExperimentFilter(tags="daily").tags == frozenset({"daily"})
    assert ExperimentFilter(tags=["a", "b"]).tags == frozenset({"a", "b"})


def test_filter_dates_are_utc() -> None:
    """Naive creation bounds are read as UTC."""
    bound = ExperimentFilter(created_after=dt.datetime(2024, 1, 1)).created_after
    assert bound == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
