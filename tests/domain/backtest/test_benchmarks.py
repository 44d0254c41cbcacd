"""Benchmark rules through the project's accounting: every limit of the vault on every day, fully
invested where the caps allow, each rule as documented on small hand-made panels, per grid point."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.backtest import engine as bt
from midfreq_assets.domain.backtest.benchmarks import (
    benchmark_sets,
    run_benchmark,
    run_benchmark_sets,
    run_benchmarks,
    trailing_apy,
)
from midfreq_assets.domain.backtest.config import BENCHMARKS
from midfreq_assets.domain.backtest.grids import Grid
from midfreq_assets.domain.config.vault import load_vault_config
from midfreq_assets.domain.portfolio.nightly import weight_violations
from midfreq_assets.domain.portfolio.strategy import StrategyConfig

VAULT = load_vault_config("configs/vaults/usd_lending.yaml")
DAYS = pd.date_range("2024-03-01", periods=40, freq="D", name="date")
POOLS = [f"p{i}" for i in range(6)]
TOL = 1e-7


def inputs() -> bt.BacktestInputs:
    apy = pd.DataFrame([[0.12, 0.09, 0.08, 0.07, 0.06, 0.05]] * len(DAYS), index=DAYS, columns=POOLS)
    tvl = pd.DataFrame([[4e6, 1e8, 1e8, 5e7, 5e7, 2e8]] * len(DAYS), index=DAYS, columns=POOLS)
    protocols = pd.Series(
        ["euler-v2", "euler-v2", "aave-v3", "aave-v3", "morpho-blue", "morpho-blue"], index=POOLS
    )
    return bt.BacktestInputs(
        apy, tvl, apy.notna(), protocols=protocols, chains=pd.Series("Ethereum", index=POOLS)
    )


STRATEGY = StrategyConfig(
    cost=0.0005,
    gas_usd=5.0,
    base_buffer=0.02,
    concentration_limit=0.25,
    protocol_caps={"euler-v2": 0.3},
    max_pool_tvl_share=0.05,
    min_trade_usd=1000,
)


def random_inputs(seed: int, days: int = 30) -> tuple[bt.BacktestInputs, StrategyConfig]:
    """A random universe: yields drifting, TVLs from 1e5 to 1e9 (the TVL share binds on some), pools
    entering and leaving, data gaps, random caps."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 25))
    dates = pd.date_range("2024-01-01", periods=days, freq="D", name="date")
    pools = [f"q{i}" for i in range(n)]
    apy = pd.DataFrame(
        rng.uniform(0.0, 0.12, n) + rng.normal(0, 0.01, (days, n)).cumsum(axis=0) * 0.3,
        index=dates,
        columns=pools,
    )
    tvl = pd.DataFrame(
        10 ** rng.uniform(5, 9, n) * np.exp(rng.normal(0, 0.05, (days, n)).cumsum(axis=0)),
        index=dates,
        columns=pools,
    )
    eligible = pd.DataFrame(rng.random((days, n)) < 0.9, index=dates, columns=pools)
    apy = apy.mask(rng.random((days, n)) < 0.05)  # missing rows: holdings there are kept up to max_gap_days
    protocols = pd.Series(rng.choice(["aave-v3", "morpho-blue", "euler-v2"], n), index=pools)
    strategy = StrategyConfig(
        cost=0.0005,
        gas_usd=float(rng.choice([0.0, 5.0])),
        min_trade_usd=float(rng.choice([0, 1000])),
        base_buffer=float(rng.choice([0.0, 0.02, 0.1])),
        concentration_limit=float(rng.uniform(0.1, 0.5)),
        max_pool_tvl_share=float(rng.choice([0.01, 0.05])),
        protocol_caps={"euler-v2": float(rng.uniform(0.1, 0.4)), "aave-v3": float(rng.uniform(0.2, 0.8))},
    )
    return bt.BacktestInputs(
        apy, tvl, eligible, protocols=protocols, chains=pd.Series("Ethereum", index=pools)
    ), strategy


def weights_and_gaps(res: bt.BacktestResult, inp: bt.BacktestInputs, strategy: StrategyConfig):
    """(weights, held in a data gap) per decision day x pool: a holding kept through a gap is not a
    decision (it cannot be traded without data), as the nightly check says."""
    days = pd.DatetimeIndex(res.steps["date"])
    w = res.weight_panel().reindex(index=days, columns=inp.pools).fillna(0.0)
    gap = pd.DataFrame(bt.gap_holds(inp, strategy.max_gap_days), index=inp.dates, columns=inp.pools)
    return w, gap.reindex(days).fillna(False).astype(bool) & (w > 0)


