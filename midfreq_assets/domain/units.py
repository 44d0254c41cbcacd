"""Units and calendar conventions shared by every module.

Yields are fractions per year internally (0.05 = 5%/yr); DefiLlama reports percent.
Dates are tz-naive ``datetime64[ns]`` meaning the UTC calendar day.
"""

from __future__ import annotations

import pandas as pd

PERCENT = 100.0
DAYS_PER_YEAR = 365.0


def percent_to_fraction(values: pd.Series | pd.DataFrame) -> pd.Series | pd.DataFrame:
    return values / PERCENT


def utc_day(timestamps: pd.Series) -> pd.Series:
    """ISO timestamps (any offset) -> tz-naive midnight of their UTC day."""
    return pd.to_datetime(timestamps, utc=True, format="ISO8601").dt.tz_convert(None).dt.normalize().astype(
        "datetime64[ns]"
    )

