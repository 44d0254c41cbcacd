"""token_prices and <vault>/adjusted_yields through Dagster, with stub upstream partitions in a tmp lake.

token_prices talks to the replay server (generated coins sample, 127.0.0.1); pool_history and
pool_metadata are small hand-made partitions written straight into the lake.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dagster import AssetKey, AssetSpec, DagsterInstance, materialize

from midfreq_assets.defs.ingest.prices import build_token_prices
from midfreq_assets.defs.vault.yields import build_adjusted_yield_assets
from midfreq_assets.domain.config.base import DEFAULT_CONFIG_DIR
from midfreq_assets.domain.config.project import load_project
from midfreq_assets.domain.yields.adjusted import reference_pricing
from midfreq_assets.partitions import daily_partitions, research_months
from midfreq_resources.clients.defillama_coins import DefiLlamaCoinsClient
from midfreq_resources.io.lake import read_parquet
from midfreq_resources.io.parquet_io_manager import ParquetIOManager

PROJECT = load_project(DEFAULT_CONFIG_DIR)
VAULT = PROJECT.vault("usd_lending")
DAYS = daily_partitions(PROJECT)
MONTHS = research_months(PROJECT.earliest_start)
token_prices = build_token_prices(PROJECT, DAYS)
FLUID_USDC = "4438dabc-7f0c-430b-8136-2722711ae663"
MORPHO_SUSDS = "9469cde6-65d8-4bbb-ade6-8a89f1728403"
DAI_POOL = "00000000-0000-4000-8000-00000000da10"
SKY_SUSDS = "d8c4eff5-c8a9-46fc-a888-057c4c668e72"
ETH = {
    "usdc": "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
    "susds": "0xa3931d71877C0E7a3148CB7Eb4463524FEc27fbD",
    "dai": "0x6B175474E89094C44Da98b954EedeAC495271d0F",
}
FIRST, DAY, MONTH = "2025-02-01", "2025-03-11", "2025-03"
RANGE_TAGS = {"dagster/asset_partition_range_start": FIRST, "dagster/asset_partition_range_end": "2025-03-12"}
UPSTREAM = [AssetSpec("pool_history", partitions_def=DAYS), AssetSpec("pool_metadata", partitions_def=DAYS)]


def write_upstream(lake: Path) -> None:
    """pool_history for the lookback window and pool_metadata for the target days."""
    for day in pd.date_range(FIRST, "2025-03-12"):
        history = pd.DataFrame(
            [
                dict(pool=FLUID_USDC, apy=0.07, apy_base=0.045, apy_reward=0.025),
                dict(pool=MORPHO_SUSDS, apy=0.002, apy_base=0.002, apy_reward=0.0),
                dict(pool=DAI_POOL, apy=0.04, apy_base=0.04, apy_reward=0.0),
                dict(pool=SKY_SUSDS, apy=0.065, apy_base=0.065, apy_reward=0.0),
            ]
        ).assign(date=day, tvl_usd=1e7, il7d=np.nan, apy_base7d=np.nan)
        ParquetIOManager(root=str(lake)).daily(["pool_history"]).write(
            {
                f"{day:%Y-%m-%d}": history[
                    ["date", "pool", "tvl_usd", "apy", "apy_base", "apy_reward", "il7d", "apy_base7d"]
                ]
            }
        )
    for day in pd.date_range("2025-03-10", "2025-03-12"):
        meta = pd.DataFrame(
            [
                dict(
                    pool=FLUID_USDC,
                    chain="Ethereum",
                    project="fluid-lending",
                    symbol="USDC",
                    underlying_tokens=[ETH["usdc"]],
                    underlying_symbols=["usdc"],
                    reward_tokens=None,
                ),
                dict(
                    pool=MORPHO_SUSDS,
                    chain="Ethereum",
                    project="morpho-blue",
                    symbol="SUSDS",
                    underlying_tokens=[ETH["susds"]],
                    underlying_symbols=["susds"],
                    reward_tokens=None,
                ),
                dict(
                    pool=DAI_POOL,
                    chain="Ethereum",
                    project="aave-v3",
                    symbol="DAI",
                    underlying_tokens=[ETH["dai"]],
                    underlying_symbols=["dai"],
                    reward_tokens=None,
                ),
            ]
        ).assign(date=day, tvl_usd=1e7, apy=0.05, vaults=[["usd_lending"]] * 3, reconstructed=True)
        ParquetIOManager(root=str(lake)).daily(["pool_metadata"]).write({f"{day:%Y-%m-%d}": meta})


@pytest.fixture
def lake(tmp_path: Path, replay_env) -> Path:
    root = tmp_path / "lake"
    write_upstream(root)
    return root


def resources(lake: Path, **client: object) -> dict[str, object]:
    io = ParquetIOManager(root=str(lake))
    return {
        "parquet_io_manager": io,
        "io_manager": io,
        "defillama_coins": DefiLlamaCoinsClient(backoff_base_s=0.01, backoff_max_s=0.02, **client),
    }


def checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_token_prices_then_adjusted_yields(lake: Path):
    with DagsterInstance.ephemeral() as instance:
        prices = materialize([token_prices], resources=resources(lake), tags=RANGE_TAGS, instance=instance)
        assert prices.success
        assert checks(prices) == {"requested_coins_fetched": True, "requested_coins_present": True}
        day_prices = ParquetIOManager(root=str(lake)).daily(["token_prices"]).read([DAY])
        assert list(day_prices.columns) == ["date", "coin", "symbol", "price", "confidence"]
        assert set(day_prices["symbol"]) == {
            "USDC",
            "USDT",
            "DAI",
            "USDS",
            "sUSDS",
            "FLUID",
            "ETH",
            "BTC",
            "WETH",
            "stETH",
            "wstETH",
            "rETH",
            "weETH",
            "WBTC",
            "cbBTC",
            "tBTC",
        }

        assets = build_adjusted_yield_assets(VAULT, reference_pricing(VAULT, PROJECT.tokens), MONTHS)
        result = materialize(
            [*assets, *UPSTREAM, token_prices],
            resources=resources(lake),
            partition_key=MONTH,
            selection=[AssetKey(["usd_lending", "adjusted_yields"])],
            instance=instance,
        )
    assert result.success
    assert checks(result) == {
        "adjusted_apy_finite": True,
        "components_present": True,
        "adjustment_inputs_complete": False,
    }  # the DAI depeg is flagged
    month = read_parquet(
        ParquetIOManager(root=str(lake)).partition_path(["usd_lending", "adjusted_yields"], MONTH)
    )
    assert month["date"].max() == pd.Timestamp("2025-03-12")  # the month so far: its days with pool history
    out = month[month["date"] == pd.Timestamp(DAY)].set_index("pool")
    assert len(out) == 3 and SKY_SUSDS not in out.index  # only the vault's universe
    assert (out["date"] == pd.Timestamp(DAY)).all()

    fluid = out.loc[FLUID_USDC]
    assert 0 < fluid["reward_discount"] < 1  # FLUID trends down: the reward is cut
    assert fluid["reward_haircut"] == pytest.approx((1 - fluid["reward_discount"]) * 0.025)
    susds = out.loc[MORPHO_SUSDS]
    assert susds["underlying_apy"] == pytest.approx(0.065) and susds["peg_yield"] == 0.0
    dai = out.loc[DAI_POOL]
    assert dai["flag_depeg"]
    assert dai["peg_yield"] == pytest.approx(0.005 * 365 / 30)  # clipped at max_abs_deviation
    for _, row in out.iterrows():
        assert row["adjusted_apy"] == pytest.approx(
            row["apy"] - row["reward_haircut"] + row["underlying_apy"] + row["peg_yield"] + row["il_annual"]
        )


def test_token_prices_reports_coins_the_api_omits(lake: Path, tmp_path: Path):
    configs = tmp_path / "configs"
    shutil.copytree(DEFAULT_CONFIG_DIR, configs)
    path = configs / "vaults" / "usd_lending.yaml"
    data = yaml.safe_load(path.read_text())
    unknown = "ethereum:0x000000000000000000000000000000000000dEaD"
    data["yields"] = {"tokens": {"usdc": {"coin": "ethereum:" + ETH["usdc"]}}, "extra_coins": [unknown]}
    path.write_text(yaml.safe_dump(data))
    result = materialize(
        [build_token_prices(load_project(configs), DAYS)],
        resources=resources(lake, max_coins_per_request=1),
        partition_key=DAY,
    )
    assert result.success
    assert checks(result) == {"requested_coins_fetched": True, "requested_coins_present": False}
    meta = result.asset_materializations_for_node("token_prices")[0].metadata
    assert unknown in meta["coins_missing"].value


def test_token_prices_fails_rather_than_write_a_partial_partition(lake: Path, replay_env):
    replay_env.force(r"/coins/chart/", 503, times=None)
    result = materialize(
        [token_prices], resources=resources(lake, max_attempts=2), partition_key=DAY, raise_on_error=False
    )
    assert not result.success
    assert DAY not in ParquetIOManager(root=str(lake)).daily(["token_prices"]).stored_days()


def test_a_failed_coin_keeps_its_previous_rows_and_fails_the_blocking_check(lake: Path, replay_env):
    res = resources(lake, max_attempts=2, max_coins_per_request=1)
    assert materialize([token_prices], resources=res, partition_key=DAY).success
    store = ParquetIOManager(root=str(lake)).daily(["token_prices"])
    before = store.read([DAY])
    victim = before["coin"].iloc[0]
    replay_env.force(rf"/coins/chart/{victim}", 503, times=None)  # its batch fails (max_coins_per_request=1)
    result = materialize([token_prices], resources=res, partition_key=DAY, raise_on_error=False)
    assert not result.success
    after = store.read([DAY])
    pd.testing.assert_frame_equal(
        after.sort_values(["coin", "date"]).reset_index(drop=True),
        before.sort_values(["coin", "date"]).reset_index(drop=True),
    )
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "requested_coins_fetched")
    assert not check.passed and victim in check.metadata["failed"].value


def test_build_price_assets_keys():
    ref = reference_pricing(VAULT, PROJECT.tokens)
    keys = {*token_prices.keys, *(k for a in build_adjusted_yield_assets(VAULT, ref, MONTHS) for k in a.keys)}
    assert keys == {AssetKey("token_prices"), AssetKey(["usd_lending", "adjusted_yields"])}


STETH_AAVE = "00000000-0000-4000-8000-0000000057e7"
LIDO = "747c1d2a-c668-4682-b9f9-296708a3dd90"


def test_eth_vault_adjusted_yields_are_in_eth(tmp_path: Path, replay_env):
    """eth_staking on the generated coins sample: stETH (0.9993 ETH) is compared with 1 ETH, not 1 USD,
    Lido's staking APR is added, TVLs are in ETH."""
    vault = PROJECT.vault("eth_staking")
    lake = tmp_path / "lake"
    io = ParquetIOManager(root=str(lake))
    steth = "0xae7ab96520DE3A18E5e111B5EaAb095312D7fE84"
    for day in pd.date_range(FIRST, "2025-03-12"):
        history = pd.DataFrame(
            [
                dict(pool=STETH_AAVE, apy=0.001, apy_base=0.001, apy_reward=0.0),
                dict(pool=LIDO, apy=0.031, apy_base=0.031, apy_reward=0.0),
            ]
        ).assign(date=day, tvl_usd=3.8e9, il7d=np.nan, apy_base7d=np.nan)
        io.daily(["pool_history"]).write({f"{day:%Y-%m-%d}": history})
        meta = pd.DataFrame(
            [
                dict(
                    pool=STETH_AAVE,
                    chain="Ethereum",
                    project="aave-v3",
                    symbol="STETH",
                    underlying_tokens=[steth],
                    underlying_symbols=["steth"],
                    reward_tokens=None,
                )
            ]
        ).assign(date=day, tvl_usd=3.8e9, apy=0.001, vaults=[["eth_staking"]], reconstructed=True)
        io.daily(["pool_metadata"]).write({f"{day:%Y-%m-%d}": meta})
    with DagsterInstance.ephemeral() as instance:
        assert materialize(
            [token_prices], resources=resources(lake), tags=RANGE_TAGS, instance=instance
        ).success
        assets = build_adjusted_yield_assets(vault, reference_pricing(vault, PROJECT.tokens), MONTHS)
        result = materialize(
            [*assets, *UPSTREAM, token_prices],
            resources=resources(lake),
            partition_key=MONTH,
            selection=[AssetKey(["eth_staking", "adjusted_yields"])],
            instance=instance,
        )
    assert result.success
    month = read_parquet(io.partition_path(["eth_staking", "adjusted_yields"], MONTH))
    row = month[month["date"] == pd.Timestamp(DAY)].set_index("pool").loc[STETH_AAVE]
    prices = io.daily(["token_prices"]).read([DAY]).set_index("coin")["price"]
    eth_usd, steth_in_eth = (
        prices["coingecko:ethereum"],
        prices["ethereum:" + steth] / prices["coingecko:ethereum"],
    )
    assert 0.99 < steth_in_eth < 1.0
    deviation = (1 - steth_in_eth) / steth_in_eth
    expected = min(deviation, 0.005) * 365 / 30 if deviation >= 0.0005 else 0.0
    assert row["peg_yield"] == pytest.approx(expected)
    assert row["underlying_apy"] == pytest.approx(0.031)
    assert row["reference_price"] == pytest.approx(eth_usd) and row["tvl_ref"] == pytest.approx(
        3.8e9 / eth_usd
    )
    assert not row["price_exposed"] and row["price_return"] == 0.0
