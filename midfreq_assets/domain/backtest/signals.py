"""Signal backtest for price models: positions from model outputs, P&L net of costs.

The signal of a classifier is its expected class value ``sum_k p_k v_k`` (class values from
``signal.class_values`` by class name, default -K/2..K/2 in class order, e.g. big_down=-2 ..
big_up=+2); of a regressor, its predicted return in sigma units. Below ``threshold`` in absolute
value the position is flat. Sizing (``signal.sizing``):

- ``expected_value``: ``position = clip(signal * scale, -max_leverage, max_leverage)``;
- ``max_loss_probability`` (classifiers; the original midfreq's sizing): the side is the signal's
  sign, the size shrinks with the predicted probability ``q`` of a loss beyond ``loss_threshold``
  on that side (the classes valued <= -loss_threshold for a long, >= +loss_threshold for a short):
  ``position = side * max_leverage * clip(1 - q / max_loss_probability, 0, 1)``, flat once
  ``q >= max_loss_probability``. Regressors keep the ``expected_value`` sizing.

P&L per bar: ``position_t * fwd_return_t - cost * |position_t - position_{t-1}|``. The report
also gives the signal's quantiles and the mean forward return per signal quantile bucket (does a
stronger signal come before a larger move?).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from midfreq_assets.domain.config.base import StrictModel
from midfreq_assets.domain.research.engine import klines_panel
from midfreq_assets.domain.research.labels import LabelInfo, LabelMapConfig
from midfreq_assets.domain.units import DAYS_PER_YEAR

Sizing = Literal["expected_value", "max_loss_probability"]


class SignalConfig(StrictModel):
    """How predictions become positions (the ``signal:`` section of a price-research interval)."""

    threshold: float = Field(
        default=0.5,
        ge=0,
        description="|expected class value| (or scaled predicted return) needed to take a position",
    )
    max_leverage: float = Field(default=1.0, gt=0, description="cap on |position|")
    scale: float = Field(default=1.0, gt=0, description="position = signal * scale, capped")
    cost: float = Field(default=0.0005, ge=0, description="cost per unit of position change")
    bars_per_year: float = Field(
        default=DAYS_PER_YEAR, gt=0, description="annualization (set from the interval)"
    )
    sizing: Sizing = Field(default="expected_value", description="expected_value | max_loss_probability")
    class_values: dict[str, float] | None = Field(
        default=None, description="class name -> value (default: -K/2..K/2 in class order)"
    )
    loss_threshold: float = Field(default=1.0, gt=0, description="class value beyond which a class is a loss")
    max_loss_probability: float = Field(default=0.3, gt=0, le=1, description="flat at this loss probability")
    quantiles: list[float] = Field(
        default_factory=lambda: [0.05, 0.25, 0.5, 0.75, 0.95],
        min_length=1,
        description="signal quantiles reported",
    )
    buckets: int = Field(
        default=5, ge=2, le=20, description="signal quantile buckets of the forward-return summary"
    )

    @model_validator(mode="after")
    def _quantiles_in_range(self) -> SignalConfig:
        bad = [q for q in self.quantiles if not 0 <= q <= 1]
        if bad:
            raise ValueError(f"quantiles must be within [0, 1] (got {bad})")
        return self

    def values_of(self, classes: list[str] | tuple[str, ...]) -> np.ndarray:
        """Value of each class (in the given order): ``class_values`` by name, else -K/2..K/2."""
        if self.class_values is None:
            return np.arange(len(classes)) - (len(classes) - 1) / 2
        missing = [c for c in classes if c not in self.class_values]
        if missing:
            raise ValueError(f"signal.class_values has no value for class(es) {missing}")
        return np.array([self.class_values[c] for c in classes], dtype=float)


def expected_class_value(
    proba: pd.DataFrame, class_values: list[float] | np.ndarray | None = None
) -> pd.Series:
    """``sum_k p_k v_k``; default values centred on the middle class (-K/2 .. K/2)."""
    k = proba.shape[1]
    values = np.asarray(class_values if class_values is not None else np.arange(k) - (k - 1) / 2, dtype=float)
    return pd.Series(proba.to_numpy(dtype=float) @ values, index=proba.index)


def loss_probabilities(
    proba: pd.DataFrame, values: np.ndarray, threshold: float
) -> tuple[pd.Series, pd.Series]:
    """Predicted probability of a loss beyond ``threshold`` for a long (classes valued <= -threshold)
    and for a short (classes valued >= +threshold)."""
    p = proba.to_numpy(dtype=float)
    values = np.asarray(values, dtype=float)
    return (
        pd.Series(p[:, values <= -threshold].sum(axis=1), index=proba.index),
        pd.Series(p[:, values >= threshold].sum(axis=1), index=proba.index),
    )


def positions(
    signal: pd.Series,
    cfg: SignalConfig,
    loss_long: pd.Series | None = None,
    loss_short: pd.Series | None = None,
) -> pd.Series:
    """Position per bar from the signal (and, for ``max_loss_probability`` sizing, the loss
    probabilities of each side)."""
    if cfg.sizing == "max_loss_probability" and loss_long is not None and loss_short is not None:
        side = np.sign(signal)
        q = loss_long.where(side > 0, loss_short)
        pos = side * cfg.max_leverage * (1.0 - q / cfg.max_loss_probability).clip(0.0, 1.0)
    else:
        pos = (signal * cfg.scale).clip(-cfg.max_leverage, cfg.max_leverage)
    return pos.where(signal.abs() >= cfg.threshold, 0.0).fillna(0.0)


def signal_pnl(pos: pd.Series, fwd_return: pd.Series, cfg: SignalConfig) -> pd.Series:
    """Per-bar P&L of one instrument (``pos`` and ``fwd_return`` on the same time index)."""
    change = pos.diff().abs().fillna(pos.abs())
    return pos * fwd_return.fillna(0.0) - cfg.cost * change


def signal_metrics(
    pnl: pd.Series, pos: pd.Series, fwd_return: pd.Series, cfg: SignalConfig
) -> dict[str, float]:
    """Annualized return, Sortino, max drawdown (of cumulative log P&L), hit ratio (sign right when in)."""
    n = len(pnl)
    ann = float(pnl.mean() * cfg.bars_per_year) if n else float("nan")
    down = float(np.sqrt((np.minimum(pnl, 0.0) ** 2).mean() * cfg.bars_per_year)) if n else float("nan")
    curve = pnl.cumsum()
    mdd = float((curve.cummax() - curve).max()) if n else 0.0
    active = pos != 0
    hits = np.sign(pos[active]) == np.sign(fwd_return[active])
    return {
        "annual_return": ann,
        "sortino": ann / down if down > 0 else float("nan"),
        "max_drawdown": mdd,
        "hit_ratio": float(hits.mean()) if active.any() else float("nan"),
        "exposure": float(active.mean()),
    }


def signal_quantiles(signal: pd.Series, fwd_return: pd.Series, cfg: SignalConfig) -> dict[str, float]:
    """The signal's quantiles (``signal_p05`` ...) and the mean forward return per signal quantile
    bucket (``return_b1`` = weakest .. ``return_b<buckets>`` = strongest; ties share a bucket)."""
    out = {
        f"signal_p{round(q * 100):02d}": float(signal.quantile(q)) if len(signal) else float("nan")
        for q in cfg.quantiles
    }
    rank = signal.rank(method="average", pct=True)
    bucket = np.ceil(rank * cfg.buckets).clip(1, cfg.buckets)
    means = fwd_return.groupby(bucket).mean()
    out.update({f"return_b{b}": float(means.get(float(b), np.nan)) for b in range(1, cfg.buckets + 1)})
    return out


def signal_backtest(
    frame: pd.DataFrame, cfg: SignalConfig, signal_col: str = "signal", return_col: str = "fwd_return"
) -> pd.DataFrame:
    """Per (fold, instrument) metrics of a long frame ``[fold, instrument, time, signal, fwd_return]``
    (``signal``: expected class value or predicted return, known at time t; optional
    ``loss_long``/``loss_short`` for ``max_loss_probability`` sizing), with the quantile summary."""
    rows = []
    time_col = "open_time" if "open_time" in frame else "date"
    sized = {"loss_long", "loss_short"} <= set(frame.columns)
    for (fold, inst), g in frame.sort_values(time_col).groupby(["fold", "instrument"], sort=True):
        losses = (g["loss_long"], g["loss_short"]) if sized and g["loss_long"].notna().all() else (None, None)
        pos = positions(g[signal_col], cfg, *losses)
        pnl = signal_pnl(pos, g[return_col], cfg)
        rows.append(
            {
                "fold": fold,
                "instrument": inst,
                "bars": len(g),
                **signal_metrics(pnl, pos, g[return_col], cfg),
                **signal_quantiles(g[signal_col], g[return_col], cfg),
            }
        )
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
    return pd.DataFrame(
        {
            "open_time": panel["open_time"],
            "instrument": panel["instrument"],
            "fwd_return": fwd,
            "sigma": sigma,
        }
    )


def model_signals(
    predictions: pd.DataFrame, labels: dict[str, LabelInfo], cfg: SignalConfig | None = None
) -> dict[str, pd.DataFrame]:
    """Per model key: ``[open_time, instrument, fold, signal, kind, horizon]``. Classifiers give the
    expected class value of ``<key>:p_<class>`` (class values of ``cfg``; by default -K/2..K/2 in
    bucket order, i.e. roughly in sigma units) and the loss probabilities of each side
    (``loss_long``, ``loss_short``); regressors their predicted return (scaled later)."""
    cfg = cfg or SignalConfig()
    out = {}
    keys = sorted({c.split(":")[0] for c in predictions.columns if "/" in c})
    for key in keys:
        info = labels.get(key.split("/")[0])
        if info is None:
            continue
        base = predictions[["open_time", "instrument", "model_as_of"]].rename(columns={"model_as_of": "fold"})
        classes = [c for c in (info.classes or ()) if f"{key}:p_{c}" in predictions]
        probs = [f"{key}:p_{c}" for c in classes]
        extra: dict[str, object] = {}
        if probs:
            proba = predictions[probs].fillna(0.0)
            values = cfg.values_of(classes)
            signal = expected_class_value(proba, values)
            loss_long, loss_short = loss_probabilities(proba, values, cfg.loss_threshold)
            extra = {"loss_long": loss_long.to_numpy(), "loss_short": loss_short.to_numpy()}
            kind = "class"
        elif key in predictions:
            signal = predictions[key]
            kind = "return"
        else:
            continue
        frame = base.assign(signal=signal.to_numpy(), kind=kind, horizon=info.horizon, **extra)
        out[key] = frame.dropna(subset=["signal"])
    return out


def signal_table(
    predictions: pd.DataFrame,
    klines: pd.DataFrame,
    interval: str,
    label_map: LabelMapConfig,
    cfg: SignalConfig,
) -> pd.DataFrame:
    """Metrics per (model, fold, instrument) and per model over all folds ('all')."""
    if predictions.empty or klines.empty:
        return pd.DataFrame()
    labels = {info.name: info for info in label_map.labels()}
    returns = next_bar_returns(klines, interval, max(info.lag for info in labels.values()))
    rows = []
    for key, sig in model_signals(predictions, labels, cfg).items():
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
    return table[
        [
            "model",
            "fold",
            "instrument",
            *[c for c in table.columns if c not in ("model", "fold", "instrument")],
        ]
    ]
