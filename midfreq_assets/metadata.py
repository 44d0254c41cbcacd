"""Metadata helpers: what a person wants to see in the Dagster UI for a materialization."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from dagster import MetadataValue

from midfreq_assets.domain.research.bundles import ModelBundle, bundle_table
from midfreq_assets.domain.research.importance import importance_png
from midfreq_assets.domain.research.selection import selection_table

#: Input metadata of the Parquet/model IO managers: a window with some partitions missing loads
#: what exists instead of failing.
TOLERATE_GAPS = {"allow_missing_partitions": True}


def markdown_table(df: pd.DataFrame, max_rows: int = 20, floatfmt: str = ".4g") -> MetadataValue:
    if df.empty:
        return MetadataValue.md("_(none)_")
    shown = df.head(max_rows)
    more = f"\n\n_{len(df) - max_rows} more rows_" if len(df) > max_rows else ""
    return MetadataValue.md(shown.to_markdown(index=False, floatfmt=floatfmt) + more)


def listing(items: list[Any], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" ... (+{len(items) - limit})" if len(items) > limit else "")


def png_markdown(png_b64: str, alt: str) -> MetadataValue:
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{png_b64})")


def bundle_metadata(bundles: Mapping[str, ModelBundle]) -> dict[str, object]:
    """Metadata of a ``fitted_models`` run: its last partition's models and CV, plus one line per
    partition when the run covered several."""
    b = bundles[max(bundles)]
    cv = b.cv
    meta: dict[str, object] = {
        "as_of": str(pd.Timestamp(b.as_of).date()),
        "n_train": max(b.n_train.values(), default=0),
        "n_train_per_model": MetadataValue.json(b.n_train),
        "models": ", ".join(b.models) or "(none: not enough labelled history)",
        "cv_summary": markdown_table(cv[[c for c in ("label", "estimator", "metric", "model", "baseline", "n",
                                                     "coverage") if c in cv]] if len(cv) else cv),
    }
    if b.selection:
        table = selection_table(b.selection)
        meta["selected_models"] = MetadataValue.json({s.label: s.chosen for s in b.selection.values()})
        meta["selection"] = markdown_table(table)
        meta["naive_traded"] = ", ".join(s.label for s in b.selection.values() if not s.beats_naive) or "(none)"
    if len(b.folds):
        meta["cv_folds"] = markdown_table(b.folds, max_rows=60)
    if b.cv_note:
        meta["cv_note"] = b.cv_note
    png = importance_png(b.models, b.importances)
    if png:
        meta["feature_importance"] = png_markdown(png, "importance")
    if len(bundles) > 1:
        meta["per_partition"] = markdown_table(bundle_table(bundles), max_rows=60)
    return meta
