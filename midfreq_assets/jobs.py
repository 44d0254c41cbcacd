"""Jobs: the nightly ingestion refresh, and the daily research/decision pipeline."""

from __future__ import annotations

from dagster import AssetKey, AssetSelection, define_asset_job

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


def build_vault_jobs(vault_name: str) -> list:
    """Per vault: ``<vault>_daily`` (adjusted_yields, features, predictions, rebalance_weights for a
    day or a range), ``<vault>_fitted_models`` (weekly refit), and the two halves of the daily job for
    a first backfill, when the weekly models must be fitted between them: ``<vault>_features`` and
    ``<vault>_decisions`` (predictions + rebalance_weights)."""
    key = lambda name: AssetKey([vault_name, name])  # noqa: E731
    daily = ["adjusted_yields", "features", "predictions", "rebalance_weights"]
    return [
        define_asset_job(f"{vault_name}_daily", selection=AssetSelection.assets(*map(key, daily)),
                         partitions_def=daily_partitions,
                         description="The vault's nightly chain for one day: adjusted yields, features, predictions "
                         "(with the week's model) and the rebalance."),
        define_asset_job(f"{vault_name}_features",
                         selection=AssetSelection.assets(key("adjusted_yields"), key("features")),
                         partitions_def=daily_partitions,
                         description="Adjusted yields and research features of the vault."),
        define_asset_job(f"{vault_name}_fitted_models", selection=AssetSelection.assets(key("fitted_models")),
                         description="Weekly refit of the vault's models (partition = the week's Monday, as_of)."),
        define_asset_job(f"{vault_name}_decisions",
                         selection=AssetSelection.assets(key("predictions"), key("rebalance_weights")),
                         partitions_def=daily_partitions, description="Predictions and rebalance of the vault."),
    ]


def build_price_research_jobs(intervals: list[str]) -> list:
    """``price_research_features`` / ``_predictions`` (daily, on the klines calendar) and one
    ``price_research_<interval>_fitted_models`` per interval (weekly partitions differ per interval)."""
    key = lambda interval, name: AssetKey(["price_research", interval, name])  # noqa: E731
    jobs = [
        define_asset_job("price_research_features",
                         selection=AssetSelection.assets(*(key(i, "features") for i in intervals)),
                         partitions_def=binance_partitions, description="Price research features, every interval."),
        define_asset_job("price_research_predictions",
                         selection=AssetSelection.assets(*(key(i, "predictions") for i in intervals)),
                         partitions_def=binance_partitions, description="Price predictions, every interval."),
    ]
    jobs.append(define_asset_job("price_research_signal_reports",
                                 selection=AssetSelection.assets(*(key(i, "signal_report") for i in intervals)),
                                 description="Price models traded as signals, per interval (unpartitioned)."))
    jobs += [define_asset_job(f"price_research_{i}_fitted_models", selection=AssetSelection.assets(key(i, "fitted_models")),
                              description=f"Weekly refit of the {i} price models.") for i in intervals]
    return jobs


def research_jobs(vaults) -> list:
    """Every vault's jobs plus the price research jobs (what Definitions registers)."""
    from midfreq_assets.assets.research import price_intervals

    return [j for v in vaults for j in build_vault_jobs(v.name)] + build_price_research_jobs(price_intervals())
