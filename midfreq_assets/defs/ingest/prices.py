"""``token_prices``: daily prices of every coin the vaults' ``yields:`` sections name.

Reward tokens, pegged underlyings and the USD price of each vault's reference asset (an ETH vault
divides by ETH's price), from the DefiLlama coins API. Coins the API silently omits
are reported (metadata + a WARN check); a failed batch fails the run (no partial partition).
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

from midfreq_assets.domain.config.project import Project
from midfreq_assets.metadata import listing, markdown_table
from midfreq_assets.partitions import daily_partitions, window_days
from midfreq_assets.project import current_project
from midfreq_resources.clients.defillama_coins import DefiLlamaCoinsClient

TOKEN_PRICE_COLUMNS = ["date", "coin", "symbol", "price", "confidence"]
PRICE_CHECKS = [
    AssetCheckSpec("prices_positive_and_finite", asset="token_prices", blocking=True,
                   description="every stored price is finite and > 0"),
    AssetCheckSpec("requested_coins_present", asset="token_prices",
                   description="every configured coin has prices (the API silently omits unknown coins)"),
]


def _empty_prices() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="datetime64[ns]" if c == "date" else float if c in ("price", "confidence")
                                      else object) for c in TOKEN_PRICE_COLUMNS})


def build_token_prices(project: Project, partitions_def: DailyPartitionsDefinition) -> AssetsDefinition:
    """``token_prices`` for the coins of ``project``'s vaults."""
    coins = project.price_coins()

    @asset(
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="parquet_io_manager",
        group_name="prices",
        kinds={"python", "parquet"},
        check_specs=PRICE_CHECKS,
        description="Daily token prices (USD, near 12:00 UTC) of the reward and pegged tokens named in the "
        "vaults' `yields:` sections and of the vaults' reference assets (configs/tokens.yaml reference_coins), "
        "from the DefiLlama coins API: date, coin, symbol, price, confidence.",
    )
    def token_prices(context: AssetExecutionContext, defillama_coins: DefiLlamaCoinsClient):
        first, last = window_days(context.partition_time_window)
        result = defillama_coins.daily_prices(coins, first, last)
        if result.failed:
            raise Failure(
                f"token_prices {first}..{last}: {len(result.failed)} coin(s) could not be fetched",
                metadata={"failed": MetadataValue.json(result.failed)},
            )
        frame = result.frame()[TOKEN_PRICE_COLUMNS] if result.charts else _empty_prices()
        if result.missing:
            context.log.warning(f"token_prices: the API returned nothing for {listing(result.missing)}")
        days = pd.date_range(first, last, freq="D")
        per_coin = frame.groupby("coin")["date"].nunique().reindex(coins, fill_value=0)
        gaps = per_coin[per_coin < len(days)]
        yield Output(frame, metadata={
            "dagster/row_count": len(frame),
            "coins_requested": len(coins),
            "coins_missing": listing(result.missing),
            "coin_days_missing": int((len(days) - gaps).sum()) if len(gaps) else 0,
            "coins_with_gaps": listing(sorted(gaps.index)),
            "preview": markdown_table(frame.tail(10)),
        })
        bad = frame[~(np.isfinite(frame["price"]) & (frame["price"] > 0))]
        yield AssetCheckResult(check_name="prices_positive_and_finite", passed=bad.empty,
                               metadata={"bad_prices": len(bad), "examples": markdown_table(bad)})
        yield AssetCheckResult(check_name="requested_coins_present", passed=not result.missing,
                               severity=AssetCheckSeverity.WARN,
                               metadata={"missing_coins": listing(result.missing), "coins_with_gaps": len(gaps)})

    return token_prices


@definitions
def defs() -> Definitions:
    project = current_project()
    return Definitions(assets=[build_token_prices(project, daily_partitions(project))])
