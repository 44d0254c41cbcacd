"""The vault's ``yields:`` section: which adjustments turn a quoted APY into what the vault earns."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import Field, field_validator

from midfreq_assets.domain.config.base import StrictModel
from midfreq_assets.domain.units import WEEKS_PER_YEAR

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
        default=0.0, ge=0.0, le=1.0,
        description="discount used when a reward token has no price: 0 drops its reward APY, 1 keeps it",
    )
    default_reward_tokens: dict[str, list[str]] = Field(
        default_factory=dict,
        description="project slug -> reward coin ids, for pools whose rewardTokens DefiLlama leaves null",
    )


class PeggedToken(StrictModel):
    coin: str = Field(pattern=r"^[a-z0-9_-]+:\S+$", description="coins.llama.fi id: chain:address or coingecko:id")
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

    @field_validator("pools")
    @classmethod
    def _lower(cls, value: dict[str, str]) -> dict[str, str]:
        return {k.lower(): v for k, v in value.items()}


class ImpermanentLossConfig(StrictModel):
    enabled: bool = True
    il7d_unit: Literal["fraction", "percent"] = Field(
        default="fraction", description="pool_history stores fractions; 'percent' for raw DefiLlama values"
    )
    periods_per_year: float = Field(default=WEEKS_PER_YEAR, gt=0)


class YieldAdjustmentConfig(StrictModel):
    """The vault's `yields:` section. Everything defaults to 'no adjustment'."""

    tokens: dict[str, PeggedToken] = Field(
        default_factory=dict, description="underlying symbol (lower-case) -> price coin and expected peg"
    )
    reward_haircut: RewardHaircutConfig = Field(default_factory=RewardHaircutConfig)
    peg: PegYieldConfig = Field(default_factory=PegYieldConfig)
    underlying_yield: UnderlyingYieldConfig = Field(default_factory=UnderlyingYieldConfig)
    impermanent_loss: ImpermanentLossConfig = Field(default_factory=ImpermanentLossConfig)
    max_price_gap_days: int = Field(default=3, ge=0, description="forward-fill missing price days up to this")
    extra_coins: list[str] = Field(default_factory=list, description="more coin ids to fetch into token_prices")
    chain_prefixes: dict[str, str] = Field(
        default_factory=dict, description="pool chain name -> coins.llama.fi prefix, on top of the defaults"
    )

    @field_validator("tokens")
    @classmethod
    def _lower_tokens(cls, value: dict[str, PeggedToken]) -> dict[str, PeggedToken]:
        return {k.lower(): v for k, v in value.items()}

    @property
    def lookback_days(self) -> int:
        """History a day's computation needs (reward window plus the fill allowances)."""
        return self.reward_haircut.lookback_days + max(self.max_price_gap_days, self.underlying_yield.max_gap_days)

    def price_coins(self) -> list[str]:
        """Every coin whose prices this configuration uses, in a stable order."""
        coins = [t.coin for t in self.tokens.values()]
        coins += [c for tokens in self.reward_haircut.default_reward_tokens.values() for c in tokens]
        coins += self.extra_coins
        return list(dict.fromkeys(coins))

    def coin_id(self, chain: str, address: str) -> str:
        """A pool's (chain, token address) as a coins.llama.fi id."""
        name = chain.strip().lower()
        prefix = {**DEFAULT_CHAIN_PREFIXES, **{k.lower(): v for k, v in self.chain_prefixes.items()}}.get(name, name)
        return f"{prefix}:{address}"


def price_coins_for(configs: Iterable[YieldAdjustmentConfig]) -> list[str]:
    """The coins ``token_prices`` fetches for several vaults (in vault order, no duplicates)."""
    return list(dict.fromkeys(c for config in configs for c in config.price_coins()))
