"""Metadata helpers: what a person wants to see in the Dagster UI for a materialization."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from dagster import MetadataValue
from upath import UPath

from midfreq_assets.domain.research.bundles import ModelBundle
from midfreq_assets.domain.research.importance import importance_png
from midfreq_assets.domain.research.selection import selection_table
from midfreq_assets.previews import table_preview
from midfreq_resources.dagster_compat import add_partitions_metadata
from midfreq_resources.settings import REPORTS_URL_ENV

#: Input metadata of the Parquet/model IO managers: a window with some partitions missing loads
#: what exists instead of failing.
TOLERATE_GAPS = {"allow_missing_partitions": True}


def report_link(path: UPath, lake: UPath) -> dict[str, MetadataValue]:
    """Where the UI finds an HTML report written at ``path`` in ``lake``.

    ``report_html``: its path (the UI copies it on click). A ``file://`` link would be dead: browsers
    refuse to open a local file from the UI's http page ("Not allowed to load local resource"). With
    ``MIDFREQ_REPORTS_URL`` (an http server of the lake's folder) ``report_url`` is a link that opens in
    one click; without it ``report_open`` says how to open the file.
    """
    links: dict[str, MetadataValue] = {"report_html": MetadataValue.path(str(path))}
    base = os.environ.get(REPORTS_URL_ENV, "").strip().rstrip("/")
    if base:
        relative = PurePosixPath(path.path).relative_to(PurePosixPath(lake.path)).as_posix()
        links["report_url"] = MetadataValue.url(f"{base}/{quote(relative)}")
    else:
        links["report_open"] = MetadataValue.text(
            "click the path to copy it, then paste it into the browser's address bar (a browser does not "
            f"follow file:// links from this page); or serve the lake (python -m http.server -d <lake>) and set "
            f"{REPORTS_URL_ENV} to its URL for a link"
        )
    return links


def markdown_table(df: pd.DataFrame, max_rows: int = 20, floatfmt: str = ".4g") -> MetadataValue:
    """A frame's first rows as an inline table (:func:`~midfreq_assets.previews.table_preview`: each
    value formatted by its unit); the name is kept for the callers written when it was markdown."""
    return table_preview(df, max_rows, floatfmt)


def listing(items: list[Any], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" ... (+{len(items) - limit})" if len(items) > limit else "")


def png_markdown(png_b64: str, alt: str) -> MetadataValue:
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{png_b64})")


def bundle_summary(b: ModelBundle) -> dict[str, object]:
    """A refit's own figures (its as_of, training rows, models, what each label trades): cheap, numeric
    where it can be, so the UI plots them across partitions."""
    meta: dict[str, object] = {
        "as_of": str(pd.Timestamp(b.as_of).date()),
        "n_train": max(b.n_train.values(), default=0),
        "n_train_per_model": MetadataValue.json(b.n_train),
        "n_models": len(b.models),
        "models": ", ".join(b.models) or "(none: not enough labelled history)",
    }
    if b.selection:
        meta["selected_models"] = MetadataValue.json({s.label: s.chosen for s in b.selection.values()})
        meta["naive_traded"] = (
            ", ".join(s.label for s in b.selection.values() if not s.beats_naive) or "(none)"
        )
    return meta


def bundle_details(b: ModelBundle) -> dict[str, object]:
    """A refit's CV tables and importance plot (what a person reads on one partition)."""
    cv = b.cv
    meta: dict[str, object] = {
        "cv_summary": markdown_table(
            cv[[c for c in ("label", "estimator", "metric", "model", "baseline", "n", "coverage") if c in cv]]
            if len(cv)
            else cv
        ),
    }
    if b.selection:
        meta["selection"] = markdown_table(selection_table(b.selection))
    if len(b.folds):
        meta["cv_folds"] = markdown_table(b.folds, max_rows=60)
    if b.cv_note:
        meta["cv_note"] = b.cv_note
    png = importance_png(b.models, b.importances)
    if png:
        meta["feature_importance"] = png_markdown(png, "importance")
    return meta


#: significant digits of a float in a partition's metadata: the UI prints floats as stored
#: (0.9809450000000001), and no figure there is read to more than this
METADATA_DIGITS = 10


