"""How a backtest is run: the ``backtest:`` section of a vault (grids override it as ``backtest.<key>``)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from midfreq_assets.domain.config.base import StrictModel

#: The benchmark rules (``benchmarks.py``, formulas in ``docs/METHOD.md`` "Benchmarks"), each filled
#: under the vault's own limits.
BENCHMARKS = (
    "best_trailing_apy",
    "top_k_trailing",
    "best_trailing_hysteresis",
    "incumbent",
    "equal_weight",
    "tvl_weighted",
)
#: The rules also shown without the position limits (``<rule>_unconstrained``, never the bar): the
#: whole budget in the best trailing pool says what the caps cost.
UNCONSTRAINED_BENCHMARKS = ("best_trailing_apy",)


class WalkForwardConfig(StrictModel):
    """Walk-forward selection of a grid's policy: consecutive test windows, each traded by the grid
    point that scored best on the days before it (``docs/METHOD.md`` "Honest evaluation")."""

    test_days: PositiveInt = Field(default=60, description="length of each test window (days)")
    train: Literal["expanding", "rolling"] = Field(
        default="expanding", description="train on all days before the window, or the last train_days"
    )
    train_days: PositiveInt | None = Field(default=None, description="rolling: days of the train window")
    min_train_days: PositiveInt = Field(
        default=90,
        description="days of train data before the first test window, counted from the first "
        "day some grid point is invested (before that every point sits idle and nothing can be learned)",
    )
    objective: Literal["log_growth", "sharpe"] = Field(
        default="log_growth",
        description="what the train window maximizes: log growth net of costs and gas, "
        "or the Sharpe ratio of returns in excess of base_rate",
    )

    @model_validator(mode="after")
    def _rolling_needs_length(self) -> WalkForwardConfig:
        if self.train == "rolling" and self.train_days is None:
            raise ValueError("walk_forward.train: rolling needs walk_forward.train_days")
        return self


class EvaluationConfig(StrictModel):
    """Overfitting statistics and the uncertainty of the walk-forward's excess over the benchmarks."""

    pbo_splits: PositiveInt = Field(
        default=16, description="CSCV blocks S (even): C(S, S/2) in/out-of-sample splits"
    )
    bootstrap_block_days: float = Field(
        default=10.0, ge=1.0, description="mean block length of the stationary bootstrap (days)"
    )
    bootstrap_resamples: PositiveInt = Field(default=2000)
    confidence: float = Field(
        default=0.9, gt=0, lt=1, description="two-sided confidence of the bootstrap interval"
    )
    seed: int = Field(default=0, description="bootstrap random seed (results are reproducible)")

    @model_validator(mode="after")
    def _even_splits(self) -> EvaluationConfig:
        if self.pbo_splits < 2 or self.pbo_splits % 2:
            raise ValueError(f"evaluation.pbo_splits must be even and >= 2, got {self.pbo_splits}")
        return self


class BacktestConfig(StrictModel):
    """How a backtest is run (grid files may override these as ``backtest.<key>``)."""

    initial_wealth: float = Field(
        default=1_000_000.0,
        gt=0,
        description="starting wealth, in the vault's reference asset (USD, ETH, BTC)",
    )
    start: dt.date | None = Field(default=None, description="first decision day (default: first data day)")
    end: dt.date | None = Field(default=None, description="last day (default: last data day)")
    base_rate: float = Field(
        default=0.0,
        description="APY earned by the idle base asset (fraction/yr); Sharpe, Sortino and Calmar are computed "
        "on returns in excess of it",
    )
    rebalance_every_days: int = Field(default=1, ge=1, description="decide every k days; hold in between")
    estimator: str | None = Field(
        default=None,
        description="estimator of the apy family (default: the one "
        "models.selection picks at each refit, as in production)",
    )
    label: str | None = Field(default=None, description="label predicted (default: first apy label)")
    apy_column: Literal["apy", "adjusted_apy"] = Field(
        default="adjusted_apy",
        description="yield the vault earns: adjusted_apy (haircut, underlying, peg and IL, each once) or the "
        "raw DefiLlama apy (no adjustment at all, for comparison)",
    )
    benchmarks: list[str] = Field(
        default_factory=lambda: list(BENCHMARKS),
        description=f"benchmark rules under the vault's limits, of {list(BENCHMARKS)}",
    )
    unconstrained_benchmarks: list[str] = Field(
        default_factory=lambda: list(UNCONSTRAINED_BENCHMARKS),
        description="rules also run without the position limits (budget only), shown as <rule>_unconstrained",
    )
    benchmark_rebalance_days: int | None = Field(
        default=None, ge=1, description="benchmarks re-weight every k days (default: the strategy's cadence)"
    )
    trailing_days: int = Field(
        default=7, ge=1, description="window of the trailing earned APY the benchmarks rank by"
    )
    top_k: PositiveInt = Field(default=5, description="pools of the top_k_trailing benchmark")
    walk_forward: WalkForwardConfig = Field(default_factory=WalkForwardConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    @model_validator(mode="after")
    def _known_benchmarks(self) -> BacktestConfig:
        unknown = sorted(set(self.benchmarks) | set(self.unconstrained_benchmarks))
        unknown = [b for b in unknown if b not in BENCHMARKS]
        if unknown:
            raise ValueError(f"unknown benchmark(s) {unknown}; known: {list(BENCHMARKS)}")
        return self

    @property
    def benchmark_every_days(self) -> int:
        return self.benchmark_rebalance_days or self.rebalance_every_days
