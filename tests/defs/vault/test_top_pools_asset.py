"""The top_pools ranking through Dagster: pool_rankings at ingestion, the allow-list it feeds, and
``<vault>/top_pools`` (the picks as of the day after the last ranked day)."""

import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dagster import AssetKey, materialize

from midfreq_assets.defs.vault.top_pools import build_top_pools_asset
from midfreq_assets.domain.ingest.universe import in_vault
from midfreq_resources.io.lake import read_parquet

CURATED = "usd_curated"  # configs/vaults/usd_curated.yaml: selected_pools + top_pools.allow_list (30 days)


def frames(lake: Path, name: str) -> pd.DataFrame:
    return pd.concat([read_parquet(f) for f in sorted((lake / name).glob("*.parquet"))], ignore_index=True)


@pytest.fixture(scope="module")
def pipe(pipeline_env):
    with pipeline_env() as p:
        yield p


def test_pool_rankings_feed_the_allow_list_day_by_day(pipe, project):
    rankings, meta = frames(pipe.lake, "pool_rankings"), frames(pipe.lake, "pool_metadata")
    vault = project.vault(CURATED)
    held_by = {v for v in project.vaults if meta["vaults"].map(lambda x, v=v: in_vault(x, v)).any()}
    # every vault holding pools is ranked (an ETH/BTC vault without pools in this window has no rows)
    assert {CURATED, "usd_lending"} | held_by <= set(rankings["vault"]) <= set(project.vaults)
    mine = rankings[rankings["vault"] == CURATED]
    first = pd.Timestamp(pipe.first)
    complete = mine["date"] >= first + pd.Timedelta(days=vault.top_pools.window_days)
    assert mine["complete"].eq(complete).all() and not mine.loc[~complete, "picked"].any()
    assert (mine["window_end"] == mine["date"] - pd.Timedelta(days=1)).all()
    assert set(mine["pool"]) <= set(vault.selected_pools)  # ranked among the pools passing the other rules
    held = meta[meta["vaults"].map(lambda v: in_vault(v, CURATED))]
    assert held["date"].min() == first + pd.Timedelta(days=vault.top_pools.window_days)
    picked = mine[mine["picked"]]
    key = ["date", "pool"]
    pd.testing.assert_frame_equal(
        held[key].sort_values(key).reset_index(drop=True), picked[key].sort_values(key).reset_index(drop=True)
    )
    # a vault without allow_list: its ranking is recorded, its universe is not cut by it
    plain = rankings[rankings["vault"] == "usd_lending"]
    lending = meta[meta["vaults"].map(lambda v: in_vault(v, "usd_lending"))]
    assert len(plain) == len(lending) and not plain["picked"].all()


def test_top_pools_asset_is_the_ranking_of_the_next_day(pipe, project):
    vault = project.vault(CURATED)
    asset = build_top_pools_asset(vault)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = materialize(
            [*pipe.ingest, asset], selection=[asset.key], resources=pipe.resources, instance=pipe.instance
        )
    assert result.success
    table = read_parquet(pipe.lake / CURATED / "top_pools.parquet")
    as_of = pd.Timestamp(pipe.last) + pd.Timedelta(days=1)
    assert (table["as_of"] == as_of).all()
    assert (table["window_start"] == as_of - pd.Timedelta(days=30)).all()
    assert (table["window_end"] == pd.Timestamp(pipe.last)).all()
    picks = table[table["picked"]]
    assert 0 < len(picks) < len(vault.selected_pools) and set(picks["pool"]) <= set(vault.selected_pools)
    assert (picks["days_in_top"] >= vault.top_pools.min_days_in_top).all()
    assert (
        table["rank"].tolist() == list(range(1, len(table) + 1)) and table["picked"].is_monotonic_decreasing
    )
    meta = result.asset_materializations_for_node(asset.op.name)[0].metadata
    assert meta["as_of"].value == str(as_of.date())
    snippet = meta["selected_pools"].value.removeprefix("```yaml\n").removesuffix("```")
    assert yaml.safe_load(snippet)["selected_pools"] == picks["pool"].tolist()
    assert f"valid from {as_of.date()} on" in snippet
    assert AssetKey([CURATED, "top_pools"]) == asset.key
