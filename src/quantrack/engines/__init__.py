"""Engine adapters: record the runs of backtesting engines people already use.

Each engine lives in its own module (:mod:`quantrack.engines.backtrader`,
:mod:`quantrack.engines.vectorbt`) and imports its engine only when that module is
imported, so importing this package costs nothing and works without any engine installed.
"""

__all__: list[str] = []
