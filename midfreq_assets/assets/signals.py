"""``price_research/<interval>/signal_report``: the price models traded as signals, net of costs.

Each weekly model partition is one walk-forward fold (its predictions cover the days after its
``as_of`` only). Positions come from the class probabilities (expected class value, in sigma
units like the buckets) or from the predicted return scaled by a causal volatility estimate; the
P&L of a bar is the position times the next bar's log return after the execution lag.
"""

import numpy as np
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

from midfreq_assets.domain.research import engine as research
from midfreq_assets.domain.config.vault import config_dir
from midfreq_assets.domain.research.labels import LabelInfo, LabelMapConfig
from midfreq_assets.domain.backtest.signals import SignalConfig, expected_class_value, signal_backtest
from midfreq_assets.metadata import markdown_table

PRICE_CONFIG = "research/btc_price.yaml"
BARS_PER_YEAR = {"1m": 525_600, "5m": 105_120, "15m": 35_040, "1h": 8_760, "4h": 2_190, "1d": 365}
OPTIONAL_HISTORY = {"allow_missing_partitions": True, "optional": True}


def next_bar_returns(klines: pd.DataFrame, interval: str, lag: int) -> pd.DataFrame:
    """``[open_time, instrument, fwd_return, sigma]``: log return of the bar after the lag, and a
    causal EWM volatility of bar returns (known at the bar's close)."""
    panel = research.klines_panel(klines, interval).sort_values(["instrument", "open_time"])
    log_close = np.log(panel["close"].astype(float))
    grouped = log_close.groupby(panel["instrument"])
    ret = grouped.diff()
    fwd = grouped.shift(-(lag + 1)) - grouped.shift(-lag)
    sigma = ret.groupby(panel["instrument"]).transform(lambda r: r.ewm(halflife=24, min_periods=12).std())
    return pd.DataFrame({"open_time": panel["open_time"], "instrument": panel["instrument"],
                         "fwd_return": fwd, "sigma": sigma})


def model_signals(predictions: pd.DataFrame, labels: dict[str, LabelInfo]) -> dict[str, pd.DataFrame]:
    """Per model key: ``[open_time, instrument, fold, signal, kind, horizon]``. Classifiers give the
    expected class value of ``<key>:p_<class>`` (classes valued -K/2..K/2 in bucket order, i.e.
    roughly in sigma units); regressors their predicted return (scaled later)."""
    out = {}
    keys = sorted({c.split(":")[0] for c in predictions.columns if "/" in c})
    for key in keys:
        info = labels.get(key.split("/")[0])
        if info is None:
            continue
        base = predictions[["open_time", "instrument", "model_as_of"]].rename(columns={"model_as_of": "fold"})
        probs = [f"{key}:p_{c}" for c in (info.classes or ()) if f"{key}:p_{c}" in predictions]
        if probs:
            signal = expected_class_value(predictions[probs].fillna(0.0))
            kind = "class"
        elif key in predictions:
            signal = predictions[key]
            kind = "return"
        else:
            continue
        frame = base.assign(signal=signal.to_numpy(), kind=kind, horizon=info.horizon)
        out[key] = frame.dropna(subset=["signal"])
    return out


def signal_table(predictions: pd.DataFrame, klines: pd.DataFrame, interval: str, label_map: LabelMapConfig,
                 cfg: SignalConfig) -> pd.DataFrame:
    """Metrics per (model, fold, instrument) and per model over all folds ('all')."""
    if predictions.empty or klines.empty:
        return pd.DataFrame()
    labels = {info.name: info for info in label_map.labels()}
    returns = next_bar_returns(klines, interval, max(info.lag for info in labels.values()))
    rows = []
    for key, sig in model_signals(predictions, labels).items():
        frame = sig.merge(returns, on=["open_time", "instrument"], how="inner")
        if sig["kind"].iloc[0] == "return":  # predicted h-bar return in sigma units of that horizon
            frame["signal"] = frame["signal"] / (frame["sigma"] * np.sqrt(frame["horizon"]))
        frame = frame.dropna(subset=["signal", "fwd_return"])
        if frame.empty:
            continue
        per_fold = signal_backtest(frame.assign(fold=frame["fold"].astype(str)), cfg)
        overall = signal_backtest(frame.assign(fold="all"), cfg)
        rows.append(pd.concat([per_fold, overall], ignore_index=True).assign(model=key))
    if not rows:
        return pd.DataFrame()
    table = pd.concat(rows, ignore_index=True)
    return table[["model", "fold", "instrument", *[c for c in table.columns if c not in ("model", "fold", "instrument")]]]


def build_signal_report_assets(config_path=None) -> list[AssetsDefinition]:
    cfg = research.load_price_research_config(config_path or config_dir() / PRICE_CONFIG)
    return [_signal_report(interval, spec) for interval, spec in cfg.intervals.items()]


def _signal_report(interval: str, spec) -> AssetsDefinition:
    signal_cfg = spec.signal.model_copy(update={"bars_per_year": float(BARS_PER_YEAR.get(interval, 365))})

    @asset(
        key=AssetKey(["price_research", interval, "signal_report"]),
        ins={
            "predictions": AssetIn(key=AssetKey(["price_research", interval, "predictions"]),
                                   partition_mapping=AllPartitionMapping(), metadata=OPTIONAL_HISTORY),
            "binance_klines": AssetIn(key=AssetKey("binance_klines"), partition_mapping=AllPartitionMapping(),
                                      metadata=OPTIONAL_HISTORY),
        },
        io_manager_key="parquet_io_manager",
        group_name="price_research",
        kinds={"python", "parquet"},
        description=f"{interval} price models as trading signals: annualized return, Sortino, max drawdown "
        "and hit ratio per weekly fold and instrument (position from class probabilities or scaled "
        "predicted return, cost per unit of position change).",
    )
    def signal_report(context: AssetExecutionContext, predictions: pd.DataFrame, binance_klines: pd.DataFrame):
        table = signal_table(predictions, binance_klines, interval, spec.label_map, signal_cfg)
        if table.empty:
            context.log.warning(f"signal_report {interval}: no predictions with known forward returns yet")
        overall = table[table["fold"] == "all"] if len(table) else table
        return Output(table, metadata={
            "dagster/row_count": len(table),
            "models": int(table["model"].nunique()) if len(table) else 0,
            "folds": int(table.loc[table["fold"] != "all", "fold"].nunique()) if len(table) else 0,
            "overall": markdown_table(overall),
            "signal_config": str(signal_cfg),
        })

    return signal_report

