"""Choosing the executor a batch runs on, and Dask's optional install."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from quantrack.adapters.executors import (
    dask_executor,
    is_dask_client,
    resolve_executor,
    worker_count,
)
from quantrack.domain import EngineNotInstalled


def test_executors_pass_through_and_none_means_the_default_pool() -> None:
    """An executor is used as given; None leaves the choice to the runner."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        assert resolve_executor(pool) is pool
        assert worker_count(pool) == 3
    assert resolve_executor(None) is None
    assert worker_count(None) is None


def test_something_that_is_not_an_executor_is_refused() -> None:
    """A wrong value names the executors that are accepted."""
    with pytest.raises(TypeError, match="ProcessPoolExecutor"):
        resolve_executor(4)
    assert not is_dask_client(ThreadPoolExecutor)


def test_missing_dask_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Dask installed, asking for it says which extra brings it."""
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(EngineNotInstalled, match=r"quantrack\[dask\]"):
        dask_executor()


def test_no_running_dask_client_is_a_clear_error() -> None:
    """Asking for the current client when none runs says how to start one."""
    pytest.importorskip("distributed")
    with pytest.raises(ValueError, match="no Dask client is running"):
        dask_executor()
