"""Every vault of ``configs/vaults/``: one :func:`build_vault_defs` per vault, merged, plus the grid sensor."""

from pathlib import Path

from dagster import Definitions, definitions

from midfreq_assets.defs.vault.automation import build_vault_jobs, build_vault_schedules, build_vault_sensors
from midfreq_assets.defs.vault.backtests import build_backtest_assets, build_backtest_jobs
from midfreq_assets.defs.vault.grid_sensor import build_grid_points_sensor
from midfreq_assets.defs.vault.live import build_intraday_assets, build_orders_assets, build_positions_asset
from midfreq_assets.defs.vault.rebalance import build_rebalance_assets
from midfreq_assets.defs.vault.research import build_research_assets
from midfreq_assets.defs.vault.top_pools import build_top_pools_asset
from midfreq_assets.defs.vault.yields import build_adjusted_yield_assets
from midfreq_assets.domain.config.project import Project
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.yields.adjusted import reference_pricing
from midfreq_assets.partitions import daily_partitions, research_months, yields_last_day
from midfreq_assets.project import current_project


def build_vault_defs(vault: VaultConfig, project: Project, grids_dir: Path | None = None) -> Definitions:
    """Every asset, check, job and schedule of one vault (key prefix and group = the vault's name)."""
    days = daily_partitions(project)
    months = research_months(project.earliest_start, yields_last_day())
    jobs = build_vault_jobs(vault, days, months)
    # the hourly /pools re-read exists only where it runs: its hours would otherwise all read "missing"
    intraday, intraday_jobs, intraday_schedules = (
        build_intraday_assets(vault, project.earliest_start) if (vault.intraday.enabled) else (None, [], [])
    )
    positions = [build_positions_asset(vault, days, project.config_dir)] if vault.positions else []
    return Definitions(
        assets=[
            *build_adjusted_yield_assets(vault, reference_pricing(vault, project.tokens), months),
            *build_research_assets(vault, months),
            *positions,
            *build_rebalance_assets(vault, days),
            *build_orders_assets(vault, project.tokens, days),
            *([intraday] if intraday is not None else []),
            *build_backtest_assets(vault, grids_dir or project.grids_dir),
            build_top_pools_asset(vault),
        ],
        jobs=[*jobs.values(), *build_backtest_jobs(vault), *intraday_jobs],
        schedules=[*build_vault_schedules(vault, jobs), *intraday_schedules],
        sensors=build_vault_sensors(vault, jobs),
    )


def build_vaults_defs(project: Project) -> Definitions:
    vaults = list(project.vaults.values())
    return Definitions.merge(
        *(build_vault_defs(v, project) for v in vaults),
        Definitions(sensors=[build_grid_points_sensor(vaults, project.grids_dir)]),
    )


@definitions
def defs() -> Definitions:
    return build_vaults_defs(current_project())
