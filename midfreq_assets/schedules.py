"""Nightly refreshes, each for the last complete UTC day."""

from __future__ import annotations

from dagster import DefaultScheduleStatus, build_schedule_from_partitioned_job

from midfreq_assets.jobs import binance_klines_job, nightly_refresh_job

nightly_refresh_schedule = build_schedule_from_partitioned_job(
    nightly_refresh_job,
    hour_of_day=1,
    minute_of_hour=30,
    default_status=DefaultScheduleStatus.RUNNING,
    name="nightly_refresh_schedule",
)

binance_klines_schedule = build_schedule_from_partitioned_job(
    binance_klines_job,
    hour_of_day=6,
    minute_of_hour=0,
    default_status=DefaultScheduleStatus.RUNNING,
    name="binance_klines_schedule",
)
