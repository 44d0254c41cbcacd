"""The headline's statistics: the bar is the strongest constrained benchmark, the excess over it with
its interval, the deflated Sharpe on that excess (not saturated like the plain one), row roles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.backtest import engine as bt
from midfreq_assets.domain.backtest import report
from midfreq_assets.domain.backtest.benchmarks import run_benchmark, run_benchmarks
from midfreq_assets.domain.backtest.config import BacktestConfig, WalkForwardConfig
from midfreq_assets.domain.backtest.evaluation import evaluate_grid, strongest_benchmark
from midfreq_assets.domain.backtest.metrics import METRIC_COLUMNS, backtest_metrics, metrics_table
from midfreq_assets.domain.backtest.walk_forward import slice_result
from midfreq_assets.domain.portfolio.strategy import StrategyConfig

DAYS = pd.date_range("2024-01-01", periods=300, freq="D")
CONFIG = BacktestConfig(
    walk_forward=WalkForwardConfig(test_days=50, min_train_days=60),
    evaluation={"pbo_splits": 8, "bootstrap_resamples": 1000},
)


def path(
    name: str,
    returns: np.ndarray,
    start: int = 0,
    end: int | None = None,
    wealth: float = 1.0,
    invested: float = 0.98,
) -> bt.BacktestResult:
    """A stored path with the given daily log returns on days ``start..end``."""
    r = returns[start:end]
    dates = DAYS[start : start + len(r)]
    w = wealth * np.exp(np.cumsum(r))
    steps = pd.DataFrame(
        {
            "date": dates,
            "date_end": dates + pd.Timedelta(days=1),
            "wealth_start": [wealth, *w[:-1]],
            "wealth": w,
            "invested": invested,
            "turnover": 0.0,
            "cost_usd": 0.0,
            "gas_usd": 0.0,
            "il_usd": 0.0,
            "price_pnl_usd": 0.0,
            "n_held": 1,
            "n_held_il_missing": 0,
            "n_held_in_gap": 0,
            "n_eligible": 1,
            "entropy": 0.0,
            "tracking_error": np.nan,
            "status": "given_weights",
        }
    )
    state = bt.PortfolioState(("x",), np.array([w[-1]]), 0.0)
    return bt.BacktestResult(name, steps, pd.DataFrame(columns=["date", "pool", "weight"]), wealth, state)


def fake_grid(points: dict[str, np.ndarray], benches: dict[str, np.ndarray]):
    """Stored point paths, a runner re-trading a point on a window (its own returns), and benchmarks
    run on a window (their returns from there, from wealth 1)."""
    results = {k: path(k, v) for k, v in points.items()}

    def run_window(name, start, end, state):
        a, b = DAYS.searchsorted(start), DAYS.searchsorted(end)
        return path(name, points[name], a, b, wealth=state.wealth if state is not None else 1.0)

    def run_benches(start, end):
        a, b = DAYS.searchsorted(start), DAYS.searchsorted(end)
        return {k: path(k, v, a, b) for k, v in benches.items()}

    return results, run_window, run_benches


def test_the_bar_is_the_strongest_constrained_benchmark_never_an_unconstrained_one():
    rng = np.random.default_rng(0)
    base = 0.06 / 365 + rng.normal(0, 1e-5, len(DAYS))
    benches = {
        "equal_weight": base - 0.02 / 365,
        "best_trailing_apy@h-7": base + 0.01 / 365,
        "best_trailing_apy_unconstrained@h-7": base + 0.05 / 365,
        "incumbent@h-30": base,
    }
    results, run_window, run_benches = fake_grid({"p": base + 0.002 / 365, "q": base}, benches)
    assert strongest_benchmark({k: path(k, v) for k, v in benches.items()}) == "best_trailing_apy@h-7"
    ev = evaluate_grid(results, run_window, run_benches, CONFIG)
    assert ev.excess_over == "best_trailing_apy@h-7"
    stats = ev.stats()
    # the excess is over the bar on the walk-forward's days: (0.002 - 0.01) /yr, not over the 5%/yr unconstrained row
    assert stats["excess_vs_benchmark"] == pytest.approx(-0.008, abs=1e-3)
    assert stats["excess_ci_low"] <= stats["excess_vs_benchmark"] <= stats["excess_ci_high"]
    # the table says who is who, and leads with the walk-forward, the bar and the hindsight best point
    points = [(k, {}, backtest_metrics(r)) for k, r in ev.points.items()]
    bench_rows = metrics_table(ev.benchmarks).assign(benchmark_set="")
    table = report.report_table(
        "g",
        [],
        points,
        bench_rows,
        METRIC_COLUMNS,
        walk_forward=backtest_metrics(ev.walk_forward.result),
        stats=stats,
        period=ev.period,
    )
    roles = dict(zip(table["name"], table["role"], strict=True))
    assert roles["best_trailing_apy@h-7"] == report.ROLE_BAR
    assert roles["best_trailing_apy_unconstrained@h-7"] == report.ROLE_UNCONSTRAINED
    assert roles["p"] == report.ROLE_HINDSIGHT and roles["q"] == report.ROLE_POINT
    lead = report.lead_table(table)
    assert list(lead["role"][:3]) == [report.ROLE_WALK_FORWARD, report.ROLE_BAR, report.ROLE_HINDSIGHT]
    assert lead["role"].iloc[-1] == report.ROLE_UNCONSTRAINED
    np.testing.assert_allclose(lead["invested_share"], 0.98)
    bar_growth = table.loc[table["name"] == "best_trailing_apy@h-7", "log_growth"].iloc[0]
    np.testing.assert_allclose(table["excess_over_bar"], table["log_growth"] - bar_growth)
    line = report.headline(table, stats)
    assert "strongest constrained benchmark best_trailing_apy@h-7" in line
    assert "(2 points, 8 splits)" in line and "upper bound" in line and "invested 0.98" in line


@pytest.mark.parametrize("seed", range(3))
def test_a_policy_identical_to_a_benchmark_has_an_excess_interval_containing_zero(seed):
    """The walk-forward trades the same rule as a benchmark, through the same accounting, from the same
    day: the excess is 0 and its interval contains 0 (its deflated Sharpe is undefined, not 1)."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2024-01-01", periods=200, freq="D", name="date")
    pools = [f"p{i}" for i in range(6)]
    apy = pd.DataFrame(
        0.03 + rng.uniform(0, 0.06, 6) + rng.normal(0, 0.01, (200, 6)).cumsum(axis=0) * 0.2,
        index=dates,
        columns=pools,
    )
    inputs = bt.BacktestInputs(apy, apy * 0 + 10 ** rng.uniform(7, 9, 6), apy.notna())
    strategy = StrategyConfig(
        cost=0.0005, gas_usd=5.0, base_buffer=0.02, concentration_limit=0.3, max_pool_tvl_share=0.05
    )
    config = CONFIG.model_copy(update={"initial_wealth": 1e6, "rebalance_every_days": 7})
    whole = {k: run_benchmark(k, inputs, strategy, config) for k in ("best_trailing_apy", "equal_weight")}
    same: dict[str, bt.BacktestResult] = {}

    def run_window(name, start, end, state):  # the rule, run once from the first test day, sliced
        if name not in same:
            same[name] = run_benchmark(
                name, inputs, strategy, config.model_copy(update={"start": start.date()})
            )
        return slice_result(same[name], start, end)

    def run_benches(start, end):
        return run_benchmarks(
            inputs,
            strategy,
            config.model_copy(
                update={"start": start.date(), "end": end.date(), "benchmarks": ["best_trailing_apy"]}
            ),
        )

    ev = evaluate_grid(whole, run_window, run_benches, config)
    chosen = set(ev.walk_forward.windows["point"])
    assert chosen == {"best_trailing_apy"} and ev.excess_over == "best_trailing_apy"
    stats = ev.stats()
    assert stats["excess_vs_benchmark"] == pytest.approx(0.0, abs=1e-12)
    assert stats["excess_ci_low"] <= 0.0 <= stats["excess_ci_high"]
    assert np.isnan(stats["deflated_sharpe_excess"])


