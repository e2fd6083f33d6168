"""Hypothesis settings per adapter for the state machines."""

from __future__ import annotations

from hypothesis import settings


def adapter_settings(adapter: str) -> settings:
    """The loaded profile for in-memory adapters; a quarter of its examples for the rest.

    File-backed adapters pay for real I/O on every step; a quarter of the examples keeps
    the suite fast under the ``ci`` profile while ``thorough`` still runs hundreds.
    """
    current = settings.default
    if adapter == "memory" or current is None:
        return settings(current)
    return settings(current, max_examples=max(10, current.max_examples // 4))
