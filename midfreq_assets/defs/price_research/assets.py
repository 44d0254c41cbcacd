"""Price research on Binance klines, per interval of ``configs/research/btc_price.yaml``.

``price_research/<interval>/features`` (monthly ``YYYY-MM``, the days with klines so far),
``.../fitted_models`` (weekly :class:`~midfreq_assets.domain.research.bundles.ModelBundle`) and
``.../predictions`` (monthly: regression outputs and class probabilities per bar).
"""

import datetime as dt
import math

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    MonthlyPartitionsDefinition,
    Output,
    asset,
)

from midfreq_assets.domain.research import engine
from midfreq_assets.domain.research.bundles import ModelBundle, predict_days, weekly_bundles
from midfreq_assets.domain.research.plan import history_lookback, in_window, warmup_rows
from midfreq_assets.domain.research.price_config import PriceResearchConfig, PriceStudyConfig
from midfreq_assets.domain.units import interval_days
from midfreq_assets.metadata import TOLERATE_GAPS, bundle_metadata, markdown_table, partition_metadata
from midfreq_assets.partitions import (
    HISTORY_BEFORE_WEEK,
    WEEK_OF_DAY,
    days_with_data,
    klines_last_day,
    months_back,
    weekly_partitions,
)
from midfreq_assets.previews import schema_metadata
from midfreq_resources.io.parquet_io_manager import TRAILING_MISSING_OK

MODEL_IO, PARQUET_IO = "model_io_manager", "parquet_io_manager"
GROUP = "price_research"


def _empty_bars() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "open_time": pd.Series(dtype="datetime64[ns, UTC]"),
            "date": pd.Series(dtype="datetime64[ns]"),
            "instrument": pd.Series(dtype=object),
        }
    )


def build_price_research_assets(
    config: PriceResearchConfig, partitions_def: MonthlyPartitionsDefinition, start: dt.date
) -> list[AssetsDefinition]:
    """Per interval of the price research config: features, weekly fitted models, predictions
    (``partitions_def``: the research months from the klines calendar's ``start``)."""
    out: list[AssetsDefinition] = []
    for interval, study in config.intervals.items():
        out += _price_assets(interval, study, list(config.symbols), partitions_def, start)
    return out


def needs_premium(study: PriceStudyConfig) -> bool:
    """True when the study's features read ``close_premium`` (premium index bars)."""
    return engine.PREMIUM_COLUMN in study.feature_map.raw_columns()


