"""``price_research/<interval>/signal_report``: the price models traded as signals, net of costs.

Each weekly model partition is one walk-forward fold (its predictions cover the days after its
``as_of`` only). Positions and P&L: ``domain.backtest.signals``.
"""

import pandas as pd
from dagster import (
    AllPartitionMapping,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    Output,
    asset,
)

from midfreq_assets.domain.backtest.signals import signal_table
from midfreq_assets.domain.research.price_config import PriceResearchConfig, PriceStudyConfig
from midfreq_assets.domain.units import bars_per_year
from midfreq_assets.metadata import markdown_table
from midfreq_assets.previews import schema_metadata

OPTIONAL_HISTORY = {"allow_missing_partitions": True, "optional": True}


def build_signal_report_assets(config: PriceResearchConfig) -> list[AssetsDefinition]:
    return [_signal_report(interval, study) for interval, study in config.intervals.items()]


def _signal_report(interval: str, study: PriceStudyConfig) -> AssetsDefinition:
    signal_cfg = study.signal.model_copy(update={"bars_per_year": bars_per_year(interval)})

    @asset(
        key=AssetKey(["price_research", interval, "signal_report"]),
        ins={
            "predictions": AssetIn(
                key=AssetKey(["price_research", interval, "predictions"]),
                partition_mapping=AllPartitionMapping(),
                metadata=OPTIONAL_HISTORY,
            ),
            "binance_klines": AssetIn(
                key=AssetKey("binance_klines"),
                partition_mapping=AllPartitionMapping(),
                metadata=OPTIONAL_HISTORY,
            ),
        },
        io_manager_key="parquet_io_manager",
        metadata=schema_metadata("signal_report"),
        group_name="price_research",
        kinds={"python", "parquet"},
        description=f"{interval} price models as trading signals: annualized return, Sortino, max drawdown "
        "and hit ratio per weekly fold and instrument (position from class probabilities or scaled "
        f"predicted return, sizing {study.signal.sizing}, cost per unit of position change), the signal's "
        "quantiles (signal_pNN) and the mean forward return per signal quantile bucket (return_bK).",
    )
    def signal_report(
        context: AssetExecutionContext, predictions: pd.DataFrame, binance_klines: pd.DataFrame
    ):
        table = signal_table(predictions, binance_klines, interval, study.label_map, signal_cfg)
        if table.empty:
            context.log.warning(f"signal_report {interval}: no predictions with known forward returns yet")
        overall = table[table["fold"] == "all"] if len(table) else table
        quantile_cols = [c for c in table.columns if c.startswith(("signal_p", "return_b"))]
        return Output(
            table,
            metadata={
                "dagster/row_count": len(table),
                "models": int(table["model"].nunique()) if len(table) else 0,
                "folds": int(table.loc[table["fold"] != "all", "fold"].nunique()) if len(table) else 0,
                "overall": markdown_table(overall.drop(columns=quantile_cols)),
                "quantiles": markdown_table(
                    overall[["model", "instrument", *quantile_cols]] if len(overall) else overall
                ),
                "sizing": signal_cfg.sizing,
                "signal_config": str(signal_cfg),
            },
        )

    return signal_report
