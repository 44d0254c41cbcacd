"""Vault YAML validation: errors name the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from midfreq_assets.domain.config.base import ConfigError
from midfreq_assets.domain.config.tokens import load_token_registry
from midfreq_assets.domain.config.vault import load_vault_config, load_vault_configs

REPO = Path(__file__).parents[3]
VAULT = REPO / "configs" / "vaults" / "usd_lending.yaml"


def write_vault(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(VAULT.read_text())
    data.update(changes)
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_bundled_vault_config_is_valid():
    vault = load_vault_config(VAULT)
    assert vault.name == "usd_lending"
    assert vault.reference_asset == "usd"
    assert {"aave-v3", "morpho-blue", "fluid-lending", "euler-v2"} <= vault.protocol_slugs
    assert vault.protocol_tier("Aave V3") == "tier1"
    assert "usd_lending" in load_vault_configs()


def test_typo_key_is_named_with_file(tmp_path):
    path = write_vault(tmp_path, min_pool_tvl=5)
    with pytest.raises(ConfigError) as err:
        load_vault_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "min_pool_tvl" in message and "unknown key" in message


def test_wrong_type_is_named(tmp_path):
    path = write_vault(tmp_path, min_pool_tvl_usd="lots")
    with pytest.raises(ConfigError, match=r"min_pool_tvl_usd: .*number"):
        load_vault_config(path)


def test_nested_typo_names_dotted_key(tmp_path):
    path = write_vault(tmp_path, exclude={"pool": ["x"]})
    with pytest.raises(ConfigError, match=r"exclude\.pool: unknown key"):
        load_vault_config(path)


def test_bad_reference_asset(tmp_path):
    path = write_vault(tmp_path, reference_asset="eur")
    with pytest.raises(ConfigError, match="reference_asset"):
        load_vault_config(path)


def test_name_must_match_file(tmp_path):
    data = yaml.safe_load(VAULT.read_text())
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="must match the file name"):
        load_vault_config(path)


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_vault_config(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_vault_config(tmp_path / "nope.yaml")


def test_protocol_slugs_are_normalized(tmp_path):
    path = write_vault(tmp_path, protocols={"a": ["Aave V3", "morpho-blue"]})
    assert load_vault_config(path).protocol_slugs == {"aave-v3", "morpho-blue"}


def test_token_registry_maps_addresses_case_insensitively():
    tokens = load_token_registry()
    assert tokens.symbol_of("Ethereum", "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48") == "usdc"
    assert tokens.symbol_of("ethereum", "0xdead") is None
    assert "usdc" in tokens.pegged_symbols["usd"]
