"""Backtest report: plots (matplotlib Agg, base64 PNG) and one self-contained HTML page.

A grid report leads with the walk-forward row (the policy chosen window by window on past data
only, traded out of sample) beside the bar, the strongest constrained benchmark on the same days,
with the invested share of every row, the excess over the bar and its bootstrap interval, the
grid's probability of backtest overfitting (and how many points and splits it rests on), and the
deflated Sharpe ratio on the daily excess over the bar beside the plain one; then every point's
metrics on those days (the best of them is chosen with hindsight: an upper bound), the wealth and
drawdown paths, the chosen points per window, the walk-forward's weights, each metric's
sensitivity to each hyperparameter, and predicted vs realized APY (is the predictor any good, and
is it biased?); then the analysis of the original research notebook (``analysis.py``): per-pool APY
and tracking error over time, cumulative transaction costs, and the portfolio's APY against the
best APY available each day.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Mapping

import matplotlib

from midfreq_assets.domain.backtest import analysis
from midfreq_assets.domain.backtest.benchmarks import benchmark_set_of, is_constrained
from midfreq_assets.domain.backtest.engine import BacktestResult
from midfreq_assets.domain.backtest.evaluation import GridEvaluation
from midfreq_assets.domain.backtest.metrics import METRIC_COLUMNS, backtest_metrics, metrics_table
from midfreq_assets.domain.backtest.report_style import (
    BACKGROUND,
    STYLE,
    Palette,
    date_axis,
    dedupe_benchmarks,
    format_table,
    legend_outside,
    percent_axis,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

HEADLINE_COLUMNS = [
    "name",
    "role",
    "log_growth",
    "invested_share",
    "excess_over_bar",
    "excess_log_growth",
    "volatility",
    "excess_sharpe",
    "max_drawdown",
    "turnover",
    "cost_drag",
    "il_drag",
    "price_pnl",
    "entropy",
    "tracking_error",
]
#: Columns of the walk-forward row (``pbo`` also on every grid point row: one value per grid).
EVALUATION_COLUMNS = [
    "pbo",
    "deflated_sharpe",
    "deflated_sharpe_excess",
    "excess_vs_benchmark",
    "excess_ci_low",
    "excess_ci_high",
]
WALK_FORWARD_KIND = "walk_forward"
#: What each row of a grid report is (column ``role``).
ROLE_WALK_FORWARD = "walk-forward (out of sample)"
ROLE_BAR = "bar: strongest constrained benchmark"
ROLE_HINDSIGHT = "hindsight best point (upper bound)"
ROLE_POINT = "grid point (fixed over the history)"
ROLE_BENCHMARK = "constrained benchmark"
ROLE_UNCONSTRAINED = "unconstrained (never the bar)"


def fig_to_base64(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def img_tag(b64: str, alt: str = "") -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}"/>'


def plot_wealth(
    wealth: dict[str, pd.Series], highlight: list[str] | None = None, palette: Palette | None = None
) -> str:
    """Every path thin and grey behind, the ``highlight`` ones drawn in their own colours and named."""
    fig, ax = plt.subplots(figsize=(10, 4))
    highlight = highlight or []
    palette = palette or Palette()
    for name, w in wealth.items():
        if name not in highlight:
            ax.plot(w.index, w / w.iloc[0], lw=0.6, alpha=0.5, color=BACKGROUND)
    for name in highlight:
        if name in wealth:
            w = wealth[name]
            ax.plot(w.index, w / w.iloc[0], lw=1.8, color=palette(name), label=name)
    ax.set_title("Wealth relative to the start (grey: every grid point)", fontsize=10)
    ax.set_ylabel("wealth / initial wealth (x)")
    date_axis(ax)
    legend_outside(ax)
    return fig_to_base64(fig)


def plot_drawdowns(wealth: dict[str, pd.Series], highlight: list[str], palette: Palette | None = None) -> str:
    fig, ax = plt.subplots(figsize=(10, 3))
    palette = palette or Palette()
    for name in highlight:
        if name in wealth:
            w = wealth[name]
            ax.plot(w.index, w / w.cummax() - 1.0, lw=1, label=name, color=palette(name))
    ax.set_title("Drawdown from the running peak", fontsize=10)
    ax.set_ylabel("drawdown (% of peak wealth)")
    percent_axis(ax)
    date_axis(ax)
    legend_outside(ax)
    return fig_to_base64(fig)


def plot_weights(
    weights: pd.DataFrame,
    top: int = 10,
    title: str = "Weights",
    labels: dict[str, str] | None = None,
    palette: Palette | None = None,
) -> str:
    """Stacked weights (dates x pools), the ``top`` largest on average each in its own colour, the
    rest as 'other' (grey); the white space above is idle cash."""
    fig, ax = plt.subplots(figsize=(10, 4))
    if weights.empty:
        ax.set_title(f"{title}: nothing held")
        return fig_to_base64(fig)
    palette = palette or Palette()
    order = weights.mean().sort_values(ascending=False).index
    shown = weights[order[:top]]
    other = weights[order[top:]].sum(axis=1)
    names = [(labels or {}).get(c, str(c)[:8]) for c in shown.columns]
    ax.stackplot(
        weights.index,
        *[shown[c] for c in shown.columns],
        other,
        labels=[*names, "other"],
        colors=[*[palette(f"pool {c}") for c in shown.columns], BACKGROUND],
    )
    ax.set_title(f"{title} (white: idle cash)", fontsize=10)
    ax.set_ylabel("share of wealth")
    percent_axis(ax)
    date_axis(ax)
    legend_outside(ax)
    return fig_to_base64(fig)


def plot_sensitivity(table: pd.DataFrame, params: list[str], metrics: list[str]) -> str:
    """Mean of each metric per value of each parameter (other parameters averaged out)."""
    params = [p for p in params if table[p].nunique() > 1] or params[:1]
    fig, axes = plt.subplots(
        len(metrics),
        max(len(params), 1),
        figsize=(3 * max(len(params), 1), 2.4 * len(metrics)),
        squeeze=False,
    )
    for i, m in enumerate(metrics):
        for j, p in enumerate(params):
            g = table.groupby(table[p].astype(str), sort=False)[m].agg(["mean", "min", "max"])
            ax = axes[i][j]
            x = np.arange(len(g))
            ax.plot(x, g["mean"], marker="o")
            ax.fill_between(x, g["min"], g["max"], alpha=0.2)
            ax.set_xticks(x, g.index, fontsize=7)
            ax.set_title(f"{m} vs {p.split('.')[-1]}", fontsize=8)
            ax.set_xlabel(p.split(".")[-1], fontsize=7)
            if m in ("log_growth", "cost_drag"):
                percent_axis(ax)
            unit = {"log_growth": "%/yr", "cost_drag": "%/yr", "turnover": "x wealth/yr"}.get(m, "ratio")
            ax.set_ylabel(f"{m} ({unit})", fontsize=7)
    fig.tight_layout()
    return fig_to_base64(fig)


def plot_heatmaps(
    table: pd.DataFrame, params: list[str], metric: str = "log_growth", limit: int = 3
) -> str | None:
    """Mean ``metric`` of the grid points over each pair of parameters with several values (the
    other parameters averaged out), one heatmap per pair (green: higher), values written in the
    cells of a small grid."""
    varied = [p for p in params if p in table and table[p].nunique() > 1]
    pairs = [(a, b) for i, a in enumerate(varied) for b in varied[i + 1 :]][:limit]
    if not pairs:
        return None
    cols = min(len(pairs), 3)
    rows = (len(pairs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(pairs) :]:
        ax.set_visible(False)
    for ax, (a, b) in zip(axes.flat, pairs, strict=False):
        grid = table.pivot_table(
            index=table[a].map(_label),
            columns=table[b].map(_label),
            values=metric,
            aggfunc="mean",
            sort=False,
        )
        ax.imshow(grid.to_numpy(dtype=float) * 100, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(grid.shape[1]), grid.columns, fontsize=7, rotation=30)
        ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=7)
        ax.set_xlabel(b.split(".")[-1], fontsize=8)
        ax.set_ylabel(a.split(".")[-1], fontsize=8)
        if grid.size <= 64:
            for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
                if np.isfinite(v):
                    ax.text(j, i, f"{v * 100:.2f}", ha="center", va="center", fontsize=7)
        ax.set_title(f"mean {metric} (%/yr)", fontsize=8)
    fig.subplots_adjust(wspace=0.45, hspace=0.6, bottom=0.2)
    return fig_to_base64(fig)


def _label(value: object) -> str:
    """A grid value as a tick label (``0.0004``, not ``0.00039999999999999996``)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def plot_predicted_vs_realized(steps: pd.DataFrame, title: str = "Predicted vs realized APY") -> str:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [2, 1]})
    s = steps.dropna(subset=["predicted_apy", "realized_apy"])
    a1.plot(pd.to_datetime(s["date"]), s["predicted_apy"], lw=1, label="predicted", color="#1f3b73")
    a1.plot(pd.to_datetime(s["date"]), s["realized_apy"], lw=0.7, label="realized", color="#e69f00")
    a1.set_title(title, fontsize=9)
    a1.set_ylabel("portfolio APY (%/yr)")
    percent_axis(a1)
    date_axis(a1)
    a1.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.12), ncol=2, frameon=False)
    a2.scatter(s["predicted_apy"], s["realized_apy"], s=4, alpha=0.5, color="#1f3b73")
    if len(s):
        lo, hi = (
            float(s[["predicted_apy", "realized_apy"]].min().min()),
            float(s[["predicted_apy", "realized_apy"]].max().max()),
        )
        a2.plot([lo, hi], [lo, hi], "k--", lw=0.7)
    a2.set_xlabel("predicted APY (%/yr)")
    a2.set_ylabel("realized APY (%/yr)")
    percent_axis(a2, "x")
    percent_axis(a2)
    fig.tight_layout()
    return fig_to_base64(fig)


