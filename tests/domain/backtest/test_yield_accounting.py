"""What a vault earns, once: IL inside adjusted_apy only, data gaps kept, empty days in cash, a causal
universe, and the vault's own starting wealth."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.backtest import engine as bt
from midfreq_assets.domain.backtest.benchmarks import run_benchmark
from midfreq_assets.domain.backtest.grids import GridPoint, run_point
from midfreq_assets.domain.backtest.metrics import backtest_metrics
from midfreq_assets.domain.config.vault import load_vault_config
from midfreq_assets.domain.portfolio.strategy import StrategyConfig
from midfreq_assets.domain.yields.adjusted import PoolTokens, adjusted_yield_panel
from midfreq_assets.domain.yields.config import YieldAdjustmentConfig

VAULT = load_vault_config("configs/vaults/usd_lending.yaml")
DAYS = pd.date_range("2024-01-01", periods=60, freq="D", name="date")
FREE = StrategyConfig(cost=0.0, gas_usd=0.0, base_buffer=0.0, concentration_limit=1.0, min_trade_usd=0.0)
NO_PRICES = pd.DataFrame(columns=["date", "coin", "price"])


def il_history() -> pd.DataFrame:
    """A stable LP pool quoting 10%/yr with il7d = 0.001 and a lending pool at 5%/yr, huge TVLs."""
    rows = [
        dict(date=d, pool="lp", apy=0.10, apy_base=0.10, apy_reward=0.0, il7d=0.001, tvl_usd=1e13)
        for d in DAYS
    ]
    rows += [
        dict(date=d, pool="lend", apy=0.05, apy_base=0.05, apy_reward=0.0, il7d=np.nan, tvl_usd=1e13)
        for d in DAYS
    ]
    return pd.DataFrame(rows)


def il_panel(enabled: bool) -> pd.DataFrame:
    hist = il_history()
    tokens = {
        "lp": PoolTokens(underlying_symbols=("usdc", "usdt")),
        "lend": PoolTokens(underlying_symbols=("usdc",)),
    }
    cfg = YieldAdjustmentConfig.model_validate({"impermanent_loss": {"enabled": enabled}})
    adjusted, _ = adjusted_yield_panel(hist, tokens, NO_PRICES, cfg)
    meta = hist[["date", "pool"]].assign(
        project="curve-dex", chain="Ethereum", vaults=[[VAULT.name]] * len(hist)
    )
    return bt.vault_panel(bt.with_adjusted_apy(hist, adjusted), meta, VAULT)


def run(
    panel: pd.DataFrame, column: str, strategy: StrategyConfig = FREE, **cfg: object
) -> bt.BacktestResult:
    inputs = bt.inputs_from_panel(panel, VAULT, column)
    preds = pd.DataFrame({"lp": 0.10, "lend": 0.05}, index=inputs.dates)
    return bt.run_backtest(inputs, preds, strategy, bt.BacktestConfig(apy_column=column, **cfg))


def test_apy_and_adjusted_apy_backtests_differ_by_exactly_the_il_term():
    panel = il_panel(enabled=True)
    assert panel.loc[panel["pool"] == "lp", "il_annual"].eq(-0.001 * 52).all()
    raw, adjusted = run(panel, "apy"), run(panel, "adjusted_apy")
    # same decisions (all in the LP pool), so the whole difference is the IL term, charged once
    pd.testing.assert_series_equal(raw.steps["invested"], adjusted.steps["invested"])
    assert (raw.weights["pool"] == "lp").all() and (adjusted.weights["pool"] == "lp").all()
    years = (DAYS[-1] - DAYS[0]).days / 365
    g_raw = math.log(raw.wealth.iloc[-1] / raw.wealth.iloc[0]) / years
    g_adj = math.log(adjusted.wealth.iloc[-1] / adjusted.wealth.iloc[0]) / years
    assert g_raw - g_adj == pytest.approx(0.001 * 52, rel=1e-9)
    assert g_adj == pytest.approx(0.10 - 0.052, rel=1e-6)  # 4.8%/yr, not 10% - 2 x 5.2%
    np.testing.assert_allclose(
        raw.weights["realized_apy"] - adjusted.weights["realized_apy"], 0.052, rtol=1e-12
    )
    m_raw, m_adj = backtest_metrics(raw), backtest_metrics(adjusted)
    assert m_raw["il_drag"] == 0.0  # the quote: no adjustment at all
    assert m_adj["il_drag"] == pytest.approx(0.052, rel=2e-3)
    assert m_adj["il_data_missing_share"] == 0.0  # il7d present on every held day


def test_il_is_charged_only_when_the_vault_enables_it():
    panel = il_panel(enabled=False)
    assert (panel["adjusted_apy"] == panel["apy"]).all() and (panel["il_annual"] == 0).all()
    raw, adjusted = run(panel, "apy"), run(panel, "adjusted_apy")
    pd.testing.assert_series_equal(raw.wealth, adjusted.wealth)
    assert backtest_metrics(adjusted)["il_drag"] == 0.0


def gap_inputs(
    absent: dict[str, list[int]], ineligible: dict[str, list[int]] | None = None
) -> bt.BacktestInputs:
    """Two pools at 10% and 8% with TVL 1e12; ``absent`` rows (no data) and ``ineligible`` days per pool."""
    apy = pd.DataFrame({"A": 0.10, "B": 0.08}, index=DAYS)
    tvl = apy * 0 + 1e12
    present = apy.notna()
    for pool, rows in absent.items():
        present.iloc[rows, present.columns.get_loc(pool)] = False
    elig = present.copy()
    for pool, rows in (ineligible or {}).items():
        elig.iloc[rows, elig.columns.get_loc(pool)] = False
    apy[~present] = np.nan
    tvl[~present] = np.nan
    return bt.BacktestInputs(apy, tvl, elig, present=present)


def test_short_gap_keeps_the_holding_at_its_last_apy_and_a_long_one_forces_a_sale():
    inputs = gap_inputs({"A": [10, 11, *range(30, 37)]})
    strategy = FREE.model_copy(update={"concentration_limit": 0.5, "max_gap_days": 3})
    preds = pd.DataFrame({"A": 0.10, "B": 0.08}, index=DAYS)
    res = bt.run_backtest(inputs, preds, strategy, bt.BacktestConfig(initial_wealth=1e6))
    s = res.steps.set_index("date")
    # days 10-11: A is absent but kept (no sale, no trade), accruing at its last known 10%/yr
    assert (
        s.loc[DAYS[10] : DAYS[11], "n_held_in_gap"].eq(1).all()
        and s.loc[DAYS[10] : DAYS[11], "forced_sales"].eq(0).all()
    )
    assert s.loc[DAYS[9] : DAYS[12], "invested"].min() == pytest.approx(1.0)
    carried = bt.accrual_panels(inputs, 3)["apy"]
    assert carried[10, 0] == carried[11, 0] == 0.10
    # days 30-32 kept (absent 1..3 days), day 33 is the 4th day: sold
    assert s.loc[DAYS[30] : DAYS[32], "n_held_in_gap"].eq(1).all()
    assert s.loc[DAYS[33], "forced_sales"] == 1 and s.loc[DAYS[33], "n_held"] == 1
    assert backtest_metrics(res)["gap_pool_days"] == 5
    # the benchmark keeps it too instead of sitting idle until its next re-weighting
    bench = run_benchmark("equal_weight", inputs, strategy, bt.BacktestConfig(benchmark_rebalance_days=30))
    b = bench.steps.set_index("date")
    assert b.loc[DAYS[10] : DAYS[11], "invested"].min() == pytest.approx(1.0)
    assert b.loc[DAYS[10] : DAYS[11], "forced_sales"].eq(0).all()


def test_gap_of_a_pool_that_left_the_universe_is_not_kept():
    inputs = gap_inputs({"A": [11, 12]}, ineligible={"A": [10]})  # exit on day 10, then missing
    hold = bt.gap_holds(inputs, 3)
    assert not hold[:, 0].any()


def test_days_without_universe_hold_cash_and_are_counted():
    inputs = gap_inputs({}, ineligible={"A": list(range(20, 25)), "B": list(range(20, 25))})
    preds = pd.DataFrame({"A": 0.10, "B": 0.08}, index=DAYS)
    res = bt.run_backtest(inputs, preds, FREE, bt.BacktestConfig(base_rate=0.02))
    s = res.steps.set_index("date")
    assert (
        s.loc[DAYS[20] : DAYS[24], "invested"].eq(0).all()
        and s.loc[DAYS[20] : DAYS[24], "n_eligible"].eq(0).all()
    )
    cash = s.loc[DAYS[21] : DAYS[23]]
    np.testing.assert_allclose(cash["wealth"] / cash["wealth_start"], math.exp(0.02 / 365))  # the base rate
    assert backtest_metrics(res, 0.02)["empty_universe_days"] == 5
    assert s.loc[DAYS[25], "invested"] == pytest.approx(1.0)  # back in when the universe is
    # a panel whose whole universe is empty on some days, and one that never has one
    empty = bt.BacktestInputs(
        inputs.apy * np.nan, inputs.tvl, inputs.eligible & False, present=inputs.present & False
    )
    nothing = bt.run_backtest(empty, preds, FREE, bt.BacktestConfig(base_rate=0.02))
    assert nothing.steps["invested"].eq(0).all() and nothing.wealth.iloc[-1] > nothing.wealth.iloc[0]


def test_the_optimizer_only_sees_pools_known_at_t():
    """A pool that enters the universe on day 30 changes nothing before day 30, bit for bit, even
    with the interior-point solver (forced here: cvxpy's answer depends on the problem's size, so an
    optimizer over every pool of the whole panel would differ)."""
    strategy = StrategyConfig(
        cost=0.001, concentration_limit=0.4, max_turnover=0.3, base_buffer=0.05, use_fast_path=False
    )
    rng = np.random.default_rng(1)
    apy = pd.DataFrame(0.05 + 0.02 * rng.random((len(DAYS), 4)), index=DAYS, columns=list("ABCD"))
    tvl = apy * 0 + 5e7
    elig = apy.notna()
    base = bt.BacktestInputs(apy[list("ABC")], tvl[list("ABC")], elig[list("ABC")])
    elig.loc[: DAYS[29], "D"] = False
    later = bt.BacktestInputs(apy, tvl, elig)
    preds = apy.shift(1)
    r0 = bt.run_backtest(base, preds, strategy)
    r1 = bt.run_backtest(later, preds, strategy)
    before = r0.steps["date"] < DAYS[30]
    assert (r0.steps.loc[before, "solver"] != "exact_separable").all()
    cols = ["wealth", "turnover", "predicted_apy", "cost_usd", "invested"]
    pd.testing.assert_frame_equal(r0.steps.loc[before, cols], r1.steps.loc[before, cols], check_exact=True)
    assert r1.weight_panel().loc[DAYS[30] :, "D"].max() > 0  # and it is used once it exists


def test_backtest_starts_from_the_vaults_configured_wealth(synthetic_history):
    vault = VAULT.model_copy(
        update={"backtest": VAULT.backtest.model_copy(update={"initial_wealth": 250_000.0})}
    )
    hist = synthetic_history(days=45)
    panel = bt.vault_panel(hist, None, vault)
    frame, metrics = run_point(panel, vault, GridPoint("p", (("strategy.cost", 0.001),), "g"))
    assert frame["initial_wealth"].iloc[0] == 250_000.0 and frame["wealth_start"].iloc[0] == 250_000.0
    assert metrics["final_wealth"] > 240_000


def test_missing_earned_column_is_a_clear_error(synthetic_history):
    hist = synthetic_history(days=20).drop(columns="adjusted_apy")
    with pytest.raises(KeyError, match="adjusted_apy comes from <vault>/adjusted_yields"):
        bt.BacktestInputs.from_long(hist, VAULT)


def test_price_exposed_lp_is_accounted_with_price_pnl_il_drag_and_missing_il_share():
    """A WETH/USDC pool in a USD vault (allow_price_exposure): its value follows half the WETH move,
    IL is charged from il7d on the first half and estimated from prices on the second, and the
    report says how many held pool-days had no il7d."""
    rng = np.random.default_rng(11)
    weth = 3000 * np.exp(np.cumsum(np.r_[0.0, rng.normal(0.0, 0.03, len(DAYS) - 1)]))
    il7d = np.where(np.arange(len(DAYS)) < 30, 0.002, np.nan)
    hist = pd.DataFrame(
        {
            "date": DAYS,
            "pool": "lp",
            "apy": 0.25,
            "apy_base": 0.25,
            "apy_reward": 0.0,
            "il7d": il7d,
            "tvl_usd": 1e13,
        }
    )
    prices = pd.DataFrame({"date": DAYS, "coin": "ethereum:0xweth", "price": weth})
    cfg = YieldAdjustmentConfig.model_validate({"tokens": {"weth": {"coin": "ethereum:0xweth", "peg": None}}})
    from midfreq_assets.domain.yields.exposure import ReferencePricing

    ref = ReferencePricing("usd", None, frozenset({"usdc"}))
    tokens = {"lp": PoolTokens(underlying_symbols=("weth", "usdc"), project="uniswap-v3")}
    adjusted, _ = adjusted_yield_panel(hist, tokens, prices, cfg, reference=ref)
    meta = hist[["date", "pool"]].assign(
        project="uniswap-v3", chain="Ethereum", vaults=[[VAULT.name]] * len(hist)
    )
    panel = bt.vault_panel(bt.with_adjusted_apy(hist, adjusted), meta, VAULT)
    inputs = bt.inputs_from_panel(panel, VAULT)
    res = bt.run_backtest(inputs, pd.DataFrame({"lp": 0.2}, index=inputs.dates), FREE)
    m = backtest_metrics(res)
    years = (DAYS[-1] - DAYS[0]).days / 365
    # fully invested every day: the price P&L is the basket's move, the wealth path its product
    basket = np.log(0.5 * weth[1:] / weth[:-1] + 0.5)
    assert res.steps["price_pnl_usd"].sum() == pytest.approx(
        (res.steps["wealth"] - res.steps["wealth"] / np.exp(basket)).sum(), rel=1e-9
    )
    assert m["price_pnl"] == pytest.approx(
        res.steps["price_pnl_usd"].sum() / res.steps["wealth_start"].mean() / years
    )
    assert m["il_drag"] > 0.0
    assert m["il_data_missing_share"] == pytest.approx(30 / 59)  # 59 accruals, into days 30..59 without il7d
    estimated = adjusted.set_index("date")["il_annual"].iloc[30:]
    assert (estimated <= 0).all() and (estimated < 0).any()