def _price_assets(
    interval: str,
    study: PriceStudyConfig,
    symbols: list[str],
    partitions_def: MonthlyPartitionsDefinition,
    start: dt.date,
) -> list[AssetsDefinition]:
    feature_map, label_map, models = study.feature_map, study.label_map, study.models
    prefix = [GROUP, interval]
    bar = interval_days(interval)
    feature_days = math.ceil(engine.required_lookback(feature_map, models) * bar) + 1
    pred_days = math.ceil(history_lookback(models) * bar) + 1
    weeks = weekly_partitions(
        start + dt.timedelta(days=math.ceil(warmup_rows(label_map, models) * bar)), klines_last_day()
    )
    features_key = AssetKey([*prefix, "features"])
    models_key = AssetKey([*prefix, "fitted_models"])
    cv_label = next(
        (i.name for i in label_map.labels() if i.task == "classification"), label_map.labels()[0].name
    )
    premium_in = (
        {
            "binance_premium_index_klines": AssetIn(
                key=AssetKey("binance_premium_index_klines"),
                partition_mapping=months_back(feature_days),
                metadata=TOLERATE_GAPS,
            )
        }
        if needs_premium(study)
        else {}
    )

    def panel_of(klines: pd.DataFrame) -> pd.DataFrame:
        if klines.empty:
            return klines
        panel = engine.klines_panel(klines, interval)
        return panel[panel["instrument"].isin(symbols)].reset_index(drop=True)

    @asset(
        key=features_key,
        ins={
            "binance_klines": AssetIn(
                key=AssetKey("binance_klines"),
                partition_mapping=months_back(feature_days),
                metadata={**TOLERATE_GAPS, TRAILING_MISSING_OK: True},
            ),
            **premium_in,
        },
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key=PARQUET_IO,
        metadata=schema_metadata("price_research/features"),
        group_name=GROUP,
        kinds={"python", "parquet"},
        description=f"Price research features per {interval} bar (open_time, date, instrument) of "
        f"{', '.join(symbols)}, one partition per month (its days with klines so far); reads {feature_days} days "
        "of klines (and, for close_premium, of premium index bars) before the month.",
    )
    def price_features(context: AssetExecutionContext, binance_klines: pd.DataFrame, **premium: pd.DataFrame):
        days = days_with_data(
            context.partition_time_window,
            binance_klines["date"] if len(binance_klines) else pd.Series(dtype="datetime64[ns]"),
            start,
        )
        panel = panel_of(binance_klines)
        if premium_in and len(panel):
            panel = engine.with_close_premium(panel, premium.get("binance_premium_index_klines"), interval)
            missing = int(panel[engine.PREMIUM_COLUMN].isna().sum())
            if missing:
                context.log.warning(f"{interval}: {missing} of {len(panel)} bars have no premium index bar")
        feats = engine.build_features(panel, feature_map) if len(panel) and len(days) else _empty_bars()
        out = in_window(feats, days[0].date(), days[-1].date()) if len(days) else _empty_bars()
        if out.empty:
            context.log.warning(f"no {interval} klines in the window: empty features")

        def summary(part: pd.DataFrame, _key: str | None) -> dict:
            return {
                "dagster/row_count": len(part),
                "bars": len(part),
                "last_day": str(part["date"].max().date()) if len(part) else "",
                "preview": markdown_table(part.tail(5)),
            }

        return Output(
            out,
            metadata=partition_metadata(
                context, out, summary, {"bars_read": len(panel), "lookback_days": feature_days}
            ),
        )

    @asset(
        key=models_key,
        ins={
            "features": AssetIn(
                key=features_key, partition_mapping=HISTORY_BEFORE_WEEK, metadata=TOLERATE_GAPS
            ),
            "binance_klines": AssetIn(
                key=AssetKey("binance_klines"), partition_mapping=HISTORY_BEFORE_WEEK, metadata=TOLERATE_GAPS
            ),
        },
        partitions_def=weeks,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key=MODEL_IO,
        group_name=GROUP,
        kinds={"python", "scikitlearn"},
        description=f"Price models ({interval}): every (label, estimator) refit weekly with as_of = Monday on "
        f"bars whose label ended before it; purged walk-forward CV of {cv_label}.",
    )
    def price_models(context: AssetExecutionContext, features: pd.DataFrame, binance_klines: pd.DataFrame):
        panel = panel_of(binance_klines)
        labels = engine.build_labels(panel, label_map) if len(panel) else pd.DataFrame()
        bundles = weekly_bundles(
            {k: pd.Timestamp(k, tz="UTC") for k in context.partition_keys},
            features,
            labels,
            models,
            label_map,
            cv_labels=cv_label,
            time_col="open_time",
        )
        value = bundles[context.partition_keys[0]] if len(bundles) == 1 else bundles
        return Output(value, metadata=bundle_metadata(context, bundles))

    @asset(
        key=AssetKey([*prefix, "predictions"]),
        ins={
            "features": AssetIn(
                key=features_key, partition_mapping=months_back(pred_days), metadata=TOLERATE_GAPS
            ),
            "fitted_models": AssetIn(key=models_key, partition_mapping=WEEK_OF_DAY, metadata=TOLERATE_GAPS),
        },
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key=PARQUET_IO,
        metadata=schema_metadata("price_research/predictions"),
        group_name=GROUP,
        kinds={"python", "parquet"},
        description=f"Price predictions per {interval} bar: one column per regression model "
        "(`<label>/<estimator>`, forward log return) and class probabilities (`<label>/<estimator>:p_<class>`), "
        "from the latest weekly model with as_of <= the bar's day; one partition per month.",
    )
    def price_predictions(
        context: AssetExecutionContext, features: pd.DataFrame, fitted_models: dict[str, ModelBundle]
    ):
        days = days_with_data(
            context.partition_time_window,
            features["date"] if len(features) else pd.Series(dtype="datetime64[ns]"),
            start,
        )
        bundles = {k: b.with_naive_as_of() for k, b in fitted_models.items() if b is not None}
        keys = sorted({k for b in bundles.values() for k in b.models})
        out = pd.DataFrame()
        for key in keys:
            piece = (
                predict_days(bundles, features, days, key, time_col="open_time")
                if len(features)
                else pd.DataFrame()
            )
            if piece.empty:
                continue
            piece = piece.drop(columns="model").rename(
                columns={
                    c: key if c == "prediction" else f"{key}:{c}"
                    for c in piece.columns
                    if c == "prediction" or c.startswith("p_")
                }
            )
            on = ["open_time", "date", "instrument", "model_as_of"]
            out = piece if out.empty else out.merge(piece, on=on, how="outer")
        if out.empty:
            out = _empty_bars()
            context.log.warning(
                f"price predictions {interval} {context.partition_key_range}: no model or no features"
            )

        def summary(part: pd.DataFrame, _key: str | None) -> dict:
            return {
                "dagster/row_count": len(part),
                "models": ", ".join(keys) or "(none)",
                "last_day": str(part["date"].max().date()) if len(part) else "",
                "preview": markdown_table(part.tail(5)),
            }

        return Output(out, metadata=partition_metadata(context, out, summary))

    return [price_features, price_models, price_predictions]
