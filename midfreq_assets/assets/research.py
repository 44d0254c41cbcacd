"""Research engine as assets (thin layer over ``domain.research``).

Per vault (key prefix and group = vault name):

- ``<vault>/features`` (daily, single-run backfills): features of every pool of the source panel
  (``pool_history``; plus ``<vault>/adjusted_yields`` when a label or feature reads
  ``adjusted_apy``), for the partition's days only. The input window starts
  ``required_lookback`` days earlier, so a partition equals the full-history computation within
  the engine's tolerance (1e-6 of EWM weight left out).
- ``<vault>/fitted_models`` (weekly, Monday UTC): every (label, estimator) of the vault's models,
  trained with ``as_of`` = the week's first day on the rows whose label ended before it, plus a
  purged walk-forward CV of the primary label; joblib files through ``model_io_manager``.
- ``<vault>/predictions`` (daily): for day D, the primary model of the week containing D
  (``as_of`` <= D) applied to D's features; one row per pool of the vault's universe that day.

Universe filtering happens at **prediction (and training) time**, not at feature time: features
are computed on each pool's uninterrupted history, so a pool dipping below the TVL threshold for a
few days does not punch holes into its EWMs (and the EWM predictor sees the same history as in the
backtest). Training keeps the rows whose pool was in the vault's universe that day; predictions
are written for the pools of the universe of day D only.

Price research (``configs/research/btc_price.yaml``), per kline interval, on ``binance_partitions``:
``price_research/<interval>/features``, ``.../fitted_models`` (weekly), ``.../predictions``
(regression outputs and class probabilities per bar).
"""

import base64
import datetime as dt
import io
import math

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    MetadataValue,
    Output,
    TimeWindowPartitionMapping,
    WeeklyPartitionsDefinition,
    asset,
)

from midfreq_assets.domain.research import engine as research
from midfreq_assets.domain.config.vault import VaultConfig, config_dir
from midfreq_assets.domain.research.features import FeatureMapConfig, ewm_memory
from midfreq_assets.domain.research.labels import LabelMapConfig
from midfreq_assets.domain.research.models import FittedModel, ModelsConfig, halflife_rows
from midfreq_assets.metadata import markdown_table
from midfreq_assets.partitions import daily_partitions, window_days

#: ``fitted_models`` reads this many weeks of daily partitions before ``as_of`` ("all history";
#: clipped to the first daily partition).
HISTORY_WEEKS = 520
MODEL_IO = "model_io_manager"
PARQUET_IO = "parquet_io_manager"
PRICE_CONFIG = "research/btc_price.yaml"
TOLERATE_GAPS = {"allow_missing_partitions": True}
PREDICTION_COLUMNS = ["date", "pool", "predicted_apy", "model", "model_as_of"]


# --------------------------------------------------------------------------------------------
# Helpers (plain functions: the tests call them too)
# --------------------------------------------------------------------------------------------


def needs_adjusted(vault: VaultConfig) -> bool:
    """True when a label family targets, or a feature reads, ``adjusted_apy``."""
    targets = {spec.target or fam for fam, spec in vault.label_map.families.items()}
    return "adjusted_apy" in targets or "adjusted_apy" in vault.feature_map.columns


def yield_panel(pool_history: pd.DataFrame, adjusted: pd.DataFrame | None = None) -> pd.DataFrame:
    """``pool_history`` rows (with ``adjusted_apy`` merged in when given), sorted, date normalized."""
    if pool_history.empty:
        return pool_history
    panel = pool_history.assign(date=pd.to_datetime(pool_history["date"]).dt.normalize())
    if adjusted is not None and len(adjusted):
        adj = adjusted[["date", "pool", "adjusted_apy"]].assign(date=lambda d: pd.to_datetime(d["date"]).dt.normalize())
        panel = panel.merge(adj, on=["date", "pool"], how="left")
    return panel.sort_values(["date", "pool"], kind="stable").reset_index(drop=True)


def history_lookback(models: ModelsConfig, tolerance: float = 1e-6) -> int:
    """Rows of feature history a history estimator (EWM predictor) reads before the predicted row."""
    need = 0
    for fam in models.families.values():
        for spec in fam.estimators.values():
            hl = spec.params.get("halflife")
            if getattr(spec.estimator_class, "uses_history", False) and hl is not None:
                need = max(need, ewm_memory(halflife_rows(hl), tolerance))
    return need


