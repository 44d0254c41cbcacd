"""Vault configuration: YAML files validated by pydantic, with errors that name file and key.

Configuration is data: every tunable of the universe, the research engine, the optimizer and
the backtest lives in a vault YAML file under ``configs/vaults/``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if TYPE_CHECKING:  # bound at runtime by _bind_research_sections (circular: they subclass StrictModel)
    from midfreq_assets.domain.features import FeatureMapConfig
    from midfreq_assets.domain.labels import LabelMapConfig
    from midfreq_assets.domain.models import ModelsConfig
    from midfreq_assets.domain.optimizer import StrategyConfig

from midfreq_assets.domain.adjusted_yields import YieldAdjustmentConfig

ReferenceAsset = Literal["usd", "eth", "btc"]

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


class ConfigError(ValueError):
    """A configuration file is unreadable or invalid; the message names file, key and problem."""


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors (catches typos)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def normalize_slug(name: str) -> str:
    """DefiLlama project slug: lower-case, spaces -> '-'."""
    return re.sub(r"\s+", "-", name.strip().lower())


class ExclusionConfig(StrictModel):
    pools: list[str] = Field(default_factory=list, description="pool uuids never held")
    symbols: list[str] = Field(default_factory=list, description="pool symbols never held (case-insensitive)")
    projects: list[str] = Field(default_factory=list, description="project slugs never held")


class VaultConfig(StrictModel):
    """One vault: its universe, and (in later sections) its research, strategy and backtest."""

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
    # research engine (features.py / labels.py / models.py); types bound by _bind_research_sections
    feature_map: FeatureMapConfig = Field(default_factory=lambda: FeatureMapConfig())
    label_map: LabelMapConfig = Field(default_factory=lambda: LabelMapConfig())
    models: ModelsConfig = Field(default_factory=lambda: ModelsConfig())
    yields: YieldAdjustmentConfig = Field(default_factory=YieldAdjustmentConfig)
    # rebalancing (optimizer.py); type bound by _bind_research_sections like the research sections
    strategy: StrategyConfig = Field(default_factory=lambda: StrategyConfig())

    @field_validator("protocols")
    @classmethod
    def _normalize_protocols(cls, tiers: dict[str, list[str]]) -> dict[str, list[str]]:
        return {tier: [normalize_slug(p) for p in slugs] for tier, slugs in tiers.items()}

    @field_validator("chains")
    @classmethod
    def _strip_chains(cls, chains: list[str]) -> list[str]:
        return [c.strip() for c in chains]

    @model_validator(mode="after")
    def _no_duplicate_protocols(self) -> VaultConfig:
        seen: dict[str, str] = {}
        for tier, slugs in self.protocols.items():
            for slug in slugs:
                if slug in seen and seen[slug] != tier:
                    raise ValueError(f"protocol {slug!r} is in two tiers: {seen[slug]!r} and {tier!r}")
                seen[slug] = tier
        return self

    @property
    def protocol_slugs(self) -> set[str]:
        return {slug for slugs in self.protocols.values() for slug in slugs}

    def protocol_tier(self, slug: str) -> str | None:
        for tier, slugs in self.protocols.items():
            if normalize_slug(slug) in slugs:
                return tier
        return None


def _bind_research_sections() -> None:
    """Resolve VaultConfig's research fields. Their classes subclass StrictModel, so their modules
    import this one; whichever side is imported first, the last one to finish binds them."""
    try:
        from midfreq_assets.domain.features import FeatureMapConfig
        from midfreq_assets.domain.labels import LabelMapConfig
        from midfreq_assets.domain.models import ModelsConfig
        from midfreq_assets.domain.optimizer import StrategyConfig
    except ImportError:  # a research module is still initializing: it calls this when done
        return
    globals().update(FeatureMapConfig=FeatureMapConfig, LabelMapConfig=LabelMapConfig, ModelsConfig=ModelsConfig)
    globals().update(StrategyConfig=StrategyConfig)
    VaultConfig.model_rebuild()


class TokenRegistry(StrictModel):
    """Token address -> symbol per chain, and the pegged symbols of each reference asset."""

    pegged_symbols: dict[ReferenceAsset, list[str]]
    addresses: dict[str, dict[str, str]] = Field(default_factory=dict)

    @field_validator("pegged_symbols")
    @classmethod
    def _lower_symbols(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return {asset: [s.lower() for s in symbols] for asset, symbols in value.items()}

    @field_validator("addresses")
    @classmethod
    def _lower_addresses(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        return {
            chain.lower(): {addr.lower(): sym.lower() for addr, sym in table.items()}
            for chain, table in value.items()
        }

    def symbol_of(self, chain: str, address: str) -> str | None:
        return self.addresses.get(chain.lower(), {}).get(address.lower())


M = TypeVar("M", bound=BaseModel)


def format_validation_error(path: Path | str, err: ValidationError) -> str:
    lines = [f"{path}: invalid configuration ({err.error_count()} problem(s))"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<top level>"
        if e["type"] == "extra_forbidden":
            problem = "unknown key (typo?)"
        else:
            problem = e["msg"]
            if "input" in e and e["type"] != "missing":
                problem += f" (got {e['input']!r})"
        lines.append(f"  - {key}: {problem}")
    return "\n".join(lines)


def read_yaml(path: Path | str) -> Any:
    path = Path(path)
    try:
        with path.open() as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def validate_model(model: type[M], data: Any, source: Path | str) -> M:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def load_model(model: type[M], path: Path | str) -> M:
    return validate_model(model, read_yaml(path), path)


def config_dir() -> Path:
    return Path(os.environ.get("MIDFREQ_CONFIG_DIR", DEFAULT_CONFIG_DIR))


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


def load_token_registry(path: Path | str | None = None) -> TokenRegistry:
    return load_model(TokenRegistry, path or config_dir() / "tokens.yaml")


_bind_research_sections()
