"""One run of Binance kline collection: which archive files to fetch for a range, and what they hold.

A range fetches one monthly file per whole month and daily files for the rest (a year of 1m bars
is 12 requests per symbol, not 365). A monthly file not published yet (404) is replaced by that
month's daily files. Files that fail (checksum, parse) are reported per file; gaps are counted,
never filled. The download itself is handed in (``download_many``), so this stays I/O-free.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd

from midfreq_assets.domain.ingest.archive_files import ArchiveFile
from midfreq_assets.domain.ingest.klines import (
    MAX_COMPRESSION_RATIO,
    MAX_CSV_BYTES,
    KlinesParseError,
    bar_gaps,
    combine_klines,
    parse_klines_zip,
    period_days,
    plan_archive_files,
)


class ArchiveBatchLike(Protocol):
    """Outcome per file of a download: verified bytes, missing (404) or failed (reason)."""

    ok: dict[ArchiveFile, bytes]
    missing: dict[ArchiveFile, str]
    failed: dict[ArchiveFile, str]


DownloadMany = Callable[[Iterable[ArchiveFile]], ArchiveBatchLike]


class BarSeries(Protocol):
    """What a klines-style collection fetches: a market, its symbols and bar intervals
    (:class:`BinanceConfig` for ``klines``, :class:`FuturesConfig` for ``premiumIndexKlines``)."""

    market: str
    symbols: list[str]

    @property
    def intervals(self) -> list[str]: ...


@dataclass
class KlinesCollection:
    """What one run fetched, and what it could not."""

    bars: pd.DataFrame
    planned: list[ArchiveFile]
    collected: list[ArchiveFile] = field(default_factory=list)
    missing: dict[ArchiveFile, str] = field(default_factory=dict)
    failed: dict[ArchiveFile, str] = field(default_factory=dict)
    monthly_replaced: list[ArchiveFile] = field(default_factory=list)
    duplicates_dropped: int = 0
    gaps: pd.DataFrame = field(default_factory=pd.DataFrame)


def _files(config: BarSeries, plan: list[tuple[str, str]], dataset: str) -> list[ArchiveFile]:
    return [
        ArchiveFile(config.market, dataset, symbol, interval, freq, period)  # type: ignore[arg-type]
        for symbol in config.symbols
        for interval in config.intervals
        for freq, period in plan
    ]


def _daily_of(file: ArchiveFile, first: dt.date, last: dt.date) -> list[ArchiveFile]:
    days = [d for d in period_days(file.freq, file.period) if first <= d <= last]
    return [
        ArchiveFile(file.market, file.dataset, file.symbol, file.interval, "daily", d.isoformat())
        for d in days
    ]


def fetch_klines_files(
    download_many: DownloadMany, config: BarSeries, first: dt.date, last: dt.date, dataset: str = "klines"
) -> tuple[list[ArchiveFile], ArchiveBatchLike, list[ArchiveFile]]:
    """Download the planned files; a missing monthly file is replaced by its daily files."""
    planned = _files(config, plan_archive_files(first, last), dataset)
    batch = download_many(planned)
    replaced = [f for f in batch.missing if f.freq == "monthly"]
    if replaced:
        daily = download_many(f for m in replaced for f in _daily_of(m, first, last))
        for monthly in replaced:
            del batch.missing[monthly]
        batch.ok.update(daily.ok)
        batch.missing.update(daily.missing)
        batch.failed.update(daily.failed)
    return planned, batch, replaced


def collect_klines(
    download_many: DownloadMany, config: BarSeries, first: dt.date, last: dt.date, dataset: str = "klines"
) -> KlinesCollection:
    """Fetch (``download_many``: verified zip bytes per file, or why not), parse and merge every
    configured (symbol, interval) for days ``first..last``. ``dataset``: ``klines``, or
    ``premiumIndexKlines`` (same CSV layout) of a futures market."""
    planned, batch, replaced = fetch_klines_files(download_many, config, first, last, dataset)
    failed = dict(batch.failed)
    frames: list[pd.DataFrame] = []
    collected: list[ArchiveFile] = []
    covered: dict[tuple[str, str], set[dt.date]] = defaultdict(set)
    # daily files first: where a monthly and a daily file both hold a bar, the daily one wins
    for file in sorted(batch.ok, key=lambda f: (f.freq != "daily", f)):
        try:
            frames.append(
                parse_klines_zip(
                    batch.ok[file],
                    source=file.zip_name,
                    symbol=file.symbol,
                    interval=str(file.interval),
                    max_bytes=getattr(config, "max_csv_bytes", MAX_CSV_BYTES),
                    max_ratio=getattr(config, "max_compression_ratio", MAX_COMPRESSION_RATIO),
                )
            )
        except KlinesParseError as exc:
            failed[file] = f"{type(exc).__name__}: {exc}"
            continue
        collected.append(file)
        covered[(file.symbol, str(file.interval))].update(
            d for d in period_days(file.freq, file.period) if first <= d <= last
        )
    bars, duplicates = combine_klines(frames, first, last)
    return KlinesCollection(
        bars=bars,
        planned=planned,
        collected=collected,
        missing=dict(batch.missing),
        failed=failed,
        monthly_replaced=replaced,
        duplicates_dropped=duplicates,
        gaps=bar_gaps(bars, covered),
    )


def file_table(problems: Mapping[ArchiveFile, str]) -> pd.DataFrame:
    """One row per file with a problem: symbol, interval, freq, period and the reason."""
    rows = [(f.symbol, f.interval, f.freq, f.period, reason) for f, reason in sorted(problems.items())]
    return pd.DataFrame(rows, columns=["symbol", "interval", "freq", "period", "reason"])


def bars_summary(bars: pd.DataFrame) -> pd.DataFrame:
    """Bars per (symbol, interval) with the first and last bar."""
    if bars.empty:
        return pd.DataFrame(columns=["symbol", "interval", "bars", "first_bar", "last_bar"])
    grouped = bars.groupby(["symbol", "interval"], sort=True)["open_time"]
    out = grouped.agg(bars="size", first_bar="min", last_bar="max").reset_index()
    out["first_bar"] = out["first_bar"].astype(str)
    out["last_bar"] = out["last_bar"].astype(str)
    return out
