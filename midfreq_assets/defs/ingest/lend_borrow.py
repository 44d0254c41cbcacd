"""``pool_lend_borrow``: the lending markets of the vaults' universes, supply and borrow side per day.

DefiLlama serves a lending pool's supply S, borrows B and borrow APY on its paid API only
(``/yields/poolsBorrow`` names the markets, ``/yields/chartLendBorrow/<uuid>`` gives each one's
daily history); the rate-curve fit reads them (docs/METHOD.md "Lending markets"). The pools
fetched are the ``pool_metadata`` pools of the range that ``poolsBorrow`` lists.

Without an API key nothing is requested, nothing is written (the lake keeps what it had) and the
materialization says so: everything downstream runs on the TVL-share rule as before. With a key,
the same integrity rules as ``pool_history``: one ``poolsBorrow`` fetch and one history per pool for
the whole range, invalid answers fail their pool alone, a pool that failed or delivered less keeps
its previous rows and fails the blocking ``lending_pools_fetched`` check, duplicates are refused.
"""

import pandas as pd
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    Definitions,
    Failure,
    Output,
    asset,
    definitions,
)

from midfreq_assets.concurrency import LEND_BORROW_POOL
from midfreq_assets.defs.ingest.defillama import METADATA, _failures_frame, _previous
from midfreq_assets.domain.config.project import Project
from midfreq_assets.domain.ingest.lend_borrow import LEND_BORROW_COLUMNS, lend_borrow_frame, lending_pool_ids
from midfreq_assets.domain.ingest.pool_history import (
    FLAG,
    duplicate_pool_days,
    flagged_rows,
    merge_kept_rows,
    restrict_to_days,
)
from midfreq_assets.metadata import TOLERATE_GAPS, listing, markdown_table, partition_metadata
from midfreq_assets.partitions import daily_partitions, window_days
from midfreq_assets.previews import schema_metadata
from midfreq_assets.project import current_project
from midfreq_resources.io.parquet_io_manager import REQUIRED_COLUMNS
from midfreq_resources.settings import DEFILLAMA_PRO_API_KEY_ENV

LEND_BORROW = AssetKey("pool_lend_borrow")
FETCHED = "lending_pools_fetched"
NO_KEY = (
    f"no DefiLlama API key (${DEFILLAMA_PRO_API_KEY_ENV} unset): the paid lending endpoints were not "
    "requested, nothing written; lending pools are diluted by TVL share as without this asset"
)
CHECKS = [
    AssetCheckSpec(
        FETCHED,
        asset=LEND_BORROW,
        blocking=True,
        description="every lending pool's chartLendBorrow was fetched, valid, and at least as complete "
        "as the lake; a pool that failed keeps its previous rows and fails this check, naming it",
    ),
    AssetCheckSpec(
        "lend_borrow_sane",
        asset=LEND_BORROW,
        description="supply and borrow finite, borrows <= supply, APYs within range; rows outside are "
        "flagged (kept with the reason, never used)",
    ),
]


def _refuse_duplicates(frame: pd.DataFrame) -> None:
    dups = duplicate_pool_days(frame)
    if len(dups):
        raise Failure(
            f"refusing to write pool_lend_borrow: {len(dups)} duplicated (pool, date) rows, e.g. "
            f"{listing(dups.astype(str).agg(' '.join, axis=1).tolist(), 5)}"
        )


