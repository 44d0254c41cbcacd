"""Ingestion jobs and their nightly schedules, each for the last complete UTC day.

``nightly_refresh`` (01:30 UTC): DefiLlama pools and histories and token prices — the one
schedule running by default; ``binance_klines_refresh`` (06:00 UTC: the archive publishes a day's
file the next day) is off until turned on (UI -> Automation, or ``dagster schedule start``).
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

from midfreq_assets.domain.config.project import Project
from midfreq_assets.partitions import binance_partitions, daily_partitions
from midfreq_assets.project import current_project


def build_ingest_automation(project: Project) -> Definitions:
    nightly = define_asset_job(
        "nightly_refresh",
        selection=AssetSelection.groups("defillama", "prices"),
        partitions_def=daily_partitions(project),
        description="Refresh the ingestion assets for one day (the schedule picks the last complete day).",
    )
    jobs = [nightly]
    schedules = [build_schedule_from_partitioned_job(nightly, hour_of_day=1, minute_of_hour=30,
                                                     default_status=DefaultScheduleStatus.RUNNING,
                                                     name="nightly_refresh_schedule")]
    if project.binance is not None:
        klines = define_asset_job(
            "binance_klines_refresh",
            selection=AssetSelection.assets(AssetKey("binance_klines")),
            partitions_def=binance_partitions(project),
            description="Collect one day of Binance klines (the archive publishes a day's file the next day).",
        )
        jobs.append(klines)
        schedules.append(build_schedule_from_partitioned_job(klines, hour_of_day=6, minute_of_hour=0,
                                                             default_status=DefaultScheduleStatus.STOPPED,
                                                             name="binance_klines_schedule"))
    return Definitions(jobs=jobs, schedules=schedules)


@definitions
def defs() -> Definitions:
    return build_ingest_automation(current_project())
