"""Canonical parameters and the config hash.

Parameters are stored and hashed in one canonical, JSON-representable form, so that the
same configuration always gets the same hash, in any process, on any machine:

* mapping keys must be strings; key order never matters (keys are sorted);
* numbers are compared by value: ``1`` and ``1.0`` are the same parameter and hash the
  same, because engines routinely hand back ``10.0`` for a window the user typed as ``10``.
  An integral float is therefore stored as an int. Booleans stay booleans (``True`` is
  not ``1``);
* numpy scalars and arrays become their plain Python values (detected without importing
  numpy, so the domain stays free of it); numpy datetimes hash like ``datetime`` values;
* a ``str`` subclass (a ``StrEnum`` member) is stored as plain text;
* ``datetime`` becomes ISO 8601 text (aware ones in UTC), ``date``/``time`` likewise,
  ``Decimal`` a float, an ``Enum`` its value, a path its text, tuples and lists a list,
  sets a sorted list;
* NaN and infinity, bytes, and arbitrary objects are rejected with :class:`InvalidParams`:
  they have no faithful JSON form.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import math
import os
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from quantrack.domain.errors import InvalidParams

__all__ = ["JsonValue", "canonical_json", "canonical_params", "canonical_value", "config_hash"]

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]

# Integral floats beyond 2**53 are not exact ints; leave them as floats.
_EXACT_INT_LIMIT = 2**53


def _is_numpy(value: object) -> bool:
    return type(value).__module__ == "numpy"


def canonical_value(value: Any, path: str = "params") -> JsonValue:
    """Return the canonical JSON form of ``value``; ``path`` names it in error messages."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        # A str subclass (a StrEnum member, say) is stored as the plain text it holds.
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidParams(
                f"{path} is {value!r}; NaN and infinity cannot be stored as parameters "
                "(use None for 'not set')"
            )
        if value.is_integer() and abs(value) < _EXACT_INT_LIMIT:
            return int(value)
        return float(value)
    if _is_numpy(value) and getattr(getattr(value, "dtype", None), "kind", "") in ("M", "m"):
        # numpy datetimes in nanoseconds give bare integers from .tolist(); at microsecond
        # resolution they give datetime/timedelta, so they hash like the stdlib values.
        unit = "datetime64[us]" if value.dtype.kind == "M" else "timedelta64[us]"
        return canonical_value(value.astype(unit).tolist(), path)
    if _is_numpy(value) and hasattr(value, "tolist"):
        # numpy scalar (.tolist() gives the Python scalar) or array (nested lists).
        return canonical_value(value.tolist(), path)
    if isinstance(value, Decimal):
        return canonical_value(float(value), path)
    if isinstance(value, enum.Enum):
        return canonical_value(value.value, path)
    if isinstance(value, dt.datetime):
        moment: dt.datetime = value
        if moment.tzinfo is not None:
            moment = moment.astimezone(dt.UTC)
        return moment.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return canonical_value(value.total_seconds(), path)
    if isinstance(value, os.PathLike):
        return str(os.fspath(value))
    if isinstance(value, Mapping):
        out: dict[str, JsonValue] = {}
        for key in value:
            if not isinstance(key, str):
                raise InvalidParams(
                    f"{path} has key {key!r} of type {type(key).__name__}; "
                    "parameter names must be strings"
                )
            out[str.__str__(key)] = canonical_value(value[key], f"{path}.{key}")
        return dict(sorted(out.items()))
    if isinstance(value, list | tuple):
        return [canonical_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [canonical_value(item, f"{path}{{}}") for item in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    raise InvalidParams(
        f"{path} is a {type(value).__module__}.{type(value).__qualname__}, which has no "
        "canonical JSON form; pass plain numbers, strings, booleans, lists or dicts "
        "(for an object, record its name or its own parameters)"
    )


def canonical_params(params: Mapping[str, Any]) -> dict[str, JsonValue]:
    """Return ``params`` in canonical form (see the module docstring)."""
    result = canonical_value(params)
    assert isinstance(result, dict)  # a Mapping always canonicalizes to a dict
    return result


def canonical_json(value: Any) -> str:
    """Compact, key-sorted JSON of the canonical form of ``value``."""
    return json.dumps(
        canonical_value(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def config_hash(params: Mapping[str, Any]) -> str:
    """Stable sha256 (64 hex characters) of the canonical form of ``params``.

    Raises :class:`InvalidParams` for a value with no canonical form.
    """
    return hashlib.sha256(canonical_json(params).encode("utf-8")).hexdigest()