def in_window(frame: pd.DataFrame, first: dt.date, last: dt.date) -> pd.DataFrame:
    if frame.empty:
        return frame
    day = pd.to_datetime(frame["date"]).dt.normalize()
    return frame[(day >= pd.Timestamp(first)) & (day <= pd.Timestamp(last))].reset_index(drop=True)


def universe_pairs(pool_metadata: pd.DataFrame, vault_name: str) -> pd.MultiIndex:
    """(date, pool) pairs of the vault's universe."""
    if pool_metadata.empty:
        return pd.MultiIndex.from_arrays([pd.DatetimeIndex([]), pd.Index([], dtype=object)], names=["date", "pool"])
    member = pool_metadata[pool_metadata["vaults"].map(lambda v: _member(v, vault_name))]
    return pd.MultiIndex.from_arrays([pd.to_datetime(member["date"]).dt.normalize(), member["pool"].astype(str)],
                                     names=["date", "pool"])


def _member(vaults: object, name: str) -> bool:
    if vaults is None or isinstance(vaults, float):
        return False
    return name in list(vaults)  # type: ignore[call-overload]


def primary_key(label_map: LabelMapConfig, models: ModelsConfig, family: str = "apy") -> tuple[str, str]:
    """(label, estimator) the nightly decision uses: the family's first regression label and its
    primary estimator (the backtest's defaults)."""
    label = next(i.name for i in label_map.labels() if i.family == family and i.task == "regression")
    return label, models.family(family).primary_name


def fit_bundle(features: pd.DataFrame, labels: pd.DataFrame, models: ModelsConfig, label_map: LabelMapConfig,
               as_of: pd.Timestamp, cv_label: str | None) -> dict[str, object]:
    """Every (label, estimator) fitted at ``as_of`` plus the CV of ``cv_label`` on the same rows."""
    fitted = research.fit_models(features, labels, models, as_of, label_map=label_map)
    cv_table, importances, note = pd.DataFrame(), pd.DataFrame(), ""
    if cv_label is not None:
        info = label_map.label(cv_label)
        known = labels[(labels[info.end_col] < research._as_of(as_of, labels[info.end_col])).to_numpy()]
        fam = models.family(info.family)
        ests = [n for n, s in fam.estimators.items()
                if (info.task == "classification") == _is_classifier(s, info.target)]
        try:
            cv = research.cross_validate(features, known, models, label=cv_label, estimators=ests,
                                         label_map=label_map)
            cv_table, importances = cv.summary(), cv.importances
        except Exception as exc:  # too little history for the configured folds: report, keep the fit
            note = f"CV skipped: {type(exc).__name__}: {exc}"
    return {"as_of": pd.Timestamp(as_of), "models": fitted, "cv": cv_table, "importances": importances,
            "cv_note": note}


def _is_classifier(spec, target: str) -> bool:
    from sklearn.base import is_classifier

    return bool(is_classifier(spec.build(target)))


