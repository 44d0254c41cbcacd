"""What a trade costs: one definition read by the optimizer and by the accounting alike.

Like cvxportfolio's cost objects (one instance in the policy's objective and in the simulator),
:class:`TradingCosts` is built once from the vault's ``strategy:`` section and handed both to
:class:`~midfreq_assets.domain.portfolio.optimizer.VaultOptimizer` (amortized cost in the
objective, gas pruning) and to :func:`~midfreq_assets.domain.portfolio.step.execute_trade` (what a
trade actually pays), so the two can never disagree. Formulas: ``docs/METHOD.md`` "Rebalancing".
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from midfreq_assets.domain.portfolio.reductions import add_reduce as _sum
from midfreq_assets.domain.units import years


@dataclass(frozen=True)
class TradingCosts:
    """Proportional cost per unit of traded notional, fixed gas per transaction, holding horizon."""

    cost: float = 0.0  # fraction of traded notional, paid once per trade
    gas_usd: float = 0.0  # dollars per transaction
    horizon_days: float = 30.0  # the holding horizon a one-off cost is amortized over
    gas_multiple: float = 2.0  # a trade must earn this many times its gas over the horizon
    min_trade_usd: float = 0.0  # smaller trades are not sent

    def in_reference(self, price_usd: float) -> TradingCosts:
        """The same costs for wealth counted in a reference asset worth ``price_usd`` dollars (an ETH
        vault pays ``gas_usd / p_eth`` ETH per transaction); the proportional cost is unit-free."""
        if price_usd == 1.0:
            return self
        if not (np.isfinite(price_usd) and price_usd > 0):
            raise ValueError(f"reference asset price must be positive and finite, got {price_usd!r}")
        return replace(self, gas_usd=self.gas_usd / price_usd, min_trade_usd=self.min_trade_usd / price_usd)

    def amortized(self) -> float:
        """``cost / (horizon_days / 365)``: the one-off cost per year of holding, in APY units."""
        return self.cost / years(self.horizon_days)

    def trade_cost_usd(self, trades_usd: np.ndarray) -> float:
        """Proportional cost of a set of trades (dollars, signed)."""
        return self.cost * float(_sum(np.abs(trades_usd)))

    def gas_cost_usd(self, n_trades: int) -> float:
        return self.gas_usd * n_trades

    def horizon_gain_usd(self, apy: np.ndarray, notional_usd: np.ndarray) -> np.ndarray:
        """Expected yield of ``notional_usd`` at ``apy`` over the holding horizon (dollars)."""
        return apy * notional_usd * years(self.horizon_days)

    @property
    def min_gain_usd(self) -> float:
        """A trade is worth its gas when it earns at least this much over the horizon."""
        return self.gas_multiple * self.gas_usd

    @property
    def prunes(self) -> bool:
        """True when some trades may be too small to be worth sending."""
        return self.min_gain_usd > 0 or self.min_trade_usd > 0
