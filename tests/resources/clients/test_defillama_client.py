"""DefiLlama client against the replay server: retries, clear errors, one bad pool never sinks the rest."""

from __future__ import annotations

import json
import re
import time

import pytest

from midfreq_assets.domain.ingest.pool_ids import InvalidPoolIdError, validate_pool_id
from midfreq_resources.clients.defillama import DefiLlamaClient, parse_chart
from midfreq_resources.clients.http_retry import (
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    PaymentRequiredError,
    TransientSourceError,
)

POOL = "f981a304-bb6c-45b8-b0c5-fd2f515ad23a"
OTHER = "7e7821a2-3d20-4ae7-9c3d-04cd57904555"
CHART = rf"/chart/{POOL}$"


@pytest.fixture
def client(replay_env) -> DefiLlamaClient:
    return DefiLlamaClient(
        base_url=f"{replay_env.base_url}/defillama/yields",
        timeout_s=2.0,
        max_attempts=3,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
    )


def test_pools_and_chart_parse_recorded_data(client):
    pools = client.pools()
    assert len(pools) == 55
    assert {p.project for p in pools} == {"aave-v3", "morpho-blue", "fluid-lending", "euler-v2"}
    chart = client.chart(POOL)
    assert len(chart) == 365
    assert chart[0]["timestamp"].startswith("2024-06-06")


def test_429_with_retry_after_is_retried_and_honoured(client, replay_env):
    replay_env.force(CHART, 429, body="slow down", headers={"Retry-After": "0.3"}, times=2)
    started = time.perf_counter()
    assert len(client.chart(POOL)) == 365
    assert time.perf_counter() - started >= 0.55  # two waits of Retry-After, not the 10 ms backoff
    assert replay_env.count(CHART) == 3


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retried(client, replay_env, status):
    replay_env.force(CHART, status, body="upstream down", times=2)
    assert len(client.chart(POOL)) == 365
    assert replay_env.count(CHART) == 3


def test_retries_are_bounded(client, replay_env):
    replay_env.force(CHART, 503, body="down", times=None)
    with pytest.raises(TransientSourceError, match="503"):
        client.chart(POOL)
    assert replay_env.count(CHART) == 3


def test_html_error_page_is_named(client, replay_env):
    replay_env.force(
        CHART,
        200,
        body="<!DOCTYPE html><html><body>Cloudflare error</body></html>",
        content_type="text/html",
        times=None,
    )
    with pytest.raises(MalformedResponseError, match="HTML"):
        client.chart(POOL)


def test_402_plain_text(client, replay_env):
    replay_env.payment_required("/pools$")
    with pytest.raises(PaymentRequiredError, match="402"):
        client.pools()


def test_timeout_is_retried_then_reported(replay_env):
    slow_client = DefiLlamaClient(
        base_url=f"{replay_env.base_url}/defillama/yields", timeout_s=0.2, max_attempts=2, backoff_base_s=0.01
    )
    replay_env.slow(CHART, delay_ms=600)
    started = time.perf_counter()
    with pytest.raises(TransientSourceError, match="timeout"):
        slow_client.chart(POOL)
    assert 0.4 <= time.perf_counter() - started < 1.0  # two attempts of 0.2 s, then it gives up


def test_truncated_json_is_retried_a_bounded_number_of_times(client, replay_env):
    third = "04597889-bb52-4ae9-aafa-ba64e3d9c7c6"  # not POOL: an abandoned slow request may still log late
    replay_env.truncate(rf"/chart/{third}$", times=None)
    with pytest.raises(MalformedResponseError, match="truncated|invalid JSON"):
        client.chart(third)
    assert replay_env.count(rf"/chart/{third}$") == 3  # max_attempts, then a clear error


def test_truncated_once_heals_on_retry(client, replay_env):
    other = rf"/chart/{OTHER}$"  # not POOL: an abandoned slow request of an earlier test may still log late
    replay_env.truncate(other, times=1)
    assert len(client.chart(OTHER)) > 0
    assert replay_env.count(other) == 2


def test_envelope_without_data(client, replay_env):
    replay_env.force(CHART, 200, body={"status": "success"}, times=None)
    with pytest.raises(MalformedResponseError, match="no 'data' key"):
        client.chart(POOL)


def test_record_missing_apy_names_pool_and_field():
    body = {"status": "success", "data": [{"timestamp": "2024-01-01T23:01:00.000Z", "tvlUsd": 1.0}]}
    with pytest.raises(MalformedResponseError, match=rf"pool {POOL}.*record 0: apy: Field required"):
        parse_chart(body, POOL, "u")


def test_extra_keys_and_nulls_are_tolerated():
    row = {
        "timestamp": "2024-01-01T23:01:13.171Z",
        "tvlUsd": 5,
        "apy": 1.2,
        "apyBase": None,
        "apyReward": None,
        "il7d": None,
        "apyBase7d": None,
        "pricePerShare": 1.01,
        "brandNew": {"x": 1},
    }
    assert parse_chart({"status": "success", "data": [row]}, POOL, "u") == [row]


@pytest.mark.parametrize("bad", ["not-a-uuid", "../../etc/passwd", "f981a304bb6c46ba8e26", ""])
def test_malformed_pool_id_never_reaches_url(client, replay_env, bad):
    with pytest.raises(InvalidPoolIdError, match="not a UUID"):
        client.chart(bad)
    assert replay_env.count(rf"/chart/{re.escape(bad)}$") == 0
    with pytest.raises(InvalidPoolIdError):
        validate_pool_id(bad)


def test_400_invalid_config_id(replay_env):
    client = DefiLlamaClient(base_url=f"{replay_env.base_url}/defillama/yields")
    replay_env.force(CHART, 400, body=json.dumps("invalid configID!"), times=1)
    with pytest.raises(InvalidRequestError, match="invalid configID"):
        client.chart(POOL)


def test_404_is_not_found(replay_env):
    client = DefiLlamaClient(base_url=f"{replay_env.base_url}/defillama/nowhere")
    with pytest.raises(NotFoundError):
        client.pools()


def test_unknown_pool_has_empty_history(client):
    assert client.chart("00000000-0000-4000-8000-000000000000") == []


def test_batch_continues_past_failed_pools(client, replay_env):
    replay_env.force(CHART, 503, times=None)
    batch = client.charts([POOL, OTHER, "not-a-uuid"])
    assert set(batch.ok) == {OTHER}
    assert set(batch.failed) == {POOL, "not-a-uuid"}
    assert "503" in batch.failed[POOL]
    assert "not a UUID" in batch.failed["not-a-uuid"]


def test_concurrency_is_bounded(replay_env):
    client = DefiLlamaClient(base_url=f"{replay_env.base_url}/defillama/yields", max_concurrency=4)
    pools = [p.pool for p in client.pools()][:16]
    replay_env.set_faults(latency_ms=100)
    started = time.perf_counter()
    batch = client.charts(pools)
    elapsed = time.perf_counter() - started
    assert len(batch.ok) == 16
    assert elapsed >= 0.4 - 0.05  # 16 requests, 4 at a time, 100 ms each
    assert elapsed < 1.6  # but not one at a time
