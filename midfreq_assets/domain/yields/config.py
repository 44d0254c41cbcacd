"""The vault's ``yields:`` section: which adjustments turn a quoted APY into what the vault earns."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from midfreq_assets.domain.config.base import StrictModel, normalize_slug
from midfreq_assets.domain.units import WEEKS_PER_YEAR

#: Projects whose reported APY already contains the underlying tokens' own yield (DefiLlama adds it).
DEFAULT_UNDERLYING_INCLUDED = ("curve-dex", "convex-finance")
#: Tolerance on configured reserve shares summing to 1.
WEIGHT_SUM_TOL = 1e-6

# DefiLlama pool chain names -> coins.llama.fi chain prefixes, where they differ.
DEFAULT_CHAIN_PREFIXES: dict[str, str] = {
    "avalanche": "avax",
    "binance": "bsc",
    "gnosis": "xdai",
    "polygon zkevm": "polygon_zkevm",
    "zksync era": "era",
}


class RewardHaircutConfig(StrictModel):
    method: Literal["none", "min_max_ratio"] = Field(
        default="none", description="none: keep reward APY; min_max_ratio: discount by price min/max"
    )
    lookback_days: int = Field(default=30, ge=2, le=365)
    min_observations: int = Field(
        default=7, ge=1, description="fewer prices in the window count as 'no price' (no haircut possible)"
    )
    missing_price_discount: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="discount used when a reward token has no price: 0 drops its reward APY, 1 keeps it",
    )
    default_reward_tokens: dict[str, list[str]] = Field(
        default_factory=dict,
        description="project slug -> reward coin ids, for pools whose rewardTokens DefiLlama leaves null",
    )


class PeggedToken(StrictModel):
    coin: str = Field(
        pattern=r"^[a-z0-9_-]+:\S+$", description="coins.llama.fi id: chain:address or coingecko:id"
    )
    peg: float | None = Field(
        default=1.0, gt=0, description="expected price E[p]; null = not pegged (price fetched, no peg yield)"
    )


class PegYieldConfig(StrictModel):
    enabled: bool = False
    horizon_days: float = Field(default=30.0, gt=0, description="T: how long until the peg is expected back")
    deadband: float = Field(default=0.0, ge=0, description="|(E-p)/p| below this is noise -> 0")
    max_abs_deviation: float = Field(
        default=0.01, gt=0, description="|(E-p)/p| is clipped here, so a depeg spike has a bounded effect"
    )
    depeg_threshold: float = Field(default=0.01, gt=0, description="|p/E - 1| above this sets flag_depeg")


class UnderlyingYieldConfig(StrictModel):
    pools: dict[str, str] = Field(
        default_factory=dict, description="underlying symbol -> DefiLlama pool uuid carrying its own APY"
    )
    max_gap_days: int = Field(default=3, ge=0, description="carry the underlying's last APY this many days")
    included_in_apy: list[str] = Field(
        default_factory=lambda: list(DEFAULT_UNDERLYING_INCLUDED),
        description="project slugs whose reported APY already includes the underlying's yield (adds nothing)",
    )
    pool_weights: dict[str, list[float]] = Field(
        default_factory=dict,
        description="pool uuid -> share of each underlying in the pool's reserves, in DefiLlama's "
        "underlyingTokens order (default 1/n: /pools gives no reserve shares)",
    )

    @field_validator("pools")
    @classmethod
    def _lower(cls, value: dict[str, str]) -> dict[str, str]:
        return {k.lower(): v for k, v in value.items()}

    @field_validator("included_in_apy")
    @classmethod
    def _slugs(cls, value: list[str]) -> list[str]:
        return [normalize_slug(v) for v in value]

    @field_validator("pool_weights")
    @classmethod
    def _shares(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for pool, shares in value.items():
            if not shares or any(w <= 0 for w in shares) or abs(sum(shares) - 1.0) > WEIGHT_SUM_TOL:
                raise ValueError(f"pool_weights.{pool}: shares must be > 0 and sum to 1, got {shares}")
        return value


class ImpermanentLossConfig(StrictModel):
    enabled: bool = True
    il7d_unit: Literal["fraction", "percent"] = Field(
        default="fraction", description="pool_history stores fractions; 'percent' for raw DefiLlama values"
    )
    periods_per_year: float = Field(default=WEEKS_PER_YEAR, gt=0)
    window_days: int = Field(
        default=7, ge=1, description="the period il7d covers (and the estimate's window)"
    )
    missing: Literal["estimate", "flag"] = Field(
        default="estimate",
        description="multi-token pool without il7d: estimate IL from its legs' prices in the reference asset "
        "(price-exposed pools only; others 0) or charge nothing; either way the pool-day is flagged",
    )


class RateCurveConfig(StrictModel):
    """How lending markets' rate curves are fitted (docs/METHOD.md "Lending markets' rate curves")."""

    window_days: int = Field(
        default=90,
        ge=14,
        le=3650,
        description="days of history before the refit date a "
        "fit reads (rate parameters change by governance: a long window mixes curves)",
    )
    min_days: int = Field(default=28, ge=5, description="fewer usable days: no fit (TVL-share dilution)")
    max_relative_rmse: float = Field(
        default=0.1,
        gt=0,
        description="a fit whose in-sample borrow-rate RMSE "
        "exceeds this share of the mean borrow rate is poor (TVL-share dilution)",
    )
    refit_weekday: int = Field(default=0, ge=0, le=6, description="refit calendar: this weekday (0 = Monday)")


