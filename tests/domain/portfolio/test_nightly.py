"""The nightly decision: state carried day to day, cash start at the vault's wealth, days without a universe,
data gaps, adjusted yields earned once."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.config.vault import load_vault_config
from midfreq_assets.domain.portfolio.nightly import CarriedState, OptimizerCache, decide_day, decide_range

BASE = load_vault_config("configs/vaults/usd_lending.yaml")
VAULT = BASE.model_copy(
    update={
        "backtest": BASE.backtest.model_copy(update={"initial_wealth": 123_456.0, "base_rate": 0.03}),
        "strategy": BASE.strategy.model_copy(
            update={"gas_usd": 0.0, "min_trade_usd": 0.0, "protocol_caps": {}}
        ),
    }
)
DAYS = pd.date_range("2025-01-01", periods=8, freq="D")
POOLS = ["a", "b", "c", "d", "e"]


def day_frames(day: pd.Timestamp, pools: list[str]):
    universe = pd.DataFrame(
        {
            "date": day,
            "pool": pools,
            "symbol": "USDC",
            "project": "aave-v3",
            "chain": "Ethereum",
            "tvl_usd": 1e9,
        }
    )
    history = pd.DataFrame({"date": day, "pool": pools, "apy": 0.10, "tvl_usd": 1e9, "il7d": 0.001})
    adjusted = pd.DataFrame(
        {
            "date": day,
            "pool": pools,
            "adjusted_apy": 0.10 - 0.052,
            "underlying_apy": 0.0,
            "peg_yield": 0.0,
            "il_annual": -0.052,
            "price_return": 0.0,
        }
    )
    predictions = pd.DataFrame({"date": day, "pool": pools, "predicted_apy": 0.05})
    return universe, history, adjusted, predictions


def test_an_empty_day_holds_cash_from_the_vaults_own_wealth():
    rows, dec = decide_day(
        VAULT,
        DAYS[0],
        None,
        OptimizerCache(VAULT),
        pd.DataFrame(),
        pd.DataFrame(),
        pd.DataFrame(),
        pd.DataFrame(),
    )
    assert dec is None and rows["solver_status"].tolist() == ["no_universe"]
    assert rows["wealth"].iloc[0] == 123_456.0 and rows["idle_share"].iloc[0] == 1.0
    nxt, _ = decide_day(
        VAULT,
        DAYS[1],
        CarriedState.from_rows(rows),
        OptimizerCache(VAULT),
        pd.DataFrame(),
        pd.DataFrame(),
        pd.DataFrame(),
        pd.DataFrame(),
    )
    assert nxt["wealth"].iloc[0] == pytest.approx(
        123_456.0 * math.exp(0.03 / 365)
    )  # idle base earns base_rate


def test_a_range_with_an_empty_day_in_the_middle_runs_and_reports_it():
    frames = [day_frames(d, POOLS) for d in DAYS]
    empty = 3
    universe = pd.concat([f[0] for i, f in enumerate(frames) if i != empty])
    history = pd.concat([f[1] for i, f in enumerate(frames) if i != empty])
    adjusted = pd.concat([f[2] for i, f in enumerate(frames) if i != empty])
    preds = pd.concat([f[3] for i, f in enumerate(frames) if i != empty])
    out, decisions, _ = decide_range(VAULT, DAYS, None, preds, universe, history, adjusted)
    statuses = out.drop_duplicates("date").set_index("date")["solver_status"]
    assert statuses[DAYS[empty]] != "no_universe"  # the held pools are in a gap, not gone
    day = out[out["date"] == DAYS[empty]]
    assert day["in_gap"].all() and (day["holding_usd"] > 0).all() and day["trade_usd"].eq(0).all()
    assert out.loc[out["date"] == DAYS[0], "wealth"].iloc[0] == 123_456.0
    assert len(decisions) == len(DAYS)


def test_nightly_earns_adjusted_yields_once_and_carries_a_short_gap():
    first = day_frames(DAYS[0], ["a", "b"])
    rows, _ = decide_day(VAULT, DAYS[0], None, OptimizerCache(VAULT), first[3], first[0], first[1], first[2])
    held = rows.set_index("pool")["holding_usd"]
    assert held.sum() == pytest.approx(2 * VAULT.strategy.concentration_limit * 123_456.0)
    state = CarriedState.from_rows(rows)
    # day 1: "b" is missing from the data; "a" reports. Both accrue at the adjusted 4.8%, not 10% - 2 x IL
    u, h, a, p = day_frames(DAYS[1], ["a"])
    nxt, _ = decide_day(VAULT, DAYS[1], state, OptimizerCache(VAULT), p, u, h, a)
    r = nxt.set_index("pool")
    dil = 1 / (1 + held["a"] / 1e9)
    grown_a = held["a"] * math.exp(((0.048 + 0.052) * dil - 0.052) / 365)
    assert r.loc["a", "current_weight"] * r.loc["a", "wealth"] == pytest.approx(grown_a, rel=1e-12)
    assert r.loc["b", "in_gap"] and not r.loc["b", "in_universe"] and r.loc["b", "trade_usd"] == 0
    assert r.loc["b", "earned_apy"] == pytest.approx(0.048) and r.loc["b", "last_seen"] == DAYS[0]
    # absent beyond max_gap_days (3): sold on the 4th day
    state = CarriedState.from_rows(nxt)
    for i in range(2, 6):
        u, h, a, p = day_frames(DAYS[i], ["a"])
        out, dec = decide_day(VAULT, DAYS[i], state, OptimizerCache(VAULT), p, u, h, a)
        state = CarriedState.from_rows(out)
        b = out.set_index("pool").loc["b"]
        if i <= 3:
            assert b["in_gap"] and b["holding_usd"] > 0
        else:
            assert not b["in_gap"] and b["holding_usd"] == 0 and dec.n_forced_sales == 1
            break
    assert np.isfinite(out["wealth"]).all()


def test_a_holding_drifting_above_the_cap_during_a_gap_is_not_a_violation():
    from midfreq_assets.domain.portfolio.nightly import weight_violations

    cap = VAULT.strategy.concentration_limit
    rows = pd.DataFrame(
        {
            "date": DAYS[0],
            "pool": ["a", "b", "c"],
            "target_weight": [cap + 1e-4, cap + 1e-4, 0.1],
            "in_gap": [True, False, False],
        }
    )
    bad = weight_violations(rows, VAULT)
    assert bad["pool"].tolist() == ["b"]  # the frozen one drifted; the decided one is a violation


def test_held_in_gap_weights_fill_the_sum_first():
    from midfreq_assets.domain.portfolio.nightly import weight_violations

    budget = 1 - VAULT.strategy.base_buffer
    frozen = [budget / 4 + 1e-5] * 4  # every holding in a gap, accrued just past the budget: no decision made
    alone = pd.DataFrame(
        {
            "date": DAYS[0],
            "pool": ["a", "b", "c", "d", "e"],
            "target_weight": [*frozen, 0.0],
            "in_gap": [True] * 4 + [False],
        }
    )
    assert weight_violations(alone, VAULT).empty
    bought = alone.assign(target_weight=[*frozen, 1e-3])  # buying more on top of them is a violation
    assert weight_violations(bought, VAULT)["problem"].tolist() == ["sum above 1 - base_buffer"]
    room = alone.assign(target_weight=[0.2] * 4 + [budget - 0.8 + 1e-3])  # past the room the gaps leave
    assert weight_violations(room, VAULT)["problem"].tolist() == ["sum above 1 - base_buffer"]


def frames(
    pools: list[str], days: pd.DatetimeIndex, universe_days: pd.DatetimeIndex | None = None, apy: float = 0.05
):
    """Predictions, universe (on ``universe_days``, default all) and history rows of ``pools``."""
    rows = pd.DataFrame([(d, p) for d in days for p in pools], columns=["date", "pool"])
    in_universe = rows["date"].isin(universe_days if universe_days is not None else days)
    universe = rows[in_universe].assign(
        symbol="USDC",
        project="aave-v3",
        chain="Ethereum",
        tvl_usd=1e9,
        vaults=[["x"]] * int(in_universe.sum()),
    )
    history = rows.assign(apy=apy, tvl_usd=1e9, il7d=np.nan)
    adjusted = history[["date", "pool"]].assign(
        adjusted_apy=apy, underlying_apy=0.0, peg_yield=0.0, il_annual=0.0, price_return=0.0
    )
    predictions = rows[in_universe].assign(predicted_apy=apy)
    return predictions, universe, history, adjusted


def test_cash_start_uses_the_vault_wealth_and_days_without_universe_hold_cash():
    vault = BASE.model_copy(
        update={"backtest": BASE.backtest.model_copy(update={"initial_wealth": 2_500_000.0})}
    )
    days = pd.date_range("2024-07-01", periods=4, freq="D")
    pred, uni, hist, adj = frames(
        ["a", "b"], days, universe_days=days[:2]
    )  # universe only on the first two days
    out, decisions, _ = decide_range(vault, days, None, pred, uni, hist, adj)
    day0 = out[out["date"] == days[0]]
    assert day0["wealth"].iloc[0] == pytest.approx(2_500_000.0)
    assert day0["target_weight"].sum() == pytest.approx(
        2 * vault.strategy.concentration_limit
    )  # both pools at the cap
    for day in days[
        2:
    ]:  # held pools left the universe (still reported): sold; then no universe: cash, no crash
        rows = out[out["date"] == day]
        assert rows["target_weight"].fillna(0).sum() == 0
    last = out[out["date"] == days[-1]]
    assert last["solver_status"].iloc[0] == "no_universe" and last["idle_share"].iloc[0] == 1.0
    assert decisions[-1] is None


def test_state_round_trips_through_the_stored_rows():
    days = pd.date_range("2024-07-01", periods=4, freq="D")
    pred, uni, hist, adj = frames(["a", "b", "c"], days)
    out, _, _ = decide_range(BASE, days, None, pred, uni, hist, adj)
    whole_last = out[out["date"] == days[-1]]
    state = CarriedState.from_rows(out[out["date"] == days[-2]])
    again, _, _ = decide_range(BASE, days[-1:], state, pred, uni, hist, adj)
    np.testing.assert_allclose(
        again["holding_usd"].to_numpy(), whole_last["holding_usd"].to_numpy(), rtol=1e-12
    )
    assert again["wealth"].iloc[0] == pytest.approx(whole_last["wealth"].iloc[0], rel=1e-12)