def plot_lines(
    frame: pd.DataFrame,
    title: str,
    ylabel: str,
    labels: dict[str, str] | None = None,
    highlight: list[str] | None = None,
    palette: Palette | None = None,
    key: str = "",
) -> str:
    """One line per column of ``frame`` (index = dates); ``highlight`` columns drawn in their own
    colours (``palette(key + column)``) and named, the others thin and grey; an APY or share
    ``ylabel`` gets a % axis."""
    fig, ax = plt.subplots(figsize=(10, 3.5))
    if frame.empty:
        ax.set_title(f"{title}: no data")
        return fig_to_base64(fig)
    palette = palette or Palette()
    for col in frame.columns:
        strong = highlight is None or col in highlight
        ax.plot(
            frame.index,
            frame[col],
            lw=1.2 if strong else 0.6,
            alpha=1 if strong else 0.5,
            color=palette(f"{key}{col}") if strong else BACKGROUND,
            label=(labels or {}).get(col, str(col)[:48]) if strong else None,
        )
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)
    if "fraction" in ylabel or "APY" in ylabel:
        percent_axis(ax)
        ax.set_ylabel(ylabel.replace("fraction/yr", "%/yr"), fontsize=8)
    date_axis(ax)
    legend_outside(ax)
    return fig_to_base64(fig)


