"""Properties of config_hash: order independence and stability across processes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from quantrack.domain import canonical_params, config_hash

keys = st.text(min_size=1, max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
params = st.dictionaries(keys, values, max_size=6)


def shuffled(value: Any, rng: random.Random) -> Any:
    """``value`` with the insertion order of every dict in it shuffled."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: shuffled(item, rng) for key, item in items}
    if isinstance(value, list):
        return [shuffled(item, rng) for item in value]
    return value


@given(params, st.randoms(use_true_random=False))
def test_key_order_never_matters(original: dict[str, Any], rng: random.Random) -> None:
    """Reordering the keys of any dict, at any depth, keeps the hash."""
    assert config_hash(shuffled(original, rng)) == config_hash(original)


@given(params)
def test_canonical_form_is_a_fixed_point(original: dict[str, Any]) -> None:
    """Canonicalizing twice changes nothing, and the canonical form hashes the same."""
    canonical = canonical_params(original)
    assert canonical_params(canonical) == canonical
    assert config_hash(canonical) == config_hash(original)


@given(params)
def test_canonical_form_survives_json(original: dict[str, Any]) -> None:
    """The canonical form round-trips through JSON, so a stored config hashes the same."""
    canonical = canonical_params(original)
    assert config_hash(json.loads(json.dumps(canonical))) == config_hash(original)


@given(params, st.integers(min_value=-(2**40), max_value=2**40))
def test_integral_floats_hash_like_ints(original: dict[str, Any], number: int) -> None:
    """An integral float and the int of the same value are one parameter."""
    assert config_hash({**original, "n": float(number)}) == config_hash({**original, "n": number})


@settings(max_examples=3)
@given(st.lists(params, min_size=1, max_size=8))
def test_hash_is_stable_across_processes(batch: list[dict[str, Any]]) -> None:
    """A fresh interpreter (another hash seed) computes the same hashes as this one."""
    script = (
        "import ast, sys\n"
        "from quantrack.domain import config_hash\n"
        "for line in sys.stdin.read().splitlines():\n"
        "    print(config_hash(ast.literal_eval(line)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        input="\n".join(repr(one) for one in batch),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert result.stdout.split() == [config_hash(one) for one in batch]
