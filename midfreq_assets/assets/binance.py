"""Binance archive ingestion: ``binance_klines``, one row per (symbol, interval, bar), daily partitions.

A single-run backfill fetches one monthly file per whole month in its range and daily files for
the rest (a year of 1m bars is 12 requests per symbol, not 365). A monthly file not published
yet (404) is replaced by that month's daily files. A missing daily file (today's, a delisted
symbol) is reported per symbol and day; a file failing its checksum or parse is reported too and
the other symbols are still collected. Only when nothing at all was collected does the run fail,
so an empty partition is never written silently. Gaps are counted, never filled.
"""


import datetime as dt
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    Failure,
    Output,
    asset,
    asset_check,
)

from midfreq_assets.domain.ingest.binance_config import BinanceConfig, load_binance_config
from midfreq_assets.domain.ingest.klines import (
    KlinesParseError,
    bar_gaps,
    combine_klines,
    duplicate_bars,
    parse_klines_zip,
    period_days,
    plan_archive_files,
)
from midfreq_assets.metadata import listing, markdown_table
from midfreq_resources.clients.binance_archive import ArchiveBatch, ArchiveFile, BinanceArchiveClient

RESOURCE_KEY = "binance_archive"


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


def _files(config: BinanceConfig, plan: list[tuple[str, str]]) -> list[ArchiveFile]:
    return [
        ArchiveFile(config.market, "klines", symbol, interval, freq, period)  # type: ignore[arg-type]
        for symbol in config.symbols
        for interval in config.intervals
        for freq, period in plan
    ]


def _daily_of(file: ArchiveFile, first: dt.date, last: dt.date) -> list[ArchiveFile]:
    days = [d for d in period_days(file.freq, file.period) if first <= d <= last]
    return [ArchiveFile(file.market, file.dataset, file.symbol, file.interval, "daily", d.isoformat()) for d in days]


def fetch_klines_files(client: BinanceArchiveClient, config: BinanceConfig, first: dt.date, last: dt.date
                       ) -> tuple[list[ArchiveFile], ArchiveBatch, list[ArchiveFile]]:
    """Download the planned files; a missing monthly file is replaced by its daily files."""
    planned = _files(config, plan_archive_files(first, last))
    batch = client.download_many(planned)
    replaced = [f for f in batch.missing if f.freq == "monthly"]
    if replaced:
        daily = client.download_many(f for m in replaced for f in _daily_of(m, first, last))
        for monthly in replaced:
            del batch.missing[monthly]
        batch.ok.update(daily.ok)
        batch.missing.update(daily.missing)
        batch.failed.update(daily.failed)
    return planned, batch, replaced


def collect_klines(client: BinanceArchiveClient, config: BinanceConfig, first: dt.date, last: dt.date
                   ) -> KlinesCollection:
    """Fetch, verify, parse and merge every configured (symbol, interval) for days ``first..last``."""
    planned, batch, replaced = fetch_klines_files(client, config, first, last)
    failed = dict(batch.failed)
    frames: list[pd.DataFrame] = []
    collected: list[ArchiveFile] = []
    covered: dict[tuple[str, str], set[dt.date]] = defaultdict(set)
    # daily files first: where a monthly and a daily file both hold a bar, the daily one wins
    for file in sorted(batch.ok, key=lambda f: (f.freq != "daily", f)):
        try:
            frames.append(parse_klines_zip(batch.ok[file], source=file.zip_name, symbol=file.symbol,
                                           interval=str(file.interval)))
        except KlinesParseError as exc:
            failed[file] = f"{type(exc).__name__}: {exc}"
            continue
        collected.append(file)
        covered[(file.symbol, str(file.interval))].update(
            d for d in period_days(file.freq, file.period) if first <= d <= last)
    bars, duplicates = combine_klines(frames, first, last)
    return KlinesCollection(
        bars=bars, planned=planned, collected=collected, missing=dict(batch.missing), failed=failed,
        monthly_replaced=replaced, duplicates_dropped=duplicates, gaps=bar_gaps(bars, covered),
    )


def _file_table(problems: Mapping[ArchiveFile, str]) -> pd.DataFrame:
    rows = [(f.symbol, f.interval, f.freq, f.period, reason) for f, reason in sorted(problems.items())]
    return pd.DataFrame(rows, columns=["symbol", "interval", "freq", "period", "reason"])


def _summary(bars: pd.DataFrame) -> pd.DataFrame:
    if bars.empty:
        return pd.DataFrame(columns=["symbol", "interval", "bars", "first_bar", "last_bar"])
    grouped = bars.groupby(["symbol", "interval"], sort=True)["open_time"]
    out = grouped.agg(bars="size", first_bar="min", last_bar="max").reset_index()
    out["first_bar"] = out["first_bar"].astype(str)
    out["last_bar"] = out["last_bar"].astype(str)
    return out


