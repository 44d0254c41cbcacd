"""Benchmarks face the strategy's own limits and costs (per grid point), unconstrained ones say so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.backtest import engine as bt
from midfreq_assets.domain.backtest.benchmarks import benchmark_sets, run_benchmark, run_benchmark_sets
from midfreq_assets.domain.backtest.grids import Grid
from midfreq_assets.domain.config.vault import load_vault_config
from midfreq_assets.domain.portfolio.strategy import StrategyConfig

VAULT = load_vault_config("configs/vaults/usd_lending.yaml")
DAYS = pd.date_range("2024-03-01", periods=40, freq="D", name="date")
POOLS = [f"p{i}" for i in range(6)]
TOL = 1e-7


def inputs() -> bt.BacktestInputs:
    apy = pd.DataFrame([[0.12, 0.09, 0.08, 0.07, 0.06, 0.05]] * len(DAYS), index=DAYS, columns=POOLS)
    tvl = pd.DataFrame([[4e6, 1e8, 1e8, 5e7, 5e7, 2e8]] * len(DAYS), index=DAYS, columns=POOLS)
    protocols = pd.Series(["euler-v2", "euler-v2", "aave-v3", "aave-v3", "morpho-blue", "morpho-blue"], index=POOLS)
    return bt.BacktestInputs(apy, tvl, apy.notna(), protocols=protocols,
                             chains=pd.Series("Ethereum", index=POOLS))


STRATEGY = StrategyConfig(cost=0.0005, gas_usd=5.0, base_buffer=0.02, concentration_limit=0.25,
                          protocol_caps={"euler-v2": 0.3}, max_pool_tvl_share=0.05, min_trade_usd=1000)


@pytest.mark.parametrize("kind", ["equal_weight", "best_trailing_apy", "tvl_weighted"])
def test_constrained_benchmarks_respect_every_limit_of_the_vault(kind):
    cfg = bt.BacktestConfig(initial_wealth=1e6)
    res = run_benchmark(kind, inputs(), STRATEGY, cfg)
    w = res.weight_panel().reindex(columns=POOLS).fillna(0.0)
    wealth = res.steps.set_index("date")["wealth_start"].reindex(w.index)
    assert (w.max(axis=1) <= 0.25 + TOL).all()
    assert (w[["p0", "p1"]].sum(axis=1) <= 0.3 + TOL).all()  # euler-v2 cap
    assert (w["p0"] * wealth <= 0.05 * 4e6 * (1 + 1e-6)).all()  # TVL share of the small pool
    assert (w.sum(axis=1) <= 0.98 + TOL).all()
    assert res.steps["cost_usd"].sum() > 0 and res.steps["gas_usd"].sum() > 0  # same costs as the strategy


def test_unconstrained_variant_is_what_the_old_benchmark_did():
    res = run_benchmark("best_trailing_apy", inputs(), STRATEGY, bt.BacktestConfig(), constrained=False)
    w = res.weight_panel()
    assert res.name == "best_trailing_apy_unconstrained"
    assert w.iloc[0]["p0"] == pytest.approx(0.98)  # everything but the buffer in one pool


def test_benchmarks_trade_at_the_strategy_cadence_by_default():
    every7 = bt.BacktestConfig(rebalance_every_days=7)
    assert every7.benchmark_every_days == 7
    assert bt.BacktestConfig(rebalance_every_days=7, benchmark_rebalance_days=30).benchmark_every_days == 30
    res = run_benchmark("equal_weight", inputs(), STRATEGY.model_copy(update={"gas_usd": 0.0, "min_trade_usd": 0.0}),
                        every7)
    traded = res.steps.loc[res.steps["n_trades"] > 0, "date"]
    assert set(((traded - DAYS[0]).dt.days % 7).unique()) == {0}


def test_each_grid_point_gets_benchmarks_under_its_own_overrides():
    grid = Grid("g", None, {"strategy.cost": [0.0005, 0.003], "models.apy.ewm_predictor.halflife": ["3d", "14d"],
                            "backtest.rebalance_every_days": [7]})
    points = grid.points()
    sets = benchmark_sets(VAULT, points)
    assert sorted(s.suffix for s in sets) == ["@cost-0.0005", "@cost-0.003"]  # halflife changes no benchmark
    for s in sets:
        assert len(s.points) == 2 and s.config.rebalance_every_days == 7
        assert all(f"cost-{s.vault.strategy.cost:g}" in p for p in s.points)
    one = benchmark_sets(VAULT, Grid("h", None, {"models.apy.ewm_predictor.halflife": ["3d", "14d"]}).points())
    assert [s.suffix for s in one] == [""]
    hist = pd.DataFrame([dict(date=d, pool=p, apy=a, adjusted_apy=a, tvl_usd=1e8)
                         for d in DAYS for p, a in zip(POOLS, np.linspace(0.12, 0.05, 6), strict=True)])
    meta = hist[["date", "pool"]].assign(project="aave-v3", chain="Ethereum", vaults=[[VAULT.name]] * len(hist))
    panel = bt.vault_panel(hist, meta, VAULT)
    results = run_benchmark_sets(panel, sets)
    assert {"equal_weight@cost-0.0005", "equal_weight_unconstrained@cost-0.003"} <= set(results)
    for cost in (0.0005, 0.003):  # day one buys 98% of the wealth at the point's own cost
        first = results[f"equal_weight@cost-{cost:g}"][0].steps.iloc[0]
        assert first["cost_usd"] == pytest.approx(cost * 0.98 * VAULT.backtest.initial_wealth)
