"""Backtest accounting on hand-computed 2-pool cases, no look-ahead, benchmarks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.backtest import engine as bt
from midfreq_assets.domain.backtest.benchmarks import run_benchmark, run_benchmarks
from midfreq_assets.domain.backtest.config import BENCHMARKS
from midfreq_assets.domain.config.vault import load_vault_config
from midfreq_assets.domain.portfolio.costs import TradingCosts
from midfreq_assets.domain.portfolio.optimizer import VaultOptimizer
from midfreq_assets.domain.portfolio.step import accrue_step, rebalance_step, target_step
from midfreq_assets.domain.portfolio.strategy import StrategyConfig

VAULT = load_vault_config("configs/vaults/usd_lending.yaml")
DAYS = pd.date_range("2024-01-01", periods=3, freq="D", name="date")


def two_pool_inputs(apy: list[list[float]], tvl: float = 1e7) -> bt.BacktestInputs:
    frame = pd.DataFrame(apy, index=DAYS[: len(apy)], columns=["A", "B"])
    return bt.BacktestInputs(frame, frame * 0 + tvl, frame.notna())


def test_trade_costs_gas_and_accrual_with_dilution_hand_computed():
    strategy = StrategyConfig(cost=0.001, gas_usd=5.0, concentration_limit=0.5, base_buffer=0.0)
    inputs = two_pool_inputs([[0.10, 0.05], [0.20, 0.04], [0.10, 0.05]])
    preds = inputs.apy.copy()
    res = bt.run_backtest(inputs, preds, strategy, bt.BacktestConfig(initial_wealth=1e6))
    s = res.steps
    # day 0: buy 500k of each; cost 0.1% of 1M traded, gas 2 x 5
    assert s.loc[0, "n_trades"] == 2
    assert s.loc[0, "cost_usd"] == pytest.approx(1000.0)
    assert s.loc[0, "gas_usd"] == pytest.approx(10.0)
    dt = 1 / 365
    dil = 1 / (1 + 5e5 / 1e7)
    w1 = 5e5 * math.exp(0.20 * dil * dt) + 5e5 * math.exp(0.04 * dil * dt) - 1010.0
    assert s.loc[0, "wealth"] == pytest.approx(w1, rel=1e-12)
    assert s.loc[0, "dilution"] == pytest.approx(dil)
    realized = math.log((w1 + 1010.0) / 1e6) / dt
    assert s.loc[0, "realized_apy"] == pytest.approx(realized)
    assert s.loc[0, "predicted_apy"] == pytest.approx(0.5 * 0.10 * dil + 0.5 * 0.05 * dil)
    assert res.wealth.iloc[0] == 1e6 and res.wealth.index[-1] == DAYS[-1]
    assert set(res.weights["pool"]) == {"A", "B"}


def test_target_step_and_accrue_step_formulas():
    dec = target_step(
        ("A", "B"),
        np.array([0.6, 0.0]),
        np.array([1e6, 1e6]),
        1000.0,
        np.array([200.0, 300.0]),
        costs=TradingCosts(cost=0.01, gas_usd=1.0),
        base=500.0,
    )
    assert dec.wealth_before == 1000.0
    np.testing.assert_allclose(dec.trades_usd, [400.0, -300.0])
    assert dec.cost_usd == pytest.approx(7.0) and dec.gas_usd == 2.0 and dec.n_trades == 2
    assert dec.base_after == pytest.approx(1000.0 - 600.0 - 9.0)
    # earned 0.365 of which 0.1 undiluted (underlying/peg) and IL -0.05 inside it; the legs moved +1%
    acc = accrue_step(
        np.array([100.0, 50.0]),
        10.0,
        np.array([0.365, np.nan]),
        np.array([100.0, 50.0]),
        0.01,
        undiluted_next=np.array([0.1 - 0.05, 0.0]),
        il_next=np.array([-0.05, 0.0]),
        price_return_next=np.array([math.log(1.01), 0.0]),
        base_rate=0.1,
    )
    rate = (0.365 - 0.05) * 0.5 + 0.05  # dilutor 1 / (1 + 100 / 100) on the pool-paid part only
    assert acc.holdings[0] == pytest.approx(100 * math.exp(rate * 0.01) * 1.01)
    assert acc.il_usd == pytest.approx(100 * (math.exp((rate + 0.05) * 0.01) - math.exp(rate * 0.01)))
    assert acc.price_pnl_usd == pytest.approx(100 * math.exp(rate * 0.01) * 0.01)
    assert acc.holdings[1] == 50.0 and acc.missing_apy == 1  # no APY: marked at value
    assert acc.base == pytest.approx(10 * math.exp(0.001))


def test_pool_leaving_universe_is_sold():
    strategy = StrategyConfig(cost=0.0, concentration_limit=0.5)
    opt = VaultOptimizer(["A", "B"], strategy)
    dec = rebalance_step(
        opt,
        np.array([0.1, 0.1]),
        np.array([1e9, 1e9]),
        1000.0,
        np.array([500.0, 500.0]),
        costs=opt.costs,
        eligible=np.array([True, False]),
        base=0.0,
    )
    assert dec.holdings_after[1] == 0.0 and dec.n_forced_sales == 1
    dec = rebalance_step(
        opt,
        np.array([0.1, np.nan]),
        np.array([1e9, 1e9]),
        1000.0,
        np.array([500.0, 500.0]),
        costs=opt.costs,
        base=0.0,
    )
    assert dec.holdings_after[1] == 0.0


@pytest.mark.parametrize("estimator", ["ewm_predictor", "ridge", None])  # None: selected by CV at each refit
def test_no_look_ahead_perturbing_the_future_keeps_the_past(estimator, synthetic_history):
    hist = synthetic_history(days=150)
    cut = pd.Timestamp("2024-06-06") + pd.Timedelta(days=125)
    future = hist["date"] >= cut
    bumped = hist.copy()
    bumped.loc[future, ["apy", "adjusted_apy"]] *= 3.0
    bumped.loc[future, "tvl_usd"] *= 0.1
    cfg = bt.BacktestConfig(estimator=estimator)
    out = []
    for h in (hist, bumped):
        inputs = bt.BacktestInputs.from_long(h, VAULT)
        res, preds = bt.run_vault_backtest(h, inputs, VAULT, cfg)
        out.append((res, preds))
    (r0, p0), (r1, p1) = out
    pd.testing.assert_frame_equal(p0.loc[: cut - pd.Timedelta(days=1)], p1.loc[: cut - pd.Timedelta(days=1)])
    past = r0.steps["date"] < cut
    cols = ["wealth_start", "cost_usd", "gas_usd", "turnover", "predicted_apy", "n_held"]
    pd.testing.assert_frame_equal(r0.steps.loc[past, cols], r1.steps.loc[past, cols])
    assert not np.allclose(r0.wealth.iloc[-1], r1.wealth.iloc[-1])  # the future did change
    assert r0.steps["invested"].max() > 0.5


def test_benchmarks_use_same_accounting():
    inputs = two_pool_inputs([[0.10, 0.05], [0.10, 0.05], [0.10, 0.05]], tvl=1e15)
    strategy = StrategyConfig(cost=0.0, gas_usd=0.0)
    cfg = bt.BacktestConfig(
        initial_wealth=1000.0,
        trailing_days=1,
        benchmark_rebalance_days=30,
        top_k=2,
        unconstrained_benchmarks=list(BENCHMARKS),
    )  # buy and hold
    res = run_benchmarks(inputs, strategy, cfg)
    assert set(res) == set(BENCHMARKS) | {f"{k}_unconstrained" for k in BENCHMARKS}
    growth = {k: math.log(r.wealth.iloc[-1] / 1000.0) / (2 / 365) for k, r in res.items()}
    both = math.log(0.5 * math.exp(0.1 * 2 / 365) + 0.5 * math.exp(0.05 * 2 / 365)) / (2 / 365)
    assert growth["equal_weight"] == pytest.approx(both)
    assert growth["top_k_trailing"] == pytest.approx(both)  # k = 2: both pools, equal weight
    for kind in ("best_trailing_apy", "best_trailing_hysteresis", "incumbent"):
        assert growth[kind] == pytest.approx(0.10)
    assert growth["tvl_weighted"] == pytest.approx(growth["equal_weight"])
    for kind in BENCHMARKS:  # no limits to bind: same answer
        assert growth[f"{kind}_unconstrained"] == pytest.approx(growth[kind])
    with pytest.raises(ValueError, match="unknown benchmark"):
        run_benchmark("nope", inputs, strategy)


def test_stored_frame_round_trip(synthetic_history):
    hist = synthetic_history(days=100)  # models are refit from day 60 (longest horizon + min_train)
    panel = bt.vault_panel(hist, None, VAULT)
    res, _ = bt.run_vault_backtest(panel, bt.inputs_from_panel(panel, VAULT), VAULT)
    assert len(res.weights)
    back = bt.result_from_frame(bt.result_frame(res), "x", res.initial_wealth)
    pd.testing.assert_series_equal(back.wealth, res.wealth.rename("x"))
    pd.testing.assert_frame_equal(back.weight_panel(), res.weight_panel(), check_names=False)


def test_backtest_can_earn_adjusted_yields(synthetic_history):
    hist = synthetic_history(days=120)  # invested from the first refit (day 60)
    adjusted = hist[["date", "pool"]].assign(adjusted_apy=hist["apy"] - 0.02)  # e.g. a reward haircut
    merged = bt.with_adjusted_apy(hist, adjusted)
    assert (merged["apy"] - merged["adjusted_apy"]).round(12).eq(0.02).all()
    assert bt.with_adjusted_apy(hist, pd.DataFrame()) is hist
    growth = {}
    for column in ("apy", "adjusted_apy"):
        cfg = bt.BacktestConfig(apy_column=column)
        inputs = bt.BacktestInputs.from_long(merged, VAULT, apy_column=column)
        res, _ = bt.run_vault_backtest(merged, inputs, VAULT, cfg)
        growth[column] = math.log(res.wealth.iloc[-1] / res.wealth.iloc[0])
    assert growth["adjusted_apy"] < growth["apy"] - 0.5 * 0.02 * 59 / 365  # 60 invested days of the 120
