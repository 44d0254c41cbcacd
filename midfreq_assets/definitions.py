"""The code location: every asset, check, job, schedule and resource of midfreq."""

from __future__ import annotations

from dagster import Definitions

from midfreq_assets.assets.defillama import defillama_assets
from midfreq_assets.jobs import nightly_refresh_job
from midfreq_assets.schedules import nightly_refresh_schedule
from midfreq_resources.defillama import DefiLlamaClient
from midfreq_resources.parquet_io_manager import ParquetIOManager
from midfreq_resources.project_config import ProjectConfig
from midfreq_resources.settings import DATA_LAKE_ENV, DEFAULT_DATA_LAKE, env_or


def build_resources() -> dict[str, object]:
    """Resources read the service URLs and the lake root from the environment (see README)."""
    return {
        "parquet_io_manager": ParquetIOManager(root=env_or(DATA_LAKE_ENV, DEFAULT_DATA_LAKE)),
        "defillama": DefiLlamaClient(),
        "project": ProjectConfig(),
    }


defs = Definitions(
    assets=[*defillama_assets],
    jobs=[nightly_refresh_job],
    schedules=[nightly_refresh_schedule],
    resources=build_resources(),
)
