"""DefiLlama ``/chart`` records -> the typed ``pool_history`` frame (one row per pool and day).

Yields become fractions per year; timestamps become UTC days; a day reported twice keeps its
latest snapshot by timestamp, whatever the row order (DefiLlama's daily row is the last hourly
snapshot of the day).

Two kinds of bad values, treated differently (docs/RUNBOOK.md "Bad values"):

- *impossible* ones (a timestamp that is not a date, a negative TVL) make the pool's whole
  answer untrustworthy: :func:`chart_problem` names the record and the pool fails this run (its
  previous rows are kept, the run is not green);
- *implausible* ones (an APY beyond :data:`MAX_ABS_APY`, a TVL beyond :data:`MAX_TVL_USD`, a
  non-finite number) are kept in the raw record with the reason in the ``flag`` column, and
  :func:`usable_rows` drops them from everything research, the universe and the optimizer see.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from midfreq_assets.domain.units import percent_to_fraction

#: Sane range of an APY (fraction per year): beyond +-1000 %/yr a DefiLlama APY is a glitch, not a yield.
MAX_ABS_APY = 10.0
#: Sane range of one pool's TVL (USD): more than all of DeFi holds.
MAX_TVL_USD = 1e12
#: Why a row is not used (None: usable); kept in the lake so the raw record stays whole.
FLAG = "flag"
HISTORY_COLUMNS = ["date", "pool", "tvl_usd", "apy", "apy_base", "apy_reward", "il7d", "apy_base7d", FLAG]
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
    frame[FLAG] = frame[FLAG].astype(object)
    return frame


def _timestamps(records: Sequence[Mapping[str, Any]]) -> pd.Series:
    """ISO timestamps -> UTC instants (NaT where a value is not a date)."""
    raw = pd.Series([r.get("timestamp") for r in records], dtype=object)
    text = raw.where(raw.map(lambda v: isinstance(v, str)), None)
    return pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")


def chart_problem(records: Sequence[Mapping[str, Any]]) -> str | None:
    """What makes a pool's ``/chart`` records unusable as a whole (None: nothing): the first record
    whose timestamp is not a date, or whose TVL is negative."""
    if not records:
        return None
    bad_time = np.flatnonzero(_timestamps(records).isna().to_numpy())
    if len(bad_time):
        i = int(bad_time[0])
        return f"record {i}: timestamp {records[i].get('timestamp')!r} is not an ISO date ({len(bad_time)} such record(s))"
    tvl = pd.to_numeric(
        pd.Series([r.get("tvlUsd") for r in records], dtype=object), errors="coerce"
    ).to_numpy(float)
    negative = np.flatnonzero(tvl < 0)
    if len(negative):
        i = int(negative[0])
        return f"record {i} ({records[i].get('timestamp')}): negative tvlUsd {float(tvl[i])!r} ({len(negative)} such record(s))"
    return None


def sanity_flags(
    frame: pd.DataFrame, max_abs_apy: float = MAX_ABS_APY, max_tvl_usd: float = MAX_TVL_USD
) -> pd.Series:
    """Per row: why its numbers are implausible (None: usable). Vectorized over the frame."""
    apy = frame["apy"].to_numpy(dtype="float64")
    tvl = frame["tvl_usd"].to_numpy(dtype="float64")
    flags = np.full(len(frame), None, dtype=object)
    checks = [
        (~np.isfinite(tvl), "tvl_usd not finite"),
        (np.isfinite(tvl) & (tvl > max_tvl_usd), f"tvl_usd above {max_tvl_usd:.0e}"),
        (~np.isfinite(apy), "apy not finite"),
        (np.isfinite(apy) & (np.abs(apy) > max_abs_apy), f"|apy| above {max_abs_apy:g}/yr"),
    ]
    for mask, reason in reversed(checks):  # the first matching reason wins
        flags[mask] = reason
    return pd.Series(flags, index=frame.index, dtype=object)


def usable_rows(history: pd.DataFrame) -> pd.DataFrame:
    """The rows research, the universe screen and the optimizer may use: not flagged implausible."""
    if FLAG not in history.columns or history.empty:
        return history
    return history[history[FLAG].isna().to_numpy()].reset_index(drop=True)


def charts_frame(charts: Mapping[str, Sequence[Mapping[str, Any]]]) -> pd.DataFrame:
    """Many pools' chart rows (raw dicts, the API's camelCase keys) as one history frame.

    Built column by column over all pools at once: per-pool DataFrames cost ~10 ms each.
    A day reported twice keeps its latest snapshot by timestamp; implausible values are flagged.
    Records must have passed :func:`chart_problem` (a non-date timestamp raises here).
    """
    pools = [pool for pool, rows in charts.items() for _ in rows]
    if not pools:
        return empty_history()
    records = [row for rows in charts.values() for row in rows]
    stamps = _timestamps(records)
    if stamps.isna().any():
        raise ValueError(
            f"{int(stamps.isna().sum())} chart record(s) without a valid timestamp (check chart_problem)"
        )
    frame = pd.DataFrame({"pool": pd.Series(pools, dtype=object), "_ts": stamps})
    frame["date"] = stamps.dt.tz_convert(None).dt.normalize().astype("datetime64[ns]")
    for source, target in _SOURCE_COLUMNS.items():
        if source == "timestamp":
            continue
        values = pd.Series([r.get(source) for r in records], dtype=object)
        frame[target] = pd.to_numeric(values, errors="coerce").astype("float64")
    frame[PERCENT_COLUMNS] = percent_to_fraction(frame[PERCENT_COLUMNS])
    frame[FLAG] = sanity_flags(frame)
    frame = frame.sort_values(["pool", "_ts"], kind="stable")
    return combine_histories([frame[HISTORY_COLUMNS]])


def combine_histories(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Stack pools' histories (each in time order), keep the last row of a duplicated (pool, date), sort."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_history()
    history = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    history = history.drop_duplicates(subset=["pool", "date"], keep="last")
    return history.sort_values(["date", "pool"], kind="stable").reset_index(drop=True)


def merge_kept_rows(
    new: pd.DataFrame,
    previous: pd.DataFrame | None,
    keys: Sequence[str],
    eligible: np.ndarray | pd.Series | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The completeness rule of every ingestion partition: ``new`` plus the ``previous`` rows whose
    key ``new`` lacks (a pool, coin or file that failed or came back shorter this run).

    ``keys``: the columns that identify a row (``["pool", "date"]``, ``["symbol", "interval",
    "open_time"]``); ``eligible``: which previous rows may be kept at all (e.g. pools still requested;
    default all). Vectorized (one MultiIndex membership test). Returns (merged frame, rows kept).
    Nothing good is ever replaced by less: what this run could not fetch stays as it was.
    """
    if previous is None or previous.empty:
        return new, new.iloc[0:0]
    keys = list(keys)
    mask = np.ones(len(previous), dtype=bool) if eligible is None else np.array(eligible, dtype=bool)
    if len(new):
        mask &= ~pd.MultiIndex.from_frame(previous[keys]).isin(pd.MultiIndex.from_frame(new[keys]))
    kept = previous[mask]
    if kept.empty:
        return new, kept
    merged = pd.concat([new, kept.reindex(columns=new.columns)], ignore_index=True) if len(new) else kept
    return merged.reset_index(drop=True), kept.reset_index(drop=True)


