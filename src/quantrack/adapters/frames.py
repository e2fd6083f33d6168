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

from quantrack.domain import ArtifactRef
from quantrack.domain.artifacts import check_artifact_id
from quantrack.ports import ArtifactStore

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "JSON_MEDIA_TYPE",
    "PARQUET_MEDIA_TYPE",
    "frame_from_parquet",
    "frame_to_parquet",
    "get_frame",
    "get_json",
    "put_frame",
    "put_json",
]

PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
JSON_MEDIA_TYPE = "application/json"


def frame_to_parquet(frame: pd.DataFrame | pd.Series[Any]) -> bytes:
    """The Parquet bytes of ``frame``, index included; identical frames give identical bytes."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

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
    frame: pd.DataFrame | pd.Series[Any],
    *,
    kind: str,
    name: str | None = None,
) -> ArtifactRef:
    """Store ``frame`` (a Series becomes a one-column frame) as Parquet; return its reference."""
    return store.put(frame_to_parquet(frame), kind=kind, media_type=PARQUET_MEDIA_TYPE, name=name)


def get_frame(store: ArtifactStore, ref_or_id: ArtifactRef | str) -> pd.DataFrame:
    """Load a frame stored by :func:`put_frame`, by reference or id."""
    ref_id = _id_of(ref_or_id, PARQUET_MEDIA_TYPE)
    return frame_from_parquet(store.get(ref_id))


def put_json(store: ArtifactStore, obj: Any, *, kind: str, name: str | None = None) -> ArtifactRef:
    """Store ``obj`` as key-sorted, indented JSON and return its reference.

    Raises TypeError for values JSON cannot hold (objects, bytes) and ValueError for NaN
    or infinity, which JSON has no spelling for.
    """
    try:
        text = json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
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