def importance_png(fitted: dict[str, FittedModel], importances: pd.DataFrame) -> str | None:
    """Base64 PNG of mean |coefficient| (or importance) per feature, one bar group per model."""
    imp = importances
    if imp.empty:
        rows = [m.importances().assign(model=k) for k, m in fitted.items()]
        imp = pd.concat([r for r in rows if len(r)], ignore_index=True) if any(len(r) for r in rows) else imp
        if imp.empty:
            return None
        imp = imp.rename(columns={"model": "estimator"})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = imp.assign(value=imp["value"].abs()).groupby(["feature", "estimator"])["value"].mean().unstack()
    table = table.loc[table.max(axis=1).sort_values().index]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(table) + 1.2))
    table.plot.barh(ax=ax)
    ax.set_xlabel("mean |coefficient| over folds (standardized features)")
    ax.set_title("feature importance")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def bundle_metadata(bundles: dict[str, dict[str, object]]) -> dict[str, object]:
    """Metadata of the last partition of a run, plus one line per partition when several."""
    last_key = max(bundles)
    b = bundles[last_key]
    fitted: dict[str, FittedModel] = b["models"]  # type: ignore[assignment]
    cv: pd.DataFrame = b["cv"]  # type: ignore[assignment]
    png = importance_png(fitted, b["importances"])  # type: ignore[arg-type]
    n_train = {k: m.n_train for k, m in fitted.items()}
    meta: dict[str, object] = {
        "as_of": str(pd.Timestamp(b["as_of"]).date()),  # type: ignore[arg-type]
        "n_train": max(n_train.values(), default=0),
        "n_train_per_model": MetadataValue.json(n_train),
        "models": ", ".join(fitted) or "(none: not enough labelled history)",
        "cv_summary": markdown_table(cv[[c for c in ("label", "estimator", "metric", "model", "baseline", "n")
                                         if c in cv]] if len(cv) else cv),
    }
    if b["cv_note"]:
        meta["cv_note"] = str(b["cv_note"])
    if png:
        meta["feature_importance"] = MetadataValue.md(f"![importance](data:image/png;base64,{png})")
    if len(bundles) > 1:
        rows = [{"partition": k, "n_train": max((m.n_train for m in v["models"].values()), default=0),  # type: ignore[union-attr]
                 "models": len(v["models"])} for k, v in sorted(bundles.items())]  # type: ignore[arg-type]
        meta["per_partition"] = markdown_table(pd.DataFrame(rows), max_rows=60)
    return meta


def model_for_day(bundles: dict[str, dict[str, object]], day: pd.Timestamp) -> dict[str, object] | None:
    """The bundle with the latest ``as_of`` <= ``day`` (None before the first fit)."""
    best = None
    for b in bundles.values():
        if b is not None and pd.Timestamp(b["as_of"]) <= day and (best is None or b["as_of"] > best["as_of"]):  # type: ignore[operator]
            best = b
    return best


def predict_days(bundles: dict[str, dict[str, object]], features: pd.DataFrame, days: pd.DatetimeIndex,
                 model_key: str, time_col: str = "date") -> pd.DataFrame:
    """``[time, (date,) instrument, prediction, model_as_of]`` for the rows of ``days`` (by ``date``),
    each day with the latest model fitted at or before it. History estimators read earlier rows."""
    out = []
    feats = features.sort_values([time_col, "instrument"], kind="stable").reset_index(drop=True)
    fday = pd.to_datetime(feats["date"]).dt.normalize()
    groups: dict[pd.Timestamp, list[pd.Timestamp]] = {}
    chosen = {}
    for day in days:
        b = model_for_day(bundles, day)
        if b is None or model_key not in b["models"]:  # type: ignore[operator]
            continue
        groups.setdefault(b["as_of"], []).append(day)  # type: ignore[arg-type]
        chosen[b["as_of"]] = b
    for as_of, group in groups.items():
        fitted: FittedModel = chosen[as_of]["models"][model_key]  # type: ignore[index]
        if not fitted.estimators:
            continue
        upto = feats[(fday <= max(group)).to_numpy()].reset_index(drop=True)
        rows = np.flatnonzero(pd.to_datetime(upto["date"]).dt.normalize().isin(group).to_numpy())
        if not len(rows):
            continue
        frame = upto if fitted.uses_history else upto.iloc[rows].reset_index(drop=True)
        if fitted.task == "classification":
            proba = fitted.predict_proba(frame)
            proba = proba[rows] if fitted.uses_history else proba
            names = fitted.class_names or [str(c) for c in fitted.classes or []]
            cols = {f"p_{names[c] if c < len(names) else c}": proba[:, i] for i, c in enumerate(fitted.classes or [])}
            pred = pd.DataFrame(cols)
        else:
            values = fitted.predict(frame)
            pred = pd.DataFrame({"prediction": values[rows] if fitted.uses_history else values})
        keys = upto.iloc[rows][list(dict.fromkeys((time_col, "date", "instrument")))]
        piece = pd.concat([keys.reset_index(drop=True), pred], axis=1)
        piece["model_as_of"] = pd.Timestamp(as_of)
        out.append(piece)
    if not out:
        return pd.DataFrame()
    return pd.concat(out, ignore_index=True).sort_values([time_col, "instrument"], kind="stable").reset_index(drop=True)


