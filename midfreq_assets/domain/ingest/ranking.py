"""The ``top_pools`` ranking: which pools ranked among the best N by daily APY over a window.

As the original "top n ever" study did: every day, rank the eligible pools by that day's APY
(1 = highest); a pool is picked when its rank was <= ``top_n`` on at least ``min_days_in_top`` of
the ``window_days`` days of the window. Point in time: the ranking that feeds day t covers the
window ``[t - window_days, t - 1]`` only, so no day's allow-list uses its own or any later APY;
a day whose window is not fully covered by data has no ranking (its pools are left out, never
picked on a partial window). The universe screen (allow-list per day) and the ``top_pools``
asset (the picks as of a date) use the same functions, so they agree.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, PositiveInt, model_validator

from midfreq_assets.domain.config.base import StrictModel

#: Every exclusion reason of the ranking starts with this (the ``top_pools`` asset finds them by it).
RANKING_REASON_PREFIX = "top_pools:"


class TopPoolsConfig(StrictModel):
    """The ``top_pools:`` section of a vault: the ranking's parameters, and whether the universe uses it."""

    top_n: PositiveInt = Field(default=10, description="a pool is in the top on a day when its rank <= top_n")
    window_days: PositiveInt = Field(default=90, description="days of the window before the day it feeds")
    min_days_in_top: PositiveInt = Field(
        default=1, description="days in the top needed to be picked (1 = ever)"
    )
    column: Literal["apy", "apy_base"] = Field(
        default="apy", description="daily yield the pools are ranked on"
    )
    allow_list: bool = Field(
        default=False,
        description="true: on each day the universe keeps only the pools the ranking over the window "
        "before that day picked (from the pools passing every other rule)",
    )

    @model_validator(mode="after")
    def _days_fit_window(self) -> TopPoolsConfig:
        if self.min_days_in_top > self.window_days:
            raise ValueError(
                f"min_days_in_top ({self.min_days_in_top}) exceeds window_days ({self.window_days})"
            )
        return self

    def describe(self) -> str:
        return (
            f"rank <= {self.top_n} by daily {self.column} on >= {self.min_days_in_top} "
            f"of {self.window_days} days"
        )


def daily_ranks(values: pd.DataFrame, eligible: pd.DataFrame) -> pd.DataFrame:
    """Rank of each eligible pool among that day's eligible pools (dates x pools; 1 = highest
    value, ties share the better rank; NaN where not eligible or no value)."""
    v = values.where(eligible.reindex_like(values).eq(True) & values.notna())
    return v.rank(axis=1, ascending=False, method="min")


def days_in_top(ranks: pd.DataFrame, config: TopPoolsConfig) -> pd.DataFrame:
    """Days in the top N over the ``window_days`` days *before* each day (dates x pools, on a
    complete daily calendar); NaN where the window reaches before the first day of ``ranks``."""
    in_top = (ranks <= config.top_n).to_numpy(dtype=np.float64)
    w = config.window_days
    before = np.vstack([np.zeros((1, in_top.shape[1])), np.cumsum(in_top, axis=0)])  # before[k] = rows < k
    out = np.full(in_top.shape, np.nan)
    if len(in_top) > w:
        out[w:] = before[w:-1] - before[: len(in_top) - w]  # rows t-w .. t-1, all columns at once
    return pd.DataFrame(out, index=ranks.index, columns=ranks.columns)


