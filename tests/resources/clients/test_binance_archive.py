"""BinanceArchiveClient against the replay server: URLs, checksum verification, 404s, retries."""

from __future__ import annotations

import hashlib
import time

import pytest

from midfreq_resources.clients.binance_archive import (
    ArchiveFile,
    BinanceArchiveClient,
    ChecksumError,
    parse_checksum,
)
from midfreq_resources.clients.http_retry import NotFoundError, TransientSourceError
from midfreq_resources.replay.server import ReplayServer

DAY = ArchiveFile("spot", "klines", "BTCUSDT", "1h", "daily", "2023-03-01")
OTHER_DAY = ArchiveFile("spot", "klines", "BTCUSDT", "1h", "daily", "2023-03-02")
MONTH = ArchiveFile("spot", "klines", "BTCUSDT", "1h", "monthly", "2023-02")
DELISTED = ArchiveFile("spot", "klines", "LUNAUSDT", "1h", "daily", "2023-03-01")


def client(server: ReplayServer, **kw) -> BinanceArchiveClient:
    return BinanceArchiveClient(
        base_url=server.base_url + "/binance", backoff_base_s=0.001, backoff_max_s=0.01, timeout_s=10, **kw
    )


# ----------------------------------------------------------------------------- URLs
def test_urls_follow_the_archive_layout():
    c = BinanceArchiveClient(base_url="https://data.binance.vision/")
    assert c.url(DAY) == (
        "https://data.binance.vision/data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2023-03-01.zip"
    )
    assert c.url(MONTH).endswith("/data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2023-02.zip")
    funding = ArchiveFile("futures/um", "fundingRate", "BTCUSDT", None, "monthly", "2024-01")
    assert c.url(funding) == (
        "https://data.binance.vision/data/futures/um/monthly/fundingRate/BTCUSDT/"
        "BTCUSDT-fundingRate-2024-01.zip"
    )
    premium = ArchiveFile("futures/cm", "premiumIndexKlines", "BTCUSD_PERP", "1m", "daily", "2024-01-02")
    assert c.url(premium).endswith(
        "/data/futures/cm/daily/premiumIndexKlines/BTCUSD_PERP/1m/BTCUSD_PERP-1m-2024-01-02.zip"
    )


def test_base_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MIDFREQ_BINANCE_ARCHIVE_URL", "http://127.0.0.1:9/binance")
    assert BinanceArchiveClient().url(DAY).startswith("http://127.0.0.1:9/binance/data/spot/daily/")
    monkeypatch.delenv("MIDFREQ_BINANCE_ARCHIVE_URL")
    assert BinanceArchiveClient().root_url == "https://data.binance.vision"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"symbol": "../../etc"},
        {"symbol": "btcusdt"},
        {"interval": "1h/../x"},
        {"period": "2023-3-1"},
        {"freq": "weekly"},
        {"market": "margin"},
        {"dataset": "fundingRate"},
    ],
)
def test_archive_file_rejects_what_should_never_reach_a_url(kwargs: dict):
    fields = {
        "market": "spot",
        "dataset": "klines",
        "symbol": "BTCUSDT",
        "interval": "1h",
        "freq": "daily",
        "period": "2023-03-01",
        **kwargs,
    }
    with pytest.raises(ValueError):
        ArchiveFile(**fields)


def test_funding_rate_is_monthly_only_and_has_no_interval():
    with pytest.raises(ValueError, match="monthly only"):
        ArchiveFile("futures/um", "fundingRate", "BTCUSDT", None, "daily", "2024-01-01")
    with pytest.raises(ValueError, match="no interval"):
        ArchiveFile("futures/um", "fundingRate", "BTCUSDT", "8h", "monthly", "2024-01")


# ----------------------------------------------------------------------------- checksum files
def test_parse_checksum_with_and_without_trailing_newline():
    digest = "ab" * 32
    assert parse_checksum(f"{digest}  X.zip".encode(), "X.zip", "u") == digest
    assert parse_checksum(f"{digest.upper()}  X.zip\n".encode(), "X.zip", "u") == digest


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>oops</html>", "not a '<sha256>  <file name>' checksum line"),
        (("ab" * 32 + "  Y.zip").encode(), "checksum is for 'Y.zip', not 'X.zip'"),
        (b"", "not a"),
    ],
)
def test_parse_checksum_rejects_garbage(body: bytes, message: str):
    with pytest.raises(ChecksumError, match=message):
        parse_checksum(body, "X.zip", "u")


