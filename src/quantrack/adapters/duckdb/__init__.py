"""DuckDB adapters: experiments and batches in one embedded database file.

See ``docs/storage.md`` for the schema, the views and the concurrency model.
"""

from quantrack.adapters.duckdb.observer import DuckDBBatchObserver
from quantrack.adapters.duckdb.tracker import DuckDBExperimentTracker

__all__ = ["DuckDBBatchObserver", "DuckDBExperimentTracker"]
