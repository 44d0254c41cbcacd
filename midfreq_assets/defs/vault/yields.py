"""``<vault>/adjusted_yields`` (monthly): per (date, pool of the universe) APY, each adjustment and flags.

Reads ``pool_history`` and ``token_prices`` over a lookback window so the reward haircut and the
IL estimate have history, and ``pool_metadata`` over the exit memory (pools recently in the
universe keep their rows); prices are in the vault's reference asset (``domain.yields.adjusted``).
A partition is a month: the days of it with pool history so far (the nightly run rewrites it).
"""

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
    MetadataValue,
    MonthlyPartitionsDefinition,
    Output,
    asset,
)

from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.ingest.pool_history import usable_rows
from midfreq_assets.domain.yields.adjusted import (
    COMPONENT_COLUMNS,
    universe_flag_counts,
    vault_adjusted_yields,
)
from midfreq_assets.domain.yields.exposure import ReferencePricing
from midfreq_assets.metadata import TOLERATE_GAPS, markdown_table, partition_metadata
from midfreq_assets.partitions import days_with_data, months_back, research_months, yields_last_day
from midfreq_assets.previews import schema_metadata
from midfreq_resources.io.parquet_io_manager import TRAILING_MISSING_OK


def build_adjusted_yield_assets(
    vault: VaultConfig, reference: ReferencePricing, partitions_def: MonthlyPartitionsDefinition | None = None
) -> list[AssetsDefinition]:
    """``[<vault>/adjusted_yields]`` (with its checks) for one vault priced in ``reference``."""
    partitions_def = partitions_def or research_months(vault.start_date, yields_last_day())
    key = AssetKey([vault.name, "adjusted_yields"])
    config = vault.yields
    window = months_back(config.lookback_days)
    memory = months_back(config.exit_memory_days)
    so_far = {**TOLERATE_GAPS, TRAILING_MISSING_OK: True}

    @asset(
        key=key,
        ins={
            "pool_history": AssetIn(key=AssetKey("pool_history"), partition_mapping=window, metadata=so_far),
            "pool_metadata": AssetIn(
                key=AssetKey("pool_metadata"), partition_mapping=memory, metadata=so_far
            ),
            # no prices at all (a failed or absent source) is not fatal: every row that needs one is flagged
            "token_prices": AssetIn(
                key=AssetKey("token_prices"),
                partition_mapping=window,
                metadata={**TOLERATE_GAPS, "optional": True},
            ),
        },
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="parquet_io_manager",
        group_name=vault.name,
        kinds={"python", "parquet"},
        metadata=schema_metadata("adjusted_yields"),
        check_specs=[
            AssetCheckSpec(
                "adjusted_apy_finite", asset=key, description="adjusted_apy is finite on every row"
            ),
            AssetCheckSpec(
                "components_present", asset=key, description="every component column exists and is non-null"
            ),
            AssetCheckSpec(
                "adjustment_inputs_complete",
                asset=key,
                description="no universe row lacks a reward price, peg price, underlying yield, IL data "
                "or leg price, no depeg",
            ),
        ],
        description=f"Vault {vault.name}: per (date, pool) APY, reward haircut, underlying APY, peg-deviation "
        "yield, annualized IL and adjusted_apy (fractions per year), the legs' price return against "
        f"{reference.asset}, with flags; pools in the universe that day or within the last "
        f"{config.exit_memory_days} days (in_universe says which). Causal: day t uses data <= t. One partition "
        "per month: its days with pool history so far.",
    )
    def adjusted_yields(
        context: AssetExecutionContext,
        pool_history: pd.DataFrame,
        pool_metadata: pd.DataFrame,
        token_prices: pd.DataFrame,
    ):
        days = days_with_data(
            context.partition_time_window,
            pool_history["date"] if len(pool_history) else pd.Series(dtype="datetime64[ns]"),
            vault.start_date,
        )
        out, report = vault_adjusted_yields(
            usable_rows(pool_history), pool_metadata, token_prices, vault.name, config, days, reference
        )
        flags = universe_flag_counts(out)
        last_day = {f"{d:%Y-%m}": d for d in days}  # each month's coverage: rebalance_weights checks it

        def summary(part: pd.DataFrame, key: str | None) -> dict:
            through = last_day.get(key) if key else (days[-1] if len(days) else None)
            return {
                "dagster/row_count": len(part),
                "pools": int(part["pool"].nunique()) if len(part) else 0,
                **({"last_day": str(through.date())} if through is not None else {}),
                "price_exposed_pools": int(part.loc[part["price_exposed"].astype(bool), "pool"].nunique())
                if len(part)
                else 0,
                "flag_counts": MetadataValue.json(universe_flag_counts(part) if len(part) else {}),
                "mean_adjustment": float((part["adjusted_apy"] - part["apy"]).mean()) if len(part) else 0.0,
                "preview": markdown_table(part[["date", "pool", *COMPONENT_COLUMNS]].tail(10))
                if len(part)
                else markdown_table(part),
            }

        yield Output(
            out,
            metadata=partition_metadata(
                context,
                out,
                summary,
                {
                    "reference_asset": reference.asset,
                    "reference_price_missing_days": int(report.get("reference_price_missing_days", 0)),
                    "price_report": MetadataValue.json(report.get("prices", {})),
                },
            ),
        )
        components = out[COMPONENT_COLUMNS] if set(COMPONENT_COLUMNS) <= set(out.columns) else None
        finite = np.isfinite(out["adjusted_apy"].astype(float)) if len(out) else pd.Series(dtype=bool)
        yield AssetCheckResult(
            asset_key=key,
            check_name="adjusted_apy_finite",
            passed=bool(finite.all()),
            metadata={"non_finite_rows": int((~finite).sum())},
        )
        nulls = {c: int(n) for c, n in components.isna().sum().items() if n} if components is not None else {}
        yield AssetCheckResult(
            asset_key=key,
            check_name="components_present",
            passed=components is not None and not nulls,
            metadata={"null_counts": MetadataValue.json(nulls)},
        )
        yield AssetCheckResult(
            asset_key=key,
            check_name="adjustment_inputs_complete",
            passed=not flags,
            severity=AssetCheckSeverity.WARN,
            metadata={"flag_counts": MetadataValue.json(flags)},
        )

    return [adjusted_yields]
