"""DefiLlamaCoinsClient against the replay server (127.0.0.1): parsing, batching, faults."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from midfreq_resources.clients.defillama_coins import (
    DefiLlamaCoinsClient,
    InvalidCoinIdError,
    batches,
    parse_coins_chart,
)
from midfreq_resources.clients.http_retry import InvalidRequestError, MalformedResponseError

USDC = "ethereum:0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
USDT = "ethereum:0xdAC17F958D2ee523a2206206994597C13D831ec7"
DAI = "ethereum:0x6B175474E89094C44Da98b954EedeAC495271d0F"
USDS = "ethereum:0xdC035D45d973E3EC169d2276DDab16f1e407384F"
SUSDS = "ethereum:0xa3931d71877C0E7a3148CB7Eb4463524FEc27fbD"
FLUID = "ethereum:0x6f40d4A6237C257fff2dB00FA0510DeEECd303eb"
UNKNOWN = "ethereum:0x000000000000000000000000000000000000dEaD"


def client(**kw: object) -> DefiLlamaCoinsClient:
    return DefiLlamaCoinsClient(backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=5, **kw)


def test_bundled_vault_batches_replay_and_return_the_requested_days(replay_env):
    from midfreq_assets.domain.config.project import load_project

    coins = load_project().price_coins()  # what token_prices asks for the bundled usd, eth and btc vaults
    assert {USDC, USDT, DAI, USDS, SUSDS, FLUID, "coingecko:ethereum", "coingecko:bitcoin"} <= set(coins)
    result = client().daily_prices(coins, dt.date(2025, 1, 10), dt.date(2025, 1, 20))
    assert result.missing == [] and result.failed == {}
    frame = result.frame()
    assert list(frame.columns) == ["date", "coin", "symbol", "price", "confidence", "timestamp"]
    assert frame["date"].dtype == "datetime64[ns]"
    assert frame["date"].min() == pd.Timestamp("2025-01-10") and frame["date"].max() == pd.Timestamp(
        "2025-01-20"
    )
    per_coin = frame.groupby("coin")["date"].nunique()
    assert per_coin[USDC] == 11
    assert per_coin[USDT] == 9  # the sample has no USDT point on 2025-01-14/15
    assert frame.loc[frame["coin"] == FLUID, "symbol"].unique().tolist() == ["FLUID"]
    usd = frame[frame["coin"].isin([USDC, USDT, DAI, USDS, SUSDS])]
    assert usd["price"].between(0.95, 1.1).all()
    batches_sent = len(batches(coins, 25, 190))
    assert replay_env.count("/defillama/coins/chart/") == batches_sent == 5  # 16 coins, one span


def test_unknown_coins_are_reported_missing(replay_env):
    result = client(max_coins_per_request=1).daily_prices(
        [USDC, UNKNOWN], dt.date(2025, 1, 1), dt.date(2025, 1, 3)
    )
    assert result.missing == [UNKNOWN]
    assert set(result.charts) == {USDC}


def test_coin_without_points_in_window_is_missing(replay_env):
    result = client(max_coins_per_request=1).daily_prices([USDS], dt.date(2024, 7, 1), dt.date(2024, 7, 5))
    assert result.missing == [USDS]  # USDS launched 2024-09-18


def test_long_ranges_are_split_into_bounded_spans(replay_env):
    result = client(max_coins_per_request=1, max_span_days=100).daily_prices(
        [USDC], dt.date(2024, 6, 6), dt.date(2025, 6, 5)
    )
    frame = result.frame()
    assert frame["date"].nunique() == 365 and not frame.duplicated(["coin", "date"]).any()
    assert replay_env.count("/defillama/coins/chart/") == 4
    assert "start=" in replay_env.requests[0].path and "period=1d" in replay_env.requests[0].path


def test_retries_429_and_5xx(replay_env):
    replay_env.force(r"/coins/chart/", 429, headers={"Retry-After": "0"}, times=1)
    replay_env.force(r"/coins/chart/", 503, times=1)
    result = client(max_coins_per_request=1).daily_prices([USDC], dt.date(2025, 1, 1), dt.date(2025, 1, 2))
    assert len(result.frame()) == 2
    assert replay_env.count("/defillama/coins/chart/") == 3


def test_html_page_fails_the_batch_after_retries_is_reported(replay_env):
    replay_env.force(
        r"/coins/chart/",
        200,
        body="<!DOCTYPE html><html>Cloudflare</html>",
        times=None,
        content_type="text/html",
    )
    result = client(max_coins_per_request=1).daily_prices(
        [USDC, DAI], dt.date(2025, 1, 1), dt.date(2025, 1, 2)
    )
    assert set(result.failed) == {USDC, DAI}
    assert "HTML" in result.failed[USDC]
    assert result.charts == {} and result.missing == []


def test_truncated_json_is_retried_then_reported(replay_env):
    replay_env.truncate(r"/coins/chart/", times=None)
    result = client(max_coins_per_request=1, max_attempts=3).daily_prices(
        [USDC], dt.date(2025, 1, 1), dt.date(2025, 1, 2)
    )
    assert "truncated JSON" in result.failed[USDC]
    assert len([r for r in replay_env.requests if "/coins/chart/" in r.path]) == 3  # retried like a 5xx


def test_truncated_json_once_heals_on_retry(replay_env):
    replay_env.truncate(r"/coins/chart/", times=1)
    result = client(max_coins_per_request=1).daily_prices([USDC], dt.date(2025, 1, 1), dt.date(2025, 1, 2))
    assert result.failed == {} and USDC in result.charts


def test_persistent_5xx_gives_up_after_max_attempts(replay_env):
    replay_env.force(r"/coins/chart/", 502, times=None)
    result = client(max_coins_per_request=1, max_attempts=3).daily_prices(
        [USDC], dt.date(2025, 1, 1), dt.date(2025, 1, 1)
    )
    assert "502" in result.failed[USDC]
    assert replay_env.count("/defillama/coins/chart/") == 3


def test_invalid_coin_ids_never_reach_a_url():
    with pytest.raises(InvalidCoinIdError):
        client().daily_prices(["ethereum:0xabc/../x"], dt.date(2025, 1, 1), dt.date(2025, 1, 1))
    with pytest.raises(InvalidCoinIdError):
        client().daily_prices(["USDC"], dt.date(2025, 1, 1), dt.date(2025, 1, 1))


def test_parse_validates_schema_and_matches_case_insensitively():
    body = {
        "coins": {
            USDC.lower(): {"symbol": "USDC", "confidence": 0.99, "prices": [{"timestamp": 1, "price": 1.0}]}
        }
    }
    assert set(parse_coins_chart(body, [USDC], "u")) == {USDC}
    with pytest.raises(MalformedResponseError, match="price"):
        parse_coins_chart({"coins": {USDC: {"prices": [{"timestamp": 1, "price": "n/a"}]}}}, [USDC], "u")
    with pytest.raises(MalformedResponseError):
        parse_coins_chart({"data": []}, [USDC], "u")
    with pytest.raises(MalformedResponseError):
        parse_coins_chart([1, 2], [USDC], "u")


def test_batches_respect_count_and_length():
    coins = [f"ethereum:0x{i:040x}" for i in range(10)]
    assert [len(b) for b in batches(coins, 3, 10_000)] == [3, 3, 3, 1]
    for b in batches(coins, 100, 190):
        assert len(",".join(b).replace(":", "%3A").replace(",", "%2C")) <= 190
    assert sum(len(b) for b in batches(coins, 100, 190)) == 10


def test_400_is_not_retried(replay_env):
    replay_env.force(r"/coins/chart/", 400, body=json.dumps("bad coins"), times=None)
    result = client(max_coins_per_request=1).daily_prices([USDC], dt.date(2025, 1, 1), dt.date(2025, 1, 1))
    assert InvalidRequestError.__name__ in result.failed[USDC]
    assert replay_env.count("/defillama/coins/chart/") == 1
