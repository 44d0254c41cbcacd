"""Binance futures datasets beside the klines (``configs/binance.yaml`` ``futures:``).

- ``binance_premium_index_klines``: premium index bars (``premiumIndexKlines``), the same contract,
  daily partitions, checksum verification, per-file reporting and checks as ``binance_klines``
  (the premium index's close is the ``close_premium`` feature of the price research);
- ``binance_funding_rates``: funding events (``fundingRate``). The archive publishes them in
  monthly files only, so the asset is partitioned by month: a daily partition of the current
  month could never be complete before the month ends. Same verification; gaps are days with
  fewer events than ``24 / funding_interval_hours``.

A file failing its checksum or parse is reported and the others are still collected; a run that
collected nothing fails rather than write an empty partition.
"""

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    Definitions,
    Failure,
    Output,
    asset,
    asset_check,
    definitions,
)

from midfreq_assets.defs.ingest.binance import (
    bar_summary,
    build_bar_checks,
    collection_metadata,
    files_metadata,
)
from midfreq_assets.domain.ingest.binance_config import BinanceConfig
from midfreq_assets.domain.ingest.funding import (
    FundingCollection,
    collect_funding,
    duplicate_funding,
    funding_gaps,
)
from midfreq_assets.domain.ingest.klines_collection import collect_klines
from midfreq_assets.metadata import listing, markdown_table, partition_metadata
from midfreq_assets.partitions import daily_from, klines_last_day, monthly_from, window_days
from midfreq_assets.previews import schema_metadata
from midfreq_assets.project import current_project
from midfreq_resources.clients.binance_archive import BinanceArchiveClient

PREMIUM, FUNDING = AssetKey("binance_premium_index_klines"), AssetKey("binance_funding_rates")
PREMIUM_DATASET = "premiumIndexKlines"


def funding_metadata(result: FundingCollection, first, last) -> dict[str, object]:
    events = (
        result.rates.groupby("symbol").size().rename("events").reset_index()
        if len(result.rates)
        else pd.DataFrame(columns=["symbol", "events"])
    )
    return {
        **files_metadata(result, first, last),
        "duplicate_events_dropped": result.duplicates_dropped,
        "events_by_symbol": markdown_table(events),
    }


def _log_problems(context: AssetExecutionContext, name: str, failed: dict, missing: dict) -> None:
    for file, reason in sorted(failed.items()):
        context.log.error(f"{name} {file.label}: {reason}")
    if missing:
        context.log.warning(
            f"{name}: {len(missing)} file(s) not in the archive (404): "
            f"{listing([f.label for f in sorted(missing)], 10)}"
        )


def build_premium_index_assets(
    config: BinanceConfig,
) -> tuple[list[AssetsDefinition], list[AssetChecksDefinition]]:
    """``binance_premium_index_klines`` and its checks (nothing when no premium interval is configured)."""
    futures = config.futures
    if futures is None or not futures.premium_index_intervals:
        return [], []
    partitions = daily_from(config.start_date, klines_last_day())

    @asset(
        key=PREMIUM,
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="parquet_io_manager",
        metadata=schema_metadata("binance_premium_index_klines"),
        group_name="binance",
        kinds={"python", "parquet"},
        description=f"Binance {futures.market} premium index bars ({PREMIUM_DATASET}) of {', '.join(futures.symbols)} "
        f"at {', '.join(futures.premium_index_intervals)}: the binance_klines contract (close = premium of the "
        "perpetual over the index, a fraction; volumes are 0). Checksum-verified; missing/failed files and "
        "gaps are reported, never filled.",
    )
    def binance_premium_index_klines(context: AssetExecutionContext, binance_archive: BinanceArchiveClient):
        first, last = window_days(context.partition_time_window)
        result = collect_klines(binance_archive.download_many, futures, first, last, dataset=PREMIUM_DATASET)
        metadata = collection_metadata(result, first, last)
        _log_problems(context, "premium index", result.failed, result.missing)
        if result.bars.empty:
            raise Failure(
                f"binance_premium_index_klines {first}..{last}: nothing collected "
                f"({len(result.missing)} missing, {len(result.failed)} failed of {len(result.planned)} "
                "planned); not writing an empty partition",
                metadata=metadata,
            )
        return Output(result.bars, metadata=partition_metadata(context, result.bars, bar_summary, metadata))

    return [binance_premium_index_klines], build_bar_checks(binance_premium_index_klines, partitions)


