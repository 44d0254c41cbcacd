"""Benchmarks: simple allocations replayed through the strategy's own accounting and constraints.

- ``equal_weight``, ``best_trailing_apy``, ``tvl_weighted``: target weights from data known at t
  (the universe, the trailing earned yield, the TVL) over the budget ``1 - base_buffer``;
- by default (named after the kind) they face the vault's limits: the target is projected onto
  the strategy's constraint set (concentration, protocol and chain caps, TVL share, turnover; gap
  holdings kept) by :meth:`VaultOptimizer.project`, and they pay the same cost and gas at the same
  cadence (``backtest.benchmark_rebalance_days``, default the strategy's own);
- ``<kind>_unconstrained``: the same allocation without the position limits, shown as such.

A grid's points may override the strategy or the backtest; :func:`benchmark_sets` groups the
points by the configuration the benchmarks depend on, so each point is compared with benchmarks
run under its own constraints and costs (``docs/METHOD.md`` "Backtest").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from midfreq_assets.domain.backtest import engine as bt
from midfreq_assets.domain.backtest.config import BENCHMARKS, BacktestConfig
from midfreq_assets.domain.backtest.grids import GridPoint, apply_overrides, point_name, short_names
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.portfolio.step import StepDecision, target_step
from midfreq_assets.domain.portfolio.strategy import StrategyConfig

UNCONSTRAINED_SUFFIX = "_unconstrained"
#: Starts the name of a benchmark set (``equal_weight@cost-0.002``) when a grid has several.
SET_SEPARATOR = "@"
#: Backtest keys that change the strategy's predictions only, never a benchmark.
PREDICTION_ONLY_KEYS = frozenset({"estimator", "label"})


def benchmark_weights(
    kind: str, apy: np.ndarray, tvl: np.ndarray, eligible: np.ndarray, t: int, budget: float, trailing_days: int
) -> np.ndarray:
    """Target weights of a simple benchmark at step t (rows <= t of the dates x pools arrays)."""
    elig = eligible[t] & np.isfinite(apy[t])
    x = np.zeros(len(elig))
    if not elig.any() or budget <= 0:
        return x
    if kind == "equal_weight":
        x[elig] = budget / elig.sum()
    elif kind == "tvl_weighted":
        w = np.where(elig, np.nan_to_num(tvl[t], nan=0.0), 0.0)
        if w.sum() > 0:
            x = budget * w / w.sum()
    elif kind == "best_trailing_apy":
        window = apy[max(0, t - trailing_days + 1) : t + 1]
        total = np.nansum(window, axis=0)
        count = np.isfinite(window).sum(axis=0)
        trail = np.where(elig & (count > 0), total / np.maximum(count, 1), -np.inf)
        x[int(np.argmax(trail))] = budget
    else:
        raise ValueError(f"unknown benchmark {kind!r}; known: {list(BENCHMARKS)}")
    return x


def run_benchmark(
    kind: str, inputs: bt.BacktestInputs, strategy: StrategyConfig, config: BacktestConfig | None = None,
    *, constrained: bool = True,
) -> bt.BacktestResult:
    """One benchmark re-weighted every ``config.benchmark_every_days`` (held in between, ineligible
    pools sold daily, gap holdings kept), paying the strategy's cost and gas; ``constrained``
    projects its weights onto the strategy's limits first."""
    if kind not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {kind!r}; known: {list(BENCHMARKS)}")
    config = config or BacktestConfig()
    inputs = inputs.window(config.start, config.end)
    apy = inputs.apy.to_numpy(dtype=float)
    tvl = inputs.tvl.to_numpy(dtype=float)
    elig = inputs.eligible.to_numpy(dtype=bool)
    hold = bt.gap_holds(inputs, strategy.max_gap_days)
    pools = tuple(inputs.pools)
    budget = 1.0 - strategy.base_buffer
    every = config.benchmark_every_days
    costs = strategy.costs()
    optimizers = bt.ActiveOptimizers(inputs, strategy, costs)

    def policy(t: int, h: np.ndarray, base: float) -> StepDecision:
        wealth = h.sum() + base
        frozen = hold[t] & (h > 0)
        if t % every:
            x = h / wealth  # hold (drift), only sell what left the universe
        else:
            kept = float(h[frozen].sum() / wealth)
            x = benchmark_weights(kind, apy, tvl, elig & ~frozen, t, budget - kept, config.trailing_days)
            x[frozen] = h[frozen] / wealth
            idx = np.flatnonzero(elig[t] | (h > 0))
            if constrained and idx.size:
                optimizer = optimizers.get(idx).with_costs(inputs.costs_at(costs, t))
                projected = optimizer.project(x[idx], tvl[t, idx], wealth, h[idx] / wealth, frozen=frozen[idx])
                x = np.zeros(len(pools))
                x[idx] = projected
        return target_step(pools, x, tvl[t], wealth, h, costs=inputs.costs_at(costs, t), predicted_apy=apy[t],
                           eligible=elig[t], base=base, hold=hold[t])

    name = kind if constrained else kind + UNCONSTRAINED_SUFFIX
    return bt.simulate(inputs, policy, config, name=name, max_gap_days=strategy.max_gap_days, hold=hold)


