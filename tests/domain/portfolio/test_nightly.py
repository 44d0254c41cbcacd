"""The nightly decision: state carried day to day, cash start at the vault's wealth, days without a universe."""

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.config.vault import load_vault_config
from midfreq_assets.domain.portfolio.nightly import CarriedState, decide_range

VAULT = load_vault_config("configs/vaults/usd_lending.yaml")
DAYS = pd.date_range("2024-07-01", periods=4, freq="D")


def frames(pools: list[str], days: pd.DatetimeIndex, apy: float = 0.05):
    rows = pd.DataFrame([(d, p) for d in days for p in pools], columns=["date", "pool"])
    universe = rows.assign(symbol="USDC", project="aave-v3", chain="Ethereum", tvl_usd=1e9, vaults=[["x"]] * len(rows))
    history = rows.assign(apy=apy, tvl_usd=1e9, il7d=np.nan)
    predictions = rows.assign(predicted_apy=apy)
    return predictions, universe, history


def test_cash_start_uses_the_vault_wealth_and_days_without_universe_hold_cash():
    vault = VAULT.model_copy(update={"backtest": VAULT.backtest.model_copy(update={"initial_wealth": 2_500_000.0})})
    pred, uni, hist = frames(["a", "b"], DAYS[:2])  # universe only on the first two days
    out, decisions, _ = decide_range(vault, DAYS, None, pred, uni, hist)
    day0 = out[out["date"] == DAYS[0]]
    assert day0["wealth"].iloc[0] == pytest.approx(2_500_000.0)
    assert day0["target_weight"].sum() == pytest.approx(2 * vault.strategy.concentration_limit)  # both pools at the cap
    for day in DAYS[2:]:  # held pools left the universe: sold; no universe at all afterwards: cash, no crash
        rows = out[out["date"] == day]
        assert rows["target_weight"].fillna(0).sum() == 0
    last = out[out["date"] == DAYS[-1]]
    assert last["solver_status"].iloc[0] == "no_universe" and last["idle_share"].iloc[0] == 1.0
    assert decisions[-1] is None


def test_state_round_trips_through_the_stored_rows():
    pred, uni, hist = frames(["a", "b", "c"], DAYS)
    out, _, _ = decide_range(VAULT, DAYS, None, pred, uni, hist)
    whole_last = out[out["date"] == DAYS[-1]]
    state = CarriedState.from_rows(out[out["date"] == DAYS[-2]])
    again, _, _ = decide_range(VAULT, DAYS[-1:], state, pred, uni, hist)
    np.testing.assert_allclose(again["holding_usd"].to_numpy(), whole_last["holding_usd"].to_numpy(), rtol=1e-12)
    assert again["wealth"].iloc[0] == pytest.approx(whole_last["wealth"].iloc[0], rel=1e-12)
