"""How the backtest report looks: one colour per series on every plot, numbers formatted by unit,
date axes that stay readable, legends outside the data, and a printable dark-on-light page.

Units follow docs/METHOD.md: growth, drags, drawdowns, volatility and shares are fractions (shown
as %), turnover is a fraction of wealth per year, ratios (Sharpe, PBO, deflated Sharpe, entropy)
are plain numbers, amounts are in the vault's reference asset.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

#: Columns shown as percentages (fractions, per year where the metric is annual).
PERCENT = {
    "log_growth",
    "base_rate",
    "excess_log_growth",
    "invested_share",
    "volatility",
    "max_drawdown",
    "cost_drag",
    "il_drag",
    "price_pnl",
    "il_data_missing_share",
    "tracking_error",
    "excess_over_bar",
    "excess_vs_benchmark",
    "excess_ci_low",
    "excess_ci_high",
    "predicted_apy",
    "realized_apy",
    "portfolio_apy",
    "best_available_apy",
    "mean_portfolio_apy",
    "mean_best_available_apy",
    "tracking_bias",
    "tracking_rmse",
    "mean_predicted_apy",
    "mean_realized_apy",
    "test_log_growth",
    "margin",
}
#: ``turnover``: traded value per year as a multiple of wealth (``14.3x``).
#: Amounts (reference asset): thousands separators, no decimals.
AMOUNTS = {"gas_usd", "final_wealth", "cost_usd", "wealth"}
#: Counts.
COUNTS = {"gap_pool_days", "empty_universe_days", "solver_failures", "days_held", "windows", "n"}

#: Fixed colours of the report's roles; other series take the next free colour of ``PALETTE``.
ROLE_COLORS = {"walk_forward": "#1f3b73", "bar": "#c0392b", "hindsight": "#2e8b57"}
PALETTE = [
    "#e69f00",
    "#56b4e9",
    "#009e73",
    "#cc79a7",
    "#0072b2",
    "#d55e00",
    "#f0e442",
    "#8c564b",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#9467bd",
    "#ff9896",
    "#98df8a",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#dbdb8d",
    "#9edae5",
    "#aec7e8",
]
BACKGROUND = "#bbbbbb"  # unnamed series (the grid points behind the named lines), "other"


class Palette:
    """A colour per series name, the same on every plot of one report: the walk-forward, the bar and
    the hindsight best point have fixed colours, the others get distinct colours in the order first
    asked for (20 before one repeats)."""

    def __init__(self, roles: dict[str, str] | None = None) -> None:
        self._colors = {name: ROLE_COLORS[role] for name, role in (roles or {}).items()}
        self._next = 0

    def __call__(self, name: str) -> str:
        if name not in self._colors:
            used = set(self._colors.values())
            free = [c for c in PALETTE if c not in used]
            self._colors[name] = free[0] if free else PALETTE[self._next % len(PALETTE)]
            self._next += 1
        return self._colors[name]


def fmt_cell(column: str, value: object) -> str:
    """One cell for people: % for fractions, separators for amounts, 3 decimals for ratios, "n/a" for
    a missing number, dates as YYYY-MM-DD."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return "n/a"
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        return pd.Timestamp(value).strftime("%Y-%m-%d")
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, float, np.integer, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return "n/a"
        if column == "turnover":  # traded value over wealth per year
            return f"{v:.1f}x"
        if column in PERCENT:
            return f"{v * 100:+.2f}%" if column.startswith(("excess", "margin")) else f"{v * 100:.2f}%"
        if column in AMOUNTS:
            return f"{v:,.0f}"
        if column in COUNTS or (v == int(v) and abs(v) < 1e9):
            return f"{int(v):,}"
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(value)


def format_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell of ``df`` as text (:func:`fmt_cell`); a text column's missing cells blank."""
    out = {}
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_datetime64_any_dtype(s.dtype):
            out[col] = [fmt_cell(str(col), v) for v in s]
        else:
            out[col] = [
                "" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt_cell(str(col), v)
                for v in s
            ]
    return pd.DataFrame(out, index=df.index)


def date_axis(ax) -> None:
    """Concise date ticks (no overlapping labels)."""
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def percent_axis(ax, axis: str = "y", decimals: int | None = None) -> None:
    """Ticks as percentages (fractions on the axis); decimals chosen from the range unless given."""
    from matplotlib.ticker import PercentFormatter

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(1.0, decimals=decimals))


def legend_outside(ax, **kw) -> None:
    """The legend right of the axes, never over the data (only when something is labelled)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False, **kw
        )


def dedupe_benchmarks(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Benchmark rows that are the same rule with the same numbers under several benchmark sets
    (the sets differ in a parameter the rule ignores) shown once, ``benchmark_set`` listing the sets;
    other rows as they are."""
    if "kind" not in table or "benchmark_set" not in table:
        return table
    bench = table[table["kind"] == "benchmark"]
    if bench.empty:
        return table
    rule = bench["name"].astype(str).str.split("@").str[0]
    cols = [c for c in metrics if c in bench]
    numbers = bench[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float).round(10)
    key = pd.Series(
        [(r, *(None if v != v else v for v in row)) for r, row in zip(rule, numbers.tolist(), strict=True)],
        index=bench.index,
    )
    keep, sets = [], {}
    for idx, k in key.items():
        if k in sets:
            sets[k].append(str(table.at[idx, "benchmark_set"]))
        else:
            sets[k] = [str(table.at[idx, "benchmark_set"])]
            keep.append(idx)
    out = table.drop(index=[i for i in bench.index if i not in keep]).copy()
    for idx in keep:
        names = [s for s in sets[key[idx]] if s]
        if len(names) > 1:
            out.at[idx, "name"] = rule[idx]
            out.at[idx, "benchmark_set"] = ", ".join(names)
    return out


STYLE = """
body{font-family:system-ui,sans-serif;color:#111;background:#fff;margin:1.5em auto;max-width:1280px;padding:0 1em;
 line-height:1.35}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table.t{border-collapse:collapse;font-size:12px;margin:.5em 0}
table.t th{background:#f0f0f0;text-align:left;position:sticky;top:0}
table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #ddd;white-space:nowrap;text-align:left}
table.t td.n{text-align:right;font-variant-numeric:tabular-nums}
table.headline{font-size:13px} table.headline tbody tr:first-child td{font-weight:600}
table.headline td:first-child{white-space:normal;min-width:10em;max-width:20em;overflow-wrap:anywhere}
table.headline td:nth-child(2){white-space:normal;max-width:11em}
p.caption{font-size:12px;color:#444;margin-top:0}
.wide{overflow-x:auto;max-width:100%}
img{max-width:100%;height:auto}
p.summary{font-weight:600}
details summary{cursor:pointer;color:#1f3b73}
@media print{body{max-width:none;margin:0}.wide{overflow:visible}details{display:block}
 details>summary{display:none} img,table{page-break-inside:avoid} h2{page-break-after:avoid}}
"""
