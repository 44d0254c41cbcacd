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


def test_a_repeated_key_is_an_error_naming_file_and_key(tmp_path: Path):
    text = VAULT.read_text() + "\nmin_pool_tvl_usd: 1\n"  # the file already sets it: last one must not win
    path = tmp_path / "usd_lending.yaml"
    path.write_text(text)
    with pytest.raises(
        ConfigError, match=r"usd_lending\.yaml: .*duplicate key 'min_pool_tvl_usd' \(line \d+, first"
    ):
        load_vault_config(path)


def test_a_repeated_nested_key_is_an_error(tmp_path: Path):
    path = tmp_path / "usd_lending.yaml"
    path.write_text(VAULT.read_text().replace("  cost: 0.0005", "  cost: 0.0005\n  cost: 0.5", 1))
    with pytest.raises(ConfigError, match="duplicate key 'cost'"):
        load_vault_config(path)


def test_alias_fan_out_is_refused(tmp_path: Path):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    path = tmp_path / "usd_lending.yaml"
    path.write_text(VAULT.read_text() + "\n" + "\n".join(levels) + "\n")  # 9^9 strings if expanded
    with pytest.raises(ConfigError, match=r"usd_lending\.yaml: .*more than 16 aliases"):
        load_vault_config(path)


def test_a_few_aliases_still_work(tmp_path: Path):
    from midfreq_assets.domain.config.base import read_yaml

    path = tmp_path / "grid.yaml"
    path.write_text("base: &base {cost: 0.001, gas_usd: 5}\nlow: *base\nhigh: {<<: *base, cost: 0.01}\n")
    data = read_yaml(path)
    assert data["low"] == {"cost": 0.001, "gas_usd": 5} and data["high"]["cost"] == 0.01


def _strategy(**changes) -> dict:
    return yaml.safe_load(VAULT.read_text())["strategy"] | changes


def test_chain_caps_that_cannot_hold_the_budget_are_an_error_naming_keys_and_sum(tmp_path):
    caps = {"Ethereum": 0.2, "Base": 0.1, "Arbitrum": 0.1, "Polygon": 0.05, "Avalanche": 0.05}
    path = write_vault(tmp_path, strategy=_strategy(chain_caps=caps, base_buffer=0.02))
    with pytest.raises(ConfigError) as err:
        load_vault_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: invalid configuration (1 problem(s))")
    assert "strategy.chain_caps: every one of the vault's chains is capped" in message
    assert (
        "sum to 0.5, below the budget 1 - strategy.base_buffer = 0.98" in message
        and "'Ethereum'" not in message
    )
    assert len(message.splitlines()) == 2  # one short line per problem, not the whole config
    # a chain without a cap can take the rest: valid, whatever the sum of the others
    ok = write_vault(tmp_path, strategy=_strategy(chain_caps={k: v for k, v in caps.items() if k != "Base"}))
    assert load_vault_config(ok).strategy.chain_caps["Ethereum"] == 0.2
    # caps on chains the vault does not hold do not count
    assert load_vault_config(write_vault(tmp_path, strategy=_strategy(chain_caps={"Optimism": 0.1})))


def test_protocol_caps_and_allow_list_that_cannot_hold_the_budget(tmp_path):
    caps = {"aave-v3": 0.3, "morpho-blue": 0.3, "fluid-lending": 0.1, "euler-v2": 0.1}
    with pytest.raises(
        ConfigError,
        match=r"strategy\.protocol_caps: every one of the vault's protocols is capped "
        r"\(aave-v3, euler-v2, fluid-lending, morpho-blue\) and the caps sum to 0\.8",
    ):
        load_vault_config(write_vault(tmp_path, strategy=_strategy(protocol_caps=caps)))
    # with a 25% buffer the same caps hold the budget (0.75)
    assert load_vault_config(write_vault(tmp_path, strategy=_strategy(protocol_caps=caps, base_buffer=0.25)))
    pools = ["f981a304-bb6c-45b8-b0c5-fd2f515ad23a", "aa70268e-4b52-42bf-a116-608b370f9501"]
    with pytest.raises(ConfigError, match=r"strategy\.concentration_limit: 0\.25 x 2 selected_pools = 0\.5"):
        load_vault_config(write_vault(tmp_path, selected_pools=pools))


def test_every_shipped_vault_config_still_loads():
    assert set(load_vault_configs()) >= {"usd_lending", "usd_curated", "eth_staking", "btc_lending"}
