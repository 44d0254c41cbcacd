"""Fixtures of the domain tests: the bundled recording as plain frames (no Dagster, no HTTP)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

CHARTS = Path(__file__).resolve().parents[2] / "recorded" / "defillama" / "yields" / "chart"


def _recorded_history(n_pools: int = 8) -> pd.DataFrame:
    frames = []
    for path in sorted(CHARTS.glob("*.json"))[:n_pools]:
        df = pd.DataFrame(json.loads(path.read_text())["data"])
        frames.append(
            pd.DataFrame(
                {
                    "date": pd.to_datetime(df["timestamp"].str[:10]).astype("datetime64[ns]"),
                    "pool": path.stem,
                    "apy": df["apy"].astype(float) / 100,
                    "tvl_usd": df["tvlUsd"].astype(float),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="session")
def recorded_history() -> Callable[[int], pd.DataFrame]:
    """``recorded_history(n_pools=8)``: real DefiLlama pool histories of the first pools of the
    bundled recording (date, pool, apy as a fraction, tvl_usd)."""
    return _recorded_history


ARCHIVE = Path(__file__).resolve().parents[2] / "recorded" / "binance" / "data"


def _archive_bars(market: str, dataset: str, interval: str) -> pd.DataFrame:
    from midfreq_assets.domain.ingest.klines import parse_klines_zip

    frames = [
        parse_klines_zip(p.read_bytes(), source=p.name, symbol="BTCUSDT", interval=interval)
        for p in sorted((ARCHIVE / market).glob(f"*/{dataset}/BTCUSDT/{interval}/*.zip"))
    ]
    return pd.concat(frames, ignore_index=True).drop_duplicates(["symbol", "interval", "open_time"])


def _recorded_klines(interval: str = "1d", premium: bool = False) -> pd.DataFrame:
    from midfreq_assets.domain.research.engine import klines_panel, with_close_premium

    panel = klines_panel(_archive_bars("spot", "klines", interval), interval)
    if premium:
        panel = with_close_premium(
            panel, _archive_bars("futures/um", "premiumIndexKlines", interval), interval
        )
    return panel


@pytest.fixture(scope="session")
def recorded_klines() -> Callable[..., pd.DataFrame]:
    """``recorded_klines(interval="1d", premium=False)``: the bundled real BTCUSDT spot bars (monthly
    and daily files) as a research panel (open_time, date, instrument, open, high, low, close,
    volume, ...); with ``premium``, plus ``close_premium`` from the bundled (generated) premium index bars."""
    return _recorded_klines
