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


class SignalConfig(StrictModel):
    """How predictions become positions (the ``signal:`` section of a price-research interval)."""

    threshold: float = Field(default=0.5, ge=0, description="|expected class value| (or scaled predicted "
                             "return) needed to take a position")
    max_leverage: float = Field(default=1.0, gt=0, description="cap on |position|")
    scale: float = Field(default=1.0, gt=0, description="position = signal * scale, capped")
    cost: float = Field(default=0.0005, ge=0, description="cost per unit of position change")
    bars_per_year: float = Field(default=365.0, gt=0, description="annualization (set from the interval)")


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
