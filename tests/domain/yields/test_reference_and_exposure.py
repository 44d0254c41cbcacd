"""Yields in the vault's own asset: composition-weighted underlying yield, usd/eth/btc pricing, and
pools with legs that are not pegged to the reference asset (refused, or accounted)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.config.tokens import load_token_registry
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.ingest.universe import static_screen
from midfreq_assets.domain.yields.adjusted import PoolTokens, adjusted_yield_panel, reference_pricing
from midfreq_assets.domain.yields.config import YieldAdjustmentConfig
from midfreq_assets.domain.yields.exposure import ReferencePricing, il_estimate, pool_legs

DAYS = pd.date_range("2025-01-01", periods=30, freq="D")
TOKENS = load_token_registry()
ETH, BTC = "coingecko:ethereum", "coingecko:bitcoin"
STETH, WBTC, USDC, SUSDS = "ethereum:0xsteth", "ethereum:0xwbtc", "ethereum:0xusdc", "ethereum:0xsusds"
WETH, FLUID = "ethereum:0xweth", "ethereum:0xfluid"


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def pool_rows(pool: str, apy: float, apy_reward: float = 0.0, il7d: float = np.nan) -> list[dict]:
    return [
        dict(date=d, pool=pool, apy=apy, apy_base=apy - apy_reward, apy_reward=apy_reward, il7d=il7d)
        for d in DAYS
    ]


def price_rows(coin: str, values) -> list[dict]:
    return [dict(date=d, coin=coin, price=float(v)) for d, v in zip(DAYS, values, strict=True)]


def vault(asset: str, **extra: object) -> VaultConfig:
    base = {
        "name": f"{asset}_vault",
        "reference_asset": asset,
        "start_date": "2025-01-01",
        "chains": ["Ethereum"],
        "protocols": {"tier1": ["aave-v3", "uniswap-v3", "curve-dex"]},
    }
    return VaultConfig.model_validate({**base, **extra})


# -------------------------------------------------------------------------------- underlying yield


def test_underlying_yield_is_weighted_by_the_pools_composition():
    """(sUSDS, USDC) earns half of sUSDS's 6% (not 6%); Curve's APY already includes it; configured
    reserve shares replace 1/n."""
    hist = frame(
        pool_rows("mixed", 0.02)
        + pool_rows("curve", 0.02)
        + pool_rows("weighted", 0.02)
        + pool_rows("sky", 0.06)
        + pool_rows("three", 0.02)
    )
    cfg = YieldAdjustmentConfig.model_validate(
        {
            "tokens": {"susds": {"coin": SUSDS, "peg": None}, "usdc": {"coin": USDC, "peg": 1.0}},
            "underlying_yield": {"pools": {"susds": "sky"}, "pool_weights": {"weighted": [0.8, 0.2]}},
        }
    )
    tokens = {
        "mixed": PoolTokens(underlying_symbols=("susds", "usdc"), project="aave-v3"),
        "curve": PoolTokens(underlying_symbols=("susds", "usdc"), project="curve-dex"),
        "weighted": PoolTokens(
            underlying_symbols=("susds", "usdc"), project="balancer-v2", weights=(0.8, 0.2)
        ),
        "three": PoolTokens(underlying_symbols=("susds", "usdc", "usdt"), project="aave-v3"),
    }
    out, _ = adjusted_yield_panel(
        hist, tokens, frame(price_rows(USDC, [1.0] * 30)), cfg, pools=["mixed", "curve", "weighted", "three"]
    )
    u = out.groupby("pool")["underlying_apy"].mean()
    assert u["mixed"] == pytest.approx(0.03)
    assert u["curve"] == 0.0
    assert u["weighted"] == pytest.approx(0.8 * 0.06)
    assert u["three"] == pytest.approx(0.02)
    assert cfg.underlying_yield.included_in_apy == ["curve-dex", "convex-finance"]


def test_configured_shares_must_match_the_underlyings():
    with pytest.raises(ValueError, match="sum to 1"):
        YieldAdjustmentConfig.model_validate({"underlying_yield": {"pool_weights": {"p": [0.5, 0.6]}}})
    from midfreq_assets.domain.yields.adjusted import resolve_pool_tokens

    cfg = YieldAdjustmentConfig.model_validate({"underlying_yield": {"pool_weights": {"p": [0.5, 0.3, 0.2]}}})
    meta = frame(
        [
            dict(
                date=DAYS[0],
                pool="p",
                chain="Ethereum",
                project="x",
                reward_tokens=None,
                underlying_symbols=["usdc", "usdt"],
            )
        ]
    )
    with pytest.raises(ValueError, match=r"pool_weights\.p: 3 shares for 2 underlying"):
        resolve_pool_tokens(meta, cfg)


# -------------------------------------------------------------------------------- usd / eth / btc


def test_usd_vault_prices_are_the_usd_quotes():
    ref = reference_pricing(vault("usd"), TOKENS)
    assert ref == ReferencePricing("usd", None, TOKENS.pegged("usd")) and "usdc" in ref.pegged
    cfg = YieldAdjustmentConfig.model_validate(
        {"tokens": {"usdc": {"coin": USDC, "peg": 1.0}}, "peg": {"enabled": True, "horizon_days": 30}}
    )
    out, _ = adjusted_yield_panel(
        frame(pool_rows("u", 0.05)),
        {"u": PoolTokens(underlying_symbols=("usdc",))},
        frame(price_rows(USDC, [0.998] * 30)),
        cfg,
        reference=ref,
    )
    assert out["peg_yield"].iloc[5] == pytest.approx((1 - 0.998) / 0.998 * 365 / 30)


def test_eth_vault_prices_steth_against_eth_and_haircuts_rewards_in_eth():
    """stETH at 0.998 ETH is cheap whatever ETH's dollar price does; a reward token flat in USD while
    ETH doubles has lost half its value in ETH."""
    ref = reference_pricing(vault("eth"), TOKENS)
    assert ref.coin == ETH and {"steth", "weth", "wsteth", "reth"} <= ref.pegged
    eth_usd = np.linspace(2000, 4000, 30)
    px = frame(price_rows(ETH, eth_usd) + price_rows(STETH, 0.998 * eth_usd) + price_rows(FLUID, [5.0] * 30))
    cfg = YieldAdjustmentConfig.model_validate(
        {
            "tokens": {"steth": {"coin": STETH, "peg": 1.0}},
            "peg": {"enabled": True, "horizon_days": 30},
            "reward_haircut": {"method": "min_max_ratio", "lookback_days": 30, "min_observations": 2},
        }
    )
    hist = frame(pool_rows("st", 0.03, apy_reward=0.01))
    out, report = adjusted_yield_panel(
        hist, {"st": PoolTokens(reward_coins=(FLUID,), underlying_symbols=("steth",))}, px, cfg, reference=ref
    )
    last = out.iloc[-1]
    assert last["peg_yield"] == pytest.approx((1 - 0.998) / 0.998 * 365 / 30)
    assert last["reward_discount"] == pytest.approx(2000 / 4000)  # 5/4000 over 5/2000
    assert last["price_return"] == 0.0 and not last["price_exposed"]  # stETH is pegged to ETH
    usd_view, _ = adjusted_yield_panel(
        hist, {"st": PoolTokens(reward_coins=(FLUID,), underlying_symbols=("steth",))}, px, cfg
    )  # the same data read as a USD vault
    # read in USD (the old behaviour) stETH looks 4000x rich against a 1.0 peg and the reward flat
    assert usd_view["reward_discount"].iloc[-1] == 1.0
    assert usd_view["peg_yield"].iloc[-1] == pytest.approx(-cfg.peg.max_abs_deviation * 365 / 30)
    assert report["reference_price_missing_days"] == 0


def test_btc_vault_divides_by_btc_and_a_missing_btc_price_is_not_guessed():
    ref = reference_pricing(vault("btc"), TOKENS)
    assert ref.coin == BTC and {"wbtc", "cbbtc", "tbtc"} <= ref.pegged
    btc = np.full(30, 60000.0)
    btc[10:20] = np.nan  # ten days without the reference price (beyond the 3-day fill)
    px = frame(
        [r for r in price_rows(BTC, btc) if np.isfinite(r["price"])] + price_rows(WBTC, [59700.0] * 30)
    )
    cfg = YieldAdjustmentConfig.model_validate(
        {"tokens": {"wbtc": {"coin": WBTC, "peg": 1.0}}, "peg": {"enabled": True, "horizon_days": 30}}
    )
    out, report = adjusted_yield_panel(
        frame(pool_rows("b", 0.01)), {"b": PoolTokens(underlying_symbols=("wbtc",))}, px, cfg, reference=ref
    )
    out = out.set_index("date")
    assert out.loc[DAYS[5], "peg_yield"] == pytest.approx((1 - 0.995) / 0.995 * 365 / 30)
    assert out.loc[DAYS[15], "flag_peg_price_missing"] and out.loc[DAYS[15], "peg_yield"] == 0.0
    assert report["reference_price_missing_days"] == 7  # 10 missing, 3 carried


# -------------------------------------------------------------------------------- price exposure


def test_pools_with_legs_not_pegged_to_the_reference_asset_are_refused_by_default():
    snap = frame(
        [
            dict(
                pool="lp", chain="Ethereum", project="uniswap-v3", symbol="WETH-USDC", underlying_tokens=None
            ),
            dict(pool="usd", chain="Ethereum", project="aave-v3", symbol="USDC", underlying_tokens=None),
            dict(
                pool="btc", chain="Ethereum", project="uniswap-v3", symbol="WBTC-USDC", underlying_tokens=None
            ),
        ]
    )
    allowed = ["usdc", "weth", "wbtc"]
    refused = static_screen(snap, vault("usd", underlying_tokens=allowed), TOKENS).set_index("pool")["reason"]
    assert refused["lp"] == "price exposure: weth not pegged to usd (allow_price_exposure is false)"
    assert pd.isna(refused["usd"])
    exposed = vault(
        "usd",
        underlying_tokens=allowed,
        allow_price_exposure=True,
        yields={"tokens": {"weth": {"coin": WETH, "peg": None}}},
    )
    reasons = static_screen(snap, exposed, TOKENS).set_index("pool")["reason"]
    assert pd.isna(reasons["lp"])
    assert reasons["btc"] == "price exposure: no price coin for wbtc in yields.tokens"
    # an ETH vault holding a USDC leg is exposed to the dollar
    eth = static_screen(snap.iloc[[0]], vault("eth", underlying_tokens=["weth", "usdc"]), TOKENS)
    assert eth["reason"].iloc[0] == "price exposure: usdc not pegged to eth (allow_price_exposure is false)"


def lp_setup(il7d: float = np.nan, missing: str = "estimate"):
    weth = 3000 * np.exp(np.cumsum(np.r_[0.0, np.random.default_rng(7).normal(0, 0.04, 29)]))
    px = frame(price_rows(WETH, weth) + price_rows(USDC, [1.0] * 30))
    cfg = YieldAdjustmentConfig.model_validate(
        {
            "tokens": {"weth": {"coin": WETH, "peg": None}, "usdc": {"coin": USDC, "peg": 1.0}},
            "impermanent_loss": {"missing": missing},
        }
    )
    ref = reference_pricing(vault("usd"), TOKENS)
    tokens = {"lp": PoolTokens(underlying_symbols=("weth", "usdc"), project="uniswap-v3")}
    out, _ = adjusted_yield_panel(frame(pool_rows("lp", 0.20, il7d=il7d)), tokens, px, cfg, reference=ref)
    return out.set_index("date"), weth


def test_lp_with_a_volatile_leg_moves_with_half_of_it_and_estimates_il_without_il7d():
    out, weth = lp_setup()
    k = weth[1:] / weth[:-1]
    np.testing.assert_allclose(out["price_return"].iloc[1:], np.log(0.5 * k + 0.5))
    assert out["price_exposed"].all()
    day = 20
    k7 = weth[day] / weth[day - 7]
    il7 = math.sqrt(k7) / (0.5 * k7 + 0.5) - 1.0  # 50/50 constant product
    row = out.loc[DAYS[day]]
    assert row["il_annual"] == pytest.approx(il7 * 52) and row["il_annual"] < 0
    assert row["flag_il_missing"] and row["flag_il_estimated"]
    assert row["adjusted_apy"] == pytest.approx(0.20 + il7 * 52)
    assert out.loc[DAYS[3], "flag_il_estimated"] is np.False_  # no price 7 days back yet: flagged, 0
    assert out.loc[DAYS[3], "il_annual"] == 0.0 and out.loc[DAYS[3], "flag_il_missing"]


def test_il7d_when_present_and_flag_mode_charges_nothing_but_flags():
    out, _ = lp_setup(il7d=0.002)
    assert (out["il_annual"] == -0.002 * 52).all() and not out["flag_il_missing"].any()
    flagged, _ = lp_setup(missing="flag")
    assert (flagged["il_annual"] == 0.0).all() and flagged["flag_il_missing"].all()
    assert not flagged["flag_il_estimated"].any()


def test_a_missing_leg_price_is_flagged_and_booked_when_it_returns():
    legs = pool_legs(("weth", "usdc"), (0.5, 0.5), reference_pricing(vault("usd"), TOKENS), {"weth": WETH})
    assert legs == ((WETH, 0.5), (None, 0.5))
    prices = pd.DataFrame({WETH: [100.0, np.nan, np.nan, 121.0]}, index=DAYS[:4])
    from midfreq_assets.domain.yields.exposure import basket_log_return

    ret, missing = basket_log_return(prices, legs)
    assert missing.tolist() == [False, True, True, False]
    assert ret.iloc[1] == ret.iloc[2] == 0.0
    assert ret.iloc[3] == pytest.approx(math.log(0.5 * 1.21 + 0.5))  # the whole move, once
    assert il_estimate(prices, legs, 3).iloc[3] == pytest.approx(1.1 / 1.105 - 1.0)