def weekly_partitions(start: dt.date) -> WeeklyPartitionsDefinition:
    """Mondays (UTC) from the first Monday on or after ``start``; the current week exists as soon
    as it starts (``end_offset=1``) so that today's predictions have this week's model."""
    first = start + dt.timedelta(days=(7 - start.weekday()) % 7)
    return WeeklyPartitionsDefinition(start_date=first.isoformat(), day_offset=1, timezone="UTC", fmt="%Y-%m-%d",
                                      end_offset=1)


def _lookback(days: int) -> TimeWindowPartitionMapping:
    return TimeWindowPartitionMapping(start_offset=-days, allow_nonexistent_upstream_partitions=True)


#: weekly partition W -> every daily partition before W's first day
HISTORY_BEFORE_WEEK = TimeWindowPartitionMapping(start_offset=-HISTORY_WEEKS, end_offset=-1,
                                                 allow_nonexistent_upstream_partitions=True)
#: daily D -> the weekly partition containing D (its as_of, the Monday, is <= D)
WEEK_OF_DAY = TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True)


def _keys(context: AssetExecutionContext) -> list[str]:
    return list(context.partition_keys)


# --------------------------------------------------------------------------------------------
# Vault (yield) research
# --------------------------------------------------------------------------------------------


def build_research_assets(vault: VaultConfig, partitions_def: DailyPartitionsDefinition = daily_partitions
                          ) -> list[AssetsDefinition]:
    """``[<vault>/features, <vault>/fitted_models, <vault>/predictions]``."""
    prefix, group = vault.name, vault.name
    lookback = research.required_lookback(vault.feature_map, vault.models)
    pred_lookback = history_lookback(vault.models)
    adjusted = needs_adjusted(vault)
    label, estimator = primary_key(vault.label_map, vault.models)
    model_key = f"{label}/{estimator}"
    warmup = vault.label_map.max_horizon() + vault.models.cv.min_train
    weeks = weekly_partitions(vault.start_date + dt.timedelta(days=warmup))
    features_key = AssetKey([prefix, "features"])
    models_key = AssetKey([prefix, "fitted_models"])

    source_ins = {"pool_history": AssetIn(key=AssetKey("pool_history"), partition_mapping=_lookback(lookback),
                                          metadata=TOLERATE_GAPS)}
    if adjusted:
        source_ins["adjusted_yields"] = AssetIn(key=AssetKey([prefix, "adjusted_yields"]),
                                                partition_mapping=_lookback(lookback), metadata=TOLERATE_GAPS)

    @asset(
        key=features_key,
        ins=source_ins,
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key=PARQUET_IO,
        group_name=group,
        kinds={"python", "parquet"},
        description=f"Vault {vault.name}: research features per (date, instrument = pool) from the vault's "
        f"feature_map, every pool of {'pool_history + adjusted_yields' if adjusted else 'pool_history'} "
        f"(universe filtering happens at prediction time). Reads {lookback} days of history before the "
        "partition so values equal the full-history computation (EWM tolerance 1e-6).",
    )
    def features(context: AssetExecutionContext, pool_history: pd.DataFrame, **extra: pd.DataFrame):
        first, last = window_days(context.partition_time_window)
        panel = yield_panel(pool_history, extra.get("adjusted_yields"))
        feats = research.build_features(panel, vault.feature_map) if len(panel) else pd.DataFrame(
            columns=["date", "instrument"])
        out = in_window(feats, first, last)
        return Output(out, metadata={
            "dagster/row_count": len(out),
            "instruments": int(out["instrument"].nunique()) if len(out) else 0,
            "feature_columns": len(research.feature_columns(out)),
            "history_rows_read": len(panel),
            "lookback_days": lookback,
            "preview": markdown_table(out.tail(5)),
        })

    history_in = {"allow_missing_partitions": True}

    @asset(
        key=models_key,
        ins={
            "features": AssetIn(key=features_key, partition_mapping=HISTORY_BEFORE_WEEK, metadata=history_in),
            "pool_history": AssetIn(key=AssetKey("pool_history"), partition_mapping=HISTORY_BEFORE_WEEK,
                                    metadata=history_in),
            "pool_metadata": AssetIn(key=AssetKey("pool_metadata"), partition_mapping=HISTORY_BEFORE_WEEK,
                                     metadata=history_in),
            **({"adjusted_yields": AssetIn(key=AssetKey([prefix, "adjusted_yields"]),
                                           partition_mapping=HISTORY_BEFORE_WEEK, metadata=history_in)}
               if adjusted else {}),
        },
        partitions_def=weeks,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key=MODEL_IO,
        group_name=group,
        kinds={"python", "scikitlearn"},
        description=f"Vault {vault.name}: every (label, estimator) of the vault's models, refit weekly with "
        "as_of = the week's Monday on the rows (pools in the universe that day) whose label ended before it; "
        f"purged walk-forward CV of {label} vs the naive baseline. Predictions use {model_key}.",
    )
    def fitted_models(context: AssetExecutionContext, features: pd.DataFrame, pool_history: pd.DataFrame,
                      pool_metadata: pd.DataFrame, **extra: pd.DataFrame):
        panel = yield_panel(pool_history, extra.get("adjusted_yields"))
        labels = research.build_labels(panel, vault.label_map) if len(panel) else pd.DataFrame()
        feats = features
        if len(feats):
            feats = feats.assign(date=pd.to_datetime(feats["date"]).dt.normalize())
            keys = pd.MultiIndex.from_arrays([feats["date"], feats["instrument"].astype(str)])
            feats = feats[keys.isin(universe_pairs(pool_metadata, vault.name))].reset_index(drop=True)
        bundles = {}
        for key in _keys(context):
            as_of = pd.Timestamp(key)
            if feats.empty or labels.empty:
                bundles[key] = {"as_of": as_of, "models": {}, "cv": pd.DataFrame(), "importances": pd.DataFrame(),
                                "cv_note": "no history before as_of"}
                continue
            bundles[key] = fit_bundle(feats[feats["date"] < as_of], labels, vault.models, vault.label_map, as_of,
                                      cv_label=label)
        value = bundles[_keys(context)[0]] if len(bundles) == 1 else bundles
        return Output(value, metadata={**bundle_metadata(bundles), "primary_model": model_key})

    @asset(
        key=AssetKey([prefix, "predictions"]),
        ins={
            "features": AssetIn(key=features_key, partition_mapping=_lookback(pred_lookback), metadata=TOLERATE_GAPS),
            "fitted_models": AssetIn(key=models_key, partition_mapping=WEEK_OF_DAY, metadata=TOLERATE_GAPS),
            "pool_metadata": AssetIn(key=AssetKey("pool_metadata")),
        },
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key=PARQUET_IO,
        group_name=group,
        kinds={"python", "parquet"},
        description=f"Vault {vault.name}: predicted APY (fraction/yr, {model_key}) per (date, pool) of the "
        "vault's universe that day, from the latest weekly model with as_of <= the day. No rows before the "
        "first fitted week (the vault stays idle).",
    )
    def predictions(context: AssetExecutionContext, features: pd.DataFrame,
                    fitted_models: dict[str, dict[str, object]], pool_metadata: pd.DataFrame):
        first, last = window_days(context.partition_time_window)
        days = pd.date_range(first, last, freq="D")
        raw = predict_days(fitted_models, features, days, model_key) if len(features) else pd.DataFrame()
        if raw.empty:
            out = pd.DataFrame({c: pd.Series(dtype="datetime64[ns]" if c in ("date", "model_as_of") else
                                             float if c == "predicted_apy" else object) for c in PREDICTION_COLUMNS})
        else:
            out = raw.rename(columns={"instrument": "pool", "prediction": "predicted_apy"})
            out["date"] = pd.to_datetime(out["date"]).dt.normalize()
            out["pool"] = out["pool"].astype(str)
            out = out[pd.MultiIndex.from_frame(out[["date", "pool"]]).isin(universe_pairs(pool_metadata, vault.name))]
            out = out.assign(model=model_key)[PREDICTION_COLUMNS].reset_index(drop=True)
        missing_days = [d.date().isoformat() for d in days if d not in set(out["date"])]
        if missing_days:
            context.log.warning(f"{prefix}/predictions: no prediction for {len(missing_days)} day(s) "
                                f"(no model fitted yet, or no features): {missing_days[:5]}")
        return Output(out, metadata={
            "dagster/row_count": len(out),
            "pools": int(out["pool"].nunique()) if len(out) else 0,
            "model": model_key,
            "model_as_of": ", ".join(sorted({str(pd.Timestamp(t).date()) for t in out["model_as_of"]})) or "(none)",
            "days_without_predictions": len(missing_days),
            "mean_predicted_apy": float(out["predicted_apy"].mean()) if len(out) else 0.0,
            "preview": markdown_table(out.tail(10)),
        })

    return [features, fitted_models, predictions]


