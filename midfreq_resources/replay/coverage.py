"""What a recorded corpus covers: the days of its DefiLlama histories and of its Binance klines.

``midfreq pipeline --corpus ROOT`` derives every stage's range from this, so any corpus laid out
like the live URL paths (``defillama/yields/chart/<uuid>.json``,
``binance/data/<market>/{daily,monthly}/klines/<SYM>/<interval>/<SYM>-<interval>-<period>.zip``)
runs without a hand-written schedule. Reads file names and the chart timestamps only; nothing in
a file is executed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

_DAY_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})")
_PERIOD_RE = re.compile(
    r"^(?P<sym>[A-Z0-9_]+)-(?P<interval>[0-9]+[a-z]+)-(?P<period>\d{4}-\d{2}(-\d{2})?)\.zip$"
)


@dataclass(frozen=True)
class YieldsCoverage:
    """Days of the DefiLlama pool histories of a corpus."""

    first: dt.date
    last: dt.date
    charts: int  # chart files with at least one row
    unreadable: tuple[str, ...] = ()  # chart files that are not a DefiLlama /chart body


@dataclass
class KlinesCoverage:
    """Per interval, the UTC days a corpus has kline files for (daily files, or days of monthly ones)."""

    days: dict[str, set[dt.date]] = field(default_factory=dict)

    def segments(
        self, first: dt.date | None = None, last: dt.date | None = None
    ) -> list[tuple[dt.date, dt.date]]:
        """Contiguous runs of days with a file for at least one interval, clipped to ``first..last``."""
        days = sorted(
            d
            for ds in self.days.values()
            for d in ds
            if (first is None or d >= first) and (last is None or d <= last)
        )
        out: list[tuple[dt.date, dt.date]] = []
        for d in dict.fromkeys(days):
            if out and d == out[-1][1] + dt.timedelta(days=1):
                out[-1] = (out[-1][0], d)
            else:
                out.append((d, d))
        return out

    def intervals_in(self, first: dt.date, last: dt.date) -> list[str]:
        """Intervals with at least one day of data in ``first..last``."""
        return [i for i, ds in self.days.items() if any(first <= d <= last for d in ds)]


def yields_coverage(root: Path | str) -> YieldsCoverage | None:
    """First and last day over every ``defillama/yields/chart/*.json`` (None without any row)."""
    first = last = None
    charts, bad = 0, []
    for path in sorted((Path(root) / "defillama" / "yields" / "chart").glob("*.json")):
        try:
            rows = orjson.loads(path.read_bytes()).get("data") or []
            days = [
                m.group(1)
                for r in rows
                if isinstance(r, dict) and (m := _DAY_RE.match(str(r.get("timestamp"))))
            ]
        except (orjson.JSONDecodeError, AttributeError):
            bad.append(path.name)
            continue
        if not days:
            continue
        charts += 1
        lo, hi = dt.date.fromisoformat(min(days)), dt.date.fromisoformat(max(days))
        first = lo if first is None else min(first, lo)
        last = hi if last is None else max(last, hi)
    if first is None or last is None:
        return None
    return YieldsCoverage(first, last, charts, tuple(bad))


def _month_days(period: str) -> list[dt.date]:
    start = dt.date.fromisoformat(period + "-01")
    nxt = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return [start + dt.timedelta(days=i) for i in range((nxt - start).days)]


def klines_coverage(
    root: Path | str, market: str, symbols: Iterable[str], intervals: Iterable[str]
) -> KlinesCoverage:
    """Days with a kline zip per interval (any of ``symbols``), from the archive file names."""
    wanted = set(intervals)
    out = KlinesCoverage({i: set() for i in intervals})
    base = Path(root) / "binance" / "data" / market
    for symbol in symbols:
        for freq in ("daily", "monthly"):
            folder = base / freq / "klines" / symbol
            if not folder.is_dir():
                continue
            for path in folder.glob("*/*.zip"):
                m = _PERIOD_RE.match(path.name)
                if (
                    m is None
                    or m["sym"] != symbol
                    or m["interval"] not in wanted
                    or path.parent.name != m["interval"]
                ):
                    continue
                period = m["period"]
                days = [dt.date.fromisoformat(period)] if len(period) == 10 else _month_days(period)
                out.days[m["interval"]].update(days)
    return out
