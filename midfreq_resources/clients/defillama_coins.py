"""DefiLlama coins API client: daily token prices from ``GET /chart/{coins}``.

Used for reward-token haircuts and peg deviations. The API silently drops coins it does not
know, so every call says which requested coins came back empty (``CoinPrices.missing``).
Coins are batched per request (URL length) with bounded concurrency; long ranges are split
into bounded spans. Same retry and validation standards as the yields client.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from midfreq_resources.clients.http_retry import (
    MIB,
    HttpSourceResource,
    MalformedResponseError,
    aget_with_retries,
    gather_bounded,
)
from midfreq_resources.settings import DEFILLAMA_COINS_URL_ENV, LIVE_DEFILLAMA_COINS_URL

DAY_S = 86_400
PRICE_COLUMNS = ["date", "coin", "symbol", "price", "confidence", "timestamp"]

_SEP = quote(",", safe="")
_COIN_RE = re.compile(r"^[a-z0-9_-]+:[A-Za-z0-9._-]+$")


class InvalidCoinIdError(ValueError):
    """A coin id that is not ``chain:address`` / ``coingecko:id`` never reaches a URL."""


def validate_coin_id(coin: str) -> str:
    if not isinstance(coin, str) or not _COIN_RE.fullmatch(coin):
        raise InvalidCoinIdError(f"coin id {coin!r} is not 'chain:address' or 'coingecko:id'")
    return coin


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class PricePoint(_Lenient):
    timestamp: int
    price: float


class CoinChart(_Lenient):
    """One coin of a ``/chart`` answer."""

    symbol: str | None = None
    confidence: float | None = None
    decimals: int | None = None
    prices: list[PricePoint] = Field(default_factory=list)


class _ChartBody(_Lenient):
    coins: dict[str, CoinChart]


@dataclass
class CoinPrices:
    """Outcome of a price request: charts that came back, coins the API omitted, batches that failed."""

    charts: dict[str, CoinChart] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        return charts_frame(self.charts)


def parse_coins_chart(body: Any, requested: list[str], url: str) -> dict[str, CoinChart]:
    """Validate a ``/chart`` body and key it by the requested ids (the API may change the case)."""
    if not isinstance(body, dict) or "coins" not in body:
        kind = type(body).__name__ if not isinstance(body, dict) else f"keys {sorted(body)[:8]}"
        raise MalformedResponseError(f"{url}: expected {{'coins': {{...}}}}, got {kind}", url)
    try:
        parsed = _ChartBody.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise MalformedResponseError(
            f"{url}: {exc.error_count()} invalid field(s): {problems}", url
        ) from None
    by_lower = {c.lower(): c for c in requested}
    out: dict[str, CoinChart] = {}
    for key, chart in parsed.coins.items():
        coin = by_lower.get(key.lower())
        if coin is not None:
            out[coin] = chart
    return out


def charts_frame(charts: dict[str, CoinChart]) -> pd.DataFrame:
    """Long frame ``date, coin, symbol, price, confidence, timestamp`` (last point per UTC day)."""
    rows = [
        (coin, chart.symbol, p.price, chart.confidence, p.timestamp)
        for coin, chart in charts.items()
        for p in chart.prices
    ]
    frame = pd.DataFrame(rows, columns=["coin", "symbol", "price", "confidence", "timestamp"])
    frame = frame.astype(
        {"coin": object, "symbol": object, "price": float, "confidence": float, "timestamp": "int64"}
    )
    frame["date"] = pd.to_datetime(frame["timestamp"], unit="s").dt.normalize().astype("datetime64[ns]")
    frame = frame.sort_values(["coin", "timestamp"]).drop_duplicates(["coin", "date"], keep="last")
    return frame[PRICE_COLUMNS].reset_index(drop=True)


def batches(coins: list[str], max_coins: int, max_chars: int) -> list[list[str]]:
    """Split coins so each request's percent-encoded coin list stays under both limits."""
    out: list[list[str]] = []
    current: list[str] = []
    length = 0
    for coin in coins:
        size = len(quote(coin, safe=""))
        if current and (len(current) >= max_coins or length + len(_SEP) + size > max_chars):
            out.append(current)
            current, length = [], 0
        length += size + (len(_SEP) if current else 0)
        current.append(coin)
    if current:
        out.append(current)
    return out


