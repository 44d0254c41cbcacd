"""Vault configuration: YAML files validated by pydantic, with errors that name file and key.

Configuration is data: every tunable of the universe, the research engine, the optimizer and
the backtest lives in a vault YAML file under ``configs/vaults/``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from midfreq_assets.domain.backtest.config import BacktestConfig
from midfreq_assets.domain.config.base import ConfigError, StrictModel, config_dir, load_model, normalize_slug
from midfreq_assets.domain.config.symbol_patterns import compile_symbol_pattern
from midfreq_assets.domain.config.tokens import ReferenceAsset
from midfreq_assets.domain.ingest.pool_ids import validate_pool_id
from midfreq_assets.domain.ingest.ranking import TopPoolsConfig
from midfreq_assets.domain.portfolio.limits import static_cap_problems
from midfreq_assets.domain.portfolio.live_config import ExecutionConfig, IntradayConfig, PositionsConfig
from midfreq_assets.domain.portfolio.strategy import StrategyConfig
from midfreq_assets.domain.research.features import FeatureMapConfig, yield_feature_map
from midfreq_assets.domain.research.labels import LabelMapConfig, LabelSpec
from midfreq_assets.domain.research.models import ModelsConfig
from midfreq_assets.domain.yields.config import YieldAdjustmentConfig


class ExclusionConfig(StrictModel):
    pools: list[str] = Field(default_factory=list, description="pool uuids never held")
    symbols: list[str] = Field(default_factory=list, description="pool symbols never held (case-insensitive)")
    projects: list[str] = Field(default_factory=list, description="project slugs never held")


#: The yield a vault predicts and earns by default: DefiLlama's quote after haircut, underlying
#: yield, peg and IL (``domain/yields/adjusted.py``).
EARNED_YIELD = "adjusted_apy"


def _earned_feature_map() -> FeatureMapConfig:
    return yield_feature_map(EARNED_YIELD)


def _earned_label_map() -> LabelMapConfig:
    return LabelMapConfig(families={"apy": LabelSpec(target=EARNED_YIELD)})


class VaultConfig(StrictModel):
    """One vault: its universe, its yield adjustments, research, strategy and backtest.

    By default the vault predicts and earns ``adjusted_apy`` (features, labels and the backtest's
    ``apy_column``); a vault spelling ``apy`` in its ``feature_map``/``label_map`` trades the quote.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="used as the asset key prefix")
    reference_asset: ReferenceAsset
    start_date: dt.date
    chains: list[str] = Field(min_length=1)
    protocols: dict[str, list[str]] = Field(
        min_length=1, description="protocol tiers: tier name -> DefiLlama project slugs"
    )
    underlying_tokens: list[str] | None = Field(
        default=None,
        description="whitelisted underlying symbols; default: the pegged symbols of the reference asset",
    )
    min_pool_tvl_usd: float = Field(default=0.0, ge=0)
    min_protocol_tvl_usd: float | None = Field(default=None, ge=0)
    exclude: ExclusionConfig = Field(default_factory=ExclusionConfig)
    # discovery rules (domain/ingest/discovery.py), each with its exclusion reason
    min_apy_mean_30d: float | None = Field(
        default=None, description="floor on the pool's 30-day mean APY (fraction/yr; DefiLlama apyMean30d)"
    )
    exclude_il_risk: bool = Field(default=False, description="leave out pools DefiLlama flags ilRisk: yes")
    stablecoin_only: bool = Field(
        default=False, description="keep only pools DefiLlama flags stablecoin: true"
    )
    exposure: Literal["single", "multi"] | None = Field(
        default=None, description="DefiLlama exposure required"
    )
    symbol_patterns: list[str] | None = Field(
        default=None,
        min_length=1,
        description="pool symbols held: globs or 're:' regexes, case-insensitive; a match also vouches for "
        "symbol parts of pools whose underlying addresses the token registry does not know",
    )
    selected_pools: list[str] | None = Field(
        default=None, min_length=1, description="allow-list of pool uuids (null: no allow-list)"
    )
    top_pools: TopPoolsConfig = Field(default_factory=TopPoolsConfig)
    allow_price_exposure: bool = Field(
        default=False,
        description="false: a pool holding a token not pegged to the reference asset is refused by the "
        "universe; true: it may be held, and its legs' price moves against the reference asset are accounted",
    )
    yields: YieldAdjustmentConfig = Field(default_factory=YieldAdjustmentConfig)
    feature_map: FeatureMapConfig = Field(default_factory=_earned_feature_map)
    label_map: LabelMapConfig = Field(default_factory=_earned_label_map)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    backtest: BacktestConfig = Field(default_factory=BacktestConfig)
    on_missing_upstream_days: Literal["fail", "tolerate"] = Field(
        default="fail",
        description="fail: features and rebalance_weights refuse to compute when an upstream day "
        "they read is not in the lake (pool_history in the features lookback, the previous day's holdings); "
        "tolerate: compute on the days that exist (features) or restart from cash (rebalance), with a warning",
    )
    positions: PositionsConfig | None = Field(
        default=None, description="the vault's real holdings (null: simulated from backtest.initial_wealth)"
    )
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    intraday: IntradayConfig = Field(default_factory=IntradayConfig)

    @field_validator("protocols")
    @classmethod
    def _normalize_protocols(cls, tiers: dict[str, list[str]]) -> dict[str, list[str]]:
        return {tier: [normalize_slug(p) for p in slugs] for tier, slugs in tiers.items()}

    @field_validator("chains")
    @classmethod
    def _strip_chains(cls, chains: list[str]) -> list[str]:
        return [c.strip() for c in chains]

    @field_validator("symbol_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str] | None) -> list[str] | None:
        for p in patterns or []:
            compile_symbol_pattern(p)
        return patterns

    @field_validator("selected_pools")
    @classmethod
    def _pool_ids(cls, pools: list[str] | None) -> list[str] | None:
        if pools is None:
            return None
        ids = [validate_pool_id(str(p).strip().lower()) for p in pools]
        if len(set(ids)) != len(ids):
            raise ValueError("selected_pools lists a pool twice")
        return ids

    @model_validator(mode="after")
    def _no_duplicate_protocols(self) -> VaultConfig:
        seen: dict[str, str] = {}
        for tier, slugs in self.protocols.items():
            for slug in slugs:
                if slug in seen and seen[slug] != tier:
                    raise ValueError(f"protocol {slug!r} is in two tiers: {seen[slug]!r} and {tier!r}")
                seen[slug] = tier
        return self

    @model_validator(mode="after")
    def _caps_can_hold_the_budget(self) -> VaultConfig:
        problems = static_cap_problems(
            self.strategy, self.chains, sorted(self.protocol_slugs), self.selected_pools
        )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def protocol_slugs(self) -> set[str]:
        return {slug for slugs in self.protocols.values() for slug in slugs}

    def protocol_tier(self, slug: str) -> str | None:
        for tier, slugs in self.protocols.items():
            if normalize_slug(slug) in slugs:
                return tier
        return None


def load_vault_config(path: Path | str) -> VaultConfig:
    vault = load_model(VaultConfig, path)
    stem = Path(path).stem
    if stem != vault.name:
        raise ConfigError(f"{path}: name: must match the file name {stem!r} (got {vault.name!r})")
    return vault


def load_vault_configs(directory: Path | str | None = None) -> dict[str, VaultConfig]:
    """All vaults in ``configs/vaults`` keyed by name (sorted, so asset graphs are stable)."""
    directory = Path(directory) if directory else config_dir() / "vaults"
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise ConfigError(f"{directory}: no vault configuration (*.yaml) found")
    return {v.name: v for v in (load_vault_config(f) for f in files)}
