"""DefiLlamaProClient against the replay server: paid endpoints, no key, bad key, the key never in a message."""

import logging

import pytest

from midfreq_resources.clients.defillama_pro import DefiLlamaProClient
from midfreq_resources.clients.http_retry import MalformedResponseError, SourceError
from midfreq_resources.replay.server import REPLAY_PRO_API_KEY

POOL = "aa70268e-4b52-42bf-a116-608b370f9501"


def client(replay_env, key=REPLAY_PRO_API_KEY, **kw) -> DefiLlamaProClient:
    return DefiLlamaProClient(
        base_url=f"{replay_env.base_url}/defillama/pro",
        api_key=key,
        key_from_env=False,
        max_attempts=2,
        backoff_base_s=0.01,
        backoff_max_s=0.02,
        **kw,
    )


def test_pools_borrow_and_history(replay_env):
    pro = client(replay_env)
    assert [r["pool"] for r in pro.pools_borrow()] == [POOL]
    batch = pro.lend_borrow_charts([POOL, "00000000-0000-0000-0000-000000000000"])
    assert len(batch.ok[POOL]) == 1022 and batch.ok["00000000-0000-0000-0000-000000000000"] == []
    assert not batch.failed


def test_no_key_requests_nothing(replay_env, monkeypatch):
    monkeypatch.delenv("MIDFREQ_DEFILLAMA_PRO_API_KEY", raising=False)
    pro = DefiLlamaProClient(base_url=f"{replay_env.base_url}/defillama/pro")
    assert not pro.has_key
    with pytest.raises(SourceError, match="no DefiLlama API key"):
        pro.pools_borrow()
    assert replay_env.count("/pro/") == 0


def test_key_from_the_environment(replay_env):
    assert DefiLlamaProClient(base_url=f"{replay_env.base_url}/defillama/pro").key == REPLAY_PRO_API_KEY


def test_a_wrong_key_fails_and_neither_key_is_in_the_message_or_the_log(replay_env, caplog):
    pro = client(replay_env, key="secret-123")
    with caplog.at_level(logging.INFO, logger="httpx"), pytest.raises(SourceError) as info:
        pro.pools_borrow()
    assert "401" in str(info.value) and "secret-123" not in str(info.value) and "<key>" in str(info.value)
    assert "secret-123" not in (info.value.url or "")
    assert caplog.records and all("secret-123" not in r.getMessage() for r in caplog.records)


def test_the_free_host_answers_402(replay_env):
    import httpx

    for path in (f"/defillama/yields/chartLendBorrow/{POOL}", "/defillama/yields/poolsBorrow"):
        response = httpx.get(replay_env.base_url + path)
        assert response.status_code == 402 and "Payment Required" in response.text


def test_faults_are_retried_and_bad_bodies_fail_the_pool(replay_env):
    replay_env.force(r"/chartLendBorrow/", 503, times=1)
    assert POOL in client(replay_env).lend_borrow_charts([POOL]).ok
    replay_env.force(
        r"/chartLendBorrow/",
        200,
        body={"status": "success", "data": [{"timestamp": "x", "totalSupplyUsd": 1, "totalBorrowUsd": 1}]},
        times=1,
    )
    failed = client(replay_env).lend_borrow_charts([POOL]).failed
    assert "not an ISO date" in failed[POOL] and REPLAY_PRO_API_KEY not in failed[POOL]
    replay_env.force(r"/poolsBorrow$", 200, body={"data": "nope"}, times=1)
    with pytest.raises(MalformedResponseError, match="'data' is str"):
        client(replay_env).pools_borrow()