def build_lend_borrow_asset(project: Project, partitions_def: DailyPartitionsDefinition) -> AssetsDefinition:
    """``pool_lend_borrow`` on ``partitions_def`` (the universes come from ``pool_metadata``)."""
    del project  # the universes are pool_metadata's: nothing of the configuration is read here

    @asset(
        key=LEND_BORROW,
        ins={"pool_metadata": AssetIn(key=METADATA, metadata={**TOLERATE_GAPS, "optional": True})},
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="parquet_io_manager",
        metadata={
            REQUIRED_COLUMNS: [c for c in LEND_BORROW_COLUMNS if c != FLAG],
            **schema_metadata("pool_lend_borrow"),
        },
        group_name="defillama",
        kinds={"python", "parquet"},
        check_specs=CHECKS,
        pool=LEND_BORROW_POOL,
        required_resource_keys={"defillama_pro", "parquet_io_manager"},
        description="Per (lending pool of a universe, UTC day), from DefiLlama's paid API: total_supply_usd, "
        "total_borrow_usd, debt_ceiling_usd, borrow and supply APYs (fractions per year), utilization = "
        "borrow / supply; `flag` names why a row is implausible. Without an API key: not fetched (said in "
        "the metadata), the lake untouched.",
    )
    def pool_lend_borrow(context: AssetExecutionContext, pool_metadata: pd.DataFrame):
        pro = context.resources.defillama_pro
        first, last = window_days(context.partition_time_window)
        if not pro.has_key:
            context.log.info(f"pool_lend_borrow {first}..{last}: {NO_KEY}")
            yield Output(None, metadata={"status": NO_KEY, "api_key": False})
            for spec in CHECKS:
                if AssetCheckKey(LEND_BORROW, spec.name) in context.selected_asset_check_keys:
                    yield AssetCheckResult(
                        asset_key=LEND_BORROW, check_name=spec.name, passed=True, metadata={"status": NO_KEY}
                    )
            return
        io = context.resources.parquet_io_manager
        universe = set(pool_metadata["pool"]) if len(pool_metadata) else set()
        lending = sorted(universe & lending_pool_ids(pro.pools_borrow()))
        batch = pro.lend_borrow_charts(lending)
        if lending and not batch.ok:
            raise Failure(
                f"no lending history could be fetched for {first}..{last} ({len(batch.failed)} pools "
                "failed); nothing written, the previous partitions are untouched",
                metadata={"failed_pools": markdown_table(_failures_frame(batch.failed))},
            )
        fetched = restrict_to_days(lend_borrow_frame(batch.ok), pd.Timestamp(first), pd.Timestamp(last))
        days = pd.date_range(first, last, freq="D")
        previous = _previous(io, LEND_BORROW, days, context)
        requested = previous["pool"].isin(lending) if len(previous) else None
        frame, kept = merge_kept_rows(fetched, previous, ["pool", "date"], requested)
        frame = frame.sort_values(["date", "pool"], kind="stable").reset_index(drop=True)
        _refuse_duplicates(frame)
        flagged = flagged_rows(frame.assign(apy=frame["apy_base"], tvl_usd=frame["total_supply_usd"]))
        if batch.failed:
            context.log.error(
                f"pool_lend_borrow: {len(batch.failed)} lending pool(s) failed (previous rows kept: "
                f"{len(kept)}): {listing(sorted(batch.failed))}"
            )
        failed_meta = {
            "failed_pools": len(batch.failed),
            "failed_pool_details": markdown_table(_failures_frame(batch.failed)),
            "rows_kept_from_previous_run": len(kept),
        }
        yield Output(
            frame,
            metadata=partition_metadata(
                context,
                frame,
                lambda part, _k: {
                    "dagster/row_count": len(part),
                    "pools": int(part["pool"].nunique()) if len(part) else 0,
                    "total_supply_usd": float(part["total_supply_usd"].sum()) if len(part) else 0.0,
                    "total_borrow_usd": float(part["total_borrow_usd"].sum()) if len(part) else 0.0,
                },
                {
                    "api_key": True,
                    "universe_pools": len(universe),
                    "lending_pools": len(lending),
                    "lending_pool_ids": listing(lending),
                    **failed_meta,
                    "flagged_rows": len(flagged),
                    "preview": markdown_table(frame.tail(10)),
                },
                asset_key=LEND_BORROW,
            ),
        )
        short = sorted(set(kept["pool"])) if len(kept) else []
        results = [
            AssetCheckResult(
                asset_key=LEND_BORROW,
                check_name=FETCHED,
                passed=not batch.failed and not short,
                metadata={
                    **failed_meta,
                    "failed": ", ".join(sorted(batch.failed)),
                    "delivered_less_than_the_lake_had": ", ".join(sorted(set(short) - set(batch.failed))),
                },
            ),
            AssetCheckResult(
                asset_key=LEND_BORROW,
                check_name="lend_borrow_sane",
                passed=flagged.empty,
                severity=AssetCheckSeverity.WARN,
                metadata={"flagged_rows": len(flagged), "examples": markdown_table(flagged)},
            ),
        ]
        yield from (
            r
            for r in results
            if AssetCheckKey(r.asset_key, r.check_name) in context.selected_asset_check_keys
        )

    return pool_lend_borrow


@definitions
def defs() -> Definitions:
    project = current_project()
    return Definitions(assets=[build_lend_borrow_asset(project, daily_partitions(project))])
