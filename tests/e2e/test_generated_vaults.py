"""`midfreq pipeline` through the real CLI on GENERATED ETH, BTC and LP pools (the bundled recording
has none): each vault counts in its own asset, price exposure is accounted, a failing source
stops only what depends on it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from midfreq_resources.io.lake import read_parquet

pytestmark = pytest.mark.slow

LP = "00000000-0000-4000-8000-0000000e0005"
LIDO = "747c1d2a-c668-4682-b9f9-296708a3dd90"
WSTETH_AAVE = "00000000-0000-4000-8000-0000000e0002"
WETH_AAVE = "00000000-0000-4000-8000-0000000e0001"


def frames(lake, *key: str) -> pd.DataFrame:
    folder = lake.joinpath(*key)
    return pd.concat([read_parquet(f) for f in sorted(folder.glob("*.parquet"))], ignore_index=True)


def test_every_vault_of_the_corpus_runs_over_the_range_it_covers(generated_run):
    out = generated_run["stdout"]
    assert generated_run["returncode"] == 0, out[-4000:] + generated_run["stderr"][-4000:]
    assert "corpus DefiLlama: 9 pool histories, 2024-06-06..2024-09-13" in out
    assert "no binance.yaml: no klines collected" in out  # a missing source is reported, not fatal
    for vault in ("btc_generated", "eth_generated", "usd_lp"):
        assert f"== {vault} backtest report 'default'" in out
        assert f"== {vault}_decisions: 2024-06-06...2024-09-13" in out
    assert "0 failed, 0 skipped" in out


def test_eth_vault_counts_in_eth(generated_run):
    lake = generated_run["lake"]
    adjusted = frames(lake, "eth_generated", "adjusted_yields").set_index(["date", "pool"])
    day = pd.Timestamp("2024-08-01")
    lido = adjusted.loc[(day, LIDO)]
    assert lido["peg_yield"] == pytest.approx(
        (1 - 0.998) / 0.998 * 365 / 30
    )  # stETH at 0.998 ETH, not vs 1 USD
    assert lido["reference_price"] == pytest.approx(float(generated_run["prices"]["coingecko:ethereum"][56]))
    assert adjusted.loc[(day, WSTETH_AAVE), "underlying_apy"] == pytest.approx(
        adjusted.loc[(day, LIDO), "apy"]
    )
    assert not adjusted["price_exposed"].any()
    weights = frames(lake, "eth_generated", "rebalance_weights")
    wealth = weights.drop_duplicates("date")["wealth"]
    assert wealth.iloc[0] == 500.0 and 495 < wealth.iloc[-1] < 520  # ETH, not dollars
    gap = weights[
        (weights["pool"] == WETH_AAVE) & weights["date"].isin(pd.to_datetime(["2024-07-16", "2024-07-17"]))
    ]
    if (gap["holding_usd"] > 0).any():  # a held pool missing two days is kept, not sold
        assert gap["in_gap"].all() and (gap["trade_usd"] == 0).all()
    report = read_parquet(lake / "eth_generated" / "backtest_report" / "default.parquet")
    points = report[report["kind"] == "grid_point"]
    assert len(points) == 2 and points["log_growth"].between(-0.05, 0.1).all()
    assert (points["price_pnl"] == 0).all()  # every leg pegged to ETH
    assert (report["final_wealth"].dropna() < 600).all()


def test_lp_with_a_volatile_leg_is_accounted(generated_run):
    lake = generated_run["lake"]
    excluded = frames(lake, "universe_exclusions")
    reasons = set(excluded.loc[excluded["vault"] == "usd_lp", "reason"])
    assert "price exposure: no price coin for wbtc in yields.tokens" in reasons
    adjusted = frames(lake, "usd_lp", "adjusted_yields")
    lp = adjusted[adjusted["pool"] == LP].set_index("date").sort_index()
    weth = np.asarray(generated_run["prices"]["ethereum:0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"])
    i = 70
    expected = math.log(0.5 * weth[i] / weth[i - 1] + 0.5)  # USDC is pegged to USD: half the WETH move
    assert lp.loc[pd.Timestamp("2024-06-06") + pd.Timedelta(days=i), "price_return"] == pytest.approx(
        expected
    )
    assert lp["price_exposed"].all()
    late = lp.iloc[60:]
    assert late["flag_il_missing"].all() and late["flag_il_estimated"].any()  # il7d stops halfway
    np.testing.assert_allclose(lp.iloc[:50]["il_annual"], -0.0005 * 52)  # il7d 0.05% a week while reported
    report = read_parquet(lake / "usd_lp" / "backtest_report" / "default.parquet")
    points = report[report["kind"] == "grid_point"]
    assert (points["price_pnl"] != 0).all() and (points["il_drag"] > 0).all()
    assert points["il_data_missing_share"].between(0.2, 0.8).all()
    assert (points["base_rate"] == 0.04).all()
    assert {"best_trailing_apy@cost-0.002", "best_trailing_apy_unconstrained@cost-0.0005"} <= set(
        report["name"]
    )
    html = (lake / "usd_lp" / "backtest_report" / "default.html").read_text()
    assert "il_data_missing_share" in html and "price_pnl" in html


def test_btc_vault_counts_in_btc(generated_run):
    weights = frames(generated_run["lake"], "btc_generated", "rebalance_weights")
    wealth = weights.drop_duplicates("date")["wealth"]
    assert wealth.iloc[0] == 20.0 and 19.9 < wealth.iloc[-1] < 20.2
    gas = weights.drop_duplicates("date")["gas_usd"]
    assert gas.max() < 0.01  # $10 of gas is ~0.00015 BTC, not 10 BTC


def test_a_failing_source_fails_the_run_but_not_the_yield_chain(pipeline_cli):
    run = pipeline_cli("--end", "2024-07-20", vaults=["usd_lp"], broken_prices=True)
    out = run["stdout"]
    assert run["returncode"] == 1, out[-3000:]
    assert "FAILED: nightly_refresh" in out and "token_prices" in out  # the prices step failed, named
    assert "== usd_lp backtest report 'default'" in out  # ran without prices (flagged)
    assert "== usd_lp_decisions: 2024-06-06...2024-07-20" in out
    assert "1 failed, 0 skipped" in out
