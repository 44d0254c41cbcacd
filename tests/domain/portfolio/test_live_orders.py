"""The live loop's math: a day decided from real positions, the reconciliation drift, the trade ticket
(sides, USD and token amounts, gain vs gas, idempotency keys) and the intraday moves."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.config.vault import load_vault_config
from midfreq_assets.domain.portfolio.intraday import intraday_moves
from midfreq_assets.domain.portfolio.live_config import IntradayConfig
from midfreq_assets.domain.portfolio.nightly import (
    FROM_POSITIONS,
    FROM_SIMULATION,
    CarriedState,
    OptimizerCache,
    decide_day,
)
from midfreq_assets.domain.portfolio.orders import build_orders, idempotency_key, ticket
from midfreq_assets.domain.portfolio.reconcile import drift_table, drifted

BASE = load_vault_config("configs/vaults/usd_lending.yaml")
VAULT = BASE.model_copy(
    update={
        "backtest": BASE.backtest.model_copy(update={"initial_wealth": 100_000.0, "base_rate": 0.03}),
        "strategy": BASE.strategy.model_copy(
            update={"gas_usd": 5.0, "min_trade_usd": 0.0, "protocol_caps": {}}
        ),
    }
)
DAYS = pd.date_range("2025-01-01", periods=3, freq="D")
POOLS = ["a", "b", "c", "d", "e"]


def frames(day, apy=(0.08, 0.07, 0.06, 0.05, 0.04)):
    universe = pd.DataFrame(
        {
            "date": day,
            "pool": POOLS,
            "symbol": "USDC",
            "project": "aave-v3",
            "chain": "Ethereum",
            "tvl_usd": 1e9,
        }
    )
    history = pd.DataFrame({"date": day, "pool": POOLS, "apy": list(apy), "tvl_usd": 1e9})
    adjusted = pd.DataFrame(
        {
            "date": day,
            "pool": POOLS,
            "adjusted_apy": list(apy),
            "underlying_apy": 0.0,
            "peg_yield": 0.0,
            "il_annual": 0.0,
            "price_return": 0.0,
        }
    )
    predictions = pd.DataFrame({"date": day, "pool": POOLS, "predicted_apy": list(apy)})
    return predictions, universe, history, adjusted


def test_a_day_from_real_positions_decides_from_them_and_keeps_what_was_expected():
    day0, _ = decide_day(VAULT, DAYS[0], None, OptimizerCache(VAULT), *frames(DAYS[0]))
    assert (day0["positions_source"] == FROM_SIMULATION).all() and day0["expected_usd"].isna().all()
    state = CarriedState.from_rows(day0)
    target = day0.set_index("pool")["holding_usd"]
    # the desk filled only half of the deposit into "a"; a user added 10,000 of cash
    real = dict(target[target > 0])
    real["a"] = real["a"] / 2
    cash = float(day0["base_usd"].iloc[0]) + target["a"] / 2 + 10_000
    day1, dec = decide_day(
        VAULT, DAYS[1], state, OptimizerCache(VAULT), *frames(DAYS[1]), observed=(real, cash)
    )
    r = day1.set_index("pool")
    assert (day1["positions_source"] == FROM_POSITIONS).all()
    assert r["wealth"].iloc[0] == pytest.approx(
        sum(real.values()) + cash
    )  # no accrual on top of real holdings
    assert r.loc["a", "current_weight"] * r.loc["a", "wealth"] == pytest.approx(real["a"])
    expected_a = target["a"] * math.exp(0.08 * (1 / (1 + target["a"] / 1e9)) / 365)
    assert r.loc["a", "expected_usd"] == pytest.approx(expected_a, rel=1e-12)
    drift = drift_table(day1).set_index("pool")
    expected_wealth = drift["expected_usd"].sum()
    assert drift.loc["a", "drift_share"] == pytest.approx((real["a"] - expected_a) / expected_wealth)
    assert drift.loc["cash", "drift_usd"] == pytest.approx(cash - float(day1["expected_base_usd"].iloc[0]))
    assert set(drifted(drift.reset_index(), 0.01)["pool"]) == {"a", "cash"}
    assert dec.trades_usd[list(dec.pools).index("a")] > 0  # tops "a" back up towards its target
    # a day from simulation has nothing to reconcile
    assert drift_table(day0).empty


def test_orders_carry_side_amounts_gain_vs_gas_and_stable_keys():
    day0, _ = decide_day(VAULT, DAYS[0], None, OptimizerCache(VAULT), *frames(DAYS[0]))
    state = CarriedState.from_rows(day0)
    # day 1: "a" leaves the universe (sold, an exit), "e" jumps to the top
    p, u, h, a = frames(DAYS[1], apy=(0.08, 0.07, 0.06, 0.05, 0.12))
    u = u[u["pool"] != "a"]
    p = p[p["pool"] != "a"]
    day1, _ = decide_day(VAULT, DAYS[1], state, OptimizerCache(VAULT), p, u, h, a)
    day1 = day1.assign(reference_price=2.0)  # as if the vault counted in an asset worth 2 USD
    meta = pd.DataFrame(
        {
            "pool": POOLS,
            "underlying_symbols": [np.array(["usdc"])] * 5,
            "underlying_tokens": [np.array(["0xA0b8"])] * 5,
        }
    )
    orders = build_orders(VAULT, day1, meta, {"usdc": 1.0005})
    by_pool = orders.set_index("pool")
    assert by_pool.loc["a", "side"] == "withdraw" and by_pool.loc["a", "reason"].startswith("exit")
    assert by_pool.loc["e", "side"] == "deposit"
    trades = day1.set_index("pool")["trade_usd"]
    assert by_pool["amount_usd"].to_numpy() == pytest.approx(
        trades.abs().reindex(by_pool.index).to_numpy() * 2.0
    )
    assert by_pool["token_amount"].to_numpy() == pytest.approx(by_pool["amount_usd"].to_numpy() / 1.0005)
    assert (by_pool["token_symbol"] == "usdc").all() and (by_pool["token_address"] == "0xA0b8").all()
    e = by_pool.loc["e"]
    assert e["expected_annual_gain_usd"] == pytest.approx(e["amount_usd"] * (0.12 - 0.03))
    assert e["gain_over_gas"] == pytest.approx(e["expected_annual_gain_usd"] / 5.0)
    assert np.isnan(by_pool.loc["a", "expected_annual_gain_usd"])
    keys = orders["idempotency_key"]
    assert keys.is_unique and keys.tolist() == [
        idempotency_key(VAULT.name, DAYS[1], p) for p in orders["pool"]
    ]
    assert idempotency_key(VAULT.name, DAYS[2], "e") != idempotency_key(VAULT.name, DAYS[1], "e")
    assert idempotency_key("other_vault", DAYS[1], "e") != idempotency_key(VAULT.name, DAYS[1], "e")
    t = ticket(VAULT, dt.date(2025, 1, 2), orders)
    assert t["n_orders"] == len(orders) and t["orders"][0]["idempotency_key"] == keys.iloc[0]
    assert t["orders"][0]["date"] == "2025-01-02"
    assert t["deposits_usd"] == pytest.approx(orders.loc[orders["side"] == "deposit", "amount_usd"].sum())
    # the orders' gains add up to the change of the portfolio's predicted yield over the base rate
    rows = day1.set_index("pool")
    before = (
        rows["current_weight"] * rows["wealth"] * 2.0 * (rows["predicted_apy"].fillna(0.03) - 0.03)
    ).sum()
    after = (rows["holding_usd"] * 2.0 * (rows["predicted_apy"].fillna(0.03) - 0.03)).sum()
    finite = orders["expected_annual_gain_usd"].notna()
    assert t["expected_annual_gain_usd"] == pytest.approx(
        orders.loc[finite, "expected_annual_gain_usd"].sum()
    )
    assert orders.loc[finite, "expected_annual_gain_usd"].sum() == pytest.approx(after - before, rel=1e-9)
    assert build_orders(VAULT, day1.assign(trade_usd=0.0), meta, {}).empty


def test_intraday_moves_flag_apy_tvl_and_vanished_pools():
    nightly = pd.DataFrame(
        {
            "pool": ["a", "b", "c", "d"],
            "symbol": "USDC",
            "project": "aave-v3",
            "chain": "Base",
            "apy": [0.05, 0.05, 0.05, 0.05],
            "tvl_usd": [1e8, 1e8, 1e8, 1e8],
        }
    )
    now = pd.DataFrame(
        {"pool": ["a", "b", "c", "x"], "apy": [0.051, 0.09, 0.05, 0.2], "tvl_usd": [1e8, 1e8, 5e7, 1]}
    )
    moves = intraday_moves(nightly, now, IntradayConfig(apy_move=0.02, tvl_move=0.25)).set_index("pool")
    assert moves.loc["a", "flag"] == "" and moves.loc["b", "flag"] == "apy moved"
    assert moves.loc["c", "flag"] == "tvl moved" and moves.loc["d", "flag"] == "missing from /pools"
    assert "x" not in moves.index  # not a pool of the nightly universe
    assert moves.loc["c", "tvl_change"] == pytest.approx(-0.5)
    assert list(moves.index[:3]) != ["a"]  # flagged first
