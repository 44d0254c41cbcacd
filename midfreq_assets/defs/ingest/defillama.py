"""DefiLlama ingestion: ``pool_history``, ``pool_metadata``, ``universe_exclusions`` and
``pool_rankings`` from one fetch.

One step per run fetches ``/pools`` once and each candidate pool's ``/chart`` once for the whole
range (a single-run backfill of N days does not fetch N times), then writes the four outputs
together, so they describe the same fetch. ``pool_history`` comes first in the lineage because
the live API has no historical ``/pools``: a past day's universe is reconstructed from what the
histories show that day (and flagged so). Each output can be materialized on its own
(``can_subset``): the step fetches what it needs and writes only what was selected.
"""

import datetime as dt
from collections.abc import Iterable

import pandas as pd
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetOut,
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    Definitions,
    Failure,
    MetadataValue,
    Output,
    definitions,
    multi_asset,
)

from midfreq_assets.domain.config.project import Project
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.ingest.pool_history import (
    apy_outliers,
    charts_frame,
    duplicate_pool_days,
    missing_pool_days,
    restrict_to_days,
    rows_per_day,
)
from midfreq_assets.domain.ingest.universe import (
    live_days,
    pool_days_per_vault,
    snapshot_frame,
    static_candidates,
    universe_by_day,
)
from midfreq_assets.metadata import listing, markdown_table
from midfreq_assets.partitions import daily_partitions, window_days
from midfreq_assets.project import current_project
from midfreq_resources.clients.defillama import DefiLlamaClient

MAX_ABS_APY = 10.0  # 1000%/yr: beyond this a DefiLlama APY is almost surely a glitch (flagged, kept)
HISTORY, METADATA, EXCLUSIONS = AssetKey("pool_history"), AssetKey("pool_metadata"), AssetKey("universe_exclusions")
RANKINGS = AssetKey("pool_rankings")

CHECKS = [
    AssetCheckSpec("no_duplicate_pool_days", asset=HISTORY, blocking=True, description="one row per (pool, date)"),
    AssetCheckSpec("apy_finite_and_sane", asset=HISTORY,
                   description=f"APY finite and |APY| <= {MAX_ABS_APY:.0%}/yr (outliers flagged, not dropped)"),
    AssetCheckSpec("tvl_non_negative", asset=HISTORY, blocking=True, description="tvl_usd >= 0"),
    AssetCheckSpec("universe_pools_present", asset=HISTORY,
                   description="every candidate pool has a row each day, or is reported missing/failed"),
    AssetCheckSpec("no_duplicate_pool_days", asset=METADATA, blocking=True, description="one row per (pool, date)"),
    AssetCheckSpec("universe_pools_have_history", asset=METADATA,
                   description="every universe pool has a pool_history row that day, or is reported"),
]


def underlying_yield_pools(vaults: Iterable[VaultConfig]) -> set[str]:
    """Pools whose own APY is a yield-bearing underlying's yield (e.g. sUSDS): fetched too."""
    return {uuid for v in vaults for uuid in v.yields.underlying_yield.pools.values()}


