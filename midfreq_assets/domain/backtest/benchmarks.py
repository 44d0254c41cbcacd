"""Benchmarks: the rules a vault manager would run, under the vault's own limits and costs.

Each rule ranks the pools with data known at t (the trailing earned yield, the universe, the TVL)
and is turned into weights by the fill (:func:`fill.fill_weights`): ``1 - base_buffer`` of wealth
invested in the rule's order under every constraint of the strategy (concentration, TVL share at
the day's wealth, protocol and chain caps, turnover, gap holdings kept, gas and minimum-trade
pruning), what a cap clips passed on to the next pool. The rules (formulas in ``docs/METHOD.md``
"Benchmarks"):

- ``best_trailing_apy``: rank-and-fill by trailing earned APY;
- ``top_k_trailing``: the ``top_k`` best trailing yields in equal weight, then the next ones in order;
- ``best_trailing_hysteresis``: rank-and-fill where a held unit moves only when the gain over the
  strategy's horizon beats the round-trip cost (the same ``TradingCosts``);
- ``incumbent``: the first allocation held; only what leaves the universe (or breaks a limit) is
  sold, and that money goes to the rule's next choice;
- ``equal_weight``, ``tvl_weighted``: every pool of the universe in equal or TVL proportions
  (water-filled: what a cap clips goes to the others).

They trade through the project's accounting (:func:`engine.simulate`, ``target_step``) at the
strategy's cadence (``backtest.benchmark_rebalance_days``, default the strategy's own), paying the
same cost and gas. ``<rule>_unconstrained`` (``backtest.unconstrained_benchmarks``): the same rule
with the budget as its only limit, shown as such, never the bar.

A grid's points may override the strategy or the backtest; :func:`benchmark_sets` groups the
points by the configuration the benchmarks depend on, so each point is compared with benchmarks
run under its own constraints and costs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from midfreq_assets.domain.backtest import engine as bt
from midfreq_assets.domain.backtest.config import BENCHMARKS, BacktestConfig
from midfreq_assets.domain.backtest.fill import FillRule, fill_weights
from midfreq_assets.domain.backtest.grids import GridPoint, apply_overrides, point_name, short_names
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.portfolio.costs import TradingCosts
from midfreq_assets.domain.portfolio.optimizer import VaultOptimizer
from midfreq_assets.domain.portfolio.step import StepDecision, target_step
from midfreq_assets.domain.portfolio.strategy import StrategyConfig

UNCONSTRAINED_SUFFIX = "_unconstrained"
#: Starts the name of a benchmark set (``equal_weight@cost-0.002``) when a grid has several.
SET_SEPARATOR = "@"
#: Backtest keys that change the strategy's predictions only, never a benchmark.
PREDICTION_ONLY_KEYS = frozenset({"estimator", "label"})


def trailing_apy(inputs: bt.BacktestInputs, days: int) -> np.ndarray:
    """(dates x pools) mean earned APY over the ``days`` rows up to and including t (NaN-skipping):
    what every rule ranks by, known at t."""
    return inputs.apy.rolling(days, min_periods=1).mean().to_numpy(dtype=float)


def top_k_score(trailing: np.ndarray, k: int) -> np.ndarray:
    """The trailing yields with the ``k`` best (positive ones) lifted to one common score above all
    others: one tier filled in equal weight, then the others in order."""
    score = np.asarray(trailing, dtype=float).copy()
    with np.errstate(invalid="ignore"):
        ok = np.flatnonzero(np.isfinite(score) & (score > 0))
    if ok.size:
        top = ok[np.argsort(-score[ok], kind="stable")[:k]]
        score[top] = float(score[ok].max()) + 1.0
    return score


#: rule -> (trailing APY of the pools that may be bought, their TVL, the day's costs, config) -> FillRule
RULES: dict[str, Callable[[np.ndarray, np.ndarray, TradingCosts, BacktestConfig], FillRule]] = {
    "best_trailing_apy": lambda trail, tvl, costs, cfg: FillRule(trail),
    "top_k_trailing": lambda trail, tvl, costs, cfg: FillRule(
        top_k_score(trail, cfg.top_k), profile=np.ones(len(trail))
    ),
    "best_trailing_hysteresis": lambda trail, tvl, costs, cfg: FillRule(trail, band=costs.amortized()),
    "incumbent": lambda trail, tvl, costs, cfg: FillRule(trail, keep=True),
    "equal_weight": lambda trail, tvl, costs, cfg: FillRule(
        np.where(np.isfinite(trail), 1.0, np.nan), profile=np.ones(len(trail))
    ),
    "tvl_weighted": lambda trail, tvl, costs, cfg: FillRule(
        np.where(np.isfinite(trail), 1.0, np.nan), profile=tvl
    ),
}
assert set(RULES) == set(BENCHMARKS)


def unconstrained(strategy: StrategyConfig) -> StrategyConfig:
    """The strategy with the budget as its only position limit (same costs, gas and pruning)."""
    return strategy.model_copy(
        update={
            "concentration_limit": 1.0,
            "protocol_caps": {},
            "chain_caps": {},
            "max_pool_tvl_share": None,
            "max_turnover": None,
        }
    )


class SharedOptimizers(bt.ActiveOptimizers):
    """:class:`engine.ActiveOptimizers` keeping the optimizer of every pool set met, so the rules run on
    one set of inputs build each (and its cvxpy problem, when one is needed) once."""

    def __init__(self, inputs: bt.BacktestInputs, strategy: StrategyConfig, costs: TradingCosts) -> None:
        super().__init__(inputs, strategy, costs)
        self.built: dict[tuple[int, ...], VaultOptimizer] = {}

    def get(self, idx: np.ndarray) -> VaultOptimizer:
        key = tuple(idx.tolist())
        if key not in self.built:
            self.key = None
            self.built[key] = super().get(idx)
        return self.built[key]


def run_benchmark(
    kind: str,
    inputs: bt.BacktestInputs,
    strategy: StrategyConfig,
    config: BacktestConfig | None = None,
    *,
    constrained: bool = True,
    optimizers: SharedOptimizers | None = None,
) -> bt.BacktestResult:
    """One rule re-weighted every ``config.benchmark_every_days`` (held in between, ineligible pools
    sold daily, gap holdings kept), filled under the strategy's limits (``constrained=False``: the
    budget only) and paying the strategy's cost and gas. ``optimizers``: shared with other rules on
    the same (unwindowed) inputs and limits."""
    if kind not in RULES:
        raise ValueError(f"unknown benchmark {kind!r}; known: {list(BENCHMARKS)}")
    config = config or BacktestConfig()
    inputs = inputs.window(config.start, config.end)
    apy = inputs.apy.to_numpy(dtype=float)
    tvl = inputs.tvl.to_numpy(dtype=float)
    elig = inputs.eligible.to_numpy(dtype=bool)
    trail = trailing_apy(inputs, config.trailing_days)
    hold = bt.gap_holds(inputs, strategy.max_gap_days)
    pools = tuple(inputs.pools)
    every = config.benchmark_every_days
    costs = strategy.costs()
    optimizers = optimizers or SharedOptimizers(
        inputs, strategy if constrained else unconstrained(strategy), costs
    )
    make_rule = RULES[kind]

    def policy(t: int, h: np.ndarray, base: float) -> StepDecision:
        wealth = h.sum() + base
        day_costs = inputs.costs_at(costs, t)
        x = h / wealth  # between re-weightings: hold (drift); target_step sells what left the universe
        if t % every == 0:
            x = np.zeros(len(pools))
            idx = np.flatnonzero(elig[t] | (h > 0))
            if idx.size:
                held = h[idx] > 0
                frozen = hold[t, idx] & held
                ok = elig[t, idx] & np.isfinite(apy[t, idx]) & np.isfinite(tvl[t, idx]) & (tvl[t, idx] > 0)
                x0 = np.where(
                    ~ok & ~frozen, 0.0, h[idx] / wealth
                )  # forced sales: seen at 0, as rebalance_step does
                score = np.where(ok, trail[t, idx], np.nan)
                rule = make_rule(score, tvl[t, idx], day_costs, config)
                x[idx] = fill_weights(
                    optimizers.get(idx).with_costs(day_costs),
                    rule,
                    tvl[t, idx],
                    wealth,
                    x0,
                    gain_apy=score,
                    frozen=frozen,
                )
        return target_step(
            pools,
            x,
            tvl[t],
            wealth,
            h,
            costs=day_costs,
            predicted_apy=apy[t],
            eligible=elig[t],
            base=base,
            hold=hold[t],
        )

    name = kind if constrained else kind + UNCONSTRAINED_SUFFIX
    return bt.simulate(inputs, policy, config, name=name, max_gap_days=strategy.max_gap_days, hold=hold)


def run_benchmarks(
    inputs: bt.BacktestInputs, strategy: StrategyConfig, config: BacktestConfig | None = None
) -> dict[str, bt.BacktestResult]:
    """Every configured rule under the strategy's limits, then the configured unconstrained variants."""
    config = config or BacktestConfig()
    costs = strategy.costs()
    shared = SharedOptimizers(inputs, strategy, costs)
    out = {k: run_benchmark(k, inputs, strategy, config, optimizers=shared) for k in config.benchmarks}
    free = SharedOptimizers(inputs, unconstrained(strategy), costs)
    out |= {
        k + UNCONSTRAINED_SUFFIX: run_benchmark(
            k, inputs, strategy, config, constrained=False, optimizers=free
        )
        for k in config.unconstrained_benchmarks
    }
    return out


