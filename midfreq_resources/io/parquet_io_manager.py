"""Parquet IO manager: browsable Parquet files per asset, atomic, range-capable.

- Daily partitions: one file per month, ``{root}/{asset/key/path}/{YYYY-MM}.parquet``, holding the
  days written so far (:class:`~midfreq_resources.io.lake.MonthFiles`: a year is 12 files to
  write and read, not 365); writing days merges them into their month's file.
- Other partitions (monthly ``YYYY-MM``, weekly, grid points, grid files): one file per partition,
  ``{root}/{asset/key/path}/{partition_key}.parquet``; unpartitioned: ``{root}/{asset/key/path}.parquet``.

Dagster's ``UPathIOManager`` refuses outputs that cover several partitions (single-run backfills)
and returns a dict when several partitions are loaded; this manager splits range outputs by their
``date`` column (or by the column named in the asset's ``partition_column`` metadata, e.g. a grid
point for dynamic partitions) and always loads one DataFrame. A file it cannot read or write fails
the step with a message leading with the path, the asset and the partition (:func:`lake_failure`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pandas as pd
from dagster import (
    AssetKey,
    ConfigurableIOManager,
    Failure,
    InputContext,
    MetadataValue,
    OutputContext,
    TableSchema,
    TimeWindowPartitionsDefinition,
)
from pydantic import Field
from upath import UPath

from midfreq_resources.dagster_compat import add_partitions_metadata
from midfreq_resources.io.column_schema import SCHEMA_KEY, SchemaError, check_frame, frame_schema
from midfreq_resources.io.lake import (
    LakeReadError,
    MonthFiles,
    check_partition_frame,
    lake_root,
    list_names,
    read_parquet,
    read_partitions,
    split_by_column,
    split_by_date,
    split_by_month,
    write_parquet,
)
from midfreq_resources.settings import DATA_LAKE_ENV, DEFAULT_DATA_LAKE, env_or

#: Asset/output definition metadata naming the column that holds each row's partition key, used
#: to split an output covering several partitions (default: split daily partitions by ``date``).
PARTITION_COLUMN_KEY = "partition_column"
#: Asset/output definition metadata listing the columns every partition file must hold; loading a
#: file without them fails naming the file and the expected columns.
REQUIRED_COLUMNS = "required_columns"


@contextlib.contextmanager
def lake_failure(action: str, path: UPath, asset_key: AssetKey, partition: str | None) -> Iterator[None]:
    """A lake read or write that fails (a damaged file, a read-only lake): a ``Failure`` whose message
    leads with the path, the asset and the partition. Dagster passes a ``Failure`` through as the
    step's own error, where any other exception would be wrapped ("Error occurred while loading
    input ...") with the cause further down."""
    try:
        yield
    except (LakeReadError, OSError) as exc:
        where = f"{path} (asset {asset_key.to_user_string()}, partition {partition or '-'})"
        problem = (
            str(exc).removeprefix(f"{path}: ")
            if isinstance(exc, LakeReadError)
            else f"{type(exc).__name__}: {exc}"
        )
        raise Failure(
            description=f"{where}: {action} failed: {problem}",
            metadata={"path": str(path), "asset": asset_key.to_user_string(), "partition": partition or ""},
        ) from None


def declared_schema(context: OutputContext) -> TableSchema | None:
    """The column schema the asset declares in its definition metadata (None: it declares none)."""
    value = (context.definition_metadata or {}).get(SCHEMA_KEY)
    value = getattr(value, "schema", value)
    return value if isinstance(value, TableSchema) else None


