"""The flat-params fast path of hashing agrees with the general canonical form."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from quantrack.domain.hashing import (
    canonical_params,
    canonical_value,
    config_hash,
    config_hash_of_canonical,
)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e6, max_value=1e6).map(round),
    st.floats(min_value=-1e6, max_value=1e6).map(lambda x: float(round(x))),
    st.text(),
)
_flat = st.dictionaries(st.text(), _scalars, max_size=12)


def _general_hash(params: dict[str, Any]) -> str:
    import hashlib

    text = json.dumps(
        canonical_value(params), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@given(_flat)
def test_fast_canonical_params_equal_the_general_form(params: dict[str, Any]) -> None:
    """canonical_params of a flat dict equals canonical_value, in value, types and key order."""
    fast = canonical_params(params)
    general = canonical_value(params)
    assert fast == general
    assert isinstance(general, dict)
    assert list(fast) == list(general)
    assert [type(v) for v in fast.values()] == [type(v) for v in general.values()]


@given(_flat)
def test_fast_config_hash_equals_the_general_hash(params: dict[str, Any]) -> None:
    """config_hash and config_hash_of_canonical equal the sha256 of the general canonical JSON."""
    expected = _general_hash(params)
    assert config_hash(params) == expected
    assert config_hash_of_canonical(canonical_params(params)) == expected


@given(st.dictionaries(st.text(), st.recursive(_scalars, lambda c: st.lists(c, max_size=3))))
def test_nested_params_hash_like_the_general_path(params: dict[str, Any]) -> None:
    """Params the fast path declines (nested lists) still hash by the general canonical form."""
    assert config_hash(params) == _general_hash(params)
    assert config_hash_of_canonical(canonical_params(params)) == _general_hash(params)


def test_non_finite_float_still_raises_with_the_parameter_name() -> None:
    """A NaN in a flat dict is rejected by the general path's error naming the key."""
    import pytest

    from quantrack.domain.errors import InvalidParams

    with pytest.raises(InvalidParams, match=r"params\.stop"):
        canonical_params({"fast": 1, "stop": math.nan})
    with pytest.raises(InvalidParams, match=r"params\.stop"):
        config_hash({"stop": math.inf})
