"""Which experiments to list: :class:`ExperimentFilter` and the ``where`` language.

``where`` is a small language over a run's metrics and params::

    sharpe > 1 and max_drawdown < 20
    (fast_window <= 10 or symbol = 'AAA') and not_a_metric != 3
    params.window >= 20 and metrics.sharpe > 0.5

* comparisons ``= != < <= > >=`` between a name and a literal (number, 'string' or
  "string", true, false), joined with ``and`` / ``or`` and grouped with parentheses
  (``and`` binds tighter);
* a bare name is a metric when some stored run has a metric of that name, else a param;
  ``metrics.x`` and ``params.x`` say which explicitly;
* a number compares with numeric values, a string with text values, a boolean with
  boolean values; a run whose value is missing or of another type does not match.

The text is parsed into :class:`Comparison` and :class:`Logical` nodes; adapters turn
those into bound query parameters, never into SQL text. A syntax error raises
:class:`InvalidFilter` with the 1-based column of the offending token.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from quantrack.domain.errors import InvalidFilter
from quantrack.domain.models import ExperimentStatus, UtcDatetime

__all__ = [
    "Comparison",
    "ExperimentFilter",
    "Expression",
    "Logical",
    "Scope",
    "compare",
    "evaluate",
    "parse_where",
    "resolve_scope",
]

Scope = Literal["auto", "metric", "param"]
Operator = Literal["=", "!=", "<", "<=", ">", ">="]
Literal_ = bool | int | float | str

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class Comparison(_Node):
    """``field op value``: one test of a metric or a param."""

    field: str
    op: Operator
    value: Literal_
    scope: Scope = "auto"

    @field_validator("field")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a metric or param name")
        return value

    @field_validator("value")
    @classmethod
    def _finite(cls, value: Literal_) -> Literal_:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("cannot compare with NaN or infinity")
        return value


class Logical(_Node):
    """``and``/``or`` over two or more expressions."""

    op: Literal["and", "or"]
    items: tuple[Expression, ...] = Field(min_length=2)


Expression = Comparison | Logical
Logical.model_rebuild()


def resolve_scope(
    comparison: Comparison, metric_names: Iterable[str]
) -> Literal["metric", "param"]:
    """Whether ``comparison`` tests a metric or a param (see the module docstring)."""
    if comparison.scope != "auto":
        return comparison.scope
    return "metric" if comparison.field in set(metric_names) else "param"


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def compare(stored: object, op: str, literal: Literal_) -> bool:
    """The reference semantics of one comparison: types must agree, else no match."""
    if stored is None:
        return False
    if isinstance(literal, bool):
        if not isinstance(stored, bool):
            return False
    elif isinstance(literal, int | float):
        if isinstance(stored, bool) or not isinstance(stored, int | float):
            return False
    elif not isinstance(stored, str):
        return False
    return _OPS[op](stored, literal)


def evaluate(
    expression: Expression,
    metrics: Mapping[str, float],
    params: Mapping[str, Any],
    metric_names: Iterable[str],
) -> bool:
    """Whether a run with these metrics and params matches ``expression``."""
    names = set(metric_names)
    if isinstance(expression, Comparison):
        source = metrics if resolve_scope(expression, names) == "metric" else params
        return compare(source.get(expression.field), expression.op, expression.value)
    results = (evaluate(item, metrics, params, names) for item in expression.items)
    return all(results) if expression.op == "and" else any(results)


# -- the parser ------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<op><=|>=|!=|==|=|<|>)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
    """,
    re.VERBOSE,
)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                if text[pos] in "'\"":
                    raise self._error(
                        f"unterminated string: add the closing {text[pos]} after the text", pos
                    )
                raise self._error(f"unexpected character {text[pos]!r}", pos)
            kind = match.lastgroup or ""
            if kind != "ws":
                self.tokens.append((kind, match.group(), pos))
            pos = match.end()
        self.i = 0

    def _error(self, message: str, pos: int) -> InvalidFilter:
        column = pos + 1
        pointer = f"\n  {self.text}\n  {' ' * pos}^"
        return InvalidFilter(
            f"bad where expression at column {column}: {message}{pointer}", column=column
        )

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _take(self) -> tuple[str, str, int]:
        token = self._peek()
        if token is None:
            raise self._error("the expression ends too early", len(self.text))
        self.i += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        return token is not None and token[0] == "name" and token[1].lower() == word

    def parse(self) -> Expression:
        if not self.tokens:
            raise self._error("the expression is empty", 0)
        expression = self._or()
        token = self._peek()
        if token is not None:
            raise self._error(f"unexpected {token[1]!r}; expected 'and', 'or' or the end", token[2])
        return expression

    def _or(self) -> Expression:
        items = [self._and()]
        while self._keyword("or"):
            self.i += 1
            items.append(self._and())
        return items[0] if len(items) == 1 else Logical(op="or", items=tuple(items))

    def _and(self) -> Expression:
        items = [self._atom()]
        while self._keyword("and"):
            self.i += 1
            items.append(self._atom())
        return items[0] if len(items) == 1 else Logical(op="and", items=tuple(items))

    def _atom(self) -> Expression:
        kind, text, pos = self._take()
        if kind == "lparen":
            inner = self._or()
            closing = self._peek()
            if closing is None or closing[0] != "rparen":
                where = closing[2] if closing else len(self.text)
                raise self._error("missing ')'", where)
            self.i += 1
            return inner
        if kind != "name" or text.lower() in ("and", "or", "true", "false"):
            raise self._error(f"expected a metric or param name, got {text!r}", pos)
        scope: Scope = "auto"
        field = text
        if "." in text:
            prefix, field = text.split(".", 1)
            if prefix not in ("metrics", "params"):
                raise self._error(f"unknown prefix {prefix!r}; use 'metrics.' or 'params.'", pos)
            scope = "metric" if prefix == "metrics" else "param"
        op_kind, op, op_pos = self._take()
        if op_kind != "op":
            raise self._error(f"expected a comparison (=, !=, <, <=, >, >=) after {text!r}", op_pos)
        value_kind, value_text, value_pos = self._take()
        value: Literal_
        if value_kind == "number":
            number = float(value_text)
            is_int = re.fullmatch(r"[-+]?\d+", value_text) is not None
            value = int(value_text) if is_int else number
        elif value_kind == "string":
            value = re.sub(r"\\(.)", r"\1", value_text[1:-1])
        elif value_kind == "name" and value_text.lower() in ("true", "false"):
            value = value_text.lower() == "true"
        else:
            raise self._error(
                f"expected a number, a quoted string, true or false, got {value_text!r}", value_pos
            )
        return Comparison(
            field=field,
            op="=" if op == "==" else op,
            value=value,
            scope=scope,
        )


