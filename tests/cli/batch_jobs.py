"""Functions run as batch items by the CLI tests (importable top level, for any process)."""

from __future__ import annotations

import os


def score(x: int) -> dict[str, float]:
    """Square ``x``; item 3 fails until ``QT_CLI_TEST_FIXED`` is set (then retries pass)."""
    if x == 3 and not os.environ.get("QT_CLI_TEST_FIXED"):
        raise ValueError("x=3 is not supported yet")
    return {"score": float(x * x)}


def dies_at_two(x: int) -> dict[str, float]:
    """Like :func:`score`, but kills its own process at item 2 while
    ``QT_CLI_TEST_KILL`` is set (a batch whose process vanished mid-way).
    """
    if x == 2 and os.environ.get("QT_CLI_TEST_KILL"):
        os.kill(os.getpid(), 9)
    return {"score": float(x)}
