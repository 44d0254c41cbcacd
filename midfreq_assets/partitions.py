"""Partition definitions of the asset graph.

- daily (``YYYY-MM-DD``): what a person addresses by day: ingestion (DefiLlama, prices, Binance) and
  the vault's decision and live loop (rebalance_weights, vault_positions, trade_orders, executions);
- monthly (``YYYY-MM``, the current month included): research panels a person reads as ranges
  (adjusted yields, features, predictions, price research): a year is 12 partitions, not 365, and
  the nightly run rewrites the month so far;
- weekly (the Monday, ``YYYY-MM-DD``): model refits.

Every calendar ends at the data: live, at yesterday (today's daily partition exists once the day is
over; the month and the week under way exist, for the nightly run to write); on a lake filled by
replaying a recorded corpus (``replayed_corpus.json``, written by ``midfreq pipeline --corpus``), at
the corpus's last complete day, so that "missing" in the UI means missing.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
import math
from collections.abc import Iterator

import pandas as pd
from dagster import (
    DailyPartitionsDefinition,
    HourlyPartitionsDefinition,
    MonthlyPartitionsDefinition,
    TimeWindow,
    TimeWindowPartitionMapping,
    WeeklyPartitionsDefinition,
)

from midfreq_assets.domain.config.project import Project
from midfreq_resources.io.replayed_corpus import DataEnd, read_data_end
from midfreq_resources.settings import DATA_LAKE_ENV, DEFAULT_DATA_LAKE, env_or

_CHOSEN_END: contextvars.ContextVar[tuple[DataEnd | None] | None] = contextvars.ContextVar(
    "midfreq_data_end", default=None
)


@contextlib.contextmanager
def replaying(end: DataEnd | None) -> Iterator[None]:
    """Build definitions whose calendars end at ``end`` (``midfreq pipeline --corpus``; None: live)
    whatever the configured lake's marker says."""
    token = _CHOSEN_END.set((end,))
    try:
        yield
    finally:
        _CHOSEN_END.reset(token)


@functools.cache
def _lake_data_end(lake: str) -> DataEnd | None:
    return read_data_end(lake)


def data_end() -> DataEnd | None:
    """Where the calendars end: the chosen corpus end (:func:`replaying`), else the marker of the lake
    (``$MIDFREQ_DATA_LAKE`` or ``data_lake/``), else None (live: yesterday)."""
    chosen = _CHOSEN_END.get()
    if chosen is not None:
        return chosen[0]
    return _lake_data_end(env_or(DATA_LAKE_ENV, DEFAULT_DATA_LAKE))


def yields_last_day() -> dt.date | None:
    """The last day of the yield calendar (DefiLlama, the vaults' decisions and research); None: yesterday."""
    end = data_end()
    return end.yields if end is not None else None


def klines_last_day() -> dt.date | None:
    """The last day of the klines calendar (a replayed corpus without klines: its last yield day)."""
    end = data_end()
    return (end.klines or end.yields) if end is not None else None


def _end_date(start: dt.date, last: dt.date | None, window_end: dt.date) -> str | None:
    """Dagster's exclusive ``end_date`` of a calendar whose last partition is the one holding ``last``
    (``window_end``: that partition's end); never before the first partition."""
    return None if last is None else max(window_end, start + dt.timedelta(days=1)).isoformat()


def _next_month(day: dt.date) -> dt.date:
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


@functools.cache
def daily_from(start: dt.date, last: dt.date | None = None) -> DailyPartitionsDefinition:
    """UTC days from ``start`` (``YYYY-MM-DD`` keys) to ``last`` (None: yesterday)."""
    end = _end_date(start, last, last + dt.timedelta(days=1)) if last else None
    return DailyPartitionsDefinition(
        start_date=start.isoformat(), end_date=end, timezone="UTC", fmt="%Y-%m-%d"
    )


@functools.cache
def hourly_from(start: dt.date, last: dt.date | None = None) -> HourlyPartitionsDefinition:
    """UTC hours from ``start`` to the end of ``last`` (None: the last complete hour)."""
    end = _end_date(start, last, last + dt.timedelta(days=1)) if last else None
    return HourlyPartitionsDefinition(
        start_date=f"{start.isoformat()}-00:00", end_date=end and f"{end}-00:00", timezone="UTC"
    )


