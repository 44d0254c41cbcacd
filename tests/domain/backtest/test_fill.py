"""The fill: each rule under every limit of the strategy, fully invested where the caps allow.

Property-style: random universes and caps, checked against a plain sequential reference (pools one
by one in the rule's order, each up to its tightest limit) and against the strategy's constraint
definitions (the optimizer's own bounds and group matrix)."""

from __future__ import annotations

import numpy as np
import pytest

from midfreq_assets.domain.backtest.benchmarks import top_k_score
from midfreq_assets.domain.backtest.fill import FillRule, fill_weights
from midfreq_assets.domain.portfolio.optimizer import VaultOptimizer, _clean_inputs
from midfreq_assets.domain.portfolio.strategy import StrategyConfig

W = 1e7
TOL = 1e-7
PROTOCOLS = ["aave-v3", "morpho-blue", "euler-v2", "fluid-lending"]


def universe(seed: int, n: int | None = None, *, chains: bool = False):
    """Random pools (yields, TVLs from 1e5 to 1e9 so the TVL share binds on some) and a strategy with
    random concentration, buffer, TVL share and protocol caps (chain caps nesting them when ``chains``:
    every protocol on one chain, a laminar family)."""
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(3, 30))
    protocols = rng.choice(PROTOCOLS, n).tolist()
    chain_of = {"aave-v3": "Ethereum", "morpho-blue": "Ethereum", "euler-v2": "Base", "fluid-lending": "Base"}
    caps = {
        p: float(rng.uniform(0.05, 0.6))
        for p in rng.choice(PROTOCOLS, int(rng.integers(0, 4)), replace=False)
    }
    strategy = StrategyConfig(
        base_buffer=float(rng.choice([0.0, 0.02, 0.1])),
        concentration_limit=float(rng.uniform(0.05, 0.6)),
        max_pool_tvl_share=float(rng.choice([0.01, 0.05, 0.2])),
        protocol_caps=caps,
        chain_caps={"base": float(rng.uniform(0.1, 0.7))} if chains else {},
    )
    opt = VaultOptimizer(
        [f"p{i}" for i in range(n)],
        strategy,
        protocols=protocols,
        chains=[chain_of[p] for p in protocols] if chains else None,
    )
    trailing = rng.uniform(-0.01, 0.15, n)
    trailing[rng.random(n) < 0.1] = np.nan  # no usable yield: never bought
    tvl = 10 ** rng.uniform(5, 9, n)
    return opt, trailing, tvl


