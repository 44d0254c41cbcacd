"""DefiLlama ingestion: ``pool_history``, ``pool_metadata``, ``universe_exclusions`` and
``pool_rankings`` from one fetch.

One step per run fetches ``/pools`` once and each candidate pool's ``/chart`` once for the whole
range (a single-run backfill of N days does not fetch N times), then writes the four outputs
together, so they describe the same fetch. ``pool_history`` comes first in the lineage because
the live API has no historical ``/pools``: a past day's universe is reconstructed from what the
histories show that day (and flagged so). Each output can be materialized on its own
(``can_subset``): the step fetches what it needs and writes only what was selected.

Every frame is validated before it is yielded (duplicates, negative TVL: the write is refused);
a pool whose answer is invalid fails alone, keeps its previous rows and fails the blocking
``requested_pools_fetched`` checks (the completeness rule: see ``defillama_ingest``).
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

from midfreq_assets.asset_plots import universe_plots
from midfreq_assets.concurrency import DEFILLAMA_POOL
from midfreq_assets.domain.config.project import Project
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.ingest.pool_history import (
    FLAG,
    HISTORY_COLUMNS,
    MAX_ABS_APY,
    MAX_TVL_USD,
    carry_previous_derived,
    charts_frame,
    combine_histories,
    duplicate_pool_days,
    flagged_rows,
    merge_kept_rows,
    missing_pool_days,
    missing_pools_table,
    restrict_to_days,
    rows_per_day,
    usable_rows,
)
from midfreq_assets.domain.ingest.universe import (
    METADATA_COLUMNS,
    live_days,
    pool_days_per_vault,
    snapshot_frame,
    static_candidates,
    universe_by_day,
)
from midfreq_assets.metadata import listing, markdown_table, partition_metadata
from midfreq_assets.partitions import daily_partitions, window_days
from midfreq_assets.previews import POOL_NAMES, fmt_number, learn_pool_names, schema_metadata
from midfreq_assets.project import current_project
from midfreq_resources.io.parquet_io_manager import REQUIRED_COLUMNS, ParquetIOManager

HISTORY, METADATA, EXCLUSIONS = (
    AssetKey("pool_history"),
    AssetKey("pool_metadata"),
    AssetKey("universe_exclusions"),
)
RANKINGS = AssetKey("pool_rankings")
OUTPUTS = {
    HISTORY: "pool_history",
    METADATA: "pool_metadata",
    EXCLUSIONS: "universe_exclusions",
    RANKINGS: "pool_rankings",
}
FETCHED = "requested_pools_fetched"

CHECKS = [
    *(
        AssetCheckSpec(
            FETCHED,
            asset=key,
            blocking=True,
            description="every requested pool's /chart was fetched, valid, and at least as complete as "
            "the lake; a pool that failed or delivered less keeps its previous rows (merge by pool) "
            "and fails this check, naming it",
        )
        for key in OUTPUTS
    ),
    AssetCheckSpec(
        "apy_finite_and_sane",
        asset=HISTORY,
        description=f"APY finite with |APY| <= {MAX_ABS_APY:.0%}/yr and TVL <= {MAX_TVL_USD:.0e} USD; "
        "rows outside are flagged (kept in the lake with the reason, never used)",
    ),
    AssetCheckSpec(
        "universe_pools_present",
        asset=HISTORY,
        description="every candidate pool has a row each day, or is reported missing/failed",
    ),
    AssetCheckSpec(
        "universe_pools_have_history",
        asset=METADATA,
        description="every universe pool has a pool_history row that day, or is reported",
    ),
]


def underlying_yield_pools(vaults: Iterable[VaultConfig]) -> set[str]:
    """Pools whose own APY is a yield-bearing underlying's yield (e.g. sUSDS): fetched too."""
    return {uuid for v in vaults for uuid in v.yields.underlying_yield.pools.values()}


