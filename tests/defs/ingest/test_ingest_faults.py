"""The DefiLlama ingestion under faults and hostile answers, through Dagster against the replay server:
nothing good is replaced by less, related assets never disagree, a run that lost pools is not green."""

import json
import os
import random
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from dagster import materialize

from midfreq_resources.io.lake import read_daily, stored_days
from tests.dagster_cli import materialize_argv

REPO = Path(__file__).parents[3]
POOL = "f981a304-bb6c-45b8-b0c5-fd2f515ad23a"  # aave-v3 USDT on Ethereum, in the usd_lending universe
FIRST, LAST, DAY = "2024-07-01", "2024-07-03", "2024-07-02"
ASSETS = ("pool_history", "pool_metadata", "universe_exclusions")
CHART_JSON = REPO / f"recorded/defillama/yields/chart/{POOL}.json"


def range_tags(start: str, end: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}


def snapshot(lake: Path) -> dict[tuple[str, str], pd.DataFrame]:
    """Every stored day of the three assets, rows in a canonical order."""
    out = {}
    for name in ASSETS:
        for day in stored_days(lake, name):
            frame = read_daily(lake, name, days=[day])
            sort = [c for c in ("vault", "date", "pool") if c in frame.columns]
            out[(name, day)] = frame.sort_values(sort).reset_index(drop=True)
    return out


def assert_same(after: dict, before: dict) -> None:
    assert after.keys() == before.keys()
    for key, frame in before.items():
        pd.testing.assert_frame_equal(after[key], frame, obj=str(key))


def assert_related_assets_agree(lake: Path) -> None:
    for day in pd.date_range(FIRST, LAST):
        name = f"{day:%Y-%m-%d}"
        history = read_daily(lake, "pool_history", days=[name])
        meta = read_daily(lake, "pool_metadata", days=[name])
        assert set(meta["pool"]) <= set(history["pool"]), day  # no universe pool without its history row
        joined = meta.merge(history, on=["date", "pool"], suffixes=("_meta", ""))
        pd.testing.assert_series_equal(joined["tvl_usd_meta"], joined["tvl_usd"], check_names=False)


def fetched_check(result, asset: str = "pool_history"):
    return next(
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "requested_pools_fetched" and e.asset_key.to_user_string() == asset
    )


@pytest.fixture
def good_lake(lake, replay_env, ingest_resources, defillama_assets) -> dict:
    assert materialize(defillama_assets, resources=ingest_resources(), tags=range_tags(FIRST, LAST)).success
    replay_env.reset()
    return snapshot(lake)


def pools_ok_seed(attempts: int, rate: float) -> int:
    """A seed under which /pools gets through within ``attempts`` (so the night reaches the charts)."""
    return next(
        s
        for s in range(1000)
        if any(random.Random(f"{s}:/defillama/yields/pools:{n}").random() >= rate for n in range(attempts))
    )


def test_error_rate_0_9_night_keeps_every_good_row_and_is_not_green(
    lake, replay_env, ingest_resources, defillama_assets, good_lake
):
    replay_env.set_faults(error_rate=0.9, error_codes=(500, 502, 503), seed=pools_ok_seed(3, 0.9))
    result = materialize(
        defillama_assets,
        resources=ingest_resources(max_attempts=3),
        tags=range_tags(FIRST, LAST),
        raise_on_error=False,
    )
    assert not result.success
    check = fetched_check(result)
    failed = check.metadata["failed"].value
    assert not check.passed and failed.count("-") >= 4 * 10  # dozens of pools named (uuids)
    assert_same(snapshot(lake), good_lake)  # 20 rows stay 20, 18 stay 18: nothing replaced by less
    assert_related_assets_agree(lake)


def test_source_dying_mid_run_leaves_the_three_assets_in_agreement(
    lake, replay_env, ingest_resources, defillama_assets, good_lake
):
    replay_env.force(r"/chart/[0-7]", 502, body="upstream gone", times=None)  # about half the pools
    result = materialize(
        defillama_assets, resources=ingest_resources(), tags=range_tags(FIRST, LAST), raise_on_error=False
    )
    assert not result.success
    assert not fetched_check(result, "pool_metadata").passed
    assert_same(snapshot(lake), good_lake)
    assert_related_assets_agree(lake)


def test_empty_answers_never_replace_rows(lake, replay_env, ingest_resources, defillama_assets, good_lake):
    replay_env.force(r"/chart/", 200, body={"status": "success", "data": []}, times=None)
    result = materialize(
        defillama_assets, resources=ingest_resources(), tags=range_tags(FIRST, LAST), raise_on_error=False
    )
    assert not result.success  # every pool delivered less than the lake had
    assert POOL in fetched_check(result).metadata["delivered_less_than_the_lake_had"].value
    assert_same(snapshot(lake), good_lake)


def test_a_recovered_rerun_repairs_and_is_green(
    lake, replay_env, ingest_resources, defillama_assets, good_lake
):
    replay_env.force(rf"/chart/{POOL}$", 503, times=None)
    assert not materialize(
        defillama_assets, resources=ingest_resources(), partition_key=DAY, raise_on_error=False
    ).success
    replay_env.reset()
    result = materialize(defillama_assets, resources=ingest_resources(), partition_key=DAY)
    assert result.success and fetched_check(result).passed
    assert_same(snapshot(lake), good_lake)


def _chart_with(mutate) -> dict:
    raw = json.loads(CHART_JSON.read_text())
    mutate(raw["data"])
    return raw


