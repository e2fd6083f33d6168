"""Rules for artifact ids and display names, shared by every artifact store."""

from __future__ import annotations

import re
import unicodedata

from quantrack.domain.errors import InvalidArtifactId

__all__ = ["check_artifact_id", "display_name"]

_ID = re.compile(r"^[0-9a-f]{64}$")
_UNSAFE = re.compile(r"[^\w.\- ]+")
_MAX_NAME = 200


def check_artifact_id(artifact_id: object) -> str:
    """Return ``artifact_id`` if it is 64 lowercase hex characters, else raise.

    Checked before any store is touched, so an id can never smuggle a path (``../``, an
    absolute path, a NUL byte) into the store.
    """
    if not isinstance(artifact_id, str) or not _ID.match(artifact_id):
        raise InvalidArtifactId(
            f"artifact id must be 64 lowercase hexadecimal characters (a sha256); "
            f"got {artifact_id!r}"
        )
    return artifact_id


def display_name(name: str | None) -> str | None:
    """A safe display name: the last path component, printable, at most 200 characters.

    Display names are shown to people and used for file names on export; they never
    address content in a store.
    """
    if name is None:
        return None
    name = unicodedata.normalize("NFC", name).replace("\x00", "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip(" .")
    return name[:_MAX_NAME] or None
