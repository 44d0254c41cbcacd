"""Token prices and per-vault adjusted yields (thin Dagster layer over ``domain.adjusted_yields``).

- ``token_prices``: daily prices of every coin the vaults' ``yields:`` sections name (reward
  tokens, pegged underlyings), from the DefiLlama coins API. Coins the API silently omits are
  reported (metadata + a WARN check); a failed batch fails the run (no partial partition).
- ``<vault>/adjusted_yields``: one row per (date, pool of the vault's universe) with ``apy``,
  each adjustment as its own column, ``adjusted_apy`` and flags. Reads ``pool_history`` and
  ``token_prices`` over a lookback window so the reward haircut has history.
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    Failure,
    MetadataValue,
    Output,
    PartitionsDefinition,
    TimeWindowPartitionMapping,
    asset,
)

from midfreq_assets.domain.yields.adjusted import (
    COMPONENT_COLUMNS,
    FLAG_COLUMNS,
    OUTPUT_COLUMNS,
    adjusted_yield_panel,
    price_coins_for,
    resolve_pool_tokens,
)
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.metadata import listing, markdown_table
from midfreq_assets.partitions import daily_partitions, window_days
from midfreq_resources.clients.defillama_coins import DefiLlamaCoinsClient
from midfreq_resources.project_config import ProjectConfig

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


@asset(
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    io_manager_key="parquet_io_manager",
    group_name="prices",
    kinds={"python", "parquet"},
    check_specs=PRICE_CHECKS,
    description="Daily token prices (USD, near 12:00 UTC) of the reward and pegged tokens named in the "
    "vaults' `yields:` sections, from the DefiLlama coins API: date, coin, symbol, price, confidence.",
)
def token_prices(context: AssetExecutionContext, defillama_coins: DefiLlamaCoinsClient, project: ProjectConfig):
    first, last = window_days(context.partition_time_window)
    coins = price_coins_for(v.yields for v in project.vaults().values())
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
    yield Output(
        frame,
        metadata={
            "dagster/row_count": len(frame),
            "coins_requested": len(coins),
            "coins_missing": listing(result.missing),
            "coin_days_missing": int((len(days) - gaps).sum()) if len(gaps) else 0,
            "coins_with_gaps": listing(sorted(gaps.index)),
            "preview": markdown_table(frame.tail(10)),
        },
    )
    bad = frame[~(np.isfinite(frame["price"]) & (frame["price"] > 0))]
    yield AssetCheckResult(check_name="prices_positive_and_finite", passed=bad.empty,
                           metadata={"bad_prices": len(bad), "examples": markdown_table(bad)})
    yield AssetCheckResult(check_name="requested_coins_present", passed=not result.missing,
                           severity=AssetCheckSeverity.WARN,
                           metadata={"missing_coins": listing(result.missing), "coins_with_gaps": len(gaps)})


def _in_vault(vaults: object, name: str) -> bool:
    if vaults is None or (isinstance(vaults, float) and np.isnan(vaults)):
        return False
    return name in list(vaults)  # type: ignore[call-overload]


def build_adjusted_yield_assets(
    vault: VaultConfig, partitions_def: PartitionsDefinition = daily_partitions
) -> list[AssetsDefinition]:
    """``[<vault>/adjusted_yields]`` (with its checks) for one vault."""
    key = AssetKey([vault.name, "adjusted_yields"])
    config = vault.yields
    lookback = TimeWindowPartitionMapping(start_offset=-config.lookback_days,
                                          allow_nonexistent_upstream_partitions=True)
    tolerate_gaps = {"allow_missing_partitions": True}

    @asset(
        key=key,
        ins={
            "pool_history": AssetIn(key=AssetKey("pool_history"), partition_mapping=lookback,
                                    metadata=tolerate_gaps),
            "pool_metadata": AssetIn(key=AssetKey("pool_metadata")),
            "token_prices": AssetIn(key=AssetKey("token_prices"), partition_mapping=lookback,
                                    metadata=tolerate_gaps),
        },
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="parquet_io_manager",
        group_name=vault.name,
        kinds={"python", "parquet"},
        check_specs=[
            AssetCheckSpec("adjusted_apy_finite", asset=key, description="adjusted_apy is finite on every row"),
            AssetCheckSpec("components_present", asset=key,
                           description="every component column exists and is non-null"),
            AssetCheckSpec("adjustment_inputs_complete", asset=key,
                           description="no row lacks a reward price, peg price or underlying yield, no depeg"),
        ],
        description=f"Vault {vault.name}: per (date, pool) APY, reward haircut, underlying APY, peg-deviation "
        "yield, annualized IL and adjusted_apy (fractions per year), with flags. Causal: day t uses data <= t.",
    )
    def adjusted_yields(context: AssetExecutionContext, pool_history: pd.DataFrame, pool_metadata: pd.DataFrame,
                        token_prices: pd.DataFrame):
        first, last = window_days(context.partition_time_window)
        days = pd.date_range(first, last, freq="D")
        members = pool_metadata.loc[pool_metadata["vaults"].map(lambda v: _in_vault(v, vault.name))] \
            if not pool_metadata.empty else pool_metadata
        pools = sorted(members["pool"].astype(str).unique()) if not members.empty else []
        tokens = resolve_pool_tokens(members, config)
        if pool_history.empty or not pools:
            out = pd.DataFrame({c: pd.Series(dtype=object) for c in OUTPUT_COLUMNS})
            report: dict[str, object] = {}
        else:
            out, report = adjusted_yield_panel(pool_history, tokens, token_prices, config, pools=pools,
                                               output_dates=days)
            universe = pd.MultiIndex.from_frame(
                members.assign(date=pd.to_datetime(members["date"]).dt.normalize())[["date", "pool"]])
            out = out[pd.MultiIndex.from_frame(out[["date", "pool"]]).isin(universe)].reset_index(drop=True)
        flag_counts = {f: int(out[f].sum()) for f in FLAG_COLUMNS if len(out) and out[f].any()}
        yield Output(
            out,
            metadata={
                "dagster/row_count": len(out),
                "pools": int(out["pool"].nunique()) if len(out) else 0,
                "flag_counts": MetadataValue.json(flag_counts),
                "price_report": MetadataValue.json(report.get("prices", {})),
                "mean_adjustment": float((out["adjusted_apy"] - out["apy"]).mean()) if len(out) else 0.0,
                "preview": markdown_table(out[["date", "pool", *COMPONENT_COLUMNS]].tail(10)),
            },
        )
        components = out[COMPONENT_COLUMNS] if set(COMPONENT_COLUMNS) <= set(out.columns) else None
        finite = np.isfinite(out["adjusted_apy"].astype(float)) if len(out) else pd.Series(dtype=bool)
        yield AssetCheckResult(asset_key=key, check_name="adjusted_apy_finite", passed=bool(finite.all()),
                               metadata={"non_finite_rows": int((~finite).sum())})
        nulls = {c: int(n) for c, n in components.isna().sum().items() if n} if components is not None else {}
        yield AssetCheckResult(asset_key=key, check_name="components_present",
                               passed=components is not None and not nulls,
                               metadata={"null_counts": MetadataValue.json(nulls)})
        yield AssetCheckResult(asset_key=key, check_name="adjustment_inputs_complete", passed=not flag_counts,
                               severity=AssetCheckSeverity.WARN,
                               metadata={"flag_counts": MetadataValue.json(flag_counts)})

    return [adjusted_yields]


def build_price_assets(vaults: Sequence[VaultConfig]) -> list[AssetsDefinition]:
    """``token_prices`` plus every vault's ``adjusted_yields``: what Definitions needs from here."""
    return [token_prices, *(a for v in vaults for a in build_adjusted_yield_assets(v))]
