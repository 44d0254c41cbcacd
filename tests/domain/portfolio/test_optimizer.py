"""Rebalancing optimizer: constraints, optimality, fast path == cvxpy, fallbacks, gas pruning."""

from __future__ import annotations

import itertools

import cvxpy as cp
import numpy as np
import pytest

from midfreq_assets.domain.portfolio.optimizer import (
    StrategyConfig,
    VaultOptimizer,
    objective_value,
    solve_separable,
)

W = 1e7
TOL = 1e-7


def pools(n: int) -> list[str]:
    return [f"pool-{i}" for i in range(n)]


def random_instance(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = rng.uniform(0.0, 0.15, n)
    tvl = 10 ** rng.uniform(6, 9, n)
    x0 = rng.dirichlet(np.ones(n)) * rng.uniform(0.0, 1.0)
    return a, tvl, x0


def assert_feasible(opt: VaultOptimizer, r, tvl: np.ndarray, x0: np.ndarray) -> None:
    s = opt.strategy
    x = r.target_weights
    assert np.all(x >= -TOL)
    assert np.all(x <= s.concentration_limit + TOL)
    assert x.sum() <= 1 - s.base_buffer + TOL
    if s.max_pool_tvl_share is not None:
        assert np.all(x * W <= s.max_pool_tvl_share * tvl * (1 + 1e-9) + TOL * W)
    if opt.group_matrix.shape[0]:
        assert np.all(opt.group_matrix @ x <= opt.group_caps + TOL)
    if s.max_turnover is not None:
        assert np.abs(x - x0).sum() <= s.max_turnover + TOL


def test_strategy_defaults_and_validation() -> None:
    s = StrategyConfig()
    assert s.amortized_cost() == pytest.approx(s.cost * 365 / s.horizon_days)
    with pytest.raises(ValueError):
        StrategyConfig(base_buffer=1.0)
    with pytest.raises(ValueError):
        StrategyConfig(protocol_caps={"aave-v3": 1.5})
    with pytest.raises(ValueError):
        StrategyConfig(cst=0.1)  # typo -> error (StrictModel)


def test_problem_is_dpp_and_built_once() -> None:
    strat = StrategyConfig(protocol_caps={"aave-v3": 0.5}, chain_caps={"base": 0.3}, max_turnover=0.5)
    opt = VaultOptimizer(pools(4), strat, protocols=["aave-v3"] * 2 + ["euler-v2"] * 2, chains=["Base"] * 4)
    assert opt.problem.is_dpp()
    prob = opt.problem
    rng = np.random.default_rng(1)
    for _ in range(3):
        a, tvl, x0 = random_instance(rng, 4)
        r = opt.solve(a, tvl, W, x0)
        assert r.status == "optimal"
        assert opt.problem is prob
    assert VaultOptimizer(pools(3), StrategyConfig()).problem.is_dpp()


@pytest.mark.parametrize("seed", range(6))
def test_constraints_hold_on_random_instances(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 12
    protocols = rng.choice(["aave-v3", "morpho-blue", "euler-v2"], n).tolist()
    chains = rng.choice(["Ethereum", "Base", "Arbitrum"], n).tolist()
    strat = StrategyConfig(
        cost=0.001,
        base_buffer=0.05,
        concentration_limit=0.25,
        protocol_caps={"aave-v3": 0.4, "morpho-blue": 0.3},
        chain_caps={"base": 0.2},
        max_pool_tvl_share=0.01,
        max_turnover=0.3,
    )
    opt = VaultOptimizer(pools(n), strat, protocols=protocols, chains=chains)
    for _ in range(3):
        a, tvl, _ = random_instance(rng, n)
        x0 = opt._feasible_holdings(  # start from a feasible book so the turnover cap is binding as set
            __import__("midfreq_assets.domain.portfolio.optimizer", fromlist=["_clean_inputs"])._clean_inputs(
                strat, a, tvl, W, rng.dirichlet(np.ones(n)) * 0.9
            )
        )
        r = opt.solve(a, tvl, W, x0)
        assert r.status == "optimal", r.message
        assert "relaxed" not in r.message
        assert_feasible(opt, r, tvl, x0)
        assert r.objective >= objective_value(x0, a, tvl, W, x0, strat) - 1e-9  # never worse than holding


def test_infeasible_holdings_are_sold_down_and_turnover_relaxed() -> None:
    strat = StrategyConfig(cost=0.001, concentration_limit=0.2, max_turnover=0.05)
    opt = VaultOptimizer(pools(3), strat)
    x0 = np.array([0.6, 0.1, 0.0])  # 0.4 over the concentration limit, more than the turnover cap
    r = opt.solve(np.array([0.05, 0.05, 0.05]), np.full(3, 1e9), W, x0)
    assert r.status == "optimal"
    assert "relaxed" in r.message
    assert r.target_weights[0] <= 0.2 + TOL


def brute_force(strat: StrategyConfig, a, tvl, x0, steps: int = 241) -> float:
    """Best objective over a grid of feasible points (independent of both solvers)."""
    n = len(a)
    grid = np.linspace(0, strat.concentration_limit, steps)
    pts = np.array(list(itertools.product(grid, repeat=n)))
    pts = pts[pts.sum(axis=1) <= 1 - strat.base_buffer + 1e-12]
    c, q = strat.amortized_cost(), a * W / tvl
    vals = pts @ a - c * np.abs(pts - x0).sum(axis=1) - (pts**2) @ q
    best = float(vals.max())
    assert best == pytest.approx(objective_value(pts[vals.argmax()], a, tvl, W, x0, strat), abs=1e-12)
    return best


@pytest.mark.parametrize("n, fast", [(2, True), (2, False), (3, True)])
def test_optimality_against_brute_force_grid(n: int, fast: bool) -> None:
    rng = np.random.default_rng(7 + n)
    strat = StrategyConfig(
        cost=0.002, horizon_days=30, base_buffer=0.3, concentration_limit=0.5, use_fast_path=fast
    )
    opt = VaultOptimizer(pools(n), strat)
    steps = 241 if n == 2 else 61
    for _ in range(3):
        a = rng.uniform(0.02, 0.15, n)
        tvl = 10 ** rng.uniform(6.5, 8, n)  # small pools so dilution matters
        x0 = rng.uniform(0, 0.5, n) * (0.7 / n)
        r = opt.solve(a, tvl, W, x0)
        grid_best = brute_force(strat, a, tvl, x0, steps)
        assert r.objective >= grid_best - 1e-9  # nothing on the grid beats it
        # and it is close to the grid optimum (grid spacing bounds the gap)
        assert r.objective - grid_best < 0.01


def test_kkt_conditions_of_fast_path() -> None:
    """Each pool's weight maximizes its 1-D Lagrangian at the budget multiplier recovered from the
    solution, and the multiplier is complementary to the budget."""
    rng = np.random.default_rng(3)
    n = 40
    a, tvl, x0 = random_instance(rng, n)
    strat = StrategyConfig(cost=0.001, base_buffer=0.1, concentration_limit=0.1)
    r = VaultOptimizer(pools(n), strat).solve(a, tvl, W, x0)
    x = r.target_weights
    c, q = strat.amortized_cost(), a * W / tvl
    budget = 1 - strat.base_buffer
    # multiplier from an interior, traded pool: a - c*sign(dx) - 2 q x = lam
    inner = (x > 1e-6) & (x < strat.concentration_limit - 1e-6) & (np.abs(x - x0) > 1e-6)
    lams = a[inner] - c * np.sign(x - x0)[inner] - 2 * q[inner] * x[inner]
    lam = float(np.median(lams)) if inner.any() else 0.0
    assert np.allclose(lams, lam, atol=1e-8)
    assert lam >= -1e-9
    if lam > 1e-9:
        assert x.sum() == pytest.approx(budget, abs=1e-9)
    grid = np.linspace(0, strat.concentration_limit, 2001)
    for i in range(n):
        vals = a[i] * grid - c * np.abs(grid - x0[i]) - q[i] * grid**2 - lam * grid
        mine = a[i] * x[i] - c * abs(x[i] - x0[i]) - q[i] * x[i] ** 2 - lam * x[i]
        assert mine >= vals.max() - 1e-10


@pytest.mark.parametrize("seed", range(10))
def test_fast_path_matches_cvxpy(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 60))
    a, tvl, x0 = random_instance(rng, n)
    a[rng.random(n) < 0.15] = 0.0  # zero-yield pools: the linear (no dilution) case
    tvl[rng.random(n) < 0.15] = 1e300  # no dilution: linear pools with ties
    strat = StrategyConfig(
        cost=float(rng.choice([0.0, 0.0005, 0.005])),
        base_buffer=float(rng.choice([0.0, 0.1, 0.6])),
        concentration_limit=float(rng.choice([1.0, 0.2, 0.05])),
        max_pool_tvl_share=float(rng.choice([0.05, 1.0])),
    )
    fast = VaultOptimizer(pools(n), strat).solve(a, tvl, W, x0)
    slow = VaultOptimizer(pools(n), strat.model_copy(update={"use_fast_path": False})).solve(a, tvl, W, x0)
    assert fast.solver == "exact_separable" and slow.solver == "CLARABEL"
    assert abs(fast.objective - slow.objective) <= 1e-6
    assert fast.objective >= slow.objective - 1e-9
    assert fast.target_weights.sum() <= 1 - strat.base_buffer + 1e-12


@pytest.mark.parametrize("seed", range(12))
def test_turnover_cap_on_the_exact_path_matches_cvxpy(seed: int) -> None:
    """A turnover cap (with laminar protocol caps) is priced by its multiplier on the exact path: the
    same optimum as cvxpy, the cap spent exactly when it binds."""
    rng = np.random.default_rng(300 + seed)
    n = int(rng.integers(3, 40))
    a, tvl, x0 = random_instance(rng, n)
    strat = StrategyConfig(
        cost=float(rng.choice([0.0, 0.0005, 0.005])),
        base_buffer=float(rng.choice([0.0, 0.1])),
        concentration_limit=float(rng.choice([1.0, 0.2])),
        max_turnover=float(rng.choice([0.05, 0.2, 0.6])),
        protocol_caps={"aave-v3": 0.4} if seed % 2 else {},
    )
    protocols = list(rng.choice(["aave-v3", "morpho-blue"], n)) if strat.protocol_caps else None
    fast_opt = VaultOptimizer(pools(n), strat, protocols=protocols)
    x0 = fast_opt._feasible_holdings(_clean(strat, a, tvl, x0))  # a feasible book: the cap binds as set
    fast = fast_opt.solve(a, tvl, W, x0)
    slow = VaultOptimizer(
        pools(n), strat.model_copy(update={"use_fast_path": False}), protocols=protocols
    ).solve(a, tvl, W, x0)
    assert fast.solver == "exact_separable", fast.message
    assert slow.solver in ("CLARABEL", "OSQP")
    assert abs(fast.objective - slow.objective) <= 1e-6
    assert fast.objective >= slow.objective - 1e-9
    assert np.abs(fast.target_weights - x0).sum() <= strat.max_turnover + 1e-9


def _clean(strat: StrategyConfig, a: np.ndarray, tvl: np.ndarray, x0: np.ndarray):
    from midfreq_assets.domain.portfolio.optimizer import _clean_inputs

    return _clean_inputs(strat, a, tvl, W, x0)


def test_separable_solver_with_frozen_bounds_and_ties() -> None:
    # three identical linear pools (no dilution, no cost) competing for a budget of 1.5
    x = solve_separable(
        a=np.full(3, 0.05),
        q=np.zeros(3),
        x0=np.array([0.5, 0.0, 0.0]),
        c=0.0,
        lo=np.zeros(3),
        hi=np.ones(3),
        budget=1.5,
    )
    assert x.sum() == pytest.approx(1.5)
    assert np.all((x >= 0) & (x <= 1))
    # a frozen pool (lo == hi) stays put
    x = solve_separable(
        a=np.array([0.1, 0.02]),
        q=np.array([0.01, 0.01]),
        x0=np.array([0.2, 0.3]),
        c=0.01,
        lo=np.array([0.0, 0.3]),
        hi=np.array([1.0, 0.3]),
        budget=1.0,
    )
    assert x[1] == 0.3 and x.sum() <= 1.0 + 1e-12


def test_zero_cost_fills_best_yields_in_order() -> None:
    a = np.array([0.03, 0.10, 0.07, 0.01, 0.05])
    tvl = np.full(5, 1e15)  # no dilution
    strat = StrategyConfig(cost=0.0, base_buffer=0.1, concentration_limit=0.3)
    for fast in (True, False):
        opt = VaultOptimizer(pools(5), strat.model_copy(update={"use_fast_path": fast}))
        r = opt.solve(a, tvl, W, np.array([0.2, 0.0, 0.0, 0.3, 0.0]))
        np.testing.assert_allclose(r.target_weights, [0.0, 0.3, 0.3, 0.0, 0.3], atol=1e-6)


def test_very_large_cost_means_no_trade() -> None:
    rng = np.random.default_rng(5)
    a, tvl, x0 = random_instance(rng, 20)
    x0 *= 0.8 / x0.sum()
    strat = StrategyConfig(cost=10.0, concentration_limit=1.0)
    for fast in (True, False):
        r = VaultOptimizer(pools(20), strat.model_copy(update={"use_fast_path": fast})).solve(a, tvl, W, x0)
        np.testing.assert_array_equal(r.target_weights, x0)
        assert r.n_trades == 0


def test_dilution_lowers_weight_of_small_pools() -> None:
    a = np.full(3, 0.08)
    tvl = np.array([2e6, 2e7, 2e9])
    strat = StrategyConfig(cost=0.0)
    r = VaultOptimizer(pools(3), strat).solve(a, tvl, W, np.zeros(3))
    x = r.target_weights
    assert x[0] < x[1] < x[2]
    assert x.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(r.dilution_factor, 1 / (1 + x * W / tvl))


def test_missing_prediction_or_tvl_is_sell_only() -> None:
    a = np.array([np.nan, 0.10, 0.12, 0.05])
    tvl = np.array([1e9, np.nan, 1e9, 1e9])
    x0 = np.array([0.1, 0.1, 0.0, 0.0])
    strat = StrategyConfig(cost=0.0, concentration_limit=0.5)
    for fast in (True, False):
        r = VaultOptimizer(pools(4), strat.model_copy(update={"use_fast_path": fast})).solve(a, tvl, W, x0)
        assert r.status == "optimal"
        x = r.target_weights
        assert x[0] <= 0.1 + TOL and x[1] <= 0.1 + TOL  # never bought
        assert x[2] == pytest.approx(0.5, abs=1e-6)
        assert np.all(np.isfinite(x)) and np.isfinite(r.objective)
        assert "sell-only" in r.message
        assert np.isnan(r.dilution_factor[1])


def test_solver_failure_falls_back_then_keeps_holdings(monkeypatch: pytest.MonkeyPatch) -> None:
    # protocol caps alone are solved exactly; the fast path is off to exercise the cvxpy chain
    strat = StrategyConfig(concentration_limit=0.3, protocol_caps={"aave-v3": 0.5}, use_fast_path=False)
    opt = VaultOptimizer(pools(3), strat, protocols=["aave-v3", "aave-v3", "euler-v2"])
    a = np.array([0.05, 0.08, 0.02])
    tvl = np.full(3, 1e9)
    x0 = np.array([0.4, 0.3, 0.1])  # pool 0 over the concentration limit, aave over its cap
    real_solve = cp.Problem.solve

    def primary_fails(self, *args, **kwargs):
        if kwargs.get("solver") == "CLARABEL":
            raise cp.error.SolverError("forced failure")
        return real_solve(self, *args, **kwargs)

    monkeypatch.setattr(cp.Problem, "solve", primary_fails)
    r = opt.solve(a, tvl, W, x0)
    assert r.status == "optimal_fallback_solver" and r.solver == "OSQP"
    assert "forced failure" in r.message

    def always_fails(self, *args, **kwargs):
        raise cp.error.SolverError("forced failure")

    monkeypatch.setattr(cp.Problem, "solve", always_fails)
    r = opt.solve(a, tvl, W, x0)
    assert r.status == "kept_holdings" and not r.ok and r.solver == "none"
    assert "all solvers failed" in r.message and "clipped" in r.message
    x = r.target_weights
    assert x[0] <= 0.3 + TOL and x[0] + x[1] <= 0.5 + TOL and x[2] == 0.1  # clipped by selling only
    assert np.all(x <= x0 + 1e-15)

    # a feasible book is kept exactly
    feasible = np.array([0.2, 0.2, 0.1])
    r = opt.solve(a, tvl, W, feasible)
    assert r.status == "kept_holdings"
    np.testing.assert_array_equal(r.target_weights, feasible)
    assert r.n_trades == 0


def test_fast_path_failure_falls_back_to_cvxpy(monkeypatch: pytest.MonkeyPatch) -> None:
    import midfreq_assets.domain.portfolio.optimizer as mod

    def broken(*args, **kwargs):
        return np.full(len(args[0]), np.nan)

    monkeypatch.setattr(mod, "solve_separable", broken)
    r = VaultOptimizer(pools(3), StrategyConfig()).solve(np.full(3, 0.05), np.full(3, 1e9), W, np.zeros(3))
    assert r.status == "optimal" and r.solver == "CLARABEL"
    assert "non-finite" in r.message


@pytest.mark.parametrize("fast", [True, False])
def test_gas_pruning_drops_small_trades_and_keeps_budget(fast: bool) -> None:
    rng = np.random.default_rng(11)
    n = 30
    a, tvl, x0 = random_instance(rng, n)
    x0 *= 0.9 / x0.sum()
    strat = StrategyConfig(
        cost=0.0002, base_buffer=0.05, concentration_limit=0.2, gas_usd=20.0, use_fast_path=fast
    )
    plain = VaultOptimizer(pools(n), strat.model_copy(update={"gas_usd": 0.0})).solve(a, tvl, W, x0)
    r = VaultOptimizer(pools(n), strat).solve(a, tvl, W, x0)
    gain = a * np.abs(r.trades_usd) * strat.horizon_days / 365
    traded = r.trades_usd != 0
    small_before = (np.abs(plain.trades_usd) > 0) & (
        a * np.abs(plain.trades_usd) * strat.horizon_days / 365 < 2 * strat.gas_usd
    )
    assert small_before.any()  # the instance has tiny trades to prune
    assert r.n_pruned > 0
    assert np.all(gain[traded] >= strat.gas_multiple * strat.gas_usd - 1e-6)  # no small trade left
    assert r.target_weights.sum() <= 1 - strat.base_buffer + TOL
    assert r.n_trades < plain.n_trades
    assert r.objective <= plain.objective + 1e-9  # pruning is a restriction
    assert_feasible(VaultOptimizer(pools(n), strat), r, tvl, x0)


def test_min_trade_size() -> None:
    a = np.array([0.05, 0.0501, 0.08])
    x0 = np.array([0.5, 0.0, 0.0])
    strat = StrategyConfig(cost=0.0, concentration_limit=0.5, min_trade_usd=50_000.0)
    r = VaultOptimizer(pools(3), strat).solve(a, np.array([1e9, 1e9, 1e7]), W, x0)
    moved = np.abs(r.trades_usd)
    assert np.all((moved == 0) | (moved >= 50_000.0 - 1e-6))
    assert r.target_weights.sum() <= 1.0 + TOL


def test_result_frame_and_input_errors() -> None:
    opt = VaultOptimizer(pools(2), StrategyConfig())
    r = opt.solve(np.array([0.05, 0.04]), np.array([1e8, 1e8]), W, np.zeros(2))
    df = r.to_frame()
    assert list(df.columns) == ["pool", "current_weight", "target_weight", "trade_usd", "dilution_factor"]
    assert df["pool"].tolist() == ["pool-0", "pool-1"]
    assert r.solve_time_s > 0
    with pytest.raises(ValueError):
        opt.solve(np.array([0.05]), np.array([1e8]), W, np.zeros(1))
    with pytest.raises(ValueError):
        opt.solve(np.array([0.05, 0.04]), np.array([1e8, 1e8]), -1.0, np.zeros(2))
    with pytest.raises(ValueError, match="protocol caps"):
        VaultOptimizer(pools(2), StrategyConfig(protocol_caps={"aave-v3": 0.5}))


def test_vault_yaml_strategy_section(tmp_path) -> None:
    from midfreq_assets.domain.config.base import ConfigError, read_yaml
    from midfreq_assets.domain.config.vault import load_vault_config

    vault = load_vault_config("configs/vaults/usd_lending.yaml")
    assert isinstance(vault.strategy, StrategyConfig)
    assert vault.strategy.concentration_limit <= 1
    data = read_yaml("configs/vaults/usd_lending.yaml")
    data["strategy"]["conentration_limit"] = 0.2
    bad = tmp_path / "usd_lending.yaml"
    import yaml

    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="strategy.conentration_limit"):
        load_vault_config(bad)
    # the section optimizes a real universe: aave/morpho/fluid/euler pools with protocol caps
    opt = VaultOptimizer(
        pools(4), vault.strategy, protocols=["aave-v3", "morpho-blue", "fluid-lending", "euler-v2"]
    )
    r = opt.solve(np.array([0.05, 0.06, 0.08, 0.09]), np.full(4, 5e8), W, np.zeros(4))
    assert r.ok and r.target_weights[3] <= 0.25 + TOL


