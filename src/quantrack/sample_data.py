"""The bundled SYNTHETIC sample data: four symbols of daily OHLCV bars, 2014-2023.

The prices are invented by ``scripts/make_sample_data.py`` (a seeded geometric Brownian
motion with trend regimes and clustered volatility) so that the demo, the tests and the
docs have realistic-looking data that moving-average strategies trade on. They are not
market prices. Load your own data the usual way (``pandas.read_csv``, a data vendor, ...).

pandas is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

# Re-exported here, where users meet it; defined with every other error.
from quantrack.domain.errors import UnknownSampleSymbol

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SAMPLE_SYMBOLS",
    "UnknownSampleSymbol",
    "load_sample",
    "load_sample_prices",
    "sample_path",
]

SAMPLE_SYMBOLS: tuple[str, ...] = ("AAA", "BBB", "CCC", "DDD")
_FIELDS = ("open", "high", "low", "close", "volume")
_FOLDER = Path(__file__).resolve().parent / "data" / "sample"


def sample_path(symbol: str) -> Path:
    """The CSV file of ``symbol``; raises :class:`UnknownSampleSymbol` for any other name.

    The file's first line is a ``#`` comment marking the data as synthetic; read it with
    ``pandas.read_csv(path, comment="#")`` or use :func:`load_sample`.
    """
    if symbol not in SAMPLE_SYMBOLS:
        raise UnknownSampleSymbol(symbol, SAMPLE_SYMBOLS)
    return _FOLDER / f"{symbol}.csv"


def load_sample(symbol: str) -> pd.DataFrame:
    """Daily bars of ``symbol``: a ``DatetimeIndex`` named ``date`` and float64 columns
    ``open``, ``high``, ``low``, ``close`` and ``volume``.

    Raises :class:`UnknownSampleSymbol` for a symbol that is not bundled.
    """
    import pandas as pd

    path = sample_path(symbol)
    frame = pd.read_csv(path, comment="#", index_col="date", parse_dates=["date"])
    frame = frame.astype("float64")[list(_FIELDS)]
    frame.index = pd.DatetimeIndex(frame.index, name="date")
    return frame


def load_sample_prices(field: str = "close") -> pd.DataFrame:
    """One column per bundled symbol holding ``field`` (``close`` by default).

    Raises ValueError for a field other than open, high, low, close or volume.
    """
    import pandas as pd

    if field not in _FIELDS:
        raise ValueError(f"unknown price field {field!r}; choose one of {', '.join(_FIELDS)}")
    columns = {symbol: load_sample(symbol)[field] for symbol in SAMPLE_SYMBOLS}
    prices = pd.DataFrame(columns)
    prices.columns.name = "symbol"
    return prices