def daily_rows(w: pd.DataFrame, gap: pd.DataFrame) -> pd.DataFrame:
    """The benchmark's days as ``rebalance_weights`` rows (what ``weight_violations`` checks)."""
    long = w.stack().rename("target_weight").reset_index()
    long.columns = ["date", "pool", "target_weight"]
    return long.assign(in_gap=gap.stack().to_numpy())


def assert_every_limit(res: bt.BacktestResult, inp: bt.BacktestInputs, strategy: StrategyConfig) -> None:
    """Every decision (daily here) within the vault's limits: ``weight_violations`` (concentration,
    budget: the nightly check), the protocol caps and the TVL share at the day's wealth. Holdings kept
    through a data gap fill a cap first; the decided weights may use only the room they leave."""
    w, gap = weights_and_gaps(res, inp, strategy)
    bad = weight_violations(daily_rows(w, gap), SimpleNamespace(strategy=strategy))
    assert bad.empty, bad.head()
    wealth = res.steps.set_index("date")["wealth_start"].reindex(w.index)
    decided = w.where(~gap, 0.0)
    for protocol, cap in strategy.protocol_caps.items():
        members = inp.protocols[inp.protocols == protocol].index
        kept = (w - decided)[members].sum(axis=1)
        over = decided[members].sum(axis=1) > (cap - kept).clip(lower=0.0) + TOL
        assert not over.any(), protocol
    if strategy.max_pool_tvl_share is not None:
        cap = strategy.max_pool_tvl_share * inp.tvl.reindex(w.index) * (1 + 1e-6) + 1e-6
        assert not (decided.mul(wealth, axis=0) > cap).to_numpy().any()


@pytest.mark.parametrize("kind", BENCHMARKS)
def test_constrained_benchmarks_respect_every_limit_of_the_vault(kind):
    cfg = bt.BacktestConfig(initial_wealth=1e6)
    res = run_benchmark(kind, inputs(), STRATEGY, cfg)
    assert_every_limit(res, inputs(), STRATEGY)
    assert res.steps["cost_usd"].sum() > 0 and res.steps["gas_usd"].sum() > 0  # same costs as the strategy


@pytest.mark.parametrize("seed", range(8))
def test_every_benchmark_day_satisfies_every_limit_on_random_universes(seed):
    inp, strategy = random_inputs(seed)
    cfg = bt.BacktestConfig(initial_wealth=float(np.random.default_rng(seed).choice([1e5, 1e7])))
    for kind in BENCHMARKS:
        assert_every_limit(run_benchmark(kind, inp, strategy, cfg), inp, strategy)


@pytest.mark.parametrize("kind", BENCHMARKS)
def test_fully_invested_where_the_caps_allow(kind):
    """Six pools, caps that leave room for 0.98: every decision day invests 1 - base_buffer (the old
    projected best-trailing benchmark held 0.25 and 0.75 idle)."""
    cfg = bt.BacktestConfig(initial_wealth=1e6, benchmark_rebalance_days=5)
    # no gas / minimum trade: topping up a drifted book by a few dollars would rightly be pruned
    res = run_benchmark(
        kind, inputs(), STRATEGY.model_copy(update={"gas_usd": 0.0, "min_trade_usd": 0.0}), cfg
    )
    decided = res.steps.iloc[::5]
    np.testing.assert_allclose(decided["invested"], 0.98, atol=1e-9)
    assert res.steps["invested"].mean() >= 0.98 - 1e-9


def test_rank_and_fill_on_a_hand_made_panel():
    """Pools in trailing order, each to its tightest limit: p0 (12%) at its TVL share (0.05 x 4e6 / 1e6
    = 0.2), p1 (9%) at what the euler-v2 cap leaves (0.1), then p2 and p3 at 0.25 and the rest in p4."""
    res = run_benchmark("best_trailing_apy", inputs(), STRATEGY, bt.BacktestConfig(initial_wealth=1e6))
    first = res.weight_panel().iloc[0].reindex(POOLS).fillna(0.0)
    np.testing.assert_allclose(first, [0.2, 0.1, 0.25, 0.25, 0.18, 0.0], atol=1e-9)