def _failures_frame(failed: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(sorted(failed.items()), columns=["pool", "error"])


def build_defillama_assets(project: Project, partitions_def: DailyPartitionsDefinition) -> list[AssetsDefinition]:
    """The ingestion multi-asset of ``project``'s vaults on ``partitions_def``."""
    vaults, tokens = project.vaults, project.tokens

    @multi_asset(
        name="defillama_ingest",
        outs={
            "pool_history": AssetOut(
                key=HISTORY, io_manager_key="parquet_io_manager", kinds={"python", "parquet"}, is_required=False,
                description="One row per (pool, UTC day): tvl_usd, apy, apy_base, apy_reward, il7d, apy_base7d "
                "(yields as fractions per year) for every pool passing a vault's static screen."),
            "pool_metadata": AssetOut(
                key=METADATA, io_manager_key="parquet_io_manager", kinds={"python", "parquet"}, is_required=False,
                description="The union of the vaults' universes, one row per (pool, day): chain, project, "
                "symbol, underlying tokens, TVL, yields (fractions), the vaults that may hold it, and "
                "whether the day was reconstructed from histories (no historical /pools exists)."),
            "universe_exclusions": AssetOut(
                key=EXCLUSIONS, io_manager_key="parquet_io_manager", kinds={"python", "parquet"}, is_required=False,
                description="Every (vault, day, pool) left out of a universe, with the reason."),
            "pool_rankings": AssetOut(
                key=RANKINGS, io_manager_key="parquet_io_manager", kinds={"python", "parquet"}, is_required=False,
                description="Each vault's top_pools ranking (configs: top_pools): per (vault, day, pool passing "
                "the vault's other rules) the day's rank by APY, the days in the top N over the window before "
                "the day (window_start..window_end) and whether the ranking picks it; a vault with "
                "top_pools.allow_list keeps only the picked pools that day."),
        },
        internal_asset_deps={"pool_metadata": {HISTORY, RANKINGS}, "universe_exclusions": {HISTORY, RANKINGS},
                             "pool_rankings": {HISTORY}},
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        group_name="defillama",
        can_subset=True,
        check_specs=CHECKS,
    )
    def defillama_ingest(context: AssetExecutionContext, defillama: DefiLlamaClient):
        first, last = window_days(context.partition_time_window)
        selected = set(context.selected_asset_keys)
        checks = set(context.selected_asset_check_keys)
        snapshot = snapshot_frame([p.model_dump() for p in defillama.pools()])
        candidates = static_candidates(snapshot, vaults, tokens)
        candidates += sorted(underlying_yield_pools(vaults.values()) - set(candidates))
        batch = defillama.charts(candidates)
        if candidates and not batch.ok:
            raise Failure(
                f"no pool history could be fetched for {first}..{last} ({len(batch.failed)} pools failed)",
                metadata={"failed_pools": markdown_table(_failures_frame(batch.failed))},
            )
        full = charts_frame(batch.ok)
        history = restrict_to_days(full, pd.Timestamp(first), pd.Timestamp(last))
        if candidates and history.empty:
            raise Failure(f"the {len(batch.ok)} fetched histories have no row in {first}..{last}: nothing to write")

        days = pd.date_range(first, last, freq="D")
        present = rows_per_day(history, days)
        missing_rows = missing_pool_days(full, history, days)
        no_history = sorted(p for p, rows in batch.ok.items() if not rows)
        missing_pools = sorted(set(missing_rows.get_level_values("pool")) | set(batch.failed) | set(no_history))
        empty_days = [d.date().isoformat() for d, n in present.items() if n == 0]
        if empty_days:
            context.log.warning(f"pool_history: no rows for {len(empty_days)} day(s): {listing(empty_days)}")
        if batch.failed:
            context.log.warning(f"pool_history: {len(batch.failed)} pool(s) failed: {listing(sorted(batch.failed))}")

        if HISTORY in selected:
            yield Output(history, output_name="pool_history", metadata={
                "dagster/row_count": len(history),
                "pools": int(history["pool"].nunique()),
                "candidate_pools": len(candidates),
                "failed_pools": len(batch.failed),
                "failed_pool_details": markdown_table(_failures_frame(batch.failed)),
                "pools_without_history": listing(no_history),
                "pools_missing_some_day": len(missing_pools),
                "days": len(days),
                "days_without_rows": len(empty_days),
                "preview": markdown_table(history.tail(10)),
            })
        yield from _selected(checks, [
            _duplicates_check(HISTORY, history),
            _outlier_check(history),
            _tvl_check(history),
            AssetCheckResult(asset_key=HISTORY, check_name="universe_pools_present", passed=not missing_pools,
                             severity=AssetCheckSeverity.WARN,
                             metadata={"missing_pool_days": len(missing_rows),
                                       "failed_pools": listing(sorted(batch.failed)),
                                       "pools_missing_some_day": listing(missing_pools)}),
        ])

        if not selected & {METADATA, EXCLUSIONS, RANKINGS}:
            return
        live = live_days(first, last, dt.datetime.now(dt.UTC).date())
        members, exclusions, rankings = universe_by_day(history, snapshot, vaults, tokens, live, lookback=full)
        if RANKINGS in selected:  # before pool_metadata, which takes its allow-lists from it
            yield Output(rankings, output_name="pool_rankings", metadata=ranking_metadata(rankings, vaults))
        reconstructed_days = int(members.loc[members["reconstructed"], "date"].nunique())
        counts = exclusions.groupby(["vault", "reason"]).size().rename("pool_days").reset_index()
        if METADATA in selected:
            yield Output(members, output_name="pool_metadata", metadata={
                "dagster/row_count": len(members),
                "pools": int(members["pool"].nunique()),
                "pool_days_per_vault": MetadataValue.json(pool_days_per_vault(members, vaults)),
                "reconstructed": reconstructed_days > 0,
                "reconstructed_days": reconstructed_days,
                "survivorship_note": "past days are screened on today's /pools list: pools that vanished "
                "since are absent" if reconstructed_days else "live snapshot",
                "exclusion_reasons": markdown_table(counts),
                "preview": markdown_table(members.drop(columns=["underlying_tokens", "reward_tokens"]).tail(10)),
            })
        if EXCLUSIONS in selected:
            yield Output(exclusions, output_name="universe_exclusions",
                         metadata={"dagster/row_count": len(exclusions), "reasons": markdown_table(counts)})
        have = pd.MultiIndex.from_frame(history[["date", "pool"]])
        lacking = members.loc[~pd.MultiIndex.from_frame(members[["date", "pool"]]).isin(have),
                              ["date", "pool", "symbol"]]
        yield from _selected(checks, [
            _duplicates_check(METADATA, members),
            AssetCheckResult(asset_key=METADATA, check_name="universe_pools_have_history", passed=lacking.empty,
                             severity=AssetCheckSeverity.WARN,
                             metadata={"pool_days_without_history": len(lacking), "examples": markdown_table(lacking)}),
        ])

    return [defillama_ingest]


def ranking_metadata(rankings: pd.DataFrame, vaults: dict[str, VaultConfig]) -> dict[str, object]:
    """Row count, each vault's ranking parameters and picks per day (a vault's universe uses them
    only with ``top_pools.allow_list``)."""
    picks = rankings[rankings["picked"]].groupby("vault")["pool"].count().to_dict() if len(rankings) else {}
    days = rankings.groupby("vault")["date"].nunique().to_dict() if len(rankings) else {}
    return {
        "dagster/row_count": len(rankings),
        "rankings": markdown_table(pd.DataFrame([
            {"vault": name, "ranking": v.top_pools.describe(), "allow_list": v.top_pools.allow_list,
             "picked_per_day": round(picks.get(name, 0) / max(days.get(name, 0), 1), 2)}
            for name, v in vaults.items()])),
    }


def _selected(selected: set[AssetCheckKey], results: list[AssetCheckResult]) -> list[AssetCheckResult]:
    """The results of the checks this run selected (a subset run yields only its own checks)."""
    return [r for r in results if AssetCheckKey(r.asset_key, r.check_name) in selected]


def _duplicates_check(key: AssetKey, frame: pd.DataFrame) -> AssetCheckResult:
    dups = duplicate_pool_days(frame)
    return AssetCheckResult(asset_key=key, check_name="no_duplicate_pool_days", passed=dups.empty,
                            metadata={"duplicates": len(dups)})


def _outlier_check(history: pd.DataFrame) -> AssetCheckResult:
    outliers = apy_outliers(history, MAX_ABS_APY)
    return AssetCheckResult(asset_key=HISTORY, check_name="apy_finite_and_sane", passed=outliers.empty,
                            severity=AssetCheckSeverity.WARN,
                            metadata={"outliers": len(outliers), "examples": markdown_table(outliers)})


def _tvl_check(history: pd.DataFrame) -> AssetCheckResult:
    negative = history.loc[history["tvl_usd"] < 0, ["date", "pool", "tvl_usd"]]
    return AssetCheckResult(asset_key=HISTORY, check_name="tvl_non_negative", passed=negative.empty,
                            metadata={"negative_rows": len(negative), "examples": markdown_table(negative)})


@definitions
def defs() -> Definitions:
    project = current_project()
    return Definitions(assets=build_defillama_assets(project, daily_partitions(project)))
