"""Binance archive klines: which files to fetch, parsing them into the ``binance_klines`` contract,
merging monthly and daily files, and counting gaps.

Plain pandas/pyarrow (no dagster) so the asset, the tests and the benchmark run the same code.
The archive's CSVs have 12 columns and no header on spot, a header row on USD-M futures since
2022; timestamps are epoch milliseconds, except spot from 2025-01-01 on (microseconds), so the
unit is decided per file by magnitude.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import re
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from midfreq_assets.domain.ingest.archive_files import Freq

KLINE_CSV_COLUMNS: tuple[str, ...] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
FLOAT_COLUMNS: tuple[str, ...] = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "taker_buy_volume",
    "taker_buy_quote_volume",
)
INT_COLUMNS: tuple[str, ...] = ("open_time", "close_time", "count")
KLINES_COLUMNS: tuple[str, ...] = (
    "date",
    "symbol",
    "interval",
    "open_time",
    "close_time",
    *FLOAT_COLUMNS,
    "count",
)
BAR_KEY: tuple[str, ...] = ("symbol", "interval", "open_time")

INTERVAL_SECONDS: dict[str, int] = {
    "1s": 1,
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "6h": 21600,
    "8h": 28800,
    "12h": 43200,
    "1d": 86400,
    "3d": 259200,
    "1w": 604800,
    "1mo": 2592000,
}
DAY_SECONDS = 86400
_DAY_NS = DAY_SECONDS * 1_000_000_000
# Epoch values below this are milliseconds (this many ms is the year 5138); at or above it,
# microseconds (this many us is 1973, before any Binance bar).
_MICROSECOND_THRESHOLD = 10**14
_NS_PER_UNIT = {"ms": 1_000_000, "us": 1_000}
_NON_SPACE = re.compile(rb"\S")
#: Zip members are checked before inflating: a CSV larger than this, or compressed more than
#: MAX_COMPRESSION_RATIO : 1 (archive klines compress ~2-5 : 1; a zip bomb ~1000 : 1), is refused.
#: A month of 1s spot bars is ~300 MB of CSV.
MAX_CSV_BYTES = 512 * 2**20
MAX_COMPRESSION_RATIO = 50.0


class KlinesParseError(ValueError):
    """An archive file we cannot turn into bars; the message names the file (and line)."""


# ----------------------------------------------------------------------------- planning
def _month_end(day: dt.date) -> dt.date:
    nxt = dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return nxt - dt.timedelta(days=1)


def plan_archive_files(start: dt.date, end: dt.date, *, monthly: bool = True) -> list[tuple[Freq, str]]:
    """Files covering the days ``start..end`` (inclusive): one monthly file per whole calendar
    month inside the range (one request instead of ~30), daily files for the ragged edges.

    Periods are ``YYYY-MM`` (monthly) and ``YYYY-MM-DD`` (daily), in chronological order.
    """
    if end < start:
        raise ValueError(f"plan_archive_files: end {end} is before start {start}")
    plan: list[tuple[Freq, str]] = []
    first = start.replace(day=1)
    while first <= end:
        last = _month_end(first)
        if monthly and first >= start and last <= end:
            plan.append(("monthly", first.strftime("%Y-%m")))
        else:
            day = max(first, start)
            while day <= min(last, end):
                plan.append(("daily", day.isoformat()))
                day += dt.timedelta(days=1)
        first = last + dt.timedelta(days=1)
    return plan


def period_days(freq: Freq, period: str) -> list[dt.date]:
    """The UTC days an archive file covers."""
    if freq == "daily":
        return [dt.date.fromisoformat(period)]
    first = dt.date.fromisoformat(period + "-01")
    last = _month_end(first)
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


# ----------------------------------------------------------------------------- parsing
def read_single_csv(
    zip_bytes: bytes, source: str, max_bytes: int = MAX_CSV_BYTES, max_ratio: float = MAX_COMPRESSION_RATIO
) -> tuple[str, bytes]:
    """The one CSV inside an archive zip as (member name, bytes); anything else is an error.

    The member's declared size and compression ratio are checked before a byte is inflated, and
    the read stops at the declared size (a member lying about it fails its CRC), so memory stays
    bounded by ``max_bytes`` whatever the zip says."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(zip_bytes))
    except zipfile.BadZipFile as exc:
        raise KlinesParseError(f"{source}: not a valid zip archive ({exc}, {len(zip_bytes)} bytes)") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir() and m.filename.lower().endswith(".csv")]
        if len(members) != 1:
            names = ", ".join(m.filename for m in members) or "none"
            raise KlinesParseError(
                f"{source}: expected exactly one CSV in the zip, found {len(members)} ({names})"
            )
        member = members[0]
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > max_bytes or ratio > max_ratio:
            raise KlinesParseError(
                f"{source}: member {member.filename} would inflate to {member.file_size:,} bytes from "
                f"{member.compress_size:,} ({ratio:,.0f}:1); limits are {max_bytes:,} bytes and {max_ratio:g}:1 "
                "(a zip bomb or a foreign file); refused without inflating"
            )
        try:
            with archive.open(member) as fh:
                data = fh.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise KlinesParseError(
                    f"{source}: member {member.filename} inflates beyond {max_bytes:,} bytes"
                )
            return member.filename, data
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
            raise KlinesParseError(f"{source}: corrupt zip member {member.filename}: {exc}") from None


