"""``<vault>/top_pools``: the vault's "top n ever" picks as of the day after its last ranked day.

The original midfreq ranked pools by daily APY rank < N over a window and pasted the picks into
its config (``selected_instruments``). Here the ranking (``pool_rankings``, per day, point in time)
is computed at ingestion with the vault's ``top_pools:`` parameters; this asset publishes the
ranking that would feed the next day, with its window and ``as_of`` date, and a ``selected_pools``
snippet to paste into a vault that should hold exactly those pools from ``as_of`` on (a list
pasted for earlier days would be chosen with hindsight). A vault with ``top_pools.allow_list``
uses the same ranking day by day without pasting anything.
"""

import pandas as pd
import yaml
from dagster import (
    AllPartitionMapping,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    MetadataValue,
    Output,
    asset,
)

from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.ingest.ranking import ranking_table
from midfreq_assets.metadata import markdown_table
from midfreq_assets.previews import schema_metadata


def top_pools_table(rankings: pd.DataFrame, vault: VaultConfig) -> pd.DataFrame:
    """The ranking of ``vault`` (rows of ``pool_rankings``) that feeds the day after its last day."""
    cfg = vault.top_pools
    rows = rankings[rankings["vault"] == vault.name] if len(rankings) else rankings
    if rows.empty:
        return ranking_table(pd.DataFrame(columns=["date", "pool", cfg.column]), cfg, pd.Timestamp.now())
    as_of = pd.to_datetime(rows["date"]).max() + pd.Timedelta(days=1)
    return ranking_table(rows.rename(columns={"value": cfg.column}), cfg, as_of)


def selected_pools_snippet(table: pd.DataFrame) -> str:
    """YAML to paste into a vault: the picks, with the window they were chosen on."""
    picks = table[table["picked"]] if len(table) else table
    if picks.empty:
        return "# no pool picked (no complete ranking window yet)"
    head = (
        f"# top_pools picks over {picks['window_start'].iloc[0].date()}..{picks['window_end'].iloc[0].date()}: "
        f"valid from {picks['as_of'].iloc[0].date()} on\n"
    )
    return head + yaml.safe_dump({"selected_pools": picks["pool"].astype(str).tolist()}, sort_keys=False)


def build_top_pools_asset(vault: VaultConfig) -> AssetsDefinition:
    cfg = vault.top_pools

    @asset(
        key=AssetKey([vault.name, "top_pools"]),
        ins={
            "pool_rankings": AssetIn(
                key=AssetKey("pool_rankings"),
                partition_mapping=AllPartitionMapping(),
                metadata={"allow_missing_partitions": True},
            )
        },
        io_manager_key="parquet_io_manager",
        metadata=schema_metadata("top_pools"),
        group_name=f"{vault.name}_backtests",
        kinds={"python", "parquet"},
        description=f"Vault {vault.name}: pools with daily {cfg.column} rank <= {cfg.top_n} on >= "
        f"{cfg.min_days_in_top} of the {cfg.window_days} days before as_of (the day after the last ranked "
        "day), among the pools passing the vault's other rules; picked first.",
    )
    def top_pools(context: AssetExecutionContext, pool_rankings: pd.DataFrame):
        table = top_pools_table(pool_rankings, vault)
        if table.empty:
            context.log.warning(
                f"{vault.name}/top_pools: no complete {cfg.window_days}-day ranking window yet"
            )
        picked = int(table["picked"].sum()) if len(table) else 0
        as_of = str(table["as_of"].iloc[0].date()) if len(table) else ""
        return Output(
            table,
            metadata={
                "dagster/row_count": len(table),
                "as_of": as_of,
                "window": f"{table['window_start'].iloc[0].date()}..{table['window_end'].iloc[0].date()}"
                if len(table)
                else "",
                "ranking": cfg.describe(),
                "picked": picked,
                "selected_pools": MetadataValue.md(f"```yaml\n{selected_pools_snippet(table)}```"),
                "table": markdown_table(table),
            },
        )

    return top_pools
