"""Parquet lake: daily partitions in month files, other partitions a file each, atomic writes,
range outputs split, loads always one frame."""

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
RANGE = {
    "dagster/asset_partition_range_start": "2024-01-02",
    "dagster/asset_partition_range_end": "2024-01-04",
}


def days(context: AssetExecutionContext) -> pd.DatetimeIndex:
    window = context.partition_time_window
    return pd.date_range(window.start.date(), window.end.date(), freq="D", inclusive="left")


@asset(partitions_def=parts, backfill_policy=BackfillPolicy.single_run(), io_manager_key="io")
def daily_values(context: AssetExecutionContext) -> pd.DataFrame:
    d = days(context)
    return pd.DataFrame({"date": d.repeat(2), "pool": ["a", "b"] * len(d), "value": range(2 * len(d))})


@asset(
    partitions_def=parts,
    io_manager_key="io",
    ins={"daily_values": AssetIn(partition_mapping=TimeWindowPartitionMapping(start_offset=-2))},
)
def windowed(daily_values: pd.DataFrame) -> pd.DataFrame:
    out = daily_values.groupby("date", as_index=False)["value"].sum()
    return out.tail(1)


def month_file(tmp_path, month: str = "2024-01"):
    return lake.lake_root(tmp_path) / "daily_values" / f"{month}.parquet"


def test_range_output_stored_in_its_month_file_and_loaded_as_one_frame(tmp_path):
    io = ParquetIOManager(root=str(tmp_path))
    result = materialize([daily_values], resources={"io": io}, tags=RANGE)
    assert result.success
    assert sorted(p.name for p in (tmp_path / "daily_values").iterdir()) == ["2024-01.parquet"]
    store = io.daily(["daily_values"])
    assert sorted(store.stored_days()) == ["2024-01-02", "2024-01-03", "2024-01-04"]
    one = store.read(["2024-01-03"])
    assert list(one["pool"]) == ["a", "b"] and (one["date"] == pd.Timestamp("2024-01-03")).all()
    events = result.get_asset_materialization_events()
    assert {
        e.materialization.partition: e.materialization.metadata["dagster/row_count"].value for e in events
    } == {"2024-01-02": 2, "2024-01-03": 2, "2024-01-04": 2}  # each day's own rows
    assert all(e.materialization.metadata["path"].value.endswith("2024-01.parquet") for e in events)
    meta = events[-1].materialization.metadata  # the run's totals and the schema: on its last partition only
    assert meta["run_rows"].value == 6 and meta["run_partitions"].value == 3
    assert {c.name for c in meta["dagster/column_schema"].value.columns} == {"date", "pool", "value"}
    assert "run_rows" not in events[0].materialization.metadata

    result = materialize(
        [daily_values, windowed], resources={"io": io}, partition_key="2024-01-04", selection=[windowed]
    )
    assert result.success
    loaded = result.output_for_node("windowed")
    assert len(loaded) == 1 and loaded["date"].iloc[0] == pd.Timestamp("2024-01-04")


def test_rerun_of_a_day_replaces_it_and_keeps_the_other_days(tmp_path):
    io = ParquetIOManager(root=str(tmp_path))
    assert materialize([daily_values], resources={"io": io}, tags=RANGE).success
    for _ in range(2):
        assert materialize([daily_values], resources={"io": io}, partition_key="2024-01-02").success
    frame = io.daily(["daily_values"]).read(["2024-01-02", "2024-01-03", "2024-01-04"])
    assert frame.groupby("date").size().tolist() == [2, 2, 2]
    assert frame["date"].is_monotonic_increasing


def test_a_day_without_rows_is_still_a_stored_partition(tmp_path):
    store = lake.MonthFiles(lake.lake_root(tmp_path) / "x")
    empty = pd.DataFrame({"date": pd.Series(dtype="datetime64[ns]"), "v": pd.Series(dtype=float)})
    store.write(
        {"2024-02-01": empty, "2024-02-02": pd.DataFrame({"date": [pd.Timestamp("2024-02-02")], "v": [1.0]})}
    )
    assert sorted(store.stored_days()) == ["2024-02-01", "2024-02-02"]
    assert store.read(["2024-02-01"]).empty and len(store.read(["2024-02-01", "2024-02-02"])) == 1
    frames, bad = store.read_each(["2024-02-01", "2024-02-02", "2024-02-03"])
    assert sorted(frames) == ["2024-02-01", "2024-02-02"] and not bad and frames["2024-02-01"].empty


