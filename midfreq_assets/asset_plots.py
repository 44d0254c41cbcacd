"""The inline plot of each asset a person looks at first (:mod:`~midfreq_assets.inline_plots`):
universe APY and TVL (``pool_history``), stacked weights and the day's trades
(``rebalance_weights``), feature distributions (``features``), the traded model's CV folds against
the naive baseline and its importance (``fitted_models``), wealth against the benchmarks
(``backtest_report``). Each returns metadata entries for one run (its last partition), computed
from frames already in memory."""

from __future__ import annotations

import numpy as np
import pandas as pd

from midfreq_assets import inline_plots
from midfreq_assets.domain.research.models import NAIVE
from midfreq_assets.domain.schemas import APY, USD
from midfreq_assets.previews import POOL_NAMES, fmt_number


def _span(dates) -> tuple[str, str]:
    d = pd.DatetimeIndex(dates)
    return (f"{d.min():%Y-%m-%d}", f"{d.max():%Y-%m-%d}") if len(d) else ("", "")


def _name(pool: str, short: bool = False) -> str:
    """A pool's "SYMBOL project chain" (short: "SYMBOL project"), its uuid's first 8 characters when unknown."""
    name = POOL_NAMES.get(str(pool), str(pool)[:8])
    return " ".join(name.split(" ")[:2])[:16] if short else name


def _entries(**plots) -> dict[str, object]:
    return {k: v for k, v in plots.items() if v is not None}


def universe_plots(history: pd.DataFrame) -> dict[str, object]:
    """TVL-weighted and median APY of the pools each day, and their total TVL."""
    if history.empty:
        return {}
    h = history[np.isfinite(history["apy"]) & (history["tvl_usd"] > 0)]
    g = h.assign(w=h["apy"] * h["tvl_usd"]).groupby("date")
    days = g.size().index
    apy = {
        "TVL-weighted APY": (g["w"].sum() / g["tvl_usd"].sum()).to_numpy(),
        "median APY": g["apy"].median().to_numpy(),
    }
    return _entries(
        universe_apy_plot=inline_plots.lines(
            apy,
            f"Universe APY (%/yr), {g['pool'].nunique().iloc[-1]} pools last day",
            lambda v: fmt_number(v, APY),
            _span(days),
        ),
        universe_tvl_plot=inline_plots.lines(
            {"total TVL": g["tvl_usd"].sum().to_numpy() / 1e6},
            "Universe TVL (USD million)",
            lambda v: f"{v:,.0f}M",
            _span(days),
        ),
    )


def weight_plots(out: pd.DataFrame, top: int = 5) -> dict[str, object]:
    """Stacked target weights per day (the ``top`` pools most held, the others, idle) and the last
    day's trades by pool (USD, buys right, sells left)."""
    pools = out[out["pool"].notna()]
    if pools.empty:
        return {}
    learn = pools.drop_duplicates("pool", keep="last")
    if "symbol" in learn:
        from midfreq_assets.previews import learn_pool_names

        learn_pool_names(learn)
    weights = pools.groupby(["date", "pool"])["target_weight"].sum().unstack(fill_value=0.0)
    days = pd.DatetimeIndex(sorted(out["date"].unique()))
    weights = weights.reindex(days, fill_value=0.0)
    order = weights.mean().sort_values(ascending=False).index
    idle = np.clip(1.0 - weights.sum(axis=1).to_numpy(), 0.0, 1.0)
    plot = None
    for k in range(min(top, len(order)), 0, -1):  # fewer named pools until the plot fits inline
        shares = {f"{i + 1} {_name(p, short=True)}": weights[p].to_numpy() for i, p in enumerate(order[:k])}
        shares["other"] = weights[order[k:]].sum(axis=1).to_numpy()
        shares["idle"] = idle
        plot = inline_plots.stacked(shares, "Target weights (share of wealth)", _span(days))
        if plot is not None:
            break
    last = pools[pools["date"] == days[-1]]
    trades = last[last["trade_usd"].fillna(0.0) != 0]
    return _entries(
        weights_plot=plot,
        trades_plot=inline_plots.bars(
            {
                _name(p, short=True): float(v)
                for p, v in zip(trades["pool"], trades["trade_usd"], strict=True)
            },
            f"Trades {days[-1]:%Y-%m-%d} (USD)",
            lambda v: fmt_number(v, USD),
        )
        if len(trades)
        else None,
    )


