"""The report reads at a glance: a narrow headline table, no NaN, each benchmark once per distinct
configuration, a large grid ranked rather than listed, one colour per series, printable style."""

import re

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.backtest.report import (
    HEADLINE_VIEW,
    ROLE_BAR,
    every_row_table,
    headline_table,
    html_report,
    plot_heatmaps,
    report_table,
)
from midfreq_assets.domain.backtest.report_style import ROLE_COLORS, Palette, fmt_cell


def grid_table(n_points: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    points = [
        (
            f"cost-{c}_conc-{k}_{i}",
            {"cost": c, "conc": k},
            {
                "log_growth": float(rng.normal(0.05, 0.01)),
                "invested_share": 0.9,
                "max_drawdown": -0.01,
                "turnover": 2.0,
                "excess_sharpe": np.nan,
            },
        )
        for i, (c, k) in enumerate(
            (c, k)
            for c in np.linspace(0.0001, 0.001, max(n_points // 10, 1))
            for k in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)[:n_points]
        )
    ]
    points = points[:n_points]
    same = {
        "log_growth": 0.04,
        "invested_share": 1.0,
        "max_drawdown": -0.02,
        "turnover": 1.0,
        "excess_sharpe": 0.5,
    }
    benches = pd.DataFrame(
        [
            {"name": "equal_weight@horizon_days-7", "benchmark_set": "horizon_days-7", **same},
            {"name": "equal_weight@horizon_days-30", "benchmark_set": "horizon_days-30", **same},
            {"name": "top_k@horizon_days-7", "benchmark_set": "horizon_days-7", **same, "log_growth": 0.045},
            {"name": "top_k@horizon_days-30", "benchmark_set": "horizon_days-30", **same, "log_growth": 0.03},
        ]
    )
    stats = {
        "pbo": 0.25,
        "excess_over": "top_k@horizon_days-7",
        "deflated_sharpe_excess": 0.7,
        "excess_vs_benchmark": 0.01,
        "excess_ci_low": -0.002,
        "excess_ci_high": 0.02,
        "deflated_sharpe": 0.9,
    }
    wf = {
        "log_growth": 0.055,
        "invested_share": 0.95,
        "max_drawdown": -0.01,
        "turnover": 3.0,
        "excess_sharpe": 1.0,
    }
    return report_table(
        "g",
        ["cost", "conc"],
        points,
        benches,
        ["log_growth", "invested_share", "max_drawdown", "turnover", "excess_sharpe"],
        walk_forward=wf,
        stats=stats,
    )


def test_the_headline_table_is_narrow_and_leads_with_what_decides():
    head = headline_table(grid_table(12))
    assert list(head.columns) == [label for label, _ in HEADLINE_VIEW] and len(head.columns) <= 10
    wf, bar = head.iloc[0], head.iloc[1]
    assert wf["row"] == "walk_forward" and bar["what it is"] == ROLE_BAR
    assert wf["log growth /yr"] == "5.50%" and wf["excess over bar /yr"] == "+1.00%"
    assert (
        wf["excess CI"] == "[-0.20%, +2.00%]"
        and wf["PBO"] == "0.250"
        and wf["deflated Sharpe of excess"] == "0.700"
    )
    assert bar["excess CI"] == "n/a" and bar["PBO"] == "n/a"  # a benchmark has none: said, never NaN


def test_the_page_has_no_nan_each_benchmark_once_and_a_printable_style():
    table = grid_table(12)
    page = html_report("t", table, [], ["a note"], summary="walk-forward ...")
    assert not re.search(r">\s*(nan|NaN|None)\s*<", page)
    every = page.split("<h2>Every row</h2>")[1]
    assert every.count(">equal_weight<") == 1  # the same rule with the same numbers under two sets: once
    assert "horizon_days-7, horizon_days-30" in every
    assert every.count("top_k@horizon_days-") == 2  # different numbers: each set its own row
    assert "Benchmarks under the configuration horizon_days-7 (the bar's)" in page
    assert "color:#111;background:#fff" in page and "@media print" in page
    assert page.index("headline") < page.index("<h2>Every row</h2>")


def test_a_thousand_point_grid_is_ranked_not_listed():
    table = grid_table(1000)
    rows, note = every_row_table(table)
    points = rows[rows["kind"] == "grid_point"]
    assert len(points) == 25 and note.startswith("975 of 1,000 grid points not listed")
    assert points["log_growth"].is_monotonic_decreasing and list(points["rank"])[:2] == ["1", "2"]
    assert list(points["rank"])[-1] == "1000"
    page = html_report("t", table, [], [])
    assert len(page) < 200_000 and "975 of 1,000 grid points not listed" in page


def test_pairs_of_parameters_get_a_heatmap():
    table = grid_table(40)
    png = plot_heatmaps(table[table["kind"] == "grid_point"], ["cost", "conc"])
    assert png and len(png) > 1000
    assert plot_heatmaps(table[table["kind"] == "grid_point"], ["cost"]) is None  # one parameter: no pair


def test_one_colour_per_series_on_every_plot():
    palette = Palette({"walk_forward": "walk_forward", "top_k@h-7": "bar"})
    assert (
        palette("walk_forward") == ROLE_COLORS["walk_forward"] and palette("top_k@h-7") == ROLE_COLORS["bar"]
    )
    names = [f"series {i}" for i in range(20)]
    colours = [palette(n) for n in names]
    assert len(set(colours[:18])) == 18 and ROLE_COLORS["walk_forward"] not in colours[:18]
    assert [palette(n) for n in names] == colours  # asked again (another plot): the same colour


@pytest.mark.parametrize(
    ("column", "value", "text"),
    [
        ("log_growth", 0.051903651903651905, "5.19%"),
        ("final_wealth", 1.055e6, "1,055,000"),
        ("excess_over_bar", -0.002, "-0.20%"),
        ("pbo", np.nan, "n/a"),
        ("excess_sharpe", 1.23456, "1.235"),
        ("gap_pool_days", 3.0, "3"),
        ("period_start", pd.Timestamp("2025-01-02"), "2025-01-02"),
    ],
)
def test_cells_are_formatted_by_unit(column, value, text):
    assert fmt_cell(column, value) == text


def test_benchmarks_deduped_with_missing_values_keep_each_rule():
    """A metric missing on every row (None in an object column: pandas' str dtype keeps it NaN) never
    merges two rules nor fails; the same rule with the same numbers under two sets is shown once."""
    from midfreq_assets.domain.backtest.report_style import dedupe_benchmarks

    table = pd.DataFrame(
        {
            "name": ["a@x", "a@y", "b@x"],
            "kind": "benchmark",
            "benchmark_set": ["x", "y", "x"],
            "log_growth": [0.1, 0.1, 0.2],
            "sharpe": pd.Series([None, None, None], dtype=object),
        }
    )
    out = dedupe_benchmarks(table, ["log_growth", "sharpe"])
    assert out["name"].tolist() == ["a", "b@x"] and out["benchmark_set"].tolist() == ["x, y", "x"]


def test_benchmarks_with_missing_figures_are_still_merged_by_their_numbers():
    from midfreq_assets.domain.backtest.report_style import dedupe_benchmarks

    table = pd.DataFrame(
        {
            "name": ["a@x", "a@y", "b@x"],
            "kind": "benchmark",
            "benchmark_set": ["x", "y", "x"],
            "log_growth": [0.1, 0.1, 0.2],
            "excess_sharpe": [np.nan, np.nan, 1.0],
        }
    )
    out = dedupe_benchmarks(table, ["log_growth", "excess_sharpe"])
    assert list(out["name"]) == ["a", "b@x"] and out["benchmark_set"].iloc[0] == "x, y"
