"""pool_history / pool_metadata through Dagster against the replay server."""

import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from dagster import materialize

from midfreq_resources.io.lake import read_daily, stored_days
from tests.dagster_cli import materialize_argv

REPO = Path(__file__).parents[3]
POOL = "f981a304-bb6c-45b8-b0c5-fd2f515ad23a"  # aave-v3 USDT on Ethereum, full year
CSUSDC = "66159102-0702-4387-862c-918bcd2a8a0d"
DAY = "2024-07-01"


def range_tags(start: str, end: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}


def checks(result) -> dict[str, bool]:
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
        for e in result.get_asset_check_evaluations()
    }


def test_one_day(lake, replay_env, ingest_resources, defillama_assets):
    result = materialize(defillama_assets, resources=ingest_resources(), partition_key=DAY)
    assert result.success
    history = read_daily(lake, "pool_history", days=[f"{DAY}"])
    assert (history["date"] == pd.Timestamp(DAY)).all()
    assert not history.duplicated(["pool", "date"]).any()
    row = history.set_index("pool").loc[POOL]
    raw = json.loads((REPO / f"recorded/defillama/yields/chart/{POOL}.json").read_text())["data"]
    expected = next(r for r in raw if r["timestamp"].startswith(DAY))
    assert row["apy"] == pytest.approx(expected["apy"] / 100)  # fractions, not percent
    assert row["tvl_usd"] == pytest.approx(expected["tvlUsd"])

    meta = read_daily(lake, "pool_metadata", days=[f"{DAY}"])
    assert meta["reconstructed"].all()  # a past day: no historical /pools exists
    assert (meta["tvl_usd"] >= 1_000_000).all()
    assert all(v.tolist() == ["usd_lending"] for v in meta["vaults"])
    assert set(meta["pool"]) <= set(history["pool"])
    exclusions = read_daily(lake, "universe_exclusions", days=[f"{DAY}"])
    reasons = dict(zip(exclusions["pool"], exclusions["reason"], strict=True))
    assert any("TVL below" in r for r in reasons.values())
    assert CSUSDC not in set(history["pool"])  # statically excluded (csusdc underlying): never fetched
    mat = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert mat["pool_metadata"]["reconstructed"].value is True
    assert checks(result)["pool_history:requested_pools_fetched"]


def test_range_backfill_fetches_each_chart_once_and_rerun_replaces(
    lake, replay_env, ingest_resources, defillama_assets
):
    res = ingest_resources()
    result = materialize(defillama_assets, resources=res, tags=range_tags("2024-07-01", "2024-07-10"))
    assert result.success
    assert stored_days(lake, "pool_history") == [f"2024-07-{d:02d}" for d in range(1, 11)]
    assert sorted(p.name for p in (lake / "pool_history").iterdir()) == [
        "2024-07.parquet"
    ]  # one file a month
    chart_requests = [r.path for r in replay_env.requests if "/chart/" in r.path]
    assert len(chart_requests) == len(set(chart_requests)) > 20  # one request per pool for 10 days
    first = read_daily(lake, "pool_history", days=["2024-07-05"])

    assert materialize(defillama_assets, resources=res, partition_key="2024-07-05").success
    again = read_daily(lake, "pool_history", days=["2024-07-05"])
    pd.testing.assert_frame_equal(first, again)


def test_failed_pool_is_reported_the_others_written_and_the_run_not_green(
    lake, replay_env, ingest_resources, defillama_assets
):
    replay_env.force(rf"/chart/{POOL}$", 503, body="down", times=None)
    result = materialize(
        defillama_assets, resources=ingest_resources(), partition_key=DAY, raise_on_error=False
    )
    assert not result.success  # the blocking requested_pools_fetched checks failed
    history = read_daily(lake, "pool_history", days=[f"{DAY}"])
    assert POOL not in set(history["pool"]) and len(history) > 10  # everything that succeeded is kept
    meta = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "pool_history"
    )
    assert meta["failed_pools"].value == 1
    details = str(meta["failed_pool_details"].value)  # an inline table
    assert POOL in details and "503" in details
    found = checks(result)
    assert found["pool_history:universe_pools_present"] is False
    assert (
        not found["pool_history:requested_pools_fetched"]
        and not found["pool_metadata:requested_pools_fetched"]
    )
    failed_check = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "requested_pools_fetched"
    )
    assert POOL in failed_check.metadata["failed"].value


def test_all_pools_failing_fails_the_run_and_keeps_the_old_partition(
    lake, replay_env, ingest_resources, defillama_assets
):
    res = ingest_resources()
    assert materialize(defillama_assets, selection=["pool_history"], resources=res, partition_key=DAY).success
    before = (lake / "pool_history" / f"{DAY[:7]}.parquet").read_bytes()
    replay_env.force(r"/chart/", 502, body="bad gateway", times=None)
    result = materialize(
        defillama_assets, selection=["pool_history"], resources=res, partition_key=DAY, raise_on_error=False
    )
    assert not result.success
    assert (lake / "pool_history" / f"{DAY[:7]}.parquet").read_bytes() == before


def test_duplicate_days_are_deduplicated(lake, replay_env, ingest_resources, defillama_assets):
    raw = json.loads((REPO / f"recorded/defillama/yields/chart/{POOL}.json").read_text())
    day_rows = [r for r in raw["data"] if r["timestamp"].startswith(DAY)]
    later = dict(day_rows[0], timestamp=f"{DAY}T23:59:00.000Z", apy=9.99)
    raw["data"] = raw["data"] + [later]
    replay_env.force(rf"/chart/{POOL}$", 200, body=raw, times=None)
    assert materialize(
        defillama_assets, selection=["pool_history"], resources=ingest_resources(), partition_key=DAY
    ).success
    history = read_daily(lake, "pool_history", days=[f"{DAY}"])
    rows = history[history["pool"] == POOL]
    assert len(rows) == 1 and rows["apy"].iloc[0] == pytest.approx(0.0999)  # the day's last snapshot


def test_pool_without_history_is_reported_missing(lake, replay_env, ingest_resources, defillama_assets):
    replay_env.force(rf"/chart/{POOL}$", 200, body={"status": "success", "data": []}, times=None)
    result = materialize(
        defillama_assets, selection=["pool_history"], resources=ingest_resources(), partition_key=DAY
    )
    assert result.success
    evaluation = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "universe_pools_present"
    )
    assert not evaluation.passed
    assert POOL in evaluation.metadata["pools_missing_some_day"].value.split(", ")
    # what to act on: the pool by name, why, its size, in one sentence; the offenders as an inline table
    assert re.match(
        rf"\d+ pool\(s\) lack data in {DAY}\.\.{DAY} \(\d+ no history returned; 0 pool-day\(s\) missing\), "
        r"the largest \w+ [\w-]+ \w+ \(no history returned, last TVL [\d,]+ USD\): ",
        evaluation.description,
    )
    offenders = [r.data for r in evaluation.metadata["top_offenders"].value.records]
    ours = next(r for r in offenders if r["pool"] == POOL)
    assert ours["name"] == "USDT aave-v3 Ethereum" and ours["reason"] == "no history returned"
    tvls = [int(r["last_tvl_usd"].replace(",", "")) for r in offenders if r["last_tvl_usd"]]
    assert tvls == sorted(tvls, reverse=True)  # the largest pools first


@pytest.mark.slow
def test_cli_partition_range_backfill_in_one_run(lake, replay_env, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    proc = subprocess.run(
        materialize_argv("pool_history", "--partition-range", "2024-07-01...2024-07-03"),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert stored_days(lake, "pool_history") == ["2024-07-01", "2024-07-02", "2024-07-03"]