def analysis_sections(
    best: BacktestResult,
    steps: dict[str, pd.DataFrame],
    panel: pd.DataFrame,
    apy_column: str,
    pool_labels: dict[str, str],
    benchmarks: list[str],
    top: int = 8,
    palette: Palette | None = None,
) -> list[tuple[str, str, pd.DataFrame | None]]:
    """The notebook's sections: ``best`` is a run of the best point (per-pool predictions kept),
    ``steps`` the per-step records of every run (grid points and benchmarks) by name."""
    palette = palette or Palette()
    held = analysis.most_held(best, top)
    tracking = analysis.pool_tracking_table(best, pool_labels)
    vs_best = analysis.apy_vs_best(best.steps, panel, apy_column)
    costs = analysis.cumulative_costs(steps)
    both = vs_best.set_index("date")[["portfolio_apy", "best_available_apy"]].rename(
        columns={
            "portfolio_apy": f"portfolio ({best.name})",
            "best_available_apy": "best eligible pool (hindsight)",
        }
    )
    return [
        (
            f"APY of the {len(held)} most held pools ({apy_column}, per day)",
            plot_lines(
                analysis.pool_apy_over_time(panel, held, apy_column),
                "Pool APY",
                "APY (fraction/yr)",
                pool_labels,
                palette=palette,
                key="pool ",
            ),
            None,
        ),
        (
            "Tracking error per pool over the days held (predicted - realized APY)",
            plot_lines(
                analysis.pool_tracking_error(best, held),
                "Tracking error per pool",
                "APY (fraction/yr)",
                pool_labels,
                palette=palette,
                key="pool ",
            ),
            tracking.head(20),
        ),
        (
            "Cumulative transaction costs (proportional cost + gas, USD)",
            plot_lines(
                costs,
                "Cumulative cost (grey: other runs)",
                "cumulative cost (reference asset)",
                highlight=[best.name, *benchmarks],
                palette=palette,
            ),
            None,
        ),
        (
            "Portfolio APY vs the best APY available each day (an eligible pool's, in hindsight)",
            plot_lines(both, "Realized APY per step", "APY (fraction/yr)", palette=palette),
            analysis.apy_vs_best_summary(vs_best),
        ),
    ]


def lending_sections(
    panel: pd.DataFrame, lead: BacktestResult, apy_column: str, pool_labels: dict[str, str], cost: float = 0.1
) -> list[tuple[str, str, pd.DataFrame | None]]:
    """Each lending market's rate curve as the vault last saw it (its supply APY after a deposit x, against
    the TVL-share rule), its capacity (the deposit costing ``cost`` of its APY) and the dilution the
    ``lead`` run paid there (APY lost to its own holdings). Nothing when the panel has no curve rows."""
    from midfreq_assets.domain.yields.response import responses_of_rows

    if "response_method" not in panel or "curve_base" not in panel:
        return []
    curved = panel[panel["response_method"] == "curve"]
    if curved.empty:
        return []
    last = curved.sort_values("date").drop_duplicates("pool", keep="last").reset_index(drop=True)
    resp = responses_of_rows(last)
    capacity = resp.capacity(cost)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    top = float(np.nanmax(capacity)) * 3
    grid = np.linspace(0.0, top, 200)
    now = resp.curve_supply_apy(0.0)
    for i, pool in enumerate(resp.pools):
        curve = np.array([resp.curve_supply_apy(np.full(len(resp.pools), x))[i] for x in grid])
        (line,) = ax.plot(grid / 1e6, curve, lw=1.2, label=f"{pool_labels.get(pool, str(pool)[:8])} (curve)")
        ax.plot(
            grid / 1e6,
            now[i] * resp.tvl[i] / (resp.tvl[i] + grid),
            lw=0.8,
            ls="--",
            color=line.get_color(),
            label="TVL-share rule",
        )
        ax.axvline(capacity[i] / 1e6, lw=0.6, ls=":", color=line.get_color())
    ax.set_xlabel("deposit (M)", fontsize=8)
    ax.set_ylabel("supply APY (fraction/yr)", fontsize=8)
    ax.set_title(
        f"Lending markets: supply APY after a deposit (dotted: capacity, {cost:.0%} of the APY)", fontsize=9
    )
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1, 1))
    weights = lead.weight_panel()
    held = weights.mul(lead.wealth.reindex(weights.index), axis=0)
    rows = []
    for i, pool in enumerate(resp.pools):
        mine = panel[panel["pool"] == pool].set_index("date")
        h = held[pool].reindex(mine.index).fillna(0.0) if pool in held else pd.Series(0.0, index=mine.index)
        depth = mine["dilution_depth_usd"].where(mine["dilution_depth_usd"] > 0, mine["tvl_usd"])
        lost = (mine[apy_column] * (1.0 - 1.0 / (1.0 + h / depth))).where(h > 0)
        days_held = int((h > 0).sum())
        rows.append(
            {
                "pool": pool_labels.get(pool, str(pool)[:8]),
                "as_of": str(pd.Timestamp(last.loc[i, "date"]).date()),
                "U*": round(float(resp.curve.optimal[i]), 2),
                "base": resp.curve.base[i],
                "slope1": resp.curve.slope1[i],
                "slope2": resp.curve.slope2[i],
                "reserve_factor": round(float(resp.curve.reserve_factor[i]), 3),
                "supply_usd": resp.supply[i],
                "utilization": resp.borrow[i] / resp.supply[i],
                "capacity_usd": capacity[i],
                "capacity_tvl_share_usd": resp.tvl[i] * cost / (1 - cost),
                "days_held": days_held,
                "mean_holding": float(h[h > 0].mean()) if days_held else 0.0,
                "dilution_paid_apy": float(lost.mean()) if days_held else 0.0,
                "dilution_paid_total": float(
                    (h * mine[apy_column] * (1.0 - 1.0 / (1.0 + h / depth))).sum() / 365.0
                ),
            }
        )
    table = pd.DataFrame(rows)
    return [
        (
            f"Lending markets' rate curves: capacity and the dilution {lead.name} paid (APY lost to its own "
            "holdings, per held day, and in total in the reference asset)",
            fig_to_base64(fig),
            table,
        )
    ]