def collection_metadata(result: KlinesCollection, first: dt.date, last: dt.date) -> dict[str, object]:
    return {
        "window": f"{first}..{last}",
        "files_planned": len(result.planned),
        "files_collected": len(result.collected),
        "files_missing": len(result.missing),
        "files_failed": len(result.failed),
        "monthly_replaced_by_daily": len(result.monthly_replaced),
        "missing_files": markdown_table(_file_table(result.missing), max_rows=50),
        "failed_files": markdown_table(_file_table(result.failed), max_rows=50),
        "duplicate_bars_dropped": result.duplicates_dropped,
        "gap_count": int(result.gaps["missing"].sum()) if len(result.gaps) else 0,
        "gap_days": len(result.gaps),
        "gaps": markdown_table(result.gaps.astype({"date": str}) if len(result.gaps) else result.gaps),
        "bars_by_symbol": markdown_table(_summary(result.bars), max_rows=50),
        "symbols_collected": listing(sorted(result.bars["symbol"].unique().tolist())),
    }


def _window(context: AssetExecutionContext) -> tuple[dt.date, dt.date]:
    window = context.partition_time_window
    return window.start.date(), (window.end - dt.timedelta(days=1)).date()


def build_binance_assets(
    config: BinanceConfig,
) -> tuple[AssetsDefinition, list[AssetChecksDefinition], DailyPartitionsDefinition]:
    """``binance_klines``, its checks and its partitions for one configuration (tests pass their own)."""
    partitions = DailyPartitionsDefinition(start_date=config.start_date.isoformat(), timezone="UTC", fmt="%Y-%m-%d")

    @asset(
        name="binance_klines",
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="parquet_io_manager",
        group_name="binance",
        kinds={"python", "parquet"},
        description="Binance archive klines, one row per (symbol, interval, bar); `date` is the UTC day of "
        f"the bar's open. {config.market}: {', '.join(config.symbols)} at {', '.join(config.intervals)}. "
        "Checksum-verified; missing/failed files and gaps are reported, never filled.",
    )
    def binance_klines(context: AssetExecutionContext, binance_archive: BinanceArchiveClient) -> Output[pd.DataFrame]:
        first, last = _window(context)
        result = collect_klines(binance_archive, config, first, last)
        metadata = collection_metadata(result, first, last)
        for file, reason in sorted(result.failed.items()):
            context.log.error(f"binance {file.label}: {reason}")
        if result.missing:
            context.log.warning(f"binance: {len(result.missing)} file(s) not in the archive (404): "
                                f"{listing([f.label for f in sorted(result.missing)], 10)}")
        if result.bars.empty:
            raise Failure(
                f"binance_klines {first}..{last}: nothing collected ({len(result.missing)} file(s) missing, "
                f"{len(result.failed)} failed of {len(result.planned)} planned); not writing an empty partition",
                metadata=metadata,
            )
        return Output(result.bars, metadata=metadata)

    @asset_check(asset=binance_klines, name="no_duplicate_bars", partitions_def=partitions, blocking=True,
                 description="one row per (symbol, interval, open_time)")
    def no_duplicate_bars(binance_klines: pd.DataFrame) -> AssetCheckResult:
        dups = duplicate_bars(binance_klines)
        shown = dups[["symbol", "interval", "open_time"]].astype(str).head(20)
        return AssetCheckResult(passed=dups.empty, metadata={"duplicate_rows": len(dups),
                                                             "examples": markdown_table(shown)})

    @asset_check(asset=binance_klines, name="bar_gaps", partitions_def=partitions,
                 description="days holding fewer bars than the interval implies (reported, never filled)")
    def bar_gaps_check(binance_klines: pd.DataFrame) -> AssetCheckResult:
        gaps = bar_gaps(binance_klines)
        return AssetCheckResult(
            passed=gaps.empty,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "gap_count": int(gaps["missing"].sum()) if len(gaps) else 0,
                "gap_days": len(gaps),
                "gaps": markdown_table(gaps.astype({"date": str}) if len(gaps) else gaps),
            },
        )

    return binance_klines, [no_duplicate_bars, bar_gaps_check], partitions


binance_config = load_binance_config()
binance_klines, binance_checks, binance_partitions = build_binance_assets(binance_config)
binance_assets = [binance_klines]

__all__ = [
    "RESOURCE_KEY",
    "binance_assets",
    "binance_checks",
    "binance_klines",
    "binance_partitions",
    "build_binance_assets",
    "collect_klines",
]
