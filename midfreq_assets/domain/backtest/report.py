"""Backtest report: plots (matplotlib Agg, base64 PNG) and one self-contained HTML page.

A grid report shows every point's metrics next to the benchmarks, the wealth and drawdown paths,
the best point's weights, each metric's sensitivity to each hyperparameter, and predicted vs
realized APY (is the predictor any good, and is it biased?); then the analysis of the original
research notebook (``analysis.py``): per-pool APY and tracking error over time, cumulative
transaction costs, and the portfolio's APY against the best APY available each day.
"""

from __future__ import annotations

import base64
import html
import io

import matplotlib

from midfreq_assets.domain.backtest import analysis
from midfreq_assets.domain.backtest.engine import BacktestResult

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

HEADLINE_COLUMNS = ["name", "log_growth", "excess_log_growth", "volatility", "excess_sharpe", "max_drawdown",
                    "turnover", "cost_drag", "il_drag", "price_pnl", "entropy", "tracking_error"]


def fig_to_base64(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def img_tag(b64: str, alt: str = "") -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}"/>'


def plot_wealth(wealth: dict[str, pd.Series], highlight: list[str] | None = None) -> str:
    fig, ax = plt.subplots(figsize=(9, 4))
    highlight = highlight or []
    for name, w in wealth.items():
        strong = name in highlight
        ax.plot(w.index, w / w.iloc[0], lw=2 if strong else 0.7, alpha=1 if strong else 0.4,
                label=name if strong else None)
    ax.set_title("Wealth (W / W0)")
    if highlight:
        ax.legend(fontsize=7)
    return fig_to_base64(fig)


def plot_drawdowns(wealth: dict[str, pd.Series], highlight: list[str]) -> str:
    fig, ax = plt.subplots(figsize=(9, 3))
    for name in highlight:
        w = wealth[name]
        ax.plot(w.index, w / w.cummax() - 1.0, lw=1, label=name)
    ax.set_title("Drawdown")
    ax.legend(fontsize=7)
    return fig_to_base64(fig)


def plot_weights(weights: pd.DataFrame, top: int = 10, title: str = "Weights",
                 labels: dict[str, str] | None = None) -> str:
    """Stacked weights (dates x pools), the ``top`` largest on average, the rest as 'other'."""
    fig, ax = plt.subplots(figsize=(9, 4))
    if weights.empty:
        ax.set_title(f"{title}: nothing held")
        return fig_to_base64(fig)
    order = weights.mean().sort_values(ascending=False).index
    shown = weights[order[:top]]
    other = weights[order[top:]].sum(axis=1)
    ax.stackplot(weights.index, *[shown[c] for c in shown.columns], other,
                 labels=[(labels or {}).get(c, str(c)[:8]) for c in shown.columns] + ["other"])
    ax.set_title(title)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1, 1))
    return fig_to_base64(fig)


def plot_sensitivity(table: pd.DataFrame, params: list[str], metrics: list[str]) -> str:
    """Mean of each metric per value of each parameter (other parameters averaged out)."""
    params = [p for p in params if table[p].nunique() > 1] or params[:1]
    fig, axes = plt.subplots(len(metrics), max(len(params), 1), figsize=(3 * max(len(params), 1), 2.4 * len(metrics)),
                             squeeze=False)
    for i, m in enumerate(metrics):
        for j, p in enumerate(params):
            g = table.groupby(table[p].astype(str), sort=False)[m].agg(["mean", "min", "max"])
            ax = axes[i][j]
            x = np.arange(len(g))
            ax.plot(x, g["mean"], marker="o")
            ax.fill_between(x, g["min"], g["max"], alpha=0.2)
            ax.set_xticks(x, g.index, fontsize=7)
            ax.set_title(f"{m} vs {p.split('.')[-1]}", fontsize=8)
    fig.tight_layout()
    return fig_to_base64(fig)


def plot_predicted_vs_realized(steps: pd.DataFrame, title: str = "Predicted vs realized APY") -> str:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    s = steps.dropna(subset=["predicted_apy", "realized_apy"])
    a1.plot(pd.to_datetime(s["date"]), s["predicted_apy"], lw=1, label="predicted")
    a1.plot(pd.to_datetime(s["date"]), s["realized_apy"], lw=0.7, label="realized")
    a1.legend(fontsize=7)
    a1.set_title(title, fontsize=9)
    a2.scatter(s["predicted_apy"], s["realized_apy"], s=4, alpha=0.5)
    if len(s):
        lo, hi = float(s[["predicted_apy", "realized_apy"]].min().min()), float(s[["predicted_apy", "realized_apy"]].max().max())
        a2.plot([lo, hi], [lo, hi], "k--", lw=0.7)
    a2.set_xlabel("predicted")
    a2.set_ylabel("realized")
    return fig_to_base64(fig)


def plot_lines(frame: pd.DataFrame, title: str, ylabel: str, labels: dict[str, str] | None = None,
               highlight: list[str] | None = None) -> str:
    """One line per column of ``frame`` (index = dates); ``highlight`` columns drawn bold and named."""
    fig, ax = plt.subplots(figsize=(9, 3.5))
    if frame.empty:
        ax.set_title(f"{title}: no data")
        return fig_to_base64(fig)
    for col in frame.columns:
        strong = highlight is None or col in highlight
        ax.plot(frame.index, frame[col], lw=1.2 if strong else 0.6, alpha=1 if strong else 0.35,
                label=(labels or {}).get(col, str(col)[:48]) if strong else None)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1, 1))
    fig.autofmt_xdate()
    return fig_to_base64(fig)


