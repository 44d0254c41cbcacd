"""The column schema an asset declares (Dagster ``TableSchema``), checked on every frame before
it is written: a missing column or a column of the wrong kind fails naming the asset, the
partition and the column, and the materialization carries the declared descriptions.

Column ``type`` is a kind (``number``, ``integer``, ``bool``, ``datetime``, ``string``, ``list``,
``value``: a number or a flag);
a column whose constraints say ``optional`` may be absent; a column named ``*`` stands for every
column the schema does not name (generated feature columns), else such a column fails too.
"""

from __future__ import annotations

import pandas as pd
from dagster import TableColumn, TableSchema
from pandas.api import types as ptypes

OPTIONAL = "optional"
OTHER = "*"
SCHEMA_KEY = "dagster/column_schema"


class SchemaError(ValueError):
    """A frame that does not match its asset's declared columns."""


def _kind_ok(kind: str, series: pd.Series) -> bool:
    dtype = series.dtype
    # numbers in an object column: a concat of days where one day's frame was empty (object columns)
    inferred = pd.api.types.infer_dtype(series.dropna()) if ptypes.is_object_dtype(dtype) else ""
    if kind == "number":
        return (ptypes.is_numeric_dtype(dtype) and not ptypes.is_bool_dtype(dtype)) or inferred in (
            "integer",
            "floating",
            "mixed-integer-float",
        )
    if kind == "value":  # a feature: a number or a flag
        return ptypes.is_numeric_dtype(dtype) or ptypes.is_bool_dtype(dtype)
    if kind == "integer":
        return ptypes.is_integer_dtype(dtype) or inferred == "integer"
    if kind == "bool":  # also a flag column with missing values (object of bools, or 0/1 floats)
        values = series.dropna()
        return (
            ptypes.is_bool_dtype(dtype)
            or (ptypes.is_object_dtype(dtype) and values.map(type).isin([bool]).all())
            or (ptypes.is_numeric_dtype(dtype) and values.isin([0, 1]).all())
        )
    if kind == "datetime":  # object columns of timestamps too (a concat with an all-missing part)
        return ptypes.is_datetime64_any_dtype(dtype) or inferred in ("datetime", "datetime64")
    if kind in ("string", "list"):
        return ptypes.is_object_dtype(dtype) or ptypes.is_string_dtype(dtype)
    return True


def _optional(col: TableColumn) -> bool:
    return OPTIONAL in (col.constraints.other if col.constraints else [])


def check_frame(frame: pd.DataFrame, schema: TableSchema, where: str) -> None:
    """Raise :class:`SchemaError` (message leading with ``where``) unless ``frame`` has every required
    column of ``schema`` with its kind; an empty frame without columns (nothing to write) passes."""
    if frame.empty and len(frame.columns) == 0:
        return
    declared = {c.name: c for c in schema.columns}
    other = declared.get(OTHER)
    problems = [
        f"column {c.name!r} ({c.type}) missing"
        for c in schema.columns
        if c.name != OTHER and not _optional(c) and c.name not in frame.columns and len(frame)
    ]
    for name in frame.columns:
        col = declared.get(str(name), other)
        if col is None:
            problems.append(f"column {name!r} is not declared in the schema")
        elif (
            len(frame) and frame[name].notna().any() and not _kind_ok(col.type, frame[name])
        ):  # all null: any kind
            problems.append(f"column {name!r} is {frame[name].dtype}, the schema says {col.type}")
    if problems:
        raise SchemaError(
            f"{where}: the frame does not match the asset's column schema: " + "; ".join(problems)
        )


def frame_schema(frame: pd.DataFrame, schema: TableSchema | None) -> TableSchema:
    """The materialization's column schema: the frame's columns in order, each with its declared kind
    and description (the dtype when the asset declares none)."""
    if schema is None:
        return TableSchema(columns=[TableColumn(name=str(c), type=str(t)) for c, t in frame.dtypes.items()])
    declared = {c.name: c for c in schema.columns}
    other = declared.get(OTHER)
    cols = []
    for name in frame.columns:
        col = declared.get(str(name), other)
        cols.append(
            TableColumn(
                name=str(name),
                type=col.type if col else str(frame[name].dtype),
                description=col.description if col else None,
            )
        )
    return TableSchema(columns=cols)