def feature_plot(frame: pd.DataFrame, columns: list[str], limit: int = 12) -> dict[str, object]:
    """5th/25th/50th/75th/95th percentile of each feature over the frame's rows."""
    cols = [
        c
        for c in columns
        if c in frame and pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
    ][:limit]  # categories have no quantiles
    if not cols or frame.empty:
        return {}
    values = frame[cols].to_numpy(dtype=float)
    with np.errstate(all="ignore"):
        q = np.nanpercentile(values, [5, 25, 50, 75, 95], axis=0) if np.isfinite(values).any() else None
    if q is None:
        return {}
    return _entries(
        feature_distributions_plot=inline_plots.ranges(
            {c: q[:, i] for i, c in enumerate(cols)},
            f"Feature distributions, {len(frame):,} rows (5-25-50-75-95%)",
            lambda v: fmt_number(v),
        )
    )


def model_plots(bundle, label: str) -> dict[str, object]:
    """The traded model of ``label`` (its selection): its CV score per fold beside the naive
    baseline's, and its feature importance (or why it has none)."""
    sel = bundle.selection.get(label)
    if sel is None or bundle.folds.empty:
        return {}
    f = bundle.folds
    f = f[(f["label"] == label) & (f["metric"] == (sel.metric or "mae")) & (f["fold"] != "all")]
    rival = (
        sel.chosen
        if sel.chosen != NAIVE
        else max((e for e in sel.scores if e != NAIVE), key=lambda e: -sel.scores[e], default=NAIVE)
    )
    series = {}
    for est in dict.fromkeys([sel.chosen, NAIVE, rival]):
        s = f[f["estimator"] == est].set_index("fold")["score"]
        if s.notna().any():
            series[f"{est}{' (traded)' if est == sel.chosen else ''}"] = s.to_numpy(dtype=float)
    metric = sel.metric or "mae"
    unit = APY if metric == "mae" else ""
    plots = {"traded_model": f"{label}/{sel.chosen}: {sel.note}"}
    if series:
        plots["traded_model_cv_plot"] = inline_plots.lines(
            series,
            f"{label} CV {metric} per fold (lower is better)"
            if metric in ("mae", "log_loss")
            else f"{label} CV {metric} per fold",
            lambda v: fmt_number(v, unit),
            (f"fold {f['fold'].min()}", f"fold {f['fold'].max()}"),
        )
    imp = bundle.importances
    own = (
        imp[(imp["label"] == label) & (imp["estimator"] == sel.chosen)]
        if len(imp) and "estimator" in imp
        else imp.iloc[0:0]
    )
    if len(own):
        mean = own.assign(value=own["value"].abs()).groupby("feature")["value"].mean()
        plots["traded_model_importance_plot"] = inline_plots.bars(
            mean.to_dict(), f"{sel.chosen}: mean |coefficient| per feature", lambda v: f"{v:.2g}"
        )
    else:
        plots["traded_model_importance"] = (
            f"{sel.chosen} has no feature importance (it reads "
            f"{'the latest value' if sel.chosen == NAIVE else 'the APY history'} "
            "only)"
        )
    return _entries(**plots)


def wealth_plot(wealth: dict[str, pd.Series], names: list[str]) -> dict[str, object]:
    """Wealth (W/W0) of ``names`` (the walk-forward, the bar and its benchmarks) over the report's days."""
    shown = {n: wealth[n] for n in names if n in wealth and len(wealth[n])}
    if not shown:
        return {}
    days = next(iter(shown.values())).index
    return _entries(
        wealth_plot=inline_plots.lines(
            {n: (w / w.iloc[0]).reindex(days).to_numpy() for n, w in shown.items()},
            "Wealth W/W0",
            lambda v: f"{v:.3f}",
            _span(days),
        )
    )