def plot_walk_forward(windows: pd.DataFrame, objective: str) -> str:
    """Which grid point traded each test window (one lane per point), its train-window objective
    and the log growth it then earned out of sample."""
    fig, (lanes, score) = plt.subplots(
        2, 1, figsize=(9, 4.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    points = list(dict.fromkeys(windows["point"]))
    lane = windows["point"].map({p: i for i, p in enumerate(points)}).to_numpy()
    start = pd.to_datetime(windows["test_start"])
    width = pd.to_datetime(windows["test_end"]) - start
    lanes.barh(lane, width, left=start, height=0.6)
    lanes.set_yticks(range(len(points)), points, fontsize=6)
    lanes.set_title("Walk-forward: the point chosen for each test window (on the days before it)", fontsize=9)
    score.step(
        start, windows[f"train_{objective}"], where="post", label=f"train {objective}", color="#7f7f7f"
    )
    score.plot(
        start + width / 2,
        windows["test_log_growth"],
        "o",
        label="test log growth (out of sample)",
        color="#1f3b73",
    )
    score.set_ylabel(f"{objective} (/yr)", fontsize=8)
    date_axis(score)
    legend_outside(score)
    fig.tight_layout()
    return fig_to_base64(fig)


def windows_table(windows: pd.DataFrame) -> pd.DataFrame:
    """The walk-forward's windows for people: days as ``YYYY-MM-DD``."""
    out = windows.copy()
    for col in ("train_start", "train_end", "test_start", "test_end"):
        out[col] = pd.to_datetime(out[col]).dt.strftime("%Y-%m-%d")
    return out


def _table_html(df: pd.DataFrame, css: str = "t") -> str:
    """A table for people: numbers formatted by unit and right-aligned, no NaN (``n/a`` or blank),
    scrollable when wide."""
    shown = format_table(df)
    numeric = [
        pd.api.types.is_numeric_dtype(df[c].dtype)
        and not pd.api.types.is_bool_dtype(df[c].dtype)
        or str(c) in NUMERIC_TEXT
        for c in df.columns
    ]
    head = "".join(f"<th>{html.escape(str(c).replace('_', ' '))}</th>" for c in shown.columns)
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=n' if num else ''}>{html.escape(v)}</td>"
            for v, num in zip(row, numeric, strict=True)
        )
        + "</tr>"
        for row in shown.itertuples(index=False)
    )
    return f'<div class="wide"><table class="{css}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


#: Headline columns that are numbers written as text (right-aligned).
NUMERIC_TEXT = {
    "log growth /yr",
    "invested",
    "excess over bar /yr",
    "excess CI",
    "PBO",
    "deflated Sharpe of excess",
    "max drawdown",
    "turnover /yr",
    "rank",
}


#: The headline table's columns (label, column): what a person decides on, first.
HEADLINE_VIEW = [
    ("row", "name"),
    ("what it is", "role"),
    ("log growth /yr", "log_growth"),
    ("invested", "invested_share"),
    ("excess over bar /yr", "excess_over_bar"),
    ("excess CI", "_ci"),
    ("PBO", "pbo"),
    ("deflated Sharpe of excess", "deflated_sharpe_excess"),
    ("max drawdown", "max_drawdown"),
    ("turnover /yr", "turnover"),
]


