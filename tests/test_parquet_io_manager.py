"""Parquet lake: one file per partition, atomic writes, range outputs split, loads always one frame."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.


import os

import pandas as pd
import pytest
from dagster import (
    AssetExecutionContext,
    AssetIn,
    BackfillPolicy,
    DailyPartitionsDefinition,
    TimeWindowPartitionMapping,
    asset,
    materialize,
)

from midfreq_resources import lake
from midfreq_resources.parquet_io_manager import ParquetIOManager

parts = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-10", timezone="UTC")
RANGE = {"dagster/asset_partition_range_start": "2024-01-02", "dagster/asset_partition_range_end": "2024-01-04"}


def days(context: AssetExecutionContext) -> pd.DatetimeIndex:
    window = context.partition_time_window
    return pd.date_range(window.start.date(), window.end.date(), freq="D", inclusive="left")


@asset(partitions_def=parts, backfill_policy=BackfillPolicy.single_run(), io_manager_key="io")
def daily_values(context: AssetExecutionContext) -> pd.DataFrame:
    d = days(context)
    return pd.DataFrame({"date": d.repeat(2), "pool": ["a", "b"] * len(d), "value": range(2 * len(d))})


@asset(partitions_def=parts, io_manager_key="io",
       ins={"daily_values": AssetIn(partition_mapping=TimeWindowPartitionMapping(start_offset=-2))})
def windowed(daily_values: pd.DataFrame) -> pd.DataFrame:
    out = daily_values.groupby("date", as_index=False)["value"].sum()
    return out.tail(1)


def test_range_output_split_into_day_files_and_loaded_as_one_frame(tmp_path):
    io = ParquetIOManager(root=str(tmp_path))
    result = materialize([daily_values], resources={"io": io}, tags=RANGE)
    assert result.success
    files = sorted(p.name for p in (tmp_path / "daily_values").iterdir())
    assert files == ["2024-01-02.parquet", "2024-01-03.parquet", "2024-01-04.parquet"]
    one = pd.read_parquet(tmp_path / "daily_values" / "2024-01-03.parquet")
    assert list(one["pool"]) == ["a", "b"] and (one["date"] == pd.Timestamp("2024-01-03")).all()
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["dagster/row_count"].value == 6
    assert {c.name for c in meta["dagster/column_schema"].value.columns} == {"date", "pool", "value"}

    result = materialize([daily_values, windowed], resources={"io": io}, partition_key="2024-01-04",
                         selection=[windowed])
    assert result.success
    loaded = result.output_for_node("windowed")
    assert len(loaded) == 1 and loaded["date"].iloc[0] == pd.Timestamp("2024-01-04")


def test_rerun_of_a_day_replaces_it(tmp_path):
    io = ParquetIOManager(root=str(tmp_path))
    for _ in range(2):
        assert materialize([daily_values], resources={"io": io}, partition_key="2024-01-02").success
    frame = pd.read_parquet(tmp_path / "daily_values" / "2024-01-02.parquet")
    assert len(frame) == 2


def test_missing_upstream_partition_is_a_clear_error(tmp_path):
    io = ParquetIOManager(root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"daily_values: partitions not materialized: \['2024-01-0[23]'"):
        materialize([daily_values, windowed], resources={"io": io}, partition_key="2024-01-04",
                    selection=[windowed])


def test_failed_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    target = lake.lake_root(tmp_path) / "x" / "2024-01-01.parquet"
    lake.write_parquet(target, pd.DataFrame({"v": [1, 2]}))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        lake.write_parquet(target, pd.DataFrame({"v": [9]}))
    assert pd.read_parquet(str(target))["v"].tolist() == [1, 2]
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["2024-01-01.parquet"]


def test_failing_asset_writes_nothing(tmp_path):
    @asset(partitions_def=parts, io_manager_key="io", name="daily_values")
    def broken() -> pd.DataFrame:
        raise RuntimeError("source down")

    io = ParquetIOManager(root=str(tmp_path))
    assert materialize([daily_values], resources={"io": io}, partition_key="2024-01-02").success
    before = (tmp_path / "daily_values" / "2024-01-02.parquet").read_bytes()
    result = materialize([broken], resources={"io": io}, partition_key="2024-01-02", raise_on_error=False)
    assert not result.success
    assert (tmp_path / "daily_values" / "2024-01-02.parquet").read_bytes() == before


def test_range_output_without_date_column_is_refused():
    with pytest.raises(ValueError, match="needs a 'date' column"):
        lake.split_by_date(pd.DataFrame({"v": [1]}), ["2024-01-01", "2024-01-02"])


def test_rows_outside_the_range_are_refused():
    df = pd.DataFrame({"date": pd.to_datetime(["2024-01-01", "2024-02-01"])})
    with pytest.raises(ValueError, match="outside its partitions"):
        lake.split_by_date(df, ["2024-01-01", "2024-01-02"])


def test_fsspec_memory_filesystem(tmp_path):
    io = ParquetIOManager(root="memory://midfreq-test-lake")
    assert materialize([daily_values], resources={"io": io}, tags=RANGE).success
    path = lake.lake_root("memory://midfreq-test-lake") / "daily_values" / "2024-01-03.parquet"
    assert path.exists()
    assert len(lake.read_parquet(path)) == 2
