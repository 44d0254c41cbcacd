"""The ``strategy:`` section of a vault YAML: costs, risk limits and solver settings."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from midfreq_assets.domain.config.base import StrictModel
from midfreq_assets.domain.portfolio.costs import TradingCosts

Weight = Annotated[float, Field(ge=0, le=1)]


class StrategyConfig(StrictModel):
    """Costs, limits and solver choice of the rebalancing policy (weights are fractions of wealth)."""

    cost: float = Field(default=0.0005, ge=0, description="one-off cost per unit of traded notional")
    horizon_days: float = Field(default=30.0, gt=0, description="assumed holding horizon (amortizes cost)")
    gas_usd: float = Field(default=0.0, ge=0, description="fixed dollar cost per transaction")
    gas_multiple: float = Field(
        default=2.0, ge=0, description="keep a trade only if its expected gain >= gas_multiple * gas_usd"
    )
    base_buffer: float = Field(default=0.0, ge=0, lt=1, description="fraction of wealth kept idle")
    concentration_limit: float = Field(default=1.0, gt=0, le=1, description="max weight per pool")
    protocol_caps: dict[str, Weight] = Field(
        default_factory=dict, description="project slug -> max total weight"
    )
    chain_caps: dict[str, Weight] = Field(default_factory=dict, description="chain -> max total weight")
    max_pool_tvl_share: float | None = Field(
        default=None, gt=0, le=1, description="x_i * W <= share * tvl_i"
    )
    max_turnover: float | None = Field(default=None, ge=0, description="sum |x - x0| per rebalance")
    min_trade_usd: float = Field(default=0.0, ge=0, description="smaller trades are dropped after solve")
    primary_solver: str = Field(default="CLARABEL", description="cvxpy solver name")
    fallback_solver: str | None = Field(default="OSQP", description="cvxpy solver tried when the primary fails")
    use_fast_path: bool = Field(
        default=True, description="exact solver when no turnover cap and the group caps nest (else cvxpy)"
    )

    def costs(self) -> TradingCosts:
        """The one cost definition the optimizer and the accounting share."""
        return TradingCosts(cost=self.cost, gas_usd=self.gas_usd, horizon_days=self.horizon_days,
                            gas_multiple=self.gas_multiple, min_trade_usd=self.min_trade_usd)

    def amortized_cost(self) -> float:
        """Cost per year of holding horizon: same units as the APY."""
        return self.costs().amortized()