@dataclass(frozen=True)
class DayGrid:
    """Rows (date, pool) <-> cells of a complete daily calendar x pools, by integer codes (a pivot
    and a MultiIndex look-up cost seconds on a 17,000-pool live snapshot; this costs milliseconds)."""

    days: pd.DatetimeIndex
    pools: pd.Index
    ti: np.ndarray
    ii: np.ndarray

    @classmethod
    def of(cls, dates: pd.Series, pools: pd.Series, until: pd.Timestamp | None = None) -> DayGrid:
        day = pd.to_datetime(dates).dt.normalize()
        last = day.max() if until is None else max(day.max(), until)
        days = pd.date_range(day.min(), last, freq="D")
        ii, uniq = pd.factorize(pools.astype(str), sort=True)
        ti = ((day - days[0]) // pd.Timedelta(days=1)).to_numpy(dtype=np.int64)
        return cls(days, pd.Index(uniq, name="pool"), ti, ii)

    def wide(self, values: np.ndarray | pd.Series, fill: float = np.nan) -> pd.DataFrame:
        arr = np.full((len(self.days), len(self.pools)), fill, dtype=np.float64)
        arr[self.ti, self.ii] = np.asarray(values, dtype=np.float64)
        return pd.DataFrame(arr, index=self.days.rename("date"), columns=self.pools)

    def gather(self, wide: pd.DataFrame) -> np.ndarray:
        return wide.to_numpy(dtype=np.float64)[self.ti, self.ii]


#: Columns of the ``pool_rankings`` asset (one row per vault, day and screened pool).
RANKING_COLUMNS = [
    "vault",
    "date",
    "pool",
    "symbol",
    "project",
    "chain",
    "value",
    "rank",
    "days_in_top",
    "picked",
    "complete",
    "window_start",
    "window_end",
]


def ranking_columns(rows: pd.DataFrame, eligible: np.ndarray, config: TopPoolsConfig) -> pd.DataFrame:
    """Per row of ``rows`` (``date, pool, <column>``, unique on (date, pool)), aligned to it:
    ``value`` (the ranked column), ``rank`` (among that day's eligible rows; it feeds the rankings
    of the following days), ``days_in_top`` over the window before the row's day, ``picked``,
    ``complete`` (that window fully covered by data), ``window_start``, ``window_end``.

    ``eligible``: the rows the ranking ranks (those passing every other rule of the universe).
    """
    frame = pd.DataFrame(
        {
            "date": pd.to_datetime(rows["date"]).dt.normalize().to_numpy(),
            "pool": rows["pool"].astype(str).to_numpy(),
            "value": pd.to_numeric(rows[config.column], errors="coerce").to_numpy(dtype=float),
            "eligible": np.asarray(eligible, dtype=bool),
        },
        index=rows.index,
    )
    if frame.empty:
        return frame.assign(
            rank=np.nan,
            days_in_top=np.nan,
            picked=False,
            complete=False,
            window_start=frame["date"],
            window_end=frame["date"],
        ).drop(columns="eligible")
    grid = DayGrid.of(frame["date"], frame["pool"])
    ranks = daily_ranks(grid.wide(frame["value"]), grid.wide(frame["eligible"], fill=0.0) > 0)
    n = grid.gather(days_in_top(ranks, config))
    complete = (frame["date"] >= grid.days[0] + pd.Timedelta(days=config.window_days)).to_numpy(dtype=bool)
    return pd.DataFrame(
        {
            "value": frame["value"],
            "rank": grid.gather(ranks),
            "days_in_top": n,
            "picked": complete & (np.nan_to_num(n, nan=0.0) >= config.min_days_in_top),
            "complete": complete,
            "window_start": frame["date"] - pd.Timedelta(days=config.window_days),
            "window_end": frame["date"] - pd.Timedelta(days=1),
        },
        index=rows.index,
    )


def window_of(day: pd.Timestamp | dt.date, config: TopPoolsConfig) -> tuple[dt.date, dt.date]:
    """First and last day of the window whose ranking feeds ``day``."""
    d = pd.Timestamp(day).normalize()
    return (d - pd.Timedelta(days=config.window_days)).date(), (d - pd.Timedelta(days=1)).date()


def ranking_reasons(ranking: pd.DataFrame, config: TopPoolsConfig, first_day: dt.date) -> np.ndarray:
    """Exclusion reason per row of :func:`ranking_columns` (None where picked), naming the window."""
    window = (
        ranking["window_start"].dt.strftime("%Y-%m-%d") + ".." + ranking["window_end"].dt.strftime("%Y-%m-%d")
    )
    outside = f"{RANKING_REASON_PREFIX} not picked ({config.describe()} " + window + ")"
    incomplete = (
        f"{RANKING_REASON_PREFIX} no complete {config.window_days}-day ranking window before this "
        f"day (data from {first_day})"
    )
    out = np.where(
        ranking["complete"].to_numpy(dtype=bool), outside.to_numpy(dtype=object), incomplete
    ).astype(object)
    out[ranking["picked"].to_numpy(dtype=bool)] = None
    return out


def ranking_table(rows: pd.DataFrame, config: TopPoolsConfig, as_of: pd.Timestamp | dt.date) -> pd.DataFrame:
    """The ranking that feeds day ``as_of``: one row per pool eligible in its window.

    ``rows``: ``date, pool, <column>`` of the eligible pool-days (plus optional ``project``,
    ``chain``, ``symbol``, ``tvl_usd``). Columns: ``rank`` (picked first, then by days in the
    top, best rank, mean value), ``pool``, ``picked``, ``days_in_top``, ``best_rank``,
    ``days_eligible``, ``mean_<column>``, attributes, ``window_start``, ``window_end``, ``as_of``.
    """
    as_of = pd.Timestamp(as_of).normalize()
    start, end = window_of(as_of, config)
    col = config.column
    frame = rows.assign(date=pd.to_datetime(rows["date"]).dt.normalize(), pool=rows["pool"].astype(str))
    frame = frame[frame["date"] < as_of]
    empty = pd.DataFrame(
        columns=[
            "rank",
            "pool",
            "picked",
            "days_in_top",
            "best_rank",
            "days_eligible",
            f"mean_{col}",
            "window_start",
            "window_end",
            "as_of",
        ]
    )
    if frame.empty or frame["date"].min() > pd.Timestamp(start):
        return empty  # no complete window before as_of: nothing is picked
    grid = DayGrid.of(frame["date"], frame["pool"], until=as_of)
    ranks = daily_ranks(
        grid.wide(pd.to_numeric(frame[col], errors="coerce")), grid.wide(np.ones(len(frame)), 0.0) > 0
    )
    counts = days_in_top(ranks, config).loc[as_of]
    window = ranks.loc[pd.Timestamp(start) : pd.Timestamp(end)]
    recent = frame[frame["date"] >= pd.Timestamp(start)]
    table = pd.DataFrame(
        {
            "days_in_top": counts,
            "best_rank": window.min(),
            "days_eligible": window.notna().sum(),
            f"mean_{col}": recent.groupby("pool")[col].mean(),
        }
    )
    table = table[table["days_eligible"] > 0].rename_axis("pool").reset_index()
    table["picked"] = table["days_in_top"] >= config.min_days_in_top
    last = recent.sort_values("date").drop_duplicates("pool", keep="last").set_index("pool")
    for attr in ("symbol", "project", "chain", "tvl_usd"):
        if attr in last:
            table[attr if attr != "tvl_usd" else "last_tvl_usd"] = table["pool"].map(last[attr])
    table = table.sort_values(
        ["picked", "days_in_top", "best_rank", f"mean_{col}"],
        ascending=[False, False, True, False],
        kind="stable",
    ).reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    table = table[
        ["rank", "pool", "picked", *[c for c in table.columns if c not in ("rank", "pool", "picked")]]
    ]
    return table.assign(
        days_in_top=table["days_in_top"].astype(int),
        window_start=pd.Timestamp(start),
        window_end=pd.Timestamp(end),
        as_of=as_of,
    )
