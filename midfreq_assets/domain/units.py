"""Units and calendar conventions shared by every module: the only ``DAYS_PER_YEAR``.

Yields are fractions per year internally (0.05 = 5%/yr); DefiLlama reports percent.
Dates are tz-naive ``datetime64[ns]`` meaning the UTC calendar day. Conventions and formulas:
``docs/METHOD.md``.
"""

from __future__ import annotations

import pandas as pd

PERCENT = 100.0
DAYS_PER_YEAR = 365.0
#: DefiLlama's ``il7d`` is a 7-day loss: ``|il7d| * WEEKS_PER_YEAR`` annualizes it.
WEEKS_PER_YEAR = 52.0
DAY = pd.Timedelta(days=1)


def percent_to_fraction(values: pd.Series | pd.DataFrame) -> pd.Series | pd.DataFrame:
    return values / PERCENT


def years(days: float) -> float:
    """A number of days as a fraction of a year."""
    return days / DAYS_PER_YEAR


def utc_day(timestamps: pd.Series) -> pd.Series:
    """ISO timestamps (any offset) -> tz-naive midnight of their UTC day."""
    return (
        pd.to_datetime(timestamps, utc=True, format="ISO8601")
        .dt.tz_convert(None)
        .dt.normalize()
        .astype("datetime64[ns]")
    )


def interval_days(interval: str) -> float:
    """A kline interval (``1m``, ``4h``, ``1d``, ...) in days."""
    spec = interval.replace("m", "min") if interval.endswith("m") else interval
    return pd.Timedelta(spec) / DAY


def bars_per_year(interval: str) -> float:
    """How many bars of ``interval`` a year holds (annualizes per-bar returns)."""
    return DAYS_PER_YEAR / interval_days(interval)
