"""Model IO manager: fitted research models as joblib files, one per asset partition, atomic.

``{root}/{asset/key/path}/{partition_key}.joblib`` (``{root}/{asset/key/path}.joblib`` when
unpartitioned). An output covering several partitions (single-run backfill) must be a dict
``{partition_key: object}``; loading a partitioned input always returns such a dict (one entry or
many: callers never special-case a single partition). Missing partitions are skipped when the input's metadata carries
``{"allow_missing_partitions": True}``.
"""

from __future__ import annotations

import io
from typing import Any

import joblib
from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext
from pydantic import Field
from upath import UPath

from midfreq_resources.io.lake import lake_root, write_bytes_atomic
from midfreq_resources.settings import DATA_LAKE_ENV, DEFAULT_DATA_LAKE, env_or

SUFFIX = ".joblib"


def dump_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    joblib.dump(obj, buf, compress=3)
    return buf.getvalue()


def load_path(path: UPath) -> Any:
    with path.open("rb") as fh:
        return joblib.load(fh)


class ModelIOManager(ConfigurableIOManager):
    """Stores any picklable object (fitted models) with joblib under ``root``."""

    root: str = Field(default="", description="lake root: a folder or an fsspec URL (s3://...); "
                      "empty: $MIDFREQ_DATA_LAKE at run time, else data_lake/")

    @property
    def lake(self) -> UPath:
        return lake_root(self.root or env_or(DATA_LAKE_ENV, DEFAULT_DATA_LAKE))

    def partition_path(self, asset_path: list[str], partition_key: str | None) -> UPath:
        base = self.lake.joinpath(*asset_path)
        if partition_key is None:
            return base.with_name(base.name + SUFFIX)
        return base / f"{partition_key}{SUFFIX}"

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if obj is None:
            return
        path = list(context.asset_key.path)
        if context.has_asset_partitions:
            keys = list(context.asset_partition_keys)
            if len(keys) == 1:
                parts = {keys[0]: obj}
            else:
                if not isinstance(obj, dict) or set(obj) - set(keys):
                    raise TypeError(f"{context.asset_key.to_user_string()}: an output covering {len(keys)} "
                                    "partitions must be a dict {partition_key: object} of those partitions")
                parts = dict(obj)
        else:
            parts = {None: obj}
        for key, value in parts.items():
            write_bytes_atomic(self.partition_path(path, key), dump_bytes(value))
        first = next(iter(parts), None)
        meta: dict[str, Any] = {"path": MetadataValue.path(str(self.partition_path(path, first)))}
        if len(parts) > 1:
            meta["partitions_written"] = len(parts)
        context.add_output_metadata(meta)

    def load_input(self, context: InputContext) -> Any:
        path = list(context.asset_key.path)
        if not context.has_asset_partitions:
            return load_path(self.partition_path(path, None))
        keys = list(context.asset_partition_keys)
        found = {k: self.partition_path(path, k) for k in keys}
        missing = [k for k, p in found.items() if not p.exists()]
        if missing and not (context.definition_metadata or {}).get("allow_missing_partitions", False):
            raise FileNotFoundError(f"{context.asset_key.to_user_string()}: partitions not materialized: "
                                    f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
        return {k: load_path(p) for k, p in found.items() if k not in missing}