def test_zero_mean_noise_over_a_benchmark_gives_intervals_containing_zero_at_their_confidence():
    hits = []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        bench = 0.06 / 365 + rng.normal(0, 2e-5, len(DAYS))
        noise = {f"p{i}": bench + rng.normal(0, 5e-5, len(DAYS)) for i in range(4)}
        results, run_window, run_benches = fake_grid(noise, {"equal_weight": bench})
        stats = evaluate_grid(results, run_window, run_benches, CONFIG).stats()
        hits.append(stats["excess_ci_low"] <= 0.0 <= stats["excess_ci_high"])
    assert np.mean(hits) >= 0.75  # a 90% interval


def test_deflated_sharpe_on_the_excess_is_not_saturated_like_the_plain_one():
    """Carry at 6%/yr with tiny noise has a huge Sharpe over a zero base: the plain DSR is 1 whatever
    the policy; on the daily excess over the bar it says whether the policy beats the rule."""
    rng = np.random.default_rng(1)
    bench = 0.06 / 365 + rng.normal(0, 2e-5, len(DAYS))
    lucky = {f"p{i}": bench + rng.normal(0, 5e-5, len(DAYS)) for i in range(8)}
    results, run_window, run_benches = fake_grid(lucky, {"equal_weight": bench})
    stats = evaluate_grid(results, run_window, run_benches, CONFIG).stats()
    assert stats["deflated_sharpe"] > 0.999
    assert stats["deflated_sharpe_excess"] < 0.9
    skilled = {k: v + (0.02 / 365 if k == "p0" else 0.0) for k, v in lucky.items()}
    results, run_window, run_benches = fake_grid(skilled, {"equal_weight": bench})
    stats = evaluate_grid(results, run_window, run_benches, CONFIG).stats()
    assert stats["deflated_sharpe_excess"] > 0.95 and stats["excess_ci_low"] > 0


