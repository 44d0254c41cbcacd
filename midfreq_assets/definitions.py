"""The code location: every asset, check, job, schedule and resource of midfreq."""

from __future__ import annotations

from dagster import Definitions

from midfreq_assets.assets.binance import binance_assets, binance_checks
from midfreq_assets.assets.defillama import defillama_assets
from midfreq_assets.assets.prices import build_price_assets
from midfreq_assets.domain.config import load_vault_configs
from midfreq_assets.jobs import binance_klines_job, nightly_refresh_job
from midfreq_assets.schedules import binance_klines_schedule, nightly_refresh_schedule
from midfreq_resources.binance_archive import BinanceArchiveClient
from midfreq_resources.defillama import DefiLlamaClient
from midfreq_resources.defillama_coins import DefiLlamaCoinsClient
from midfreq_resources.parquet_io_manager import ParquetIOManager
from midfreq_resources.project_config import ProjectConfig

VAULTS = list(load_vault_configs().values())


def build_resources() -> dict[str, object]:
    """Resources read the service URLs and the lake root from the environment (see README)."""
    return {
        "parquet_io_manager": ParquetIOManager(),
        "defillama": DefiLlamaClient(),
        "defillama_coins": DefiLlamaCoinsClient(),
        "binance_archive": BinanceArchiveClient(),
        "project": ProjectConfig(),
    }


defs = Definitions(
    assets=[*defillama_assets, *build_price_assets(VAULTS), *binance_assets],
    asset_checks=[*binance_checks],
    jobs=[nightly_refresh_job, binance_klines_job],
    schedules=[nightly_refresh_schedule, binance_klines_schedule],
    resources=build_resources(),
)
