"""``binance_klines``: Binance archive klines, one row per (symbol, interval, bar), daily partitions.

What a range fetches and how files become bars: ``domain.ingest.klines_collection``. A file failing
its checksum or parse is reported and the other symbols are still collected. The ingestion
completeness rule (docs/RUNBOOK.md "Completeness", as for pool_history): every bar the lake holds
that this run did not deliver (its file failed, 404'd, or came back shorter) is kept, and the
blocking ``requested_files_fetched`` check fails naming the files; when nothing at all was collected
the run fails and writes nothing, so an empty partition never replaces bars.
"""

import datetime as dt

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    Definitions,
    Failure,
    Output,
    asset,
    asset_check,
    definitions,
)

from midfreq_assets.concurrency import KLINES_POOL
from midfreq_assets.domain.ingest.binance_config import BinanceConfig
from midfreq_assets.domain.ingest.funding import FundingCollection
from midfreq_assets.domain.ingest.klines import BAR_KEY, KLINES_COLUMNS, bar_gaps, duplicate_bars
from midfreq_assets.domain.ingest.klines_collection import (
    KlinesCollection,
    bars_summary,
    collect_klines,
    file_table,
)
from midfreq_assets.domain.ingest.pool_history import merge_kept_rows
from midfreq_assets.metadata import listing, markdown_table, partition_metadata
from midfreq_assets.partitions import daily_from, klines_last_day, window_days
from midfreq_assets.previews import schema_metadata
from midfreq_assets.project import current_project
from midfreq_resources.io.parquet_io_manager import REQUIRED_COLUMNS


def files_metadata(
    result: KlinesCollection | FundingCollection, first: dt.date, last: dt.date
) -> dict[str, object]:
    """What an archive collection planned, got, missed (404) and failed, and its gaps."""
    gaps = result.gaps
    return {
        "window": f"{first}..{last}",
        "files_planned": len(result.planned),
        "files_collected": len(result.collected),
        "files_missing": len(result.missing),
        "files_failed": len(result.failed),
        "missing_files": markdown_table(file_table(result.missing), max_rows=50),
        "failed_files": markdown_table(file_table(result.failed), max_rows=50),
        "gap_count": int(gaps["missing"].sum()) if len(gaps) else 0,
        "gap_days": len(gaps),
        "gaps": markdown_table(gaps.astype({"date": str}) if len(gaps) else gaps),
    }


def bar_summary(part: pd.DataFrame, _key: str | None) -> dict[str, object]:
    """A day's own bars: how many, of which symbols."""
    return {"dagster/row_count": len(part), "symbols": int(part["symbol"].nunique()) if len(part) else 0}


def collection_metadata(result: KlinesCollection, first: dt.date, last: dt.date) -> dict[str, object]:
    return {
        **files_metadata(result, first, last),
        "monthly_replaced_by_daily": len(result.monthly_replaced),
        "duplicate_bars_dropped": result.duplicates_dropped,
        "bars_by_symbol": markdown_table(bars_summary(result.bars), max_rows=50),
        "symbols_collected": listing(sorted(result.bars["symbol"].unique().tolist())),
    }


