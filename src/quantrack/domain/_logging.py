"""A logger that imports structlog on first use, so ``import quantrack`` stays fast.

structlog pulls in rich when it is installed, which costs tens of milliseconds at import.
quantrack only emits events (it configures nothing), so the import can wait until the
first event.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LazyLogger", "get_logger"]


class LazyLogger:
    """Forwards every call to ``structlog.get_logger(name)``, created on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, method: str) -> Any:
        if self._logger is None:
            import structlog

            self._logger = structlog.get_logger(self._name)
        return getattr(self._logger, method)


def get_logger(name: str) -> LazyLogger:
    """A structlog logger named ``name`` that imports structlog only when first used."""
    return LazyLogger(name)
