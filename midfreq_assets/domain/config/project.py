"""The whole configuration of a midfreq deployment, loaded once from a config directory.

``configs/`` holds one YAML per vault (``vaults/``), the token registry, the Binance collection,
the price research study and the backtest grids. :func:`load_project` validates all of it up
front (errors name file and key), and the Dagster definitions and every run read the same
:class:`Project` object: nothing reloads configuration behind the graph's back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from midfreq_assets.domain.config.base import ConfigError, config_dir
from midfreq_assets.domain.config.tokens import TokenRegistry, load_token_registry
from midfreq_assets.domain.config.vault import VaultConfig, load_vault_configs
from midfreq_assets.domain.ingest.binance_config import BinanceConfig, load_binance_config
from midfreq_assets.domain.research.price_config import PriceResearchConfig, load_price_research_config

BINANCE_FILE = Path("binance.yaml")
PRICE_RESEARCH_FILE = Path("research") / "btc_price.yaml"


@dataclass(frozen=True)
class Project:
    """Every validated configuration section of one config directory."""

    config_dir: Path
    vaults: dict[str, VaultConfig]
    tokens: TokenRegistry
    binance: BinanceConfig | None  # None: no binance.yaml, no klines collected
    price_research: PriceResearchConfig | None  # None: no price research study

    @property
    def grids_dir(self) -> Path:
        return self.config_dir / "grids"

    @property
    def earliest_start(self) -> dt.date:
        """First day any vault trades: where the daily partitions begin."""
        return min(v.start_date for v in self.vaults.values())

    def price_coins(self) -> list[str]:
        """Every coin ``token_prices`` fetches: the vaults' configured coins and their reference assets'
        USD prices (vault order, no duplicates)."""
        coins = [c for v in self.vaults.values() for c in v.yields.price_coins()]
        coins += [c for v in self.vaults.values() if (c := self.tokens.reference_coin(v.reference_asset))]
        return list(dict.fromkeys(coins))

    def vault(self, name: str) -> VaultConfig:
        try:
            return self.vaults[name]
        except KeyError:
            raise ConfigError(
                f"{self.config_dir / 'vaults'}: no vault named {name!r} (have {', '.join(self.vaults)})"
            ) from None


def load_project(directory: Path | str | None = None) -> Project:
    """Load and validate ``directory`` (default: ``$MIDFREQ_CONFIG_DIR`` or the repository's ``configs/``).

    ``vaults/`` and ``tokens.yaml`` are required; ``binance.yaml`` and the price research study are
    optional (a yield-only deployment has neither).
    """
    root = Path(directory) if directory is not None else config_dir()
    binance, price = root / BINANCE_FILE, root / PRICE_RESEARCH_FILE
    vaults = load_vault_configs(root / "vaults")
    tokens = load_token_registry(root / "tokens.yaml")
    for vault in vaults.values():
        if vault.reference_asset != "usd" and tokens.reference_coin(vault.reference_asset) is None:
            raise ConfigError(
                f"{root / 'tokens.yaml'}: reference_coins.{vault.reference_asset}: missing; vault "
                f"{vault.name} prices its tokens in {vault.reference_asset} and needs its USD price coin"
            )
    return Project(
        config_dir=root,
        vaults=vaults,
        tokens=tokens,
        binance=load_binance_config(binance) if binance.exists() else None,
        price_research=load_price_research_config(price) if price.exists() else None,
    )