def build_binance_assets(
    config: BinanceConfig,
) -> tuple[AssetsDefinition, list[AssetChecksDefinition], DailyPartitionsDefinition]:
    """``binance_klines``, its checks and its partitions for one configuration (tests pass their own)."""
    partitions = daily_from(config.start_date, klines_last_day())

    @asset(
        name="binance_klines",
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="parquet_io_manager",
        metadata={REQUIRED_COLUMNS: list(KLINES_COLUMNS), **schema_metadata("binance_klines")},
        pool=KLINES_POOL,
        required_resource_keys={"binance_archive", "parquet_io_manager"},
        check_specs=[
            AssetCheckSpec(
                "requested_files_fetched",
                asset="binance_klines",
                blocking=True,
                description="every planned archive file was fetched and verified, and no bar "
                "the lake held went missing; failed files keep their previous bars and "
                "fail this check, naming them",
            )
        ],
        group_name="binance",
        kinds={"python", "parquet"},
        description="Binance archive klines, one row per (symbol, interval, bar); `date` is the UTC day of "
        f"the bar's open. {config.market}: {', '.join(config.symbols)} at {', '.join(config.intervals)}. "
        "Checksum-verified; missing/failed files and gaps are reported, never filled.",
    )
    def binance_klines(context: AssetExecutionContext):
        first, last = window_days(context.partition_time_window)
        result = collect_klines(context.resources.binance_archive.download_many, config, first, last)
        metadata = collection_metadata(result, first, last)
        for file, reason in sorted(result.failed.items()):
            context.log.error(f"binance {file.label}: {reason}")
        if result.missing:
            context.log.warning(
                f"binance: {len(result.missing)} file(s) not in the archive (404): "
                f"{listing([f.label for f in sorted(result.missing)], 10)}"
            )
        if result.bars.empty:
            raise Failure(
                f"binance_klines {first}..{last}: nothing collected ({len(result.missing)} file(s) missing, "
                f"{len(result.failed)} failed of {len(result.planned)} planned); not writing an empty partition",
                metadata=metadata,
            )
        frames, unreadable = context.resources.parquet_io_manager.read_existing(
            ["binance_klines"], [d.strftime("%Y-%m-%d") for d in pd.date_range(first, last, freq="D")]
        )
        for path, why in unreadable.items():
            context.log.warning(f"binance_klines: previous partition {path} is unreadable, replaced: {why}")
        previous = pd.concat(frames.values(), ignore_index=True) if frames else result.bars.iloc[0:0]
        configured = previous["symbol"].isin(config.symbols) & previous["interval"].isin(config.intervals)
        bars, kept = merge_kept_rows(result.bars, previous, list(BAR_KEY), configured)
        bars = bars.sort_values(list(BAR_KEY), kind="stable").reset_index(drop=True)
        dups = duplicate_bars(bars)
        if len(dups):
            raise Failure(
                f"binance_klines {first}..{last}: refusing to write {len(dups)} duplicated bar rows"
            )
        short = file_table({}) if kept.empty else bars_summary(kept)
        yield Output(
            bars,
            metadata=partition_metadata(
                context,
                bars,
                bar_summary,
                {**metadata, "bars_kept_from_previous_run": len(kept), "kept_bars": markdown_table(short)},
            ),
        )
        yield AssetCheckResult(
            check_name="requested_files_fetched",
            passed=not result.failed and kept.empty,
            metadata={
                "files_failed": len(result.failed),
                "failed_files": markdown_table(file_table(result.failed), max_rows=50),
                "bars_kept_from_previous_run": len(kept),
                "kept_bars": markdown_table(short),
            },
        )

    return binance_klines, build_bar_checks(binance_klines, partitions), partitions


def build_bar_checks(
    bars_asset: AssetsDefinition, partitions: DailyPartitionsDefinition
) -> list[AssetChecksDefinition]:
    """``no_duplicate_bars`` (blocking) and ``bar_gaps`` (warning) of an asset of bars
    (``binance_klines``, ``binance_premium_index_klines``)."""

    @asset_check(
        asset=bars_asset,
        name="no_duplicate_bars",
        partitions_def=partitions,
        blocking=True,
        description="one row per (symbol, interval, open_time)",
    )
    def no_duplicate_bars(bars: pd.DataFrame) -> AssetCheckResult:
        dups = duplicate_bars(bars)
        shown = dups[["symbol", "interval", "open_time"]].astype(str).head(20)
        return AssetCheckResult(
            passed=dups.empty, metadata={"duplicate_rows": len(dups), "examples": markdown_table(shown)}
        )

    @asset_check(
        asset=bars_asset,
        name="bar_gaps",
        partitions_def=partitions,
        description="days holding fewer bars than the interval implies (reported, never filled)",
    )
    def bar_gaps_check(bars: pd.DataFrame) -> AssetCheckResult:
        gaps = bar_gaps(bars)
        return AssetCheckResult(
            passed=gaps.empty,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "gap_count": int(gaps["missing"].sum()) if len(gaps) else 0,
                "gap_days": len(gaps),
                "gaps": markdown_table(gaps.astype({"date": str}) if len(gaps) else gaps),
            },
        )

    return [no_duplicate_bars, bar_gaps_check]


@definitions
def defs() -> Definitions:
    config = current_project().binance
    if config is None:
        return Definitions()
    klines, checks, _ = build_binance_assets(config)
    return Definitions(assets=[klines], asset_checks=checks)
