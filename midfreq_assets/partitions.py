"""Partition definitions of the asset graph.

- daily (``YYYY-MM-DD``): what a person addresses by day: ingestion (DefiLlama, prices, Binance) and
  the vault's decision and live loop (rebalance_weights, vault_positions, trade_orders, executions);
- monthly (``YYYY-MM``, the current month included): research panels a person reads as ranges
  (adjusted yields, features, predictions, price research): a year is 12 partitions, not 365, and
  the nightly run rewrites the month so far;
- weekly (the Monday, ``YYYY-MM-DD``): model refits.
"""

from __future__ import annotations

import datetime as dt
import functools
import math

import pandas as pd
from dagster import (
    DailyPartitionsDefinition,
    MonthlyPartitionsDefinition,
    TimeWindow,
    TimeWindowPartitionMapping,
    WeeklyPartitionsDefinition,
)

from midfreq_assets.domain.config.project import Project


@functools.cache
def daily_from(start: dt.date) -> DailyPartitionsDefinition:
    """UTC days from ``start`` (``YYYY-MM-DD`` keys)."""
    return DailyPartitionsDefinition(start_date=start.isoformat(), timezone="UTC", fmt="%Y-%m-%d")


@functools.cache
def monthly_from(start: dt.date) -> MonthlyPartitionsDefinition:
    """UTC calendar months from the month of ``start`` (keys ``YYYY-MM-DD``, the month's first day)."""
    return MonthlyPartitionsDefinition(start_date=start.replace(day=1).isoformat(), timezone="UTC", fmt="%Y-%m-%d")


@functools.cache
def research_months(start: dt.date) -> MonthlyPartitionsDefinition:
    """Months from the month of ``start``, keys ``YYYY-MM`` (a daily key would name a day); the
    current month exists as soon as it starts (``end_offset=1``): the nightly run writes its days so far."""
    return MonthlyPartitionsDefinition(start_date=f"{start:%Y-%m}", timezone="UTC", fmt="%Y-%m",
                                       end_offset=1)


def month_key(day: dt.date) -> str:
    """The ``research_months`` key of the month holding ``day``."""
    return f"{day:%Y-%m}"


def daily_partitions(project: Project) -> DailyPartitionsDefinition:
    """The yield calendar: every daily asset of DefiLlama and the vaults (from the earliest vault start)."""
    return daily_from(project.earliest_start)


def binance_partitions(project: Project) -> DailyPartitionsDefinition:
    """The klines calendar (``configs/binance.yaml`` start_date)."""
    if project.binance is None:
        raise ValueError(f"{project.config_dir}: no binance.yaml, so no klines calendar")
    return daily_from(project.binance.start_date)


def weekly_partitions(start: dt.date) -> WeeklyPartitionsDefinition:
    """Mondays (UTC) from the first Monday on or after ``start``; the current week exists as soon
    as it starts (``end_offset=1``) so that today's predictions have this week's model."""
    first = start + dt.timedelta(days=(7 - start.weekday()) % 7)
    return WeeklyPartitionsDefinition(start_date=first.isoformat(), day_offset=1, timezone="UTC", fmt="%Y-%m-%d",
                                      end_offset=1)


def window_days(window: TimeWindow) -> tuple[dt.date, dt.date]:
    """First and last UTC day (inclusive) of a daily partition window."""
    first = window.start.date()
    last = (window.end - dt.timedelta(days=1)).date()
    return first, last


#: ``fitted_models`` reads this many weeks of daily partitions before ``as_of`` ("all history";
#: clipped to the first daily partition).
HISTORY_WEEKS = 520
#: weekly partition W -> every daily partition before W's first day
HISTORY_BEFORE_WEEK = TimeWindowPartitionMapping(start_offset=-HISTORY_WEEKS, end_offset=-1,
                                                 allow_nonexistent_upstream_partitions=True)
#: daily D -> the weekly partition containing D (its as_of, the Monday, is <= D)
WEEK_OF_DAY = TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True)
#: day D -> D-1 (a self-dependency: today's holdings start from yesterday's)
PREVIOUS_DAY = TimeWindowPartitionMapping(start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True)


def lookback(days: int) -> TimeWindowPartitionMapping:
    """Daily partition D -> D-days..D (days before the start of the calendar are skipped)."""
    return TimeWindowPartitionMapping(start_offset=-days, allow_nonexistent_upstream_partitions=True)


def months_back(days: int) -> TimeWindowPartitionMapping:
    """Monthly partition M -> the upstream partitions from ``days`` days before M's first day to M's
    end (the offset is in the downstream's months: ceil(days / 28) of them cover ``days``)."""
    return TimeWindowPartitionMapping(start_offset=-math.ceil(days / 28), allow_nonexistent_upstream_partitions=True)


def days_with_data(window: TimeWindow, dates: pd.Series, start: dt.date | None = None) -> pd.DatetimeIndex:
    """The days of a (monthly) partition window that have data so far: from the window's first day (or
    ``start`` when later) to the last date of ``dates`` inside the window (none: empty)."""
    first, last = window_days(window)
    if start is not None:
        first = max(first, start)
    inside = pd.to_datetime(dates)
    inside = inside[(inside >= pd.Timestamp(first)) & (inside <= pd.Timestamp(last))]
    if inside.empty:
        return pd.DatetimeIndex([], name="date")
    return pd.date_range(first, inside.max().normalize(), freq="D", name="date")
