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



def build_vault_schedules(vault_names: list[str], jobs_by_name: dict) -> list:
    """Per vault: the weekly refit (Mondays 02:30 UTC, after the ingestion) and the daily chain
    (03:00 UTC: adjusted yields, features, predictions with the week's model, rebalance)."""
    schedules = []
    for name in vault_names:
        schedules.append(build_schedule_from_partitioned_job(
            jobs_by_name[f"{name}_fitted_models"], name=f"{name}_weekly_refit_schedule",
            hour_of_day=2, minute_of_hour=30, day_of_week=1, default_status=DefaultScheduleStatus.RUNNING,
        ))
        schedules.append(build_schedule_from_partitioned_job(
            jobs_by_name[f"{name}_daily"], name=f"{name}_daily_schedule",
            hour_of_day=3, minute_of_hour=0, default_status=DefaultScheduleStatus.RUNNING,
        ))
    return schedules