def carry_previous_derived(
    new: Mapping[str, pd.DataFrame], previous: Mapping[str, pd.DataFrame], kept: pd.DataFrame
) -> dict[str, pd.DataFrame]:
    """The completeness rule for what is derived from the history (universe rows, exclusions,
    rankings): a (date, pool) whose history row was kept from the previous run keeps that run's
    derived rows too, in every derived frame at once, so the partitions never disagree and a pool
    that failed is not re-screened on less data. Pairs the previous run never derived are computed.
    """
    if kept.empty:
        return dict(new)
    stale = pd.MultiIndex.from_frame(kept[["date", "pool"]].assign(date=pd.to_datetime(kept["date"])))
    covered = [
        pd.MultiIndex.from_frame(f[["date", "pool"]].assign(date=pd.to_datetime(f["date"])))
        for f in previous.values()
        if f is not None and len(f)
    ]
    if not covered:
        return dict(new)
    union = covered[0].append(covered[1:]).unique() if len(covered) > 1 else covered[0].unique()
    carry = union[union.isin(stale)]
    out = {}
    for name, frame in new.items():
        prev = previous.get(name)
        if prev is None or prev.empty or not len(carry):
            out[name] = frame
            continue
        mine = pd.MultiIndex.from_frame(frame[["date", "pool"]].assign(date=pd.to_datetime(frame["date"])))
        theirs = pd.MultiIndex.from_frame(prev[["date", "pool"]].assign(date=pd.to_datetime(prev["date"])))
        taken = prev[theirs.isin(carry)].reindex(columns=frame.columns)
        merged = pd.concat([frame[~mine.isin(carry)], taken], ignore_index=True)
        order = [c for c in ("vault", "date", "pool") if c in merged.columns]
        out[name] = merged.sort_values(order, kind="stable").reset_index(drop=True)
    return out