def run_benchmarks(
    inputs: bt.BacktestInputs, strategy: StrategyConfig, config: BacktestConfig | None = None
) -> dict[str, bt.BacktestResult]:
    """Every configured benchmark under the strategy's limits, then its unconstrained variant."""
    config = config or BacktestConfig()
    out = {k: run_benchmark(k, inputs, strategy, config) for k in config.benchmarks}
    out |= {k + UNCONSTRAINED_SUFFIX: run_benchmark(k, inputs, strategy, config, constrained=False)
            for k in config.benchmarks}
    return out


@dataclass(frozen=True)
class BenchmarkSet:
    """The benchmarks of the grid points sharing one strategy and backtest configuration."""

    suffix: str  # appended to the benchmark names ("" when every point shares one set)
    vault: VaultConfig
    config: BacktestConfig
    points: tuple[str, ...]


def benchmark_sets(vault: VaultConfig, points: Sequence[GridPoint],
                   backtest: BacktestConfig | None = None) -> list[BenchmarkSet]:
    """Group ``points`` by what their benchmarks depend on (the strategy and the backtest settings
    other than the predictor's); name each group by the overrides that differ between groups."""
    groups: dict[str, tuple[VaultConfig, BacktestConfig, dict[str, object], list[str]]] = {}
    for p in points:
        v, cfg = apply_overrides(vault, p.overrides, backtest, source=p.grid)
        key = json.dumps([v.strategy.model_dump(mode="json"),
                          cfg.model_dump(mode="json", exclude=set(PREDICTION_ONLY_KEYS))], sort_keys=True)
        relevant = {k: val for k, val in p.overrides
                    if k.startswith("strategy.") or (k.startswith("backtest.")
                                                     and k.removeprefix("backtest.") not in PREDICTION_ONLY_KEYS)}
        groups.setdefault(key, (v, cfg, relevant, []))[3].append(p.name)
    if len(groups) <= 1:
        return [BenchmarkSet("", v, cfg, tuple(names)) for v, cfg, _, names in groups.values()]
    keys = sorted({k for _, _, rel, _ in groups.values() for k in rel})
    varying = [k for k in keys if len({json.dumps(rel.get(k), default=str) for _, _, rel, _ in groups.values()}) > 1]
    shorts = short_names(varying)
    return [BenchmarkSet(SET_SEPARATOR + point_name(sorted((shorts[k], rel.get(k)) for k in varying)), v, cfg, tuple(names))
            for v, cfg, rel, names in groups.values()]


def run_benchmark_sets(panel: pd.DataFrame, sets: Sequence[BenchmarkSet]
                       ) -> dict[str, tuple[bt.BacktestResult, BenchmarkSet]]:
    """Every benchmark of every set on a :func:`engine.vault_panel` frame, keyed by its full name."""
    out: dict[str, tuple[bt.BacktestResult, BenchmarkSet]] = {}
    for s in sets:
        inputs = bt.inputs_from_panel(panel, s.vault, s.config.apy_column)
        for name, result in run_benchmarks(inputs, s.vault.strategy, s.config).items():
            result.name = name + s.suffix
            out[result.name] = (result, s)
    return out


def benchmark_set_of(name: str) -> str:
    """The set suffix of a benchmark's full name ("" for the only set)."""
    base, sep, rest = name.partition(SET_SEPARATOR)
    return sep + rest


def is_constrained(name: str) -> bool:
    """A benchmark under the vault's position limits (not an ``*_unconstrained`` variant)."""
    return not name.partition(SET_SEPARATOR)[0].endswith(UNCONSTRAINED_SUFFIX)
