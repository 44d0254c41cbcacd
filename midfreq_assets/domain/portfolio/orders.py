"""The day's trade ticket: one order per pool whose holding changes, what a signer needs to send it.

From a day of ``<vault>/rebalance_weights`` (trades in the vault's reference asset) and that day's
``pool_metadata`` (chain, protocol, underlying tokens): for each pool with a trade, the side
(``deposit`` into the pool / ``withdraw`` from it), the amount in USD (reference amount x the
reference asset's USD price) and in the deposit token (USD / the token's USD price), and why it is
worth its gas:

- expected annual gain of the order, with the money coming from / going to the idle base earning
  ``backtest.base_rate`` ``b``: deposit ``A (apy_i - b)``, withdraw ``A (b - apy_i)`` (``apy_i``
  the pool's predicted APY; the gains of a day's orders add up to the change of the portfolio's
  predicted annual yield, so a withdrawal from a pool paying more than ``b`` that funds a better
  deposit shows a negative gain of its own: read the day's ``expected_annual_gain_usd`` total in the
  ticket); a withdrawal from a pool that left the universe (no prediction) is an ``exit`` whose gain
  is not estimated;
- ``gas_usd`` per order (the strategy's), ``gain_over_gas`` = annual gain / gas, and
  ``horizon_gain_usd`` = annual gain x ``horizon_days`` / 365 (the optimizer kept the trade only if
  its horizon yield covers ``gas_multiple`` x gas).

Each order carries an idempotency key, a UUID5 of (vault, day, pool): a rerun of the day produces
the same keys, so the execution endpoint never executes a (vault, day, pool) twice.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.units import DAYS_PER_YEAR

#: Namespace of the orders' idempotency keys (a UUID5 of ``vault/day/pool`` under it).
ORDER_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/midfreq/orders")
ORDER_COLUMNS = [
    "date",
    "vault",
    "pool",
    "chain",
    "protocol",
    "symbol",
    "token_symbol",
    "token_address",
    "side",
    "amount_usd",
    "token_amount",
    "token_price_usd",
    "amount_reference",
    "predicted_apy",
    "expected_annual_gain_usd",
    "gas_usd",
    "gain_over_gas",
    "horizon_gain_usd",
    "reason",
    "target_weight",
    "idempotency_key",
]


def idempotency_key(vault: str, day: dt.date | pd.Timestamp, pool: str) -> str:
    """The one key of the order of ``vault`` in ``pool`` on ``day``."""
    return str(uuid.uuid5(ORDER_NAMESPACE, f"{vault}/{pd.Timestamp(day).date().isoformat()}/{pool}"))


def _first(value: Any) -> str:
    """First element of a list-like cell (lists come back from Parquet as arrays), '' when none."""
    if value is None or isinstance(value, float):
        return ""
    if isinstance(value, str):
        return value
    items = list(value)
    return str(items[0]) if items else ""


def build_orders(
    vault: VaultConfig, day_rows: pd.DataFrame, metadata: pd.DataFrame, token_prices_usd: Mapping[str, float]
) -> pd.DataFrame:
    """The day's orders (:data:`ORDER_COLUMNS`), largest first. ``token_prices_usd``: deposit-token
    symbol (lower case) -> USD price that day; a token without one gets no token amount."""
    trades = day_rows[day_rows["pool"].notna() & (day_rows["trade_usd"].fillna(0.0).abs() > 0)]
    if trades.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in ORDER_COLUMNS})
    meta = (
        metadata.drop_duplicates("pool", keep="last").set_index("pool") if len(metadata) else pd.DataFrame()
    )
    ref = trades["reference_price"].astype(float).to_numpy()
    amount_ref = trades["trade_usd"].abs().to_numpy(dtype=float)
    amount_usd = amount_ref * ref
    pools = trades["pool"].to_numpy()
    col = lambda c: meta[c].reindex(pools).to_numpy() if c in meta else np.full(len(pools), None)  # noqa: E731
    token_symbol = np.array([_first(v).lower() for v in col("underlying_symbols")], dtype=object)
    token_address = np.array([_first(v) for v in col("underlying_tokens")], dtype=object)
    price = np.array([token_prices_usd.get(t, np.nan) for t in token_symbol], dtype=float)
    deposit = trades["trade_usd"].to_numpy(dtype=float) > 0
    apy = trades["predicted_apy"].to_numpy(dtype=float)
    base = vault.backtest.base_rate
    gain = np.where(deposit, amount_usd * (apy - base), amount_usd * (base - apy))
    gas = np.full(len(pools), vault.strategy.gas_usd)
    exit_ = ~deposit & ~np.isfinite(apy)
    day = pd.Timestamp(trades["date"].iloc[0])
    out = pd.DataFrame(
        {
            "date": day,
            "vault": vault.name,
            "pool": pools,
            "chain": trades["chain"].to_numpy(),
            "protocol": trades["project"].to_numpy(),
            "symbol": trades["symbol"].to_numpy(),
            "token_symbol": token_symbol,
            "token_address": token_address,
            "side": np.where(deposit, "deposit", "withdraw"),
            "amount_usd": amount_usd,
            "token_amount": amount_usd / price,
            "token_price_usd": price,
            "amount_reference": amount_ref,
            "predicted_apy": apy,
            "expected_annual_gain_usd": gain,
            "gas_usd": gas,
            "gain_over_gas": np.where(gas > 0, gain / np.where(gas > 0, gas, 1.0), np.inf),
            "horizon_gain_usd": gain * vault.strategy.horizon_days / DAYS_PER_YEAR,
            "reason": np.where(exit_, "exit: pool left the universe or lost its prediction", "rebalance"),
            "target_weight": trades["target_weight"].to_numpy(dtype=float),
            "idempotency_key": [idempotency_key(vault.name, day, p) for p in pools],
        }
    )
    return out.sort_values("amount_usd", ascending=False, kind="stable").reset_index(drop=True)[ORDER_COLUMNS]


def deposit_token_prices(
    vault: VaultConfig, prices: pd.DataFrame, reference_price: float, pegged: frozenset[str]
) -> dict[str, float]:
    """USD price per deposit-token symbol on the day: the token's own coin in ``token_prices`` (the
    vault's ``yields.tokens``), else, for a symbol pegged to the reference asset, the reference price."""
    out = {symbol: reference_price for symbol in pegged}
    if len(prices):
        by_coin = (
            prices.dropna(subset=["price"]).drop_duplicates("coin", keep="last").set_index("coin")["price"]
        )
        for symbol, token in vault.yields.tokens.items():
            if token.coin in by_coin.index:
                out[symbol] = float(by_coin[token.coin])
    return out


def _json_value(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat()
    return value


def order_payloads(orders: pd.DataFrame) -> list[dict[str, Any]]:
    """The orders as JSON-ready objects (what the ticket lists and the endpoint receives)."""
    return [{k: _json_value(v) for k, v in row.items()} for row in orders.to_dict(orient="records")]


def ticket(vault: VaultConfig, day: dt.date, orders: pd.DataFrame) -> dict[str, Any]:
    """The JSON ticket a desk hands to a signer: the vault, the day, totals and every order."""
    deposits = orders[orders["side"] == "deposit"]["amount_usd"].sum() if len(orders) else 0.0
    withdrawals = orders[orders["side"] == "withdraw"]["amount_usd"].sum() if len(orders) else 0.0
    return {
        "vault": vault.name,
        "date": day.isoformat(),
        "reference_asset": vault.reference_asset,
        "n_orders": len(orders),
        "deposits_usd": float(deposits),
        "withdrawals_usd": float(withdrawals),
        "gas_usd": float(orders["gas_usd"].sum()) if len(orders) else 0.0,
        "expected_annual_gain_usd": float(orders["expected_annual_gain_usd"].sum()) if len(orders) else 0.0,
        "orders": order_payloads(orders),
    }
