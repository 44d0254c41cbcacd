"""Binance public-data archive client (data.binance.vision): zips verified against their ``.CHECKSUM``.

``{base}/data/{spot|futures/um|futures/cm}/{daily|monthly}/{dataset}/{SYM}/{interval}/{SYM}-{interval}-{period}.zip``
(``fundingRate`` has no interval level: ``.../fundingRate/{SYM}/{SYM}-fundingRate-{period}.zip``).
The archive has served wrong bytes after re-uploads, so every zip is checked against the SHA-256
published beside it; a mismatch is fetched once more, then the file is failed and nothing kept.
A 404 is normal (today's file is not out yet, a delisted symbol) and is reported as missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import httpx
from pydantic import Field

from midfreq_resources.clients.http_retry import (
    HttpSourceResource,
    NotFoundError,
    SourceError,
    aget_with_retries,
    gather_bounded,
    get_with_retries,
)
from midfreq_resources.settings import BINANCE_ARCHIVE_URL_ENV, LIVE_BINANCE_ARCHIVE_URL

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
CHECKSUM_ATTEMPTS = 2


class ChecksumError(SourceError):
    """A zip does not match the SHA-256 published beside it (or the ``.CHECKSUM`` is unreadable)."""


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
            raise ValueError(f"{self.freq} period must look like {'YYYY-MM-DD' if self.freq == 'daily' else 'YYYY-MM'}, "
                             f"got {self.period!r}")

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
        return " ".join(p for p in (self.market, self.dataset, self.symbol, self.interval, self.freq, self.period) if p)


def parse_checksum(body: bytes, expected_name: str, url: str) -> str:
    """``<sha256>  <zip name>`` (two spaces, maybe no newline) -> the lower-case hex digest."""
    text = body.decode("utf-8", "replace").strip()
    parts = text.split()
    if len(parts) != 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
        raise ChecksumError(f"{url}: not a '<sha256>  <file name>' checksum line: {text[:100]!r}", url)
    if parts[1] != expected_name:
        raise ChecksumError(f"{url}: checksum is for {parts[1]!r}, not {expected_name!r}", url)
    return parts[0].lower()


def _content(response: httpx.Response) -> bytes:
    return response.content


def _verify(zip_bytes: bytes, checksum_body: bytes, file: ArchiveFile, url: str) -> None:
    expected = parse_checksum(checksum_body, file.zip_name, url + ".CHECKSUM")
    actual = hashlib.sha256(zip_bytes).hexdigest()
    if actual != expected:
        raise ChecksumError(
            f"checksum mismatch for {file.zip_name} ({url}): .CHECKSUM says {expected}, "
            f"downloaded {len(zip_bytes)} bytes hash to {actual}", url)


def _verified(zip_bytes: bytes, checksum_body: bytes, file: ArchiveFile, url: str, attempt: int) -> bool:
    """True if the zip matches; False to fetch again; raises on the last attempt."""
    try:
        _verify(zip_bytes, checksum_body, file, url)
    except ChecksumError as exc:
        if attempt >= CHECKSUM_ATTEMPTS:
            raise ChecksumError(f"{exc} (after {attempt} attempts; file discarded)", url) from None
        return False
    return True


@dataclass
class ArchiveBatch:
    """Outcome per file: verified zip bytes, missing (404) or failed (with the reason)."""

    ok: dict[ArchiveFile, bytes] = field(default_factory=dict)
    missing: dict[ArchiveFile, str] = field(default_factory=dict)
    failed: dict[ArchiveFile, str] = field(default_factory=dict)


class BinanceArchiveClient(HttpSourceResource):
    """data.binance.vision with timeouts, bounded retries, bounded concurrency and SHA-256 checks."""

    ENV_VAR: ClassVar[str] = BINANCE_ARCHIVE_URL_ENV
    LIVE_URL: ClassVar[str] = LIVE_BINANCE_ARCHIVE_URL
    timeout_s: float = 60.0
    max_concurrency: int = Field(default=8, ge=1, le=64)

    def url(self, file: ArchiveFile) -> str:
        return f"{self.root_url}/{file.path}"

    def download(self, file: ArchiveFile) -> bytes:
        """One verified zip (sync). Raises ``NotFoundError`` (404), ``ChecksumError`` or another
        ``SourceError``."""
        url = self.url(file)
        with httpx.Client(timeout=self.timeout_s, follow_redirects=True) as client:
            for attempt in range(1, CHECKSUM_ATTEMPTS + 1):
                checksum = get_with_retries(client, url + ".CHECKSUM", self.policy, parse=_content)
                data = get_with_retries(client, url, self.policy, parse=_content)
                if _verified(data, checksum, file, url, attempt):
                    return data
        raise AssertionError("unreachable")

    async def _adownload(self, client: httpx.AsyncClient, file: ArchiveFile) -> bytes:
        url = self.url(file)
        for attempt in range(1, CHECKSUM_ATTEMPTS + 1):
            checksum = await aget_with_retries(client, url + ".CHECKSUM", self.policy, parse=_content)
            data = await aget_with_retries(client, url, self.policy, parse=_content)
            if _verified(data, checksum, file, url, attempt):
                return data
        raise AssertionError("unreachable")

    async def _download_many(self, files: list[ArchiveFile]) -> ArchiveBatch:
        batch = ArchiveBatch()
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits, follow_redirects=True) as client:

            async def fetch(file: ArchiveFile) -> bytes | None:
                try:
                    return await self._adownload(client, file)
                except NotFoundError as exc:
                    batch.missing[file] = str(exc)
                    return None

            result = await gather_bounded(files, fetch, self.max_concurrency)
        batch.ok = {f: data for f, data in result.ok.items() if data is not None}
        batch.failed = dict(result.failed)
        return batch

    def download_many(self, files: Iterable[ArchiveFile]) -> ArchiveBatch:
        """Fetch many files concurrently; each is verified, missing or failed, never half-kept."""
        unique = list(dict.fromkeys(files))
        if not unique:
            return ArchiveBatch()
        return asyncio.run(self._download_many(unique))