# ---------------------------------------------------------------------------------------------
# Exact solver with group caps (laminar: protocol caps, chain caps, or both when nested)

PROTOCOLS = ["aave-v3", "morpho-blue", "euler-v2", "fluid-lending"]


def grouped_instance(rng: np.random.Generator, n: int, nested: bool):
    a, tvl, x0 = random_instance(rng, n)
    a[rng.random(n) < 0.1] = 0.0
    tvl[rng.random(n) < 0.1] = 1e300  # linear pools (ties)
    protocols = rng.choice(PROTOCOLS, n).tolist()
    if nested:  # every protocol on one chain: chain groups contain whole protocol groups
        home = {
            "aave-v3": "Ethereum",
            "morpho-blue": "Ethereum",
            "euler-v2": "Base",
            "fluid-lending": "Arbitrum",
        }
        chains = [home[p] for p in protocols]
    else:
        chains = rng.choice(["Ethereum", "Base", "Arbitrum"], n).tolist()
    return a, tvl, x0, protocols, chains


@pytest.mark.parametrize("seed", range(24))
def test_exact_group_caps_match_cvxpy(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(3, 70))
    kind = ["protocol", "chain", "nested"][seed % 3]
    a, tvl, x0, protocols, chains = grouped_instance(rng, n, nested=kind == "nested")
    cap = lambda: float(rng.choice([0.02, 0.1, 0.3, 0.6, 1.0]))  # noqa: E731 - binding or not
    caps = {}
    if kind in ("protocol", "nested"):
        caps["protocol_caps"] = {
            p: cap() for p in rng.choice(PROTOCOLS, int(rng.integers(1, 5)), replace=False)
        }
    if kind in ("chain", "nested"):
        caps["chain_caps"] = {
            c: cap()
            for c in rng.choice(["Ethereum", "Base", "Arbitrum"], int(rng.integers(1, 4)), replace=False)
        }
    strat = StrategyConfig(
        cost=float(rng.choice([0.0, 1e-7, 0.0005, 0.005, 10.0])),  # zero, tiny, normal, huge (no trade)
        base_buffer=float(rng.choice([0.0, 0.1, 0.6])),
        concentration_limit=float(rng.choice([1.0, 0.2, 0.05])),
        max_pool_tvl_share=float(rng.choice([0.01, 0.05, 1.0])),
        **caps,
    )
    w = float(rng.choice([1e5, W, 1e9]))  # little to strong dilution
    x0 = x0 * float(rng.choice([0.5, 1.0, 1.5]))  # sometimes over the caps: forced sales
    fast = VaultOptimizer(pools(n), strat, protocols=protocols, chains=chains)
    slow = VaultOptimizer(
        pools(n), strat.model_copy(update={"use_fast_path": False}), protocols=protocols, chains=chains
    )
    assert fast.exact
    rf, rs = fast.solve(a, tvl, w, x0), slow.solve(a, tvl, w, x0)
    assert rf.solver == "exact_separable", rf.message
    assert rs.solver in ("CLARABEL", "OSQP"), rs.message
    # <= 1e-6 (relative when the objective is large: a huge cost puts it near -100, where CLARABEL
    # itself is accurate to ~1e-8 relative); the exact answer is never worse than the solver's
    assert abs(rf.objective - rs.objective) <= 1e-6 * max(1.0, abs(rs.objective))
    assert rf.objective >= rs.objective - 1e-9
    x = rf.target_weights
    assert np.all(x >= 0) and np.all(x <= strat.concentration_limit + 1e-12)
    assert x.sum() <= 1 - strat.base_buffer + 1e-12
    assert np.all(fast.group_matrix @ x <= fast.group_caps + 1e-12)
    assert np.all(x * w <= strat.max_pool_tvl_share * tvl * (1 + 1e-12))


