"""Previews a person reads on the asset page without a click: formatted tables and column schemas.

A preview is a Dagster ``MetadataValue.table`` (drawn inline, where markdown tables hide behind
"[Show Markdown]"): amounts with thousands separators, APYs and shares as percentages, dates as
``YYYY-MM-DD``, a pool's symbol, project and chain beside its uuid, no column that is empty on
every shown row. The units come from the asset's :class:`~midfreq_assets.domain.schemas.Schema`,
the same declaration that becomes the asset's column schema (``dagster/column_schema``), which
the Parquet IO manager checks each frame against before writing.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from dagster import MetadataValue, TableColumn, TableColumnConstraints, TableRecord, TableSchema

from midfreq_assets.domain.schemas import APY, FRACTION, OTHER, SCHEMAS, USD, Schema, unit_of
from midfreq_resources.io.column_schema import OPTIONAL, SCHEMA_KEY

#: Pool uuid -> "SYMBOL project chain", learned from every frame that names pools (pool_metadata,
#: rebalance_weights, the DefiLlama snapshot): previews of frames without names show them too.
POOL_NAMES: dict[str, str] = {}
POOL_COLUMNS = ("pool", "instrument")


def dagster_schema(schema: Schema) -> TableSchema:
    """The asset's column schema for Dagster: kind, description with unit, ``optional`` columns marked."""
    return TableSchema(
        columns=[
            TableColumn(
                name=c.name,
                type=c.kind,
                description=c.text() if c.name != OTHER else f"every other column: {c.text()}",
                constraints=TableColumnConstraints(other=[OPTIONAL]) if c.optional else None,
            )
            for c in schema.columns
        ]
    )


def schema_metadata(asset: str) -> dict[str, object]:
    """Definition metadata declaring ``asset``'s columns (``SCHEMAS[asset]``)."""
    return {SCHEMA_KEY: dagster_schema(SCHEMAS[asset])}


def learn_pool_names(frame: pd.DataFrame) -> None:
    """Remember each pool's "SYMBOL project chain" from a frame with ``pool`` and ``symbol`` columns."""
    if not len(frame) or "pool" not in frame or "symbol" not in frame:
        return
    cols = [c for c in ("symbol", "project", "chain") if c in frame]
    last = frame[frame["pool"].notna() & frame["symbol"].notna()].drop_duplicates("pool", keep="last")
    names = [
        " ".join(str(v) for v in row if isinstance(v, str) and v)
        for row in last[cols].itertuples(index=False)
    ]
    POOL_NAMES.update(zip(last["pool"].astype(str), names, strict=True))


def fmt_number(v: float, unit: str = "") -> str:
    """``1,234,567`` for amounts, ``4.31%`` for fractions and APYs, else 4 significant digits without
    exponent for everyday magnitudes; blank for a missing value."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    v = float(v)
    if unit == USD or unit == "reference asset":
        return f"{v:,.0f}" if abs(v) >= 100 or v == int(v) else f"{v:,.2f}"
    if unit in (APY, FRACTION):
        return f"{v * 100:.2f}%"
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    if 1e-3 <= abs(v) < 1e6:
        return f"{v:,.4g}" if abs(v) >= 1 else f"{v:.4f}".rstrip("0").rstrip(".")
    return f"{v:.3e}"


def _format_column(s: pd.Series, unit: str) -> list[str]:
    if pd.api.types.is_bool_dtype(s.dtype):
        return ["yes" if v else "" for v in s]
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        values = [pd.Timestamp(v) if v == v else None for v in s.tolist()]
        daily = all(v is None or v == v.normalize() for v in values)
        return ["" if v is None else v.strftime("%Y-%m-%d" if daily else "%Y-%m-%d %H:%M") for v in values]
    if pd.api.types.is_numeric_dtype(s.dtype):
        return [fmt_number(v, unit) for v in s.to_numpy(dtype=float).tolist()]
    out = []
    for v in s:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append("")
        elif isinstance(v, (list, tuple, np.ndarray)):
            out.append(", ".join(str(x) for x in v))
        elif isinstance(v, pd.Timestamp):
            out.append(v.strftime("%Y-%m-%d"))
        elif isinstance(v, float):
            out.append(fmt_number(v, unit))
        else:
            out.append(str(v))
    return out


def table_preview(
    df: pd.DataFrame, max_rows: int = 20, floatfmt: str = "", schema: Schema | None = None
) -> MetadataValue:
    """The first ``max_rows`` rows of ``df`` as an inline table of formatted strings (a last row says
    how many more there are); columns empty on every shown row are left out, a pool column gets
    its name beside it. ``floatfmt`` is accepted for the old markdown signature and ignored: each
    column is formatted by its unit."""
    del floatfmt
    shown = df.head(max_rows)
    empty = shown.isna().all(axis=0) if len(shown) else pd.Series(False, index=shown.columns)
    cols: dict[str, list[str]] = {}
    label = "name" if "name" not in shown else "pool_name"  # the pool's symbol, project and chain
    order: list[str] = []
    for c, series in shown.items():
        if empty[c]:
            continue
        name = str(c)
        cols[name] = _format_column(series, unit_of(name, schema))
        order.append(name)
        if name in POOL_COLUMNS and "symbol" not in shown and label not in cols:
            labels = [POOL_NAMES.get(v, "") for v in cols[name]]
            if any(labels):
                cols[label] = labels
                order.append(label)
    records = [TableRecord({c: cols[c][i] for c in order}) for i in range(len(shown))]
    if len(df) > max_rows and order:
        records.append(
            TableRecord(
                {c: (f"... {len(df) - max_rows:,} more rows" if i == 0 else "") for i, c in enumerate(order)}
            )
        )
    columns = []
    for c in order:
        col = schema.column(c) if schema is not None else None
        unit = unit_of(c, schema)
        desc = col.text() if col is not None and col.name != OTHER else (f"[{unit}]" if unit else None)
        columns.append(TableColumn(name=c, type="string", description=desc))
    if not columns:
        columns = [TableColumn(name="(none)", type="string")]
    return MetadataValue.table(records, TableSchema(columns=columns))
