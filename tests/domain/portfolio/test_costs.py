"""One cost definition: what the optimizer weighs is what the executed trade pays."""

import numpy as np
import pytest

from midfreq_assets.domain.portfolio.costs import TradingCosts
from midfreq_assets.domain.portfolio.optimizer import VaultOptimizer
from midfreq_assets.domain.portfolio.step import rebalance_step
from midfreq_assets.domain.portfolio.strategy import StrategyConfig


def test_strategy_costs_feed_optimizer_and_trade():
    strategy = StrategyConfig(cost=0.002, gas_usd=3.0, horizon_days=20, concentration_limit=0.5)
    costs = strategy.costs()
    assert costs == TradingCosts(
        cost=0.002, gas_usd=3.0, horizon_days=20, gas_multiple=2.0, min_trade_usd=0.0
    )
    assert costs.amortized() == pytest.approx(0.002 * 365 / 20) == strategy.amortized_cost()
    opt = VaultOptimizer(["a", "b"], strategy, costs=costs)
    assert opt.costs is costs
    dec = rebalance_step(
        opt, np.array([0.10, 0.08]), np.array([1e9, 1e9]), 1e6, np.zeros(2), costs=opt.costs, base=1e6
    )
    assert dec.cost_usd == pytest.approx(0.002 * np.abs(dec.trades_usd).sum())
    assert dec.gas_usd == pytest.approx(3.0 * dec.n_trades)


def test_a_costlier_definition_changes_the_decision_and_the_bill_together():
    strategy = StrategyConfig(cost=0.0, concentration_limit=1.0)
    x0 = np.array([0.0, 0.9])  # holding the second pool; the first pays a little more
    apy, tvl, wealth = np.array([0.051, 0.05]), np.array([1e12, 1e12]), 1e6
    cheap = VaultOptimizer(["a", "b"], strategy, costs=TradingCosts(cost=0.0))
    dear = VaultOptimizer(["a", "b"], strategy, costs=TradingCosts(cost=0.01, horizon_days=30))
    moved = rebalance_step(cheap, apy, tvl, wealth, x0 * wealth, costs=cheap.costs)
    stayed = rebalance_step(dear, apy, tvl, wealth, x0 * wealth, costs=dear.costs)
    assert moved.n_trades > 0 and moved.cost_usd == 0.0  # switching is free: it switches
    assert stayed.n_trades == 0 and stayed.cost_usd == 0.0  # 1% per trade over 30 days is not worth 0.1%/yr