def tidy_numbers(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata`` with each plain float rounded to :data:`METADATA_DIGITS` significant digits (what the
    table shows and the Plots draw; the stored frames keep every digit)."""
    return {
        k: float(f"{v:.{METADATA_DIGITS}g}") if isinstance(v, float) and np.isfinite(v) else v
        for k, v in metadata.items()
    }


def run_scope(keys: list[str]) -> str:
    """What the ``run_*`` entries of a range run's last partition are (the other partitions have none)."""
    return (
        f"run_* entries and the tables are the whole run's ({keys[0]}..{keys[-1]}, {len(keys)} partitions), "
        "shown on its last partition; every other entry is this partition's own"
    )


def _bundle_partition_metadata(context, by_key: dict) -> None:
    add_partitions_metadata(context, context.assets_def.key, by_key)


def bundle_metadata(
    context,
    bundles: Mapping[str, ModelBundle],
    extra: Callable[[ModelBundle], dict] | None = None,
    details: Callable[[ModelBundle], dict] | None = None,
) -> dict[str, object]:
    """Metadata of a ``fitted_models`` run: each partition its own refit's summary (``extra``: more of
    it); the CV tables, the importance plot and ``details`` (the traded model's inline plots) of the
    last one (on a range run: on its last partition, which says so)."""
    keys = sorted(bundles)
    extra = extra or (lambda _b: {})
    details = details or (lambda _b: {})
    if len(keys) == 1:
        b = bundles[keys[0]]
        return {**details(b), **bundle_summary(b), **bundle_details(b), **extra(b)}
    by_key = {key: {**bundle_summary(bundles[key]), **extra(bundles[key])} for key in keys}
    last = bundles[keys[-1]]
    by_key[keys[-1]] = {
        **details(last),
        **by_key[keys[-1]],
        **bundle_details(last),
        "run_refits": len(keys),
        "run_scope": run_scope(keys).replace(
            "and the tables are the whole run's", "are the whole run's; the CV tables this refit's"
        ),
    }
    _bundle_partition_metadata(context, by_key)
    return {}


def partition_metadata(
    context,
    frame: pd.DataFrame,
    summary: Callable[[pd.DataFrame, str | None], dict[str, Any]],
    run_level: Mapping[str, Any] | None = None,
    date_column: str = "date",
    asset_key=None,
    partition_column: str | None = None,
) -> dict[str, Any]:
    """Each partition's own numbers: a run of one partition returns ``summary(frame, key)`` (the
    output's metadata) plus ``run_level``; a range run attaches ``summary`` of each partition's rows
    to that partition (``add_asset_metadata``), the run's own figures (``run_level``, prefixed
    ``run_``, with ``run_scope`` saying so) to its last partition only, and returns nothing for the output,
    whose metadata would otherwise show the whole run's numbers on every partition. ``partition_column``:
    rows go to the partition their column names (else by ``date_column``, to its day or month)."""
    from midfreq_resources.io.lake import split_by_column, split_by_date, split_by_month

    run_level = dict(run_level or {})
    keys = (
        list(context.partition_keys) if context.has_partition_key or context.has_partition_key_range else []
    )
    if len(keys) <= 1:
        return tidy_numbers({**summary(frame, keys[0] if keys else None), **run_level})
    if not len(frame):
        parts = {k: frame for k in keys}
    elif partition_column:
        parts = split_by_column(frame, keys, partition_column)
    else:
        parts = (split_by_month if len(keys[0]) == 7 else split_by_date)(frame, keys, date_column)
    by_key = {key: tidy_numbers(summary(part, key)) for key, part in parts.items()}
    # the IO manager gives the last partition the run's rows (run_rows); a row count of the run is no day's
    by_key[keys[-1]].update({f"run_{k}": v for k, v in run_level.items() if not k.startswith("dagster/")})
    by_key[keys[-1]]["run_scope"] = run_scope(keys)
    add_partitions_metadata(context, asset_key or context.assets_def.key, by_key)
    return {}


def covered_through(instance, key, partition: str):
    """The ``last_day`` a partition's latest materialization says it covers (None: not materialized,
    or no day computed)."""
    import datetime as dt

    from dagster import AssetRecordsFilter

    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    value = records[0].asset_materialization.metadata.get("last_day")
    return dt.date.fromisoformat(str(value.value)) if value is not None and value.value else None
