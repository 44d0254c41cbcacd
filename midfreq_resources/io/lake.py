"""The data lake: paths and atomic Parquet reads/writes on any fsspec filesystem.

Kept free of Dagster so that benchmarks, reports and tests can read the lake directly.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
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
    return read_arrow(path).to_pandas()


def read_arrow(path: UPath) -> pa.Table:
    """One Parquet file as an Arrow table; a truncated or foreign file raises :class:`LakeReadError`."""
    try:
        with path.open("rb") as fh:
            return pq.read_table(fh)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        detail = str(exc).replace("source '<Buffer>': ", "")
        raise LakeReadError(
            f"{path}: not a readable Parquet file ({_size(path)} bytes; {detail}); "
            "re-materialize this partition"
        ) from None


def read_partitions(
    paths: dict[str, UPath],
    required: list[str] | None = None,
    layout: str | None = None,
    date_column: str = DATE_COLUMN,
) -> pd.DataFrame:
    """Many partition files as one frame: read as Arrow tables, concatenated and converted once,
    each file checked (required columns; with ``layout="monthly"``, rows of its own month only)."""
    tables = []
    for key, path in paths.items():
        table = read_arrow(path)
        if required:
            missing = [c for c in required if c not in table.column_names]
            if missing:
                raise LakeReadError(
                    f"{path}: missing column(s) {missing}; expected {list(required)}, found "
                    f"{table.column_names}; re-materialize this partition"
                )
        if layout == "monthly" and table.num_rows and date_column in table.column_names:
            months = pd.to_datetime(table.column(date_column).to_pandas(), errors="coerce").dt.strftime(
                "%Y-%m"
            )
            wrong = months[months != key[:7]]
            if len(wrong):
                raise LakeReadError(
                    f"{path}: {len(wrong)} row(s) of {sorted(set(wrong))[:3]}, not of the month {key} "
                    "(the partition it is stored as); re-materialize this partition"
                )
        tables.append(table)
    return arrow_frame(tables)


def _size(path: UPath) -> str:
    try:
        return f"{path.stat().st_size:,}"
    except OSError:
        return "?"


def check_partition_frame(
    frame: pd.DataFrame,
    path: UPath,
    required: list[str] | None,
    partition_key: str | None,
    date_column: str = DATE_COLUMN,
) -> None:
    """A partition file holds what its asset promises: the ``required`` columns, and rows of its
    own day only (a file copied from another day would otherwise surface as duplicate rows)."""
    if required:
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise LakeReadError(
                f"{path}: missing column(s) {missing}; expected {list(required)}, found "
                f"{list(frame.columns)}; re-materialize this partition"
            )
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
        raise LakeReadError(
            f"{path}: {len(wrong)} row(s) dated {shown}, not {partition_key} (the partition it "
            "is stored as); re-materialize this partition"
        )


def concat_frames(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if f is not None]
    if not frames:
        return pd.DataFrame()
    non_empty = [f for f in frames if len(f)]
    if not non_empty:
        return frames[0].iloc[0:0]
    return pd.concat(non_empty, ignore_index=isinstance(non_empty[0].index, pd.RangeIndex))


def split_by_date(
    df: pd.DataFrame, keys: list[str], date_column: str = DATE_COLUMN
) -> dict[str, pd.DataFrame]:
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
    empty = df.iloc[0:0].reset_index(drop=True)
    if df.empty:
        return dict.fromkeys(keys, empty)
    groups = {k: g.reset_index(drop=True) for k, g in df.groupby(day.to_numpy(), sort=False)}
    return {k: groups.get(k, empty) for k in keys}


def split_by_month(
    df: pd.DataFrame, keys: list[str], date_column: str = DATE_COLUMN
) -> dict[str, pd.DataFrame]:
    """Split a multi-month frame into one frame per monthly partition key (``YYYY-MM`` or
    ``YYYY-MM-01``: the key's first 7 characters name the month); every key gets a frame (possibly empty)."""
    if date_column not in df.columns:
        raise ValueError(
            f"an output covering {len(keys)} monthly partitions needs a {date_column!r} column; "
            f"columns are {list(df.columns)}"
        )
    month = pd.to_datetime(df[date_column]).dt.strftime("%Y-%m")
    unexpected = sorted(set(month.unique()) - {k[:7] for k in keys})
    if unexpected:
        raise ValueError(
            f"output has rows for months outside its partitions {keys[0]}..{keys[-1]}: {unexpected[:5]}"
        )
    groups = {k: g for k, g in df.groupby(month.to_numpy(), sort=False)}
    return {k: groups.get(k[:7], df.iloc[0:0]).reset_index(drop=True) for k in keys}


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


# --------------------------------------------------------------------------------------------
# Daily partitions, one file per month
# --------------------------------------------------------------------------------------------

#: Parquet key-value metadata of a month file: the days it holds (a day may hold no rows).
DAYS_KEY = b"midfreq.days"


def month_of(day: str) -> str:
    return day[:7]


class MonthFiles:
    """A daily-partitioned asset stored as one Parquet file per month: ``<folder>/<YYYY-MM>.parquet``.

    A year of days is 12 files to write, fsync and read instead of 365. Each file lists the days it
    holds in its metadata (a day materialized with no rows is still a stored partition); writing
    days merges them into their month's file (the other days' rows kept) and replaces it atomically,
    so every day reads as either its old rows or its new ones. Writers of one asset are serialized
    by the asset's Dagster pool (``midfreq_assets.concurrency``). Day files of the earlier layout
    (``<folder>/<YYYY-MM-DD>.parquet``) are read as they are, and folded into their month's file
    (then removed) the next time that month is written: nothing stored is lost."""

    def __init__(self, folder: UPath, date_column: str = DATE_COLUMN) -> None:
        self.folder = folder
        self.date_column = date_column

    def path(self, month: str) -> UPath:
        return self.folder / f"{month}.parquet"

    def path_of(self, day: str) -> UPath:
        """The file holding ``day`` (its month's file)."""
        return self.path(month_of(day))

    def _legacy(self, day: str) -> UPath:
        return self.folder / f"{day}.parquet"

    def _listing(self) -> tuple[list[str], list[str]]:
        """Month files and legacy day files present (one listing)."""
        names = [n.removesuffix(".parquet") for n in list_names(self.folder) if n.endswith(".parquet")]
        months = sorted(n for n in names if len(n) == 7)
        days = sorted(n for n in names if len(n) == 10)
        return months, days

    def _days_of(self, path: UPath) -> list[str]:
        try:
            with path.open("rb") as fh:
                meta = pq.read_metadata(fh).metadata or {}
        except FileNotFoundError:
            return []
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise LakeReadError(
                f"{path}: not a readable Parquet file ({_size(path)} bytes; {exc}); re-materialize its days"
            ) from None
        raw = meta.get(DAYS_KEY)
        if raw is None:
            raise LakeReadError(
                f"{path}: a month file without its list of days ({DAYS_KEY.decode()} metadata): not "
                "written by midfreq; re-materialize its days"
            )
        return self._own_days(path, raw)

    def _own_days(self, path: UPath, raw: bytes) -> list[str]:
        """The days a month file lists, which must be of its own month (a file copied over another)."""
        days = [d for d in raw.decode().split(",") if d]
        month = path.name.removesuffix(".parquet")
        foreign = [d for d in days if month_of(d) != month]
        if foreign:
            raise LakeReadError(
                f"{path}: holds days of another month ({foreign[:3]}), not of {month}; "
                "re-materialize its days"
            )
        return days

    def stored_days(self) -> dict[str, UPath]:
        """Every stored day -> the file holding it."""
        months, legacy = self._listing()
        out = {d: self._legacy(d) for d in legacy}
        for month in months:
            path = self.path(month)
            out.update({d: path for d in self._days_of(path)})
        return out

    def _read_month(self, path: UPath) -> tuple[pa.Table, list[str]]:
        table = read_arrow(path)
        raw = (table.schema.metadata or {}).get(DAYS_KEY)
        if raw is None:
            raise LakeReadError(
                f"{path}: a month file without its list of days ({DAYS_KEY.decode()} metadata): not "
                "written by midfreq; re-materialize its days"
            )
        days = self._own_days(path, raw)
        return table.replace_schema_metadata(
            {k: v for k, v in (table.schema.metadata or {}).items() if k != DAYS_KEY}
        ), days

    def _day_strings(self, table: pa.Table, path: UPath) -> np.ndarray:
        if self.date_column not in table.column_names:
            if table.num_rows:
                raise LakeReadError(f"{path}: no {self.date_column!r} column; re-materialize its days")
            return np.array([], dtype=object)
        values = pd.to_datetime(table.column(self.date_column).to_pandas(), errors="coerce")
        return values.dt.strftime("%Y-%m-%d").to_numpy(dtype=object)

    def read(
        self, days: list[str], required: list[str] | None = None, stored: dict[str, UPath] | None = None
    ) -> pd.DataFrame:
        """The rows of ``days`` (those stored; see :meth:`stored_days`), as one frame; each file is
        checked (required columns, rows only of the days it lists)."""
        stored = self.stored_days() if stored is None else stored
        wanted = [d for d in days if d in stored]
        if not wanted:
            return pd.DataFrame()
        by_file: dict[str, list[str]] = {}
        for d in wanted:
            by_file.setdefault(str(stored[d]), []).append(d)
        tables = []
        for name, file_days in by_file.items():
            path = stored[file_days[0]]
            if len(name.rsplit("/", 1)[-1]) == len("YYYY-MM-DD.parquet"):  # a legacy day file
                table, listed = read_arrow(path), file_days
            else:
                table, listed = self._read_month(path)
            self._check(table, path, required, listed)
            if table.num_rows and len(file_days) < len(listed):
                keep = np.isin(self._day_strings(table, path), file_days)
                table = table.filter(pa.array(keep))
            tables.append(table)
        return arrow_frame(tables)

    def _check(self, table: pa.Table, path: UPath, required: list[str] | None, listed: list[str]) -> None:
        if required:
            missing = [c for c in required if c not in table.column_names]
            if missing:
                raise LakeReadError(
                    f"{path}: missing column(s) {missing}; expected {list(required)}, found "
                    f"{table.column_names}; re-materialize its days"
                )
        if table.num_rows:
            days = self._day_strings(table, path)
            foreign = sorted(set(days) - set(listed))
            if foreign:
                raise LakeReadError(
                    f"{path}: {int(np.isin(days, foreign).sum())} row(s) dated {foreign[:3]}, not "
                    f"among the days it holds ({listed[0]}..{listed[-1]}); re-materialize its days"
                )

    def read_each(self, days: list[str]) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
        """The stored ``days`` one frame each (for merges), and the unreadable files (path -> why),
        whose days a merge must not keep."""
        frames: dict[str, pd.DataFrame] = {}
        unreadable: dict[str, str] = {}
        try:
            stored = self.stored_days()
        except LakeReadError as exc:  # one bad month file: read the others month by month
            stored = {}
            months, legacy = self._listing()
            stored.update({d: self._legacy(d) for d in legacy})
            for month in months:
                try:
                    stored.update({d: self.path(month) for d in self._days_of(self.path(month))})
                except LakeReadError as bad:
                    unreadable[str(self.path(month))] = str(bad)
            if not unreadable:
                raise exc
        by_file: dict[str, list[str]] = {}
        for d in days:
            if d in stored:
                by_file.setdefault(str(stored[d]), []).append(d)
        for file_days in by_file.values():
            path = stored[file_days[0]]
            try:
                frame = self.read(file_days, stored=stored)
            except LakeReadError as exc:
                unreadable[str(path)] = str(exc)
                continue
            if frame.empty:
                frames.update({d: frame for d in file_days})
                continue
            day = pd.to_datetime(frame[self.date_column]).dt.strftime("%Y-%m-%d")
            groups = dict(tuple(frame.groupby(day.to_numpy(), sort=False)))
            for d in file_days:
                frames[d] = groups[d].reset_index(drop=True) if d in groups else frame.iloc[0:0]
        return frames, unreadable

    def write(self, frames: dict[str, pd.DataFrame]) -> dict[str, UPath]:
        """Store each day's rows (replacing what the day held), month by month; returns day -> file."""
        months: dict[str, dict[str, pd.DataFrame]] = {}
        for day, frame in frames.items():
            months.setdefault(month_of(day), {})[day] = frame
        _, legacy = self._listing()
        out: dict[str, UPath] = {}
        for month, new in sorted(months.items()):
            path = self.path(month)
            parts: list[pd.DataFrame] = []
            days = set(new)
            old_legacy = [d for d in legacy if month_of(d) == month]
            if path.exists():
                table, listed = self._read_month(path)
                kept = [d for d in listed if d not in new]
                if kept:
                    keep = ~np.isin(self._day_strings(table, path), list(new)) if table.num_rows else []
                    parts.append(
                        table.filter(pa.array(keep, type=pa.bool_())).to_pandas()
                        if table.num_rows
                        else table.to_pandas()
                    )
                    days.update(kept)
            for d in old_legacy:
                if d not in days:
                    parts.append(read_parquet(self._legacy(d)))
                    days.add(d)
            parts += [f.reset_index(drop=True) for f in new.values()]
            frame = concat_frames(parts)
            if self.date_column in frame.columns and len(frame):
                frame = frame.sort_values(self.date_column, kind="stable").reset_index(drop=True)
            table = pa.Table.from_pandas(frame, preserve_index=False)
            metadata = {**(table.schema.metadata or {}), DAYS_KEY: ",".join(sorted(days)).encode()}
            buf = io.BytesIO()
            pq.write_table(table.replace_schema_metadata(metadata), buf, compression="zstd")
            write_bytes_atomic(path, buf.getvalue())
            for d in old_legacy:
                self._legacy(d).unlink(missing_ok=True) if is_local(self._legacy(d)) else self._legacy(
                    d
                ).fs.rm(self._legacy(d).path)
            out.update({d: path for d in new})
        return out

    def remove(self, days: Iterable[str]) -> None:
        """Forget ``days`` (their rows and their listing): they read as never materialized."""
        drop = set(days)
        for month in sorted({month_of(d) for d in drop}):
            path = self.path(month)
            for d in [d for d in drop if month_of(d) == month]:
                legacy = self._legacy(d)
                if legacy.exists():
                    legacy.unlink() if is_local(legacy) else legacy.fs.rm(legacy.path)
            if not path.exists():
                continue
            table, listed = self._read_month(path)
            keep_days = [d for d in listed if d not in drop]
            if table.num_rows:
                table = table.filter(
                    pa.array(~np.isin(self._day_strings(table, path), list(drop)), type=pa.bool_())
                )
            metadata = {**(table.schema.metadata or {}), DAYS_KEY: ",".join(keep_days).encode()}
            buf = io.BytesIO()
            pq.write_table(table.replace_schema_metadata(metadata), buf, compression="zstd")
            write_bytes_atomic(path, buf.getvalue())


def arrow_frame(tables: list[pa.Table]) -> pd.DataFrame:
    """Arrow tables as one frame, converted once (pandas when Arrow cannot reconcile the schemas)."""
    if not tables:
        return pd.DataFrame()
    try:
        return pa.concat_tables(tables, promote_options="permissive").to_pandas()
    except (pa.ArrowException, ValueError):
        return concat_frames([t.to_pandas() for t in tables])


def read_daily(
    root: str | os.PathLike[str] | UPath, *asset_path: str, days: Iterable[str] | None = None
) -> pd.DataFrame:
    """A daily asset's rows from the lake (a notebook, a report, a test): ``days`` (``YYYY-MM-DD``),
    or every stored day; e.g. ``read_daily("data_lake", "usd_lending", "rebalance_weights", days=["2025-06-05"])``."""
    store = MonthFiles(lake_root(root).joinpath(*asset_path))
    stored = store.stored_days()
    return store.read(sorted(stored) if days is None else [str(d) for d in days], stored=stored)


def stored_days(root: str | os.PathLike[str] | UPath, *asset_path: str) -> list[str]:
    """The days a daily asset holds in the lake, sorted."""
    return sorted(MonthFiles(lake_root(root).joinpath(*asset_path)).stored_days())
