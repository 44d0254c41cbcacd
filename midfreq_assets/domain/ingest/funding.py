"""Binance futures funding rates (``fundingRate`` archive files): plan, collect, merge, gaps.

The archive publishes funding rates in monthly files only: a range fetches one file per month
it touches (a month not over yet answers 404 and is reported missing). Each row is one funding
event (``calc_time``, ``funding_interval_hours``, ``funding_rate`` as a fraction per interval);
``date`` is its UTC day. A day a fetched file covers should hold ``24 / funding_interval_hours``
events; fewer is a gap, reported and never filled. I/O-free: the download is handed in.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from midfreq_assets.domain.ingest.archive_files import ArchiveFile
from midfreq_assets.domain.ingest.binance_config import FuturesConfig
from midfreq_assets.domain.ingest.klines import KlinesParseError, parse_funding_rate_zip, period_days
from midfreq_assets.domain.ingest.klines_collection import DownloadMany

#: ``month`` (``YYYY-MM-01``) is the monthly partition a row belongs to.
FUNDING_COLUMNS = ["date", "month", "symbol", "calc_time", "funding_interval_hours", "funding_rate"]
FUNDING_KEY = ["symbol", "calc_time"]
HOURS_PER_DAY = 24


@dataclass
class FundingCollection:
    """What one run fetched, and what it could not."""

    rates: pd.DataFrame
    planned: list[ArchiveFile]
    collected: list[ArchiveFile] = field(default_factory=list)
    missing: dict[ArchiveFile, str] = field(default_factory=dict)
    failed: dict[ArchiveFile, str] = field(default_factory=dict)
    duplicates_dropped: int = 0
    gaps: pd.DataFrame = field(default_factory=pd.DataFrame)


def months_between(first: dt.date, last: dt.date) -> list[str]:
    """``YYYY-MM`` of every calendar month touching ``first..last``."""
    if last < first:
        raise ValueError(f"months_between: {last} is before {first}")
    months, day = [], first.replace(day=1)
    while day <= last:
        months.append(day.strftime("%Y-%m"))
        day = (day + dt.timedelta(days=32)).replace(day=1)
    return months


def funding_files(config: FuturesConfig, first: dt.date, last: dt.date) -> list[ArchiveFile]:
    return [
        ArchiveFile(config.market, "fundingRate", symbol, None, "monthly", month)
        for symbol in config.symbols
        for month in months_between(first, last)
    ]


def empty_funding_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "date": pd.Series(dtype="datetime64[ns]"),
            "month": pd.Series(dtype="str"),
            "symbol": pd.Series(dtype="str"),
            "calc_time": pd.Series(dtype="datetime64[ns, UTC]"),
            "funding_interval_hours": pd.Series(dtype="int64"),
            "funding_rate": pd.Series(dtype="float64"),
        }
    )


def combine_funding(frames: list[pd.DataFrame], first: dt.date, last: dt.date) -> tuple[pd.DataFrame, int]:
    """Parsed files -> events of the days ``first..last``, one per (symbol, calc_time), sorted."""
    parts = [f for f in frames if len(f)]
    if not parts:
        return empty_funding_frame(), 0
    df = pd.concat(parts, ignore_index=True)
    df = df[(df["date"] >= pd.Timestamp(first)) & (df["date"] <= pd.Timestamp(last))]
    before = len(df)
    df = df.drop_duplicates(FUNDING_KEY, keep="first").sort_values(FUNDING_KEY, kind="stable")
    df = df.assign(month=df["date"].dt.strftime("%Y-%m-01"))
    return df[FUNDING_COLUMNS].reset_index(drop=True), before - len(df)


def duplicate_funding(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose (symbol, calc_time) occurs more than once."""
    return df[df.duplicated(FUNDING_KEY, keep=False)]


def funding_gaps(df: pd.DataFrame, covered: dict[str, set[dt.date]] | None = None) -> pd.DataFrame:
    """Days with fewer funding events than the interval implies: ``symbol, date, expected, events, missing``.

    ``covered``: per symbol, the days a fetched file covered (so a day without any event counts);
    without it only days present in ``df``. The interval is the symbol's most common
    ``funding_interval_hours`` (8 on most contracts; some have 4 or 1)."""
    counts = df.groupby(["symbol", "date"]).size() if len(df) else pd.Series(dtype="int64")
    interval = (
        df.groupby("symbol")["funding_interval_hours"].agg(lambda s: s.mode().iloc[0]) if len(df) else {}
    )
    keys = (
        [(s, pd.Timestamp(d)) for s, days in covered.items() for d in days]
        if covered is not None
        else list(counts.index)
    )
    rows = []
    for symbol, day in keys:
        hours = int(interval.get(symbol, 0)) if len(df) else 0
        if hours <= 0 or HOURS_PER_DAY % hours:
            continue
        expected = HOURS_PER_DAY // hours
        events = int(counts.get((symbol, day), 0))
        if events < expected:
            rows.append((symbol, day, expected, events, expected - events))
    gaps = pd.DataFrame(rows, columns=["symbol", "date", "expected", "events", "missing"])
    return gaps.sort_values(["symbol", "date"]).reset_index(drop=True)


def collect_funding(
    download_many: DownloadMany, config: FuturesConfig, first: dt.date, last: dt.date
) -> FundingCollection:
    """Fetch (verified zip bytes per file, or why not), parse and merge the funding rates of every
    configured symbol for days ``first..last``; a file failing its parse is reported, the others kept."""
    planned = funding_files(config, first, last)
    batch = download_many(planned)
    failed = dict(batch.failed)
    frames, collected = [], []
    covered: dict[str, set[dt.date]] = defaultdict(set)
    for file in sorted(batch.ok):
        try:
            frames.append(parse_funding_rate_zip(batch.ok[file], source=file.zip_name, symbol=file.symbol))
        except KlinesParseError as exc:
            failed[file] = f"{type(exc).__name__}: {exc}"
            continue
        rates = frames[-1]["funding_rate"].to_numpy()
        if len(rates) and not np.isfinite(rates).all():
            failed[file] = f"KlinesParseError: {file.zip_name}: non-finite funding_rate"
            frames.pop()
            continue
        collected.append(file)
        covered[file.symbol].update(d for d in period_days("monthly", file.period) if first <= d <= last)
    rates, duplicates = combine_funding(frames, first, last)
    return FundingCollection(
        rates=rates,
        planned=planned,
        collected=collected,
        missing=dict(batch.missing),
        failed=failed,
        duplicates_dropped=duplicates,
        gaps=funding_gaps(rates, covered),
    )