def _failures_frame(failed: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(sorted(failed.items()), columns=["pool", "error"])


def _previous(
    io: ParquetIOManager, key: AssetKey, days: pd.DatetimeIndex, context: AssetExecutionContext
) -> pd.DataFrame:
    """What the lake holds for ``days`` of ``key`` before this run (unreadable days: warned, not kept)."""
    frames, unreadable = io.read_existing(list(key.path), [d.strftime("%Y-%m-%d") for d in days])
    for path, why in unreadable.items():
        context.log.warning(
            f"{key.to_user_string()}: previous partition {path} is unreadable, replaced: {why}"
        )
    return pd.concat(frames.values(), ignore_index=True) if frames else pd.DataFrame()


def _refuse_blocking_problems(history: pd.DataFrame, members: pd.DataFrame | None) -> None:
    """Validate before writing: a frame that would break the lake's contract is never written."""
    problems = []
    for name, frame in (("pool_history", history), ("pool_metadata", members)):
        if frame is None:
            continue
        dups = duplicate_pool_days(frame)
        if len(dups):
            problems.append(
                f"{name}: {len(dups)} duplicated (pool, date) rows, e.g. "
                f"{listing(dups.astype(str).agg(' '.join, axis=1).tolist(), 5)}"
            )
    negative = history.loc[history["tvl_usd"] < 0, ["date", "pool"]]
    if len(negative):
        problems.append(
            f"pool_history: {len(negative)} row(s) with negative tvl_usd, e.g. "
            f"{listing(negative['pool'].tolist(), 5)}"
        )
    if problems:
        raise Failure("refusing to write: " + "; ".join(problems))


def build_defillama_assets(
    project: Project, partitions_def: DailyPartitionsDefinition
) -> list[AssetsDefinition]:
    """The ingestion multi-asset of ``project``'s vaults on ``partitions_def``."""
    vaults, tokens = project.vaults, project.tokens

    @multi_asset(
        name="defillama_ingest",
        outs={
            "pool_history": AssetOut(
                key=HISTORY,
                io_manager_key="parquet_io_manager",
                kinds={"python", "parquet"},
                is_required=False,
                metadata={
                    REQUIRED_COLUMNS: [c for c in HISTORY_COLUMNS if c != FLAG],
                    **schema_metadata("pool_history"),
                },
                description="One row per (pool, UTC day): tvl_usd, apy, apy_base, apy_reward, il7d, apy_base7d "
                "(yields as fractions per year) for every pool passing a vault's static screen; `flag` names "
                "why a row's numbers are implausible (kept, never used).",
            ),
            "pool_metadata": AssetOut(
                key=METADATA,
                io_manager_key="parquet_io_manager",
                kinds={"python", "parquet"},
                is_required=False,
                metadata={REQUIRED_COLUMNS: METADATA_COLUMNS, **schema_metadata("pool_metadata")},
                description="The union of the vaults' universes, one row per (pool, day): chain, project, "
                "symbol, underlying tokens, TVL, yields (fractions), the vaults that may hold it, and "
                "whether the day was reconstructed from histories (no historical /pools exists).",
            ),
            "universe_exclusions": AssetOut(
                key=EXCLUSIONS,
                io_manager_key="parquet_io_manager",
                kinds={"python", "parquet"},
                is_required=False,
                metadata=schema_metadata("universe_exclusions"),
                description="Every (vault, day, pool) left out of a universe, with the reason.",
            ),
            "pool_rankings": AssetOut(
                key=RANKINGS,
                io_manager_key="parquet_io_manager",
                kinds={"python", "parquet"},
                is_required=False,
                metadata=schema_metadata("pool_rankings"),
                description="Each vault's top_pools ranking (configs: top_pools): per (vault, day, pool passing "
                "the vault's other rules) the day's rank by APY, the days in the top N over the window before "
                "the day (window_start..window_end) and whether the ranking picks it; a vault with "
                "top_pools.allow_list keeps only the picked pools that day.",
            ),
        },
        internal_asset_deps={
            "pool_metadata": {HISTORY, RANKINGS},
            "universe_exclusions": {HISTORY, RANKINGS},
            "pool_rankings": {HISTORY},
        },
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        group_name="defillama",
        can_subset=True,
        check_specs=CHECKS,
        pool=DEFILLAMA_POOL,
        required_resource_keys={"defillama", "parquet_io_manager"},
    )
    def defillama_ingest(context: AssetExecutionContext):
        """Completeness rule (docs/RUNBOOK.md "Completeness"): a day's files are rewritten with this
        fetch, plus the previous rows of every requested pool this fetch could not deliver (failed,
        invalid, or without that day), so nothing good is replaced by less; pool_metadata and
        universe_exclusions are derived from that same merged history, so the three never disagree.
        Any failed pool fails the blocking ``requested_pools_fetched`` checks after the write."""
        defillama = context.resources.defillama
        io = context.resources.parquet_io_manager
        first, last = window_days(context.partition_time_window)
        selected = set(context.selected_asset_keys)
        checks = set(context.selected_asset_check_keys)
        snapshot = snapshot_frame([p.model_dump() for p in defillama.pools()])
        learn_pool_names(snapshot)  # previews show each pool's symbol, project and chain beside its uuid
        candidates = static_candidates(snapshot, vaults, tokens)
        candidates += sorted(underlying_yield_pools(vaults.values()) - set(candidates))
        batch = defillama.charts(candidates)
        if candidates and not batch.ok:
            raise Failure(
                f"no pool history could be fetched for {first}..{last} ({len(batch.failed)} pools failed); "
                "nothing written, the previous partitions are untouched",
                metadata={"failed_pools": markdown_table(_failures_frame(batch.failed))},
            )
        full = charts_frame(batch.ok)
        fetched = restrict_to_days(full, pd.Timestamp(first), pd.Timestamp(last))
        days = pd.date_range(first, last, freq="D")
        previous = _previous(io, HISTORY, days, context)
        requested = previous["pool"].isin(candidates) if len(previous) else None
        history, kept = merge_kept_rows(fetched, previous, ["pool", "date"], requested)
        history = combine_histories([history])
        if candidates and history.empty:
            raise Failure(
                f"the {len(batch.ok)} fetched histories have no row in {first}..{last}: nothing to write"
            )

        present = rows_per_day(history, days)
        missing_rows = missing_pool_days(full, fetched, days)
        no_history = sorted(p for p, rows in batch.ok.items() if not rows)
        missing_pools = sorted(
            set(missing_rows.get_level_values("pool")) | set(batch.failed) | set(no_history)
        )
        empty_days = [d.date().isoformat() for d, n in present.items() if n == 0]
        flagged = flagged_rows(history)
        if empty_days:
            context.log.warning(f"pool_history: no rows for {len(empty_days)} day(s): {listing(empty_days)}")
        if batch.failed:
            context.log.error(
                f"pool_history: {len(batch.failed)} pool(s) failed (previous rows kept: {len(kept)}): "
                f"{listing(sorted(batch.failed))}"
            )

        members = exclusions = rankings = None
        if selected & {METADATA, EXCLUSIONS, RANKINGS}:
            live = live_days(first, last, dt.datetime.now(dt.UTC).date())
            lookback = combine_histories([usable_rows(full), history])  # flagged rows never rank
            members, exclusions, rankings = universe_by_day(
                history, snapshot, vaults, tokens, live, lookback=usable_rows(lookback)
            )
            derived = carry_previous_derived(
                {"members": members, "exclusions": exclusions, "rankings": rankings},
                {
                    "members": _previous(io, METADATA, days, context),
                    "exclusions": _previous(io, EXCLUSIONS, days, context),
                    "rankings": _previous(io, RANKINGS, days, context),
                },
                kept,
            )
            members, exclusions, rankings = derived["members"], derived["exclusions"], derived["rankings"]
        _refuse_blocking_problems(history, members)

        failed_meta = {
            "failed_pools": len(batch.failed),
            "failed_pool_details": markdown_table(_failures_frame(batch.failed)),
            "rows_kept_from_previous_run": len(kept),
        }
        if HISTORY in selected:
            yield Output(
                history,
                output_name="pool_history",
                metadata=partition_metadata(
                    context,
                    history,
                    lambda part, _k: {
                        "dagster/row_count": len(part),
                        "pools": int(part["pool"].nunique()) if len(part) else 0,
                        "flagged_rows": int(part[FLAG].notna().sum()) if len(part) else 0,
                        "total_tvl_usd": float(part["tvl_usd"].sum()) if len(part) else 0.0,
                    },
                    {
                        "candidate_pools": len(candidates),
                        **failed_meta,
                        "flagged_rows": len(flagged),
                        "pools_without_history": listing(no_history),
                        "pools_missing_some_day": len(missing_pools),
                        "days": len(days),
                        "days_without_rows": len(empty_days),
                        "preview": markdown_table(history.tail(10)),
                        **universe_plots(history),
                    },
                    asset_key=HISTORY,
                ),
            )
        if rankings is not None and RANKINGS in selected:  # before pool_metadata, which takes its allow-lists
            yield Output(
                rankings,
                output_name="pool_rankings",
                metadata=partition_metadata(
                    context,
                    rankings,
                    lambda part, _k: {
                        "dagster/row_count": len(part),
                        "picked": int(part["picked"].sum()) if len(part) else 0,
                    },
                    {**ranking_metadata(rankings, vaults), **failed_meta},
                    asset_key=RANKINGS,
                ),
            )
        if members is not None and exclusions is not None:
            reconstructed_days = int(members.loc[members["reconstructed"], "date"].nunique())
            counts = exclusions.groupby(["vault", "reason"]).size().rename("pool_days").reset_index()
            if METADATA in selected:
                yield Output(
                    members,
                    output_name="pool_metadata",
                    metadata=partition_metadata(
                        context,
                        members,
                        lambda part, _k: {
                            "dagster/row_count": len(part),
                            "pools": int(part["pool"].nunique()) if len(part) else 0,
                            "reconstructed": bool(part["reconstructed"].any()) if len(part) else False,
                            **{
                                f"pools_{v}": int(part["vaults"].map(lambda x, v=v: v in list(x)).sum())
                                if len(part)
                                else 0
                                for v in vaults
                            },
                        },
                        {
                            "pool_days_per_vault": MetadataValue.json(pool_days_per_vault(members, vaults)),
                            "reconstructed_days": reconstructed_days,
                            "survivorship_note": "past days are screened on today's /pools list: pools that vanished "
                            "since are absent"
                            if reconstructed_days
                            else "live snapshot",
                            "exclusion_reasons": markdown_table(counts),
                            **failed_meta,
                            "preview": markdown_table(
                                members.drop(columns=["underlying_tokens", "reward_tokens"]).tail(10)
                            ),
                        },
                        asset_key=METADATA,
                    ),
                )
            if EXCLUSIONS in selected:
                yield Output(
                    exclusions,
                    output_name="universe_exclusions",
                    metadata=partition_metadata(
                        context,
                        exclusions,
                        lambda part, _k: {"dagster/row_count": len(part)},
                        {"reasons": markdown_table(counts), **failed_meta},
                        asset_key=EXCLUSIONS,
                    ),
                )

        short = sorted(set(kept["pool"])) if len(kept) else []
        absent = missing_pools_table(
            missing_rows,
            sorted(batch.failed),
            no_history,
            full,
            snapshot.drop_duplicates("pool").set_index("pool")["tvl_usd"],
        )
        results = [
            *(
                AssetCheckResult(
                    asset_key=key,
                    check_name=FETCHED,
                    passed=not batch.failed and not short,
                    metadata={
                        **failed_meta,
                        "failed": ", ".join(sorted(batch.failed)),
                        "delivered_less_than_the_lake_had": ", ".join(sorted(set(short) - set(batch.failed))),
                    },
                )
                for key in OUTPUTS
            ),
            AssetCheckResult(
                asset_key=HISTORY,
                check_name="apy_finite_and_sane",
                passed=flagged.empty,
                severity=AssetCheckSeverity.WARN,
                metadata={"flagged_rows": len(flagged), "examples": markdown_table(flagged)},
            ),
            AssetCheckResult(
                asset_key=HISTORY,
                check_name="universe_pools_present",
                passed=not missing_pools,
                severity=AssetCheckSeverity.WARN,
                description=missing_sentence(absent, first, last),
                metadata={
                    "missing_pool_days": len(missing_rows),
                    "pools_missing_some_day": listing(missing_pools),
                    "failed_pools": listing(sorted(batch.failed)),
                    "top_offenders": markdown_table(absent, max_rows=15),
                },
            ),
        ]
        if members is not None:
            have = pd.MultiIndex.from_frame(history[["date", "pool"]])
            lacking = members.loc[
                ~pd.MultiIndex.from_frame(members[["date", "pool"]]).isin(have), ["date", "pool", "symbol"]
            ]
            results.append(
                AssetCheckResult(
                    asset_key=METADATA,
                    check_name="universe_pools_have_history",
                    passed=lacking.empty,
                    severity=AssetCheckSeverity.WARN,
                    metadata={"pool_days_without_history": len(lacking), "examples": markdown_table(lacking)},
                )
            )
        yield from (r for r in results if AssetCheckKey(r.asset_key, r.check_name) in checks)

    return [defillama_ingest]


def missing_sentence(absent, first, last) -> str:
    """The ``universe_pools_present`` result in one sentence: how many pools lack how many days, the
    largest of them, what it means downstream and what to do."""
    if absent.empty:
        return f"every pool has a row on each day of its lifetime in {first}..{last}"
    top = absent.iloc[0]
    name = POOL_NAMES.get(str(top["pool"]), str(top["pool"]))
    tvl = (
        f", last TVL {fmt_number(top['last_tvl_usd'], 'USD')} USD"
        if top["last_tvl_usd"] == top["last_tvl_usd"]
        else ""
    )
    days = (
        f"{int(top['missing_days'])} day(s) {top['first_missing']:%Y-%m-%d}..{top['last_missing']:%Y-%m-%d}"
        if top["missing_days"]
        else top["reason"]
    )
    why = ", ".join(f"{n} {reason}" for reason, n in absent["reason"].value_counts().items())
    return (
        f"{len(absent)} pool(s) lack data in {first}..{last} ({why}; {int(absent['missing_days'].sum())} "
        f"pool-day(s) missing), the largest {name} ({days}{tvl}): those days give the models and the optimizer "
        "no data for them (a holding is carried through, flagged in_gap); re-run pool_history for them once "
        "DefiLlama serves them, or exclude the pool in the vault config."
    )


def ranking_metadata(rankings: pd.DataFrame, vaults: dict[str, VaultConfig]) -> dict[str, object]:
    """Row count, each vault's ranking parameters and picks per day (a vault's universe uses them
    only with ``top_pools.allow_list``)."""
    picks = rankings[rankings["picked"]].groupby("vault")["pool"].count().to_dict() if len(rankings) else {}
    days = rankings.groupby("vault")["date"].nunique().to_dict() if len(rankings) else {}
    return {
        "dagster/row_count": len(rankings),
        "rankings": markdown_table(
            pd.DataFrame(
                [
                    {
                        "vault": name,
                        "ranking": v.top_pools.describe(),
                        "allow_list": v.top_pools.allow_list,
                        "picked_per_day": round(picks.get(name, 0) / max(days.get(name, 0), 1), 2),
                    }
                    for name, v in vaults.items()
                ]
            )
        ),
    }


@definitions
def defs() -> Definitions:
    project = current_project()
    return Definitions(assets=build_defillama_assets(project, daily_partitions(project)))
