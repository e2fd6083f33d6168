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

__all__ = [
    "JsonValue",
    "canonical_json",
    "canonical_params",
    "canonical_value",
    "config_hash",
    "config_hash_of_canonical",
]

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]

# Integral floats beyond 2**53 are not exact ints; leave them as floats.
_EXACT_INT_LIMIT = 2**53


# One encoder for every hash: json.dumps would build a new one per call. Canonical forms
# are trees, so the circular-reference check has nothing to find.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False
)


def _make_encode() -> Any:
    """``_ENCODER.encode`` or, where the stdlib's C encoder takes the arguments it takes in
    CPython 3.11+, that encoder itself (built once instead of once per call; a bulk
    record hashes 100,000 rows). Both give the same text; the result is checked here.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _ENCODER.encode
    try:
        # The same arguments JSONEncoder.iterencode passes, in the same order.
        chunks = make(None, None, json.encoder.encode_basestring, None, ":", ",", True, False, True)
        sample = {"b": [1, 2.5, None, True], "a": {"é": 'x"y'}}

        def encode(value: Any) -> str:
            return "".join(chunks(value, 0))

        if encode(sample) != _ENCODER.encode(sample):  # pragma: no cover - other Pythons
            return _ENCODER.encode
    except TypeError:  # pragma: no cover - a C encoder with another signature
        return _ENCODER.encode
    return encode


_encode = _make_encode()

# Exact types whose canonical form the flat fast path computes itself (a finite float
# that is integral becomes an int, as everywhere); a subclass (a
# StrEnum member, an IntEnum, numpy scalars) goes the general way.
_FLAT_SCALARS = frozenset({str, int, bool, float, type(None)})
_STR_ONLY = frozenset({str})


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


def _canonical_flat(params: Mapping[str, Any]) -> dict[str, JsonValue] | None:
    """The canonical form of a flat dict of plain scalars, or None to take the general path.

    A sweep's params are nearly always such a dict; this gives the same result as
    :func:`canonical_value` without its per-value dispatch.
    """
    # Type checks over whole key and value views run in C; only floats need a look each.
    if type(params) is not dict or not _STR_ONLY.issuperset(map(type, params)):
        return None
    kinds = set(map(type, params.values()))
    if not _FLAT_SCALARS.issuperset(kinds):
        return None
    out: dict[str, JsonValue] = dict(sorted(params.items()))
    if float in kinds:
        for key, value in out.items():
            if type(value) is float:
                if not math.isfinite(value):
                    return None  # the general path raises with the parameter's name
                if value.is_integer() and abs(value) < _EXACT_INT_LIMIT:
                    out[key] = int(value)
    return out


def canonical_params(params: Mapping[str, Any]) -> dict[str, JsonValue]:
    """Return ``params`` in canonical form (see the module docstring)."""
    flat = _canonical_flat(params)
    if flat is not None:
        return flat
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
    flat = _canonical_flat(params)
    text = _encode(flat) if flat is not None else canonical_json(params)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_hash_of_canonical(canonical: Mapping[str, JsonValue]) -> str:
    """:func:`config_hash` of params already in canonical form (from
    :func:`canonical_params`), without canonicalizing them again.
    """
    return hashlib.sha256(_encode(canonical).encode("utf-8")).hexdigest()
