"""``<vault>/features`` (monthly), ``<vault>/fitted_models`` (weekly) and ``<vault>/predictions`` (monthly).

- ``features`` (monthly ``YYYY-MM``, single-run backfills): features of every pool of the source panel
  (``pool_history``; plus ``adjusted_yields`` when a label or feature reads ``adjusted_apy``) for
  the month's days that have data so far (the nightly run rewrites the month to date). The input
  window starts ``required_lookback`` days earlier, so a partition equals the full-history
  computation within the engine's tolerance.
- ``fitted_models`` (weekly, Monday UTC): every (label, estimator) and each label's naive baseline,
  trained with ``as_of`` = the week's refit Monday (``models.refit_every_weeks``, the backtest's
  calendar too) on the rows whose label ended before it, plus a purged walk-forward CV of every
  label and the model it selects (``domain.research.bundles.ModelBundle``, ``selection``).
- ``predictions`` (monthly): for each day D of the month with features, the model the week
  containing D (``as_of`` <= D) selected for the traded label, applied to D's features; one row per
  pool of the vault's universe that day.

Universe filtering happens at prediction (and training) time, not at feature time: features are
computed on each pool's uninterrupted history, so a pool dipping below the TVL threshold for a
few days does not punch holes into its EWMs.
"""

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

from midfreq_assets.asset_plots import feature_plot, model_plots
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.ingest.universe import universe_pairs
from midfreq_assets.domain.research import engine
from midfreq_assets.domain.research.bundles import ModelBundle, predict_days, weekly_bundles
from midfreq_assets.domain.research.plan import (
    first_fit_day,
    history_lookback,
    in_window,
    needs_adjusted,
    needs_metadata,
    refit_as_of,
    selected_labels,
    traded_label,
    with_universe,
    yield_panel,
)
from midfreq_assets.metadata import TOLERATE_GAPS, bundle_metadata, markdown_table, partition_metadata
from midfreq_assets.partitions import (
    HISTORY_BEFORE_WEEK,
    WEEK_OF_DAY,
    days_with_data,
    months_back,
    research_months,
    weekly_partitions,
    yields_last_day,
)
from midfreq_assets.previews import schema_metadata
from midfreq_resources.io.parquet_io_manager import TRAILING_MISSING_OK

MODEL_IO, PARQUET_IO = "model_io_manager", "parquet_io_manager"
PREDICTION_COLUMNS = ["date", "pool", "predicted_apy", "model", "model_as_of"]


def _empty_predictions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            c: pd.Series(
                dtype="datetime64[ns]"
                if c in ("date", "model_as_of")
                else float
                if c == "predicted_apy"
                else object
            )
            for c in PREDICTION_COLUMNS
        }
    )