def test_equal_and_tvl_weight_pass_what_a_cap_clips_to_the_others():
    res = run_benchmark("equal_weight", inputs(), STRATEGY, bt.BacktestConfig(initial_wealth=1e7))
    first = res.weight_panel().iloc[0].reindex(POOLS).fillna(0.0)
    # at 1e7 the TVL share caps p0 at 0.05 x 4e6 / 1e7 = 0.02; the other five share 0.96 equally
    np.testing.assert_allclose(first, [0.02] + [0.192] * 5, atol=1e-9)
    res = run_benchmark("tvl_weighted", inputs(), STRATEGY, bt.BacktestConfig(initial_wealth=1e6))
    first = res.weight_panel().iloc[0].reindex(POOLS).fillna(0.0)
    assert first.sum() == pytest.approx(0.98)
    assert first["p5"] == pytest.approx(0.25)  # TVL weight 2e8 / 5.04e8 of 0.98 = 0.39, capped at 0.25
    free = first[["p1", "p2", "p3", "p4"]] / np.array([1e8, 1e8, 5e7, 5e7])
    np.testing.assert_allclose(free, free.iloc[0], rtol=1e-9)  # the rest in TVL proportion


def moving_panel(apy_rows: dict[str, list[float]], days: int = 20) -> bt.BacktestInputs:
    """Pools with yields switching at given days: ``{pool: [(from_day, apy), ...]}`` flattened."""
    dates = pd.date_range("2024-01-01", periods=days, freq="D", name="date")
    apy = pd.DataFrame({p: v for p, v in apy_rows.items()}, index=dates)
    return bt.BacktestInputs(apy, apy * 0 + 1e12, apy.notna())


def test_hysteresis_switches_only_when_the_gain_over_the_horizon_beats_the_cost():
    # A pays 5%; from day 5 B pays 5% + gap. cost 0.1%, horizon 30 days: a switch must gain > 2 x 0.001 / (30/365)
    s = StrategyConfig(cost=0.001, horizon_days=30, concentration_limit=1.0)
    cfg = bt.BacktestConfig(initial_wealth=1e6, trailing_days=1)
    for gap, switches in ((0.02, False), (0.03, True)):
        panel = moving_panel({"A": [0.05] * 20, "B": [0.01] * 5 + [0.05 + gap] * 15})
        hyst = (
            run_benchmark("best_trailing_hysteresis", panel, s, cfg)
            .weight_panel()
            .reindex(columns=["A", "B"])
        )
        hyst = hyst.fillna(0.0)
        assert hyst.iloc[-1]["B"] == pytest.approx(1.0 if switches else 0.0, abs=1e-9)
        plain = run_benchmark("best_trailing_apy", panel, s, cfg).weight_panel().reindex(columns=["A", "B"])
        assert plain.iloc[-1]["B"] == pytest.approx(1.0)  # rank-and-fill always chases the best


def test_top_k_trailing_holds_the_k_best_in_equal_weight():
    panel = moving_panel({"A": [0.09] * 20, "B": [0.08] * 20, "C": [0.07] * 20, "D": [0.02] * 20})
    s = StrategyConfig(concentration_limit=1.0)
    res = run_benchmark("top_k_trailing", panel, s, bt.BacktestConfig(initial_wealth=1e6, top_k=2))
    np.testing.assert_allclose(res.weight_panel().iloc[0].reindex(list("ABCD")).fillna(0.0), [0.5, 0.5, 0, 0])
    s = StrategyConfig(concentration_limit=0.4)  # clipped at 0.4 each: the 0.2 left goes to the next (C)
    res = run_benchmark("top_k_trailing", panel, s, bt.BacktestConfig(initial_wealth=1e6, top_k=2))
    np.testing.assert_allclose(
        res.weight_panel().iloc[0].reindex(list("ABCD")).fillna(0.0), [0.4, 0.4, 0.2, 0]
    )


def test_incumbent_holds_the_first_allocation_and_redeploys_what_leaves_the_universe():
    """Day 0: A and B (the best two, tied, 0.5 each). From day 3 C pays most: the incumbent does not
    chase it. B leaves the universe on day 10: sold, and its money goes to the rule's next choice, C."""
    panel = moving_panel({"A": [0.05] * 20, "B": [0.05] * 20, "C": [0.01] * 3 + [0.12] * 17})
    elig = panel.eligible.copy()
    elig.loc[elig.index[10] :, "B"] = False
    panel = bt.BacktestInputs(panel.apy, panel.tvl, elig)
    s = StrategyConfig(cost=0.0, concentration_limit=0.5)  # A and B grow alike: their weights stay 0.5
    w = run_benchmark("incumbent", panel, s, bt.BacktestConfig(initial_wealth=1e6)).weight_panel()
    w = w.reindex(columns=list("ABC")).fillna(0.0)
    np.testing.assert_allclose(w.iloc[0], [0.5, 0.5, 0.0])
    assert (w.iloc[1:10]["C"] == 0).all() and np.allclose(w.iloc[1:10]["B"], 0.5)  # no chasing
    assert w.iloc[10]["B"] == 0 and w.iloc[10]["C"] == pytest.approx(0.5)
    assert w.iloc[10]["A"] == pytest.approx(w.iloc[9]["A"], rel=1e-12)  # A untouched
    chaser = run_benchmark(
        "best_trailing_apy", panel, s, bt.BacktestConfig(initial_wealth=1e6)
    ).weight_panel()
    assert chaser.reindex(columns=list("ABC")).fillna(0.0).iloc[5]["C"] == pytest.approx(0.5)


