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
from typing import ClassVar

import httpx
from pydantic import Field

from midfreq_assets.domain.ingest.archive_files import ArchiveFile
from midfreq_resources.clients.http_retry import (
    MIB,
    HttpSourceResource,
    NotFoundError,
    SourceError,
    aget_with_retries,
    gather_bounded,
    get_with_retries,
)
from midfreq_resources.settings import BINANCE_ARCHIVE_URL_ENV, LIVE_BINANCE_ARCHIVE_URL

CHECKSUM_ATTEMPTS = 2
#: A ``.CHECKSUM`` is one line (~100 bytes); anything much longer is not one.
MAX_CHECKSUM_BYTES = 4096


class ChecksumError(SourceError):
    """A zip does not match the SHA-256 published beside it (or the ``.CHECKSUM`` is unreadable)."""


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
            f"downloaded {len(zip_bytes)} bytes hash to {actual}",
            url,
        )


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
    max_zip_mb: float = Field(
        default=512.0,
        gt=0,
        description="size limit of one archive zip (a month of 1s spot bars is ~100-200 MB)",
    )

    def _limits(self) -> tuple[int, int]:
        return MAX_CHECKSUM_BYTES, int(self.max_zip_mb * MIB)

    def url(self, file: ArchiveFile) -> str:
        return f"{self.root_url}/{file.path}"

    def download(self, file: ArchiveFile) -> bytes:
        """One verified zip (sync). Raises ``NotFoundError`` (404), ``ChecksumError`` or another
        ``SourceError``."""
        url = self.url(file)
        with httpx.Client(timeout=self.timeout_s, follow_redirects=True) as client:
            small, large = self._limits()
            for attempt in range(1, CHECKSUM_ATTEMPTS + 1):
                checksum = get_with_retries(
                    client, url + ".CHECKSUM", self.policy, parse=_content, max_bytes=small
                )
                data = get_with_retries(client, url, self.policy, parse=_content, max_bytes=large)
                if _verified(data, checksum, file, url, attempt):
                    return data
        raise AssertionError("unreachable")

    async def _adownload(self, client: httpx.AsyncClient, file: ArchiveFile) -> bytes:
        url = self.url(file)
        small, large = self._limits()
        for attempt in range(1, CHECKSUM_ATTEMPTS + 1):
            checksum = await aget_with_retries(
                client, url + ".CHECKSUM", self.policy, parse=_content, max_bytes=small
            )
            data = await aget_with_retries(client, url, self.policy, parse=_content, max_bytes=large)
            if _verified(data, checksum, file, url, attempt):
                return data
        raise AssertionError("unreachable")

    async def _download_many(self, files: list[ArchiveFile]) -> ArchiveBatch:
        batch = ArchiveBatch()
        limits = httpx.Limits(
            max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
        )
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
