"""DefiLlama Pro ``/yields/chartLendBorrow`` records -> the typed ``pool_lend_borrow`` frame.

A lending market's supply S, borrows B, borrow APY and supply APY per (pool, UTC day): what the
rate-curve fit needs (utilization U = B / S), and what ``/chart`` lacks (its ``tvlUsd`` is S - B).
Same treatment of bad values as :mod:`midfreq_assets.domain.ingest.pool_history`:

- *impossible* values (a timestamp that is not a date, a negative supply or borrow) make the
  pool's answer untrustworthy: :func:`lend_borrow_problem` names the record, the pool fails;
- *implausible* ones (non-finite numbers, borrows above supply, an APY beyond
  :data:`~midfreq_assets.domain.ingest.pool_history.MAX_ABS_APY`, a supply beyond
  :data:`~midfreq_assets.domain.ingest.pool_history.MAX_TVL_USD`) are kept with the reason in
  ``flag`` and never used (:func:`~midfreq_assets.domain.ingest.pool_history.usable_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from midfreq_assets.domain.ingest.pool_history import FLAG, MAX_ABS_APY, MAX_TVL_USD, _timestamps
from midfreq_assets.domain.units import percent_to_fraction

#: Borrows may exceed supply by rounding between two snapshots of the same block, not more.
MAX_UTILIZATION = 1.001
LEND_BORROW_COLUMNS = [
    "date",
    "pool",
    "total_supply_usd",
    "total_borrow_usd",
    "debt_ceiling_usd",
    "apy_base_borrow",
    "apy_reward_borrow",
    "apy_base",
    "utilization",
    FLAG,
]
_SOURCE_COLUMNS = {
    "totalSupplyUsd": "total_supply_usd",
    "totalBorrowUsd": "total_borrow_usd",
    "debtCeilingUsd": "debt_ceiling_usd",
    "apyBaseBorrow": "apy_base_borrow",
    "apyRewardBorrow": "apy_reward_borrow",
    "apyBase": "apy_base",
}
PERCENT_COLUMNS = ["apy_base_borrow", "apy_reward_borrow", "apy_base"]


def empty_lend_borrow() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in LEND_BORROW_COLUMNS})
    frame["date"] = frame["date"].astype("datetime64[ns]")
    frame["pool"] = frame["pool"].astype(object)
    frame[FLAG] = frame[FLAG].astype(object)
    return frame


def _column(records: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    values = pd.Series([r.get(key) for r in records], dtype=object)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")


def lend_borrow_problem(records: Sequence[Mapping[str, Any]]) -> str | None:
    """What makes a pool's ``chartLendBorrow`` records unusable as a whole (None: nothing): the
    first record whose timestamp is not a date, or whose supply or borrow is negative."""
    if not records:
        return None
    bad_time = np.flatnonzero(_timestamps(records).isna().to_numpy())
    if len(bad_time):
        i = int(bad_time[0])
        return f"record {i}: timestamp {records[i].get('timestamp')!r} is not an ISO date ({len(bad_time)} such record(s))"
    for key in ("totalSupplyUsd", "totalBorrowUsd"):
        negative = np.flatnonzero(_column(records, key) < 0)
        if len(negative):
            i = int(negative[0])
            return (
                f"record {i} ({records[i].get('timestamp')}): negative {key} {records[i].get(key)!r} "
                f"({len(negative)} such record(s))"
            )
    return None


def lend_borrow_flags(frame: pd.DataFrame) -> pd.Series:
    """Per row: why its numbers are implausible (None: usable). Vectorized over the frame."""
    supply = frame["total_supply_usd"].to_numpy(dtype="float64")
    borrow = frame["total_borrow_usd"].to_numpy(dtype="float64")
    supply_apy = frame["apy_base"].to_numpy(dtype="float64")
    borrow_apy = frame["apy_base_borrow"].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        checks = [
            (~np.isfinite(supply) | ~np.isfinite(borrow), "supply or borrow not finite"),
            (supply > MAX_TVL_USD, f"total_supply_usd above {MAX_TVL_USD:.0e}"),
            (borrow > supply * MAX_UTILIZATION, "borrows above supply"),
            (~np.isfinite(borrow_apy), "apy_base_borrow not finite"),
            (np.abs(borrow_apy) > MAX_ABS_APY, f"|apy_base_borrow| above {MAX_ABS_APY:g}/yr"),
            (np.abs(supply_apy) > MAX_ABS_APY, f"|apy_base| above {MAX_ABS_APY:g}/yr"),
        ]
    flags = np.full(len(frame), None, dtype=object)
    for mask, reason in reversed(checks):  # the first matching reason wins
        flags[mask] = reason
    return pd.Series(flags, index=frame.index, dtype=object)


def lend_borrow_frame(charts: Mapping[str, Sequence[Mapping[str, Any]]]) -> pd.DataFrame:
    """Many pools' ``chartLendBorrow`` rows (raw dicts) as one frame, built column-wise.

    Yields become fractions per year, ``utilization`` = borrow / supply (NaN without supply); a day
    reported twice keeps its latest snapshot by timestamp. Records must have passed
    :func:`lend_borrow_problem` (a non-date timestamp raises here).
    """
    pools = [pool for pool, rows in charts.items() for _ in rows]
    if not pools:
        return empty_lend_borrow()
    records = [row for rows in charts.values() for row in rows]
    stamps = _timestamps(records)
    if stamps.isna().any():
        raise ValueError(
            f"{int(stamps.isna().sum())} chartLendBorrow record(s) without a valid timestamp "
            "(check lend_borrow_problem)"
        )
    frame = pd.DataFrame({"pool": pd.Series(pools, dtype=object), "_ts": stamps})
    frame["date"] = stamps.dt.tz_convert(None).dt.normalize().astype("datetime64[ns]")
    for source, target in _SOURCE_COLUMNS.items():
        frame[target] = _column(records, source)
    frame[PERCENT_COLUMNS] = percent_to_fraction(frame[PERCENT_COLUMNS])
    supply = frame["total_supply_usd"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["utilization"] = np.where(supply > 0, frame["total_borrow_usd"].to_numpy() / supply, np.nan)
    frame[FLAG] = lend_borrow_flags(frame)
    frame = frame.sort_values(["pool", "_ts"], kind="stable").drop_duplicates(["pool", "date"], keep="last")
    return frame.sort_values(["date", "pool"], kind="stable")[LEND_BORROW_COLUMNS].reset_index(drop=True)


def lending_pool_ids(rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """The pools of a ``/yields/poolsBorrow`` snapshot: DefiLlama's list of lending markets."""
    return {str(r["pool"]) for r in rows if r.get("pool")}
