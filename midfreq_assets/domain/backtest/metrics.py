"""Performance metrics of a backtest (one number each, comparable across grid points and benchmarks).

All rates are per year. Returns are daily log growth of wealth ``r_t = log(W_t / W_{t-1})``,
so the annualized log growth ``log(W_T / W_0) / years`` is exact whatever the path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from midfreq_assets.domain.backtest.engine import BacktestResult
from midfreq_assets.domain.units import DAYS_PER_YEAR

METRIC_COLUMNS = [
    "log_growth", "volatility", "sharpe", "sortino", "max_drawdown", "calmar", "turnover",
    "cost_drag", "gas_usd", "entropy", "tracking_error", "final_wealth", "years", "solver_failures",
]


def max_drawdown(wealth: pd.Series | np.ndarray) -> float:
    """Largest fall from a running peak, as a positive fraction (0.1 = -10%)."""
    w = np.asarray(wealth, dtype=float)
    if w.size == 0:
        return 0.0
    peak = np.maximum.accumulate(w)
    return float(np.max(1.0 - w / peak))


def drawdown_series(wealth: pd.Series) -> pd.Series:
    return wealth / wealth.cummax() - 1.0


def wealth_metrics(wealth: pd.Series, risk_free: float = 0.0) -> dict[str, float]:
    """Growth and risk of a wealth path indexed by date."""
    w = wealth.astype(float)
    years = (w.index[-1] - w.index[0]).days / DAYS_PER_YEAR if len(w) > 1 else 0.0
    r = np.diff(np.log(w.to_numpy()))
    dt = np.diff(pd.DatetimeIndex(w.index).as_unit("ns").asi8) / (86_400e9 * DAYS_PER_YEAR)
    growth = float(np.log(w.iloc[-1] / w.iloc[0]) / years) if years > 0 else float("nan")
    per_year = 1.0 / float(np.mean(dt)) if len(dt) else float("nan")
    vol = float(np.std(r, ddof=1) * np.sqrt(per_year)) if len(r) > 1 else float("nan")
    excess = r - risk_free * dt
    downside = np.minimum(excess, 0.0)
    down = float(np.sqrt(np.mean(downside**2) * per_year)) if len(r) else float("nan")
    mdd = max_drawdown(w)
    ann_excess = growth - risk_free
    return {
        "log_growth": growth,
        "volatility": vol,
        "sharpe": ann_excess / vol if vol > 0 else float("nan"),
        "sortino": ann_excess / down if down > 0 else float("nan"),
        "max_drawdown": mdd,
        "calmar": growth / mdd if mdd > 0 else float("nan"),
        "final_wealth": float(w.iloc[-1]),
        "years": years,
    }


def backtest_metrics(result: BacktestResult, risk_free: float = 0.0) -> dict[str, float]:
    """Every metric of the contract for one backtest (strategy or benchmark)."""
    s = result.steps
    out = wealth_metrics(result.wealth, risk_free)
    years = out["years"]
    mean_w = float(s["wealth_start"].mean())
    out["turnover"] = float(s["turnover"].sum() / years) if years > 0 else float("nan")  # per year
    out["cost_drag"] = (float((s["cost_usd"] + s["gas_usd"]).sum()) / mean_w / years) if years > 0 else float("nan")
    out["gas_usd"] = float(s["gas_usd"].sum())
    out["entropy"] = float(s["entropy"].mean())
    te = s["tracking_error"].dropna()
    out["tracking_error"] = float(np.sqrt(np.mean(te**2))) if len(te) else float("nan")
    out["solver_failures"] = int((s["status"] == "kept_holdings").sum())
    return {k: out[k] for k in METRIC_COLUMNS}


def metrics_table(results: dict[str, BacktestResult], risk_free: float = 0.0) -> pd.DataFrame:
    """One row per named result."""
    rows = [{"name": name, **backtest_metrics(r, risk_free)} for name, r in results.items()]
    return pd.DataFrame(rows, columns=["name", *METRIC_COLUMNS])