def build_research_assets(
    vault: VaultConfig, partitions_def: MonthlyPartitionsDefinition | None = None
) -> list[AssetsDefinition]:
    """``[<vault>/features, <vault>/fitted_models, <vault>/predictions]``."""
    partitions_def = partitions_def or research_months(vault.start_date, yields_last_day())
    prefix = vault.name
    feature_days = engine.required_lookback(vault.feature_map, vault.models)
    pred_days = history_lookback(vault.models)
    adjusted = needs_adjusted(vault)
    label = traded_label(vault.label_map)
    cv_labels = selected_labels(vault.label_map, vault.models)
    first_fit = first_fit_day(vault)
    weeks = weekly_partitions(first_fit, yields_last_day())
    features_key = AssetKey([prefix, "features"])
    models_key = AssetKey([prefix, "fitted_models"])
    adjusted_key = AssetKey([prefix, "adjusted_yields"])

    # a missing day inside the lookback fails loudly unless the vault says to tolerate gaps; the days
    # after the last one stored are the rest of the month, not yet there
    gaps = {
        **(TOLERATE_GAPS if vault.on_missing_upstream_days == "tolerate" else {}),
        TRAILING_MISSING_OK: True,
    }
    source_ins = {
        "pool_history": AssetIn(
            key=AssetKey("pool_history"), partition_mapping=months_back(feature_days), metadata=gaps
        )
    }
    if adjusted:
        source_ins["adjusted_yields"] = AssetIn(
            key=adjusted_key, partition_mapping=months_back(feature_days), metadata=gaps
        )
    universe_features = needs_metadata(vault.feature_map)
    if (
        universe_features
    ):  # cross sections rank within the vault's universe; categories come from pool_metadata
        source_ins["pool_metadata"] = AssetIn(
            key=AssetKey("pool_metadata"), partition_mapping=months_back(feature_days), metadata=gaps
        )

    @asset(
        key=features_key,
        ins=source_ins,
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key=PARQUET_IO,
        group_name=prefix,
        kinds={"python", "parquet"},
        metadata=schema_metadata("features"),
        description=f"Vault {vault.name}: research features per (date, instrument = pool) from the vault's "
        f"feature_map, every pool of {'pool_history + adjusted_yields' if adjusted else 'pool_history'} "
        f"(universe filtering happens at prediction time), one partition per month (the days with data so far). "
        f"Reads {feature_days} days of history before the month so values equal the full-history computation "
        "(EWM tolerance 1e-6).",
    )
    def features(context: AssetExecutionContext, pool_history: pd.DataFrame, **extra: pd.DataFrame):
        days = days_with_data(
            context.partition_time_window,
            pool_history["date"] if len(pool_history) else pd.Series(dtype="datetime64[ns]"),
            vault.start_date,
        )
        panel = yield_panel(pool_history, extra.get("adjusted_yields"))
        if universe_features and len(panel):
            panel = with_universe(
                panel, extra["pool_metadata"], vault.name, vault.feature_map.universe_column
            )
        feats = (
            engine.build_features(panel, vault.feature_map)
            if len(panel) and len(days)
            else pd.DataFrame(
                {"date": pd.Series(dtype="datetime64[ns]"), "instrument": pd.Series(dtype=object)}
            )
        )
        out = in_window(feats, days[0].date(), days[-1].date()) if len(days) else feats

        def summary(part: pd.DataFrame, _key: str | None) -> dict:
            return {
                "dagster/row_count": len(part),
                "instruments": int(part["instrument"].nunique()) if len(part) else 0,
                "feature_columns": len(engine.feature_columns(part)),
                "first_day": str(part["date"].min().date()) if len(part) else "",
                "last_day": str(part["date"].max().date()) if len(part) else "",
                "preview": markdown_table(part.tail(5)),
            }

        return Output(
            out,
            metadata=partition_metadata(
                context,
                out,
                summary,
                {
                    "history_rows_read": len(panel),
                    "lookback_days": feature_days,
                    **feature_plot(out, engine.feature_columns(out)),
                },
            ),
        )

    @asset(
        key=models_key,
        ins={
            "features": AssetIn(
                key=features_key, partition_mapping=HISTORY_BEFORE_WEEK, metadata=TOLERATE_GAPS
            ),
            "pool_history": AssetIn(
                key=AssetKey("pool_history"), partition_mapping=HISTORY_BEFORE_WEEK, metadata=TOLERATE_GAPS
            ),
            "pool_metadata": AssetIn(
                key=AssetKey("pool_metadata"), partition_mapping=HISTORY_BEFORE_WEEK, metadata=TOLERATE_GAPS
            ),
            **(
                {
                    "adjusted_yields": AssetIn(
                        key=adjusted_key, partition_mapping=HISTORY_BEFORE_WEEK, metadata=TOLERATE_GAPS
                    )
                }
                if adjusted
                else {}
            ),
        },
        partitions_def=weeks,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key=MODEL_IO,
        group_name=prefix,
        kinds={"python", "scikitlearn"},
        description=f"Vault {vault.name}: every (label, estimator) of the vault's models and each label's naive "
        f"baseline, refit every {vault.models.refit_every_weeks} week(s) with as_of = a Monday on the rows (pools "
        "in the universe that day) whose label ended before it; purged walk-forward CV of every label and the "
        f"model it selects ({vault.models.selection.by}). Predictions trade {label} with the selected model.",
    )
    def fitted_models(
        context: AssetExecutionContext,
        features: pd.DataFrame,
        pool_history: pd.DataFrame,
        pool_metadata: pd.DataFrame,
        **extra: pd.DataFrame,
    ):
        panel = yield_panel(pool_history, extra.get("adjusted_yields"))
        labels = engine.build_labels(panel, vault.label_map) if len(panel) else pd.DataFrame()
        feats = features
        if len(feats):
            feats = feats.assign(date=pd.to_datetime(feats["date"]).dt.normalize())
            keys = pd.MultiIndex.from_arrays([feats["date"], feats["instrument"].astype(str)])
            feats = feats[keys.isin(universe_pairs(pool_metadata, vault.name))].reset_index(drop=True)
        as_ofs = {
            k: refit_as_of(pd.Timestamp(k).date(), first_fit, vault.models.refit_every_weeks)
            for k in context.partition_keys
        }
        bundles = weekly_bundles(as_ofs, feats, labels, vault.models, vault.label_map, cv_labels=cv_labels)
        value = bundles[context.partition_keys[0]] if len(bundles) == 1 else bundles
        return Output(
            value,
            metadata=bundle_metadata(
                context,
                bundles,
                lambda b: {"primary_model": b.model_key(label) or "(none: not fitted yet)"},
                details=lambda b: model_plots(b, label),
            ),
        )

    @asset(
        key=AssetKey([prefix, "predictions"]),
        ins={
            "features": AssetIn(
                key=features_key, partition_mapping=months_back(pred_days), metadata=TOLERATE_GAPS
            ),
            "fitted_models": AssetIn(key=models_key, partition_mapping=WEEK_OF_DAY, metadata=TOLERATE_GAPS),
            "pool_metadata": AssetIn(
                key=AssetKey("pool_metadata"),
                partition_mapping=months_back(0),
                metadata={TRAILING_MISSING_OK: True},
            ),
        },
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key=PARQUET_IO,
        group_name=prefix,
        kinds={"python", "parquet"},
        metadata=schema_metadata("predictions"),
        description=f"Vault {vault.name}: predicted APY (fraction/yr, label {label}) per (date, pool) of the "
        "vault's universe that day, by the model the latest weekly refit with as_of <= the day selected "
        "(`model` says which), one partition per month (its days with features so far: `last_day`). No rows "
        "before the first fitted week (the vault stays idle).",
    )
    def predictions(
        context: AssetExecutionContext,
        features: pd.DataFrame,
        fitted_models: dict[str, ModelBundle],
        pool_metadata: pd.DataFrame,
    ):
        # the month's days with data so far (pool_metadata has a row a day there is data, whoever holds it)
        days = days_with_data(
            context.partition_time_window,
            pool_metadata["date"] if len(pool_metadata) else pd.Series(dtype="datetime64[ns]"),
            vault.start_date,
        )
        raw = (
            predict_days(fitted_models, features, days, lambda b: b.model_key(label))
            if len(features) and len(days)
            else pd.DataFrame()
        )
        if raw.empty:
            out = _empty_predictions()
        else:
            out = raw.rename(columns={"instrument": "pool", "prediction": "predicted_apy"})
            out["date"] = pd.to_datetime(out["date"]).dt.normalize()
            out["pool"] = out["pool"].astype(str)
            out = out[
                pd.MultiIndex.from_frame(out[["date", "pool"]]).isin(
                    universe_pairs(pool_metadata, vault.name)
                )
            ]
            out = out[PREDICTION_COLUMNS].reset_index(drop=True)
        predicted = set(pd.DatetimeIndex(out["date"]).normalize())
        missing_days = [d.date().isoformat() for d in days if d not in predicted]
        if missing_days:
            context.log.warning(
                f"{prefix}/predictions: no prediction for {len(missing_days)} day(s) "
                f"(no model fitted yet, or no features): {missing_days[:5]}"
            )
        last_day = {f"{d:%Y-%m}": d for d in days}  # the last day computed in each month (its coverage)

        def summary(part: pd.DataFrame, key: str | None) -> dict:
            through = last_day.get(key) if key else (days[-1] if len(days) else None)
            return {
                "dagster/row_count": len(part),
                "pools": int(part["pool"].nunique()) if len(part) else 0,
                "model": ", ".join(sorted(set(part["model"]))) or "(none)",
                "model_as_of": ", ".join(sorted({str(pd.Timestamp(t).date()) for t in part["model_as_of"]}))
                or "(none)",
                "mean_predicted_apy": float(part["predicted_apy"].mean()) if len(part) else 0.0,
                **({"last_day": str(through.date())} if through is not None else {}),
                "preview": markdown_table(part.tail(10)),
            }

        return Output(
            out,
            metadata=partition_metadata(
                context,
                out,
                summary,
                {"days_computed": len(days), "days_without_predictions": len(missing_days)},
            ),
        )

    return [features, fitted_models, predictions]