def _has_header(data: bytes) -> bool:
    first = _NON_SPACE.search(data)
    return first is not None and not (first.group().isdigit() or first.group() in b"-+")


def _has_rows(data: bytes) -> bool:
    """Anything after the (optional) header line; scans without copying a month of bytes."""
    start = 0
    if _has_header(data):
        newline = data.find(b"\n")
        start = len(data) if newline < 0 else newline + 1
    return _NON_SPACE.search(data, start) is not None


def _diagnose(data: bytes, source: str, header: bool, names: Sequence[str]) -> str | None:
    """Find the first bad line (slow path, only after the fast parser refused the file)."""
    ints = {i for i, n in enumerate(names) if n in INT_COLUMNS}
    floats = {i for i, n in enumerate(names) if n in FLOAT_COLUMNS or n in ("funding_rate",)}
    for number, raw in enumerate(data.splitlines(), start=1):
        if header and number == 1:
            continue
        line = raw.decode("utf-8", "replace").strip()
        if not line:
            continue
        fields = line.split(",")
        if len(fields) != len(names):
            return (
                f"{source}, line {number}: expected {len(names)} columns, got {len(fields)}: {line[:120]!r}"
            )
        for i, value in enumerate(fields):
            kind = "an integer" if i in ints else "a number"
            try:
                if i in ints:
                    int(value)
                elif i in floats and not math.isfinite(float(value)):
                    raise ValueError(value)
            except ValueError:
                return f"{source}, line {number}: column {names[i]!r} is not {kind}: {value!r}"
    return None


