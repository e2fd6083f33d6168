"""Identifiers and clocks.

Experiment and batch ids are time-ordered (the layout of a UUIDv7, as 32 hex characters),
so ids sort by creation time in every store and a prefix of a few characters is usually
enough to name one at the command line.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time

__all__ = ["ID_PATTERN", "new_id", "new_ids", "utcnow"]

# User-supplied ids (a spool import, a caller that brings its own) must be safe to show,
# to put in a file name and to pass on a command line.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def new_id() -> str:
    """A fresh, time-ordered, random id: 48 bits of milliseconds, then 80 random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis << 80) | rand
    # Set the UUID version (7) and variant bits so the id is a valid UUIDv7.
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return f"{value:032x}"


# Byte tables that put the UUIDv7 version (7) and variant (0b10) bits into a random byte.
_VERSION = bytes((b & 0x0F) | 0x70 for b in range(256))
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))


def new_ids(n: int) -> list[str]:
    """``n`` fresh ids, each laid out as :func:`new_id` lays one out (same clock, same
    random source), made for the whole list at once: a sweep needs thousands.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"the number of ids must be a whole number >= 0, got {n!r}")
    millis = time.time_ns() // 1_000_000
    # One read of the random source for all of them; the version and variant bits are set
    # by translating every 10th byte (bytes 6 and 8 of each 16-byte id) in C.
    rand = bytearray(os.urandom(10 * n))
    rand[0::10] = rand[0::10].translate(_VERSION)
    rand[2::10] = rand[2::10].translate(_VARIANT)
    prefix = f"{millis & 0xFFFFFFFFFFFF:012x}"
    text = rand.hex()
    return [prefix + text[i : i + 20] for i in range(0, 20 * n, 20)]


def utcnow() -> dt.datetime:
    """The current time, timezone-aware, in UTC."""
    return dt.datetime.now(dt.UTC)
