"""``token_prices``: daily prices of every coin the vaults' ``yields:`` sections name.

Reward tokens, pegged underlyings and the USD price of each vault's reference asset (an ETH vault
divides by ETH's price), from the DefiLlama coins API. Coins the API silently omits are reported
(metadata + a WARN check). The ingestion completeness rule (docs/RUNBOOK.md "Completeness", as
for pool_history): a coin whose batch failed, or that came back with fewer days than the lake
holds, keeps its previous rows, and the blocking ``requested_coins_fetched`` check fails naming
it; the coins that did come back are written.
"""

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    Definitions,
    Failure,
    MetadataValue,
    Output,
    asset,
    definitions,
)

from midfreq_assets.concurrency import PRICES_POOL
from midfreq_assets.domain.config.project import Project
from midfreq_assets.domain.ingest.pool_history import merge_kept_rows
from midfreq_assets.metadata import listing, markdown_table, partition_metadata
from midfreq_assets.partitions import daily_partitions, window_days
from midfreq_assets.previews import schema_metadata
from midfreq_assets.project import current_project
from midfreq_resources.io.parquet_io_manager import REQUIRED_COLUMNS

TOKEN_PRICE_COLUMNS = ["date", "coin", "symbol", "price", "confidence"]
PRICE_CHECKS = [
    AssetCheckSpec(
        "requested_coins_fetched",
        asset="token_prices",
        blocking=True,
        description="every coin's batch was fetched and at least as complete as the lake; a coin that "
        "failed keeps its previous rows (merge by coin) and fails this check, naming it",
    ),
    AssetCheckSpec(
        "requested_coins_present",
        asset="token_prices",
        description="every configured coin has prices (the API silently omits unknown coins)",
    ),
]


def _empty_prices() -> pd.DataFrame:
    return pd.DataFrame(
        {
            c: pd.Series(
                dtype="datetime64[ns]" if c == "date" else float if c in ("price", "confidence") else object
            )
            for c in TOKEN_PRICE_COLUMNS
        }
    )


def build_token_prices(project: Project, partitions_def: DailyPartitionsDefinition) -> AssetsDefinition:
    """``token_prices`` for the coins of ``project``'s vaults."""
    coins = project.price_coins()

    @asset(
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="parquet_io_manager",
        metadata={REQUIRED_COLUMNS: TOKEN_PRICE_COLUMNS, **schema_metadata("token_prices")},
        pool=PRICES_POOL,
        required_resource_keys={"defillama_coins", "parquet_io_manager"},
        group_name="prices",
        kinds={"python", "parquet"},
        check_specs=PRICE_CHECKS,
        description="Daily token prices (USD, near 12:00 UTC) of the reward and pegged tokens named in the "
        "vaults' `yields:` sections and of the vaults' reference assets (configs/tokens.yaml reference_coins), "
        "from the DefiLlama coins API: date, coin, symbol, price, confidence.",
    )
    def token_prices(context: AssetExecutionContext):
        first, last = window_days(context.partition_time_window)
        days = pd.date_range(first, last, freq="D")
        result = context.resources.defillama_coins.daily_prices(coins, first, last)
        if result.failed and not result.charts:
            raise Failure(
                f"token_prices {first}..{last}: every batch failed ({len(result.failed)} coin(s)); "
                "nothing written, the previous partitions are untouched",
                metadata={"failed": MetadataValue.json(result.failed)},
            )
        fetched = result.frame()[TOKEN_PRICE_COLUMNS] if result.charts else _empty_prices()
        bad = fetched[~(np.isfinite(fetched["price"]) & (fetched["price"] > 0))]
        if len(bad):
            raise Failure(
                f"token_prices {first}..{last}: refusing to write {len(bad)} non-finite or non-positive "
                f"price(s): {listing(sorted(set(bad['coin'])))}",
                metadata={"bad_prices": markdown_table(bad)},
            )
        frames, unreadable = context.resources.parquet_io_manager.read_existing(
            ["token_prices"], [d.strftime("%Y-%m-%d") for d in days]
        )
        for path, why in unreadable.items():
            context.log.warning(f"token_prices: previous partition {path} is unreadable, replaced: {why}")
        previous = pd.concat(frames.values(), ignore_index=True) if frames else _empty_prices()
        frame, kept = merge_kept_rows(fetched, previous, ["coin", "date"], previous["coin"].isin(coins))
        frame = frame.sort_values(["date", "coin"], kind="stable").reset_index(drop=True)
        short = sorted(set(kept["coin"]) - set(result.failed)) if len(kept) else []
        if result.failed:
            context.log.error(
                f"token_prices: {len(result.failed)} coin(s) could not be fetched (previous rows kept: "
                f"{len(kept)}): {listing(sorted(result.failed))}"
            )
        if result.missing:
            context.log.warning(f"token_prices: the API returned nothing for {listing(result.missing)}")
        per_coin = frame.groupby("coin")["date"].nunique().reindex(coins, fill_value=0)
        gaps = per_coin[per_coin < len(days)]
        yield Output(
            frame,
            metadata=partition_metadata(
                context,
                frame,
                lambda part, _k: {
                    "dagster/row_count": len(part),
                    "coins": int(part["coin"].nunique()) if len(part) else 0,
                },
                {
                    "coins_requested": len(coins),
                    "coins_failed": len(result.failed),
                    "failed": MetadataValue.json(result.failed),
                    "rows_kept_from_previous_run": len(kept),
                    "coins_missing": listing(result.missing),
                    "coin_days_missing": int((len(days) - gaps).sum()) if len(gaps) else 0,
                    "coins_with_gaps": listing(sorted(gaps.index)),
                    "preview": markdown_table(frame.tail(10)),
                },
            ),
        )
        yield AssetCheckResult(
            check_name="requested_coins_fetched",
            passed=not result.failed and not short,
            metadata={
                "failed": ", ".join(sorted(result.failed)),
                "delivered_less_than_the_lake_had": ", ".join(short),
                "rows_kept_from_previous_run": len(kept),
            },
        )
        yield AssetCheckResult(
            check_name="requested_coins_present",
            passed=not result.missing,
            severity=AssetCheckSeverity.WARN,
            metadata={"missing_coins": listing(result.missing), "coins_with_gaps": len(gaps)},
        )

    return token_prices


@definitions
def defs() -> Definitions:
    project = current_project()
    return Definitions(assets=[build_token_prices(project, daily_partitions(project))])
