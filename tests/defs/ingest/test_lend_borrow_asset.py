"""pool_lend_borrow through Dagster against the replay server: with the paid API, without a key, faults."""

import json
from pathlib import Path

import pandas as pd
import pytest
from dagster import materialize

from midfreq_assets.defs.ingest.lend_borrow import NO_KEY, build_lend_borrow_asset
from midfreq_assets.partitions import daily_partitions
from midfreq_resources.clients.defillama_pro import DefiLlamaProClient
from midfreq_resources.io.lake import read_daily, stored_days
from midfreq_resources.replay.server import REPLAY_PRO_API_KEY

REPO = Path(__file__).parents[3]
AAVE_USDC = "aa70268e-4b52-42bf-a116-608b370f9501"  # Aave v3 USDC, Ethereum: the recorded lending market
RANGE = {
    "dagster/asset_partition_range_start": "2024-07-01",
    "dagster/asset_partition_range_end": "2024-07-10",
}


def checks(result) -> dict[str, bool]:
    return {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == "pool_lend_borrow"
    }


@pytest.fixture
def assets(project, defillama_assets):
    return [*defillama_assets, build_lend_borrow_asset(project, daily_partitions(project))]


def pro(replay_env, key: str = REPLAY_PRO_API_KEY, **settings) -> DefiLlamaProClient:
    return DefiLlamaProClient(
        base_url=f"{replay_env.base_url}/defillama/pro",
        api_key=key,
        key_from_env=False,
        max_attempts=2,
        backoff_base_s=0.01,
        backoff_max_s=0.02,
        **settings,
    )


def test_range_fetches_the_universe_lending_pools_once(lake, replay_env, ingest_resources, assets):
    res = {**ingest_resources(), "defillama_pro": pro(replay_env)}
    result = materialize(assets, resources=res, tags=RANGE)
    assert result.success
    assert stored_days(lake, "pool_lend_borrow") == [f"2024-07-{d:02d}" for d in range(1, 11)]
    frame = read_daily(lake, "pool_lend_borrow")
    assert set(frame["pool"]) == {AAVE_USDC}
    assert replay_env.count(r"/chartLendBorrow/", status=200) == 1 and replay_env.count(r"/poolsBorrow$") == 1
    raw = json.loads((REPO / f"recorded/defillama/pro/yields/chartLendBorrow/{AAVE_USDC}.json").read_text())[
        "data"
    ]
    day = next(r for r in raw if r["timestamp"].startswith("2024-07-05"))
    row = frame.set_index("date").loc[pd.Timestamp("2024-07-05")]
    assert row["total_supply_usd"] == day["totalSupplyUsd"]
    assert row["utilization"] == pytest.approx(day["totalBorrowUsd"] / day["totalSupplyUsd"])
    assert row["apy_base_borrow"] == pytest.approx(day["apyBaseBorrow"] / 100)
    assert checks(result) == {"lending_pools_fetched": True, "lend_borrow_sane": True}
    assert REPLAY_PRO_API_KEY not in repr([e.event_specific_data for e in result.all_events])


def test_without_a_key_nothing_is_requested_nor_written(lake, replay_env, ingest_resources, assets):
    result = materialize(
        assets, resources={**ingest_resources(), "defillama_pro": pro(replay_env, key="")}, tags=RANGE
    )
    assert result.success
    assert replay_env.count(r"/defillama/pro/") == 0
    assert not (lake / "pool_lend_borrow").exists()
    meta = [
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "pool_lend_borrow"
    ]
    assert meta and meta[0]["status"].value == NO_KEY


def test_every_lending_pool_failing_fails_the_run_and_keeps_the_lake(
    lake, replay_env, ingest_resources, assets
):
    res = {**ingest_resources(), "defillama_pro": pro(replay_env)}
    assert materialize(assets, resources=res, tags=RANGE).success
    before = read_daily(lake, "pool_lend_borrow")
    replay_env.force(rf"/chartLendBorrow/{AAVE_USDC}$", 503, times=None)
    result = materialize(assets, resources=res, tags=RANGE, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "no lending history could be fetched" in str(failure.event_specific_data.error)
    pd.testing.assert_frame_equal(read_daily(lake, "pool_lend_borrow"), before)


def test_transient_faults_are_retried_and_errors_hide_the_key(lake, replay_env, ingest_resources, assets):
    replay_env.force(r"/chartLendBorrow/", 429, headers={"Retry-After": "0"}, times=1)
    res = {**ingest_resources(), "defillama_pro": pro(replay_env)}
    assert materialize(assets, resources=res, tags=RANGE).success
    replay_env.truncate(r"/chartLendBorrow/", times=None)
    client = pro(replay_env)
    failed = client.lend_borrow_charts([AAVE_USDC]).failed
    assert (
        AAVE_USDC in failed and REPLAY_PRO_API_KEY not in failed[AAVE_USDC] and "<key>" in failed[AAVE_USDC]
    )
