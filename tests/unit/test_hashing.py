"""config_hash and the canonical form of parameters."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from quantrack.domain import InvalidParams, canonical_json, canonical_params, config_hash


class Side(enum.Enum):
    """A plain enum."""

    LONG = "long"


class Mode(enum.StrEnum):
    """A string enum."""

    FAST = "fast"


class Level(enum.IntEnum):
    """An int enum."""

    HIGH = 3


def test_hash_is_64_hex_and_deterministic() -> None:
    """The hash is a sha256 hex digest that does not change between calls."""
    digest = config_hash({"fast": 10, "slow": 30})
    assert len(digest) == 64
    assert set(digest) <= set("0123456789abcdef")
    assert config_hash({"fast": 10, "slow": 30}) == digest


def test_known_value() -> None:
    """The canonical JSON is compact and key-sorted, so the hash is fixed across versions."""
    assert canonical_json({"b": 1, "a": [1.5, "x"]}) == '{"a":[1.5,"x"],"b":1}'
    assert config_hash({}) == "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def test_key_order_does_not_matter() -> None:
    """Dicts with the same items in another order (also nested) hash the same."""
    assert config_hash({"a": 1, "b": {"x": 1, "y": 2}}) == config_hash(
        {"b": {"y": 2, "x": 1}, "a": 1}
    )


def test_int_and_integral_float_are_one_value() -> None:
    """1 and 1.0 are the same parameter (stored as the int), 1.5 stays a float."""
    assert config_hash({"w": 1}) == config_hash({"w": 1.0})
    assert canonical_params({"w": 1.0, "x": 1.5, "n": -0.0}) == {"n": 0, "w": 1, "x": 1.5}
    assert type(canonical_params({"w": 10.0})["w"]) is int


def test_huge_integral_floats_stay_floats() -> None:
    """Integral floats beyond 2**53 are not exact ints and stay floats."""
    assert type(canonical_params({"x": 2.0**60})["x"]) is float


def test_booleans_are_not_numbers() -> None:
    """True is not 1: booleans keep their own hash."""
    assert config_hash({"x": True}) != config_hash({"x": 1})
    assert canonical_params({"x": True}) == {"x": True}


def test_numpy_values_hash_as_plain_values() -> None:
    """Numpy scalars and arrays hash like the Python values they hold."""
    assert config_hash({"w": np.int64(10), "x": np.float32(0.5), "b": np.bool_(True)}) == (
        config_hash({"w": 10, "x": 0.5, "b": True})
    )
    assert config_hash({"grid": np.array([[1.0, 2.5], [3, 4]])}) == config_hash(
        {"grid": [[1, 2.5], [3, 4]]}
    )
    assert type(canonical_params({"w": np.int64(3)})["w"]) is int


def test_numpy_datetimes_hash_as_datetimes() -> None:
    """Numpy datetime64 (any unit) and timedelta64 hash like datetime and timedelta."""
    moment = dt.datetime(2024, 1, 2, 9, 30)
    assert config_hash({"t": np.datetime64("2024-01-02T09:30:00.000000000")}) == config_hash(
        {"t": moment}
    )
    assert config_hash({"t": np.datetime64("2024-01-02T09:30", "s")}) == config_hash({"t": moment})
    assert config_hash({"d": np.timedelta64(90, "s")}) == config_hash(
        {"d": dt.timedelta(seconds=90)}
    )
    assert canonical_params({"ts": np.array(["2024-01-02"], dtype="datetime64[ns]")}) == {
        "ts": ["2024-01-02T00:00:00"]
    }


def test_numpy_nan_is_rejected() -> None:
    """A numpy NaN is refused like a float NaN."""
    with pytest.raises(InvalidParams, match=r"params\.x is .*nan"):
        config_hash({"x": np.float64("nan")})


def test_datetimes() -> None:
    """Aware datetimes hash by their UTC instant; naive ones as written; dates and times as ISO."""
    utc = dt.datetime(2024, 1, 2, 9, tzinfo=dt.UTC)
    paris = dt.datetime(2024, 1, 2, 10, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert config_hash({"t": utc}) == config_hash({"t": paris})
    assert canonical_params({"t": paris}) == {"t": "2024-01-02T09:00:00+00:00"}
    assert canonical_params({"t": dt.datetime(2024, 1, 2, 9)}) == {"t": "2024-01-02T09:00:00"}
    assert config_hash({"t": utc}) != config_hash({"t": dt.datetime(2024, 1, 2, 9)})
    assert canonical_params({"d": dt.date(2024, 1, 2), "h": dt.time(9, 30)}) == {
        "d": "2024-01-02",
        "h": "09:30:00",
    }
    assert canonical_params({"span": dt.timedelta(minutes=2)}) == {"span": 120}


def test_enums_paths_decimals() -> None:
    """Enums hash as their values, paths as text, decimals as numbers."""
    assert canonical_params({"side": Side.LONG, "mode": Mode.FAST, "level": Level.HIGH}) == {
        "level": 3,
        "mode": "fast",
        "side": "long",
    }
    assert type(canonical_params({"mode": Mode.FAST})["mode"]) is str
    assert canonical_params({"p": Path("data/prices.csv")}) == {"p": "data/prices.csv"}
    assert canonical_params({"p": PurePosixPath("/x/y")}) == {"p": "/x/y"}
    assert canonical_params({"d": Decimal("2.50"), "e": Decimal("3")}) == {"d": 2.5, "e": 3}


def test_sets_are_order_free() -> None:
    """Sets become sorted lists, so their iteration order never matters."""
    assert canonical_params({"s": {3, 1, 2}}) == {"s": [1, 2, 3]}
    assert config_hash({"s": frozenset({"b", "a"})}) == config_hash({"s": {"a", "b"}})
    assert canonical_params({"s": {"a", 1}}) == {"s": ["a", 1]}


def test_tuples_and_lists_are_one_value() -> None:
    """A tuple and a list of the same items hash the same."""
    assert config_hash({"x": (1, 2)}) == config_hash({"x": [1, 2]})


def test_nested_structures() -> None:
    """Nesting is canonicalized all the way down."""
    value = {"outer": {"inner": [1.0, {"z": 2.0, "a": Side.LONG}]}}
    assert canonical_params(value) == {"outer": {"inner": [1, {"a": "long", "z": 2}]}}


@pytest.mark.parametrize(
    ("params", "path", "what"),
    [
        ({"x": object()}, r"params\.x", "builtins.object"),
        ({"a": {"b": [1, object()]}}, r"params\.a\.b\[1\]", "builtins.object"),
        ({"x": b"bytes"}, r"params\.x", "builtins.bytes"),
        ({"x": lambda: 1}, r"params\.x", "function"),
        ({"x": float("nan")}, r"params\.x", "nan"),
        ({"x": float("inf")}, r"params\.x", "inf"),
        ({"x": [float("-inf")]}, r"params\.x\[0\]", "inf"),
        ({"x": Decimal("NaN")}, r"params\.x", "nan"),
        ({"x": {1: "a"}}, r"params\.x", "key 1 of type int"),
    ],
)
def test_unrepresentable_values_are_rejected(
    params: dict[str, object], path: str, what: str
) -> None:
    """A value without a canonical JSON form raises InvalidParams naming where it is."""
    with pytest.raises(InvalidParams, match=rf"{path}.*{what}"):
        config_hash(params)


def test_invalid_params_is_a_type_error() -> None:
    """InvalidParams is also a TypeError, for callers that do not know quantrack."""
    with pytest.raises(TypeError):
        config_hash({"x": object()})


def test_string_enum_keys_become_plain_text() -> None:
    """A StrEnum used as a key is stored as its plain text."""
    canonical = canonical_params({Mode.FAST: 1})
    assert canonical == {"fast": 1}
    assert [type(key) for key in canonical] == [str]