def headline_table(table: pd.DataFrame) -> pd.DataFrame:
    """The report's first table, narrow enough for a laptop screen: the walk-forward, the bar, the
    hindsight best point and the bar's other benchmarks (:func:`lead_table`'s rows) with growth,
    invested share, excess over the bar and its interval, PBO and the deflated Sharpe of the excess
    (the walk-forward's), drawdown and turnover; every figure as text, ``n/a`` where none applies."""
    rows = _lead_rows(table)
    if rows.empty:
        return rows
    bench = rows["kind"] == "benchmark" if "kind" in rows else pd.Series(False, index=rows.index)
    rows = rows.assign(
        name=[str(n).split("@")[0] if b else str(n) for n, b in zip(rows["name"], bench, strict=True)]
    )
    text = format_table(rows[[c for _, c in HEADLINE_VIEW if c in rows and c != "_ci"]])
    if {"excess_ci_low", "excess_ci_high"} <= set(rows):
        lo, hi = (
            format_table(rows[["excess_ci_low"]])["excess_ci_low"],
            format_table(rows[["excess_ci_high"]])["excess_ci_high"],
        )
        text["_ci"] = [f"[{a}, {b}]" if a != "n/a" else "n/a" for a, b in zip(lo, hi, strict=True)]
    return pd.DataFrame({label: text.get(c, "n/a") for label, c in HEADLINE_VIEW}).reset_index(drop=True)


def every_row_table(table: pd.DataFrame, top: int = 20, bottom: int = 5) -> tuple[pd.DataFrame, str]:
    """The whole table for the page: the walk-forward, the grid points ranked by log growth (a large
    grid: its ``top`` and ``bottom`` points, the rest counted), the benchmarks once per distinct
    configuration; without the columns empty on every row. Returns (rows, a note on what is left out)."""
    shown = dedupe_benchmarks(table, METRIC_COLUMNS)
    kind = shown["kind"] if "kind" in shown else pd.Series("", index=shown.index)
    points = (
        shown[kind == "grid_point"].sort_values("log_growth", ascending=False)
        if "log_growth" in shown
        else shown[kind == "grid_point"]
    )
    note = ""
    benchmarks = shown[kind == "benchmark"]
    if len(points) > top + bottom:
        note = (
            f"{len(points) - top - bottom:,} of {len(points):,} grid points not listed (ranked by log growth: "
            f"the best {top} and the worst {bottom} are); every row is in the asset's Parquet table."
        )
        points = pd.concat([points.head(top), points.tail(bottom)])
        bar = (
            shown.loc[shown["role"] == ROLE_BAR, "benchmark_set"]
            if "role" in shown
            else pd.Series(dtype=object)
        )
        if len(bar) and benchmarks["benchmark_set"].nunique() > 1:  # a big grid: the bar's set only
            of_bar = (
                benchmarks["benchmark_set"]
                .astype(str)
                .str.split(", ")
                .map(lambda sets: str(bar.iloc[0]) in sets)
            )
            note += (
                f" Benchmarks: the {int(of_bar.sum())} of the bar's configuration, of {len(benchmarks):,} "
                "rows in every configuration."
            )
            benchmarks = benchmarks[of_bar]
    rank = (
        pd.Series([str(r) for r in range(1, len(points) + 1)], index=points.index, dtype=object)
        if not note
        else pd.Series(
            [
                str(r)
                for r in [
                    *range(1, top + 1),
                    *range(
                        len(shown[kind == "grid_point"]) - bottom + 1, len(shown[kind == "grid_point"]) + 1
                    ),
                ]
            ],
            index=points.index,
            dtype=object,
        )
    )
    out = pd.concat([shown[kind == WALK_FORWARD_KIND], points.assign(rank=rank), benchmarks])
    out = out.loc[:, [c for c in out.columns if not out[c].isna().all() and c != "grid"]]
    if "rank" in out:
        out.insert(1, "rank", out.pop("rank"))
    return out, note


