"""The price research study: per kline interval its assets, and the jobs that run them."""

from dagster import AssetKey, AssetSelection, Definitions, define_asset_job, definitions

from midfreq_assets import stages
from midfreq_assets.defs.price_research.assets import build_price_research_assets, needs_premium
from midfreq_assets.defs.price_research.signals import build_signal_report_assets
from midfreq_assets.domain.config.base import ConfigError
from midfreq_assets.domain.config.project import BINANCE_FILE, PRICE_RESEARCH_FILE, Project
from midfreq_assets.partitions import klines_last_day, research_months
from midfreq_assets.project import current_project


def build_price_research_jobs(intervals: list[str], partitions_def) -> list:
    """``price_research_features`` / ``_predictions`` (monthly, from the klines calendar's start), the signal
    reports, and one ``price_research_<interval>_fitted_models`` per interval (weekly partitions
    differ per interval)."""
    key = lambda interval, name: AssetKey(["price_research", interval, name])  # noqa: E731
    return [
        define_asset_job(
            "price_research_features",
            metadata=stages.plan(stages.KLINES_MONTHS),
            selection=AssetSelection.assets(*(key(i, "features") for i in intervals)),
            partitions_def=partitions_def,
            description="Price research features, every interval.",
        ),
        define_asset_job(
            "price_research_predictions",
            metadata=stages.plan(stages.KLINES_MONTHS),
            selection=AssetSelection.assets(*(key(i, "predictions") for i in intervals)),
            partitions_def=partitions_def,
            description="Price predictions, every interval.",
        ),
        define_asset_job(
            "price_research_signal_reports",
            metadata=stages.plan(stages.ONCE),
            selection=AssetSelection.assets(*(key(i, "signal_report") for i in intervals)),
            description="Price models traded as signals, per interval (unpartitioned).",
        ),
        *(
            define_asset_job(
                f"price_research_{i}_fitted_models",
                metadata=stages.plan(stages.KLINES_WEEKS, interval=i),
                selection=AssetSelection.assets(key(i, "fitted_models")),
                description=f"Weekly refit of the {i} price models.",
            )
            for i in intervals
        ),
    ]


def build_price_research_defs(project: Project) -> Definitions:
    config = project.price_research
    if config is None or project.binance is None:
        return Definitions()
    futures = project.binance.futures
    premium = set(futures.premium_index_intervals) if futures is not None else set()
    for interval, study in config.intervals.items():
        if needs_premium(study) and interval not in premium:
            raise ConfigError(
                f"{project.config_dir / PRICE_RESEARCH_FILE}: intervals.{interval}.feature_map: "
                f"close_premium needs premium index bars at {interval}: add it to "
                f"{project.config_dir / BINANCE_FILE} futures.premium_index_intervals"
            )
    start = project.binance.start_date
    partitions = research_months(start, klines_last_day())
    return Definitions(
        assets=[*build_price_research_assets(config, partitions, start), *build_signal_report_assets(config)],
        jobs=build_price_research_jobs(list(config.intervals), partitions),
    )


@definitions
def defs() -> Definitions:
    return build_price_research_defs(current_project())
