"""One policy step, shared by the nightly ``rebalance_weights`` asset and the backtest.

Accounting contract (``docs/METHOD.md`` "Backtest"), per step t -> t+1:

- decide: :func:`rebalance_step` turns wealth ``W``, dollar holdings ``h`` and what is known at t
  (predicted APY, TVL, eligibility) into target weights ``x`` with :class:`VaultOptimizer`;
  pools that are not eligible at t (left the universe, or absent from the data longer than the
  strategy's ``max_gap_days``) are sold first; pools in a short data gap (``hold``) keep their
  holding untouched;
- trade: cost ``cost * sum|W x - h|`` plus ``gas_usd`` per trade, both paid from the idle base;
- accrue: :func:`accrue_step` grows ``h_i <- h_i exp(((apy_i - u_i) dilutor_i + u_i) dt + r_i)`` with
  ``dilutor_i = 1 / (1 + h_i / tvl_i)``, ``u_i`` the part of the earned yield our own size does not
  dilute (underlying yield, peg yield, IL) and ``r_i`` the legs' price return against the reference
  asset; IL is inside ``apy_i`` (counted once); the base earns its own rate;
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
from midfreq_assets.domain.portfolio.reductions import add_reduce as _sum
from midfreq_assets.domain.portfolio.reductions import and_reduce as _all
from midfreq_assets.domain.portfolio.reductions import or_reduce as _any

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
        return float(_sum(np.abs(self.trades_usd)) / self.wealth_before)

    @property
    def predicted_portfolio_apy(self) -> float:
        """Predicted APY of the invested part, diluted by our own size (NaN when nothing is held)."""
        w = self.target_weights
        if _sum(w) <= 0:
            return float("nan")
        dil = finite_or(self.dilution_factor, 1.0)
        a = finite_or(self.predicted_apy)
        return float(_sum(w * a * dil) / _sum(w))

    def to_frame(self) -> pd.DataFrame:
        """One row per pool: weights, trade and prediction (for the nightly asset)."""
        out = pd.DataFrame(
            {
                "pool": list(self.pools),
                "current_weight": self.holdings_before / self.wealth_before,
                "target_weight": self.target_weights,
                "trade_usd": self.trades_usd,
                "dilution_factor": self.dilution_factor,
            }
        )
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
    hold: np.ndarray | None = None,
    depth: np.ndarray | None = None,
) -> StepDecision:
    """Decide target weights with data known at t, and price the trade with ``costs`` (the object
    the optimizer was built with: its objective and the executed trade price the same costs).

    ``holdings`` are dollars per pool of ``optimizer.pools``; ``wealth`` includes the idle base
    (``base`` defaults to ``wealth - sum(holdings)``). A pool is eligible when it is in the
    universe and has a finite prediction and TVL; ineligible holdings are sold (forced, at cost),
    except the ``hold`` pools (a short data gap), whose holding is frozen. ``tvl`` sizes the caps,
    ``depth`` (None: the TVL) dilutes (the pools' responses, ``domain/yields/response.py``).
    """
    n = len(optimizer.pools)
    a, tvl, h, ok, wealth, base = _prepare(n, predicted_apy, tvl, wealth, holdings, eligible, base)
    held = _hold_mask(n, hold, h)
    forced = ~ok & ~held & (h > 0)
    # forced sales: the optimizer sees those pools at weight 0 (sell-only, so they stay at 0)
    x0 = np.where(forced, 0.0, np.maximum(h, 0.0) / wealth)
    result = optimizer.solve(a, tvl, wealth, x0, frozen=held if _any(held) else None, depth=depth)
    x = np.where(ok | held, result.target_weights, 0.0)
    return execute_trade(
        optimizer.pools, h, base, x, a, costs=costs, result=result, n_forced=int(_sum(forced))
    )


def _hold_mask(n: int, hold: np.ndarray | None, h: np.ndarray) -> np.ndarray:
    """Pools whose holding is frozen this step: in ``hold`` and actually held."""
    if hold is None:
        return np.zeros(n, dtype=bool)
    mask = np.asarray(hold, dtype=bool)
    if mask.shape != (n,):
        raise ValueError(f"hold has shape {mask.shape}, expected ({n},)")
    return mask & (h > 0)


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
    hold: np.ndarray | None = None,
) -> StepDecision:
    """Same accounting as :func:`rebalance_step` for weights chosen elsewhere (benchmarks, holds):
    ineligible pools are sold, ``hold`` pools keep their holding, the others are traded to
    ``target_weights``."""
    n = len(pools)
    pred = np.zeros(n) if predicted_apy is None else predicted_apy
    a, tvl, h, ok, wealth, base = _prepare(n, pred, tvl, wealth, holdings, eligible, base)
    held = _hold_mask(n, hold, h)
    forced = ~ok & ~held & (h > 0)
    x = np.where(ok, np.nan_to_num(np.asarray(target_weights, dtype=float), nan=0.0), 0.0)
    x = np.where(held, h / wealth, x)
    return execute_trade(pools, h, base, x, a, costs=costs, result=None, n_forced=int(_sum(forced)))


def _prepare(n, predicted_apy, tvl, wealth, holdings, eligible, base):
    a = np.asarray(predicted_apy, dtype=float)
    tvl = np.asarray(tvl, dtype=float)
    h = np.asarray(holdings, dtype=float)
    if a.shape != (n,) or tvl.shape != (n,) or h.shape != (n,):
        raise ValueError(
            f"expected arrays of {n} pools, got apy {a.shape}, tvl {tvl.shape}, holdings {h.shape}"
        )
    ok = np.isfinite(a) & np.isfinite(tvl) & (tvl > 0)
    if eligible is not None:
        ok &= np.asarray(eligible, dtype=bool)
    a = np.where(ok, a, np.nan)
    h = np.where(np.isfinite(h), h, 0.0)
    if base is None:
        base = wealth - float(_sum(h))
    wealth = float(_sum(h) + base)
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
    wealth = float(_sum(h) + base)
    target = target_weights * wealth
    trades = target - h
    traded = np.abs(trades) > TRADE_EPS * wealth
    trades = np.where(traded, trades, 0.0)
    target = np.where(traded, target, h)
    cost_usd = costs.trade_cost_usd(trades)
    n_trades = int(_sum(traded))
    gas = costs.gas_cost_usd(n_trades)
    return StepDecision(
        pools=tuple(pools),
        wealth_before=wealth,
        holdings_before=h,
        holdings_after=target,
        base_after=wealth - float(_sum(target)) - cost_usd - gas,
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
    """Holdings and base after one period of yield and price moves, with what each part earned."""

    holdings: np.ndarray
    base: float
    dilutor: np.ndarray  # 1 / (1 + h / tvl); 1 where the TVL is unknown
    realized_apy: np.ndarray  # earned yield used, before dilution (0 where unknown: marked at value)
    il_usd: float  # what the IL inside the earned yield cost (>= 0)
    price_pnl_usd: float  # the legs' price move against the reference asset
    missing_apy: int  # held pools without an APY at t+1

    @property
    def wealth(self) -> float:
        return float(_sum(self.holdings) + self.base)


def finite_or(values: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """``np.nan_to_num(values, nan=fill)`` (infinities to the largest floats); ``values`` itself when
    every value is finite (the common case: no copy, no ``nan_to_num`` overhead on the per-step path)."""
    v = np.asarray(values, dtype=float)
    ok = _isfinite(v)
    if _all(ok):
        return v
    if not _any(np.isinf(v)):  # NaNs only
        return np.where(ok, v, fill)
    return np.nan_to_num(v, nan=fill)


_isfinite = np.isfinite


def _finite(values: np.ndarray | None, n: int) -> np.ndarray:
    return np.zeros(n) if values is None else finite_or(values)


def accrue_step(
    holdings: np.ndarray,
    base: float,
    apy_next: np.ndarray,
    tvl_next: np.ndarray,
    dt_years: float,
    *,
    undiluted_next: np.ndarray | None = None,
    il_next: np.ndarray | None = None,
    price_return_next: np.ndarray | None = None,
    base_rate: float = 0.0,
) -> Accrual:
    """``h_i <- h_i exp(((apy_i - u_i) dilutor_i + u_i) dt + r_i)``; the base earns ``base_rate``.

    ``apy_next`` is the yield earned (IL included when the vault earns adjusted yields);
    ``undiluted_next`` its part our own size does not dilute (underlying, peg, IL); ``il_next`` the
    IL inside it (annual, <= 0: attribution only, never subtracted again); ``price_return_next`` the
    log price move of the pool's legs against the reference asset over the step. A held pool
    without an APY at t+1 is marked at value (earns 0) rather than dropped.
    """
    h = np.asarray(holdings, dtype=float)
    apy = np.asarray(apy_next, dtype=float)
    tvl = np.asarray(tvl_next, dtype=float)
    n = h.shape[0]
    held = h > 0
    apy_ok = _isfinite(apy)
    missing = held & ~apy_ok
    u = np.where(apy_ok, _finite(undiluted_next, n), 0.0)
    tvl_ok = _isfinite(tvl) & (tvl > 0)
    dil = np.where(tvl_ok, 1.0 / (1.0 + h / np.where(tvl_ok, tvl, 1.0)), 1.0)
    r = np.where(apy_ok, (apy - u) * dil + u, 0.0)
    grown = h * np.exp(r * dt_years)
    if il_next is not None:
        il = np.where(apy_ok, np.minimum(_finite(il_next, n), 0.0), 0.0)
        il_usd = float(_sum(h * np.exp((r - il) * dt_years) - grown))
    else:
        il_usd = 0.0
    moved = grown * np.exp(_finite(price_return_next, n)) if price_return_next is not None else grown * 1.0
    base_next = base * float(np.exp(base_rate * dt_years)) if base > 0 else base
    earned = np.where(apy_ok, apy, 0.0)
    return Accrual(moved, base_next, dil, earned, il_usd, float(_sum(moved - grown)), int(_sum(missing)))