def test_day_files_of_the_earlier_layout_are_read_and_folded_into_their_month(tmp_path):
    folder = lake.lake_root(tmp_path) / "x"
    for day, v in (("2024-03-01", 1.0), ("2024-03-02", 2.0)):
        lake.write_parquet(folder / f"{day}.parquet", pd.DataFrame({"date": [pd.Timestamp(day)], "v": [v]}))
    store = lake.MonthFiles(folder)
    assert sorted(store.stored_days()) == ["2024-03-01", "2024-03-02"]
    assert store.read(["2024-03-01", "2024-03-02"])["v"].tolist() == [1.0, 2.0]
    store.write({"2024-03-02": pd.DataFrame({"date": [pd.Timestamp("2024-03-02")], "v": [9.0]})})
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["2024-03.parquet"]  # nothing lost, one file
    assert store.read(["2024-03-01", "2024-03-02"])["v"].tolist() == [1.0, 9.0]


def test_missing_upstream_partition_is_a_clear_error(tmp_path):
    io = ParquetIOManager(root=str(tmp_path))
    with pytest.raises(
        FileNotFoundError, match=r"daily_values: partitions not materialized: \['2024-01-0[23]'"
    ):
        materialize(
            [daily_values, windowed], resources={"io": io}, partition_key="2024-01-04", selection=[windowed]
        )


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
    before = (tmp_path / "daily_values" / "2024-01.parquet").read_bytes()
    result = materialize([broken], resources={"io": io}, partition_key="2024-01-02", raise_on_error=False)
    assert not result.success
    assert (tmp_path / "daily_values" / "2024-01.parquet").read_bytes() == before


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
    path = lake.lake_root("memory://midfreq-test-lake") / "daily_values" / "2024-01.parquet"
    assert path.exists()
    assert len(lake.read_parquet(path)) == 6
    assert len(io.daily(["daily_values"]).read(["2024-01-03"])) == 2


points = DynamicPartitionsDefinition(name="points")


@asset(
    partitions_def=points,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=4),
    io_manager_key="io",
    metadata={"partition_column": "point"},
)
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
    assert sorted(p.name for p in (tmp_path / "point_values").iterdir()) == [
        "p1.parquet",
        "p2.parquet",
        "p3.parquet",
    ]
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


@asset(
    partitions_def=parts,
    backfill_policy=BackfillPolicy.single_run(),
    io_manager_key="io",
    name="daily_values",
    metadata={"required_columns": ["date", "pool", "value"]},
)
def daily_values_with_schema(context: AssetExecutionContext) -> pd.DataFrame:
    d = days(context)
    return pd.DataFrame({"date": d.repeat(2), "pool": ["a", "b"] * len(d), "value": range(2 * len(d))})


