"""The project's configuration files as a Dagster resource, so runs and tests can point elsewhere."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from midfreq_assets.domain.config.vault import (
    TokenRegistry,
    VaultConfig,
    config_dir,
    load_token_registry,
    load_vault_configs,
)


class ProjectConfig(ConfigurableResource):
    """Where the vault YAML files and the token registry live (default: ``configs/``)."""

    config_dir: str = Field(default_factory=lambda: str(config_dir()))

    def vaults(self) -> dict[str, VaultConfig]:
        return load_vault_configs(Path(self.config_dir) / "vaults")

    def tokens(self) -> TokenRegistry:
        return load_token_registry(Path(self.config_dir) / "tokens.yaml")
