"""A vault's real holdings: parse a positions file (CSV or JSON), validate it, turn it into a state.

One row per pool: ``pool`` (DefiLlama uuid, or ``cash`` for the idle base), ``amount_usd`` or
``amount`` + ``price_usd`` (token amount and its USD price), ``as_of`` (ISO time, UTC when no
offset). Optional ``chain``/``token`` columns are kept as written. What cannot be read at all
(not CSV/JSON, a missing column, a number or time that does not parse) raises
:class:`PositionsError` naming the source, the file's own line (CSV: the header is line 1, the first
row line 2; JSON: the element's index in the list and its line) and the column; what parses but cannot be trusted
(unknown pool, negative amount, stale ``as_of``, a pool twice) is kept with its ``problem``, so
the asset records it and its blocking check fails naming the rows.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterable

import numpy as np
import orjson
import pandas as pd

from midfreq_assets.domain.ingest.pool_ids import is_pool_uuid
from midfreq_assets.domain.portfolio.live_config import CASH_POOL, PositionsConfig

POSITION_COLUMNS = [
    "date",
    "pool",
    "amount_usd",
    "amount",
    "price_usd",
    "value_usd",
    "as_of",
    "chain",
    "token",
    "source",
    "problem",
]
REQUIRED = ("pool", "as_of")


class PositionsError(ValueError):
    """A positions file or answer cannot be read; the message names the source, row and column."""


def _csv_lines(data: bytes, rows: int) -> list[str]:
    """Where each data row of a CSV file is: ``line N`` (the header is line 1; blank lines count)."""
    fallback = [f"line {i + 2}" for i in range(rows)]
    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8-sig")))
        lines, header = [], False
        for record in reader:
            if not record or not any(field.strip() for field in record) and len(record) == 1:
                continue  # a blank line (pandas skips it too)
            if not header:
                header = True
                continue
            lines.append(f"line {reader.line_num}")
    except (UnicodeDecodeError, csv.Error):
        return fallback
    return lines if len(lines) == rows else fallback


_WS = re.compile(r"[ \t\n\r]*")


def _json_element_starts(text: str) -> tuple[str, list[int]] | None:
    """The list holding the rows (``[i]`` at the top level, ``positions[i]`` inside an object) and the
    character offset of each element, or None when the layout is not one of those."""
    decoder = json.JSONDecoder()
    skip = lambda i: _WS.match(text, i).end()  # noqa: E731
    i, name = skip(0), ""
    if text.startswith("{", i):
        i = skip(i + 1)
        while True:
            if text.startswith("}", i):
                return None
            key, i = decoder.raw_decode(text, i)
            i = skip(i)
            if not text.startswith(":", i):
                return None
            i = skip(i + 1)
            if key == "positions":
                name = "positions"
                break
            i = skip(decoder.raw_decode(text, i)[1])
            if text.startswith(",", i):
                i = skip(i + 1)
    if not text.startswith("[", i):
        return None
    i, starts = skip(i + 1), []
    while not text.startswith("]", i):
        starts.append(i)
        i = skip(decoder.raw_decode(text, i)[1])
        if text.startswith(",", i):
            i = skip(i + 1)
    return name, starts


def _json_places(data: bytes, rows: int) -> list[str]:
    """Where each element of a JSON positions list is: ``element [i] (line N)`` (or ``positions[i]``)."""
    try:
        text = data.decode("utf-8-sig")
        found = _json_element_starts(text)
    except (UnicodeDecodeError, ValueError, IndexError, AttributeError):
        found = None
    if found is None or len(found[1]) != rows:
        return [f"element [{i}]" for i in range(rows)]
    name, starts = found
    places, line, last = [], 1, 0
    for i, start in enumerate(starts):
        line += text.count("\n", last, start)
        last = start
        places.append(f"{name}[{i}] (line {line})" if name else f"element [{i}] (line {line})")
    return places


def _records(data: bytes, fmt: str, source: str) -> tuple[pd.DataFrame, list[str]]:
    """The rows of the file and where each one is in it (for messages)."""
    if fmt == "csv":
        try:
            frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, skipinitialspace=True)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            raise PositionsError(f"{source}: not a readable CSV file: {exc}") from None
        return frame.rename(columns=lambda c: str(c).strip()), _csv_lines(data, len(frame))
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PositionsError(f"{source}: not valid JSON ({exc.msg} at byte {exc.pos})") from None
    rows = body.get("positions") if isinstance(body, dict) else body
    if not isinstance(rows, list):
        raise PositionsError(
            f"{source}: expected a JSON list of rows or an object with a 'positions' list, "
            f"got {type(body).__name__}"
        )
    places = _json_places(data, len(rows))
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise PositionsError(f"{source}: {places[bad]}: expected an object, got {type(rows[bad]).__name__}")
    return pd.DataFrame.from_records(rows), places


def _numbers(frame: pd.DataFrame, column: str, source: str, places: list[str]) -> pd.Series:
    if column not in frame:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    raw = frame[column].map(lambda v: np.nan if v is None or (isinstance(v, str) and not v.strip()) else v)
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise PositionsError(f"{source}: {places[i]}: {column}: not a number ({frame[column].iloc[i]!r})")
    values = values.astype(float)
    inf = ~np.isfinite(values) & values.notna()
    if inf.any():
        i = int(np.flatnonzero(inf.to_numpy())[0])
        raise PositionsError(
            f"{source}: {places[i]}: {column}: not a finite number ({frame[column].iloc[i]!r})"
        )
    return values


def _times(frame: pd.DataFrame, source: str, places: list[str]) -> pd.Series:
    raw = frame["as_of"].astype(str).str.strip()
    parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise PositionsError(
            f"{source}: {places[i]}: as_of: not an ISO date/time ({frame['as_of'].iloc[i]!r})"
        )
    return parsed


def empty_positions() -> pd.DataFrame:
    """No rows (a day the vault is simulated), with the columns and types of a positions partition."""
    types = {
        "date": "datetime64[ns]",
        "as_of": "datetime64[ns, UTC]",
        "amount_usd": float,
        "amount": float,
        "price_usd": float,
        "value_usd": float,
    }
    return pd.DataFrame({c: pd.Series(dtype=types.get(c, object)) for c in POSITION_COLUMNS})


def parse_positions(data: bytes, fmt: str, source: str, day: dt.date) -> pd.DataFrame:
    """The rows of one positions file as :data:`POSITION_COLUMNS` (``problem`` empty; see
    :func:`validate_positions`); raises :class:`PositionsError` when it cannot be read."""
    frame, places = _records(data, fmt, source)
    missing = [c for c in REQUIRED if c not in frame]
    if missing:
        raise PositionsError(
            f"{source}: missing column(s) {missing} (have {sorted(map(str, frame.columns))})"
        )
    if frame.empty:
        raise PositionsError(f"{source}: no rows (a vault holds at least its cash row: pool={CASH_POOL})")
    usd, amount, price = (_numbers(frame, c, source, places) for c in ("amount_usd", "amount", "price_usd"))
    priced = amount * price
    value = usd.fillna(priced)
    unvalued = value.isna()
    if unvalued.any():
        i = int(np.flatnonzero(unvalued.to_numpy())[0])
        raise PositionsError(
            f"{source}: {places[i]} (pool {frame['pool'].iloc[i]!r}): needs amount_usd, or amount "
            "and price_usd"
        )
    both = usd.notna() & priced.notna() & ~np.isclose(usd, priced, rtol=1e-6, atol=1e-6)
    if both.any():
        i = int(np.flatnonzero(both.to_numpy())[0])
        raise PositionsError(
            f"{source}: {places[i]}: amount_usd {usd.iloc[i]} disagrees with amount x price_usd "
            f"{priced.iloc[i]}"
        )
    text = lambda c: frame[c].astype(str).str.strip() if c in frame else pd.Series("", index=frame.index)  # noqa: E731
    return pd.DataFrame(
        {
            "date": pd.Timestamp(day),
            "pool": text("pool").str.lower(),
            "amount_usd": usd,
            "amount": amount,
            "price_usd": price,
            "value_usd": value.astype(float),
            "as_of": _times(frame, source, places),
            "chain": text("chain"),
            "token": text("token"),
            "source": source,
            "problem": "",
        }
    )[POSITION_COLUMNS]


def validate_positions(
    rows: pd.DataFrame, day: dt.date, known_pools: Iterable[str], config: PositionsConfig
) -> pd.DataFrame:
    """``rows`` with ``problem`` set where a row cannot be trusted: not a pool id, a pool midfreq does
    not follow (not in ``known_pools``), negative value, ``as_of`` older than ``max_age_hours``
    before the end of ``day`` or later than the end of ``day`` plus that, a pool listed twice."""
    out = rows.copy()
    known = set(known_pools)
    end = pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)
    age = pd.Timedelta(hours=config.max_age_hours)
    problems: list[tuple[pd.Series, str]] = [
        (~out["pool"].eq(CASH_POOL) & ~out["pool"].map(is_pool_uuid), "not a pool id (uuid) nor 'cash'"),
        (
            out["pool"].map(is_pool_uuid) & ~out["pool"].isin(known),
            f"unknown pool: not in pool_metadata around {day} (midfreq does not follow it)",
        ),
        (out["value_usd"] < 0, "negative amount"),
        (
            out["as_of"] < end - age,
            f"stale: as_of older than {config.max_age_hours:g} h before the end of {day}",
        ),
        (out["as_of"] > end + age, f"as_of after the end of {day} by more than {config.max_age_hours:g} h"),
        (out["pool"].duplicated(keep=False), "pool listed twice"),
    ]
    text = pd.Series("", index=out.index, dtype=object)
    for mask, reason in problems:
        text = text.where(~mask, text.where(text.eq(""), text + "; ") + reason)
    out["problem"] = text
    return out


def positions_totals(rows: pd.DataFrame) -> dict[str, float | int]:
    """Invested, cash and total value (USD) and the counts the metadata shows."""
    cash = rows["pool"].eq(CASH_POOL)
    return {
        "total_usd": float(rows["value_usd"].sum()),
        "invested_usd": float(rows.loc[~cash, "value_usd"].sum()),
        "cash_usd": float(rows.loc[cash, "value_usd"].sum()),
        "pools": int((~cash).sum()),
        "problems": int(rows["problem"].ne("").sum()),
        "oldest_as_of": str(rows["as_of"].min()),
        "newest_as_of": str(rows["as_of"].max()),
    }


def observed_holdings(rows: pd.DataFrame) -> tuple[dict[str, float], float]:
    """Per pool the USD value held and the idle cash (USD); raises when a row still carries a
    problem (positions whose blocking check failed are never traded on)."""
    bad = rows[rows["problem"].fillna("").ne("")]
    if len(bad):
        first = bad.iloc[0]
        raise PositionsError(
            f"{first['source']}: {len(bad)} position row(s) failed validation, e.g. pool "
            f"{first['pool']!r}: {first['problem']}"
        )
    cash = rows["pool"].eq(CASH_POOL)
    held = rows[~cash & (rows["value_usd"] > 0)]
    return dict(zip(held["pool"], held["value_usd"].astype(float), strict=True)), float(
        rows.loc[cash, "value_usd"].sum()
    )