def test_a_big_grid_page_lists_its_best_points_ranked_and_the_bars_benchmarks():
    """200 points with 4 benchmark sets: the page lists the walk-forward, the best and worst points by
    log growth (rank 1 = best) and the bar's set; a small grid's page lists every row."""
    rng = np.random.default_rng(0)
    metrics = lambda: {c: float(rng.normal()) for c in METRIC_COLUMNS}  # noqa: E731
    points = [(f"p{i}", {"x": i}, metrics()) for i in range(200)]
    bench = pd.DataFrame(
        [{"name": f"equal_weight~s{k}", "benchmark_set": f"~s{k}", **metrics()} for k in range(4)]
    )
    stats = {"excess_over": "equal_weight~s2"}
    table = report.report_table(
        "g", ["x"], points, bench, METRIC_COLUMNS, walk_forward=metrics(), stats=stats
    )
    listed, note = report.every_row_table(table, top=50, bottom=5)
    pts = listed[listed["kind"] == "grid_point"]
    assert len(pts) == 55 and pts["rank"].tolist() == [str(r) for r in [*range(1, 51), *range(196, 201)]]
    ranked = table[table["kind"] == "grid_point"].sort_values("log_growth", ascending=False)["name"].tolist()
    assert pts["name"].tolist() == ranked[:50] + ranked[-5:]
    assert listed["kind"].iloc[0] == "walk_forward"
    assert listed.loc[listed["kind"] == "benchmark", "name"].tolist() == ["equal_weight~s2"]
    assert "145 of 200 grid points" in note and "of 4 rows" in note
    small_points = [(f"p{i}", {"x": i}, metrics()) for i in range(10)]
    small = report.report_table(
        "g", ["x"], small_points, bench, METRIC_COLUMNS, walk_forward=metrics(), stats=stats
    )
    rows, note = report.every_row_table(small)
    assert (
        note == "" and (rows["kind"] == "grid_point").sum() == 10 and (rows["kind"] == "benchmark").sum() == 4
    )