def test_binding_group_cap_is_exact_and_nonbinding_cap_changes_nothing() -> None:
    a = np.array([0.10, 0.09, 0.05, 0.04])
    tvl = np.full(4, 1e15)  # linear: fill the best yields
    x0 = np.zeros(4)
    protocols = ["euler-v2", "euler-v2", "aave-v3", "aave-v3"]
    strat = StrategyConfig(cost=0.0, concentration_limit=0.4, protocol_caps={"euler-v2": 0.5})
    r = VaultOptimizer(pools(4), strat, protocols=protocols).solve(a, tvl, W, x0)
    assert r.solver == "exact_separable"
    np.testing.assert_allclose(r.target_weights, [0.4, 0.1, 0.4, 0.1], atol=1e-12)
    loose = strat.model_copy(update={"protocol_caps": {"euler-v2": 0.9}})
    r2 = VaultOptimizer(pools(4), loose, protocols=protocols).solve(a, tvl, W, x0)
    r3 = VaultOptimizer(pools(4), loose.model_copy(update={"protocol_caps": {}})).solve(a, tvl, W, x0)
    np.testing.assert_array_equal(r2.target_weights, r3.target_weights)


def test_overlapping_groups_fall_back_to_cvxpy() -> None:
    strat = StrategyConfig(protocol_caps={"aave-v3": 0.5}, chain_caps={"base": 0.3})
    opt = VaultOptimizer(
        pools(4),
        strat,
        protocols=["aave-v3", "aave-v3", "euler-v2", "euler-v2"],
        chains=["Base", "Ethereum", "Base", "Ethereum"],
    )
    assert not opt.exact
    r = opt.solve(np.full(4, 0.05), np.full(4, 1e9), W, np.zeros(4))
    assert r.solver == "CLARABEL"
    nested = VaultOptimizer(
        pools(4),
        strat,
        protocols=["aave-v3", "aave-v3", "euler-v2", "euler-v2"],
        chains=["Base", "Base", "Base", "Ethereum"],
    )
    assert nested.exact  # aave-v3 lies inside Base
    with_turnover = VaultOptimizer(pools(2), StrategyConfig(max_turnover=0.2))
    assert with_turnover.exact  # a turnover cap is priced by its multiplier on the exact path