def _day_index(rows: list[dict], day: str) -> int:
    return next(i for i, r in enumerate(rows) if r["timestamp"].startswith(day))


@pytest.mark.parametrize(
    ("label", "mutate", "message"),
    [
        (
            "timestamp",
            lambda rows: rows[_day_index(rows, DAY)].update(timestamp="2024-13-45T99:00:00Z"),
            "is not an ISO date",
        ),
        ("epoch", lambda rows: rows[_day_index(rows, DAY)].update(timestamp=1719878400), "timestamp"),
        ("negative_tvl", lambda rows: rows[_day_index(rows, DAY)].update(tvlUsd=-1.0), "negative tvlUsd"),
        ("string_apy", lambda rows: rows[_day_index(rows, DAY)].update(apy="lots"), "apy"),
    ],
)
def test_one_bad_record_fails_one_pool_naming_pool_and_url(
    lake, replay_env, ingest_resources, defillama_assets, good_lake, label, mutate, message
):
    replay_env.force(rf"/chart/{POOL}$", 200, body=_chart_with(mutate), times=None)
    result = materialize(
        defillama_assets, resources=ingest_resources(), partition_key=DAY, raise_on_error=False
    )
    assert not result.success
    details = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "pool_history"
    )["failed_pool_details"].value
    details = str(details)  # an inline table
    assert POOL in details and f"/chart/{POOL}" in details and message in details
    history = read_daily(lake, "pool_history", days=[f"{DAY}"])
    assert (history["tvl_usd"] >= 0).all()  # the bad row never landed
    assert_same(snapshot(lake), good_lake)  # the pool's previous row kept, the others rewritten identically


def test_duplicate_day_keeps_the_latest_snapshot_by_timestamp(
    lake, replay_env, ingest_resources, defillama_assets
):
    def earlier_copy_last(rows):
        i = _day_index(rows, DAY)
        rows[i] = dict(rows[i], timestamp=f"{DAY}T23:59:00.000Z", apy=9.99)
        rows.append(
            dict(rows[i], timestamp=f"{DAY}T00:01:00.000Z", apy=1.11)
        )  # earlier, but later in the list

    replay_env.force(rf"/chart/{POOL}$", 200, body=_chart_with(earlier_copy_last), times=None)
    assert materialize(defillama_assets, resources=ingest_resources(), partition_key=DAY).success
    history = read_daily(lake, "pool_history", days=[f"{DAY}"]).set_index("pool")
    assert history.loc[POOL, "apy"] == pytest.approx(0.0999)


def test_absurd_apy_is_flagged_kept_raw_and_kept_out_of_the_universe(
    lake, replay_env, ingest_resources, defillama_assets, project
):
    replay_env.force(
        rf"/chart/{POOL}$",
        200,
        body=_chart_with(lambda rows: rows[_day_index(rows, DAY)].update(apy=1e308)),
        times=None,
    )
    result = materialize(defillama_assets, resources=ingest_resources(), partition_key=DAY)
    assert result.success  # an implausible value is not a failed pool: flagged, WARN
    sane = next(e for e in result.get_asset_check_evaluations() if e.check_name == "apy_finite_and_sane")
    assert not sane.passed and POOL in str(sane.metadata["examples"].value)
    history = read_daily(lake, "pool_history", days=[f"{DAY}"]).set_index("pool")
    assert (
        history.loc[POOL, "apy"] == pytest.approx(1e306) and history.loc[POOL, "flag"] == "|apy| above 10/yr"
    )
    meta = read_daily(lake, "pool_metadata", days=[f"{DAY}"])
    assert POOL not in set(meta["pool"])
    exclusions = read_daily(lake, "universe_exclusions", days=[f"{DAY}"])
    mine = exclusions[exclusions["pool"] == POOL]
    assert len(mine) == len(set(mine["vault"])) >= 1  # one reason per vault that screened it
    # the vaults whose static screen (chains, protocols, tokens) admits the pool leave it out for the value
    implausible = mine[mine["reason"] == "implausible value: |apy| above 10/yr"]
    assert len(implausible) >= 1 and not mine["reason"].isna().any()
    assert set(implausible["vault"]) == {
        v for v in mine["vault"] if project.vault(v).reference_asset == "usd"
    }


@pytest.mark.parametrize(
    "body", ["<html><body>502 Bad Gateway</body></html>", '{"status":"success","data":[{"po']
)
def test_pools_snapshot_html_or_truncated_every_time_fails_the_run_and_writes_nothing(
    lake, replay_env, ingest_resources, defillama_assets, good_lake, body
):
    replay_env.force(r"/pools$", 200, body=body, times=None)
    result = materialize(
        defillama_assets, resources=ingest_resources(), partition_key=DAY, raise_on_error=False
    )
    assert not result.success
    assert replay_env.count(r"/pools$") == 2  # retried (max_attempts=2), then a clear failure
    assert_same(snapshot(lake), good_lake)


@pytest.mark.slow
def test_cli_partition_range_backfill_under_error_rate_0_9(lake, replay_env, tmp_path, good_lake):
    replay_env.set_faults(error_rate=0.9, error_codes=(500, 502, 503), seed=pools_ok_seed(5, 0.9))
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "deploy/local/dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    proc = subprocess.run(
        materialize_argv(",".join(ASSETS), "--partition-range", f"{FIRST}...{LAST}"),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "requested_pools_fetched" in proc.stdout + proc.stderr
    assert_same(snapshot(lake), good_lake)
