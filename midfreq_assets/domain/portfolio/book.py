"""The vault's book: one object owns what a vault holds and how it moves from day to day.

:class:`VaultBook` works on wide numpy panels (:class:`BookPanels`: days x pools on one axis) and
keeps the carried state (dollar holdings per pool and the idle base, in the vault's reference
asset). Each day it can

- **accrue** into day t (:meth:`VaultBook.accrue`): ``step.accrue_step`` with day t's earned yield,
  its undiluted part, its IL and the legs' price move, the idle base at ``base_rate``; a held pool in
  a data gap accrues at its last known yield; dilution reads the TVL reported on t (the last known
  one when t has none);
- **observe** real holdings (:meth:`VaultBook.observe`): a live day starts from them; the accrued
  state is kept as what was *expected* (the reconciliation reads it);
- **decide** on day t (:meth:`VaultBook.decide`): ``step.rebalance_step`` on the pools known at t (in
  the universe that day, held, or ``extra``) with one :class:`VaultOptimizer` reused while that set of
  pools (and their protocol and chain) is unchanged (:class:`Optimizers`), on the rebalance calendar
  (``rebalance_every_days``, ``step_offset``; in between: hold, sell only what left the universe),
  with costs in the reference asset of the day; held pools in a data gap are frozen;
- **trade** (:meth:`VaultBook.trade`): the holdings become the decision's.

Gap rule (:func:`gap_panels`): a pool with no data row on day t whose last row, in the universe,
is at most ``max_gap_days`` days old is *in a gap*: a holding there is kept (no sale, no buy) and
accrues at the yield of its last row. Longer, or out of the universe on its last row: sold. What the book knew before its
first row (the last row's day, yield and TVL of each pool, from the nightly ``CarriedState``) seeds
the rule, so a range starting mid-history behaves as one long range.

Two thin adapters drive it: the backtest (``domain.backtest.engine.run_backtest`` / ``simulate``:
decide at t, accrue t -> t+1 over the whole panel) and the nightly decision
(``domain.portfolio.nightly.decide_range``: daily long frames -> panels; accrue into each day, then
decide it; the rows of ``rebalance_weights`` built at the end).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from midfreq_assets.domain.portfolio.costs import TradingCosts
from midfreq_assets.domain.portfolio.optimizer import RebalanceResult, VaultOptimizer
from midfreq_assets.domain.portfolio.reductions import add_reduce as _sum
from midfreq_assets.domain.portfolio.step import (
    Accrual,
    StepDecision,
    accrue_step,
    rebalance_step,
    target_step,
)
from midfreq_assets.domain.portfolio.strategy import StrategyConfig

#: Components of adjusted_apy that our own size does not dilute (a token's own yield, a peg
#: reverting, an IL loss): only the pool-paid part ``apy - reward_haircut`` is shared with the TVL.
UNDILUTED_COLUMNS = ("underlying_apy", "peg_yield", "il_annual")


@dataclass(frozen=True)
class BookPanels:
    """What a book reads, on one calendar (T rows) and one pool axis (N pools).

    ``day`` places each row on the calendar (a gap's age is a difference of two of them: the row
    index for the backtest, the day number for the nightly run); ``dt_years`` is the length of the
    step into each row (``dt_years[0]``: from the carried state into the first row). ``earned`` is
    the yield earned into a day (NaN: no yield that day), ``undiluted`` its part our size does not
    dilute and ``il`` the IL inside it (None: none), ``price_return`` the legs' log move (None: 0).
    ``tvl`` is the TVL the decision reads and ``tvl_reported`` the one of the day's data row (the
    accrual's dilution), both in the reference asset. ``protocols`` and ``chains`` label the pools
    for the optimizer's caps, one label per pool (N,) or per day and pool (T, N). ``ref_price`` is
    the reference asset's USD price per row (None: USD). ``depth`` is each row's dilution depth
    (the pools' yield responses, ``domain/yields/response.py``: a lending market's curve, NaN: the
    TVL rule), read by the decision's dilution and the accrual alike; ``tvl`` then sizes the caps
    only (a lending market's supply)."""

    pools: tuple[str, ...]
    day: np.ndarray
    dt_years: np.ndarray
    earned: np.ndarray
    tvl: np.ndarray
    eligible: np.ndarray
    reported: np.ndarray
    predicted: np.ndarray | None = None
    undiluted: np.ndarray | None = None
    il: np.ndarray | None = None
    price_return: np.ndarray | None = None
    tvl_reported: np.ndarray | None = None
    protocols: np.ndarray | None = None
    chains: np.ndarray | None = None
    ref_price: np.ndarray | None = None
    depth: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.earned.shape

    def costs_at(self, costs: TradingCosts, t: int) -> TradingCosts:
        """``costs`` in the reference asset on row t (unchanged for a USD vault, or before the first
        known price: nothing has a TVL in that asset then, so nothing trades)."""
        price = float(self.ref_price[t]) if self.ref_price is not None else 1.0
        return costs.in_reference(price) if np.isfinite(price) else costs


@dataclass(frozen=True)
class BookSeed:
    """What the book knew before its first row: holdings and base, and per pool the day of its
    last data row, whether it was in the universe on that row (default: yes), the yields of that
    row (earned, undiluted, IL) and its last TVL (NaN: unknown)."""

    holdings: np.ndarray
    base: float
    last_seen: np.ndarray | None = None
    last_in_universe: np.ndarray | None = None
    last_yield: np.ndarray | None = None  # (3, N): earned, undiluted, il
    last_tvl: np.ndarray | None = None

    @classmethod
    def cash(cls, n: int, wealth: float) -> BookSeed:
        return cls(np.zeros(n), float(wealth))


@dataclass(frozen=True)
class GapPanels:
    """The gap rule over a whole panel: ``hold`` (T x N) where a pool is in a gap; ``last_seen`` the
    day of its last data row at or before each row (NaN: unknown); the carried yields (earned,
    undiluted, IL: the day's own, or in a gap without one the last row's); ``tvl_accrue`` the TVL of
    each accrual's dilution."""

    hold: np.ndarray
    last_seen: np.ndarray
    earned: np.ndarray
    undiluted: np.ndarray | None
    il: np.ndarray | None
    tvl_accrue: np.ndarray


def ffill_rows(values: np.ndarray, seed: np.ndarray | None = None) -> np.ndarray:
    """Forward-fill NaNs down the rows (T x N), the row before the first being ``seed``."""
    t = np.arange(values.shape[0])[:, None]
    known = ~np.isnan(values)
    last = np.maximum.accumulate(np.where(known, t, -1), axis=0)
    out = np.take_along_axis(values, np.maximum(last, 0), axis=0)
    start = seed if seed is not None else np.full(values.shape[1], np.nan)
    return np.where(last >= 0, out, start[None, :])


def gap_panels(
    panels: BookPanels, max_gap_days: int, seed: BookSeed | None = None, *, unseen_in_gap: bool = False
) -> GapPanels:
    """The gap rule on ``panels`` (see the module doc), seeded by what was known before row 0 (a
    pool whose last row was out of the universe was sold that day: it has no gap to keep).

    ``unseen_in_gap``: a pool without data whose last row is unknown (an older state without it,
    real positions in a pool the book never saw) counts as in a gap (the nightly run: the positions
    check vouched for the pool); else it does not (the backtest knows every row)."""
    T, N = panels.shape
    reported = np.asarray(panels.reported, dtype=bool)
    rows = np.arange(T)[:, None]
    last_row = np.maximum.accumulate(np.where(reported, rows, -1), axis=0)
    seen = last_row >= 0
    at = np.maximum(last_row, 0)
    seed_seen = seed.last_seen if seed is not None and seed.last_seen is not None else np.full(N, np.nan)
    last_seen = np.where(seen, np.asarray(panels.day, dtype=float)[at], seed_seen[None, :])
    age = np.asarray(panels.day, dtype=float)[:, None] - last_seen
    seed_in = (
        seed.last_in_universe if seed is not None and seed.last_in_universe is not None else np.ones(N, bool)
    )
    in_universe = np.where(
        seen,
        np.take_along_axis(np.asarray(panels.eligible, dtype=bool), at, axis=0),
        np.asarray(seed_in, dtype=bool)[None, :],
    )
    recent = ~reported & (age <= max_gap_days)  # absent, its last row recent enough
    if unseen_in_gap:
        recent |= ~reported & np.isnan(last_seen)
    hold = recent & in_universe
    # a holding there (kept, or dust a sale left) earns its last row's yields
    carry = recent & np.isnan(panels.earned)
    seed_yield = (
        seed.last_yield
        if seed is not None and seed.last_yield is not None
        else np.array([np.full(N, np.nan), np.zeros(N), np.zeros(N)])
    )

    def carried(values: np.ndarray | None, k: int) -> np.ndarray | None:
        if values is None:
            return None
        last = np.where(seen, np.take_along_axis(values, at, axis=0), seed_yield[k][None, :])
        return np.where(carry, last, values)

    tvl = np.asarray(panels.tvl, dtype=float)
    reported_tvl = tvl if panels.tvl_reported is None else np.asarray(panels.tvl_reported, dtype=float)
    seed_tvl = seed.last_tvl if seed is not None and seed.last_tvl is not None else np.full(N, np.nan)
    known_tvl = ffill_rows(tvl, seed_tvl)  # the last TVL known at each row
    before = np.vstack([seed_tvl[None, :], known_tvl[:-1]])  # ... and at the row before
    tvl_accrue = np.where(np.isnan(reported_tvl), before, reported_tvl)
    if panels.depth is not None:  # the response's depth where the row has one (the same as the decision's)
        depth = np.asarray(panels.depth, dtype=float)
        tvl_accrue = np.where(np.isfinite(depth) & (depth > 0), depth, tvl_accrue)
    return GapPanels(
        hold,
        last_seen,
        carried(panels.earned, 0),
        carried(panels.undiluted, 1),
        carried(panels.il, 2),
        tvl_accrue,
    )


class Optimizers:
    """One :class:`VaultOptimizer` for the pools a decision may touch (with their protocol and chain),
    rebuilt when that set changes: the optimizer never sees a pool before it exists, and a warm
    start is reused only on the same problem."""

    def __init__(self, strategy: StrategyConfig, costs: TradingCosts | None = None) -> None:
        self.strategy = strategy
        self.costs = costs if costs is not None else strategy.costs()
        self.key: tuple | None = None
        self.optimizer: VaultOptimizer | None = None
        self.builds = 0

    def optimizer_for(
        self, pools: Sequence[str], protocols: Sequence[str], chains: Sequence[str]
    ) -> VaultOptimizer:
        key = (tuple(pools), tuple(protocols), tuple(chains))
        if key != self.key or self.optimizer is None:
            s = self.strategy
            self.optimizer = VaultOptimizer(
                list(pools),
                s,
                protocols=list(protocols) if s.protocol_caps else None,
                chains=list(chains) if s.chain_caps else None,
                costs=self.costs,
            )
            self.key = key
            self.builds += 1
        return self.optimizer


def _labels(labels: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """Pool labels as given, or "" (no cap applies) without."""
    if labels is None:
        return np.full(shape[1], "", dtype=object)
    return np.asarray(labels, dtype=object)


class VaultBook:
    """The book of one vault over ``panels`` (see the module doc). State: ``holdings`` (N,) and
    ``base`` in the reference asset, and after :meth:`accrue` what was ``expected`` (the accrued
    holdings and base, kept when :meth:`observe` replaces them)."""

    def __init__(
        self,
        panels: BookPanels,
        strategy: StrategyConfig,
        *,
        base_rate: float = 0.0,
        seed: BookSeed | None = None,
        rebalance_every_days: int = 1,
        step_offset: int = 0,
        unseen_in_gap: bool = False,
        optimizers: Optimizers | None = None,
    ) -> None:
        T, N = panels.shape
        self.panels = panels
        self.strategy = strategy
        self.base_rate = float(base_rate)
        self.every, self.offset = int(rebalance_every_days), int(step_offset)
        self.optimizers = optimizers if optimizers is not None else Optimizers(strategy)
        self.costs = self.optimizers.costs
        seed = seed or BookSeed.cash(N, 0.0)
        self.gaps = gap_panels(panels, strategy.max_gap_days, seed, unseen_in_gap=unseen_in_gap)
        self.pools = tuple(panels.pools)
        self._pool_array = np.asarray(self.pools, dtype=object)
        self._protocols = _labels(panels.protocols, (T, N))
        self._chains = _labels(panels.chains, (T, N))
        self._tvl = np.asarray(panels.tvl, dtype=float)
        self._depth = np.asarray(panels.depth, dtype=float) if panels.depth is not None else None
        self._eligible = np.asarray(panels.eligible, dtype=bool)
        self._pred = (
            np.asarray(panels.predicted, dtype=float)
            if panels.predicted is not None
            else np.full((T, N), np.nan)
        )
        # the accrual's optional parts with NaN as 0, once for the panel (what accrue_step does per row)
        self._accrual_parts = tuple(
            np.nan_to_num(np.asarray(v, dtype=float), nan=0.0) if v is not None else None
            for v in (self.gaps.undiluted, self.gaps.il, panels.price_return)
        )
        self._dt_years = np.asarray(panels.dt_years, dtype=float)
        self.holdings = np.asarray(seed.holdings, dtype=float).copy()
        self.base = float(seed.base)
        self.expected: np.ndarray | None = None
        self.expected_base = float("nan")

    @property
    def hold(self) -> np.ndarray:
        """(T x N) True where a pool is in a data gap (a holding there is kept)."""
        return self.gaps.hold

    @property
    def wealth(self) -> float:
        return float(_sum(self.holdings) + self.base)

    # -- pure steps (the book's rules; the state is handed in) ---------------------------------

    def accrual(self, t: int, holdings: np.ndarray, base: float) -> Accrual:
        """``holdings`` and ``base`` of row t-1 (or of the seed) grown into row t."""
        g = self.gaps
        undiluted, il, price_return = self._accrual_parts
        return accrue_step(
            holdings,
            base,
            g.earned[t],
            g.tvl_accrue[t],
            float(self._dt_years[t]),
            undiluted_next=undiluted[t] if undiluted is not None else None,
            il_next=il[t] if il is not None else None,
            price_return_next=price_return[t] if price_return is not None else None,
            base_rate=self.base_rate,
        )

    def rebalance_day(self, t: int) -> bool:
        return (t + self.offset) % self.every == 0

    def decide_on(
        self, t: int, holdings: np.ndarray, base: float, extra: np.ndarray | None = None
    ) -> tuple[StepDecision | None, np.ndarray]:
        """The strategy's decision on a rebalance day t over the pools known at t (eligible, held, or
        ``extra``): (the decision on those pools, their indices); (None, empty) when there is none."""
        h = holdings
        known = self._eligible[t] | (h > 0)
        if extra is not None:
            known |= extra
        idx = np.flatnonzero(known)
        if not idx.size:
            return None, idx
        costs = self.panels.costs_at(self.costs, t)
        prot = self._protocols[t] if self._protocols.ndim == 2 else self._protocols
        chains = self._chains[t] if self._chains.ndim == 2 else self._chains
        optimizer = self.optimizers.optimizer_for(self._pool_array[idx], prot[idx], chains[idx])
        wealth = _sum(h) + base
        return rebalance_step(
            optimizer.with_costs(costs),
            self._pred[t, idx],
            self._tvl[t, idx],
            wealth,
            h[idx],
            costs=costs,
            eligible=self._eligible[t, idx],
            base=base,
            hold=self.gaps.hold[t, idx],
            depth=self._depth[t, idx] if self._depth is not None else None,
        ), idx

    def policy(self, t: int, holdings: np.ndarray, base: float) -> StepDecision:
        """The strategy on row t as a ``Policy`` over every pool: on a rebalance day the optimizer's
        decision (cash when nothing is known), in between hold (sell what left the universe)."""
        h = holdings
        wealth = _sum(h) + base
        costs = self.panels.costs_at(self.costs, t)
        if not self.rebalance_day(t):
            return target_step(
                self.pools,
                h / wealth,
                self._tvl[t],
                wealth,
                h,
                costs=costs,
                predicted_apy=self._pred[t],
                eligible=self._eligible[t],
                base=base,
                hold=self.gaps.hold[t],
            )
        sub, idx = self.decide_on(t, h, base)
        if sub is None:  # no universe and nothing held: cash
            return target_step(
                self.pools, np.zeros(len(self.pools)), self._tvl[t], wealth, h, costs=costs, base=base
            )
        return expand_decision(sub, idx, self.pools, h)

    # -- moves of the book ---------------------------------------------------------------------

    def accrue(self, t: int) -> Accrual:
        """Grow the book into row t; the result is also what row t *expected*."""
        acc = self.accrual(t, self.holdings, self.base)
        self.holdings, self.base = acc.holdings, acc.base
        self.expected, self.expected_base = acc.holdings, acc.base
        return acc

    def observe(self, holdings: np.ndarray, base: float) -> None:
        """Start the day from real holdings (the accrued state stays as ``expected``)."""
        self.holdings, self.base = np.asarray(holdings, dtype=float), float(base)

    def decide(self, t: int, extra: np.ndarray | None = None) -> tuple[StepDecision | None, np.ndarray]:
        """:meth:`decide_on` from the book's holdings."""
        return self.decide_on(t, self.holdings, self.base, extra)

    def trade(self, decision: StepDecision, idx: np.ndarray | None = None) -> None:
        """The book after ``decision`` (over the pools ``idx``, or every pool)."""
        if idx is None:
            self.holdings = np.asarray(decision.holdings_after, dtype=float)
        else:
            h = np.zeros(len(self.pools))
            h[idx] = decision.holdings_after
            self.holdings = h
        self.base = float(decision.base_after)


def expand_decision(
    sub: StepDecision, idx: np.ndarray, pools: tuple[str, ...], holdings: np.ndarray
) -> StepDecision:
    """A decision on the pools ``idx`` as one on every pool (the others hold nothing and trade nothing)."""
    n = len(pools)

    def full(values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        out = np.full(n, fill, dtype=float)
        out[idx] = values
        return out

    # the dataclasses built directly (``dataclasses.replace`` costs ~10 us a call, twice a step)
    result = sub.result
    if result is not None:
        result = RebalanceResult(
            pools,
            full(result.target_weights),
            full(result.current_weights),
            full(result.trades_usd),
            result.objective,
            result.status,
            result.solver,
            result.solve_time_s,
            result.message,
            full(result.dilution_factor, np.nan),
            result.n_pruned,
        )
    return StepDecision(
        pools,
        sub.wealth_before,
        np.asarray(holdings, dtype=float),
        full(sub.holdings_after),
        sub.base_after,
        full(sub.target_weights),
        full(sub.predicted_apy, np.nan),
        full(sub.trades_usd),
        sub.cost_usd,
        sub.gas_usd,
        sub.n_trades,
        sub.n_forced_sales,
        result,
    )


def day_numbers(dates: pd.DatetimeIndex) -> np.ndarray:
    """Calendar day numbers of ``dates`` (days since the epoch), for gap ages."""
    return (pd.DatetimeIndex(dates).as_unit("ns").asi8 // 86_400_000_000_000).astype(float)
