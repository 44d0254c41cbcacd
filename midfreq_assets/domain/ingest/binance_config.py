"""``configs/binance.yaml``: which Binance archive files ``binance_klines`` collects, and (``futures:``)
``binance_premium_index_klines`` and ``binance_funding_rates``.

Validated up front so a typo (an interval futures do not have, a dataset spot does not publish)
fails at load time naming the file and key, not as a wall of 404s in a nightly run.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from midfreq_assets.domain.config.base import StrictModel, config_dir, load_model
from midfreq_assets.domain.ingest.archive_files import DATASETS_BY_MARKET, Dataset, Market
from midfreq_assets.domain.ingest.klines import INTERVAL_SECONDS, MAX_COMPRESSION_RATIO, MAX_CSV_BYTES

SPOT_ONLY_INTERVALS = frozenset({"1s"})


def _clean_symbols(symbols: list[str]) -> list[str]:
    cleaned = [s.strip().upper() for s in symbols]
    for s in cleaned:
        if not s or not all(ch.isalnum() or ch == "_" for ch in s):
            raise ValueError(f"symbol {s!r} must be letters, digits or '_'")
    if len(set(cleaned)) != len(cleaned):
        raise ValueError("symbols are listed twice")
    return cleaned


def _clean_intervals(intervals: list[str]) -> list[str]:
    for i in intervals:
        if i not in INTERVAL_SECONDS:
            raise ValueError(f"unknown interval {i!r}; one of {', '.join(INTERVAL_SECONDS)}")
    if len(set(intervals)) != len(intervals):
        raise ValueError("intervals are listed twice")
    return intervals


class FuturesConfig(StrictModel):
    """Futures datasets collected beside the klines: premium index bars and funding rates."""

    market: Literal["futures/um", "futures/cm"] = "futures/um"
    symbols: list[str] = Field(
        min_length=1, description="futures archive symbols (um: BTCUSDT, cm: BTCUSD_PERP)"
    )
    premium_index_intervals: list[str] = Field(
        default_factory=list, description="premiumIndexKlines intervals"
    )
    funding_rate: bool = Field(default=True, description="collect fundingRate (monthly files only)")

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, symbols: list[str]) -> list[str]:
        return _clean_symbols(symbols)

    @field_validator("premium_index_intervals")
    @classmethod
    def _intervals(cls, intervals: list[str]) -> list[str]:
        bad = sorted(SPOT_ONLY_INTERVALS & set(intervals))
        if bad:
            raise ValueError(f"intervals {bad} exist on spot only")
        return _clean_intervals(intervals)

    @model_validator(mode="after")
    def _collects_something(self) -> FuturesConfig:
        if not self.premium_index_intervals and not self.funding_rate:
            raise ValueError("collects nothing: set premium_index_intervals or funding_rate: true")
        return self

    @property
    def intervals(self) -> list[str]:
        """The premium index intervals (what a klines-style collection of this market fetches)."""
        return self.premium_index_intervals


class BinanceConfig(StrictModel):
    """One market, its symbols and bar intervals, and the first day to partition."""

    market: Market = "spot"
    symbols: list[str] = Field(min_length=1, description="archive symbols, e.g. BTCUSDT (cm: BTCUSD_PERP)")
    intervals: list[str] = Field(min_length=1, description="kline intervals, e.g. 1m, 1h, 1d")
    datasets: list[Dataset] = Field(default_factory=lambda: ["klines"])
    start_date: dt.date
    futures: FuturesConfig | None = Field(default=None, description="premium index / funding collection")
    max_csv_mb: float = Field(
        default=MAX_CSV_BYTES / 2**20,
        gt=0,
        description="largest CSV a zip may inflate to (checked before inflating)",
    )
    max_compression_ratio: float = Field(
        default=MAX_COMPRESSION_RATIO, gt=1, description="refuse zip members compressed more than this : 1"
    )

    @property
    def max_csv_bytes(self) -> int:
        return int(self.max_csv_mb * 2**20)

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, symbols: list[str]) -> list[str]:
        return _clean_symbols(symbols)

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, intervals: list[str]) -> list[str]:
        return _clean_intervals(intervals)

    @model_validator(mode="after")
    def _market_has_them(self) -> BinanceConfig:
        if "klines" not in self.datasets:
            raise ValueError("datasets: 'klines' is required")
        missing = sorted(set(self.datasets) - DATASETS_BY_MARKET[self.market])
        if missing:
            raise ValueError(f"datasets {missing} are not published for market {self.market!r}")
        if self.market != "spot" and SPOT_ONLY_INTERVALS & set(self.intervals):
            raise ValueError(f"intervals {sorted(SPOT_ONLY_INTERVALS)} exist on spot only")
        return self


def load_binance_config(path: Path | str | None = None) -> BinanceConfig:
    return load_model(BinanceConfig, path or config_dir() / "binance.yaml")
