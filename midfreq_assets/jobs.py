"""Jobs: the nightly ingestion refresh, and the whole pipeline."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from midfreq_assets.partitions import daily_partitions

nightly_refresh_job = define_asset_job(
    "nightly_refresh",
    selection=AssetSelection.groups("defillama"),
    partitions_def=daily_partitions,
    description="Refresh the ingestion assets for one day (the schedule picks the last complete day).",
)
