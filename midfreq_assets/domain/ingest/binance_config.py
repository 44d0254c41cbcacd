"""``configs/binance.yaml``: which Binance archive files the ``binance_klines`` asset collects.

Validated up front so a typo (an interval futures do not have, a dataset spot does not publish)
fails at load time naming the file and key, not as a wall of 404s in a nightly run.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from midfreq_assets.domain.config.base import StrictModel, config_dir, load_model
from midfreq_assets.domain.ingest.archive_files import DATASETS_BY_MARKET, Dataset, Market
from midfreq_assets.domain.ingest.klines import INTERVAL_SECONDS

SPOT_ONLY_INTERVALS = frozenset({"1s"})


class BinanceConfig(StrictModel):
    """One market, its symbols and bar intervals, and the first day to partition."""

    market: Market = "spot"
    symbols: list[str] = Field(min_length=1, description="archive symbols, e.g. BTCUSDT (cm: BTCUSD_PERP)")
    intervals: list[str] = Field(min_length=1, description="kline intervals, e.g. 1m, 1h, 1d")
    datasets: list[Dataset] = Field(default_factory=lambda: ["klines"])
    start_date: dt.date

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, symbols: list[str]) -> list[str]:
        cleaned = [s.strip().upper() for s in symbols]
        for s in cleaned:
            if not s or not all(ch.isalnum() or ch == "_" for ch in s):
                raise ValueError(f"symbol {s!r} must be letters, digits or '_'")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("symbols are listed twice")
        return cleaned

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, intervals: list[str]) -> list[str]:
        for i in intervals:
            if i not in INTERVAL_SECONDS:
                raise ValueError(f"unknown interval {i!r}; one of {', '.join(INTERVAL_SECONDS)}")
        if len(set(intervals)) != len(intervals):
            raise ValueError("intervals are listed twice")
        return intervals

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