@functools.cache
def monthly_from(start: dt.date, last: dt.date | None = None) -> MonthlyPartitionsDefinition:
    """UTC calendar months from the month of ``start`` (keys ``YYYY-MM-DD``, the month's first day) to
    the last complete one (a replayed corpus: the month holding ``last``)."""
    first = start.replace(day=1)
    end = _end_date(first, last, _next_month(last)) if last else None
    return MonthlyPartitionsDefinition(
        start_date=first.isoformat(), end_date=end, timezone="UTC", fmt="%Y-%m-%d"
    )


@functools.cache
def research_months(start: dt.date, last: dt.date | None = None) -> MonthlyPartitionsDefinition:
    """Months from the month of ``start``, keys ``YYYY-MM`` (a daily key would name a day); the
    current month exists as soon as it starts (``end_offset=1``): the nightly run writes its days so far.
    With ``last`` (a replayed corpus), the months to the one holding ``last``."""
    first = start.replace(day=1)
    end = _end_date(first, last, _next_month(last)) if last else None
    return MonthlyPartitionsDefinition(
        start_date=f"{start:%Y-%m}", end_date=end and end[:7], timezone="UTC", fmt="%Y-%m", end_offset=1
    )


def month_key(day: dt.date) -> str:
    """The ``research_months`` key of the month holding ``day``."""
    return f"{day:%Y-%m}"


def daily_partitions(project: Project) -> DailyPartitionsDefinition:
    """The yield calendar: every daily asset of DefiLlama and the vaults (from the earliest vault start)."""
    return daily_from(project.earliest_start, yields_last_day())


def binance_partitions(project: Project) -> DailyPartitionsDefinition:
    """The klines calendar (``configs/binance.yaml`` start_date)."""
    if project.binance is None:
        raise ValueError(f"{project.config_dir}: no binance.yaml, so no klines calendar")
    return daily_from(project.binance.start_date, klines_last_day())


@functools.cache
def weekly_partitions(start: dt.date, last: dt.date | None = None) -> WeeklyPartitionsDefinition:
    """Mondays (UTC) from the first Monday on or after ``start``; the current week exists as soon
    as it starts (``end_offset=1``) so that today's predictions have this week's model. With ``last``
    (a replayed corpus), the weeks to the one holding ``last``."""
    first = start + dt.timedelta(days=(7 - start.weekday()) % 7)
    end = _end_date(first, last, last + dt.timedelta(days=7 - last.weekday())) if last else None
    return WeeklyPartitionsDefinition(
        start_date=first.isoformat(), end_date=end, day_offset=1, timezone="UTC", fmt="%Y-%m-%d", end_offset=1
    )


def window_days(window: TimeWindow) -> tuple[dt.date, dt.date]:
    """First and last UTC day (inclusive) of a daily partition window."""
    first = window.start.date()
    last = (window.end - dt.timedelta(days=1)).date()
    return first, last


#: ``fitted_models`` reads this many weeks of daily partitions before ``as_of`` ("all history";
#: clipped to the first daily partition).
HISTORY_WEEKS = 520
#: weekly partition W -> every daily partition before W's first day
HISTORY_BEFORE_WEEK = TimeWindowPartitionMapping(
    start_offset=-HISTORY_WEEKS, end_offset=-1, allow_nonexistent_upstream_partitions=True
)
#: daily D -> the weekly partition containing D (its as_of, the Monday, is <= D)
WEEK_OF_DAY = TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True)
#: day D -> D-1 (a self-dependency: today's holdings start from yesterday's)
PREVIOUS_DAY = TimeWindowPartitionMapping(
    start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
)


def lookback(days: int) -> TimeWindowPartitionMapping:
    """Daily partition D -> D-days..D (days before the start of the calendar are skipped)."""
    return TimeWindowPartitionMapping(start_offset=-days, allow_nonexistent_upstream_partitions=True)


def months_back(days: int) -> TimeWindowPartitionMapping:
    """Monthly partition M -> the upstream partitions from ``days`` days before M's first day to M's
    end (the offset is in the downstream's months: ceil(days / 28) of them cover ``days``)."""
    return TimeWindowPartitionMapping(
        start_offset=-math.ceil(days / 28), allow_nonexistent_upstream_partitions=True
    )


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