def html_report(
    title: str,
    table: pd.DataFrame,
    sections: list[tuple],
    notes: list[str] | None = None,
    lead: pd.DataFrame | None = None,
    summary: str = "",
) -> str:
    """A self-contained, printable page: the headline table (:func:`headline_table`; ``lead``, when
    given without the ``role`` column, as it is) with ``summary`` under it, the notes, the whole table
    (:func:`every_row_table`), then (heading, base64 PNG[, table]) sections."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    head = headline_table(table) if "role" in table else (lead if lead is not None else pd.DataFrame())
    if len(head):
        body.append(_table_html(head, "t headline"))
        bar = (
            table.loc[table["role"] == ROLE_BAR, "benchmark_set"]
            if "role" in table
            else pd.Series(dtype=object)
        )
        if len(bar) and str(bar.iloc[0]):
            body.append(
                f"<p class=caption>Benchmarks under the configuration {html.escape(str(bar.iloc[0]))} "
                "(the bar's); the others are in Every row.</p>"
            )
    if summary:
        body.append(f'<p class="summary">{html.escape(summary)}</p>')
    body += [f"<p>{html.escape(n)}</p>" for n in notes or []]
    rows, left_out = every_row_table(table) if "kind" in table else (table, "")
    body.append("<h2>Every row</h2>" if len(head) else "")
    if left_out:
        body.append(f"<p>{html.escape(left_out)}</p>")
    body.append(_table_html(rows))
    for heading, b64, *extra in sections:
        if not b64:
            continue
        body.append(f"<h2>{html.escape(heading)}</h2>{img_tag(b64, heading)}")
        if extra and extra[0] is not None:
            body.append(_table_html(extra[0]))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )


# --------------------------------------------------------------------------------------------
# One grid file's report: the table and the page
# --------------------------------------------------------------------------------------------


def report_table(
    grid_name: str,
    parameters: list[str],
    points: list[tuple[str, dict[str, object], dict[str, float]]],
    benchmarks: pd.DataFrame,
    metric_columns: list[str],
    *,
    walk_forward: dict[str, float] | None = None,
    stats: dict[str, object] | None = None,
    period: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> pd.DataFrame:
    """The walk-forward row (``kind: walk_forward``, when given) first, then one row per grid point
    (its parameters and metrics), then the benchmarks (``benchmark_set`` names the benchmarks run under a point's own
    configuration); ``stats`` (:meth:`GridEvaluation.stats`) fill
    the evaluation columns, ``period`` the days every row covers."""
    rows = [{"name": name, "kind": "grid_point", **params, **metrics} for name, params, metrics in points]
    head = [{"name": WALK_FORWARD_KIND, "kind": WALK_FORWARD_KIND, **walk_forward}] if walk_forward else []
    table = pd.concat([pd.DataFrame(head + rows), benchmarks.assign(kind="benchmark")], ignore_index=True)
    table.insert(0, "grid", grid_name)
    extra: list[str] = []
    if period is not None:
        table["period_start"], table["period_end"] = period
        extra = ["period_start", "period_end"]
    stats = stats or {}
    wf = table["kind"] == WALK_FORWARD_KIND
    table["pbo"] = np.where(table["kind"] != "benchmark", float(stats.get("pbo", np.nan)), np.nan)  # type: ignore[arg-type]
    for col in EVALUATION_COLUMNS[1:]:
        table[col] = np.where(wf, float(stats.get(col, np.nan)), np.nan)  # type: ignore[arg-type]
    if "benchmark_set" not in table:
        table["benchmark_set"] = ""
    table["benchmark_set"] = table["benchmark_set"].fillna("")
    table["role"] = row_roles(table, str(stats.get("excess_over", "")))
    bar = table.loc[table["role"] == ROLE_BAR, "log_growth"]
    table["excess_over_bar"] = table["log_growth"] - (float(bar.iloc[0]) if len(bar) else np.nan)
    return table[
        [
            "grid",
            "name",
            "kind",
            "role",
            "benchmark_set",
            *extra,
            *parameters,
            *metric_columns,
            "excess_over_bar",
            *EVALUATION_COLUMNS,
        ]
    ]


def row_roles(table: pd.DataFrame, bar: str) -> pd.Series:
    """Each row's role: the walk-forward, the bar (``bar``: the strongest constrained benchmark), the
    grid point best in hindsight (an upper bound), the other points, constrained and unconstrained
    benchmarks."""
    role = pd.Series(ROLE_POINT, index=table.index, dtype=object)
    bench = table["kind"] == "benchmark"
    role[bench] = [
        ROLE_BENCHMARK if is_constrained(n) else ROLE_UNCONSTRAINED for n in table.loc[bench, "name"]
    ]
    role[bench & (table["name"] == bar)] = ROLE_BAR
    role[table["kind"] == WALK_FORWARD_KIND] = ROLE_WALK_FORWARD
    points = table[table["kind"] == "grid_point"]
    if len(points) and points["log_growth"].notna().any():
        role[points["log_growth"].idxmax()] = ROLE_HINDSIGHT
    return role


def lead_table(table: pd.DataFrame) -> pd.DataFrame:
    """The report's first table: the walk-forward, the bar, the hindsight best point (an upper bound),
    then the other benchmarks of the bar's set (constrained, then unconstrained, by log growth)."""
    out = _lead_rows(table)
    return out[[c for c in HEADLINE_COLUMNS if c in out]].reset_index(drop=True)


