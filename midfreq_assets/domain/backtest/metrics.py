"""Performance metrics of a backtest (one number each, comparable across grid points and benchmarks).

All rates are per year. Returns are daily log growth of wealth ``r_t = log(W_t / W_{t-1})``,
so the annualized log growth ``log(W_T / W_0) / years`` is exact whatever the path. Sharpe,
Sortino and Calmar are computed on returns in excess of the vault's base rate
(``backtest.base_rate``: what the idle base asset earns), and named ``excess_*`` to say so:
on near-riskless carry, ratios of total returns only measure how smooth the carry is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from midfreq_assets.domain.backtest.engine import BacktestResult
from midfreq_assets.domain.units import DAYS_PER_YEAR

METRIC_COLUMNS = [
    "log_growth",
    "base_rate",
    "excess_log_growth",
    "invested_share",
    "volatility",
    "excess_sharpe",
    "excess_sortino",
    "max_drawdown",
    "excess_calmar",
    "turnover",
    "cost_drag",
    "gas_usd",
    "il_drag",
    "price_pnl",
    "il_data_missing_share",
    "gap_pool_days",
    "empty_universe_days",
    "entropy",
    "tracking_error",
    "final_wealth",
    "years",
    "solver_failures",
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


def wealth_metrics(wealth: pd.Series, base_rate: float = 0.0) -> dict[str, float]:
    """Growth and risk of a wealth path indexed by date; ratios on returns in excess of ``base_rate``."""
    w = wealth.astype(float)
    years = (w.index[-1] - w.index[0]).days / DAYS_PER_YEAR if len(w) > 1 else 0.0
    r = np.diff(np.log(w.to_numpy()))
    dt = np.diff(pd.DatetimeIndex(w.index).as_unit("ns").asi8) / (86_400e9 * DAYS_PER_YEAR)
    growth = float(np.log(w.iloc[-1] / w.iloc[0]) / years) if years > 0 else float("nan")
    per_year = 1.0 / float(np.mean(dt)) if len(dt) else float("nan")
    vol = float(np.std(r, ddof=1) * np.sqrt(per_year)) if len(r) > 1 else float("nan")
    excess = r - base_rate * dt
    downside = np.minimum(excess, 0.0)
    down = float(np.sqrt(np.mean(downside**2) * per_year)) if len(r) else float("nan")
    mdd = max_drawdown(w)
    ann_excess = growth - base_rate
    return {
        "log_growth": growth,
        "base_rate": float(base_rate),
        "excess_log_growth": ann_excess,
        "volatility": vol,
        "excess_sharpe": ann_excess / vol if vol > 0 else float("nan"),
        "excess_sortino": ann_excess / down if down > 0 else float("nan"),
        "max_drawdown": mdd,
        "excess_calmar": ann_excess / mdd if mdd > 0 else float("nan"),
        "final_wealth": float(w.iloc[-1]),
        "years": years,
    }


def _per_year(usd: pd.Series, mean_wealth: float, years: float) -> float:
    return float(usd.sum()) / mean_wealth / years if years > 0 else float("nan")


def backtest_metrics(result: BacktestResult, base_rate: float = 0.0) -> dict[str, float]:
    """Every metric of the contract for one backtest (strategy or benchmark).

    ``il_drag`` and ``price_pnl`` are the IL paid and the legs' price P&L per year (fractions of mean
    wealth); ``il_data_missing_share`` the share of held pool-days of multi-token pools without
    DefiLlama il7d (estimated or flagged); ``gap_pool_days`` held pool-days kept through a data gap;
    ``empty_universe_days`` decision days with no pool in the universe (cash held);
    ``invested_share`` the mean over the days of the share of wealth invested after each decision."""
    s = result.steps
    if s.empty:
        return {k: float("nan") for k in METRIC_COLUMNS} | {"base_rate": float(base_rate), "years": 0.0}
    out = wealth_metrics(result.wealth, base_rate)
    years = out["years"]
    mean_w = float(s["wealth_start"].mean())
    out["invested_share"] = float(s["invested"].mean()) if "invested" in s else float("nan")
    out["turnover"] = float(s["turnover"].sum() / years) if years > 0 else float("nan")  # per year
    out["cost_drag"] = _per_year(s["cost_usd"] + s["gas_usd"], mean_w, years)
    out["gas_usd"] = float(s["gas_usd"].sum())
    out["il_drag"] = _per_year(s["il_usd"], mean_w, years)
    out["price_pnl"] = _per_year(s["price_pnl_usd"], mean_w, years)
    held = float(s["n_held"].sum())
    out["il_data_missing_share"] = float(s["n_held_il_missing"].sum()) / held if held else float("nan")
    out["gap_pool_days"] = float(s["n_held_in_gap"].sum())
    out["empty_universe_days"] = float((s["n_eligible"] == 0).sum())
    out["entropy"] = float(s["entropy"].mean())
    te = s["tracking_error"].dropna()
    out["tracking_error"] = float(np.sqrt(np.mean(te**2))) if len(te) else float("nan")
    out["solver_failures"] = int((s["status"] == "kept_holdings").sum())
    return {k: out[k] for k in METRIC_COLUMNS}


def metrics_table(results: dict[str, BacktestResult], base_rate: float = 0.0) -> pd.DataFrame:
    """One row per named result."""
    rows = [{"name": name, **backtest_metrics(r, base_rate)} for name, r in results.items()]
    return pd.DataFrame(rows, columns=["name", *METRIC_COLUMNS])