def restrict_to_days(history: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Rows with ``start <= date <= end`` (inclusive UTC days)."""
    mask = (history["date"] >= start) & (history["date"] <= end)
    return history.loc[mask].reset_index(drop=True)


def flagged_rows(history: pd.DataFrame) -> pd.DataFrame:
    """``[date, pool, apy, tvl_usd, flag]`` of the rows flagged implausible (kept, not used)."""
    if FLAG not in history.columns:
        return history.iloc[0:0][["date", "pool", "apy", "tvl_usd"]]
    return history.loc[history[FLAG].notna().to_numpy(), ["date", "pool", "apy", "tvl_usd", FLAG]]


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


def missing_pools_table(
    missing: pd.MultiIndex,
    failed: list[str],
    no_history: list[str],
    full: pd.DataFrame,
    snapshot_tvl: pd.Series | None = None,
) -> pd.DataFrame:
    """One line per pool lacking days: why (fetch failed, no history at all, days missing inside
    its lifetime), how many days, the first and last missing day, and its last reported TVL (the
    ``/pools`` snapshot's, ``snapshot_tvl``, for a pool without history); largest TVL first (the
    pools that matter most)."""
    frame = (
        missing.to_frame(index=False)
        if len(missing)
        else pd.DataFrame({"date": pd.Series(dtype="datetime64[ns]"), "pool": pd.Series(dtype=object)})
    )
    gaps = frame.groupby("pool")["date"].agg(missing_days="size", first_missing="min", last_missing="max")
    gaps["reason"] = "days missing inside its lifetime"
    others = pd.DataFrame(index=pd.Index(sorted(set(failed) | set(no_history)), name="pool"))
    others["reason"] = ["fetch failed" if p in set(failed) else "no history returned" for p in others.index]
    out = pd.concat([gaps, others[~others.index.isin(gaps.index)]]).reset_index()
    last_tvl = (
        full.sort_values("date").groupby("pool")["tvl_usd"].last() if len(full) else pd.Series(dtype=float)
    )
    if snapshot_tvl is not None:
        last_tvl = last_tvl.combine_first(snapshot_tvl)
    out["last_tvl_usd"] = out["pool"].map(last_tvl)
    out["missing_days"] = out["missing_days"].fillna(0).astype(int)
    cols = ["pool", "reason", "missing_days", "first_missing", "last_missing", "last_tvl_usd"]
    return out.sort_values(["last_tvl_usd", "missing_days"], ascending=False, na_position="last")[
        cols
    ].reset_index(drop=True)