def _lead_rows(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`lead_table`'s rows with every column."""
    if "role" not in table:
        return table.iloc[0:0]
    first = [ROLE_WALK_FORWARD, ROLE_BAR, ROLE_HINDSIGHT]
    head = pd.concat([table[table["role"] == r] for r in first])
    bar = table[table["role"] == ROLE_BAR]
    rest = table[table["kind"] == "benchmark"]
    if len(bar):
        rest = rest[rest["benchmark_set"] == bar["benchmark_set"].iloc[0]]
    rest = rest[~rest.index.isin(head.index)]
    rest = rest.assign(_u=rest["role"] == ROLE_UNCONSTRAINED).sort_values(
        ["_u", "log_growth"], ascending=[True, False]
    )
    return pd.concat([head, rest.drop(columns="_u")]).reset_index(drop=True)


def best_point(table: pd.DataFrame, metric: str = "log_growth") -> pd.Series:
    """The grid point with the highest ``metric``, chosen with hindsight on the days it is scored on."""
    pts = table[table["kind"] == "grid_point"]
    return pts.sort_values(metric, ascending=False).iloc[0]


def headline_markdown(table: pd.DataFrame) -> str:
    """The report's first table (:func:`lead_table`) as markdown."""
    return lead_table(table).to_markdown(index=False, floatfmt=".4g")


def evaluation_markdown(stats: dict[str, object], notes: list[str]) -> str:
    """How sure we are: the excess over the bar and its interval, PBO (on how many points and
    splits), the deflated Sharpe on the excess over the bar and the plain one."""
    lines = []
    if "excess_vs_benchmark" in stats:
        lines.append(
            f"- excess log growth over {stats['excess_over']} (the strongest of {stats['bar_candidates']} "
            "constrained benchmark rows on these days): "
            f"**{stats['excess_vs_benchmark']:+.4f}/yr**, {stats['excess_confidence']:.0%} bootstrap CI "
            f"[{stats['excess_ci_low']:+.4f}, {stats['excess_ci_high']:+.4f}]"
        )
    if "pbo" in stats:
        lines.append(
            f"- probability of backtest overfitting: **{stats['pbo']:.3f}** (CSCV over {stats['pbo_points']} "
            f"grid points, {stats['pbo_splits']} splits, {stats['pbo_combinations']} combinations, "
            f"{stats['pbo_days']} days)"
        )
    if "deflated_sharpe_excess" in stats:
        lines.append(
            f"- deflated Sharpe ratio of the walk-forward's daily excess over {stats['excess_over']} "
            f"({stats['dsr_trials']} trials): **{stats['deflated_sharpe_excess']:.3f}** (daily Sharpe "
            f"{stats['daily_sharpe_excess']:.3f} vs {stats['expected_max_daily_sharpe_excess']:.3f} expected "
            "from luck)"
        )
    if "deflated_sharpe" in stats:
        lines.append(
            f"- plain deflated Sharpe ratio (returns over the base rate, {stats['dsr_trials']} trials): "
            f"{stats['deflated_sharpe']:.3f} (daily Sharpe {stats['daily_sharpe']:.3f} vs "
            f"{stats['expected_max_daily_sharpe']:.3f} expected from luck)"
        )
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines)


def render_report(
    title: str,
    table: pd.DataFrame,
    params: list[str],
    wealth: dict[str, pd.Series],
    benchmarks: list[str],
    best_weights: pd.DataFrame,
    best_steps: pd.DataFrame,
    pool_labels: dict[str, str],
    notes: list[str],
    analysis_part: list[tuple[str, str, pd.DataFrame | None]] | None = None,
    windows: pd.DataFrame | None = None,
    objective: str = "log_growth",
    summary: str = "",
    palette: Palette | None = None,
) -> tuple[str, str]:
    """The HTML page of a grid report and its wealth plot (base64 PNG, for the asset's metadata);
    ``analysis_part``: :func:`analysis_sections`, appended. With ``windows`` (the walk-forward's
    chosen points) the weights and predictions shown (``best_weights``, ``best_steps``) are the
    walk-forward's."""
    pts = table[table["kind"] == "grid_point"].sort_values("log_growth", ascending=False)
    best = str(pts["name"].iloc[0])
    lead = WALK_FORWARD_KIND if windows is not None else best
    highlight = list(dict.fromkeys([lead, best, *benchmarks]))
    palette = palette or role_palette(table, lead, best)
    wealth_png = plot_wealth(wealth, highlight, palette)
    sections: list[tuple] = [
        (
            "Wealth: all grid points (grey), walk-forward, best point in hindsight (an upper bound) and the "
            "benchmarks of the bar's set",
            wealth_png,
        ),
        ("Drawdowns", plot_drawdowns(wealth, highlight, palette)),
    ]
    if windows is not None:
        sections.append(
            (
                "Walk-forward: the point chosen for each window",
                plot_walk_forward(windows, objective),
                windows_table(windows),
            )
        )
    sections += [
        (f"Weights ({lead})", plot_weights(best_weights, labels=pool_labels, palette=palette)),
        (
            "Mean log growth over each pair of hyperparameters (%/yr, the others averaged out)",
            plot_heatmaps(pts, params) or "",
        ),
        (
            "Sensitivity of metrics to each hyperparameter",
            plot_sensitivity(pts, params, ["log_growth", "excess_sharpe", "cost_drag", "turnover"]),
        ),
        (f"Predicted vs realized portfolio APY ({lead})", plot_predicted_vs_realized(best_steps)),
        *(analysis_part or []),
    ]
    return html_report(title, table, sections, notes, lead_table(table), summary), wealth_png


def role_palette(table: pd.DataFrame, lead: str, best: str) -> Palette:
    """The report's colours: the walk-forward (or the lead point), the bar and the hindsight best
    point fixed, every other series its own."""
    bar = table.loc[table["role"] == ROLE_BAR, "name"] if "role" in table else pd.Series(dtype=object)
    roles = {lead: "walk_forward", **({str(bar.iloc[0]): "bar"} if len(bar) else {})}
    if best != lead:
        roles[best] = "hindsight"
    return Palette(roles)