def analysis_sections(best: BacktestResult, steps: dict[str, pd.DataFrame], panel: pd.DataFrame,
                      apy_column: str, pool_labels: dict[str, str], benchmarks: list[str], top: int = 8
                      ) -> list[tuple[str, str, pd.DataFrame | None]]:
    """The notebook's sections: ``best`` is a run of the best point (per-pool predictions kept),
    ``steps`` the per-step records of every run (grid points and benchmarks) by name."""
    held = analysis.most_held(best, top)
    tracking = analysis.pool_tracking_table(best, pool_labels)
    vs_best = analysis.apy_vs_best(best.steps, panel, apy_column)
    costs = analysis.cumulative_costs(steps)
    both = vs_best.set_index("date")[["portfolio_apy", "best_available_apy"]].rename(columns={
        "portfolio_apy": f"portfolio ({best.name})", "best_available_apy": "best eligible pool (hindsight)"})
    return [
        (f"APY of the {len(held)} most held pools ({apy_column}, per day)",
         plot_lines(analysis.pool_apy_over_time(panel, held, apy_column), "Pool APY", "APY (fraction/yr)",
                    pool_labels), None),
        ("Tracking error per pool over the days held (predicted - realized APY)",
         plot_lines(analysis.pool_tracking_error(best, held), "Tracking error per pool", "APY (fraction/yr)",
                    pool_labels), tracking.head(20)),
        ("Cumulative transaction costs (proportional cost + gas, USD)",
         plot_lines(costs, "Cumulative cost", "USD", highlight=[best.name, *benchmarks]), None),
        ("Portfolio APY vs the best APY available each day (an eligible pool's, in hindsight)",
         plot_lines(both, "Realized APY per step", "APY (fraction/yr)"), analysis.apy_vs_best_summary(vs_best)),
    ]


def _table_html(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, classes="t")


def html_report(title: str, table: pd.DataFrame, sections: list[tuple], notes: list[str] | None = None) -> str:
    """A self-contained page: headline table, then (heading, base64 PNG[, table]) sections."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [f"<p>{html.escape(n)}</p>" for n in notes or []]
    body.append(_table_html(table))
    for heading, b64, *extra in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>{img_tag(b64, heading)}")
        if extra and extra[0] is not None:
            body.append(_table_html(extra[0]))
    style = ("body{font-family:sans-serif;margin:2em} table.t{border-collapse:collapse;font-size:12px}"
             "table.t td,table.t th{padding:2px 6px;border-bottom:1px solid #ddd}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>" \
           f"<style>{style}</style></head><body>{''.join(body)}</body></html>"


# --------------------------------------------------------------------------------------------
# One grid file's report: the table and the page
# --------------------------------------------------------------------------------------------


def report_table(grid_name: str, parameters: list[str], points: list[tuple[str, dict[str, object], dict[str, float]]],
                 benchmarks: pd.DataFrame, metric_columns: list[str]) -> pd.DataFrame:
    """One row per grid point (its parameters and metrics) then the benchmarks (``kind`` says which;
    ``benchmark_set`` names the benchmarks run under a point's own configuration)."""
    rows = [{"name": name, "kind": "grid_point", **params, **metrics} for name, params, metrics in points]
    table = pd.concat([pd.DataFrame(rows), benchmarks.assign(kind="benchmark")], ignore_index=True)
    table.insert(0, "grid", grid_name)
    if "benchmark_set" not in table:
        table["benchmark_set"] = ""
    return table[["grid", "name", "kind", "benchmark_set", *parameters, *metric_columns]]


def best_point(table: pd.DataFrame, metric: str = "log_growth") -> pd.Series:
    """The grid point with the highest ``metric`` (in-sample over the whole history)."""
    pts = table[table["kind"] == "grid_point"]
    return pts.sort_values(metric, ascending=False).iloc[0]


def headline_markdown(table: pd.DataFrame) -> str:
    """The report's headline columns, best first, as a markdown table."""
    head = table[["name", "kind", *[c for c in HEADLINE_COLUMNS if c in table and c != "name"]]]
    return head.sort_values("log_growth", ascending=False).to_markdown(index=False, floatfmt=".4g")


def render_report(title: str, table: pd.DataFrame, params: list[str], wealth: dict[str, pd.Series],
                  benchmarks: list[str], best_weights: pd.DataFrame, best_steps: pd.DataFrame,
                  pool_labels: dict[str, str], notes: list[str],
                  analysis_part: list[tuple[str, str, pd.DataFrame | None]] | None = None) -> tuple[str, str]:
    """The HTML page of a grid report and its wealth plot (base64 PNG, for the asset's metadata);
    ``analysis_part``: :func:`analysis_sections`, appended."""
    pts = table[table["kind"] == "grid_point"].sort_values("log_growth", ascending=False)
    best = str(pts["name"].iloc[0])
    highlight = [best, *benchmarks]
    wealth_png = plot_wealth(wealth, highlight)
    sections = [
        ("Wealth: all grid points (thin), best point and benchmarks", wealth_png),
        ("Drawdowns", plot_drawdowns(wealth, highlight)),
        (f"Weights of the best point ({best})", plot_weights(best_weights, labels=pool_labels)),
        ("Sensitivity of metrics to each hyperparameter",
         plot_sensitivity(pts, params, ["log_growth", "excess_sharpe", "cost_drag", "turnover"])),
        (f"Predicted vs realized portfolio APY ({best})", plot_predicted_vs_realized(best_steps)),
        *(analysis_part or []),
    ]
    return html_report(title, table, sections, notes), wealth_png
