"""How a backtest is run: the ``backtest:`` section of a vault (grids override it as ``backtest.<key>``)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from midfreq_assets.domain.config.base import StrictModel

BENCHMARKS = ("equal_weight", "best_trailing_apy", "tvl_weighted")


class BacktestConfig(StrictModel):
    """How a backtest is run (grid files may override these as ``backtest.<key>``)."""

    initial_wealth: float = Field(
        default=1_000_000.0, gt=0, description="starting wealth, in the vault's reference asset (USD, ETH, BTC)"
    )
    start: dt.date | None = Field(default=None, description="first decision day (default: first data day)")
    end: dt.date | None = Field(default=None, description="last day (default: last data day)")
    base_rate: float = Field(
        default=0.0,
        description="APY earned by the idle base asset (fraction/yr); Sharpe, Sortino and Calmar are computed "
        "on returns in excess of it",
    )
    rebalance_every_days: int = Field(default=1, ge=1, description="decide every k days; hold in between")
    estimator: str | None = Field(default=None, description="estimator of the apy family (default: primary)")
    label: str | None = Field(default=None, description="label predicted (default: first apy label)")
    refit_every_days: int = Field(default=30, ge=1, description="walk-forward refit cadence (learned models)")
    apy_column: Literal["apy", "adjusted_apy"] = Field(
        default="adjusted_apy",
        description="yield the vault earns: adjusted_apy (haircut, underlying, peg and IL, each once) or the "
        "raw DefiLlama apy (no adjustment at all, for comparison)",
    )
    benchmarks: list[str] = Field(default_factory=lambda: list(BENCHMARKS))
    benchmark_rebalance_days: int | None = Field(
        default=None, ge=1, description="benchmarks re-weight every k days (default: the strategy's cadence)"
    )
    trailing_days: int = Field(default=7, ge=1, description="window of the best-trailing-APY benchmark")

    @property
    def benchmark_every_days(self) -> int:
        return self.benchmark_rebalance_days or self.rebalance_every_days
