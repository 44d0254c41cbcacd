"""A pool's legs against the vault's reference asset: prices in that asset, price P&L and an IL estimate.

A vault counts in its own asset (``usd``, ``eth``, ``btc``): a USD price ``p_usd`` becomes
``p_usd / p_ref_usd`` (``p_steth_in_eth = p_steth_usd / p_eth_usd``); for a USD vault nothing
changes. A leg pegged to the reference asset (``configs/tokens.yaml``) is held at par: its
deviations are priced by the peg yield, not as P&L. Every other leg moves the pool's value:

- daily price return of the pool (the basket of its legs at their reserve shares ``w``):
  ``r_t = log(sum_i w_i p_i(t) / p_i(t-1))`` with ``p_i = 1`` for pegged legs. A leg without a
  price that day counts as unmoved and flags the day; its move is booked when a price comes back
  (the base is the last known price);
- IL estimate over ``n`` days for a constant-function pool (the AMM keeps value shares ``w``):
  ``IL = prod K_i^w_i / sum w_i K_i - 1 <= 0`` with ``K_i = p_i(t) / p_i(t-n)``, the same
  definition as DefiLlama's il7d (concentrated liquidity loses more: this is a lower bound).

Formulas: ``docs/METHOD.md`` "Yields". Pure pandas/numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: A leg: its price coin (None when pegged to the reference asset, "" when no price is configured)
#: and its share of the pool's reserves.
Leg = tuple[str | None, float]


@dataclass(frozen=True)
class ReferencePricing:
    """The vault's reference asset: its USD price coin (None for usd) and the symbols pegged to it."""

    asset: str = "usd"
    coin: str | None = None
    pegged: frozenset[str] = field(default_factory=frozenset)


def to_reference(prices: pd.DataFrame, reference: ReferencePricing) -> tuple[pd.DataFrame, pd.Series]:
    """USD prices (dates x coins) in the reference asset, and the days its own price is missing
    (every converted price is NaN then: nothing is priced against a guess)."""
    if reference.coin is None:
        return prices, pd.Series(False, index=prices.index)
    ref = prices[reference.coin] if reference.coin in prices else pd.Series(np.nan, index=prices.index)
    return prices.div(ref, axis=0), ref.isna()


def pool_legs(
    symbols: tuple[str, ...], shares: tuple[float, ...], reference: ReferencePricing, coins: Mapping[str, str]
) -> tuple[Leg, ...]:
    """The legs of a pool: pegged ones without a coin, the others with their configured price coin."""
    return tuple(
        (None if s in reference.pegged else coins.get(s, ""), w) for s, w in zip(symbols, shares, strict=True)
    )


def is_exposed(legs: tuple[Leg, ...]) -> bool:
    """True when some leg is not pegged to the reference asset."""
    return any(coin is not None for coin, _ in legs)


def _exposed(prices: pd.DataFrame, legs: tuple[Leg, ...]) -> tuple[pd.DataFrame, np.ndarray, float]:
    """Prices of the exposed legs (a NaN column for a leg without a configured coin), their shares,
    and the total share of the pegged legs."""
    cols = {
        f"leg{i}": (prices[c] if c and c in prices else pd.Series(np.nan, index=prices.index))
        for i, (c, _) in enumerate(legs)
        if c is not None
    }
    shares = np.array([w for c, w in legs if c is not None], dtype=float)
    pegged = float(sum(w for c, w in legs if c is None))
    return pd.DataFrame(cols, index=prices.index), shares, pegged


def basket_log_return(prices: pd.DataFrame, legs: tuple[Leg, ...]) -> tuple[pd.Series, pd.Series]:
    """Daily log return of the pool's legs in the reference asset, and the days a leg had no price."""
    p, shares, pegged = _exposed(prices, legs)
    if p.empty:
        zero = pd.Series(0.0, index=prices.index)
        return zero, zero.astype(bool)
    ratio = p / p.ffill().shift(1)
    missing = ratio.isna()
    missing.iloc[0] = p.iloc[0].isna()  # day one has no base: only a missing price is a problem
    factor = ratio.fillna(1.0).to_numpy() @ shares + pegged
    return pd.Series(np.log(factor), index=prices.index), missing.any(axis=1)


def il_estimate(prices: pd.DataFrame, legs: tuple[Leg, ...], window_days: int) -> pd.Series:
    """IL of a constant-function pool over the last ``window_days`` (a fraction <= 0; NaN when a price
    is missing at either end)."""
    p, shares, pegged = _exposed(prices, legs)
    if p.empty:
        return pd.Series(0.0, index=prices.index)
    k = (p / p.shift(window_days)).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        geometric = np.exp(np.log(k) @ shares)
    arithmetic = k @ shares + pegged
    return pd.Series(np.minimum(geometric / arithmetic - 1.0, 0.0), index=prices.index)
