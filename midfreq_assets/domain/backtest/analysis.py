"""What the original research notebook looked at after a backtest, as tables (plots: ``report.py``).

- per pool: the APY of the pools the strategy held most, over time, and its tracking error
  (predicted APY at the decision minus the APY the pool then paid) per pool and day held;
- cumulative transaction cost (proportional cost + gas, USD) of every run;
- the portfolio's APY against the best APY available each day: the highest APY any eligible pool
  paid over the same step (a hindsight upper bound no policy can reach, shown as such).

Rates are fractions per year. A step t -> t+1 is credited to its decision day t, as in ``steps``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from midfreq_assets.domain.backtest.engine import BacktestResult


def most_held(result: BacktestResult, top: int) -> list[str]:
    """The ``top`` pools with the largest mean weight over the run."""
    if result.weights.empty:
        return []
    mean = result.weight_panel().reindex(pd.DatetimeIndex(result.steps["date"])).fillna(0.0).mean()
    return list(mean.sort_values(ascending=False).index[:top])


def pool_apy_over_time(panel: pd.DataFrame, pools: list[str], column: str = "apy") -> pd.DataFrame:
    """APY (``column`` of the backtest panel) of ``pools`` per day (dates x pools)."""
    rows = panel[panel["pool"].isin(pools)].assign(date=lambda d: pd.to_datetime(d["date"]).dt.normalize())
    wide = rows.pivot_table(index="date", columns="pool", values=column, aggfunc="last")
    return wide.reindex(columns=[p for p in pools if p in wide.columns])


def pool_tracking_error(result: BacktestResult, pools: list[str] | None = None) -> pd.DataFrame:
    """Predicted minus realized APY per pool and day it was held (dates x pools; NaN when not held).

    Needs a result with per-pool ``predicted_apy`` and ``realized_apy`` (a run, not a stored frame)."""
    w = result.weights
    if w.empty or "predicted_apy" not in w:
        return pd.DataFrame()
    te = w.assign(tracking_error=w["predicted_apy"] - w["realized_apy"])
    wide = te.pivot_table(index="date", columns="pool", values="tracking_error", aggfunc="last")
    return wide if pools is None else wide.reindex(columns=[p for p in pools if p in wide.columns])


def pool_tracking_table(result: BacktestResult, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per pool held: days held, mean weight, mean predicted and realized APY, bias and RMS
    of the tracking error, most held first."""
    w = result.weights
    if w.empty or "predicted_apy" not in w:
        return pd.DataFrame(
            columns=[
                "pool",
                "name",
                "days_held",
                "mean_weight",
                "mean_predicted_apy",
                "mean_realized_apy",
                "tracking_bias",
                "tracking_rmse",
            ]
        )
    te = w["predicted_apy"] - w["realized_apy"]
    g = w.assign(te=te, te2=te * te).groupby("pool")
    table = pd.DataFrame(
        {
            "days_held": g.size(),
            "mean_weight": g["weight"].mean(),
            "mean_predicted_apy": g["predicted_apy"].mean(),
            "mean_realized_apy": g["realized_apy"].mean(),
            "tracking_bias": g["te"].mean(),
            "tracking_rmse": np.sqrt(g["te2"].mean()),
        }
    ).reset_index()
    table.insert(1, "name", table["pool"].map(labels or {}).fillna(table["pool"].str[:8]))
    weight_days = table["mean_weight"] * table["days_held"]
    return table.iloc[np.argsort(-weight_days.to_numpy(), kind="stable")].reset_index(drop=True)


def cumulative_costs(steps: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Cumulative proportional cost + gas (USD) of each run, by decision day (dates x runs)."""
    series = {
        name: s.set_index(pd.DatetimeIndex(s["date"]))[["cost_usd", "gas_usd"]].sum(axis=1).cumsum()
        for name, s in steps.items()
    }
    return pd.DataFrame(series).ffill()


def apy_vs_best(steps: pd.DataFrame, panel: pd.DataFrame, column: str = "apy") -> pd.DataFrame:
    """Per step: the portfolio's realized APY over t -> t+1 and the best APY an eligible pool (at
    t) paid at t+1, their gap, and the share of the best captured (hindsight: not a benchmark)."""
    rows = panel.assign(date=pd.to_datetime(panel["date"]).dt.normalize())
    elig = rows[rows["eligible"].astype(bool)] if "eligible" in rows else rows
    eligible_at = elig.pivot_table(index="date", columns="pool", values=column, aggfunc="last").notna()
    paid = rows.pivot_table(index="date", columns="pool", values=column, aggfunc="last")
    start, end = pd.DatetimeIndex(steps["date"]), pd.DatetimeIndex(steps["date_end"])
    mask = eligible_at.reindex(index=start, columns=paid.columns).fillna(False).to_numpy(dtype=bool)
    nxt = paid.reindex(index=end).to_numpy(dtype=float)
    best = np.where(mask & np.isfinite(nxt), nxt, -np.inf).max(axis=1, initial=-np.inf)
    best = np.where(np.isfinite(best), best, np.nan)
    realized = steps["realized_apy"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        captured = np.where(best > 0, realized / best, np.nan)
    return pd.DataFrame(
        {
            "date": start,
            "portfolio_apy": realized,
            "best_available_apy": best,
            "gap": best - realized,
            "captured": captured,
        }
    )


def apy_vs_best_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Means over the steps where both are known: portfolio APY, best available APY, gap, share captured."""
    ok = frame.dropna(subset=["portfolio_apy", "best_available_apy"])
    return pd.DataFrame(
        [
            {
                "steps": len(ok),
                "mean_portfolio_apy": ok["portfolio_apy"].mean(),
                "mean_best_available_apy": ok["best_available_apy"].mean(),
                "mean_gap": ok["gap"].mean(),
                "captured": ok["portfolio_apy"].mean() / ok["best_available_apy"].mean()
                if len(ok) and ok["best_available_apy"].mean() > 0
                else np.nan,
            }
        ]
    )
