"""A vault's jobs, schedules and the sensor that chains the nightly runs.

The nightly chain is two runs because it spans two partitions definitions: ``<vault>_research``
(monthly: adjusted yields, features, predictions of the month holding the day; the month so far
is rewritten) and then ``<vault>_daily`` (daily: the real positions, the rebalance, the ticket and
its execution). ``<vault>_daily_schedule`` (03:00 UTC) launches the first for the previous day,
tagged with it; ``<vault>_daily_after_research`` launches the second for that day when the first
succeeded. Schedules hold their job objects: nothing looks a job up by name. They are off by
default (only the ingestion's ``nightly_refresh_schedule`` runs out of the box): a new vault trades
nothing until its schedules are turned on (UI -> Automation, or ``dagster schedule start <name>``).
"""

import datetime as dt
from typing import Any

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterRunStatus,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    MonthlyPartitionsDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    build_schedule_from_partitioned_job,
    define_asset_job,
    run_status_sensor,
    schedule,
)

from midfreq_assets import stages
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.partitions import month_key

#: Run tag of a nightly research run: the day it prepares (its daily chain runs for that day next).
NIGHT_TAG = "midfreq/night"
RESEARCH_ASSETS = ["adjusted_yields", "features", "predictions"]
DAILY_ASSETS = ["rebalance_weights", "trade_orders", "order_executions"]


def build_vault_jobs(
    vault: VaultConfig, days: DailyPartitionsDefinition, months: MonthlyPartitionsDefinition
) -> dict[str, Any]:
    """The vault's jobs, by partitions definition:

    - monthly: ``<vault>_research`` (adjusted_yields, features, predictions: the nightly first half),
      ``<vault>_features`` (adjusted_yields, features) and ``<vault>_predictions``, the halves of a first
      backfill, when the weekly models must be fitted between them;
    - weekly: ``<vault>_fitted_models``;
    - daily: ``<vault>_daily`` (vault_positions for a vault with ``positions:``, rebalance_weights,
      trade_orders, order_executions: the nightly second half), ``<vault>_decisions``
      (rebalance_weights), ``<vault>_orders`` (trade_orders, order_executions) and ``<vault>_positions``."""
    key = lambda name: AssetKey([vault.name, name])  # noqa: E731
    daily = [*(["vault_positions"] if vault.positions else []), *DAILY_ASSETS]
    jobs = {
        "research": define_asset_job(
            f"{vault.name}_research",
            selection=AssetSelection.assets(*map(key, RESEARCH_ASSETS)),
            partitions_def=months,
            description="The vault's research for a month (partition YYYY-MM): adjusted yields, features and "
            "predictions (with each week's model) of its days so far. The nightly chain's first run.",
        ),
        "daily": define_asset_job(
            f"{vault.name}_daily",
            selection=AssetSelection.assets(*map(key, daily)),
            partitions_def=days,
            description="The vault's decision for a day (or a range): the real positions (when configured), the "
            "rebalance and its orders. The nightly chain's second run, after <vault>_research.",
        ),
        "features": define_asset_job(
            f"{vault.name}_features",
            metadata=stages.plan(stages.MONTHS, vault.name),
            selection=AssetSelection.assets(key("adjusted_yields"), key("features")),
            partitions_def=months,
            description="Adjusted yields and research features of the vault (monthly).",
        ),
        "fitted_models": define_asset_job(
            f"{vault.name}_fitted_models",
            metadata=stages.plan(stages.WEEKS, vault.name),
            selection=AssetSelection.assets(key("fitted_models")),
            description="Weekly refit of the vault's models (partition = the week's Monday, as_of).",
        ),
        "predictions": define_asset_job(
            f"{vault.name}_predictions",
            metadata=stages.plan(stages.MONTHS, vault.name),
            selection=AssetSelection.assets(key("predictions")),
            partitions_def=months,
            description="Predictions of the vault (monthly), after the weekly refits.",
        ),
        "decisions": define_asset_job(
            f"{vault.name}_decisions",
            metadata=stages.plan(stages.DAYS, vault.name),
            selection=AssetSelection.assets(key("rebalance_weights")),
            partitions_def=days,
            description="The vault's rebalance, day by day.",
        ),
        "orders": define_asset_job(
            f"{vault.name}_orders",
            metadata=stages.plan(stages.ORDER_DAYS, vault.name),
            selection=AssetSelection.assets(key("trade_orders"), key("order_executions")),
            partitions_def=days,
            description="The day's trade ticket and its execution (dry run without an execution URL).",
        ),
    }
    if vault.positions:
        jobs["positions"] = define_asset_job(
            f"{vault.name}_positions",
            metadata=stages.plan(stages.LIVE_DAYS, vault.name),
            selection=AssetSelection.assets(key("vault_positions")),
            partitions_def=days,
            description="Read and validate the vault's real positions.",
        )
    return jobs


def build_vault_schedules(vault: VaultConfig, jobs: dict[str, Any]) -> list[ScheduleDefinition]:
    """The weekly refit (Mondays 02:30 UTC, after the ingestion) and the nightly chain (03:00 UTC: the
    research month holding yesterday, then the daily run for yesterday, see :func:`build_vault_sensors`)."""
    research = jobs["research"]

    @schedule(
        job=research,
        cron_schedule="0 3 * * *",
        execution_timezone="UTC",
        name=f"{vault.name}_daily_schedule",
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"03:00 UTC: {vault.name}'s research for the month holding yesterday, then (sensor "
        f"{vault.name}_daily_after_research) its decision and orders for yesterday.",
    )
    def daily_schedule(context: ScheduleEvaluationContext):
        day = (context.scheduled_execution_time.astimezone(dt.UTC) - dt.timedelta(days=1)).date()
        return RunRequest(
            run_key=day.isoformat(), partition_key=month_key(day), tags={NIGHT_TAG: day.isoformat()}
        )

    return [
        build_schedule_from_partitioned_job(
            jobs["fitted_models"],
            name=f"{vault.name}_weekly_refit_schedule",
            hour_of_day=2,
            minute_of_hour=30,
            day_of_week=1,
            default_status=DefaultScheduleStatus.STOPPED,
        ),
        daily_schedule,
    ]


def build_vault_sensors(vault: VaultConfig, jobs: dict[str, Any]) -> list:
    """``<vault>_daily_after_research``: a nightly research run (tagged with its day by the schedule)
    that succeeded launches the daily run for that day. Running by default: it only reacts to runs the
    (stopped by default) schedule launched."""

    @run_status_sensor(
        run_status=DagsterRunStatus.SUCCESS,
        monitored_jobs=[jobs["research"]],
        request_job=jobs["daily"],
        name=f"{vault.name}_daily_after_research",
        default_status=DefaultSensorStatus.RUNNING,
        description=f"After {vault.name}_research succeeded for a night, run {vault.name}_daily for "
        "that day.",
    )
    def daily_after_research(context):
        day = context.dagster_run.tags.get(NIGHT_TAG)
        if not day:
            return SkipReason("not a nightly run (no midfreq/night tag): nothing to chain")
        return RunRequest(run_key=f"{vault.name}-daily-{day}", partition_key=day)

    return [daily_after_research]
