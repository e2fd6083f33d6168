"""Executors for batches: Dask detection without importing Dask.

The batch runner takes any :class:`concurrent.futures.Executor`. A Dask
``distributed.Client`` is not one, but ``client.get_executor()`` is; :func:`resolve_executor`
accepts either, so ``workspace.run_batch(fn, items, executor=client)`` works. Dask is
imported only when asked for by :func:`dask_executor`; when it is missing the error names
the extra to install.
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any

from quantrack.domain import EngineNotInstalled

__all__ = ["dask_executor", "is_dask_client", "resolve_executor", "worker_count"]


def is_dask_client(value: object) -> bool:
    """True when ``value`` is a ``distributed.Client`` (checked without importing Dask)."""
    module = type(value).__module__ or ""
    return module.split(".")[0] == "distributed" and hasattr(value, "get_executor")


def dask_executor(client: Any = None) -> cf.Executor:
    """An executor running items on a Dask cluster: ``client``'s, else the current client.

    Raises :class:`EngineNotInstalled` when Dask is not installed, and ValueError when no
    client is given and none is running.
    """
    try:
        import distributed
    except ImportError as exc:
        raise EngineNotInstalled("dask", "dask") from exc
    if client is None:
        try:
            client = distributed.get_client()
        except ValueError as exc:
            raise ValueError(
                "no Dask client is running; start one with "
                "distributed.Client(LocalCluster(...)) or pass client="
            ) from exc
    executor: cf.Executor = client.get_executor()
    return executor


def resolve_executor(executor: object) -> cf.Executor | None:
    """The executor to run a batch on: ``None`` (the runner's default process pool), an
    executor as given, or a Dask client's executor.

    Raises TypeError for anything else.
    """
    if executor is None or isinstance(executor, cf.Executor):
        return executor
    if is_dask_client(executor):
        return dask_executor(executor)
    raise TypeError(
        f"executor must be a concurrent.futures.Executor (ThreadPoolExecutor, "
        f"ProcessPoolExecutor, a Dask client's get_executor()) or a Dask Client; got "
        f"{type(executor).__qualname__}"
    )


def worker_count(executor: cf.Executor | None) -> int | None:
    """How many items ``executor`` runs at once, when it can tell (``None`` otherwise)."""
    workers = getattr(executor, "_max_workers", None)
    if isinstance(workers, int) and workers > 0:
        return workers
    client = getattr(executor, "_client", None)
    if client is not None and is_dask_client(client):
        try:
            total = sum(client.nthreads().values())
        except Exception:  # a client that cannot answer now is still usable
            return None
        return int(total) or None
    return None
