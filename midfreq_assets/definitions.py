"""The code location: every asset, check, job, schedule and resource of midfreq."""

from __future__ import annotations

from dagster import Definitions

from midfreq_assets.assets.backtests import (
    build_backtest_assets,
    build_backtest_jobs,
    build_grid_points_sensor,
)
from midfreq_assets.assets.binance import binance_assets, binance_checks
from midfreq_assets.assets.defillama import defillama_assets
from midfreq_assets.assets.prices import build_price_assets
from midfreq_assets.assets.research import research_assets
from midfreq_assets.assets.signals import build_signal_report_assets
from midfreq_assets.domain.config.vault import load_vault_configs
from midfreq_assets.executors import select_executor
from midfreq_assets.freshness import freshness_checks, freshness_sensor
from midfreq_assets.jobs import binance_klines_job, nightly_refresh_job, research_jobs
from midfreq_assets.schedules import binance_klines_schedule, build_vault_schedules, nightly_refresh_schedule
from midfreq_resources.clients.binance_archive import BinanceArchiveClient
from midfreq_resources.clients.defillama import DefiLlamaClient
from midfreq_resources.clients.defillama_coins import DefiLlamaCoinsClient
from midfreq_resources.io.model_io_manager import ModelIOManager
from midfreq_resources.io.parquet_io_manager import ParquetIOManager
from midfreq_resources.project_config import ProjectConfig

VAULTS = list(load_vault_configs().values())

JOBS = [
    nightly_refresh_job,
    binance_klines_job,
    *research_jobs(VAULTS),
    *(j for v in VAULTS for j in build_backtest_jobs(v)),
]


def build_resources() -> dict[str, object]:
    """Resources read the service URLs and the lake root from the environment (see README)."""
    return {
        "parquet_io_manager": ParquetIOManager(),
        "defillama": DefiLlamaClient(),
        "defillama_coins": DefiLlamaCoinsClient(),
        "binance_archive": BinanceArchiveClient(),
        "project": ProjectConfig(),
        "model_io_manager": ModelIOManager(),
    }


defs = Definitions(
    assets=[
        *defillama_assets,
        *build_price_assets(VAULTS),
        *binance_assets,
        *research_assets(VAULTS),
        *build_signal_report_assets(),
        *(a for v in VAULTS for a in build_backtest_assets(v)),
    ],
    asset_checks=[*binance_checks, *freshness_checks],
    jobs=JOBS,
    sensors=[build_grid_points_sensor(VAULTS), freshness_sensor],
    schedules=[
        nightly_refresh_schedule,
        binance_klines_schedule,
        *build_vault_schedules([v.name for v in VAULTS], {j.name: j for j in JOBS}),
    ],
    resources=build_resources(),
    executor=select_executor(),
)
