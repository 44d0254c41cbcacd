"""Jobs: the nightly ingestion refresh, and the daily research/decision pipeline."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from midfreq_assets.assets.binance import binance_assets, binance_partitions
from midfreq_assets.partitions import daily_partitions

nightly_refresh_job = define_asset_job(
    "nightly_refresh",
    selection=AssetSelection.groups("defillama", "prices"),
    partitions_def=daily_partitions,
    description="Refresh the ingestion assets for one day (the schedule picks the last complete day).",
)

binance_klines_job = define_asset_job(
    "binance_klines_refresh",
    selection=AssetSelection.assets(*binance_assets),
    partitions_def=binance_partitions,
    description="Collect one day of Binance klines (the archive publishes a day's file the next day).",
)