def _read_csv(data: bytes, source: str, names: Sequence[str], types: Mapping[str, pa.DataType]) -> pa.Table:
    header = _has_header(data)
    try:
        return pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=list(names), skip_rows=1 if header else 0),
            convert_options=pacsv.ConvertOptions(
                column_types=dict(types),
                include_columns=list(types),
                null_values=[],
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        detail = _diagnose(data, source, header, names)
        raise KlinesParseError(detail or f"{source}: unreadable CSV: {exc}") from None


def _epoch_to_ns(values: np.ndarray, column: str, source: str) -> tuple[np.ndarray, str]:
    lo, hi = int(values.min()), int(values.max())
    if hi < _MICROSECOND_THRESHOLD:
        unit = "ms"
    elif lo >= _MICROSECOND_THRESHOLD and hi < _MICROSECOND_THRESHOLD * 1000:
        unit = "us"
    else:
        raise KlinesParseError(
            f"{source}: column {column!r} mixes timestamp units or is out of range (min {lo}, max {hi})"
        )
    return values * _NS_PER_UNIT[unit], unit


def _utc(ns: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC")


def empty_klines_frame() -> pd.DataFrame:
    """Zero bars with the contract's dtypes (so concatenation keeps them)."""
    columns: dict[str, object] = {
        "date": pd.Series([], dtype="datetime64[ns]"),
        "symbol": pd.Series([], dtype="str"),
        "interval": pd.Series([], dtype="str"),
        "open_time": pd.Series([], dtype="datetime64[ns, UTC]"),
        "close_time": pd.Series([], dtype="datetime64[ns, UTC]"),
    }
    columns.update({c: pd.Series([], dtype="float64") for c in FLOAT_COLUMNS})
    columns["count"] = pd.Series([], dtype="int64")
    return pd.DataFrame(columns)


def parse_klines_csv(data: bytes, *, source: str, symbol: str, interval: str) -> pd.DataFrame:
    """One archive CSV (kline or premium-index-kline layout) -> typed ``binance_klines`` rows."""
    if not _has_rows(data):
        return empty_klines_frame()
    types: dict[str, pa.DataType] = {c: pa.int64() for c in INT_COLUMNS}
    types.update({c: pa.float64() for c in FLOAT_COLUMNS})
    table = _read_csv(data, source, KLINE_CSV_COLUMNS, types)
    cols = {name: table.column(name).to_numpy() for name in types}
    finite = np.ones(table.num_rows, dtype=bool)
    for name in FLOAT_COLUMNS:
        finite &= np.isfinite(cols[name])
    if not finite.all():
        detail = _diagnose(data, source, _has_header(data), KLINE_CSV_COLUMNS)
        raise KlinesParseError(
            detail or f"{source}: non-finite price or volume in row {int(np.argmin(finite)) + 1}"
        )
    open_ns, open_unit = _epoch_to_ns(cols["open_time"], "open_time", source)
    close_ns, close_unit = _epoch_to_ns(cols["close_time"], "close_time", source)
    if open_unit != close_unit:
        raise KlinesParseError(f"{source}: open_time is in {open_unit} but close_time in {close_unit}")
    n = table.num_rows
    out: dict[str, object] = {
        "date": (open_ns // _DAY_NS * _DAY_NS).view("datetime64[ns]"),
        "symbol": pd.array([symbol], dtype="str").repeat(n),
        "interval": pd.array([interval], dtype="str").repeat(n),
        "open_time": _utc(open_ns),
        "close_time": _utc(close_ns),
    }
    out.update({c: cols[c] for c in FLOAT_COLUMNS})
    out["count"] = cols["count"]
    return pd.DataFrame(out, copy=False)


def parse_klines_zip(
    zip_bytes: bytes,
    *,
    source: str,
    symbol: str,
    interval: str,
    max_bytes: int = MAX_CSV_BYTES,
    max_ratio: float = MAX_COMPRESSION_RATIO,
) -> pd.DataFrame:
    """An archive zip (exactly one CSV inside, within the size limits) -> typed ``binance_klines`` rows."""
    member, data = read_single_csv(zip_bytes, source, max_bytes, max_ratio)
    return parse_klines_csv(data, source=f"{source}:{member}", symbol=symbol, interval=interval)


FUNDING_CSV_COLUMNS: tuple[str, ...] = ("calc_time", "funding_interval_hours", "funding_rate")


def parse_funding_rate_zip(zip_bytes: bytes, *, source: str, symbol: str) -> pd.DataFrame:
    """A futures ``fundingRate`` zip -> ``date, symbol, calc_time, funding_interval_hours, funding_rate``."""
    member, data = read_single_csv(zip_bytes, source)
    where = f"{source}:{member}"
    if not _has_rows(data):
        table = pa.table(
            {
                "calc_time": pa.array([], pa.int64()),
                "funding_interval_hours": pa.array([], pa.int64()),
                "funding_rate": pa.array([], pa.float64()),
            }
        )
    else:
        table = _read_csv(
            data,
            where,
            FUNDING_CSV_COLUMNS,
            {"calc_time": pa.int64(), "funding_interval_hours": pa.int64(), "funding_rate": pa.float64()},
        )
    calc = table.column("calc_time").to_numpy()
    calc_ns = _epoch_to_ns(calc, "calc_time", where)[0] if len(calc) else calc
    return pd.DataFrame(
        {
            "date": (calc_ns // _DAY_NS * _DAY_NS).view("datetime64[ns]"),
            "symbol": pd.array([symbol], dtype="str").repeat(len(calc)),
            "calc_time": _utc(calc_ns),
            "funding_interval_hours": table.column("funding_interval_hours").to_numpy(),
            "funding_rate": table.column("funding_rate").to_numpy(),
        }
    )


# ----------------------------------------------------------------------------- merging & gaps
def combine_klines(frames: Iterable[pd.DataFrame], start: dt.date, end: dt.date) -> tuple[pd.DataFrame, int]:
    """Concatenate parsed files, keep bars whose UTC day is within ``start..end`` and drop bars
    seen twice (a monthly and a daily file overlap; the first frame given wins).

    Returns the bars sorted by (symbol, interval, open_time) and the number of duplicates dropped.
    """
    parts = [f for f in frames if len(f)]
    if not parts:
        return empty_klines_frame(), 0
    df = pd.concat(parts, ignore_index=True)
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    df = df[(df["date"] >= lo) & (df["date"] <= hi)]
    before = len(df)
    df = df.drop_duplicates(subset=list(BAR_KEY), keep="first")
    df = df.sort_values(list(BAR_KEY), kind="stable").reset_index(drop=True)
    return df[list(KLINES_COLUMNS)], before - len(df)


def duplicate_bars(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose (symbol, interval, open_time) occurs more than once."""
    return df[df.duplicated(subset=list(BAR_KEY), keep=False)]


def expected_bars_per_day(interval: str) -> int | None:
    """Bars a complete UTC day holds; None for intervals longer than a day (not counted)."""
    seconds = INTERVAL_SECONDS.get(interval)
    if seconds is None or seconds > DAY_SECONDS or DAY_SECONDS % seconds:
        return None
    return DAY_SECONDS // seconds


def bar_gaps(
    df: pd.DataFrame, covered_days: Mapping[tuple[str, str], Iterable[dt.date]] | None = None
) -> pd.DataFrame:
    """Days with fewer bars than the interval implies: ``symbol, interval, date, expected, bars, missing``.

    ``covered_days`` lists, per (symbol, interval), the days a fetched file covered, so a day with
    no bar at all counts too; without it, only days present in ``df`` are checked. Gaps are
    reported, never filled: exchange maintenance gaps in the archive are permanent.
    """
    counts = (
        df.groupby(["symbol", "interval", "date"], sort=True).size() if len(df) else pd.Series(dtype="int64")
    )
    if covered_days is None:
        keys = list(counts.index)
    else:
        keys = [(s, i, pd.Timestamp(d)) for (s, i), days in covered_days.items() for d in days]
    rows = []
    for symbol, interval, day in keys:
        expected = expected_bars_per_day(interval)
        if expected is None:
            continue
        bars = int(counts.get((symbol, interval, day), 0))
        if bars < expected:
            rows.append((symbol, interval, day, expected, bars, expected - bars))
    gaps = pd.DataFrame(rows, columns=["symbol", "interval", "date", "expected", "bars", "missing"])
    return gaps.sort_values(["symbol", "interval", "date"]).reset_index(drop=True)
