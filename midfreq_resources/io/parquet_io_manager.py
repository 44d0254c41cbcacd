"""Parquet IO manager: one browsable file per asset partition, atomic, range-capable.

``{root}/{asset/key/path}/{partition_key}.parquet``. Dagster's ``UPathIOManager`` refuses
outputs that cover several partitions (single-run backfills) and returns a dict when several
partitions are loaded; this manager splits range outputs by their ``date`` column (or by the
column named in the asset's ``partition_column`` metadata, e.g. a grid point for dynamic
partitions) and always loads one DataFrame. A file it cannot read or write fails the step with a
message leading with the path, the asset and the partition (:func:`lake_failure`).
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
    TableColumn,
    TableSchema,
    TimeWindowPartitionsDefinition,
)
from pydantic import Field
from upath import UPath

from midfreq_resources.io.lake import (
    LakeReadError,
    check_partition_frame,
    concat_frames,
    lake_root,
    list_names,
    read_parquet,
    split_by_column,
    split_by_date,
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
        problem = (str(exc).removeprefix(f"{path}: ") if isinstance(exc, LakeReadError)
                   else f"{type(exc).__name__}: {exc}")
        raise Failure(description=f"{where}: {action} failed: {problem}",
                      metadata={"path": str(path), "asset": asset_key.to_user_string(),
                                "partition": partition or ""}) from None


def table_schema(df: pd.DataFrame) -> TableSchema:
    return TableSchema(columns=[TableColumn(name=str(c), type=str(t)) for c, t in df.dtypes.items()])


class ParquetIOManager(ConfigurableIOManager):
    """Stores DataFrame assets as Parquet under ``root`` (a local path or any fsspec URL)."""

    root: str = Field(default="", description="lake root: a folder or an fsspec URL (s3://...); "
                      "empty: $MIDFREQ_DATA_LAKE at run time, else data_lake/")

    @property
    def lake(self) -> UPath:
        return lake_root(self.root or env_or(DATA_LAKE_ENV, DEFAULT_DATA_LAKE))

    def _asset_dir(self, context: InputContext | OutputContext) -> UPath:
        return self.lake.joinpath(*context.asset_key.path)

    def partition_path(self, asset_path: list[str], partition_key: str | None) -> UPath:
        base = self.lake.joinpath(*asset_path)
        if partition_key is None:
            return base.with_name(base.name + ".parquet")
        return base / f"{partition_key}.parquet"

    def stored_partitions(self, asset_path: list[str]) -> set[str]:
        """Partition keys with a file under the asset's folder, from one listing: on an object store
        one request, where probing each key of a year-long input would be hundreds."""
        suffix = ".parquet"
        return {n.removesuffix(suffix) for n in list_names(self.lake.joinpath(*asset_path)) if n.endswith(suffix)}
    def read_existing(self, asset_path: list[str], keys: list[str]) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
        """The partitions of ``keys`` already in the lake (for merges): frames by key, and the
        unreadable ones (path -> why), which a merge must not keep."""
        frames: dict[str, pd.DataFrame] = {}
        unreadable: dict[str, str] = {}
        for key in keys:
            path = self.partition_path(asset_path, key)
            if not path.exists():
                continue
            try:
                frame = read_parquet(path)
                check_partition_frame(frame, path, None, key)
            except LakeReadError as exc:
                unreadable[str(path)] = str(exc)
                continue
            frames[key] = frame
        return frames, unreadable

    def handle_output(self, context: OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"ParquetIOManager stores DataFrames; asset {context.asset_key.to_user_string()} "
                f"returned {type(obj).__name__}"
            )
        path_parts = list(context.asset_key.path)
        if context.has_asset_partitions:
            keys = list(context.asset_partition_keys)
            column = (context.definition_metadata or {}).get(PARTITION_COLUMN_KEY)
            if len(keys) == 1:
                parts = {keys[0]: obj}
            elif column:
                parts = split_by_column(obj, keys, str(column))
            else:
                parts = split_by_date(obj, keys)
        else:
            parts = {None: obj}
        for key, frame in parts.items():
            with lake_failure("write", self.partition_path(path_parts, key), context.asset_key, key):
                write_parquet(self.partition_path(path_parts, key), frame)
        meta = {
            "dagster/row_count": len(obj),
            "dagster/column_schema": table_schema(obj),
            "path": MetadataValue.path(str(self.partition_path(path_parts, next(iter(parts))))),
        }
        if len(parts) > 1:
            meta["partitions_written"] = len(parts)
            meta["rows_in_run"] = meta.pop("dagster/row_count")
            for key, frame in parts.items():
                context.step_context.add_asset_metadata(
                    {"dagster/row_count": len(frame), "path": MetadataValue.path(str(self.partition_path(path_parts, key)))},
                    asset_key=context.asset_key, partition_key=key,
                )
        context.add_output_metadata(meta)

    @staticmethod
    def _required(context: InputContext) -> list[str] | None:
        upstream = context.upstream_output
        meta = (upstream.definition_metadata if upstream is not None else None) or {}
        value = meta.get(REQUIRED_COLUMNS)
        return list(value) if value else None

    @staticmethod
    def _daily(context: InputContext) -> bool:
        """Daily partitions: each file holds rows of its own day only (checked on load)."""
        pdef = context.asset_partitions_def
        return isinstance(pdef, TimeWindowPartitionsDefinition) and pdef.cron_schedule == "0 0 * * *"

    def load_input(self, context: InputContext) -> pd.DataFrame:
        path_parts = list(context.asset_key.path)
        required = self._required(context)
        if not context.has_asset_partitions:
            path = self.partition_path(path_parts, None)
            with lake_failure("read", path, context.asset_key, None):
                frame = read_parquet(path)
                check_partition_frame(frame, path, required, None)
            return frame
        present = self.stored_partitions(path_parts)
        keys = list(context.asset_partition_keys)
        daily = self._daily(context)
        frames = []
        for key in keys:
            if key in present:
                path = self.partition_path(path_parts, key)
                with lake_failure("read", path, context.asset_key, key):
                    frame = read_parquet(path)
                    check_partition_frame(frame, path, required, key if daily else None)
                frames.append(frame)
        missing = [key for key in keys if key not in present]
        if missing:
            meta = context.definition_metadata or {}
            allow_missing = bool(meta.get("allow_missing_partitions", False))
            if allow_missing and not frames and meta.get("optional", False):
                context.log.info(f"{context.asset_key.to_user_string()}: optional input not materialized yet")
                return pd.DataFrame()
            if not allow_missing or not frames:
                raise FileNotFoundError(
                    f"{context.asset_key.to_user_string()}: partitions not materialized: "
                    f"{missing[:5]}{' ...' if len(missing) > 5 else ''} under {self._asset_dir(context)}"
                )
            context.log.warning(
                f"{context.asset_key.to_user_string()}: {len(missing)} upstream partitions missing, e.g. {missing[:3]}"
            )
        return concat_frames(frames)
