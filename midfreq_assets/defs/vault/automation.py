"""A vault's jobs and schedules: the nightly chain, the weekly refit and the halves of a first backfill.

Schedules hold their job objects: nothing looks a job up by name. They are off by default (only
the ingestion's ``nightly_refresh_schedule`` runs out of the box): a new vault trades nothing until
its schedules are turned on (UI -> Automation, or ``dagster schedule start <name>``).
"""

from typing import Any

from dagster import (
    AssetKey,
    AssetSelection,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
    define_asset_job,
)

from midfreq_assets.domain.config.vault import VaultConfig

DAILY_ASSETS = ["adjusted_yields", "features", "predictions", "rebalance_weights", "trade_orders", "order_executions"]


def build_vault_jobs(vault: VaultConfig, partitions_def: DailyPartitionsDefinition
                     ) -> dict[str, Any]:
    """``<vault>_daily`` (adjusted_yields, features, predictions, rebalance_weights, trade_orders,
    order_executions, and vault_positions for a vault with ``positions:``, for a day or a range),
    ``<vault>_fitted_models`` (weekly refit), the two halves of the daily job for a first
    backfill, when the weekly models must be fitted between them: ``<vault>_features`` and
    ``<vault>_decisions`` (predictions + rebalance_weights), and the live loop's ``<vault>_orders``
    (trade_orders + order_executions) and ``<vault>_positions``."""
    key = lambda name: AssetKey([vault.name, name])  # noqa: E731
    daily = [*DAILY_ASSETS, *(["vault_positions"] if vault.positions else [])]
    jobs = {
        "daily": define_asset_job(
            f"{vault.name}_daily", selection=AssetSelection.assets(*map(key, daily)),
            partitions_def=partitions_def,
            description="The vault's nightly chain for one day: adjusted yields, features, predictions "
            "(with the week's model), the real positions (when configured), the rebalance and its orders."),
        "features": define_asset_job(
            f"{vault.name}_features", selection=AssetSelection.assets(key("adjusted_yields"), key("features")),
            partitions_def=partitions_def, description="Adjusted yields and research features of the vault."),
        "fitted_models": define_asset_job(
            f"{vault.name}_fitted_models", selection=AssetSelection.assets(key("fitted_models")),
            description="Weekly refit of the vault's models (partition = the week's Monday, as_of)."),
        "decisions": define_asset_job(
            f"{vault.name}_decisions", selection=AssetSelection.assets(key("predictions"), key("rebalance_weights")),
            partitions_def=partitions_def, description="Predictions and rebalance of the vault."),
        "orders": define_asset_job(
            f"{vault.name}_orders", selection=AssetSelection.assets(key("trade_orders"), key("order_executions")),
            partitions_def=partitions_def,
            description="The day's trade ticket and its execution (dry run without an execution URL)."),
    }
    if vault.positions:
        jobs["positions"] = define_asset_job(
            f"{vault.name}_positions", selection=AssetSelection.assets(key("vault_positions")),
            partitions_def=partitions_def, description="Read and validate the vault's real positions.")
    return jobs


def build_vault_schedules(vault: VaultConfig, jobs: dict[str, Any]) -> list[ScheduleDefinition]:
    """The weekly refit (Mondays 02:30 UTC, after the ingestion) and the daily chain (03:00 UTC)."""
    return [
        build_schedule_from_partitioned_job(jobs["fitted_models"], name=f"{vault.name}_weekly_refit_schedule",
                                            hour_of_day=2, minute_of_hour=30, day_of_week=1,
                                            default_status=DefaultScheduleStatus.STOPPED),
        build_schedule_from_partitioned_job(jobs["daily"], name=f"{vault.name}_daily_schedule",
                                            hour_of_day=3, minute_of_hour=0,
                                            default_status=DefaultScheduleStatus.STOPPED),
    ]
