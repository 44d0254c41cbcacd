"""Discovery rules of the universe: DefiLlama flags, symbol patterns, allow-lists, the 30-day APY floor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.config.base import ConfigError, validate_model
from midfreq_assets.domain.config.tokens import load_token_registry
from midfreq_assets.domain.config.vault import VaultConfig, load_vault_config
from midfreq_assets.domain.ingest.discovery import apy_mean_30d, lookback_days
from midfreq_assets.domain.ingest.universe import select_universe, snapshot_frame, static_screen

BASE = load_vault_config("configs/vaults/usd_lending.yaml")
TOKENS = load_token_registry()
USDC_ETH = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
WETH_ETH = "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
POOL_A = "aaaaaaaa-0000-4000-8000-000000000001"


def vault(**changes) -> VaultConfig:
    """usd_lending with the discovery keys changed, validated like a YAML file."""
    data = BASE.model_dump(mode="python")
    data.update(
        min_pool_tvl_usd=0,
        symbol_patterns=None,
        min_apy_mean_30d=None,
        exclude_il_risk=False,
        stablecoin_only=False,
        exposure=None,
        selected_pools=None,
    )
    data.update(changes)
    return validate_model(VaultConfig, data, "test.yaml")


def pool(name: str, symbol: str = "USDC", tokens=(USDC_ETH,), chain: str = "Ethereum", **attrs) -> dict:
    return {
        "pool": name,
        "chain": chain,
        "project": "aave-v3",
        "symbol": symbol,
        "underlying_tokens": list(tokens) if tokens is not None else None,
        "reward_tokens": None,
        "pool_meta": None,
        "tvl_usd": 5e6,
        "apy": 0.05,
        **{"il_risk": "no", "stablecoin": True, "exposure": "single", **attrs},
    }


def reasons(rows: list[dict], v: VaultConfig) -> dict[str, object]:
    return static_screen(pd.DataFrame(rows), v, TOKENS).set_index("pool")["reason"].to_dict()


def test_defillama_flags_each_have_their_reason():
    rows = [
        pool("ok"),
        pool("il_yes", il_risk="yes"),
        pool("il_unknown", il_risk=None),
        pool("not_stable", stablecoin=False),
        pool("stable_unknown", stablecoin=None),
        pool("multi", exposure="multi"),
        pool("exposure_unknown", exposure=None),
    ]
    got = reasons(rows, vault(exclude_il_risk=True, stablecoin_only=True, exposure="single"))
    assert pd.isna(got["ok"]) and pd.isna(got["il_unknown"])  # unknown ilRisk kept, as the original did
    assert got["il_yes"] == "ilRisk yes (exclude_il_risk)"
    assert got["not_stable"] == got["stable_unknown"] == "not a stablecoin pool (stablecoin_only)"
    assert got["multi"] == "exposure multi, vault takes single"
    assert got["exposure_unknown"] == "exposure unknown, vault takes single"
    # the same pools all pass when the rules are off
    assert all(pd.isna(r) for r in reasons(rows, vault()).values())


def test_an_earlier_rule_keeps_its_reason():
    rows = [pool("bad_chain", chain="Solana", il_risk="yes")]
    assert reasons(rows, vault(exclude_il_risk=True))["bad_chain"] == "chain Solana not in vault chains"


def test_symbol_patterns_glob_and_regex_case_insensitive():
    rows = [
        pool("steak", "STEAKUSDC"),
        pool("gt", "gtUSDCcore"),
        pool("plain", "USDC"),
        pool("other", "sUSDS"),
    ]
    got = reasons(rows, vault(symbol_patterns=["steak*", "re:^gt.*core$"]))
    assert pd.isna(got["steak"]) and pd.isna(got["gt"])
    assert got["plain"] == "symbol USDC matches no symbol_patterns"
    assert got["other"] == "symbol sUSDS matches no symbol_patterns"
    # a glob spans the whole symbol; a regex searches unless anchored
    assert not pd.isna(reasons([pool("x", "XSTEAKUSDC")], vault(symbol_patterns=["steak*"]))["x"])
    assert pd.isna(reasons([pool("x", "XSTEAKUSDC")], vault(symbol_patterns=["re:steak"]))["x"])


def test_symbol_patterns_vouch_only_for_unresolved_vault_share_symbols():
    unresolved = [
        pool("share", "STEAKUSDCRWA", tokens=None),
        pool("lp", "USDC-WETH", tokens=None),
        pool("resolved_weth", "WETHUSDC", tokens=(WETH_ETH,)),
    ]
    without = reasons(unresolved, vault())
    assert without["share"] == "underlying steakusdcrwa not whitelisted for usd"
    got = reasons(unresolved, vault(symbol_patterns=["*usdc*"]))
    assert pd.isna(got["share"])  # the pattern stands in for the token registry
    assert got["lp"] == "underlying weth not whitelisted for usd"  # a non-matching part still fails
    assert (
        got["resolved_weth"] == "underlying weth not whitelisted for usd"
    )  # registry tokens are judged alone


def test_selected_pools_is_an_allow_list_and_validated():
    other = "bbbbbbbb-0000-4000-8000-000000000002"
    # one allow-listed pool holds the budget only without a concentration limit (else refused at load)
    single = vault(
        selected_pools=[POOL_A.upper()],
        strategy=BASE.strategy.model_dump(mode="python") | {"concentration_limit": 1.0},
    )
    got = reasons([pool(POOL_A), pool(other)], single)
    assert pd.isna(got[POOL_A]) and got[other] == "not in selected_pools"
    with pytest.raises(ConfigError, match="selected_pools: .*not-a-uuid. is not a UUID"):
        vault(selected_pools=["not-a-uuid"])
    with pytest.raises(ConfigError, match="selected_pools"):
        vault(selected_pools=[])
    with pytest.raises(ConfigError, match="selected_pools: .*twice"):
        vault(selected_pools=[POOL_A, POOL_A.upper()])


def test_bad_patterns_fail_at_load_naming_the_key():
    with pytest.raises(ConfigError, match=r"symbol_patterns: .*not a valid regex"):
        vault(symbol_patterns=["re:(unclosed"])
    with pytest.raises(ConfigError, match="exposure"):
        vault(exposure="double")


def test_snapshot_frame_carries_the_discovery_fields():
    frame = snapshot_frame([{**pool(POOL_A), "apy": 5.0, "apy_mean_30d": 4.0, "il_risk": "no"}])
    assert frame.loc[0, "apy_mean_30d"] == pytest.approx(0.04)
    assert frame.loc[0, "il_risk"] == "no" and frame.loc[0, "exposure"] == "single"
    assert bool(frame.loc[0, "stablecoin"]) is True


# ----------------------------------------------------------------------------- 30-day mean APY floor
def history(apy: dict[str, list[float]], start: str = "2024-06-01") -> pd.DataFrame:
    rows = []
    for name, values in apy.items():
        dates = pd.date_range(start, periods=len(values), freq="D")
        rows.append(
            pd.DataFrame({"date": dates, "pool": name, "apy": values, "apy_base": values, "tvl_usd": 5e6})
        )
    return pd.concat(rows, ignore_index=True)


def members_by_day(
    rows: pd.DataFrame, v: VaultConfig, snap: pd.DataFrame, **kw
) -> dict[pd.Timestamp, set[str]]:
    members, _ = select_universe(rows, snap, {v.name: v}, TOKENS, **kw)
    return {d: set(g["pool"]) for d, g in members.groupby("date")}


def test_apy_mean_30d_is_trailing_on_history_and_defillamas_own_on_live_rows():
    rows = history({"p": [0.01] * 29 + [0.10] * 5})
    mean = apy_mean_30d(rows)
    assert mean[0] == pytest.approx(0.01) and mean[29] == pytest.approx((29 * 0.01 + 0.10) / 30)
    assert mean[33] == pytest.approx((25 * 0.01 + 5 * 0.10) / 30)  # only the 30 days ending that day
    live = rows.assign(apy_mean_30d=np.where(rows.index == 33, 0.5, np.nan))
    assert apy_mean_30d(live)[33] == 0.5


def test_apy_floor_is_point_in_time():
    """A pool whose APY jumps later is not admitted before the jump: truncating the future changes nothing."""
    rows = history({"steady": [0.05] * 60, "late": [0.0] * 40 + [0.20] * 20})
    snap = pd.DataFrame([pool("steady"), pool("late")])
    v = vault(min_apy_mean_30d=0.03)
    full = members_by_day(rows, v, snap)
    assert all(d not in full or "late" not in full[d] for d in pd.date_range("2024-06-01", periods=40))
    assert "late" in full[pd.Timestamp("2024-06-01") + pd.Timedelta(days=59)]
    cut = pd.Timestamp("2024-06-01") + pd.Timedelta(days=45)
    truncated = members_by_day(rows[rows["date"] <= cut], v, snap)
    assert truncated == {d: m for d, m in full.items() if d <= cut}
    _, exclusions = select_universe(rows, snap, {v.name: v}, TOKENS)
    assert set(exclusions["reason"]) == {"30-day mean APY below 3.00% (min_apy_mean_30d)"}


def test_a_day_screened_alone_with_its_lookback_equals_the_backfill():
    """The nightly run of one day (its history row + the fetched history before it) screens like a
    backfill of the whole range: the trailing rules read the lookback rows, which are never returned."""
    rows = history({f"p{i}": list(0.01 * i + 0.002 * np.sin(np.arange(80) / (i + 1))) for i in range(6)})
    snap = pd.DataFrame([pool(f"p{i}") for i in range(6)])
    v = vault(min_apy_mean_30d=0.02, top_pools={"top_n": 2, "window_days": 20, "allow_list": True})
    assert lookback_days({v.name: v}) == 20 + 30
    full = members_by_day(rows, v, snap)
    for day in pd.date_range("2024-06-25", "2024-08-19", freq="9D"):
        alone = members_by_day(rows[rows["date"] == day], v, snap, lookback=rows)
        assert alone == ({day: full[day]} if day in full else {})


def test_flags_on_a_real_2023_pools_snapshot():
    """Real /pools rows (curve LPs, lending pools): each flag rule leaves out exactly the pools the
    snapshot flags, and the first failing rule names the reason."""
    raw = pd.read_csv("recorded/defillama/examples/pools_snapshot_2023.csv")
    frame = snapshot_frame(
        [
            {
                "pool": r.pool,
                "chain": r.chain,
                "project": r.project,
                "symbol": r.symbol,
                "tvl_usd": r.tvlUsd,
                "apy": r.apy,
                "apy_mean_30d": r.apyMean30d,
                "il_risk": r.ilRisk,
                "stablecoin": bool(r.stablecoin),
                "exposure": r.exposure,
            }
            for r in raw.itertuples()
        ]
    )
    from midfreq_assets.domain.ingest.discovery import static_discovery_reasons

    got = pd.Series(
        static_discovery_reasons(frame, vault(exclude_il_risk=True, stablecoin_only=True, exposure="single")),
        index=frame["pool"],
    )
    flagged_il = set(raw.loc[raw["ilRisk"] == "yes", "pool"])
    assert flagged_il and set(got[got == "ilRisk yes (exclude_il_risk)"].index) == flagged_il
    not_stable = set(raw.loc[~raw["stablecoin"].astype(bool), "pool"]) - flagged_il
    assert set(got[got == "not a stablecoin pool (stablecoin_only)"].index) == not_stable
    multi = set(raw.loc[raw["exposure"] == "multi", "pool"]) - flagged_il - not_stable
    assert set(got[got == "exposure multi, vault takes single"].index) == multi
    assert got.isna().sum() == len(raw) - len(flagged_il | not_stable | multi) > 10