def build_funding_assets(config: BinanceConfig) -> tuple[list[AssetsDefinition], list[AssetChecksDefinition]]:
    """``binance_funding_rates`` (monthly partitions) and its checks (nothing unless ``futures.funding_rate``)."""
    futures = config.futures
    if futures is None or not futures.funding_rate:
        return [], []
    partitions = monthly_from(config.start_date, klines_last_day())

    @asset(
        key=FUNDING,
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        # ParquetIOManager: one file per month of a range run
        metadata={"partition_column": "month", **schema_metadata("binance_funding_rates")},
        io_manager_key="parquet_io_manager",
        group_name="binance_funding",
        kinds={"python", "parquet"},
        description=f"Binance {futures.market} funding events (fundingRate) of {', '.join(futures.symbols)}: "
        "date (UTC day), month (the partition), symbol, calc_time, funding_interval_hours, funding_rate "
        "(fraction per interval). "
        "Monthly partitions: the archive publishes monthly files only. Checksum-verified; missing/failed "
        "files and days with too few events are reported, never filled.",
    )
    def binance_funding_rates(context: AssetExecutionContext, binance_archive: BinanceArchiveClient):
        first, last = window_days(context.partition_time_window)
        result = collect_funding(binance_archive.download_many, futures, first, last)
        metadata = funding_metadata(result, first, last)
        _log_problems(context, "funding", result.failed, result.missing)
        if result.rates.empty:
            raise Failure(
                f"binance_funding_rates {first}..{last}: nothing collected ({len(result.missing)} missing, "
                f"{len(result.failed)} failed of {len(result.planned)} planned; a month is published "
                "after it ends); not writing an empty partition",
                metadata=metadata,
            )
        rates = result.rates

        def month_summary(part: pd.DataFrame, _key: str | None) -> dict:
            """The month's own events (the files and gaps are the run's: on its last month)."""
            return {
                "dagster/row_count": len(part),
                "symbols": int(part["symbol"].nunique()) if len(part) else 0,
                "mean_funding_rate": float(part["funding_rate"].mean()) if len(part) else 0.0,
            }

        return Output(
            rates,
            metadata=partition_metadata(context, rates, month_summary, metadata, partition_column="month"),
        )

    @asset_check(
        asset=binance_funding_rates,
        name="no_duplicate_funding_events",
        partitions_def=partitions,
        blocking=True,
        description="one row per (symbol, calc_time)",
    )
    def no_duplicate_funding_events(binance_funding_rates: pd.DataFrame) -> AssetCheckResult:
        dups = duplicate_funding(binance_funding_rates)
        return AssetCheckResult(passed=dups.empty, metadata={"duplicate_rows": len(dups)})

    @asset_check(
        asset=binance_funding_rates,
        name="funding_gaps",
        partitions_def=partitions,
        description="days with fewer funding events than 24 / funding_interval_hours (reported)",
    )
    def funding_gaps_check(binance_funding_rates: pd.DataFrame) -> AssetCheckResult:
        gaps = funding_gaps(binance_funding_rates)
        return AssetCheckResult(
            passed=gaps.empty,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "gap_days": len(gaps),
                "gaps": markdown_table(gaps.astype({"date": str}) if len(gaps) else gaps),
            },
        )

    return [binance_funding_rates], [no_duplicate_funding_events, funding_gaps_check]


@definitions
def defs() -> Definitions:
    config = current_project().binance
    if config is None:
        return Definitions()
    premium, premium_checks = build_premium_index_assets(config)
    funding, funding_checks = build_funding_assets(config)
    return Definitions(assets=[*premium, *funding], asset_checks=[*premium_checks, *funding_checks])
