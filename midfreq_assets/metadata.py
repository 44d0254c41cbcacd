"""Metadata helpers: what a person wants to see in the Dagster UI for a materialization."""

from __future__ import annotations

from typing import Any

import pandas as pd
from dagster import MetadataValue


def markdown_table(df: pd.DataFrame, max_rows: int = 20, floatfmt: str = ".4g") -> MetadataValue:
    if df.empty:
        return MetadataValue.md("_(none)_")
    shown = df.head(max_rows)
    more = f"\n\n_{len(df) - max_rows} more rows_" if len(df) > max_rows else ""
    return MetadataValue.md(shown.to_markdown(index=False, floatfmt=floatfmt) + more)


def listing(items: list[Any], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" ... (+{len(items) - limit})" if len(items) > limit else "")
