"""The data lake: paths and atomic Parquet reads/writes on any fsspec filesystem.

Kept free of Dagster so that benchmarks, reports and tests can read the lake directly.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

DATE_COLUMN = "date"


def lake_root(root: str | os.PathLike[str]) -> UPath:
    return UPath(str(root))


#: Filesystems where one object PUT is atomic (readers see the old object or the new one): written
#: directly. Other remote filesystems (sftp, hdfs, ...) get a temporary file and a rename.
OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"})


def is_local(path: UPath) -> bool:
    return getattr(path, "protocol", "") in ("", "file", "local")


def is_object_store(path: UPath) -> bool:
    return getattr(path, "protocol", "") in OBJECT_STORE_PROTOCOLS


def list_names(folder: UPath) -> list[str]:
    """Names of the entries of ``folder`` as the store holds them now ([] when it does not exist).

    No listing is served from or left in fsspec's per-process listing cache (s3fs keeps one): other
    processes, e.g. other Celery workers, write to the same lake."""
    fs = folder.fs
    fs.invalidate_cache(folder.path)
    try:
        return [str(n).rstrip("/").rsplit("/", 1)[-1] for n in fs.ls(folder.path, detail=False)]
    except FileNotFoundError:
        return []
    finally:
        fs.invalidate_cache(folder.path)


def write_bytes_atomic(path: UPath, data: bytes) -> None:
    """Write ``data`` so that readers see either the old file or the new one, never half.

    Locally: a temporary file in the same folder, fsync, then ``os.replace``; the file is created
    with mode 0666 so the process umask decides its permissions, like any other file the
    operator's tools write (``mkstemp`` would make every lake file owner-only). On object stores
    (s3://, gs://, memory://) a single PUT is already atomic, and a temporary object plus a "rename"
    (a copy and a delete there) would cost several requests instead of one.
    """
    if is_local(path):
        target = Path(path.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = str(target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp"))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    if is_object_store(path):
        path.write_bytes(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    tmp.fs.mv(tmp.path, path.path)


def frame_to_parquet_bytes(df: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(df, preserve_index=not isinstance(df.index, pd.RangeIndex))
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_parquet(path: UPath, df: pd.DataFrame) -> None:
    write_bytes_atomic(path, frame_to_parquet_bytes(df))


class LakeReadError(OSError):
    """A lake file that cannot be used: unreadable, truncated, or not the shape its asset promises.
    The message names the file and what is wrong."""


def read_parquet(path: UPath) -> pd.DataFrame:
    """One Parquet file; a truncated or foreign file raises :class:`LakeReadError` naming it."""
    try:
        with path.open("rb") as fh:
            return pq.read_table(fh).to_pandas()
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        detail = str(exc).replace("source '<Buffer>': ", "")
        raise LakeReadError(f"{path}: not a readable Parquet file ({_size(path)} bytes; {detail}); "
                            "re-materialize this partition") from None


def _size(path: UPath) -> str:
    try:
        return f"{path.stat().st_size:,}"
    except OSError:
        return "?"


def check_partition_frame(frame: pd.DataFrame, path: UPath, required: list[str] | None,
                          partition_key: str | None, date_column: str = DATE_COLUMN) -> None:
    """A partition file holds what its asset promises: the ``required`` columns, and rows of its
    own day only (a file copied from another day would otherwise surface as duplicate rows)."""
    if required:
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise LakeReadError(f"{path}: missing column(s) {missing}; expected {list(required)}, found "
                                f"{list(frame.columns)}; re-materialize this partition")
    if partition_key is None or date_column not in frame.columns or frame.empty:
        return
    try:
        expected = pd.Timestamp(partition_key)
    except ValueError:
        return
    days = pd.to_datetime(frame[date_column], errors="coerce").dt.normalize()
    wrong = days[days != expected]
    if len(wrong):
        shown = sorted({str(d)[:10] for d in wrong.head(50)})[:3]
        raise LakeReadError(f"{path}: {len(wrong)} row(s) dated {shown}, not {partition_key} (the partition it "
                            "is stored as); re-materialize this partition")


def concat_frames(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if f is not None]
    if not frames:
        return pd.DataFrame()
    non_empty = [f for f in frames if len(f)]
    if not non_empty:
        return frames[0].iloc[0:0]
    return pd.concat(non_empty, ignore_index=isinstance(non_empty[0].index, pd.RangeIndex))


def split_by_date(df: pd.DataFrame, keys: list[str], date_column: str = DATE_COLUMN) -> dict[str, pd.DataFrame]:
    """Split a multi-day frame into one frame per daily partition key (``YYYY-MM-DD``).

    Every key gets a frame (possibly empty) so that a re-run of a day replaces its old data.
    """
    if date_column not in df.columns:
        raise ValueError(
            f"an output covering {len(keys)} partitions needs a {date_column!r} column to be split "
            f"into partitions; columns are {list(df.columns)}"
        )
    day = pd.to_datetime(df[date_column]).dt.strftime("%Y-%m-%d")
    unexpected = sorted(set(day.unique()) - set(keys))
    if unexpected:
        raise ValueError(
            f"output has rows for dates outside its partitions {keys[0]}..{keys[-1]}: {unexpected[:5]}"
        )
    groups = {k: g for k, g in df.groupby(day.to_numpy(), sort=False)}
    return {k: groups.get(k, df.iloc[0:0]).reset_index(drop=True) for k in keys}


def split_by_column(df: pd.DataFrame, keys: list[str], column: str) -> dict[str, pd.DataFrame]:
    """Split a frame covering several partitions by a column holding the partition key (e.g. the
    grid point of a multi-partition backtest run). Every key gets a frame (possibly empty)."""
    if column not in df.columns:
        raise ValueError(
            f"an output covering {len(keys)} partitions needs a {column!r} column to be split "
            f"into partitions; columns are {list(df.columns)}"
        )
    values = df[column].astype(str)
    unexpected = sorted(set(values.unique()) - set(keys))
    if unexpected:
        raise ValueError(f"output has rows for {column} values outside its partitions: {unexpected[:5]}")
    groups = {k: g for k, g in df.groupby(values.to_numpy(), sort=False)}
    return {k: groups.get(k, df.iloc[0:0]).reset_index(drop=True) for k in keys}
