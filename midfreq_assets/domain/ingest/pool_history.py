"""DefiLlama ``/chart`` records -> the typed ``pool_history`` frame (one row per pool and day).

Yields become fractions per year; timestamps become UTC days; a day reported twice keeps its
latest snapshot (DefiLlama's daily row is the last hourly snapshot of the day).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from midfreq_assets.domain.units import percent_to_fraction, utc_day

HISTORY_COLUMNS = ["date", "pool", "tvl_usd", "apy", "apy_base", "apy_reward", "il7d", "apy_base7d"]
_SOURCE_COLUMNS = {
    "timestamp": "timestamp",
    "tvlUsd": "tvl_usd",
    "apy": "apy",
    "apyBase": "apy_base",
    "apyReward": "apy_reward",
    "il7d": "il7d",
    "apyBase7d": "apy_base7d",
}
PERCENT_COLUMNS = ["apy", "apy_base", "apy_reward", "il7d", "apy_base7d"]


def empty_history() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in HISTORY_COLUMNS})
    frame["date"] = frame["date"].astype("datetime64[ns]")
    frame["pool"] = frame["pool"].astype(object)
    return frame


def charts_frame(charts: Mapping[str, Sequence[Mapping[str, Any]]]) -> pd.DataFrame:
    """Many pools' chart rows (raw dicts, the API's camelCase keys) as one history frame.

    Built column by column over all pools at once: per-pool DataFrames cost ~10 ms each.
    A day reported twice keeps its last row.
    """
    pools = [pool for pool, rows in charts.items() for _ in rows]
    if not pools:
        return empty_history()
    records = [row for rows in charts.values() for row in rows]
    frame = pd.DataFrame({"pool": pd.Series(pools, dtype=object)})
    frame["date"] = utc_day(pd.Series([r.get("timestamp") for r in records], dtype=object).astype(str))
    for source, target in _SOURCE_COLUMNS.items():
        if source == "timestamp":
            continue
        values = pd.Series([r.get(source) for r in records], dtype=object)
        frame[target] = pd.to_numeric(values, errors="coerce").astype("float64")
    frame[PERCENT_COLUMNS] = percent_to_fraction(frame[PERCENT_COLUMNS])
    return combine_histories([frame[HISTORY_COLUMNS]])


def combine_histories(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Stack pools' histories, keep the last row of a duplicated (pool, date), sort."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_history()
    history = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    history = history.drop_duplicates(subset=["pool", "date"], keep="last")
    return history.sort_values(["date", "pool"], kind="stable").reset_index(drop=True)


def restrict_to_days(history: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Rows with ``start <= date <= end`` (inclusive UTC days)."""
    mask = (history["date"] >= start) & (history["date"] <= end)
    return history.loc[mask].reset_index(drop=True)


def apy_outliers(history: pd.DataFrame, max_abs_apy: float) -> pd.DataFrame:
    """Rows whose APY is not finite or beyond ``max_abs_apy`` (a fraction): flagged, never dropped."""
    apy = history["apy"].to_numpy(dtype="float64")
    bad = ~np.isfinite(apy) | (np.abs(apy) > max_abs_apy)
    return history.loc[bad, ["date", "pool", "apy"]]


def duplicate_pool_days(frame: pd.DataFrame) -> pd.DataFrame:
    """``[date, pool]`` of every row whose (pool, date) appears more than once."""
    return frame.loc[frame.duplicated(["pool", "date"], keep=False), ["date", "pool"]]


def missing_pool_days(full: pd.DataFrame, window: pd.DataFrame, days: pd.DatetimeIndex) -> pd.MultiIndex:
    """(date, pool) pairs inside a pool's lifetime (first..last day it reports) that have no row.

    Days before a pool's first row are not missing: the pool did not exist yet.
    """
    life = full.groupby("pool")["date"].agg(["min", "max"])
    grid = pd.MultiIndex.from_product([days, life.index], names=["date", "pool"]).to_frame(index=False)
    grid = grid.join(life, on="pool")
    alive = grid[(grid["date"] >= grid["min"]) & (grid["date"] <= grid["max"])]
    expected = pd.MultiIndex.from_frame(alive[["date", "pool"]])
    return expected.difference(pd.MultiIndex.from_frame(window[["date", "pool"]]))


def rows_per_day(history: pd.DataFrame, days: pd.DatetimeIndex) -> pd.Series:
    """Number of pools with a row, per day of ``days`` (0 for a day without rows)."""
    return history.groupby("date")["pool"].nunique().reindex(days, fill_value=0)