class DefiLlamaCoinsClient(HttpSourceResource):
    """coins.llama.fi daily price charts with timeouts, bounded retries, batching and concurrency."""

    ENV_VAR: ClassVar[str] = DEFILLAMA_COINS_URL_ENV
    LIVE_URL: ClassVar[str] = LIVE_DEFILLAMA_COINS_URL
    max_concurrency: int = Field(default=4, ge=1, le=32)
    max_coins_per_request: int = Field(default=25, ge=1, le=100)
    max_coins_chars: int = Field(
        default=190,
        ge=60,
        le=4000,
        description="percent-encoded coin list length per request; 190 keeps each batch's recorded "
        "file name, query suffix included (replay layout), under the 255-byte filesystem limit",
    )
    max_response_mb: float = Field(default=32.0, gt=0, description="size limit of one /chart answer")
    max_span_days: int = Field(default=400, ge=1, le=1000, description="days per request")
    time_of_day_s: int = Field(
        default=12 * 3600,
        ge=0,
        lt=DAY_S,
        description="price time within each UTC day (noon: the API's search window never crosses midnight)",
    )

    def _url(self, coins: list[str]) -> str:
        return self.root_url + "/chart/" + ",".join(coins)

    def _spans(self, first: dt.date, last: dt.date) -> list[tuple[int, int]]:
        """(start unix, number of daily points) windows covering first..last."""
        days = (last - first).days + 1
        epoch = int(dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC).timestamp()) + self.time_of_day_s
        return [
            (epoch + offset * DAY_S, min(self.max_span_days, days - offset))
            for offset in range(0, days, self.max_span_days)
        ]

    async def _fetch_all(self, coins: list[str], first: dt.date, last: dt.date) -> CoinPrices:
        lo = int(dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC).timestamp())
        hi = int(dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC).timestamp())
        jobs = [
            (tuple(b), start, span)
            for b in batches(coins, self.max_coins_per_request, self.max_coins_chars)
            for start, span in self._spans(first, last)
        ]
        limits = httpx.Limits(
            max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
        )
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits, follow_redirects=True) as client:

            async def fetch(job: tuple[tuple[str, ...], int, int]) -> dict[str, CoinChart]:
                batch, start, span = job
                url = self._url(list(batch))
                body = await aget_with_retries(
                    client,
                    url,
                    self.policy,
                    params={"start": start, "span": span, "period": "1d"},
                    max_bytes=int(self.max_response_mb * MIB),
                )
                return parse_coins_chart(body, list(batch), url)

            result = await gather_bounded(jobs, fetch, self.max_concurrency)

        charts: dict[str, CoinChart] = {}
        for job in jobs:
            for coin, chart in result.ok.get(job, {}).items():
                points = [p for p in chart.prices if lo <= p.timestamp < hi]
                if coin in charts:
                    charts[coin].prices.extend(points)
                else:
                    charts[coin] = chart.model_copy(update={"prices": points})
        failed = {coin: error for job, error in result.failed.items() for coin in job[0]}
        missing = [c for c in coins if c not in failed and not (c in charts and charts[c].prices)]
        charts = {c: ch for c, ch in charts.items() if ch.prices}
        return CoinPrices(charts=charts, missing=missing, failed=failed)

    def daily_prices(self, coins: Iterable[str], first: dt.date, last: dt.date) -> CoinPrices:
        """Daily prices of ``coins`` for UTC days first..last (inclusive).

        Points outside the window are dropped (the API searches around each requested time);
        coins without any point in the window are listed in ``missing``; coins whose batch
        failed after retries are in ``failed`` with the error.
        """
        ids = [validate_coin_id(c) for c in dict.fromkeys(coins)]
        if last < first:
            raise ValueError(f"last day {last} is before first day {first}")
        if not ids:
            return CoinPrices()
        return asyncio.run(self._fetch_all(ids, first, last))