class YieldAdjustmentConfig(StrictModel):
    """The vault's `yields:` section. Everything defaults to 'no adjustment'."""

    rate_curves: RateCurveConfig = Field(default_factory=RateCurveConfig)

    tokens: dict[str, PeggedToken] = Field(
        default_factory=dict, description="underlying symbol (lower-case) -> price coin and expected peg"
    )
    reward_haircut: RewardHaircutConfig = Field(default_factory=RewardHaircutConfig)
    peg: PegYieldConfig = Field(default_factory=PegYieldConfig)
    underlying_yield: UnderlyingYieldConfig = Field(default_factory=UnderlyingYieldConfig)
    impermanent_loss: ImpermanentLossConfig = Field(default_factory=ImpermanentLossConfig)
    max_price_gap_days: int = Field(default=3, ge=0, description="forward-fill missing price days up to this")
    exit_memory_days: int = Field(
        default=30,
        ge=0,
        description="a pool keeps adjusted yields this many days after it was last in the vault's universe "
        "(features stay continuous through short exits; a holding still accrues on its exit day)",
    )
    extra_coins: list[str] = Field(
        default_factory=list, description="more coin ids to fetch into token_prices"
    )
    chain_prefixes: dict[str, str] = Field(
        default_factory=dict, description="pool chain name -> coins.llama.fi prefix, on top of the defaults"
    )

    @field_validator("tokens")
    @classmethod
    def _lower_tokens(cls, value: dict[str, PeggedToken]) -> dict[str, PeggedToken]:
        return {k.lower(): v for k, v in value.items()}

    @property
    def lookback_days(self) -> int:
        """History a day's computation needs (reward or IL window plus the fill allowances)."""
        window = max(self.reward_haircut.lookback_days, self.impermanent_loss.window_days + 1)
        return window + max(self.max_price_gap_days, self.underlying_yield.max_gap_days)

    def price_coins(self) -> list[str]:
        """Every coin whose prices this configuration uses, in a stable order."""
        coins = [t.coin for t in self.tokens.values()]
        coins += [c for tokens in self.reward_haircut.default_reward_tokens.values() for c in tokens]
        coins += self.extra_coins
        return list(dict.fromkeys(coins))

    def coin_id(self, chain: str, address: str) -> str:
        """A pool's (chain, token address) as a coins.llama.fi id."""
        name = chain.strip().lower()
        prefix = {**DEFAULT_CHAIN_PREFIXES, **{k.lower(): v for k, v in self.chain_prefixes.items()}}.get(
            name, name
        )
        return f"{prefix}:{address}"
