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

__all__ = ["ID_PATTERN", "new_id", "utcnow"]

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


def utcnow() -> dt.datetime:
    """The current time, timezone-aware, in UTC."""
    return dt.datetime.now(dt.UTC)
