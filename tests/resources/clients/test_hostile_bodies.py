"""What a hostile or broken server sends, against the real clients and the replay server: bounded
time (an overall deadline per request) and bounded memory (a size limit per endpoint)."""

from __future__ import annotations

import datetime as dt
import json
import resource
import time
import zlib

import pytest

from midfreq_assets.domain.ingest.archive_files import ArchiveFile
from midfreq_resources.clients.binance_archive import BinanceArchiveClient
from midfreq_resources.clients.defillama import DefiLlamaClient
from midfreq_resources.clients.defillama_coins import DefiLlamaCoinsClient
from midfreq_resources.clients.http_retry import (
    DeadlineExceededError,
    MalformedResponseError,
    ResponseTooLargeError,
)

POOL = "f981a304-bb6c-45b8-b0c5-fd2f515ad23a"
CHART = rf"/chart/{POOL}$"
USDC = "ethereum:0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"


def yields(replay_env, **kw) -> DefiLlamaClient:
    return DefiLlamaClient(
        base_url=f"{replay_env.base_url}/defillama/yields", backoff_base_s=0.01, backoff_max_s=0.02, **kw
    )


def test_drip_feed_is_abandoned_within_the_deadline(replay_env):
    # one byte every 50 ms: every read gets data (the 1 s read timeout never fires); the whole
    # 50 kB chart would take ~40 min
    replay_env.drip(CHART, interval_ms=50)
    client = yields(replay_env, timeout_s=1.0, request_deadline_s=1.5, max_attempts=2)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError, match=r"not complete after 1\.\d s \(deadline 1\.5 s"):
        client.chart(POOL)
    elapsed = time.monotonic() - started
    assert elapsed < 2 * (1.5 + 1.0) + 0.5  # max_attempts x (deadline + one read timeout) + backoff
    assert replay_env.count(CHART) == 2  # retried once (transient), then given up


def test_drip_feed_costs_at_most_the_total_deadline_whatever_max_attempts(replay_env):
    # the replay server's drip mode (midfreq replay --drip-rate 1 --drip-interval-ms 50): five attempts of
    # 1.5 s each would be 7.5 s and more; the request's total deadline (retries and backoffs included)
    # stops it at 2 s, the last attempt cut to the time left
    client = yields(replay_env, timeout_s=1.0, request_deadline_s=1.5, total_deadline_s=2.0, max_attempts=5)
    with replay_env.faulted(drip_rate=1.0, drip_interval_ms=50):
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError, match=r"total deadline is 2 s, retries included"):
            client.chart(POOL)
        elapsed = time.monotonic() - started
    assert elapsed < 2.0 + 0.5  # the total deadline (each chunk arrives well within the read timeout)
    assert 2 <= replay_env.count(CHART) < 5


def test_drip_once_heals_on_retry(replay_env):
    replay_env.drip(CHART, interval_ms=50, times=1)
    client = yields(replay_env, timeout_s=1.0, request_deadline_s=0.5, max_attempts=2)
    assert len(client.chart(POOL)) == 365


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "close-delimited"])
def test_oversize_body_is_refused_without_buffering_it(replay_env, announce):
    replay_env.oversize(CHART, size_bytes=300 * 2**20, announce_length=announce)  # 300 MiB
    client = yields(replay_env, max_chart_mb=4, max_attempts=3)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ResponseTooLargeError, match=r"limit of 4,194,304 bytes"):
        client.chart(POOL)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 64  # never the 300 MiB
    assert replay_env.count(CHART) == 1  # a size violation is not retried


def test_oversize_pools_snapshot(replay_env):
    replay_env.oversize(r"/pools$", size_bytes=50 * 2**20, announce_length=False)
    with pytest.raises(ResponseTooLargeError, match="/pools"):
        yields(replay_env, max_pools_mb=1).pools()


def test_html_page_with_status_200_is_retried_then_named(replay_env):
    page = "<!DOCTYPE html><html><body>Just a moment... (cloudflare)</body></html>"
    replay_env.force(CHART, 200, body=page, content_type="text/html", times=None)
    with pytest.raises(MalformedResponseError, match="HTML/XML page"):
        yields(replay_env, max_attempts=3).chart(POOL)
    assert replay_env.count(CHART) == 3


def test_xml_error_page_once_heals(replay_env):
    replay_env.force(CHART, 200, body="<?xml version='1.0'?><Error>SlowDown</Error>", times=1)
    assert len(yields(replay_env, max_attempts=3).chart(POOL)) == 365


def _gzip_bomb(size: int) -> bytes:
    """``size`` bytes of spaces, gzip-compressed chunk by chunk (never held inflated here)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * 2**20
    return b"".join(packer.compress(block) for _ in range(size // 2**20)) + packer.flush()


def test_gzip_bomb_is_bounded_by_the_decoded_size(replay_env):
    bomb = _gzip_bomb(512 * 2**20)  # ~500 kB on the wire, 512 MiB decoded
    replay_env.force(
        CHART,
        200,
        body=bomb,
        headers={"Content-Encoding": "gzip"},
        content_type="application/json",
        times=None,
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ResponseTooLargeError, match="limit of 2,097,152 bytes"):
        yields(replay_env, max_chart_mb=2).chart(POOL)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024 < 64  # MB, not 512


def test_gzip_body_within_the_limit_is_decoded(replay_env):
    import gzip

    raw = json.dumps({"status": "success", "data": []}).encode()
    replay_env.force(
        CHART,
        200,
        body=gzip.compress(raw),
        headers={"Content-Encoding": "gzip"},
        content_type="application/json",
        times=None,
    )
    assert yields(replay_env).chart(POOL) == []


def test_unknown_content_encoding_is_refused(replay_env):
    replay_env.force(CHART, 200, body=b"\x00\x01", headers={"Content-Encoding": "zstd"}, times=None)
    with pytest.raises(MalformedResponseError, match="unsupported Content-Encoding 'zstd'"):
        yields(replay_env, max_attempts=1).chart(POOL)


def test_coins_oversize_fails_the_batch_with_the_reason(replay_env):
    replay_env.oversize(r"/coins/chart/", size_bytes=20 * 2**20)
    client = DefiLlamaCoinsClient(backoff_base_s=0.01, max_response_mb=1)
    result = client.daily_prices([USDC], dt.date(2025, 1, 1), dt.date(2025, 1, 2))
    assert "ResponseTooLargeError" in result.failed[USDC]


def test_binance_oversize_zip_and_checksum(replay_env):
    file = ArchiveFile("spot", "klines", "BTCUSDT", "1h", "daily", "2025-01-01")
    replay_env.oversize(r"\.CHECKSUM$", size_bytes=2**20)
    client = BinanceArchiveClient(backoff_base_s=0.01)
    batch = client.download_many([file])
    assert "ResponseTooLargeError" in batch.failed[file] and "4,096 bytes" in batch.failed[file]