# ----------------------------------------------------------------------------- downloads
def test_download_returns_bytes_matching_the_published_sha256(replay_env: ReplayServer):
    data = BinanceArchiveClient(backoff_base_s=0.001).download(
        DAY
    )  # base URL from MIDFREQ_BINANCE_ARCHIVE_URL
    published = (replay_env.root / "binance" / DAY.path).with_suffix(".zip.CHECKSUM").read_text().split()[0]
    assert hashlib.sha256(data).hexdigest() == published
    assert data[:2] == b"PK"


def test_checksum_mismatch_is_fetched_once_more(replay_env: ReplayServer):
    replay_env.corrupt(r"BTCUSDT-1h-2023-03-01\.zip$", times=1)
    data = client(replay_env).download(DAY)
    assert (
        hashlib.sha256(data).hexdigest()
        == hashlib.sha256((replay_env.root / "binance" / DAY.path).read_bytes()).hexdigest()
    )
    assert replay_env.count(r"BTCUSDT-1h-2023-03-01\.zip$") == 2


def test_persistent_checksum_mismatch_fails_with_a_clear_error(replay_env: ReplayServer):
    replay_env.corrupt(r"BTCUSDT-1h-2023-03-01\.zip$", times=None)
    with pytest.raises(
        ChecksumError, match=r"checksum mismatch for BTCUSDT-1h-2023-03-01\.zip .*after 2 attempts"
    ):
        client(replay_env).download(DAY)
    assert replay_env.count(r"BTCUSDT-1h-2023-03-01\.zip$") == 2


def test_wrong_checksum_file_fails_too(replay_env: ReplayServer):
    replay_env.corrupt(r"BTCUSDT-1h-2023-03-01\.zip\.CHECKSUM$", times=None)
    batch = client(replay_env).download_many([DAY, OTHER_DAY])
    assert list(batch.ok) == [OTHER_DAY]
    assert "checksum mismatch for BTCUSDT-1h-2023-03-01.zip" in batch.failed[DAY]
    assert "file discarded" in batch.failed[DAY]


def test_404_is_a_missing_file_not_a_failure(replay_env: ReplayServer):
    with pytest.raises(NotFoundError):
        client(replay_env).download(DELISTED)
    batch = client(replay_env).download_many([DAY, DELISTED, MONTH])
    assert set(batch.ok) == {DAY, MONTH}
    assert list(batch.missing) == [DELISTED] and not batch.failed
    assert "LUNAUSDT-1h-2023-03-01.zip" in batch.missing[DELISTED]


def test_5xx_is_retried(replay_env: ReplayServer):
    replay_env.force(r"BTCUSDT-1h-2023-03-01\.zip$", 503, times=2)
    replay_env.force(r"BTCUSDT-1h-2023-03-02\.zip\.CHECKSUM$", 500, times=1)
    batch = client(replay_env).download_many([DAY, OTHER_DAY])
    assert set(batch.ok) == {DAY, OTHER_DAY} and not batch.failed
    assert replay_env.count(r"BTCUSDT-1h-2023-03-01\.zip$", status=503) == 2
    assert replay_env.count(r"BTCUSDT-1h-2023-03-01\.zip$", status=200) == 1


def test_5xx_that_persists_fails_only_that_file(replay_env: ReplayServer):
    replay_env.force(r"BTCUSDT-1h-2023-03-01\.zip$", 502, times=None)
    with pytest.raises(TransientSourceError, match="HTTP 502"):
        client(replay_env, max_attempts=3).download(DAY)
    batch = client(replay_env, max_attempts=3).download_many([DAY, OTHER_DAY])
    assert list(batch.ok) == [OTHER_DAY]
    assert "HTTP 502" in batch.failed[DAY] and "BTCUSDT-1h-2023-03-01.zip" in batch.failed[DAY]


def test_truncated_zip_is_caught_by_the_checksum_and_refetched(replay_env: ReplayServer):
    replay_env.truncate(r"BTCUSDT-1h-2023-03-01\.zip$", times=1)
    batch = client(replay_env).download_many([DAY])
    assert list(batch.ok) == [DAY]
    assert replay_env.count(r"BTCUSDT-1h-2023-03-01\.zip$") == 2


def test_many_files_are_fetched_concurrently_under_latency(replay_env: ReplayServer):
    days = [ArchiveFile("spot", "klines", "BTCUSDT", "1h", "daily", f"2023-03-{d:02d}") for d in range(1, 32)]
    with replay_env.faulted(latency_ms=50):
        t0 = time.perf_counter()
        batch = client(replay_env, max_concurrency=16).download_many(days)
        elapsed = time.perf_counter() - t0
    assert len(batch.ok) == 31
    assert elapsed < 31 * 2 * 0.05  # serial would be >= 3.1 s
