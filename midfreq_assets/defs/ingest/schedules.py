"""Ingestion jobs and their schedules, each for the last complete UTC day (or month).

``nightly_refresh`` (01:30 UTC): DefiLlama pools and histories and token prices — the one
schedule running by default; ``binance_klines_refresh`` (06:00 UTC: the archive publishes a day's
file the next day): klines and, with ``futures:``, premium index bars; ``binance_funding_refresh``
(the 2nd of each month, 06:30 UTC): the last complete month of funding rates (published monthly
only). The Binance schedules are off until turned on (UI -> Automation, or ``dagster schedule start``).
"""

from dagster import (
    AssetKey,
    AssetSelection,
    DefaultScheduleStatus,
    Definitions,
    build_schedule_from_partitioned_job,
    define_asset_job,
    definitions,
)

from midfreq_assets import stages
from midfreq_assets.defs.ingest.binance_futures import FUNDING, PREMIUM
from midfreq_assets.domain.config.project import Project
from midfreq_assets.partitions import binance_partitions, daily_partitions, klines_last_day, monthly_from
from midfreq_assets.project import current_project


def build_ingest_automation(project: Project) -> Definitions:
    nightly = define_asset_job(
        "nightly_refresh",
        metadata=stages.plan(stages.DAYS),
        selection=AssetSelection.groups("defillama", "prices"),
        partitions_def=daily_partitions(project),
        description="Refresh the ingestion assets for one day (the schedule picks the last complete day).",
    )
    jobs = [nightly]
    schedules = [
        build_schedule_from_partitioned_job(
            nightly,
            hour_of_day=1,
            minute_of_hour=30,
            default_status=DefaultScheduleStatus.RUNNING,
            name="nightly_refresh_schedule",
        )
    ]
    if project.binance is not None:
        futures = project.binance.futures
        bars = [
            AssetKey("binance_klines"),
            *([PREMIUM] if futures and futures.premium_index_intervals else []),
        ]
        klines = define_asset_job(
            "binance_klines_refresh",
            metadata=stages.plan(stages.KLINES_DAYS),
            selection=AssetSelection.assets(*bars),
            partitions_def=binance_partitions(project),
            description="Collect one day of Binance klines (the archive publishes a day's file the next day).",
        )
        jobs.append(klines)
        schedules.append(
            build_schedule_from_partitioned_job(
                klines,
                hour_of_day=6,
                minute_of_hour=0,
                default_status=DefaultScheduleStatus.STOPPED,
                name="binance_klines_schedule",
            )
        )
        if futures is not None and futures.funding_rate:
            funding = define_asset_job(
                "binance_funding_refresh",
                metadata=stages.plan(stages.KLINES_MONTHS),
                selection=AssetSelection.assets(FUNDING),
                partitions_def=monthly_from(project.binance.start_date, klines_last_day()),
                description="Collect one month of Binance funding rates (the archive publishes them monthly).",
            )
            jobs.append(funding)
            schedules.append(
                build_schedule_from_partitioned_job(
                    funding,
                    day_of_month=2,
                    hour_of_day=6,
                    minute_of_hour=30,
                    default_status=DefaultScheduleStatus.STOPPED,
                    name="binance_funding_schedule",
                )
            )
    return Definitions(jobs=jobs, schedules=schedules)


@definitions
def defs() -> Definitions:
    return build_ingest_automation(current_project())