def test_vault_strategy_uses_exact_solver() -> None:
    from midfreq_assets.domain.config.vault import load_vault_config

    vault = load_vault_config("configs/vaults/usd_lending.yaml")
    rng = np.random.default_rng(9)
    n = 55
    protocols = rng.choice(PROTOCOLS, n).tolist()
    fast = VaultOptimizer(pools(n), vault.strategy, protocols=protocols)
    slow = VaultOptimizer(
        pools(n), vault.strategy.model_copy(update={"use_fast_path": False}), protocols=protocols
    )
    x = np.zeros(n)
    for _ in range(10):
        a, tvl, _ = random_instance(rng, n)
        rf, rs = fast.solve(a, tvl, W, x), slow.solve(a, tvl, W, x)
        assert rf.solver == "exact_separable" and rs.solver == "CLARABEL"
        assert abs(rf.objective - rs.objective) <= 1e-6
        assert np.all(fast.group_matrix @ rf.target_weights <= fast.group_caps + 1e-12)
        assert rf.target_weights.sum() <= 1 - vault.strategy.base_buffer + 1e-12
        x = rf.target_weights


@pytest.mark.parametrize("seed", range(8))
def test_gas_pruning_with_caps_resolves_at_most_twice(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pruning freezes idle + small trades, re-solves <= MAX_PRUNE_RESOLVES times, then drops what is
    still small without breaking the budget, the caps or the bounds."""
    import midfreq_assets.domain.portfolio.optimizer as mod
    from midfreq_assets.domain.portfolio.optimizer import _clean_inputs

    rng = np.random.default_rng(500 + seed)
    n = 40
    protocols = rng.choice(PROTOCOLS, n).tolist()
    chains = [
        {"aave-v3": "Ethereum", "morpho-blue": "Ethereum", "euler-v2": "Base", "fluid-lending": "Base"}[p]
        for p in protocols
    ]
    strat = StrategyConfig(
        cost=0.0005,
        base_buffer=0.02,
        concentration_limit=0.1,
        max_pool_tvl_share=0.05,
        protocol_caps={"euler-v2": 0.2, "fluid-lending": 0.15},
        chain_caps={"base": 0.3},
        gas_usd=float(rng.choice([5.0, 50.0])),
        min_trade_usd=1000.0,
    )
    opt = VaultOptimizer(pools(n), strat, protocols=protocols, chains=chains)
    assert opt.exact
    calls = []
    real = VaultOptimizer._solve_once
    monkeypatch.setattr(
        VaultOptimizer, "_solve_once", lambda self, *a, **k: calls.append(1) or real(self, *a, **k)
    )
    wealth = 1e6
    x = np.zeros(n)
    for _ in range(15):
        a, tvl, _ = random_instance(rng, n)
        calls.clear()
        r = opt.solve(a, tvl, wealth, x)
        assert r.ok and r.solver == "exact_separable"
        assert len(calls) <= 1 + mod.MAX_PRUNE_RESOLVES
        y = r.target_weights
        assert np.all(y >= 0) and np.all(y <= strat.concentration_limit + 1e-12)
        assert y.sum() <= 1 - strat.base_buffer + 1e-9
        assert np.all(opt.group_matrix @ y <= opt.group_caps + 1e-9)
        assert np.all(y * wealth <= strat.max_pool_tvl_share * tvl * (1 + 1e-9) + 1e-9)
        inp = _clean_inputs(strat, a, tvl, wealth, x)
        forced = (inp.x0 > inp.hi) | (
            np.abs(opt.group_matrix.T @ np.maximum(opt.group_matrix @ inp.x0 - opt.group_caps, 0)) > 0
        )
        notional = np.abs(r.trades_usd)
        buys = (r.trades_usd > 0) & ~forced  # small sales may be kept when the budget needs them; buys never
        sells = (r.trades_usd < 0) & ~forced
        assert np.all(notional[buys] >= strat.min_trade_usd * (1 - 1e-9))
        if "kept" not in r.message:
            assert np.all(notional[sells] >= strat.min_trade_usd * (1 - 1e-9))
        gain = a * notional * strat.horizon_days / 365
        assert np.all(gain[buys] >= strat.gas_multiple * strat.gas_usd * (1 - 1e-9))
        x = y * rng.uniform(0.98, 1.02, n)  # drift


def test_drop_small_keeps_budget_and_caps() -> None:
    from midfreq_assets.domain.portfolio.optimizer import _clean_inputs

    strat = StrategyConfig(cost=0.0, concentration_limit=0.5, protocol_caps={"euler-v2": 0.3}, gas_usd=10.0)
    opt = VaultOptimizer(pools(5), strat, protocols=["euler-v2"] * 3 + ["aave-v3"] * 2)
    a = np.full(5, 0.05)
    x0 = np.array([0.2, 0.05, 0.05, 0.3, 0.2])  # euler at its cap
    inp = _clean_inputs(strat, a, np.full(5, 1e12), 1e6, x0)
    # a small sale of pool 0 helps fund a big buy of pool 1 inside the binding euler cap; a small
    # buy of pool 4
    x = np.array([0.199, 0.101, 0.0, 0.3, 0.2005])
    assert opt.group_matrix[0] @ x <= 0.3 + 1e-12
    small = np.array([True, False, False, False, True])
    y, kept = opt._drop_small(inp, x, small)
    assert kept == 0
    assert y[0] == x0[0] and y[4] == x0[4]
    assert opt.group_matrix[0] @ y <= 0.3 + 1e-12 and y.sum() <= 1.0 + 1e-12
    assert y[1] - x0[1] >= opt._min_trade(inp)[1]  # the big buy stays worth its gas
    assert y[2] == 0.0 and y[3] == 0.3


def test_solver_tolerances_come_from_the_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    strat = StrategyConfig(
        concentration_limit=0.3,
        max_turnover=0.5,
        use_fast_path=False,
        solver_options={"clarabel": {"tol_gap_abs": 1e-10, "max_iter": 400}, "OSQP": {"eps_abs": 1e-7}},
    )
    assert strat.solver_settings("CLARABEL") == {"tol_gap_abs": 1e-10, "max_iter": 400}
    # merged key by key over the defaults
    assert strat.solver_settings("OSQP") == {
        "eps_abs": 1e-7,
        "eps_rel": 1e-9,
        "max_iter": 100_000,
        "polish": True,
    }
    seen: list[dict] = []
    real_solve = cp.Problem.solve

    def spy(self, *args, **kwargs):
        seen.append(kwargs)
        return real_solve(self, *args, **kwargs)

    monkeypatch.setattr(cp.Problem, "solve", spy)
    opt = VaultOptimizer(pools(4), strat)
    r = opt.solve(np.array([0.05, 0.06, 0.07, 0.02]), np.full(4, 1e9), W, np.zeros(4))
    assert r.status == "optimal" and r.solver == "CLARABEL"
    assert seen[0]["solver"] == "CLARABEL" and seen[0]["tol_gap_abs"] == 1e-10 and seen[0]["max_iter"] == 400


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
def test_an_iteration_limit_reaches_the_solver() -> None:
    """One interior-point iteration cannot solve the problem: the primary fails, the fallback answers."""
    strat = StrategyConfig(
        concentration_limit=0.3,
        max_turnover=0.5,
        use_fast_path=False,
        solver_options={"CLARABEL": {"max_iter": 1}},
    )
    r = VaultOptimizer(pools(4), strat).solve(
        np.array([0.05, 0.06, 0.07, 0.02]), np.full(4, 1e9), W, np.zeros(4)
    )
    assert r.status == "optimal_fallback_solver" and r.solver == "OSQP"
    assert "CLARABEL" in r.message


def test_feasibility_tolerance_rejects_loose_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    import midfreq_assets.domain.portfolio.optimizer as mod

    loose = StrategyConfig(concentration_limit=0.3, feasibility_tolerance=1e-3)
    strict = StrategyConfig(concentration_limit=0.3)
    real = mod.VaultOptimizer._violation
    monkeypatch.setattr(mod.VaultOptimizer, "_violation", lambda self, *a: max(real(self, *a), 1e-5))
    a, tvl = np.array([0.05, 0.06, 0.07]), np.full(3, 1e9)
    assert VaultOptimizer(pools(3), loose).solve(a, tvl, W, np.zeros(3)).status == "optimal"
    r = VaultOptimizer(pools(3), strict).solve(a, tvl, W, np.zeros(3))
    assert r.status == "kept_holdings" and "violates constraints by 1.00e-05" in r.message


def test_solver_options_are_validated_naming_the_key() -> None:
    from midfreq_assets.domain.config.base import ConfigError

    with pytest.raises(
        ConfigError, match=r"strategy.solver_options: .*CLARABEL: unknown setting\(s\) \['tol_gapp'\]"
    ):
        _vault_with_strategy({"solver_options": {"CLARABEL": {"tol_gapp": 1e-9}}})
    with pytest.raises(ConfigError, match="no known settings"):
        _vault_with_strategy({"solver_options": {"GUROBI": {"tol": 1e-9}}})
    with pytest.raises(ConfigError, match="must be positive"):
        _vault_with_strategy({"solver_options": {"OSQP": {"eps_abs": 0}}})
    with pytest.raises(ConfigError, match="feasibility_tolerance"):
        _vault_with_strategy({"feasibility_tolerance": 0.1})


def _vault_with_strategy(strategy: dict):
    from midfreq_assets.domain.config.base import read_yaml, validate_model
    from midfreq_assets.domain.config.vault import VaultConfig

    data = read_yaml("configs/vaults/usd_lending.yaml")
    data["strategy"] = {**data["strategy"], **strategy}
    return validate_model(VaultConfig, data, "vault.yaml")


@pytest.mark.parametrize("use_fast_path", [True, False])
@pytest.mark.parametrize("absurd", [7.9e303, np.inf, 10.5])
def test_absurd_predictions_are_refused_not_allocated(use_fast_path: bool, absurd: float) -> None:
    strat = StrategyConfig(concentration_limit=0.25, use_fast_path=use_fast_path, max_predicted_apy=10.0)
    opt = VaultOptimizer(pools(4), strat)
    a = np.array([absurd, 0.05, 0.04, 0.03])
    tvl = np.full(4, 1e9)
    held = np.array([0.1, 0.0, 0.0, 0.0])
    r = opt.solve(a, tvl, W, held)
    assert r.ok
    assert r.target_weights[0] <= 0.1 + TOL  # never bought; may only be sold
    assert r.target_weights[1:].sum() > 0.5  # the sane pools are still allocated
    assert "refused 1 absurd prediction" in r.message and "pool-0" in r.message
    fresh = opt.solve(a, tvl, W, np.zeros(4))
    assert fresh.target_weights[0] == 0.0


def test_the_apy_ceiling_is_configuration() -> None:
    opt = VaultOptimizer(pools(2), StrategyConfig(max_predicted_apy=50.0))
    r = opt.solve(np.array([20.0, 0.05]), np.full(2, 1e12), W, np.zeros(2))
    assert r.target_weights[0] > 0 and "refused" not in r.message
    with pytest.raises(ValueError):
        StrategyConfig(max_predicted_apy=0)


@pytest.mark.parametrize("fast", [True, False])
def test_a_dilution_depth_dilutes_and_the_tvl_still_sizes_the_caps(fast: bool) -> None:
    """The pools' responses (domain/yields/response.py): ``depth`` replaces the TVL in the dilution
    term only; ``depth = tvl`` is today's problem; a deeper pool (a lending market's curve) takes more."""
    rng = np.random.default_rng(7)
    n = 8
    a, tvl, x0 = random_instance(rng, n)
    strat = StrategyConfig(cost=0.0005, max_pool_tvl_share=0.2, use_fast_path=fast)
    opt = VaultOptimizer(pools(n), strat)
    same = opt.solve(a, tvl, W, x0, depth=tvl)
    np.testing.assert_allclose(same.target_weights, opt.solve(a, tvl, W, x0).target_weights, atol=1e-7)
    deeper = tvl.copy()
    deeper[0] *= 10
    r = opt.solve(a, tvl, W, x0, depth=deeper)
    assert r.target_weights[0] >= same.target_weights[0] - 1e-9
    assert np.all(r.target_weights * W <= 0.2 * tvl + 1e-6)  # caps: a share of the TVL argument
    np.testing.assert_allclose(r.dilution_factor, 1 / (1 + r.target_weights * W / deeper))
    with pytest.raises(ValueError, match="depth"):
        opt.solve(a, tvl, W, x0, depth=deeper[:-1])
