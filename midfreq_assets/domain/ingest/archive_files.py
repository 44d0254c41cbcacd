"""Binance archive files (data.binance.vision): which zip holds which bars, validated before any URL.

``data/{spot|futures/um|futures/cm}/{daily|monthly}/{dataset}/{SYM}/{interval}/{SYM}-{interval}-{period}.zip``
(``fundingRate`` has no interval level: ``.../fundingRate/{SYM}/{SYM}-fundingRate-{period}.zip``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Market = Literal["spot", "futures/um", "futures/cm"]
Freq = Literal["daily", "monthly"]
Dataset = Literal["klines", "fundingRate", "premiumIndexKlines"]

MARKETS: tuple[str, ...] = ("spot", "futures/um", "futures/cm")
DATASETS_BY_MARKET: dict[str, frozenset[str]] = {
    "spot": frozenset({"klines"}),
    "futures/um": frozenset({"klines", "fundingRate", "premiumIndexKlines"}),
    "futures/cm": frozenset({"klines", "fundingRate", "premiumIndexKlines"}),
}
MONTHLY_ONLY_DATASETS = frozenset({"fundingRate"})
_SYMBOL_RE = re.compile(r"^[A-Z0-9_]{2,40}$")
_INTERVAL_RE = re.compile(r"^[0-9]{1,2}(s|m|h|d|w|mo)$")
_PERIOD_RE = {"daily": re.compile(r"^\d{4}-\d{2}-\d{2}$"), "monthly": re.compile(r"^\d{4}-\d{2}$")}


@dataclass(frozen=True, order=True)
class ArchiveFile:
    """One archive zip; validated so nothing odd reaches a URL."""

    market: Market
    dataset: Dataset
    symbol: str
    interval: str | None
    freq: Freq
    period: str

    def __post_init__(self) -> None:
        if self.market not in MARKETS:
            raise ValueError(f"unknown market {self.market!r}; one of {MARKETS}")
        if self.dataset not in DATASETS_BY_MARKET[self.market]:
            raise ValueError(f"market {self.market!r} publishes no {self.dataset!r}")
        if not _SYMBOL_RE.match(self.symbol):
            raise ValueError(f"symbol {self.symbol!r} is not an archive symbol (A-Z, 0-9, _)")
        if self.dataset == "fundingRate":
            if self.interval is not None:
                raise ValueError("fundingRate files have no interval")
            if self.freq != "monthly":
                raise ValueError("fundingRate is published monthly only")
        elif self.interval is None or not _INTERVAL_RE.match(self.interval):
            raise ValueError(f"{self.dataset} needs an interval like 1m/1h/1d, got {self.interval!r}")
        if self.freq not in _PERIOD_RE or not _PERIOD_RE[self.freq].match(self.period):
            raise ValueError(
                f"{self.freq} period must look like {'YYYY-MM-DD' if self.freq == 'daily' else 'YYYY-MM'}, "
                f"got {self.period!r}"
            )

    @property
    def zip_name(self) -> str:
        middle = self.dataset if self.interval is None else self.interval
        return f"{self.symbol}-{middle}-{self.period}.zip"

    @property
    def path(self) -> str:
        parts = ["data", self.market, self.freq, self.dataset, self.symbol]
        if self.interval is not None:
            parts.append(self.interval)
        return "/".join([*parts, self.zip_name])

    @property
    def label(self) -> str:
        return " ".join(
            p for p in (self.market, self.dataset, self.symbol, self.interval, self.freq, self.period) if p
        )