def bounds(opt: VaultOptimizer, gain: np.ndarray, tvl: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """Per-pool upper bounds as the optimizer defines them (concentration, TVL share at W)."""
    return _clean_inputs(opt.strategy, gain, tvl, W, x0).hi


def greedy(opt: VaultOptimizer, order: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Reference rank-and-fill: pools one by one in ``order``, each up to its tightest limit."""
    x = np.zeros(len(hi))
    budget = 1 - opt.strategy.base_buffer
    for i in order:
        room = [hi[i], budget - x.sum()]
        room += [cap - row @ x for row, cap in zip(opt.group_matrix, opt.group_caps, strict=True) if row[i]]
        x[i] = max(min(room), 0.0)
    return x


def assert_within_limits(
    opt: VaultOptimizer, x: np.ndarray, tvl: np.ndarray, x0: np.ndarray | None = None
) -> None:
    s = opt.strategy
    assert np.all(x >= -TOL)
    assert np.all(x <= s.concentration_limit + TOL)
    assert x.sum() <= 1 - s.base_buffer + TOL
    if s.max_pool_tvl_share is not None:
        assert np.all(x * W <= s.max_pool_tvl_share * tvl * (1 + 1e-9) + TOL * W)
    if opt.group_matrix.shape[0]:
        assert np.all(opt.group_matrix @ x <= opt.group_caps + TOL)
    if s.max_turnover is not None and x0 is not None:
        assert np.abs(x - x0).sum() <= s.max_turnover + 1e-6


def assert_no_idle_room(opt: VaultOptimizer, x: np.ndarray, hi: np.ndarray, candidates: np.ndarray) -> None:
    """No candidate pool could take one more dollar: it is at its bound, or a group holding it is at
    its cap, or the budget is spent."""
    if x.sum() >= 1 - opt.strategy.base_buffer - TOL:
        return
    for i in np.flatnonzero(candidates & (x < hi - TOL)):
        rows = opt.group_matrix[:, i] > 0
        assert rows.any() and np.any(opt.group_matrix[rows] @ x >= opt.group_caps[rows] - TOL), (
            f"pool {i} at {x[i]:.4f} < {hi[i]:.4f} with room in its groups and the budget"
        )


def rules(trailing: np.ndarray, tvl: np.ndarray) -> dict[str, FillRule]:
    n = len(trailing)
    every = np.where(np.isfinite(trailing), 1.0, np.nan)
    return {
        "rank_and_fill": FillRule(trailing),
        "top_k": FillRule(top_k_score(trailing, 4), profile=np.ones(n)),
        "equal_weight": FillRule(every, profile=np.ones(n)),
        "tvl_weighted": FillRule(every, profile=tvl),
        "incumbent": FillRule(trailing, keep=True),
    }


@pytest.mark.parametrize("seed", range(40))
def test_rank_and_fill_is_the_sequential_greedy_and_every_rule_is_fully_invested_where_caps_allow(seed):
    opt, trailing, tvl = universe(seed, chains=seed % 2 == 1)
    assert opt.fast_groups is not None  # laminar: the exact path
    x0 = np.zeros(len(tvl))
    hi = bounds(opt, trailing, tvl, x0)
    bought = np.isfinite(trailing) & (trailing > 0)
    order = np.flatnonzero(bought)[np.argsort(-trailing[bought], kind="stable")]
    expect = greedy(opt, order, np.where(bought, hi, 0.0))
    x = fill_weights(opt, FillRule(trailing), tvl, W, x0, gain_apy=trailing)
    np.testing.assert_allclose(x, expect, atol=1e-9)
    # in a polymatroid every maximal fill invests the same total: no rule leaves idle cash the caps allow
    for name, rule in rules(trailing, tvl).items():
        x = fill_weights(opt, rule, tvl, W, x0, gain_apy=trailing)
        assert_within_limits(opt, x, tvl)
        cand = np.isfinite(rule.score) & (rule.score > 0)
        assert_no_idle_room(opt, x, np.where(cand, hi, 0.0), cand)
        reachable = greedy(opt, np.flatnonzero(cand), np.where(cand, hi, 0.0)).sum()
        assert x.sum() == pytest.approx(reachable, abs=1e-9), name
        assert np.all(x[~cand] == 0.0), name


@pytest.mark.parametrize("seed", range(20))
def test_from_a_held_book_every_rule_stays_within_limits_and_leaves_no_idle_room(seed):
    """Starting from a random book (some of it above the limits, some in pools no longer wanted)."""
    opt, trailing, tvl = universe(seed + 300, chains=seed % 2 == 0)
    rng = np.random.default_rng(seed)
    x0 = rng.dirichlet(np.ones(len(tvl))) * rng.uniform(0.3, 1.0)
    for _name, rule in rules(trailing, tvl).items():
        x = fill_weights(opt, rule, tvl, W, x0, gain_apy=trailing)
        assert_within_limits(opt, x, tvl)
        cand = np.isfinite(rule.score) & (rule.score > 0)
        assert_no_idle_room(opt, x, np.where(cand, bounds(opt, trailing, tvl, x0), 0.0), cand)
    # a book within every limit is kept whole by the incumbent (only idle cash is deployed)
    inside = opt._feasible_holdings(
        _clean_inputs(opt.strategy, np.where(trailing > 0, trailing, np.nan), tvl, W, x0)
    )
    x = fill_weights(opt, FillRule(trailing, keep=True), tvl, W, inside, gain_apy=trailing)
    assert np.all(x >= inside * (1 - 1e-9) - 1e-12)
    assert_no_idle_room(opt, x, np.where(trailing > 0, bounds(opt, trailing, tvl, inside), 0.0), trailing > 0)


def test_invested_share_is_the_budget_when_the_caps_allow():
    opt = VaultOptimizer(
        [f"p{i}" for i in range(8)],
        StrategyConfig(base_buffer=0.02, concentration_limit=0.25, max_pool_tvl_share=0.05),
    )
    trailing = np.linspace(0.09, 0.02, 8)
    tvl = np.full(8, 1e9)
    for name, rule in rules(trailing, tvl).items():
        x = fill_weights(opt, rule, tvl, W, np.zeros(8), gain_apy=trailing)
        assert x.sum() == pytest.approx(0.98), name


@pytest.mark.parametrize("seed", range(12))
def test_water_filling_gives_clipped_amounts_to_the_others(seed):
    """Equal and TVL weight: every pool not held back by its own bound or a full group sits at one
    common level of weight per unit of profile; a pool held back is below it."""
    opt, trailing, tvl = universe(seed + 100)
    x0 = np.zeros(len(tvl))
    hi = bounds(opt, trailing, tvl, x0)
    for profile in (np.ones(len(tvl)), tvl):
        score = np.where(np.isfinite(trailing), 1.0, np.nan)
        x = fill_weights(opt, FillRule(score, profile=profile), tvl, W, x0, gain_apy=trailing)
        cand = np.isfinite(score)
        full_groups = opt.group_matrix @ x >= opt.group_caps - TOL
        blocked = (x >= hi - TOL) | (opt.group_matrix[full_groups].sum(axis=0) > 0)
        free = cand & ~blocked
        ratio = x / (profile / profile.max())
        if free.any():
            level = ratio[free]
            np.testing.assert_allclose(level, level[0], rtol=1e-7)
            assert np.all(ratio[cand & blocked] <= level[0] * (1 + 1e-7))


def test_top_k_is_equal_weight_on_the_k_best_then_the_next_in_order():
    opt = VaultOptimizer(
        [f"p{i}" for i in range(6)], StrategyConfig(base_buffer=0.0, concentration_limit=0.3)
    )
    trailing = np.array([0.03, 0.09, 0.05, 0.08, 0.07, 0.01])
    tvl = np.full(6, 1e12)

    def top(k: int) -> np.ndarray:
        return fill_weights(
            opt,
            FillRule(top_k_score(trailing, k), profile=np.ones(6)),
            tvl,
            W,
            np.zeros(6),
            gain_apy=trailing,
        )

    np.testing.assert_allclose(top(4), [0, 0.25, 0.25, 0.25, 0.25, 0], atol=1e-12)  # 1/4 each
    # k = 3: 1/3 each is clipped at 0.3, the 0.1 clipped goes to the next pool in order (0.05)
    np.testing.assert_allclose(top(3), [0, 0.3, 0.1, 0.3, 0.3, 0], atol=1e-12)
    # k = 6: every pool with a positive trailing yield, 1/6 each
    np.testing.assert_allclose(top(6), np.full(6, 1 / 6), atol=1e-12)


def test_the_band_switches_only_when_the_gain_over_the_horizon_beats_the_round_trip_cost():
    s = StrategyConfig(cost=0.001, horizon_days=30, concentration_limit=1.0)
    c = s.costs().amortized()  # 0.001 / (30 / 365) = 1.2%/yr: a switch must gain more than 2c = 2.4%/yr
    opt = VaultOptimizer(["held", "new"], s)
    tvl, x0 = np.full(2, 1e12), np.array([1.0, 0.0])
    for gap, switch in ((0.02, False), (0.03, True)):
        trailing = np.array([0.05, 0.05 + gap])
        x = fill_weights(opt, FillRule(trailing, band=c), tvl, W, x0, gain_apy=trailing)
        np.testing.assert_allclose(x, [0.0, 1.0] if switch else [1.0, 0.0])
        # the plain rank-and-fill always switches to the best trailing pool
        np.testing.assert_allclose(
            fill_weights(opt, FillRule(trailing), tvl, W, x0, gain_apy=trailing), [0, 1]
        )
    # from cash, a pool is bought only when its yield beats the amortized cost c
    x = fill_weights(
        opt,
        FillRule(np.array([0.011, 0.013]), band=c),
        tvl,
        W,
        np.zeros(2),
        gain_apy=np.array([0.011, 0.013]),
    )
    np.testing.assert_allclose(x, [0.0, 1.0])


def test_keep_holds_the_book_and_redeploys_only_what_is_freed():
    s = StrategyConfig(concentration_limit=0.4, base_buffer=0.0, protocol_caps={"euler-v2": 0.5})
    opt = VaultOptimizer(list("abcd"), s, protocols=["aave-v3", "euler-v2", "euler-v2", "morpho-blue"])
    tvl = np.full(4, 1e12)
    trailing = np.array([0.02, 0.09, 0.08, 0.05])
    # a: 0.3 kept although it ranks last; b drifted above the concentration limit: trimmed to 0.4; the
    # 0.3 to deploy (the trim and the idle cash) goes to the rule's next choices: b is full, c gets
    # what is left of the euler-v2 cap (0.5 - 0.4 = 0.1), then d
    x0 = np.array([0.3, 0.45, 0.0, 0.0])
    x = fill_weights(opt, FillRule(trailing, keep=True), tvl, W, x0, gain_apy=trailing)
    np.testing.assert_allclose(x, [0.3, 0.4, 0.1, 0.2], atol=1e-9)
    assert_within_limits(opt, x, tvl)


def test_frozen_gap_holdings_are_kept_and_fill_the_budget_first():
    opt = VaultOptimizer(list("abc"), StrategyConfig(concentration_limit=0.5, base_buffer=0.1))
    trailing = np.array([0.01, 0.09, 0.08])
    x = fill_weights(
        opt,
        FillRule(trailing),
        np.full(3, 1e12),
        W,
        np.array([0.3, 0.0, 0.0]),
        gain_apy=trailing,
        frozen=np.array([True, False, False]),
    )
    np.testing.assert_allclose(x, [0.3, 0.5, 0.1], atol=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_turnover_cap_makes_the_most_valuable_trades_first_exactly(seed):
    """With a turnover cap the fill prices it by its multiplier (exact path); the answer is the optimum
    of the same LP / QP that cvxpy solves, within the cap and every limit."""
    opt, trailing, tvl = universe(seed + 200, n=10)
    turnover = float(np.random.default_rng(seed).uniform(0.05, 0.6))
    s = opt.strategy.model_copy(update={"max_turnover": turnover})
    exact = VaultOptimizer(opt.pools, s, protocols=_protocols(opt))
    cvx = VaultOptimizer(opt.pools, s.model_copy(update={"use_fast_path": False}), protocols=_protocols(opt))
    rng = np.random.default_rng(seed)
    x0 = cvx._feasible_holdings(_clean_inputs(s, trailing, tvl, W, rng.dirichlet(np.ones(10)) * 0.9))
    for rule in (
        FillRule(trailing),
        FillRule(np.where(np.isfinite(trailing), 1.0, np.nan), profile=np.ones(10)),
    ):
        x = fill_weights(exact, rule, tvl, W, x0, gain_apy=trailing)
        y = fill_weights(cvx, rule, tvl, W, x0, gain_apy=trailing)
        assert_within_limits(exact, x, tvl, x0)
        objective = _fill_objective(exact, rule, trailing, tvl, x0)
        assert objective(x) >= objective(y) - 1e-6  # as good as the interior-point solver's answer


def _protocols(opt: VaultOptimizer) -> list[str]:
    labels = [""] * len(opt.pools)
    for row, name in zip(opt.group_matrix, opt.group_names, strict=True):
        for i in np.flatnonzero(row):
            labels[i] = name.split(":", 1)[1]
    return [lbl or "other" for lbl in labels]


def _fill_objective(opt, rule, trailing, tvl, x0):
    from midfreq_assets.domain.backtest.fill import _rule_objective

    inp = _clean_inputs(
        opt.strategy, np.where(np.isfinite(rule.score) & (rule.score > 0), trailing, np.nan), tvl, W, x0
    )
    cand = np.isfinite(rule.score) & (rule.score > 0) & inp.buyable & (inp.hi > inp.lo)
    a, q = _rule_objective(rule, rule.score, cand, inp.hi)
    return lambda x: float(a @ x - q @ (x * x))


def test_gas_and_minimum_trade_pruning_as_the_strategy_does_it():
    """A trade whose expected gain over the horizon is below gas_multiple x gas, or below the minimum
    trade, is not made; what it would have taken goes to the next pools."""
    s = StrategyConfig(
        concentration_limit=0.5,
        base_buffer=0.0,
        gas_usd=50.0,
        gas_multiple=2.0,
        horizon_days=30,
        min_trade_usd=10_000,
    )
    opt = VaultOptimizer(list("abc"), s)
    trailing = np.array([0.09, 0.08, 0.07])
    tvl = np.array([1e12, 1e12, 1e12])
    # from cash: two pools filled to 0.5 each; nothing left for c
    x = fill_weights(opt, FillRule(trailing), tvl, W, np.zeros(3), gain_apy=trailing)
    np.testing.assert_allclose(x, [0.5, 0.5, 0.0])
    # a top-up of 1e-4 of 1e7 (1,000 USD) is below the minimum trade, and so is putting it in c: not made
    x0 = np.array([0.4999, 0.5, 0.0])
    x = fill_weights(opt, FillRule(trailing), tvl, W, x0, gain_apy=trailing)
    np.testing.assert_allclose(x, x0)
