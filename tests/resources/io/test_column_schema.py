"""The declared column schema: each frame is checked against it before it is written, and the
materialization carries its descriptions."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.

import re

import pandas as pd
import pytest
from dagster import (
    AssetExecutionContext,
    DailyPartitionsDefinition,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
    asset,
    materialize,
)

from midfreq_resources.io.column_schema import OPTIONAL, SchemaError, check_frame, frame_schema
from midfreq_resources.io.parquet_io_manager import ParquetIOManager

SCHEMA = TableSchema(
    columns=[
        TableColumn("date", "datetime", "the day"),
        TableColumn("pool", "string", "pool id"),
        TableColumn("tvl_usd", "number", "TVL [USD]"),
        TableColumn("note", "string", "optional note", constraints=TableColumnConstraints(other=[OPTIONAL])),
    ]
)
parts = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-10", timezone="UTC")


def frame(**over) -> pd.DataFrame:
    base = {"date": pd.to_datetime(["2024-01-02"] * 2), "pool": ["a", "b"], "tvl_usd": [1.0, 2.5]}
    return pd.DataFrame({**base, **over})


def test_a_frame_with_the_declared_columns_passes_and_optional_ones_may_be_absent():
    check_frame(frame(), SCHEMA, "x")
    check_frame(frame(note=["", "n"]), SCHEMA, "x")
    check_frame(pd.DataFrame(), SCHEMA, "x")  # nothing to write
    flags = TableSchema(columns=[TableColumn("in_gap", "bool"), TableColumn("last_seen", "datetime")])
    # a flag with missing values read back as 0/1 floats, timestamps in an object column, an all-missing column
    check_frame(
        pd.DataFrame(
            {"in_gap": [1.0, None, 0.0], "last_seen": [pd.Timestamp("2024-01-01"), None, None]},
        ).astype({"last_seen": object}),
        flags,
        "x",
    )
    check_frame(pd.DataFrame({"in_gap": [None, None], "last_seen": [None, None]}), flags, "x")
    with pytest.raises(SchemaError, match="column 'in_gap' is float64, the schema says bool"):
        check_frame(pd.DataFrame({"in_gap": [0.5], "last_seen": pd.to_datetime(["2024-01-01"])}), flags, "x")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (frame().drop(columns="tvl_usd"), r"column 'tvl_usd' \(number\) missing"),
        (frame(tvl_usd=["1", "2"]), r"column 'tvl_usd' is (str|object), the schema says number"),
        (frame(extra=[1, 2]), r"column 'extra' is not declared in the schema"),
    ],
)
def test_a_frame_that_breaks_the_schema_is_refused_naming_the_column(bad, message):
    with pytest.raises(
        SchemaError, match="asset demo, partition 2024-01-02: the frame does not match"
    ) as err:
        check_frame(bad, SCHEMA, "asset demo, partition 2024-01-02")
    assert re.search(message, str(err.value)), str(err.value)


def test_a_wildcard_column_declares_every_other_column():
    schema = TableSchema(columns=[TableColumn("date", "datetime"), TableColumn("*", "number", "a feature")])
    check_frame(pd.DataFrame({"date": pd.to_datetime(["2024-01-01"]), "f__ewma_3": [0.1]}), schema, "x")
    described = frame_schema(
        pd.DataFrame({"date": pd.to_datetime(["2024-01-01"]), "f__ewma_3": [0.1]}), schema
    )
    assert [(c.name, c.type, c.description) for c in described.columns] == [
        ("date", "datetime", None),
        ("f__ewma_3", "number", "a feature"),
    ]


@asset(partitions_def=parts, io_manager_key="io", metadata={"dagster/column_schema": SCHEMA})
def declared(context: AssetExecutionContext) -> pd.DataFrame:
    return frame(date=pd.to_datetime([context.partition_key] * 2))


@asset(partitions_def=parts, io_manager_key="io", metadata={"dagster/column_schema": SCHEMA}, name="declared")
def broken(context: AssetExecutionContext) -> pd.DataFrame:
    return frame(date=pd.to_datetime([context.partition_key] * 2)).drop(columns="tvl_usd")


def test_the_io_manager_writes_the_declared_descriptions_and_refuses_a_broken_frame(tmp_path):
    io = ParquetIOManager(root=str(tmp_path))
    result = materialize([declared], resources={"io": io}, partition_key="2024-01-02")
    mat = result.asset_materializations_for_node("declared")[0]
    columns = mat.metadata["dagster/column_schema"].value.columns
    assert [(c.name, c.description) for c in columns] == [
        ("date", "the day"),
        ("pool", "pool id"),
        ("tvl_usd", "TVL [USD]"),
    ]
    before = (tmp_path / "declared" / "2024-01.parquet").read_bytes()
    result = materialize([broken], resources={"io": io}, partition_key="2024-01-02", raise_on_error=False)
    assert not result.success
    error = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error
    assert "asset declared, partition 2024-01-02" in error.message
    assert "column 'tvl_usd' (number) missing; nothing written" in error.message
    assert (tmp_path / "declared" / "2024-01.parquet").read_bytes() == before


def test_numbers_in_an_object_column_pass_strings_do_not():
    """A range concatenated with a day that had no rows (an empty frame's columns are object) keeps its
    numbers in an object column: they are still numbers; text is not."""
    empty_day = pd.DataFrame(columns=["date", "pool", "tvl_usd"])
    full_day = frame()
    joined = pd.concat([empty_day, full_day], ignore_index=True)
    assert joined["tvl_usd"].dtype == object
    check_frame(joined, SCHEMA, "x")
    counts = TableSchema(columns=[TableColumn("n", "integer")])
    check_frame(pd.DataFrame({"n": pd.Series([1, 2], dtype=object)}), counts, "x")
    with pytest.raises(SchemaError, match="column 'n' is object, the schema says integer"):
        check_frame(pd.DataFrame({"n": pd.Series([1.5, 2], dtype=object)}), counts, "x")
    with pytest.raises(SchemaError, match="column 'tvl_usd' is object, the schema says number"):
        check_frame(frame(tvl_usd=pd.Series(["1", "2"], dtype=object)), SCHEMA, "x")