# --------------------------------------------------------------------------------------------
# Price research (Binance klines)
# --------------------------------------------------------------------------------------------


def interval_days(interval: str) -> float:
    return pd.Timedelta(interval.replace("m", "min") if interval.endswith("m") else interval) / pd.Timedelta(days=1)


def build_price_research_assets(partitions_def: DailyPartitionsDefinition, config_path=None
                                ) -> list[AssetsDefinition]:
    """Per interval of the price research config: features, weekly fitted models, predictions."""
    cfg = research.load_price_research_config(config_path or config_dir() / PRICE_CONFIG)
    start = partitions_def.start.date()
    out: list[AssetsDefinition] = []
    for interval, study in cfg.intervals.items():
        out += _price_assets(interval, study.feature_map, study.label_map, study.models, list(cfg.symbols),
                             partitions_def, start)
    return out


def _price_assets(interval: str, feature_map: FeatureMapConfig, label_map: LabelMapConfig, models: ModelsConfig,
                  symbols: list[str], partitions_def: DailyPartitionsDefinition, start: dt.date
                  ) -> list[AssetsDefinition]:
    prefix = ["price_research", interval]
    bar = interval_days(interval)
    lookback = math.ceil(research.required_lookback(feature_map, models) * bar) + 1
    pred_lookback = math.ceil(history_lookback(models) * bar) + 1
    warmup = math.ceil((label_map.max_horizon() + models.cv.min_train) * bar)
    weeks = weekly_partitions(start + dt.timedelta(days=warmup))
    features_key = AssetKey([*prefix, "features"])
    models_key = AssetKey([*prefix, "fitted_models"])
    group = "price_research"
    cv_label = next((i.name for i in label_map.labels() if i.task == "classification"), label_map.labels()[0].name)

    def panel_of(klines: pd.DataFrame) -> pd.DataFrame:
        if klines.empty:
            return klines
        panel = research.klines_panel(klines, interval)
        return panel[panel["instrument"].isin(symbols)].reset_index(drop=True)

    @asset(
        key=features_key,
        ins={"binance_klines": AssetIn(key=AssetKey("binance_klines"), partition_mapping=_lookback(lookback),
                                       metadata=TOLERATE_GAPS)},
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key=PARQUET_IO,
        group_name=group,
        kinds={"python", "parquet"},
        description=f"Price research features per {interval} bar (open_time, date, instrument) of "
        f"{', '.join(symbols)}; reads {lookback} days of klines before the partition.",
    )
    def price_features(context: AssetExecutionContext, binance_klines: pd.DataFrame):
        first, last = window_days(context.partition_time_window)
        panel = panel_of(binance_klines)
        feats = research.build_features(panel, feature_map) if len(panel) else pd.DataFrame(
            {"open_time": pd.Series(dtype="datetime64[ns, UTC]"), "date": pd.Series(dtype="datetime64[ns]"),
             "instrument": pd.Series(dtype=object)})
        out = in_window(feats, first, last)
        if panel.empty:
            context.log.warning(f"no {interval} klines in the window: empty features")
        return Output(out, metadata={"dagster/row_count": len(out), "bars_read": len(panel),
                                     "lookback_days": lookback, "preview": markdown_table(out.tail(5))})

    @asset(
        key=models_key,
        ins={
            "features": AssetIn(key=features_key, partition_mapping=HISTORY_BEFORE_WEEK, metadata=TOLERATE_GAPS),
            "binance_klines": AssetIn(key=AssetKey("binance_klines"), partition_mapping=HISTORY_BEFORE_WEEK,
                                      metadata=TOLERATE_GAPS),
        },
        partitions_def=weeks,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key=MODEL_IO,
        group_name=group,
        kinds={"python", "scikitlearn"},
        description=f"Price models ({interval}): every (label, estimator) refit weekly with as_of = Monday on "
        f"bars whose label ended before it; purged walk-forward CV of {cv_label}.",
    )
    def price_models(context: AssetExecutionContext, features: pd.DataFrame, binance_klines: pd.DataFrame):
        panel = panel_of(binance_klines)
        labels = research.build_labels(panel, label_map) if len(panel) else pd.DataFrame()
        bundles = {}
        for key in _keys(context):
            as_of = pd.Timestamp(key, tz="UTC")
            if features.empty or labels.empty:
                bundles[key] = {"as_of": as_of, "models": {}, "cv": pd.DataFrame(), "importances": pd.DataFrame(),
                                "cv_note": "no klines before as_of"}
                continue
            feats = features[features["open_time"] < as_of]
            try:
                bundles[key] = fit_bundle(feats, labels, models, label_map, as_of, cv_label=cv_label)
            except ValueError as exc:  # e.g. no labelled rows yet
                bundles[key] = {"as_of": as_of, "models": {}, "cv": pd.DataFrame(), "importances": pd.DataFrame(),
                                "cv_note": f"not fitted: {exc}"}
        value = bundles[_keys(context)[0]] if len(bundles) == 1 else bundles
        return Output(value, metadata=bundle_metadata(bundles))

    @asset(
        key=AssetKey([*prefix, "predictions"]),
        ins={
            "features": AssetIn(key=features_key, partition_mapping=_lookback(pred_lookback), metadata=TOLERATE_GAPS),
            "fitted_models": AssetIn(key=models_key, partition_mapping=WEEK_OF_DAY, metadata=TOLERATE_GAPS),
        },
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key=PARQUET_IO,
        group_name=group,
        kinds={"python", "parquet"},
        description=f"Price predictions per {interval} bar: one column per regression model "
        "(`<label>/<estimator>`, forward log return) and class probabilities (`<label>/<estimator>:p_<class>`), "
        "from the latest weekly model with as_of <= the bar's day.",
    )
    def price_predictions(context: AssetExecutionContext, features: pd.DataFrame,
                          fitted_models: dict[str, dict[str, object]]):
        first, last = window_days(context.partition_time_window)
        days = pd.date_range(first, last, freq="D")
        keys = sorted({k for b in fitted_models.values() if b for k in b["models"]})  # type: ignore[union-attr]
        out = pd.DataFrame()
        for key in keys:
            piece = predict_days(_tz_naive_as_of(fitted_models), features, days, key, time_col="open_time") \
                if len(features) else pd.DataFrame()
            if piece.empty:
                continue
            piece = piece.rename(columns={c: key if c == "prediction" else f"{key}:{c}"
                                          for c in piece.columns if c == "prediction" or c.startswith("p_")})
            on = ["open_time", "date", "instrument", "model_as_of"]
            out = piece if out.empty else out.merge(piece, on=on, how="outer")
        if out.empty:
            out = pd.DataFrame({"open_time": pd.Series(dtype="datetime64[ns, UTC]"),
                                "date": pd.Series(dtype="datetime64[ns]"), "instrument": pd.Series(dtype=object)})
            context.log.warning(f"price predictions {interval} {first}..{last}: no model or no features")
        return Output(out, metadata={"dagster/row_count": len(out), "models": ", ".join(keys) or "(none)",
                                     "preview": markdown_table(out.tail(5))})

    return [price_features, price_models, price_predictions]


def _tz_naive_as_of(bundles: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """Price bundles carry a UTC ``as_of``; day comparisons use tz-naive UTC dates."""
    return {k: {**b, "as_of": pd.Timestamp(b["as_of"]).tz_localize(None) if pd.Timestamp(b["as_of"]).tzinfo else
                b["as_of"]} for k, b in bundles.items() if b is not None}



def research_assets(vaults) -> list[AssetsDefinition]:
    """Everything this module and ``rebalance`` add to the code location: per vault features,
    fitted_models, predictions and rebalance_weights; the price research per kline interval."""
    from midfreq_assets.assets.binance import binance_partitions
    from midfreq_assets.assets.rebalance import build_rebalance_assets

    out = [a for v in vaults for a in [*build_research_assets(v), *build_rebalance_assets(v)]]
    return out + build_price_research_assets(binance_partitions)


def price_intervals(config_path=None) -> list[str]:
    return list(research.load_price_research_config(config_path or config_dir() / PRICE_CONFIG).intervals)