def grid_report(
    title: str,
    grid_name: str,
    parameters: list[str],
    params_of: dict[str, dict[str, object]],
    evaluation: GridEvaluation,
    panel: pd.DataFrame,
    apy_column: str,
    pool_labels: dict[str, str],
    notes: list[str],
    rerun: Callable[[str], BacktestResult],
    objective: str = "log_growth",
    base_rate: float = 0.0,
    set_of: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, str, str]:
    """(table, HTML page, wealth PNG) of one grid's :class:`GridEvaluation`: every row on the
    walk-forward's out-of-sample days (the whole history when there is no walk-forward), ratios on
    returns in excess of ``base_rate``; ``set_of`` names each point's benchmark set. The analysis
    sections follow the walk-forward (its re-simulated windows keep per-pool APYs), or the best
    point re-run by ``rerun(name)`` when there is none; the plots show the benchmarks of the bar's
    set."""
    set_of = set_of or {}
    points = [
        (name, {**params_of[name], "benchmark_set": set_of.get(name, "")}, backtest_metrics(r, base_rate))
        for name, r in evaluation.points.items()
    ]
    wf = evaluation.walk_forward
    benches = metrics_table(evaluation.benchmarks, base_rate)
    benches["benchmark_set"] = benches["name"].map(benchmark_set_of)
    table = report_table(
        grid_name,
        parameters,
        points,
        benches,
        METRIC_COLUMNS,
        walk_forward=backtest_metrics(wf.result, base_rate) if wf else None,
        stats=evaluation.stats(),
        period=evaluation.period,
    )
    lead = wf.result if wf else rerun(str(best_point(table)["name"]))
    # plots: the grid points, the walk-forward and the benchmarks of the bar's set (the table has every set)
    bar_set = benchmark_set_of(evaluation.excess_over or next(iter(evaluation.benchmarks), ""))
    shown = {k: r for k, r in evaluation.benchmarks.items() if benchmark_set_of(k) == bar_set}
    runs = {**evaluation.points, **({WALK_FORWARD_KIND: wf.result} if wf else {}), **shown}
    benchmarks = [n for n in shown if is_constrained(n)]
    best = str(best_point(table)["name"])
    palette = role_palette(table, WALK_FORWARD_KIND if wf else best, best)
    analysis_part = analysis_sections(
        lead,
        {k: r.steps for k, r in runs.items()},
        panel,
        apy_column,
        pool_labels,
        benchmarks,
        palette=palette,
    ) + lending_sections(panel, lead, apy_column, pool_labels)
    page, png = render_report(
        title,
        table,
        parameters,
        {k: r.wealth for k, r in runs.items()},
        benchmarks,
        lead.weight_panel(),
        lead.steps,
        pool_labels,
        [*notes, *evaluation.notes],
        analysis_part,
        wf.windows if wf else None,
        objective,
        headline(table, evaluation.stats()),
        palette,
    )
    return table, page, png


def headline(table: pd.DataFrame, stats: dict[str, object]) -> str:
    """One line: the walk-forward out of sample against the bar (the strongest constrained benchmark)
    on the same days, invested shares, the excess and its interval, PBO on how many points and
    splits, the deflated Sharpe on the excess (and the plain one), the hindsight best point."""
    wf = table[table["kind"] == WALK_FORWARD_KIND]
    if wf.empty:
        best = best_point(table)
        return (
            f"no walk-forward (history too short); best point in hindsight {best['name']}: "
            f"log growth {best['log_growth']:.4f}/yr (an upper bound)"
        )
    line = (
        f"walk-forward {wf['log_growth'].iloc[0]:.4f}/yr (invested {_share(wf)}) out of sample "
        f"{stats['oos_start']}..{stats['oos_end']} ({stats['windows']} windows)"
    )
    if "excess_over" in stats:
        bench = table[table["name"] == stats["excess_over"]]
        line += (
            f" vs the strongest constrained benchmark {stats['excess_over']} {bench['log_growth'].iloc[0]:.4f}/yr "
            f"(invested {_share(bench)}): excess {stats['excess_vs_benchmark']:+.4f} "
            f"[{stats['excess_ci_low']:+.4f}, {stats['excess_ci_high']:+.4f}] {stats['excess_confidence']:.0%} CI"
        )
    if "pbo" in stats:
        line += f"; PBO {stats['pbo']:.3f} ({stats['pbo_points']} points, {stats['pbo_splits']} splits)"
    if "deflated_sharpe_excess" in stats:
        line += f"; deflated Sharpe of the excess {stats['deflated_sharpe_excess']:.3f}"
    if "deflated_sharpe" in stats:
        line += (
            f" (plain {stats['deflated_sharpe']:.3f})"
            if "deflated_sharpe_excess" in stats
            else f"; deflated Sharpe {stats['deflated_sharpe']:.3f}"
        )
    hindsight = table[table["kind"] == "grid_point"]
    if len(hindsight) and hindsight["log_growth"].notna().any():
        best = hindsight.loc[hindsight["log_growth"].idxmax()]
        line += f"; hindsight best point {best['name']} {best['log_growth']:.4f}/yr (an upper bound)"
    return line


def _share(rows: pd.DataFrame) -> str:
    return f"{rows['invested_share'].iloc[0]:.2f}" if "invested_share" in rows and len(rows) else "n/a"