def parse_where(text: str) -> Expression:
    """Parse the ``where`` language (see the module docstring) into an expression."""
    return _Parser(text).parse()


def _parse_if_text(value: object) -> object:
    return parse_where(value) if isinstance(value, str) else value


def _statuses(value: object) -> object:
    if isinstance(value, str | ExperimentStatus):
        return frozenset({ExperimentStatus(value)})
    return value


class ExperimentFilter(BaseModel):
    """Which experiments to return, in what order, how many.

    Every given criterion must hold (they are combined with *and*). ``tags`` requires all
    of the listed tags. ``order_by`` is ``"created_at"`` or a metric name; experiments
    without that metric come last. Ties are broken by id, so the order is total.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    status: Annotated[frozenset[ExperimentStatus] | None, AfterValidator(lambda v: v or None)] = (
        None
    )
    name: str | None = None
    strategy: str | None = None
    engine: str | None = None
    tags: frozenset[str] = frozenset()
    git_commit: str | None = None
    config_hash: str | None = None
    batch_id: str | None = None
    created_after: UtcDatetime | None = None
    created_before: UtcDatetime | None = None
    where: Expression | None = None
    order_by: str = "created_at"
    descending: bool = True
    limit: int | None = Field(default=None, gt=0)

    @field_validator("where", mode="before")
    @classmethod
    def _where(cls, value: object) -> object:
        return _parse_if_text(value)

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: object) -> object:
        return _statuses(value)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: object) -> object:
        # One tag given as text means that tag, not the set of its characters.
        return frozenset({value}) if isinstance(value, str) else value

    @field_validator("order_by")
    @classmethod
    def _order(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not 'created_at' or a metric name")
        return value

    def matches_fields(
        self,
        *,
        status: ExperimentStatus,
        name: str,
        strategy: str,
        engine: str,
        tags: Iterable[str],
        git_commit: str | None,
        config_hash: str,
        batch_id: str | None,
        created_at: dt.datetime,
    ) -> bool:
        """Whether a run with these fields passes every criterion except ``where``."""
        return (
            (self.status is None or status in self.status)
            and (self.name is None or name == self.name)
            and (self.strategy is None or strategy == self.strategy)
            and (self.engine is None or engine == self.engine)
            and self.tags.issubset(tags)
            and (self.git_commit is None or git_commit == self.git_commit)
            and (self.config_hash is None or config_hash == self.config_hash)
            and (self.batch_id is None or batch_id == self.batch_id)
            and (self.created_after is None or created_at >= self.created_after)
            and (self.created_before is None or created_at < self.created_before)
        )