@dataclass(frozen=True)
class BenchmarkSet:
    """The benchmarks of the grid points sharing one strategy and backtest configuration."""

    suffix: str  # appended to the benchmark names ("" when every point shares one set)
    vault: VaultConfig
    config: BacktestConfig
    points: tuple[str, ...]


def benchmark_sets(
    vault: VaultConfig, points: Sequence[GridPoint], backtest: BacktestConfig | None = None
) -> list[BenchmarkSet]:
    """Group ``points`` by what their benchmarks depend on (the strategy and the backtest settings
    other than the predictor's); name each group by the overrides that differ between groups."""
    groups: dict[str, tuple[VaultConfig, BacktestConfig, dict[str, object], list[str]]] = {}
    for p in points:
        v, cfg = apply_overrides(vault, p.overrides, backtest, source=p.grid)
        key = json.dumps(
            [
                v.strategy.model_dump(mode="json"),
                cfg.model_dump(mode="json", exclude=set(PREDICTION_ONLY_KEYS)),
            ],
            sort_keys=True,
        )
        relevant = {
            k: val
            for k, val in p.overrides
            if k.startswith("strategy.")
            or (k.startswith("backtest.") and k.removeprefix("backtest.") not in PREDICTION_ONLY_KEYS)
        }
        groups.setdefault(key, (v, cfg, relevant, []))[3].append(p.name)
    if len(groups) <= 1:
        return [BenchmarkSet("", v, cfg, tuple(names)) for v, cfg, _, names in groups.values()]
    keys = sorted({k for _, _, rel, _ in groups.values() for k in rel})
    varying = [
        k for k in keys if len({json.dumps(rel.get(k), default=str) for _, _, rel, _ in groups.values()}) > 1
    ]
    shorts = short_names(varying)
    return [
        BenchmarkSet(
            SET_SEPARATOR + point_name(sorted((shorts[k], rel.get(k)) for k in varying)), v, cfg, tuple(names)
        )
        for v, cfg, rel, names in groups.values()
    ]


def run_benchmark_sets(
    panel: pd.DataFrame, sets: Sequence[BenchmarkSet]
) -> dict[str, tuple[bt.BacktestResult, BenchmarkSet]]:
    """Every benchmark of every set on a :func:`engine.vault_panel` frame, keyed by its full name.
    The panel's inputs are built once per earned column (a grid of hundreds of sets: once, not per set)."""
    out: dict[str, tuple[bt.BacktestResult, BenchmarkSet]] = {}
    shared: dict[tuple[object, ...], bt.BacktestInputs] = {}
    for s in sets:
        key = (s.vault.name, s.vault.reference_asset, s.vault.min_pool_tvl_usd, s.config.apy_column)
        if key not in shared:
            shared[key] = bt.inputs_from_panel(panel, s.vault, s.config.apy_column)
        inputs = shared[key]
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