def _break(path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "not_parquet":
        path.write_text("date,pool,value\n2024-01-03,a,1\n")  # a CSV saved under the .parquet name
    elif how == "no_days":  # a Parquet file midfreq did not write, under a month file's name
        lake.write_parquet(
            lake.lake_root(path), pd.DataFrame({"date": [pd.Timestamp("2024-01-03")], "pool": ["a"]})
        )
    elif how == "wrong_month":  # another month's file copied over (would surface as duplicate rows)
        other = lake.MonthFiles(lake.lake_root(path).parent / "other")
        other.write(
            {
                "2024-02-03": pd.DataFrame(
                    {"date": [pd.Timestamp("2024-02-03")] * 2, "pool": ["a", "b"], "value": [1, 2]}
                )
            }
        )
        path.write_bytes(lake.lake_root(path).parent.joinpath("other", "2024-02.parquet").read_bytes())
    elif how == "empty_file":
        path.write_bytes(b"")


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", r"2024-01\.parquet: not a readable Parquet file"),
        ("not_parquet", r"2024-01\.parquet: not a readable Parquet file"),
        ("empty_file", r"2024-01\.parquet: not a readable Parquet file \(0 bytes"),
        ("no_days", r"2024-01\.parquet: a month file without its list of days"),
        (
            "wrong_month",
            r"2024-01\.parquet: holds days of another month \(\['2024-02-03'\]\), not of 2024-01",
        ),
    ],
)
def test_a_broken_partition_file_is_named_with_what_is_wrong(tmp_path, how, message):
    io = ParquetIOManager(root=str(tmp_path))
    assert materialize([daily_values_with_schema], resources={"io": io}, tags=RANGE).success
    path = tmp_path / "daily_values" / "2024-01.parquet"
    _break(path, how)
    result = materialize(
        [daily_values_with_schema, windowed],
        resources={"io": io},
        partition_key="2024-01-04",
        selection=[windowed],
        raise_on_error=False,
    )
    assert not result.success
    error = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error
    # the step's own error leads with the asset's folder, the asset and the partitions read (no "Error occurred
    # while loading input" with the cause further down), then names the month file and what is wrong
    lead = f"{path.parent} (asset daily_values, partition 2024-01-02..2024-01-04): read failed: "
    assert error.message.removeprefix("dagster._core.definitions.events.Failure: ").startswith(lead), (
        error.message
    )
    assert error.cause is None and "Buffer" not in error.message
    assert re.search(message, error.message), error.message
    expected = f"windowed: {lead}" + error.message.split(": read failed: ", 1)[1].splitlines()[0]
    assert failure_message(result) == expected[:400]  # one line, cut at 400 characters


def test_a_month_file_with_rows_of_days_it_does_not_hold_is_refused(tmp_path):
    store = lake.MonthFiles(lake.lake_root(tmp_path) / "x")
    store.write({"2024-01-03": pd.DataFrame({"date": [pd.Timestamp("2024-01-03")], "v": [1]})})
    path = store.path("2024-01")
    table = lake.read_arrow(path)
    forged = pd.DataFrame({"date": [pd.Timestamp("2024-01-03"), pd.Timestamp("2024-01-05")], "v": [1, 2]})
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.Table.from_pandas(forged, preserve_index=False).replace_schema_metadata(table.schema.metadata),
        str(path),
    )
    with pytest.raises(
        lake.LakeReadError, match=r"1 row\(s\) dated \['2024-01-05'\], not among the days it holds"
    ):
        store.read(["2024-01-03"])
    with pytest.raises(lake.LakeReadError, match="missing column"):
        store.read(["2024-01-03"], required=["date", "v", "w"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_a_read_only_lake_fails_naming_the_file_asset_and_partition(tmp_path):
    io = ParquetIOManager(root=str(tmp_path))
    assert materialize([daily_values_with_schema], resources={"io": io}, tags=RANGE).success
    folder = tmp_path / "daily_values"
    folder.chmod(0o555)
    try:
        result = materialize(
            [daily_values_with_schema], resources={"io": io}, partition_key="2024-01-03", raise_on_error=False
        )
    finally:
        folder.chmod(0o755)
    assert not result.success
    message = failure_message(result)
    assert message.startswith(
        f"daily_values: {folder} (asset daily_values, partition 2024-01-03): write failed: PermissionError"
    ), message


def test_a_write_error_fails_naming_the_file_asset_and_partition(tmp_path, monkeypatch):
    """A lake that refuses writes (a read-only mount; simulated, as root ignores permissions): the hidden
    temporary file's PermissionError is reported under the asset's folder, asset and partition."""

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path.with_name(f".{path.name}.0f3a.tmp")))

    monkeypatch.setattr(lake, "write_bytes_atomic", refuse)
    io = ParquetIOManager(root=str(tmp_path))
    result = materialize(
        [daily_values_with_schema], resources={"io": io}, partition_key="2024-01-03", raise_on_error=False
    )
    error = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error
    lead = f"{tmp_path / 'daily_values'} (asset daily_values, partition 2024-01-03)"
    assert error.message.removeprefix("dagster._core.definitions.events.Failure: ").startswith(
        f"{lead}: write failed: PermissionError: [Errno 13] Permission denied"
    ), error.message
    assert failure_message(result).startswith(f"daily_values: {lead}: write failed")
