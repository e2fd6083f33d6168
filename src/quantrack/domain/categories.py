"""Sorting failures into the :class:`ErrorCategory` taxonomy.

The category says what to do next: fix the data, fix the parameters, look at the engine,
give it more time, give it more memory, or read the traceback. The exception's type decides
first (it is precise when it exists); for generic types (``ValueError``, ``RuntimeError``,
``Exception``) the message decides; what is left is ``unknown``.
"""

from __future__ import annotations

import re

from quantrack.domain.models import ErrorCategory

__all__ = ["categorize_error"]

# Exception types by the category they imply. Matched with isinstance, in this order.
_BY_TYPE: tuple[tuple[tuple[type[BaseException], ...], ErrorCategory], ...] = (
    # concurrent.futures.TimeoutError is the builtin TimeoutError since Python 3.11.
    ((TimeoutError,), ErrorCategory.TIMEOUT),
    ((MemoryError,), ErrorCategory.MEMORY_ERROR),
    ((FileNotFoundError, UnicodeDecodeError, EOFError), ErrorCategory.DATA_ERROR),
)

# Library exception types known by name, so the domain need not import the libraries.
_BY_NAME: dict[str, ErrorCategory] = {
    "EmptyDataError": ErrorCategory.DATA_ERROR,  # pandas
    "ParserError": ErrorCategory.DATA_ERROR,  # pandas
    "OutOfBoundsDatetime": ErrorCategory.DATA_ERROR,  # pandas
    "ArrowInvalid": ErrorCategory.DATA_ERROR,  # pyarrow
    "BrokenProcessPool": ErrorCategory.UNKNOWN,  # a worker died; the batch runner refines it
    "ValidationError": ErrorCategory.PARAMETER_ERROR,  # pydantic
    "InvalidParams": ErrorCategory.PARAMETER_ERROR,  # quantrack
    "NumbaError": ErrorCategory.ENGINE_ERROR,
    "TypingError": ErrorCategory.ENGINE_ERROR,  # numba
}

_ENGINE_MODULES = ("backtrader", "vectorbt", "numba", "vectorbtpro")

# For generic exception types, words in the message. Checked in this order.
_BY_MESSAGE: tuple[tuple[re.Pattern[str], ErrorCategory], ...] = (
    (re.compile(r"timed? ?out|timeout|deadline exceeded", re.I), ErrorCategory.TIMEOUT),
    (
        re.compile(r"out of memory|cannot allocate|unable to allocate|memoryerror|\boom\b", re.I),
        ErrorCategory.MEMORY_ERROR,
    ),
    (
        re.compile(
            r"\bparam(eter)?s?\b|\bargument\b|\bwindow\b|must be (positive|greater|less|"
            r"between|an? )|invalid value|out of range for|unexpected keyword",
            re.I,
        ),
        ErrorCategory.PARAMETER_ERROR,
    ),
    (
        re.compile(
            r"\bdata\b|\bcolumns?\b|\bnan\b|missing|\bempty\b|\bcsv\b|parquet|\bparse|"
            r"\bdtype\b|\bindex\b|no (such )?file|\bbars?\b|\bfeed\b|\bohlc",
            re.I,
        ),
        ErrorCategory.DATA_ERROR,
    ),
)

_GENERIC = (Exception, ValueError, RuntimeError, ArithmeticError, AssertionError, OSError)


def _raised_in_engine(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    if module.split(".")[0] in _ENGINE_MODULES:
        return True
    tb = exc.__traceback__
    innermost = None
    while tb is not None:
        innermost = tb
        tb = tb.tb_next
    if innermost is None:
        return False
    origin = innermost.tb_frame.f_globals.get("__name__", "")
    return isinstance(origin, str) and origin.split(".")[0] in _ENGINE_MODULES


def categorize_error(exc: BaseException) -> ErrorCategory:
    """The :class:`ErrorCategory` of ``exc``: by type first, then by message, else unknown.

    * ``TimeoutError`` → ``timeout``; ``MemoryError`` → ``memory_error``;
      ``FileNotFoundError``, decoding errors and pandas/pyarrow parse errors → ``data_error``;
    * ``KeyError``/``IndexError`` (a missing column or bar) → ``data_error``;
      ``TypeError`` (a wrong argument) → ``parameter_error``;
    * for generic types, words in the message (``"window must be positive"`` →
      ``parameter_error``, ``"missing column 'close'"`` → ``data_error``, ...);
    * an error raised inside backtrader, vectorbt or numba code that says nothing more
      specific → ``engine_error``;
    * anything else → ``unknown``.
    """
    for types, category in _BY_TYPE:
        if isinstance(exc, types):
            return category
    for klass in type(exc).__mro__:
        named = _BY_NAME.get(klass.__name__)
        if named is not None:
            return named
    if isinstance(exc, KeyError | IndexError):
        return ErrorCategory.DATA_ERROR
    if isinstance(exc, TypeError):
        return ErrorCategory.PARAMETER_ERROR
    message = str(exc)
    if isinstance(exc, _GENERIC):
        for pattern, category in _BY_MESSAGE:
            if pattern.search(message):
                return category
    if _raised_in_engine(exc):
        return ErrorCategory.ENGINE_ERROR
    return ErrorCategory.UNKNOWN
