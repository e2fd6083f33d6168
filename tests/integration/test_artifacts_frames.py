"""Frames as Parquet and documents as JSON, on top of the real filesystem store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quantrack.adapters.filesystem import FilesystemArtifactStore
from quantrack.adapters.frames import (
    JSON_MEDIA_TYPE,
    PARQUET_MEDIA_TYPE,
    frame_to_parquet,
    get_frame,
    get_json,
    put_frame,
    put_json,
)
from quantrack.domain import InvalidArtifactId


@pytest.fixture
def store(tmp_path: Path) -> FilesystemArtifactStore:
    """A fresh filesystem store."""
    return FilesystemArtifactStore(tmp_path / "artifacts")


def equity() -> pd.DataFrame:
    """A small equity curve with a named datetime index and mixed dtypes."""
    index = pd.date_range("2021-01-01", periods=6, freq="D", tz="UTC", name="date")
    return pd.DataFrame(
        {
            "equity": np.linspace(100.0, 112.5, 6),
            "position": np.array([0, 1, 1, 0, -1, 0], dtype="int64"),
            "symbol": pd.array(["AAA"] * 6, dtype="string"),
        },
        index=index,
    )


def test_frame_round_trips_with_index_and_dtypes(store: FilesystemArtifactStore) -> None:
    """A frame read back equals the one stored: values, dtypes, index and its name."""
    frame = equity()
    ref = put_frame(store, frame, kind="equity_curve", name="equity.parquet")
    assert ref.media_type == PARQUET_MEDIA_TYPE
    assert ref.kind == "equity_curve"
    assert ref.name == "equity.parquet"
    back = get_frame(store, ref)
    pd.testing.assert_frame_equal(back, frame, check_freq=False)
    pd.testing.assert_frame_equal(get_frame(store, ref.id), frame, check_freq=False)


def test_identical_frames_give_identical_bytes(store: FilesystemArtifactStore) -> None:
    """Equal frames built separately store once: their Parquet bytes are deterministic."""
    first = put_frame(store, equity(), kind="equity_curve")
    second = put_frame(store, equity().copy(deep=True), kind="equity_curve")
    assert first.id == second.id
    assert frame_to_parquet(equity()) == frame_to_parquet(equity())
    assert len(list(store.ids())) == 1


def test_a_changed_value_changes_the_artifact(store: FilesystemArtifactStore) -> None:
    """One different value gives a different id."""
    changed = equity()
    changed.iloc[2, 0] = 0.5
    assert put_frame(store, changed, kind="x").id != put_frame(store, equity(), kind="x").id


def test_a_series_is_stored_as_a_one_column_frame(store: FilesystemArtifactStore) -> None:
    """A Series is accepted and comes back as a frame with its name as the column."""
    series = pd.Series([1.0, 2.0, 3.0], name="equity")
    back = get_frame(store, put_frame(store, series, kind="equity_curve"))
    assert list(back.columns) == ["equity"]
    assert back["equity"].tolist() == [1.0, 2.0, 3.0]


def test_non_text_column_names_become_text(store: FilesystemArtifactStore) -> None:
    """Integer column labels (a sweep's column numbers) are stored as their text."""
    frame = pd.DataFrame({0: [1.0], 1: [2.0]})
    back = get_frame(store, put_frame(store, frame, kind="equity_curve"))
    assert list(back.columns) == ["0", "1"]


def test_a_non_frame_is_refused_clearly(store: FilesystemArtifactStore) -> None:
    """Passing a dict to put_frame raises TypeError pointing at put_json."""
    with pytest.raises(TypeError, match="put_json"):
        put_frame(store, {"a": 1}, kind="x")  # type: ignore[arg-type]


def test_an_unstorable_column_is_refused_clearly(store: FilesystemArtifactStore) -> None:
    """A column of mixed Python objects raises TypeError saying what to change."""
    frame = pd.DataFrame({"mixed": [1, "a", object()]})
    with pytest.raises(TypeError, match="cannot store this frame as Parquet"):
        put_frame(store, frame, kind="x")


def test_reading_non_parquet_as_a_frame_fails_clearly(store: FilesystemArtifactStore) -> None:
    """get_frame on a JSON artifact refuses by media type; on raw bytes says not Parquet."""
    doc = put_json(store, {"a": 1}, kind="metrics")
    with pytest.raises(ValueError, match="media type"):
        get_frame(store, doc)
    raw = store.put(b"not parquet")
    with pytest.raises(ValueError, match="not a readable Parquet"):
        get_frame(store, raw.id)
    with pytest.raises(InvalidArtifactId):
        get_frame(store, "../../x")


def test_json_round_trips_and_is_deterministic(store: FilesystemArtifactStore) -> None:
    """A document reads back equal, and key order does not change its id."""
    ref = put_json(store, {"b": [1, 2.5, None], "a": "text ü"}, kind="metrics", name="m.json")
    assert ref.media_type == JSON_MEDIA_TYPE
    assert get_json(store, ref) == {"a": "text ü", "b": [1, 2.5, None]}
    assert put_json(store, {"a": "text ü", "b": [1, 2.5, None]}, kind="metrics").id == ref.id


def test_json_refuses_what_it_cannot_spell(store: FilesystemArtifactStore) -> None:
    """NaN raises ValueError and an arbitrary object TypeError, each saying what to pass."""
    with pytest.raises(ValueError, match="None for a missing number"):
        put_json(store, {"x": float("nan")}, kind="metrics")
    with pytest.raises(TypeError, match="cannot store this as JSON"):
        put_json(store, {"when": dt.datetime(2020, 1, 1)}, kind="metrics")


def test_reading_non_json_fails_clearly(store: FilesystemArtifactStore) -> None:
    """get_json of bytes that are not JSON raises ValueError naming the artifact."""
    ref = store.put(b"\xff\xfe not json")
    with pytest.raises(ValueError, match=ref.id):
        get_json(store, ref.id)


def test_an_arrow_table_is_stored_as_it_is(store: FilesystemArtifactStore) -> None:
    """Engines hand over Arrow tables: same bytes for the same table, read back as a frame."""
    import pyarrow as pa

    def table() -> pa.Table:
        return pa.table(
            {
                "time": pa.array([0, 86_400_000_000], type=pa.timestamp("us")),
                "value": pa.array([100.0, 101.5]),
                "exit_price": pa.array([None, 3.25], type=pa.float64()),
            }
        )

    assert frame_to_parquet(table()) == frame_to_parquet(table())
    frame = get_frame(store, put_frame(store, table(), kind="equity_curve"))
    assert list(frame.columns) == ["time", "value", "exit_price"]
    assert list(frame["time"]) == [pd.Timestamp("1970-01-01"), pd.Timestamp("1970-01-02")]
    assert frame["value"].tolist() == [100.0, 101.5]
    assert np.isnan(frame["exit_price"].iloc[0])


def test_json_is_compact(store: FilesystemArtifactStore) -> None:
    """One line, sorted keys, no spaces: the C encoder's output (an indent would not use it)."""
    ref = put_json(store, {"b": [1, 2], "a": "é"}, kind="analyzers")
    assert store.get(ref.id) == '{"a":"é","b":[1,2]}\n'.encode()
