"""DefiLlama ingestion: ``pool_history`` (daily pool rows) and ``pool_metadata`` (the universe).

``pool_history`` comes first because the live API has no historical ``/pools``: for a past day
the universe is reconstructed from what the histories show that day (and flagged so).
A single-run backfill of N days fetches every pool's ``/chart`` once, not N times.
"""


import datetime as dt

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    BackfillPolicy,
    Failure,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)

from midfreq_assets.domain.ingest.pool_history import apy_outliers, charts_frame, restrict_to_days
from midfreq_assets.domain.ingest.universe import select_universe, snapshot_frame, static_candidates
from midfreq_assets.metadata import listing, markdown_table
from midfreq_assets.partitions import daily_partitions, window_days
from midfreq_resources.clients.defillama import DefiLlamaClient
from midfreq_resources.project_config import ProjectConfig

MAX_ABS_APY = 10.0  # 1000%/yr: beyond this a DefiLlama APY is almost surely a glitch (flagged, kept)
LIVE_SNAPSHOT_LAG_DAYS = 1  # /pools describes "now": it stands for today and the last complete day

HISTORY_CHECKS = [
    AssetCheckSpec("no_duplicate_pool_days", asset="pool_history", blocking=True,
                   description="one row per (pool, date)"),
    AssetCheckSpec("apy_finite_and_sane", asset="pool_history",
                   description=f"APY finite and |APY| <= {MAX_ABS_APY:.0%}/yr (outliers flagged, not dropped)"),
    AssetCheckSpec("tvl_non_negative", asset="pool_history", blocking=True, description="tvl_usd >= 0"),
    AssetCheckSpec("universe_pools_present", asset="pool_history",
                   description="every candidate pool has a row each day, or is reported missing/failed"),
]


def underlying_yield_pools(vaults) -> set[str]:
    """Pools whose own APY is a yield-bearing underlying's yield (e.g. sUSDS): fetched too."""
    return {uuid for v in vaults for uuid in v.yields.underlying_yield.pools.values()}


def _fetch_snapshot(client: DefiLlamaClient) -> pd.DataFrame:
    return snapshot_frame([p.model_dump() for p in client.pools()])


def _duplicates(df: pd.DataFrame) -> pd.DataFrame:
    return df.loc[df.duplicated(["pool", "date"], keep=False), ["date", "pool"]]


@asset(
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    io_manager_key="parquet_io_manager",
    group_name="defillama",
    kinds={"python", "parquet"},
    check_specs=HISTORY_CHECKS,
    description="One row per (pool, UTC day): tvl_usd, apy, apy_base, apy_reward, il7d, apy_base7d "
    "(yields as fractions per year) for every pool passing a vault's static screen.",
)
def pool_history(context: AssetExecutionContext, defillama: DefiLlamaClient, project: ProjectConfig):
    first, last = window_days(context.partition_time_window)
    vaults, tokens = project.vaults(), project.tokens()
    snapshot = _fetch_snapshot(defillama)
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
    present = history.groupby("date")["pool"].nunique().reindex(days, fill_value=0)
    missing_rows = missing_pool_days(full, history, days)
    no_history = sorted(p for p, rows in batch.ok.items() if not rows)
    missing_pools = sorted(set(missing_rows.get_level_values("pool")) | set(batch.failed) | set(no_history))
    empty_days = [d.date().isoformat() for d, n in present.items() if n == 0]
    if empty_days:
        context.log.warning(f"pool_history: no rows for {len(empty_days)} day(s): {listing(empty_days)}")
    if batch.failed:
        context.log.warning(f"pool_history: {len(batch.failed)} pool(s) failed: {listing(sorted(batch.failed))}")

    yield Output(
        history,
        metadata={
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
        },
    )
    dups = _duplicates(history)
    yield AssetCheckResult(check_name="no_duplicate_pool_days", passed=dups.empty,
                           metadata={"duplicates": len(dups)})
    outliers = apy_outliers(history, MAX_ABS_APY)
    yield AssetCheckResult(check_name="apy_finite_and_sane", passed=outliers.empty,
                           severity=AssetCheckSeverity.WARN,
                           metadata={"outliers": len(outliers), "examples": markdown_table(outliers)})
    negative = history.loc[history["tvl_usd"] < 0, ["date", "pool", "tvl_usd"]]
    yield AssetCheckResult(check_name="tvl_non_negative", passed=negative.empty,
                           metadata={"negative_rows": len(negative), "examples": markdown_table(negative)})
    yield AssetCheckResult(
        check_name="universe_pools_present",
        passed=not missing_pools,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "missing_pool_days": len(missing_rows),
            "failed_pools": listing(sorted(batch.failed)),
            "pools_missing_some_day": listing(missing_pools),
        },
    )


