"""Batch functions for the batch tests: top-level, so worker processes can import them.

Functions that must remember calls across processes (how often an item ran, whether it
failed before) write one file per call into a folder the test passes in.
"""

from __future__ import annotations

import _thread
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from quantrack.domain import Batch, BatchItemResult
from quantrack.services.batches import ItemArtifact, ItemOutput


def square(x: int) -> dict[str, float]:
    """The square of ``x`` as metric ``value``."""
    return {"value": float(x * x)}


def noop(x: int) -> dict[str, float]:
    """Trivial work for the benchmark."""
    return {"x": x}


def counted(x: int, calls: str, delay: float = 0.0) -> dict[str, float]:
    """``x * 2``, leaving one file per call in ``calls`` so tests can count executions."""
    Path(calls, f"{x}-{uuid.uuid4().hex}").touch()
    if delay:
        time.sleep(delay)
    return {"double": float(2 * x)}


def fail_odd(x: int) -> dict[str, float]:
    """Fails odd items with a parameter error, succeeds even ones."""
    if x % 2:
        raise ValueError(f"window must be positive, got {x}")
    return {"value": float(x)}


def flaky(x: int, state: str) -> dict[str, float]:
    """Fails the first call for each ``x`` (remembered in ``state``), then succeeds."""
    seen = Path(state, str(x))
    if not seen.exists():
        seen.touch()
        raise RuntimeError("missing bars in the data feed")
    return {"value": float(x)}


def sleepy(x: int, seconds: float) -> dict[str, float]:
    """Sleeps ``seconds`` when ``x`` is 0, then returns."""
    if x == 0:
        time.sleep(seconds)
    return {"value": float(x)}


def busy_wait(x: int, seconds: float) -> dict[str, float]:
    """Spins (interruptible Python code) for ``seconds`` when ``x`` is 0."""
    end = time.monotonic() + (seconds if x == 0 else 0.0)
    while time.monotonic() < end:
        pass
    return {"value": float(x)}


def die(x: int, victim: int, sig: int = int(signal.SIGKILL)) -> dict[str, float]:
    """Kills its own worker process with ``sig`` when ``x == victim``."""
    if x == victim:
        os.kill(os.getpid(), sig)
        time.sleep(10)  # never reached: the signal ends the process
    time.sleep(0.05)
    return {"value": float(x)}


def hard_exit(x: int, victim: int) -> dict[str, float]:
    """Leaves its worker process with exit code 3 when ``x == victim``."""
    if x == victim:
        os._exit(3)
    return {"value": float(x)}


class Outcome:
    """An engine-like result object that is not a mapping."""

    def __init__(self, total_return: float) -> None:
        self.total_return = total_return


def engine_like(x: int) -> Outcome:
    """Returns an object; the batch needs ``metrics_of`` to read it."""
    return Outcome(x / 100)


def outcome_metrics(result: Outcome) -> dict[str, float]:
    """Turns an :class:`Outcome` into metrics."""
    return {"total_return": result.total_return}


def with_artifact(x: int) -> ItemOutput:
    """Metrics plus a small text artifact."""
    return ItemOutput(
        metrics={"value": float(x), "undefined": float("nan")},
        artifacts=(ItemArtifact(f"report {x}".encode(), kind="report", media_type="text/plain"),),
    )


def not_a_number(x: int) -> dict[str, Any]:
    """Returns a metric that is not a number."""
    return {"value": "high"}


def sleepy_all(x: int, seconds: float) -> dict[str, float]:
    """Sleeps ``seconds`` for every item."""
    time.sleep(seconds)
    return {"value": float(x)}


def deaf(x: int, seconds: float) -> dict[str, float]:
    """Blocks SIGALRM and sleeps when ``x`` is 0, like native code that never yields."""
    if x == 0:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(seconds)
    return {"value": float(x)}


class CtrlCAfterFirstItem:
    """Presses Ctrl-C (in the main thread) shortly after the first item is recorded."""

    def __init__(self) -> None:
        self.timer = threading.Timer(0.3, _thread.interrupt_main)

    def on_batch_started(self, batch: Batch) -> None:
        pass

    def on_item_finished(self, batch: Batch, item: BatchItemResult) -> None:
        if not self.timer.ident:
            self.timer.start()

    def on_batch_finished(self, batch: Batch) -> None:
        pass

    def cancel(self) -> None:
        self.timer.cancel()
