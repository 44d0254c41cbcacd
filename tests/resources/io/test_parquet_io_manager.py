"""Parquet lake: one file per partition, atomic writes, range outputs split, loads always one frame."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.


import os
import re

import pandas as pd
import pytest
from dagster import (
    AssetExecutionContext,
    AssetIn,
    BackfillPolicy,
    DailyPartitionsDefinition,
    DynamicPartitionsDefinition,
    TimeWindowPartitionMapping,
    asset,
    materialize,
)

from midfreq_assets.pipeline import failure_message
from midfreq_resources.io import lake
from midfreq_resources.io.parquet_io_manager import ParquetIOManager

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
    events = result.get_asset_materialization_events()
    meta = events[0].materialization.metadata
    assert {e.materialization.partition: e.materialization.metadata["dagster/row_count"].value for e in events} == {
        "2024-01-02": 2, "2024-01-03": 2, "2024-01-04": 2}  # each day's own rows
    assert meta["rows_in_run"].value == 6 and meta["partitions_written"].value == 3
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


points = DynamicPartitionsDefinition(name="points")


@asset(partitions_def=points, backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=4),
       io_manager_key="io", metadata={"partition_column": "point"})
def point_values(context: AssetExecutionContext) -> pd.DataFrame:
    keys = context.partition_keys
    return pd.DataFrame({"point": [k for k in keys for _ in range(2)], "value": range(2 * len(keys))})


def test_multi_partition_output_split_by_partition_column(tmp_path):
    from dagster import DagsterInstance

    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("points", ["p1", "p2", "p3"])
    io = ParquetIOManager(root=str(tmp_path))
    tags = {"dagster/asset_partition_range_start": "p1", "dagster/asset_partition_range_end": "p3"}
    result = materialize([point_values], resources={"io": io}, tags=tags, instance=instance)
    assert result.success
    assert sorted(p.name for p in (tmp_path / "point_values").iterdir()) == ["p1.parquet", "p2.parquet", "p3.parquet"]
    assert pd.read_parquet(tmp_path / "point_values" / "p2.parquet")["value"].tolist() == [2, 3]
    assert len(result.get_asset_materialization_events()) == 3
    with pytest.raises(ValueError, match="'point' column"):
        lake.split_by_column(pd.DataFrame({"v": [1]}), ["p1", "p2"], "point")
    with pytest.raises(ValueError, match="outside its partitions"):
        lake.split_by_column(pd.DataFrame({"point": ["p9"]}), ["p1", "p2"], "point")


def test_lake_files_keep_the_umask_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        lake.write_parquet(lake.lake_root(tmp_path) / "x" / "2024-01-01.parquet", pd.DataFrame({"a": [1]}))
        os.umask(0o002)
        lake.write_bytes_atomic(lake.lake_root(tmp_path) / "y.bin", b"data")
    finally:
        os.umask(previous)
    assert (tmp_path / "x" / "2024-01-01.parquet").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert (tmp_path / "y.bin").stat().st_mode & 0o777 == 0o664
    assert not list(tmp_path.rglob("*.tmp"))


@asset(partitions_def=parts, backfill_policy=BackfillPolicy.single_run(), io_manager_key="io", name="daily_values",
       metadata={"required_columns": ["date", "pool", "value"]})
def daily_values_with_schema(context: AssetExecutionContext) -> pd.DataFrame:
    d = days(context)
    return pd.DataFrame({"date": d.repeat(2), "pool": ["a", "b"] * len(d), "value": range(2 * len(d))})


def _break(path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "not_parquet":
        path.write_text("date,pool,value\n2024-01-03,a,1\n")  # a CSV saved under the .parquet name
    elif how == "wrong_schema":
        lake.write_parquet(lake.lake_root(path), pd.DataFrame({"date": [pd.Timestamp("2024-01-03")], "pool": ["a"]}))
    elif how == "wrong_day":  # another day's file copied over (would surface as duplicate rows)
        path.write_bytes(path.with_name("2024-01-04.parquet").read_bytes())
    elif how == "empty_file":
        path.write_bytes(b"")


@pytest.mark.parametrize(("how", "message"), [
    ("truncated", r"not a readable Parquet file"),
    ("not_parquet", r"not a readable Parquet file"),
    ("empty_file", r"not a readable Parquet file \(0 bytes"),
    ("wrong_schema", r"missing column\(s\) \['value'\]; expected \['date', 'pool', 'value'\]"),
    ("wrong_day", r"2 row\(s\) dated \['2024-01-04'\], not 2024-01-03"),
])
def test_a_broken_partition_file_is_named_with_what_is_wrong(tmp_path, how, message):
    io = ParquetIOManager(root=str(tmp_path))
    assert materialize([daily_values_with_schema], resources={"io": io}, tags=RANGE).success
    path = tmp_path / "daily_values" / "2024-01-03.parquet"
    _break(path, how)
    result = materialize([daily_values_with_schema, windowed], resources={"io": io}, partition_key="2024-01-04",
                         selection=[windowed], raise_on_error=False)
    assert not result.success
    error = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error
    # the step's own error leads with the path, the asset and the partition (no "Error occurred while loading
    # input" with the cause further down)
    lead = f"{path} (asset daily_values, partition 2024-01-03): read failed: "
    assert error.message.removeprefix("dagster._core.definitions.events.Failure: ").startswith(lead), error.message
    assert error.cause is None and "Buffer" not in error.message
    assert re.search(message, error.message), error.message
    assert failure_message(result) == f"windowed: {lead}" + error.message.split(": read failed: ", 1)[1].splitlines()[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_a_read_only_lake_fails_naming_the_file_asset_and_partition(tmp_path):
    io = ParquetIOManager(root=str(tmp_path))
    assert materialize([daily_values_with_schema], resources={"io": io}, tags=RANGE).success
    folder = tmp_path / "daily_values"
    folder.chmod(0o555)
    try:
        result = materialize([daily_values_with_schema], resources={"io": io}, partition_key="2024-01-03",
                             raise_on_error=False)
    finally:
        folder.chmod(0o755)
    assert not result.success
    message = failure_message(result)
    assert message.startswith(f"daily_values: {folder / '2024-01-03.parquet'} (asset daily_values, partition "
                              "2024-01-03): write failed: PermissionError"), message


def test_a_write_error_fails_naming_the_file_asset_and_partition(tmp_path, monkeypatch):
    """A lake that refuses writes (a read-only mount; simulated, as root ignores permissions): the hidden
    temporary file's PermissionError is reported under the partition's own path, asset and partition."""
    import midfreq_resources.io.parquet_io_manager as manager

    def refuse(path, frame):
        raise PermissionError(13, "Permission denied", str(path.with_name(f".{path.name}.0f3a.tmp")))

    monkeypatch.setattr(manager, "write_parquet", refuse)
    io = ParquetIOManager(root=str(tmp_path))
    result = materialize([daily_values_with_schema], resources={"io": io}, partition_key="2024-01-03",
                         raise_on_error=False)
    error = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error
    lead = f"{tmp_path / 'daily_values' / '2024-01-03.parquet'} (asset daily_values, partition 2024-01-03)"
    assert error.message.removeprefix("dagster._core.definitions.events.Failure: ").startswith(
        f"{lead}: write failed: PermissionError: [Errno 13] Permission denied"), error.message
    assert failure_message(result).startswith(f"daily_values: {lead}: write failed")
