"""Token registry (``configs/tokens.yaml``): address -> symbol per chain, pegged symbols per reference asset."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from midfreq_assets.domain.config.base import StrictModel, config_dir, load_model

ReferenceAsset = Literal["usd", "eth", "btc"]


class TokenRegistry(StrictModel):
    """Token address -> symbol per chain, the pegged symbols of each reference asset, and the USD
    price coin of each non-USD reference asset (prices are converted into the vault's own asset)."""

    pegged_symbols: dict[ReferenceAsset, list[str]]
    addresses: dict[str, dict[str, str]] = Field(default_factory=dict)
    reference_coins: dict[ReferenceAsset, str] = Field(
        default_factory=dict,
        description="reference asset -> coins.llama.fi id of its USD price (eth: coingecko:ethereum); usd needs none",
    )

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

    def pegged(self, asset: ReferenceAsset) -> frozenset[str]:
        """Symbols pegged to ``asset`` (held at par: no price exposure against it)."""
        return frozenset(self.pegged_symbols.get(asset, []))

    def reference_coin(self, asset: ReferenceAsset) -> str | None:
        """The coin whose USD price converts USD prices into ``asset`` (None for usd)."""
        return None if asset == "usd" else self.reference_coins.get(asset)


def load_token_registry(path: Path | str | None = None) -> TokenRegistry:
    return load_model(TokenRegistry, path or config_dir() / "tokens.yaml")
