"""The public surface: quantrack.__all__ is pinned, and adapters conform to their ports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import quantrack

ROOT = Path(__file__).resolve().parents[1]

PUBLIC_NAMES = [
    "ArtifactNotFound",
    "ArtifactRef",
    "ArtifactStore",
    "Batch",
    "BatchItemResult",
    "BatchNotFound",
    "BatchObserver",
    "BatchStatus",
    "DuplicateExperiment",
    "EngineNotInstalled",
    "ErrorCategory",
    "Experiment",
    "ExperimentDefinition",
    "ExperimentFilter",
    "ExperimentNotFound",
    "ExperimentResults",
    "ExperimentStatus",
    "ExperimentTracker",
    "FinishedExperiments",
    "IntegrityError",
    "InvalidFilter",
    "InvalidParams",
    "InvalidTransition",
    "Provenance",
    "QuantrackError",
    "Workspace",
    "WorkspaceBusy",
    "__version__",
    "categorize_error",
    "config_hash",
    "open_workspace",
]


def test_all_is_pinned() -> None:
    """quantrack.__all__ is exactly the promised list; a change here is an API change."""
    assert quantrack.__all__ == PUBLIC_NAMES


def test_all_is_sorted() -> None:
    """quantrack.__all__ is kept sorted so additions are easy to review."""
    assert quantrack.__all__ == sorted(quantrack.__all__)


def test_every_public_name_resolves() -> None:
    """Every name in __all__ is an attribute of the package."""
    missing = [name for name in quantrack.__all__ if not hasattr(quantrack, name)]
    assert missing == []


def test_errors_share_one_root() -> None:
    """Every public error class derives from QuantrackError."""
    errors = [
        getattr(quantrack, name)
        for name in quantrack.__all__
        if isinstance(getattr(quantrack, name), type)
        and issubclass(getattr(quantrack, name), Exception)
    ]
    assert errors
    assert all(issubclass(error, quantrack.QuantrackError) for error in errors)


@pytest.mark.slow
def test_adapters_conform_to_their_ports_under_mypy_strict() -> None:
    """Mypy --strict accepts assigning every adapter to a variable typed as its port."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir=/dev/null",
            # Errors inside quantrack's own modules are the src mypy run's business; this
            # test pins only that each assignment below type-checks.
            "--follow-imports=silent",
            str(ROOT / "tests" / "typing" / "port_conformance.py"),
        ],
        capture_output=True,
        check=False,
        text=True,
        cwd=ROOT,
        env={**os.environ, "MYPYPATH": str(ROOT / "src")},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
