"""The report's analysis tables: per-pool APY and tracking error, cumulative costs, APY vs the best available."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.backtest import analysis
from midfreq_assets.domain.backtest import engine as bt
from midfreq_assets.domain.backtest.benchmarks import run_benchmarks
from midfreq_assets.domain.backtest.config import BacktestConfig
from midfreq_assets.domain.backtest.grids import GridPoint, point_result, run_point
from midfreq_assets.domain.backtest.report import analysis_sections, render_report
from midfreq_assets.domain.config.vault import load_vault_config
from midfreq_assets.domain.portfolio.strategy import StrategyConfig

VAULT = load_vault_config("configs/vaults/usd_lending.yaml")
DAYS = pd.date_range("2024-01-01", periods=4, freq="D", name="date")


@pytest.fixture(scope="module")
def run(synthetic_history):
    panel = bt.vault_panel(synthetic_history(days=80, pools=6, seed=3), None, VAULT)
    point = GridPoint("p", (("strategy.cost", 0.0005),), "g")
    result, cfg = point_result(panel, VAULT, point)
    return panel, result, cfg, point


def test_hand_computed_apy_vs_best_and_costs():
    apy = pd.DataFrame({"A": [0.10, 0.20, 0.10, 0.10], "B": [0.05, 0.04, 0.30, 0.05]}, index=DAYS)
    inputs = bt.BacktestInputs(apy, apy * 0 + 1e13, apy.notna())  # TVL so large the dilution is ~1e-7
    strategy = StrategyConfig(cost=0.001, gas_usd=5.0, concentration_limit=1.0)
    res = bt.run_backtest(inputs, apy.shift(-1).fillna(0.1), strategy, BacktestConfig(initial_wealth=1e6))
    panel = apy.stack().rename("apy").reset_index().rename(columns={"level_1": "pool"}).assign(eligible=True)
    got = analysis.apy_vs_best(res.steps, panel)
    assert got["best_available_apy"].tolist() == pytest.approx([0.20, 0.30, 0.10])  # best paid at t+1
    assert (got["portfolio_apy"] <= got["best_available_apy"] + 1e-12).all()
    # perfect foresight with no dilution captures the best pool (minus nothing: costs are not in APY)
    assert got["portfolio_apy"].tolist() == pytest.approx([0.20, 0.30, 0.10], rel=1e-6)
    costs = analysis.cumulative_costs({"s": res.steps})
    assert costs["s"].iloc[-1] == pytest.approx((res.steps["cost_usd"] + res.steps["gas_usd"]).sum())
    assert costs["s"].is_monotonic_increasing
    summary = analysis.apy_vs_best_summary(got)
    assert summary.loc[0, "captured"] == pytest.approx(1.0, rel=1e-6)
    # an ineligible pool is not "available" even if it paid more
    panel.loc[(panel["pool"] == "B") & (panel["date"] == DAYS[1]), "eligible"] = False
    assert analysis.apy_vs_best(res.steps, panel)["best_available_apy"].iloc[1] == pytest.approx(0.10)


def test_per_pool_tracking_error_is_predicted_minus_realized_on_days_held(run):
    panel, result, _, _ = run
    held = analysis.most_held(result, 3)
    assert len(held) == 3
    te = analysis.pool_tracking_error(result, held)
    w = result.weights.set_index(["date", "pool"])
    for pool in held:
        days = te[pool].dropna().index
        expected = (w["predicted_apy"] - w["realized_apy"]).xs(pool, level="pool").reindex(days)
        np.testing.assert_allclose(te.loc[days, pool], expected)
        assert len(days) == len(w.xs(pool, level="pool"))
    table = analysis.pool_tracking_table(result, {held[0]: "first"})
    assert table.loc[0, "pool"] == held[0] and table.loc[0, "name"] == "first"
    row = table.set_index("pool").loc[held[1]]
    assert row["days_held"] == len(w.xs(held[1], level="pool"))
    assert row["tracking_rmse"] >= abs(row["tracking_bias"])
    apy = analysis.pool_apy_over_time(panel, held)
    assert list(apy.columns) == held and apy.notna().mean().min() > 0.9


def test_the_rerun_of_a_point_is_the_stored_run(run):
    panel, result, _, point = run
    frame, _ = run_point(panel, VAULT, point)
    stored = bt.result_from_frame(frame, point.name, float(frame["initial_wealth"].iloc[0]))
    pd.testing.assert_series_equal(stored.wealth, result.wealth)


def test_report_page_has_the_analysis_sections(run):
    panel, result, cfg, _ = run
    benches = run_benchmarks(bt.inputs_from_panel(panel, VAULT, cfg.apy_column), VAULT.strategy, cfg)
    part = analysis_sections(
        result,
        {"p": result.steps, **{k: r.steps for k, r in benches.items()}},
        panel,
        cfg.apy_column,
        bt.pool_labels(panel),
        list(benches),
    )
    assert len(part) == 4 and all(len(b64) > 1000 for _, b64, _ in part)
    table = pd.DataFrame([{"grid": "g", "name": "p", "kind": "grid_point", "log_growth": 0.05}])
    page, _ = render_report(
        "t", table, [], {"p": result.wealth}, [], result.weight_panel(), result.steps, {}, [], part
    )
    for text in (
        "Tracking error per pool",
        "Cumulative transaction costs",
        "best APY available",
        "tracking rmse",
        "mean best available apy",
    ):  # column headers for people
        assert text in page
