"""quantrack: record every backtest, find and trust any result later.

The public names live here; the modules behind them are free to change. Importing
quantrack never imports duckdb, pandas, backtrader or vectorbt: adapters and engines are
loaded when first used.
"""

from quantrack.domain import (
    ArtifactNotFound,
    ArtifactRef,
    Batch,
    BatchItemResult,
    BatchNotFound,
    BatchStatus,
    DuplicateExperiment,
    EngineNotInstalled,
    ErrorCategory,
    Experiment,
    ExperimentDefinition,
    ExperimentFilter,
    ExperimentNotFound,
    ExperimentResults,
    ExperimentStatus,
    FinishedExperiments,
    IntegrityError,
    InvalidFilter,
    InvalidParams,
    InvalidTransition,
    Provenance,
    QuantrackError,
    WorkspaceBusy,
    categorize_error,
    config_hash,
)
from quantrack.ports import ArtifactStore, BatchObserver, ExperimentTracker
from quantrack.workspace import Workspace, open_workspace

__version__ = "0.1.0"

__all__ = [
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