class ParquetIOManager(ConfigurableIOManager):
    """Stores DataFrame assets as Parquet under ``root`` (a local path or any fsspec URL)."""

    root: str = Field(
        default="",
        description="lake root: a folder or an fsspec URL (s3://...); "
        "empty: $MIDFREQ_DATA_LAKE at run time, else data_lake/",
    )

    @property
    def lake(self) -> UPath:
        return lake_root(self.root or env_or(DATA_LAKE_ENV, DEFAULT_DATA_LAKE))

    def _asset_dir(self, context: InputContext | OutputContext) -> UPath:
        return self.lake.joinpath(*context.asset_key.path)

    def partition_path(self, asset_path: list[str], partition_key: str | None) -> UPath:
        """The file of one partition of a non-daily asset (daily assets: :meth:`daily`)."""
        base = self.lake.joinpath(*asset_path)
        if partition_key is None:
            return base.with_name(base.name + ".parquet")
        return base / f"{partition_key}.parquet"

    def daily(self, asset_path: list[str]) -> MonthFiles:
        """The month files of a daily-partitioned asset (read days, list them, the file of a day)."""
        return MonthFiles(self.lake.joinpath(*asset_path))

    def stored_partitions(self, asset_path: list[str], daily: bool = False) -> set[str]:
        """Partition keys stored for the asset, from one listing (on an object store one request,
        where probing each key of a year-long input would be hundreds); ``daily``: the days its
        month files hold."""
        if daily:
            return set(self.daily(asset_path).stored_days())
        suffix = ".parquet"
        return {
            n.removesuffix(suffix) for n in list_names(self.lake.joinpath(*asset_path)) if n.endswith(suffix)
        }

    def read_existing(
        self, asset_path: list[str], keys: list[str]
    ) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
        """The days of ``keys`` a daily asset already holds (for merges): frames by day, and the
        unreadable files (path -> why), whose days a merge must not keep."""
        return self.daily(asset_path).read_each(keys)

    def handle_output(self, context: OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"ParquetIOManager stores DataFrames; asset {context.asset_key.to_user_string()} "
                f"returned {type(obj).__name__}"
            )
        path_parts = list(context.asset_key.path)
        layout = _layout(context.asset_partitions_def if context.has_asset_partitions else None)
        declared = declared_schema(context)
        if declared is not None:  # checked before anything is written
            keys = list(context.asset_partition_keys) if context.has_asset_partitions else []
            try:
                check_frame(
                    obj,
                    declared,
                    f"asset {context.asset_key.to_user_string()}, partition {_span(keys) or '-'}",
                )
            except SchemaError as exc:
                raise Failure(
                    description=f"{exc}; nothing written",
                    metadata={"asset": context.asset_key.to_user_string()},
                ) from None
        if context.has_asset_partitions:
            keys = list(context.asset_partition_keys)
            column = (context.definition_metadata or {}).get(PARTITION_COLUMN_KEY)
            if len(keys) == 1:
                parts = {keys[0]: obj}
            elif column:
                parts = split_by_column(obj, keys, str(column))
            elif layout == MONTHLY:
                parts = split_by_month(obj, keys)
            else:
                parts = split_by_date(obj, keys)
        else:
            parts = {None: obj}
        if layout == DAILY:
            folder = self.lake.joinpath(*path_parts)
            with lake_failure("write", folder, context.asset_key, _span(list(parts))):
                paths = self.daily(path_parts).write(parts)
        else:
            paths = {}
            for key, frame in parts.items():
                paths[key] = self.partition_path(path_parts, key)
                with lake_failure("write", paths[key], context.asset_key, key):
                    write_parquet(paths[key], frame)
        meta = {
            "dagster/row_count": len(obj),
            "dagster/column_schema": frame_schema(obj, declared),
            "path": MetadataValue.path(str(paths[next(iter(parts))])),
        }
        if len(parts) > 1:  # each partition its own numbers; the schema and the run's totals on the last one
            last = list(parts)[-1]
            own = {
                key: {"dagster/row_count": len(frame), "path": MetadataValue.path(str(paths[key]))}
                for key, frame in parts.items()
            }
            own[last].update(
                {
                    "dagster/column_schema": meta["dagster/column_schema"],
                    "run_rows": len(obj),
                    "run_partitions": len(parts),
                }
            )
            add_partitions_metadata(context, context.asset_key, own)
            return
        context.add_output_metadata(meta)

    @staticmethod
    def _required(context: InputContext) -> list[str] | None:
        upstream = context.upstream_output
        meta = (upstream.definition_metadata if upstream is not None else None) or {}
        value = meta.get(REQUIRED_COLUMNS)
        return list(value) if value else None

    def load_input(self, context: InputContext) -> pd.DataFrame:
        path_parts = list(context.asset_key.path)
        required = self._required(context)
        if not context.has_asset_partitions:
            path = self.partition_path(path_parts, None)
            with lake_failure("read", path, context.asset_key, None):
                frame = read_parquet(path)
                check_partition_frame(frame, path, required, None)
            return frame
        keys = list(context.asset_partition_keys)
        layout = _layout(context.asset_partitions_def)
        if layout == DAILY:
            store = self.daily(path_parts)
            with lake_failure("read", store.folder, context.asset_key, _span(keys)):
                stored = store.stored_days()
                present = set(stored)
                frame = store.read(keys, required, stored)
        else:
            present = self.stored_partitions(path_parts)
            with lake_failure("read", self.lake.joinpath(*path_parts), context.asset_key, _span(keys)):
                frame = read_partitions(
                    {key: self.partition_path(path_parts, key) for key in keys if key in present},
                    required,
                    layout,
                )
        have = [key for key in keys if key in present]
        missing = [key for key in keys if key not in present]
        meta = context.definition_metadata or {}
        if missing and have and meta.get(TRAILING_MISSING_OK, False):
            missing = [key for key in missing if key < max(have)]  # after the last stored one: not yet
        if missing:
            allow_missing = bool(meta.get("allow_missing_partitions", False))
            if allow_missing and not have and meta.get("optional", False):
                context.log.info(f"{context.asset_key.to_user_string()}: optional input not materialized yet")
                return pd.DataFrame()
            if not allow_missing or not have:
                raise FileNotFoundError(
                    f"{context.asset_key.to_user_string()}: partitions not materialized: "
                    f"{missing[:5]}{' ...' if len(missing) > 5 else ''} under {self._asset_dir(context)}"
                )
            context.log.warning(
                f"{context.asset_key.to_user_string()}: {len(missing)} upstream partitions missing, e.g. {missing[:3]}"
            )
        return frame


DAILY, MONTHLY = "daily", "monthly"


def _span(keys: list) -> str | None:
    """A partition key, or the first..last of several (for messages)."""
    keys = [k for k in keys if k is not None]
    if not keys:
        return None
    return keys[0] if len(keys) == 1 else f"{keys[0]}..{keys[-1]}"


#: Input metadata: partitions after the last stored one are the future (a month partition read
#: while the month is under way), not missing; holes before it still are.
TRAILING_MISSING_OK = "trailing_missing_ok"


def _layout(pdef) -> str | None:
    """How an asset's partitions map to files: daily (month files), monthly (a file per month), or
    one file per partition key (None)."""
    if isinstance(pdef, TimeWindowPartitionsDefinition):
        if pdef.cron_schedule == "0 0 * * *":
            return DAILY
        if pdef.cron_schedule == "0 0 1 * *":
            return MONTHLY
    return None
