"""categorize_error: the type decides first, then the message, else unknown."""

from __future__ import annotations

import concurrent.futures

import pytest
from pydantic import BaseModel, ValidationError

from quantrack.domain import ErrorCategory, InvalidParams, categorize_error

C = ErrorCategory


class EmptyDataError(ValueError):
    """Named like pandas' error, which the domain recognizes without importing pandas."""


class ArrowInvalid(ValueError):
    """Named like pyarrow's error."""


def _validation_error() -> ValidationError:
    class Model(BaseModel):
        window: int

    try:
        Model(window="wide")
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError("slow"), C.TIMEOUT),
        (concurrent.futures.TimeoutError(), C.TIMEOUT),
        (MemoryError(), C.MEMORY_ERROR),
        (FileNotFoundError("prices.csv"), C.DATA_ERROR),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), C.DATA_ERROR),
        (EOFError(), C.DATA_ERROR),
        (KeyError("close"), C.DATA_ERROR),
        (IndexError("list index out of range"), C.DATA_ERROR),
        (TypeError("__init__() got an unexpected keyword argument 'fast'"), C.PARAMETER_ERROR),
        (EmptyDataError("No columns to parse from file"), C.DATA_ERROR),
        (ArrowInvalid("bad"), C.DATA_ERROR),
        (InvalidParams("params.x is nan"), C.PARAMETER_ERROR),
        (_validation_error(), C.PARAMETER_ERROR),
        # Generic types: the message decides, in the order timeout, memory, params, data.
        (RuntimeError("operation timed out after 30 s"), C.TIMEOUT),
        (RuntimeError("deadline exceeded"), C.TIMEOUT),
        (ValueError("Unable to allocate 3.2 GiB for an array"), C.MEMORY_ERROR),
        (RuntimeError("worker was killed (OOM)"), C.MEMORY_ERROR),
        (ValueError("window must be positive"), C.PARAMETER_ERROR),
        (ValueError("fast_window must be less than slow_window"), C.PARAMETER_ERROR),
        (ValueError("invalid value for parameter 'fees'"), C.PARAMETER_ERROR),
        (ValueError("missing column 'close'"), C.DATA_ERROR),
        (ValueError("the price data contains NaN"), C.DATA_ERROR),
        (OSError("no such file or directory"), C.DATA_ERROR),
        (ValueError("could not parse the CSV"), C.DATA_ERROR),
        (AssertionError("empty feed"), C.DATA_ERROR),
        # Nothing recognizable: unknown.
        (ValueError("something odd happened"), C.UNKNOWN),
        (Exception("hello"), C.UNKNOWN),
        (ZeroDivisionError("division by zero"), C.UNKNOWN),
        (RuntimeError("not enough room in the queue"), C.UNKNOWN),
        (KeyboardInterrupt(), C.UNKNOWN),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_category_table(exc: BaseException, expected: ErrorCategory) -> None:
    """Each exception lands in the category the taxonomy gives it."""
    assert categorize_error(exc) is expected


def test_type_beats_message() -> None:
    """A precise type wins over words in its message."""
    assert categorize_error(TimeoutError("missing column")) is C.TIMEOUT
    assert categorize_error(KeyError("window must be positive")) is C.DATA_ERROR


def test_subclass_of_a_named_library_error_is_recognized() -> None:
    """A subclass of a known library error type gets that type's category."""

    class StricterEmptyData(EmptyDataError):
        pass

    assert categorize_error(StricterEmptyData("x")) is C.DATA_ERROR


def _raise_inside(module_name: str, exc: BaseException) -> BaseException:
    """Raise ``exc`` from code whose module is ``module_name``; return it with its traceback."""
    namespace: dict[str, object] = {"__name__": module_name, "exc": exc}
    exec(compile("def run():\n    raise exc\n", f"<{module_name}>", "exec"), namespace)
    try:
        namespace["run"]()  # type: ignore[operator]
    except BaseException as caught:
        return caught
    raise AssertionError("unreachable")


@pytest.mark.parametrize("module", ["backtrader.feed", "vectorbt.portfolio.base", "numba.core"])
def test_vague_errors_raised_in_an_engine_are_engine_errors(module: str) -> None:
    """A message-less error raised inside backtrader, vectorbt or numba is an engine error."""
    assert categorize_error(_raise_inside(module, RuntimeError("it broke"))) is C.ENGINE_ERROR


def test_specific_errors_in_an_engine_keep_their_category() -> None:
    """Inside an engine, a recognizable message still decides first."""
    raised = _raise_inside("backtrader.feed", ValueError("missing column 'close'"))
    assert categorize_error(raised) is C.DATA_ERROR


def test_error_types_defined_by_an_engine_are_engine_errors() -> None:
    """An exception class that belongs to an engine package is an engine error."""
    engine_error = type("PortfolioError", (Exception,), {"__module__": "vectorbt.portfolio"})
    assert categorize_error(engine_error("odd")) is C.ENGINE_ERROR


def test_same_error_outside_an_engine_is_unknown() -> None:
    """The engine rule looks at where the error was raised, not at its text."""
    assert categorize_error(_raise_inside("my_strategy", RuntimeError("it broke"))) is C.UNKNOWN
