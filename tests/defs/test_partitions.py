"""Partition calendars end at the data: a replayed corpus's last day (``replaying``, or the lake's
``replayed_corpus.json`` that ``midfreq pipeline --corpus`` writes), live at yesterday; the hourly
intraday calendar exists only for a vault with ``intraday.enabled``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dagster import AssetKey

from midfreq_assets.defs.vault.definitions import build_vault_defs
from midfreq_assets.partitions import (
    _lake_data_end,
    daily_from,
    data_end,
    hourly_from,
    monthly_from,
    replaying,
    research_months,
    weekly_partitions,
)
from midfreq_assets.pipeline import code_location
from midfreq_assets.project import current_project, using
from midfreq_resources.io.replayed_corpus import MARKER, DataEnd, MarkerError, read_data_end, write_data_end

START, LAST = dt.date(2024, 6, 6), dt.date(2025, 6, 5)  # the bundled recording's DefiLlama days
KLINES_LAST = dt.date(2025, 2, 20)
NOW = dt.datetime(2026, 12, 8, 1, 0, tzinfo=dt.UTC)


def keys(pdef) -> list[str]:
    return pdef.get_partition_keys(current_time=NOW)


def test_each_calendar_ends_with_the_partition_holding_the_last_day():
    days = keys(daily_from(START, LAST))
    assert (days[0], days[-1], len(days)) == ("2024-06-06", "2025-06-05", 365)
    assert (
        keys(research_months(START, LAST))[-1] == "2025-06"
    )  # the month of the last day, not the current one
    weeks = keys(weekly_partitions(START, LAST))
    assert weeks[-1] == "2025-06-02"  # the Monday of the week holding 2025-06-05 (a Thursday)
    assert keys(weekly_partitions(START, dt.date(2025, 6, 2)))[-1] == "2025-06-02"  # a Monday: its own week
    assert keys(monthly_from(START, KLINES_LAST))[-1] == "2025-02-01"
    hours = keys(hourly_from(START, LAST))
    assert hours[-1] == "2025-06-05-23:00"


def test_live_calendars_run_to_yesterday():
    assert keys(daily_from(START))[-1] == "2026-12-07"
    assert keys(research_months(START))[-1] == "2026-12"  # the month under way: the nightly run writes it
    assert keys(weekly_partitions(START))[-1] == "2026-12-07"  # this week's Monday


def test_the_code_location_replaying_the_recording(tmp_path):
    end = DataEnd(LAST, KLINES_LAST, "recorded")
    with using(current_project()), replaying(end):
        defs = code_location()
    graph = defs.resolve_asset_graph()

    def last(key: str) -> str:
        return keys(graph.get(AssetKey.from_user_string(key)).partitions_def)[-1]

    assert last("pool_history") == last("usd_lending/rebalance_weights") == "2025-06-05"
    assert last("usd_lending/features") == last("usd_lending/predictions") == "2025-06"
    assert last("usd_lending/fitted_models") == "2025-06-02"
    assert last("binance_klines") == "2025-02-20"
    assert last("binance_funding_rates") == "2025-02-01"
    assert last("price_research/1h/features") == "2025-02"
    assert (
        len(keys(graph.get(AssetKey("pool_history")).partitions_def)) == 365
    )  # none after the data: none missing
    assert not any("intraday" in k.to_user_string() for k in graph.get_all_asset_keys())  # enabled nowhere
    assert not any("intraday" in j.name for j in defs.resolve_all_job_defs())


def test_intraday_partitions_only_where_enabled():
    project = current_project()
    vault = project.vaults["usd_lending"]
    on = vault.model_copy(update={"intraday": vault.intraday.model_copy(update={"enabled": True})})
    with replaying(DataEnd(LAST)):
        defs = build_vault_defs(on, project)
    key = AssetKey(["usd_lending", "intraday_moves"])
    (hourly,) = [a.partitions_def for a in defs.assets if key in a.keys]
    assert keys(hourly)[-1] == "2025-06-05-23:00"
    assert {s.name for s in defs.schedules} >= {"usd_lending_intraday_schedule"}
    off = build_vault_defs(vault, project)
    assert not [a for a in off.assets if key in a.keys]
    assert "usd_lending_intraday_schedule" not in {s.name for s in off.schedules}


def test_the_lake_marker_round_trips_and_a_live_run_removes_it(tmp_path: Path):
    lake = tmp_path / "lake"
    assert read_data_end(lake) is None
    write_data_end(lake, DataEnd(LAST, None, "/data/recorded"))
    assert read_data_end(lake) == DataEnd(LAST, None, "/data/recorded")
    write_data_end(lake, None)
    assert not (lake / MARKER).exists()
    (lake / MARKER).write_text("{not json")
    with pytest.raises(MarkerError, match=rf"{MARKER}: not a replayed-corpus marker"):
        read_data_end(lake)


def test_the_configured_lakes_marker_sets_the_calendar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    lake = tmp_path / "lake"
    write_data_end(lake, DataEnd(LAST, KLINES_LAST, "recorded"))
    monkeypatch.setenv("MIDFREQ_DATA_LAKE", str(lake))
    _lake_data_end.cache_clear()
    try:
        assert data_end() == DataEnd(LAST, KLINES_LAST, "recorded")
        with replaying(None):  # what the pipeline chose wins over the lake's marker
            assert data_end() is None
    finally:
        _lake_data_end.cache_clear()