def missing_pool_days(full: pd.DataFrame, window: pd.DataFrame, days: pd.DatetimeIndex) -> pd.MultiIndex:
    """(date, pool) pairs inside a pool's lifetime (first..last day it reports) that have no row.

    Days before a pool's first row are not missing: the pool did not exist yet.
    """
    life = full.groupby("pool")["date"].agg(["min", "max"])
    grid = pd.MultiIndex.from_product([days, life.index], names=["date", "pool"]).to_frame(index=False)
    grid = grid.join(life, on="pool")
    alive = grid[(grid["date"] >= grid["min"]) & (grid["date"] <= grid["max"])]
    expected = pd.MultiIndex.from_frame(alive[["date", "pool"]])
    return expected.difference(pd.MultiIndex.from_frame(window[["date", "pool"]]))


def _failures_frame(failed: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(sorted(failed.items()), columns=["pool", "error"])


def live_days(first: dt.date, last: dt.date, today: dt.date) -> list[dt.date]:
    """Days that today's ``/pools`` snapshot stands for (today and the last complete day)."""
    cutoff = today - dt.timedelta(days=LIVE_SNAPSHOT_LAG_DAYS)
    return [d.date() for d in pd.date_range(max(first, cutoff), last, freq="D")]


@multi_asset(
    outs={
        "pool_metadata": AssetOut(
            io_manager_key="parquet_io_manager",
            description="The union of the vaults' universes, one row per (pool, day): chain, project, "
            "symbol, underlying tokens, TVL, yields (fractions), the vaults that may hold it, and "
            "whether the day was reconstructed from histories (no historical /pools exists).",
            kinds={"python", "parquet"},
        ),
        "universe_exclusions": AssetOut(
            io_manager_key="parquet_io_manager",
            description="Every (vault, day, pool) left out of a universe, with the reason.",
            kinds={"python", "parquet"},
        ),
    },
    ins={"pool_history": AssetIn()},
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="defillama",
    check_specs=[
        AssetCheckSpec("no_duplicate_pool_days", asset="pool_metadata", blocking=True,
                       description="one row per (pool, date)"),
        AssetCheckSpec("universe_pools_have_history", asset="pool_metadata",
                       description="every universe pool has a pool_history row that day, or is reported"),
    ],
)
def pool_metadata(context: AssetExecutionContext, pool_history: pd.DataFrame, defillama: DefiLlamaClient,
                  project: ProjectConfig):
    first, last = window_days(context.partition_time_window)
    vaults, tokens = project.vaults(), project.tokens()
    snapshot = _fetch_snapshot(defillama)
    today = dt.datetime.now(dt.UTC).date()
    live = live_days(first, last, today)

    past = pool_history.loc[~pool_history["date"].dt.date.isin(live)]
    snapshot_rows = [snapshot.assign(date=pd.Timestamp(d)) for d in live]
    rows = pd.concat([past.assign(reconstructed=True),
                      *(r.assign(reconstructed=False) for r in snapshot_rows)], ignore_index=True)
    members, exclusions = select_universe(rows, snapshot, vaults, tokens)
    members = members[[
        "date", "pool", "chain", "project", "symbol", "tvl_usd", "apy", "apy_base", "apy_reward",
        "underlying_tokens", "underlying_symbols", "reward_tokens", "pool_meta", "vaults", "reconstructed",
    ]]
    reconstructed_days = int(members.loc[members["reconstructed"], "date"].nunique())
    counts = exclusions.groupby(["vault", "reason"]).size().rename("pool_days").reset_index()
    per_vault = {name: int(members["vaults"].map(lambda v, n=name: n in v).sum()) for name in vaults}
    yield Output(
        members,
        output_name="pool_metadata",
        metadata={
            "dagster/row_count": len(members),
            "pools": int(members["pool"].nunique()),
            "pool_days_per_vault": MetadataValue.json(per_vault),
            "reconstructed": reconstructed_days > 0,
            "reconstructed_days": reconstructed_days,
            "survivorship_note": "past days are screened on today's /pools list: pools that vanished "
            "since are absent" if reconstructed_days else "live snapshot",
            "exclusion_reasons": markdown_table(counts),
            "preview": markdown_table(members.drop(columns=["underlying_tokens", "reward_tokens"]).tail(10)),
        },
    )
    yield Output(exclusions, output_name="universe_exclusions",
                 metadata={"dagster/row_count": len(exclusions), "reasons": markdown_table(counts)})
    dups = _duplicates(members)
    yield AssetCheckResult(asset_key="pool_metadata", check_name="no_duplicate_pool_days", passed=dups.empty,
                           metadata={"duplicates": len(dups)})
    have = pd.MultiIndex.from_frame(pool_history[["date", "pool"]])
    lacking = members.loc[~pd.MultiIndex.from_frame(members[["date", "pool"]]).isin(have), ["date", "pool", "symbol"]]
    yield AssetCheckResult(asset_key="pool_metadata", check_name="universe_pools_have_history",
                           passed=lacking.empty, severity=AssetCheckSeverity.WARN,
                           metadata={"pool_days_without_history": len(lacking), "examples": markdown_table(lacking)})


defillama_assets = [pool_history, pool_metadata]
