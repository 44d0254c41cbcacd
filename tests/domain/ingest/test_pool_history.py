"""DefiLlama /chart rows -> pool_history: fractions, UTC days, last snapshot of a day wins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.ingest.pool_history import (
    FLAG,
    HISTORY_COLUMNS,
    chart_problem,
    charts_frame,
    flagged_rows,
    merge_kept_rows,
    missing_pools_table,
    sanity_flags,
    usable_rows,
)

EXAMPLE = (
    Path(__file__).parents[3] / "recorded/defillama/examples/chart_5fd328af-4203-471b-bd16-1705c726d926.json"
)


def test_real_chart_as_the_api_answered():
    rows = json.loads(EXAMPLE.read_text())["data"]
    frame = charts_frame({"5fd328af-4203-471b-bd16-1705c726d926": rows})
    assert list(frame.columns) == HISTORY_COLUMNS
    assert len(frame) == len(rows) == 188
    assert frame["date"].iloc[0] == pd.Timestamp("2024-11-14")
    assert frame["apy"].iloc[0] == pytest.approx(0.2297383)  # 22.97383 % -> fraction
    assert frame["apy_reward"].isna().iloc[0]  # null stays missing, never zero
    assert frame["date"].is_monotonic_increasing


def test_utc_day_duplicate_days_and_unknown_keys():
    rows = [
        {"timestamp": "2024-07-01T23:01:00.000Z", "tvlUsd": 10, "apy": 5.0, "newKey": 1},
        {"timestamp": "2024-07-02T01:30:00+02:00", "tvlUsd": 11, "apy": 6.0},  # = 07-01 23:30 UTC
        {"timestamp": "2024-07-02T23:01:00.000Z", "tvlUsd": 12, "apy": 7.0, "apyBase": None},
    ]
    frame = charts_frame({"p": rows})
    assert list(frame["date"]) == [pd.Timestamp("2024-07-01"), pd.Timestamp("2024-07-02")]
    assert list(frame["apy"]) == pytest.approx([0.06, 0.07])  # the day's later snapshot kept
    assert frame["apy_base"].isna().all()


def test_empty_history_and_implausible_values_are_flagged_not_dropped():
    assert charts_frame({"p": []}).empty
    frame = pd.DataFrame(
        {
            "date": pd.to_datetime(["2024-01-01"] * 5),
            "pool": ["a", "b", "c", "d", "e"],
            "apy": [0.05, np.inf, 25.0, -11.0, 0.04],
            "tvl_usd": [1e6, 1e6, 1e6, 1e6, 5e15],
        }
    )
    flags = sanity_flags(frame)
    assert flags.isna().tolist() == [True, False, False, False, False]
    assert flags.iloc[1] == "apy not finite" and flags.iloc[2] == "|apy| above 10/yr"
    assert flags.iloc[4] == "tvl_usd above 1e+12"
    flagged = frame.assign(**{FLAG: flags})
    assert list(usable_rows(flagged)["pool"]) == ["a"]
    assert list(flagged_rows(flagged)["pool"]) == ["b", "c", "d", "e"]


def test_1e308_apy_is_kept_with_its_reason():
    rows = [{"timestamp": "2024-07-01T23:01:00.000Z", "tvlUsd": 10, "apy": 1e308}]
    frame = charts_frame({"p": rows})
    assert frame[FLAG].iloc[0] == "|apy| above 10/yr" and frame["apy"].iloc[0] == pytest.approx(1e306)
    assert usable_rows(frame).empty


def test_latest_snapshot_by_timestamp_not_row_order():
    rows = [
        {"timestamp": "2024-07-01T23:59:00.000Z", "tvlUsd": 12, "apy": 9.0},  # the day's last snapshot, first
        {"timestamp": "2024-07-01T00:01:00.000Z", "tvlUsd": 10, "apy": 5.0},
    ]
    frame = charts_frame({"p": rows})
    assert len(frame) == 1 and frame["apy"].iloc[0] == pytest.approx(0.09)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"timestamp": "yesterday", "tvlUsd": 1, "apy": 1}, "timestamp 'yesterday' is not an ISO date"),
        ({"timestamp": 1719878400, "tvlUsd": 1, "apy": 1}, "timestamp 1719878400 is not an ISO date"),
        ({"timestamp": None, "tvlUsd": 1, "apy": 1}, "timestamp None"),
        ({"timestamp": "2024-07-02T00:00:00Z", "tvlUsd": -5, "apy": 1}, "negative tvlUsd -5.0"),
    ],
)
def test_impossible_records_are_named(record, message):
    good = {"timestamp": "2024-07-01T23:01:00.000Z", "tvlUsd": 10, "apy": 5.0}
    problem = chart_problem([good, record])
    assert problem is not None and problem.startswith("record 1") and message in problem
    assert chart_problem([good]) is None


def test_merge_keeps_the_previous_rows_of_what_this_run_lacks():
    previous = pd.DataFrame(
        {"pool": ["a", "b", "c"], "date": pd.to_datetime(["2024-07-01"] * 3), "v": [1, 2, 3]}
    )
    new = pd.DataFrame({"pool": ["a"], "date": pd.to_datetime(["2024-07-01"]), "v": [10]})
    requested = previous["pool"].isin(["a", "b"])  # c was not requested this run (left the candidates)
    merged, kept = merge_kept_rows(new, previous, ["pool", "date"], requested)
    assert merged.set_index("pool")["v"].to_dict() == {"a": 10, "b": 2}
    assert list(kept["pool"]) == ["b"]
    merged, kept = merge_kept_rows(new.iloc[0:0], previous, ["pool", "date"], requested)
    assert list(merged["pool"]) == ["a", "b"] and list(merged["v"]) == [1, 2]
    merged, kept = merge_kept_rows(new, None, ["pool", "date"])
    assert merged.equals(new) and kept.empty


def test_missing_pools_table_names_why_how_long_and_how_big_largest_first():
    days = pd.to_datetime(["2024-07-01", "2024-07-02", "2024-07-03"])
    missing = pd.MultiIndex.from_tuples([(days[1], "gappy"), (days[2], "gappy")], names=["date", "pool"])
    full = pd.DataFrame({"date": days, "pool": ["gappy", "gappy", "big"], "tvl_usd": [1e6, 2e6, 9e8]})
    table = missing_pools_table(
        missing, ["failed"], ["empty"], full, pd.Series({"failed": 5e7, "empty": 1e3})
    )
    assert list(table["pool"]) == ["failed", "gappy", "empty"]  # by last TVL, largest first
    gappy = table.set_index("pool").loc["gappy"]
    assert gappy["reason"] == "days missing inside its lifetime" and gappy["missing_days"] == 2
    assert (gappy["first_missing"], gappy["last_missing"]) == (days[1], days[2]) and gappy[
        "last_tvl_usd"
    ] == 2e6
    assert table.set_index("pool").loc["failed", "reason"] == "fetch failed"
    assert table.set_index("pool").loc["empty", "reason"] == "no history returned"
