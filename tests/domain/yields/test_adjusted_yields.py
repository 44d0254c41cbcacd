"""Adjusted-yield math: each component against its formula, flags for bad input, causality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from midfreq_assets.domain.yields.adjusted import (
    COMPONENT_COLUMNS,
    FLAG_COLUMNS,
    PoolTokens,
    adjusted_yield_panel,
    price_panel,
    resolve_pool_tokens,
)
from midfreq_assets.domain.yields.config import YieldAdjustmentConfig

DAYS = pd.date_range("2025-01-01", periods=40, freq="D")
REWARD = "ethereum:0xreward"
USDC = "ethereum:0xusdc"
SUSDS = "ethereum:0xsusds"
P_REWARD, P_USDC, P_SUSDS, P_SKY = "pool-reward", "pool-usdc", "pool-susds", "pool-sky"


def history(days: pd.DatetimeIndex = DAYS, **overrides: float) -> pd.DataFrame:
    rows = []
    for d in days:
        rows.append(dict(date=d, pool=P_REWARD, apy=0.08, apy_base=0.05, apy_reward=0.03, il7d=np.nan))
        rows.append(dict(date=d, pool=P_USDC, apy=0.05, apy_base=0.05, apy_reward=0.0, il7d=-0.001))
        rows.append(dict(date=d, pool=P_SUSDS, apy=0.01, apy_base=0.01, apy_reward=0.0, il7d=np.nan))
        rows.append(dict(date=d, pool=P_SKY, apy=0.065, apy_base=0.065, apy_reward=0.0, il7d=np.nan))
    frame = pd.DataFrame(rows)
    for key, value in overrides.items():
        frame[key] = value
    return frame


def prices(
    reward: list[float] | None = None, usdc: list[float] | None = None, days: pd.DatetimeIndex = DAYS
) -> pd.DataFrame:
    reward = reward if reward is not None else list(np.linspace(2.0, 1.0, len(days)))
    usdc = usdc if usdc is not None else [1.0] * len(days)
    rows = [
        dict(date=d, coin=REWARD, symbol="RWD", price=p, confidence=0.9)
        for d, p in zip(days, reward, strict=True)
    ]
    rows += [
        dict(date=d, coin=USDC, symbol="USDC", price=p, confidence=0.99)
        for d, p in zip(days, usdc, strict=True)
    ]
    frame = pd.DataFrame(rows)
    return frame.dropna(subset=["price"])


def config(**changes: object) -> YieldAdjustmentConfig:
    base: dict[str, object] = {
        "tokens": {"usdc": {"coin": USDC, "peg": 1.0}, "susds": {"coin": SUSDS, "peg": None}},
        "reward_haircut": {"method": "min_max_ratio", "lookback_days": 10, "min_observations": 3},
        "peg": {"enabled": True, "horizon_days": 30, "max_abs_deviation": 0.01, "depeg_threshold": 0.01},
        "underlying_yield": {"pools": {"susds": P_SKY}},
        "max_price_gap_days": 2,
    }
    base.update(changes)
    return YieldAdjustmentConfig.model_validate(base)


TOKENS = {
    P_REWARD: PoolTokens(reward_coins=(REWARD,), underlying_symbols=("usdc",)),
    P_USDC: PoolTokens(reward_coins=None, underlying_symbols=("usdc",)),
    P_SUSDS: PoolTokens(reward_coins=None, underlying_symbols=("susds",)),
}
POOLS = [P_REWARD, P_USDC, P_SUSDS]


def run(
    hist: pd.DataFrame | None = None,
    px: pd.DataFrame | None = None,
    cfg: YieldAdjustmentConfig | None = None,
    tokens: dict[str, PoolTokens] | None = None,
) -> pd.DataFrame:
    out, _ = adjusted_yield_panel(
        hist if hist is not None else history(),
        tokens or TOKENS,
        px if px is not None else prices(),
        cfg or config(),
        pools=POOLS,
    )
    return out.set_index(["date", "pool"])


def test_output_shape_and_identity():
    out = run()
    assert len(out) == len(DAYS) * len(POOLS)
    assert set(COMPONENT_COLUMNS + FLAG_COLUMNS) <= set(out.columns)
    recomposed = (
        out["apy"] - out["reward_haircut"] + out["underlying_apy"] + out["peg_yield"] + out["il_annual"]
    )
    np.testing.assert_allclose(out["adjusted_apy"], recomposed)
    assert np.isfinite(out["adjusted_apy"]).all()


def test_reward_haircut_is_min_max_ratio_over_lookback():
    out = run()
    px = np.linspace(2.0, 1.0, len(DAYS))
    t = 25
    discount = px[t - 9 : t + 1].min() / px[t - 9 : t + 1].max()
    row = out.loc[(DAYS[t], P_REWARD)]
    assert row["reward_discount"] == pytest.approx(discount)
    assert row["reward_haircut"] == pytest.approx((1 - discount) * 0.03)
    assert row["adjusted_apy"] == pytest.approx(0.08 - (1 - discount) * 0.03)
    assert out.loc[(DAYS[t], P_USDC), "reward_haircut"] == 0.0


def test_worst_reward_token_sets_the_discount():
    other = "ethereum:0xflat"
    px = pd.concat(
        [prices(), pd.DataFrame(dict(date=DAYS, coin=other, symbol="FLAT", price=5.0, confidence=1.0))]
    )
    tokens = {**TOKENS, P_REWARD: PoolTokens(reward_coins=(other, REWARD), underlying_symbols=("usdc",))}
    both = run(px=px, tokens=tokens)
    only = run()
    assert both.loc[(DAYS[30], P_REWARD), "reward_discount"] == pytest.approx(
        only.loc[(DAYS[30], P_REWARD), "reward_discount"]
    )
    assert both.loc[(DAYS[30], P_REWARD), "reward_discount"] < 1.0


def test_haircut_method_none_keeps_rewards():
    out = run(cfg=config(reward_haircut={"method": "none"}))
    assert (out["reward_haircut"] == 0).all()
    assert not out["flag_reward_price_missing"].any()


def test_reward_token_without_price_is_flagged_and_uses_configured_default():
    px = prices()
    px = px[px["coin"] != REWARD]
    dropped = run(px=px)
    row = dropped.loc[(DAYS[20], P_REWARD)]
    assert row["flag_reward_price_missing"]
    assert row["reward_haircut"] == pytest.approx(0.03)  # default 0: reward APY dropped
    kept = run(px=px, cfg=config(reward_haircut={"method": "min_max_ratio", "missing_price_discount": 1.0}))
    assert kept.loc[(DAYS[20], P_REWARD), "reward_haircut"] == 0.0
    assert kept.loc[(DAYS[20], P_REWARD), "flag_reward_price_missing"]


def test_unknown_reward_tokens_are_flagged_only_when_pool_pays_rewards():
    tokens = {**TOKENS, P_REWARD: PoolTokens(reward_coins=None, underlying_symbols=("usdc",))}
    out = run(tokens=tokens)
    assert out.xs(P_REWARD, level="pool")["flag_reward_tokens_unknown"].all()
    assert not out.xs(P_USDC, level="pool")["flag_reward_tokens_unknown"].any()


def test_missing_price_days_filled_within_limit_then_reported():
    usdc = [0.995] * len(DAYS)
    for i in (10, 11):  # short gap: carried forward
        usdc[i] = np.nan
    for i in range(20, 26):  # long gap: filled for 2 days, then missing
        usdc[i] = np.nan
    out = run(px=prices(usdc=usdc))
    short = out.loc[(DAYS[11], P_USDC)]
    assert short["flag_price_filled"] and not short["flag_peg_price_missing"]
    assert short["peg_yield"] == pytest.approx((1 - 0.995) / 0.995 * 365 / 30)
    assert out.loc[(DAYS[21], P_USDC), "flag_price_filled"]
    late = out.loc[(DAYS[23], P_USDC)]
    assert late["flag_peg_price_missing"] and late["peg_yield"] == 0.0
    panel = price_panel(prices(usdc=usdc), DAYS, [USDC], max_gap_days=2)
    assert panel.report["missing_days"] == {USDC: 4}
    assert panel.report["filled_days"] == {USDC: 4}


def test_zero_and_negative_prices_are_rejected():
    reward = list(np.linspace(2.0, 1.0, len(DAYS)))
    reward[15], reward[16] = 0.0, -3.0
    panel = price_panel(prices(reward=reward), DAYS, [REWARD, USDC], max_gap_days=0)
    assert panel.report["rejected_prices"] == {REWARD: 2}
    assert panel.prices[REWARD].isna().sum() == 2
    out = run(px=prices(reward=reward), cfg=config(max_price_gap_days=0))
    assert out.loc[(DAYS[16], P_REWARD), "flag_reward_price_missing"]
    valid = [p for i, p in enumerate(reward[8:18], start=8) if i not in (15, 16)]
    assert out.loc[(DAYS[17], P_REWARD), "reward_discount"] == pytest.approx(min(valid) / max(valid))
    assert (out.xs(P_USDC, level="pool")["reward_discount"] == 1.0).all()  # no rewards: nothing to cut


def test_peg_yield_sign_and_depeg_spike_is_bounded_and_flagged():
    usdc = [1.0] * len(DAYS)
    usdc[5] = 0.998  # cheap: positive yield
    usdc[6] = 1.002  # rich: negative yield
    usdc[7] = 0.90  # depeg spike
    out = run(px=prices(usdc=usdc))
    assert out.loc[(DAYS[5], P_USDC), "peg_yield"] == pytest.approx((1 - 0.998) / 0.998 * 365 / 30)
    assert out.loc[(DAYS[6], P_USDC), "peg_yield"] == pytest.approx((1 - 1.002) / 1.002 * 365 / 30)
    spike = out.loc[(DAYS[7], P_USDC)]
    assert spike["peg_yield"] == pytest.approx(0.01 * 365 / 30)  # clipped at max_abs_deviation
    assert spike["flag_depeg"] and not out.loc[(DAYS[5], P_USDC), "flag_depeg"]
    assert out.loc[(DAYS[8], P_USDC), "peg_yield"] == 0.0


def test_underlying_yield_and_unpegged_token_gets_no_peg_yield():
    out = run()
    row = out.loc[(DAYS[3], P_SUSDS)]
    assert row["underlying_apy"] == pytest.approx(0.065)
    assert row["peg_yield"] == 0.0
    assert row["adjusted_apy"] == pytest.approx(0.01 + 0.065)
    assert out.loc[(DAYS[3], P_USDC), "underlying_apy"] == 0.0


def test_underlying_pool_missing_is_flagged():
    hist = history()
    hist = hist[~((hist["pool"] == P_SKY) & (hist["date"] >= DAYS[30]))]
    out = run(hist=hist)
    assert out.loc[(DAYS[32], P_SUSDS), "underlying_apy"] == pytest.approx(0.065)  # carried 3 days
    assert out.loc[(DAYS[34], P_SUSDS), "flag_underlying_missing"]
    assert out.loc[(DAYS[34], P_SUSDS), "underlying_apy"] == 0.0


def test_impermanent_loss_annualized_and_units():
    out = run()
    assert out.loc[(DAYS[0], P_USDC), "il_annual"] == pytest.approx(-0.001 * 52)
    assert out.loc[(DAYS[0], P_REWARD), "il_annual"] == 0.0  # null il7d: lending pool, no IL
    pct = run(hist=history().assign(il7d=0.1), cfg=config(impermanent_loss={"il7d_unit": "percent"}))
    assert pct.loc[(DAYS[0], P_USDC), "il_annual"] == pytest.approx(-0.001 * 52)


def test_components_are_causal():
    usdc = list(1.0 + 0.003 * np.sin(np.arange(len(DAYS))))
    reward = list(np.exp(np.cos(np.arange(len(DAYS)) / 3)))
    full = run(px=prices(reward=reward, usdc=usdc))
    for t in (12, 25):
        cut_days = DAYS[: t + 1]
        hist = history()
        cut = run(
            hist=hist[hist["date"] <= DAYS[t]],
            px=prices(reward=reward[: t + 1], usdc=usdc[: t + 1], days=cut_days),
        )
        pd.testing.assert_frame_equal(full.loc[[DAYS[t]]], cut.loc[[DAYS[t]]])


def test_output_dates_limit_rows():
    out, report = adjusted_yield_panel(
        history(), TOKENS, prices(), config(), pools=POOLS, output_dates=[DAYS[-1]]
    )
    assert out["date"].unique().tolist() == [DAYS[-1]]
    assert "flag_counts" in report


def test_resolve_pool_tokens_uses_latest_metadata_and_project_defaults():
    meta = pd.DataFrame(
        [
            dict(
                date=DAYS[0],
                pool="a",
                chain="Avalanche",
                project="aave-v3",
                reward_tokens=["0xold"],
                underlying_symbols=["USDC"],
            ),
            dict(
                date=DAYS[1],
                pool="a",
                chain="Avalanche",
                project="aave-v3",
                reward_tokens=["0xNew"],
                underlying_symbols=["USDC"],
            ),
            dict(
                date=DAYS[1],
                pool="b",
                chain="Ethereum",
                project="fluid-lending",
                reward_tokens=None,
                underlying_symbols=["USDT"],
            ),
            dict(
                date=DAYS[1],
                pool="c",
                chain="Base",
                project="morpho-blue",
                reward_tokens=None,
                underlying_symbols=None,
            ),
        ]
    )
    cfg = config(
        reward_haircut={"method": "min_max_ratio", "default_reward_tokens": {"fluid-lending": [REWARD]}}
    )
    tokens = resolve_pool_tokens(meta, cfg)
    assert tokens["a"] == PoolTokens(
        reward_coins=("avax:0xNew",), underlying_symbols=("usdc",), project="aave-v3"
    )
    assert tokens["b"].reward_coins == (REWARD,)
    assert tokens["c"] == PoolTokens(reward_coins=None, underlying_symbols=(), project="morpho-blue")


def test_config_rejects_typos_and_bad_values():
    with pytest.raises(ValidationError):
        YieldAdjustmentConfig.model_validate({"reward_haircut": {"methd": "none"}})
    with pytest.raises(ValidationError):
        YieldAdjustmentConfig.model_validate({"reward_haircut": {"missing_price_discount": 1.5}})
    with pytest.raises(ValidationError):
        YieldAdjustmentConfig.model_validate({"tokens": {"usdc": {"coin": "not a coin"}}})
    assert YieldAdjustmentConfig().price_coins() == []


def test_domain_module_does_not_import_dagster():
    import midfreq_assets.domain.yields.adjusted as module

    source = Path(module.__file__).read_text()
    assert "dagster" not in source.replace("no Dagster", "")
