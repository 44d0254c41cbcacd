"""The ``strategy:`` section of a vault YAML: costs, risk limits and solver settings."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from midfreq_assets.domain.config.base import StrictModel
from midfreq_assets.domain.portfolio.costs import TradingCosts

Weight = Annotated[float, Field(ge=0, le=1)]
SolverValue = float | int | bool

#: Tight tolerances for first-order solvers (their defaults leave ~1e-5 constraint violations);
#: ``strategy.solver_options`` overrides them key by key.
DEFAULT_SOLVER_OPTIONS: dict[str, dict[str, SolverValue]] = {
    "OSQP": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iter": 100_000, "polish": True},
    "SCS": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 100_000},
}
#: The tolerance and iteration settings each cvxpy solver accepts (a typo fails at load, not in a
#: nightly solve that silently ignores it).
SOLVER_SETTING_KEYS: dict[str, frozenset[str]] = {
    "CLARABEL": frozenset(
        {
            "tol_gap_abs",
            "tol_gap_rel",
            "tol_feas",
            "tol_infeas_abs",
            "tol_infeas_rel",
            "tol_ktratio",
            "max_iter",
            "time_limit",
        }
    ),
    "OSQP": frozenset(
        {"eps_abs", "eps_rel", "eps_prim_inf", "eps_dual_inf", "max_iter", "polish", "time_limit"}
    ),
    "SCS": frozenset({"eps_abs", "eps_rel", "eps_infeas", "max_iters", "time_limit_secs"}),
    "ECOS": frozenset({"abstol", "reltol", "feastol", "max_iters"}),
}
#: A solver's answer violating a constraint by more than this (in weight) is rejected.
DEFAULT_FEASIBILITY_TOLERANCE = 1e-7


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
    max_pool_tvl_share: float | None = Field(default=None, gt=0, le=1, description="x_i * W <= share * tvl_i")
    max_turnover: float | None = Field(default=None, ge=0, description="sum |x - x0| per rebalance")
    min_trade_usd: float = Field(default=0.0, ge=0, description="smaller trades are dropped after solve")
    max_predicted_apy: float = Field(
        default=10.0,
        gt=0,
        description="APY ceiling (fraction/yr; 10 = 1000 %/yr): a pool predicted above it, or "
        "with a non-finite prediction, is refused (never bought, only sold) and named in the solver message",
    )
    primary_solver: str = Field(default="CLARABEL", description="cvxpy solver name")
    fallback_solver: str | None = Field(
        default="OSQP", description="cvxpy solver tried when the primary fails"
    )
    max_gap_days: int = Field(
        default=3,
        ge=0,
        description="a held pool missing from the data up to this many days keeps its holding (accruing at "
        "its last known yield, flagged); a longer absence or a universe exit forces a sale",
    )
    use_fast_path: bool = Field(
        default=True, description="exact solver when no turnover cap and the group caps nest (else cvxpy)"
    )
    solver_options: dict[str, dict[str, SolverValue]] = Field(
        default_factory=dict,
        description="per cvxpy solver: tolerances and iteration limits, merged over DEFAULT_SOLVER_OPTIONS",
    )
    feasibility_tolerance: float = Field(
        default=DEFAULT_FEASIBILITY_TOLERANCE,
        gt=0,
        le=1e-3,
        description="max constraint violation (weight) of an accepted solver answer",
    )

    @field_validator("solver_options")
    @classmethod
    def _known_settings(cls, options: dict[str, dict[str, SolverValue]]) -> dict[str, dict[str, SolverValue]]:
        out = {}
        for solver, settings in options.items():
            name = solver.upper()
            if name not in SOLVER_SETTING_KEYS:
                raise ValueError(
                    f"solver {solver!r} has no known settings; one of {sorted(SOLVER_SETTING_KEYS)}"
                )
            unknown = sorted(set(settings) - SOLVER_SETTING_KEYS[name])
            if unknown:
                raise ValueError(
                    f"{solver}: unknown setting(s) {unknown}; known: {sorted(SOLVER_SETTING_KEYS[name])}"
                )
            bad = [k for k, v in settings.items() if not isinstance(v, bool) and v <= 0]
            if bad:
                raise ValueError(f"{solver}: {bad} must be positive")
            out[name] = dict(settings)
        return out

    def solver_settings(self, solver: str) -> dict[str, SolverValue]:
        """Keyword arguments for ``problem.solve(solver=...)``: the defaults, then this strategy's."""
        name = solver.upper()
        return {**DEFAULT_SOLVER_OPTIONS.get(name, {}), **self.solver_options.get(name, {})}

    def costs(self) -> TradingCosts:
        """The one cost definition the optimizer and the accounting share."""
        return TradingCosts(
            cost=self.cost,
            gas_usd=self.gas_usd,
            horizon_days=self.horizon_days,
            gas_multiple=self.gas_multiple,
            min_trade_usd=self.min_trade_usd,
        )

    def amortized_cost(self) -> float:
        """Cost per year of holding horizon: same units as the APY."""
        return self.costs().amortized()
