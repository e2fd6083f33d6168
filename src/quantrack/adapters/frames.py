"""Frames and small documents in any :class:`~quantrack.ports.ArtifactStore`.

Helpers on top of the port, not part of it: a store keeps bytes; these turn pandas frames
into Parquet bytes (``application/vnd.apache.parquet``) and plain data into JSON bytes
(``application/json``) and back. Nothing is pickled: loading a pickle runs code.

The bytes are deterministic: the same frame (values, dtypes, index, column names) always
gives the same Parquet bytes under the same library versions, and the same document the
same JSON, so storing a result twice stores it once.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

from quantrack.domain import ArtifactRef, Experiment, QuantrackError
from quantrack.domain.artifacts import check_artifact_id
from quantrack.ports import ArtifactStore

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "EQUITY_KINDS",
    "JSON_MEDIA_TYPE",
    "PARQUET_MEDIA_TYPE",
    "equity_curve",
    "frame_from_parquet",
    "frame_to_parquet",
    "get_frame",
    "get_json",
    "put_frame",
    "put_json",
]

PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
JSON_MEDIA_TYPE = "application/json"
#: Artifact kinds that hold a run's equity curve (``equity`` is an older spelling).
EQUITY_KINDS = ("equity_curve", "equity")
_TIME_COLUMNS = ("time", "date", "datetime", "timestamp", "index")
_VALUE_COLUMNS = ("value", "equity", "portfolio_value", "total_value")


def frame_to_parquet(frame: pd.DataFrame | pd.Series[Any] | pa.Table) -> bytes:
    """The Parquet bytes of ``frame``, index included; identical frames give identical bytes.

    An Arrow table is written as it is: engines that collect columns build one directly,
    which skips pandas' conversion (most of the cost for a small frame).
    """
    import pandas as pd
    import pyarrow as pa

    if isinstance(frame, pa.Table):
        return _parquet_bytes(frame)
    if isinstance(frame, pd.Series):
        frame = frame.to_frame()
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"expected a pandas DataFrame or Series, got {type(frame).__name__}; "
            "use put_json for plain data"
        )
    if not all(isinstance(column, str) for column in frame.columns):
        # Parquet column names are text; say so rather than let pyarrow fail obscurely.
        frame = frame.rename(columns=str)
    try:
        table = pa.Table.from_pandas(frame, preserve_index=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise TypeError(
            f"cannot store this frame as Parquet: {exc}; convert object columns holding "
            "mixed types to one type first"
        ) from exc
    return _parquet_bytes(table)


def _parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    # Statistics and a fixed codec keep the bytes a pure function of the table.
    pq.write_table(table, buffer, compression="zstd", write_statistics=True)
    return buffer.getvalue()


def frame_from_parquet(data: bytes) -> pd.DataFrame:
    """The frame stored as Parquet ``data`` (index and dtypes restored)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"the artifact is not a readable Parquet file: {exc}") from exc
    frame: pd.DataFrame = table.to_pandas()
    return frame


def put_frame(
    store: ArtifactStore,
    frame: pd.DataFrame | pd.Series[Any] | pa.Table,
    *,
    kind: str,
    name: str | None = None,
) -> ArtifactRef:
    """Store ``frame`` (a Series becomes a one-column frame; an Arrow table is stored as
    it is) as Parquet; return its reference.
    """
    return store.put(frame_to_parquet(frame), kind=kind, media_type=PARQUET_MEDIA_TYPE, name=name)


def get_frame(store: ArtifactStore, ref_or_id: ArtifactRef | str) -> pd.DataFrame:
    """Load a frame stored by :func:`put_frame`, by reference or id."""
    ref_id = _id_of(ref_or_id, PARQUET_MEDIA_TYPE)
    return frame_from_parquet(store.get(ref_id))


