"""One policy step, shared by the nightly ``rebalance_weights`` asset and the backtest.

Accounting contract (``docs/METHOD.md`` "Backtest"), per step t -> t+1:

- decide: :func:`rebalance_step` turns wealth ``W``, dollar holdings ``h`` and what is known at t
  (predicted APY, TVL, eligibility) into target weights ``x`` with :class:`VaultOptimizer`;
  pools that are not eligible at t (left the universe, stopped reporting) are sold first;
- trade: cost ``cost * sum|W x - h|`` plus ``gas_usd`` per trade, both paid from the idle base;
- accrue: :func:`accrue_step` grows ``h_i <- h_i exp((apy_i dilutor_i - il_i) dt)`` with
  ``dilutor_i = 1 / (1 + h_i / tvl_i)``; the base earns its own rate;
- ``W = sum(h) + base`` (costs and gas were already taken out of the base).

The base can dip slightly below zero when the book is fully invested (costs are a small debt of
the base, as in the contract's ``W = sum(h) + base - costs - gas``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from midfreq_assets.domain.portfolio.costs import TradingCosts
from midfreq_assets.domain.portfolio.optimizer import RebalanceResult, VaultOptimizer

#: Trades smaller than this fraction of wealth are float noise, not transactions.
TRADE_EPS = 1e-10


@dataclass(frozen=True)
class StepDecision:
    """What one rebalance decided and paid. Arrays are aligned with ``pools``."""

    pools: tuple[str, ...]
    wealth_before: float  # W = sum(h) + base before trading
    holdings_before: np.ndarray  # dollars
    holdings_after: np.ndarray  # dollars after the trade = W x
    base_after: float  # idle base after the trade, costs and gas paid
    target_weights: np.ndarray
    predicted_apy: np.ndarray  # NaN where not eligible
    trades_usd: np.ndarray  # W x - h (negative = sell)
    cost_usd: float
    gas_usd: float
    n_trades: int
    n_forced_sales: int  # holdings sold because the pool was not eligible
    result: RebalanceResult | None  # None when the weights were not chosen by the optimizer

    @property
    def status(self) -> str:
        return self.result.status if self.result is not None else "given_weights"

    @property
    def dilution_factor(self) -> np.ndarray:
        """1 / (1 + W x / tvl) at decision time (NaN where unknown)."""
        if self.result is not None:
            return self.result.dilution_factor
        return np.full(len(self.pools), np.nan)

    @property
    def turnover(self) -> float:
        """Traded notional / wealth (one-way: a full switch counts 2)."""
        return float(np.abs(self.trades_usd).sum() / self.wealth_before)

    @property
    def predicted_portfolio_apy(self) -> float:
        """Predicted APY of the invested part, diluted by our own size (NaN when nothing is held)."""
        w = self.target_weights
        if w.sum() <= 0:
            return float("nan")
        dil = np.nan_to_num(self.dilution_factor, nan=1.0)
        a = np.nan_to_num(self.predicted_apy, nan=0.0)
        return float((w * a * dil).sum() / w.sum())

    def to_frame(self) -> pd.DataFrame:
        """One row per pool: weights, trade and prediction (for the nightly asset)."""
        out = pd.DataFrame({"pool": list(self.pools), "current_weight": self.holdings_before / self.wealth_before,
                            "target_weight": self.target_weights, "trade_usd": self.trades_usd,
                            "dilution_factor": self.dilution_factor})
        out["predicted_apy"] = self.predicted_apy
        out["holding_usd"] = self.holdings_after
        return out


def rebalance_step(
    optimizer: VaultOptimizer,
    predicted_apy: np.ndarray,
    tvl: np.ndarray,
    wealth: float,
    holdings: np.ndarray,
    *,
    costs: TradingCosts,
    eligible: np.ndarray | None = None,
    base: float | None = None,
) -> StepDecision:
    """Decide target weights with data known at t, and price the trade with ``costs`` (the object
    the optimizer was built with: its objective and the executed trade price the same costs).

    ``holdings`` are dollars per pool of ``optimizer.pools``; ``wealth`` includes the idle base
    (``base`` defaults to ``wealth - sum(holdings)``). A pool is eligible when it is in the
    universe and has a finite prediction and TVL; ineligible holdings are sold (forced, at cost).
    """
    n = len(optimizer.pools)
    a, tvl, h, ok, wealth, base = _prepare(n, predicted_apy, tvl, wealth, holdings, eligible, base)
    forced = ~ok & (h > 0)
    # forced sales: the optimizer sees those pools at weight 0 (sell-only, so they stay at 0)
    x0 = np.where(forced, 0.0, np.maximum(h, 0.0) / wealth)
    result = optimizer.solve(a, tvl, wealth, x0)
    x = np.where(ok, result.target_weights, 0.0)
    return execute_trade(optimizer.pools, h, base, x, a, costs=costs, result=result, n_forced=int(forced.sum()))


def target_step(
    pools: tuple[str, ...],
    target_weights: np.ndarray,
    tvl: np.ndarray,
    wealth: float,
    holdings: np.ndarray,
    *,
    costs: TradingCosts,
    predicted_apy: np.ndarray | None = None,
    eligible: np.ndarray | None = None,
    base: float | None = None,
) -> StepDecision:
    """Same accounting as :func:`rebalance_step` for weights chosen elsewhere (benchmarks, holds):
    ineligible pools are sold, the others are traded to ``target_weights``."""
    n = len(pools)
    pred = np.zeros(n) if predicted_apy is None else predicted_apy
    a, tvl, h, ok, wealth, base = _prepare(n, pred, tvl, wealth, holdings, eligible, base)
    forced = ~ok & (h > 0)
    x = np.where(ok, np.nan_to_num(np.asarray(target_weights, dtype=float), nan=0.0), 0.0)
    return execute_trade(pools, h, base, x, a, costs=costs, result=None, n_forced=int(forced.sum()))


def _prepare(n, predicted_apy, tvl, wealth, holdings, eligible, base):
    a = np.asarray(predicted_apy, dtype=float)
    tvl = np.asarray(tvl, dtype=float)
    h = np.asarray(holdings, dtype=float)
    if a.shape != (n,) or tvl.shape != (n,) or h.shape != (n,):
        raise ValueError(f"expected arrays of {n} pools, got apy {a.shape}, tvl {tvl.shape}, holdings {h.shape}")
    ok = np.isfinite(a) & np.isfinite(tvl) & (tvl > 0)
    if eligible is not None:
        ok &= np.asarray(eligible, dtype=bool)
    a = np.where(ok, a, np.nan)
    h = np.where(np.isfinite(h), h, 0.0)
    if base is None:
        base = wealth - float(h.sum())
    wealth = float(h.sum() + base)
    if not (np.isfinite(wealth) and wealth > 0):
        raise ValueError(f"wealth must be positive and finite, got {wealth!r}")
    return a, tvl, h, ok, wealth, float(base)


def execute_trade(
    pools: tuple[str, ...],
    holdings: np.ndarray,
    base: float,
    target_weights: np.ndarray,
    predicted_apy: np.ndarray,
    *,
    costs: TradingCosts,
    result: RebalanceResult | None,
    n_forced: int = 0,
) -> StepDecision:
    """Trade ``holdings`` to ``W x``: ``costs`` prices it (proportional cost plus gas per trade), paid from
    the base."""
    h = holdings
    wealth = float(h.sum() + base)
    target = target_weights * wealth
    trades = target - h
    traded = np.abs(trades) > TRADE_EPS * wealth
    trades = np.where(traded, trades, 0.0)
    target = np.where(traded, target, h)
    cost_usd = costs.trade_cost_usd(trades)
    n_trades = int(traded.sum())
    gas = costs.gas_cost_usd(n_trades)
    return StepDecision(
        pools=tuple(pools),
        wealth_before=wealth,
        holdings_before=h,
        holdings_after=target,
        base_after=wealth - float(target.sum()) - cost_usd - gas,
        target_weights=target / wealth,
        predicted_apy=predicted_apy,
        trades_usd=trades,
        cost_usd=cost_usd,
        gas_usd=gas,
        n_trades=n_trades,
        n_forced_sales=n_forced,
        result=result,
    )


@dataclass(frozen=True)
class Accrual:
    """Holdings and base after one period of yield."""

    holdings: np.ndarray
    base: float
    dilutor: np.ndarray  # 1 / (1 + h / tvl); 1 where the TVL is unknown
    realized_apy: np.ndarray  # apy used (0 where the pool did not report: marked at value)
    il_usd: float
    missing_apy: int  # held pools without an APY at t+1

    @property
    def wealth(self) -> float:
        return float(self.holdings.sum() + self.base)


def accrue_step(
    holdings: np.ndarray,
    base: float,
    apy_next: np.ndarray,
    tvl_next: np.ndarray,
    dt_years: float,
    *,
    il_next: np.ndarray | None = None,
    base_rate: float = 0.0,
) -> Accrual:
    """``h_i <- h_i exp(apy_i(t+1) dilutor_i dt) exp(-il_i dt)``; the base earns ``base_rate``.

    A held pool without an APY at t+1 is marked at value (earns 0) rather than dropped: it is sold
    at the next decision. ``il_next`` is an annualized loss rate >= 0 (e.g. ``|il7d| * 52``).
    """
    h = np.asarray(holdings, dtype=float)
    apy = np.asarray(apy_next, dtype=float)
    tvl = np.asarray(tvl_next, dtype=float)
    held = h > 0
    missing = held & ~np.isfinite(apy)
    r = np.where(np.isfinite(apy), apy, 0.0)
    tvl_ok = np.isfinite(tvl) & (tvl > 0)
    dil = np.where(tvl_ok, 1.0 / (1.0 + h / np.where(tvl_ok, tvl, 1.0)), 1.0)
    grown = h * np.exp(r * dil * dt_years)
    il_usd = 0.0
    if il_next is not None:
        il = np.abs(np.nan_to_num(np.asarray(il_next, dtype=float), nan=0.0))
        after = grown * np.exp(-il * dt_years)
        il_usd = float((grown - after).sum())
        grown = after
    base_next = base * float(np.exp(base_rate * dt_years)) if base > 0 else base
    return Accrual(grown, base_next, dil, r, il_usd, int(missing.sum()))