def test_unconstrained_variant_is_the_whole_budget_in_the_best_pool_and_labelled():
    res = run_benchmark("best_trailing_apy", inputs(), STRATEGY, bt.BacktestConfig(), constrained=False)
    w = res.weight_panel()
    assert res.name == "best_trailing_apy_unconstrained"
    assert w.iloc[0]["p0"] == pytest.approx(0.98)  # everything but the buffer in one pool
    names = set(run_benchmarks(inputs(), STRATEGY, bt.BacktestConfig()))
    assert names == set(BENCHMARKS) | {"best_trailing_apy_unconstrained"}


def test_trailing_apy_is_known_at_t():
    panel = moving_panel({"A": [0.01, 0.02, 0.03, 0.04, np.nan, 0.06]}, days=6)
    np.testing.assert_allclose(trailing_apy(panel, 3)[:, 0], [0.01, 0.015, 0.02, 0.03, 0.035, 0.05])


def test_benchmarks_trade_at_the_strategy_cadence_by_default():
    every7 = bt.BacktestConfig(rebalance_every_days=7)
    assert every7.benchmark_every_days == 7
    assert bt.BacktestConfig(rebalance_every_days=7, benchmark_rebalance_days=30).benchmark_every_days == 30
    res = run_benchmark(
        "equal_weight", inputs(), STRATEGY.model_copy(update={"gas_usd": 0.0, "min_trade_usd": 0.0}), every7
    )
    traded = res.steps.loc[res.steps["n_trades"] > 0, "date"]
    assert set(((traded - DAYS[0]).dt.days % 7).unique()) == {0}
    with pytest.raises(ValueError, match="unknown benchmark"):
        bt.BacktestConfig(benchmarks=["best_trailing_apy", "nope"])


def test_each_grid_point_gets_benchmarks_under_its_own_overrides():
    grid = Grid(
        "g",
        None,
        {
            "strategy.cost": [0.0005, 0.003],
            "models.apy.ewm_predictor.halflife": ["3d", "14d"],
            "backtest.rebalance_every_days": [7],
        },
    )
    points = grid.points()
    sets = benchmark_sets(VAULT, points)
    assert sorted(s.suffix for s in sets) == ["@cost-0.0005", "@cost-0.003"]  # halflife changes no benchmark
    for s in sets:
        assert len(s.points) == 2 and s.config.rebalance_every_days == 7
        assert all(f"cost-{s.vault.strategy.cost:g}" in p for p in s.points)
    one = benchmark_sets(
        VAULT, Grid("h", None, {"models.apy.ewm_predictor.halflife": ["3d", "14d"]}).points()
    )
    assert [s.suffix for s in one] == [""]
    hist = pd.DataFrame(
        [
            dict(date=d, pool=p, apy=a, adjusted_apy=a, tvl_usd=1e8)
            for d in DAYS
            for p, a in zip(POOLS, np.linspace(0.12, 0.05, 6), strict=True)
        ]
    )
    meta = hist[["date", "pool"]].assign(
        project="aave-v3", chain="Ethereum", vaults=[[VAULT.name]] * len(hist)
    )
    panel = bt.vault_panel(hist, meta, VAULT)
    results = run_benchmark_sets(panel, sets)
    assert {"equal_weight@cost-0.0005", "best_trailing_apy_unconstrained@cost-0.003"} <= set(results)
    for cost in (0.0005, 0.003):  # day one buys 98% of the wealth at the point's own cost
        first = results[f"equal_weight@cost-{cost:g}"][0].steps.iloc[0]
        assert first["cost_usd"] == pytest.approx(cost * 0.98 * VAULT.backtest.initial_wealth)
    # sets run together (sharing the panel's inputs) give each set's benchmarks as run alone
    for s in sets:
        alone = run_benchmark_sets(panel, [s])
        for name, (result, _) in alone.items():
            pd.testing.assert_frame_equal(results[name][0].steps, result.steps)
            pd.testing.assert_frame_equal(results[name][0].weights, result.weights)