def put_json(store: ArtifactStore, obj: Any, *, kind: str, name: str | None = None) -> ArtifactRef:
    """Store ``obj`` as key-sorted, compact JSON and return its reference.

    Compact, because an indent makes :mod:`json` fall back from its C encoder to Python,
    which costs milliseconds on an analyzer's output (``python -m json.tool`` indents it).

    Raises TypeError for values JSON cannot hold (objects, bytes) and ValueError for NaN
    or infinity, which JSON has no spelling for.
    """
    try:
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except TypeError as exc:
        raise TypeError(
            f"cannot store this as JSON: {exc}; pass dicts, lists, str, numbers"
        ) from exc
    except ValueError as exc:
        raise ValueError(
            f"cannot store this as JSON: {exc} (use None for a missing number)"
        ) from exc
    return store.put(
        (text + "\n").encode("utf-8"), kind=kind, media_type=JSON_MEDIA_TYPE, name=name
    )


def get_json(store: ArtifactStore, ref_or_id: ArtifactRef | str) -> Any:
    """Load a document stored by :func:`put_json`, by reference or id."""
    ref_id = _id_of(ref_or_id, JSON_MEDIA_TYPE)
    data = store.get(ref_id)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"artifact {ref_id} is not a JSON document: {exc}") from exc


def _id_of(ref_or_id: ArtifactRef | str, media_type: str) -> str:
    if isinstance(ref_or_id, ArtifactRef):
        if ref_or_id.media_type not in (media_type, "application/octet-stream"):
            raise ValueError(
                f"artifact {ref_or_id.id} has media type {ref_or_id.media_type!r}, "
                f"not {media_type!r}; read it with store.get() instead"
            )
        return ref_or_id.id
    return check_artifact_id(ref_or_id)


def _read_any_parquet(store: ArtifactStore, ref: ArtifactRef) -> pd.DataFrame:
    # Any media type: older records labelled their Parquet bytes as octet-stream or similar.
    return frame_from_parquet(store.get(ref.id))


def _by_time(frame: pd.DataFrame) -> pd.DataFrame:
    for column in frame.columns:
        if str(column).lower() in _TIME_COLUMNS:
            return frame.set_index(column)
    return frame


def _value_series(frame: pd.DataFrame, ref: ArtifactRef) -> pd.Series[Any] | None:
    if ref.part is not None:
        # A sweep's curves share one wide file; the run's column is named by the ref's part.
        if ref.part in frame.columns:
            return frame[ref.part].astype("float64")
        for column in frame.columns:
            if str(column) == ref.part:
                return frame[column].astype("float64")
        return None
    for column in frame.columns:
        if str(column).lower() in _VALUE_COLUMNS:
            return frame[column].astype("float64")
    numeric = frame.select_dtypes("number")
    if numeric.shape[1] == 0:
        return None
    series: pd.Series[Any] = numeric.iloc[:, 0].astype("float64")
    return series


def equity_curve(
    store: ArtifactStore, experiment: Experiment, cache: dict[str, Any] | None = None
) -> pd.Series[Any] | None:
    """The run's equity curve (portfolio value over time, named by the run's id), or
    ``None`` when it recorded none or its artifact cannot be read.

    Reads both layouts the engine adapters write: one Parquet file per run (backtrader:
    ``time``, ``value``, ``cash``) and one wide file shared by a sweep (vectorbt: the run's
    column is its ref's ``part``). ``cache`` (artifact id → frame) lets the runs of one
    sweep read that shared file once; it holds frames indexed by time.
    """
    cache = {} if cache is None else cache
    for ref in experiment.artifacts:
        if ref.kind not in EQUITY_KINDS:
            continue
        if ref.id not in cache:
            try:
                # Indexed once per file: a sweep's runs all share it.
                cache[ref.id] = _by_time(_read_any_parquet(store, ref))
            except (QuantrackError, KeyError, ValueError, OSError):
                cache[ref.id] = None
        frame = cache[ref.id]
        if frame is None:
            continue
        series = _value_series(frame, ref)
        if series is not None:
            return series.dropna().rename(experiment.id)
    return None
