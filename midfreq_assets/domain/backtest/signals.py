"""Signal backtest for price models: positions from model outputs, P&L net of costs.

position = clip(expected class value / threshold scaling, -max_leverage, max_leverage), where the
expected class value is ``sum_k p_k v_k`` (class values, e.g. big_down=-2 .. big_up=+2); below
``threshold`` in absolute value the position is flat. For regression outputs the predicted return
plays the same role. P&L per bar: ``position_t * fwd_return_t - cost * |position_t - position_{t-1}|``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field

from midfreq_assets.domain.config.base import StrictModel
from midfreq_assets.domain.research.engine import klines_panel
from midfreq_assets.domain.research.labels import LabelInfo, LabelMapConfig
from midfreq_assets.domain.units import DAYS_PER_YEAR


class SignalConfig(StrictModel):
    """How predictions become positions (the ``signal:`` section of a price-research interval)."""

    threshold: float = Field(default=0.5, ge=0, description="|expected class value| (or scaled predicted "
                             "return) needed to take a position")
    max_leverage: float = Field(default=1.0, gt=0, description="cap on |position|")
    scale: float = Field(default=1.0, gt=0, description="position = signal * scale, capped")
    cost: float = Field(default=0.0005, ge=0, description="cost per unit of position change")
    bars_per_year: float = Field(default=DAYS_PER_YEAR, gt=0, description="annualization (set from the interval)")


def expected_class_value(proba: pd.DataFrame, class_values: list[float] | None = None) -> pd.Series:
    """``sum_k p_k v_k``; default values centred on the middle class (-K/2 .. K/2)."""
    k = proba.shape[1]
    values = np.asarray(class_values if class_values is not None else np.arange(k) - (k - 1) / 2, dtype=float)
    return pd.Series(proba.to_numpy(dtype=float) @ values, index=proba.index)


def positions(signal: pd.Series, cfg: SignalConfig) -> pd.Series:
    pos = (signal * cfg.scale).clip(-cfg.max_leverage, cfg.max_leverage)
    return pos.where(signal.abs() >= cfg.threshold, 0.0).fillna(0.0)


def signal_pnl(pos: pd.Series, fwd_return: pd.Series, cfg: SignalConfig) -> pd.Series:
    """Per-bar P&L of one instrument (``pos`` and ``fwd_return`` on the same time index)."""
    change = pos.diff().abs().fillna(pos.abs())
    return pos * fwd_return.fillna(0.0) - cfg.cost * change


def signal_metrics(pnl: pd.Series, pos: pd.Series, fwd_return: pd.Series, cfg: SignalConfig) -> dict[str, float]:
    """Annualized return, Sortino, max drawdown (of cumulative log P&L), hit ratio (sign right when in)."""
    n = len(pnl)
    ann = float(pnl.mean() * cfg.bars_per_year) if n else float("nan")
    down = float(np.sqrt((np.minimum(pnl, 0.0) ** 2).mean() * cfg.bars_per_year)) if n else float("nan")
    curve = pnl.cumsum()
    mdd = float((curve.cummax() - curve).max()) if n else 0.0
    active = pos != 0
    hits = np.sign(pos[active]) == np.sign(fwd_return[active])
    return {"annual_return": ann, "sortino": ann / down if down > 0 else float("nan"), "max_drawdown": mdd,
            "hit_ratio": float(hits.mean()) if active.any() else float("nan"), "exposure": float(active.mean())}


def signal_backtest(frame: pd.DataFrame, cfg: SignalConfig, signal_col: str = "signal",
                    return_col: str = "fwd_return") -> pd.DataFrame:
    """Per (fold, instrument) metrics of a long frame ``[fold, instrument, time, signal, fwd_return]``
    (``signal``: expected class value or predicted return, known at time t)."""
    rows = []
    time_col = "open_time" if "open_time" in frame else "date"
    for (fold, inst), g in frame.sort_values(time_col).groupby(["fold", "instrument"], sort=True):
        pos = positions(g[signal_col], cfg)
        pnl = signal_pnl(pos, g[return_col], cfg)
        rows.append({"fold": fold, "instrument": inst, "bars": len(g), **signal_metrics(pnl, pos, g[return_col], cfg)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Price models as signals: per weekly fold and instrument
# --------------------------------------------------------------------------------------------


def next_bar_returns(klines: pd.DataFrame, interval: str, lag: int) -> pd.DataFrame:
    """``[open_time, instrument, fwd_return, sigma]``: log return of the bar after the lag, and a
    causal EWM volatility of bar returns (known at the bar's close)."""
    panel = klines_panel(klines, interval).sort_values(["instrument", "open_time"])
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
