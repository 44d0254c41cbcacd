"""The vault's universe screen: every exclusion has its reason; TVL is screened per day."""

from __future__ import annotations

import pandas as pd

from midfreq_assets.domain.config.tokens import load_token_registry
from midfreq_assets.domain.config.vault import load_vault_config
from midfreq_assets.domain.ingest.universe import (
    select_universe,
    static_candidates,
    static_screen,
    underlying_symbols,
)

VAULT = load_vault_config("configs/vaults/usd_lending.yaml")
TOKENS = load_token_registry()
USDC_ETH = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"


def snapshot() -> pd.DataFrame:
    rows = [
        ("ok", "Ethereum", "aave-v3", "USDC", [USDC_ETH]),
        ("wrong_chain", "Solana", "aave-v3", "USDC", None),
        ("wrong_protocol", "Ethereum", "curve-dex", "USDC", [USDC_ETH]),
        ("wrong_token", "Ethereum", "morpho-blue", "WETH", ["0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"]),
        ("symbol_fallback", "Base", "morpho-blue", "USDC-USDT", ["0xunknown"]),
        ("symbol_fallback_bad", "Base", "morpho-blue", "USDC-FOO", None),
    ]
    return pd.DataFrame(
        [
            {
                "pool": p,
                "chain": c,
                "project": pr,
                "symbol": s,
                "underlying_tokens": u,
                "reward_tokens": None,
                "pool_meta": None,
                "tvl_usd": 5e6,
                "apy": 0.05,
                "il_risk": "no",
                "stablecoin": True,
                "exposure": "single",
            }
            for p, c, pr, s, u in rows
        ]
    )


def test_static_screen_reasons():
    reasons = static_screen(snapshot(), VAULT, TOKENS).set_index("pool")["reason"].to_dict()
    assert pd.isna(reasons["ok"]) and pd.isna(reasons["symbol_fallback"])
    assert reasons["wrong_chain"] == "chain Solana not in vault chains"
    assert reasons["wrong_protocol"] == "protocol curve-dex not whitelisted"
    assert reasons["wrong_token"] == "underlying weth not whitelisted for usd"
    assert reasons["symbol_fallback_bad"] == "underlying foo not whitelisted for usd"
    assert static_candidates(snapshot(), {"usd_lending": VAULT}, TOKENS) == ["ok", "symbol_fallback"]


def test_addresses_map_per_chain_case_insensitively_else_symbol():
    assert underlying_symbols("ethereum", [USDC_ETH.lower()], "STEAKUSDC", TOKENS) == ["usdc"]
    assert underlying_symbols("Base", ["0xunknown"], "USDC-USDT", TOKENS) == ["usdc", "usdt"]


def test_tvl_is_screened_per_day_and_exclusions_keep_their_reason():
    snap = snapshot()
    days = pd.DataFrame(
        {
            "date": pd.to_datetime(["2024-07-01", "2024-07-02"]),
            "pool": ["ok", "ok"],
            "tvl_usd": [5e6, 5e5],
            "apy": [0.05, 0.05],
        }
    )
    members, exclusions = select_universe(days, snap, {"usd_lending": VAULT}, TOKENS)
    assert list(members["date"]) == [pd.Timestamp("2024-07-01")]
    assert members["vaults"].iloc[0] == ["usd_lending"]
    assert members["underlying_symbols"].iloc[0] == ["usdc"]
    low = exclusions.set_index("date").loc[pd.Timestamp("2024-07-02")]
    assert low["reason"] == "pool TVL below 1,000,000 USD"


def test_exclusion_lists():
    vault = VAULT.model_copy(update={"exclude": VAULT.exclude.model_copy(update={"pools": ["ok"]})})
    reasons = static_screen(snapshot(), vault, TOKENS).set_index("pool")["reason"]
    assert reasons["ok"] == "excluded pool"
