"""The nightly DefiLlama refresh: runs after midnight UTC for the last complete day."""

from __future__ import annotations

from dagster import DefaultScheduleStatus, build_schedule_from_partitioned_job

from midfreq_assets.jobs import nightly_refresh_job

nightly_refresh_schedule = build_schedule_from_partitioned_job(
    nightly_refresh_job,
    hour_of_day=1,
    minute_of_hour=30,
    default_status=DefaultScheduleStatus.RUNNING,
    name="nightly_refresh_schedule",
)
