"""One book, two adapters: the nightly ``decide_range`` over a range of days and the backtest over the
same days (same vault, predictions and data, daily cadence, from the same cash) hold the same
weights and wealth; a range split in two (the second from the first's stored rows) is the range.

The scenario has pools entering and leaving the universe, a held pool with a short data gap (kept,
accruing at its last yield) and a long one (sold on its 4th missing day), days without a universe
(everything sold, then cash rows), a protocol cap, gas, and an ETH-counted variant (TVLs and gas in
ETH at a moving price)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.backtest import engine as bt
from midfreq_assets.domain.config.vault import load_vault_config
from midfreq_assets.domain.portfolio.book import BookPanels, BookSeed, VaultBook, gap_panels
from midfreq_assets.domain.portfolio.nightly import COLUMNS, CarriedState, decide_range

BASE = load_vault_config("configs/vaults/usd_lending.yaml")
DAYS = pd.date_range("2025-03-01", periods=30, freq="D")
PROJECT = {"a": "aave-v3", "b": "aave-v3", "c": "euler", "d": "euler", "e": "spark", "f": "morpho-blue"}
D_ENTERS, E_LEAVES = 8, 12  # "d" joins the universe on day 8, "e" leaves it on day 12 (still reported)
SHORT_GAP, LONG_GAP = [15, 16], list(range(20, 26))  # "f" has no data on those days
NO_UNIVERSE = [26, 27]


def vault(reference_asset: str = "usd"):
    strategy = BASE.strategy.model_copy(
        update={
            "gas_usd": 5.0,
            "min_trade_usd": 0.0,
            "concentration_limit": 0.3,
            "protocol_caps": {"euler": 0.35},
            "chain_caps": {},
            "max_gap_days": 3,
        }
    )
    backtest = BASE.backtest.model_copy(
        update={"initial_wealth": 2_000_000.0, "base_rate": 0.02, "rebalance_every_days": 1}
    )
    return BASE.model_copy(
        update={"reference_asset": reference_asset, "strategy": strategy, "backtest": backtest}
    )


def frames(reference_asset: str = "usd"):
    """(predictions, universe, history, adjusted) long frames, as rebalance_weights receives them."""
    rng = np.random.default_rng(7)
    rows = pd.DataFrame([(d, p) for d in DAYS for p in PROJECT], columns=["date", "pool"])
    t = rows["date"].map({d: i for i, d in enumerate(DAYS)}).to_numpy()
    pool = rows["pool"].to_numpy()
    reported = ~((pool == "f") & np.isin(t, SHORT_GAP + LONG_GAP))
    member = (
        reported
        & ~((pool == "d") & (t < D_ENTERS))
        & ~((pool == "e") & (t >= E_LEAVES))
        & ~np.isin(t, NO_UNIVERSE)
    )
    bias = pd.Series({"a": 0.0, "b": -0.01, "c": 0.02, "d": 0.025, "e": 0.015, "f": 0.03})
    apy = 0.04 + bias[pool].to_numpy() + 0.01 * rng.standard_normal(len(rows))
    tvl = rng.uniform(2e7, 8e7, len(rows))
    price = 3000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, len(DAYS))))
    history = rows.assign(apy=apy, tvl_usd=tvl, il7d=np.nan)[reported]
    adjusted = history[["date", "pool"]].assign(
        adjusted_apy=history["apy"] - 0.004,
        underlying_apy=0.003,
        peg_yield=0.0,
        il_annual=-0.004,
        price_return=rng.normal(0.0, 1e-3, len(history)),
        reference_price=history["date"].map(dict(zip(DAYS, price, strict=True)))
        if reference_asset != "usd"
        else np.nan,
    )
    universe = rows[member].assign(
        symbol="USDC",
        project=lambda f: f["pool"].map(PROJECT),
        chain="Ethereum",
        tvl_usd=tvl[member],
        vaults=[[BASE.name]] * int(member.sum()),
    )
    predictions = rows[member].assign(predicted_apy=apy[member] + 0.002)  # what a naive model would say
    return predictions, universe, history, adjusted


def backtest(v, predictions, universe, history, adjusted) -> bt.BacktestResult:
    inputs = bt.BacktestInputs.from_long(bt.with_adjusted_apy(history, adjusted), v, universe)
    wide = predictions.pivot(index="date", columns="pool", values="predicted_apy")
    return bt.run_backtest(inputs, wide, v.strategy, v.backtest)


@pytest.mark.parametrize("reference_asset", ["usd", "eth"])
def test_nightly_range_and_backtest_hold_the_same_weights_and_wealth(reference_asset):
    v = vault(reference_asset)
    data = frames(reference_asset)
    rows, decisions, optimizers = decide_range(v, DAYS, None, *data)
    result = backtest(v, *data)
    assert list(rows.columns) == COLUMNS and len(decisions) == len(DAYS) and optimizers.builds >= 2

    wealth = rows.drop_duplicates("date").set_index("date")["wealth"]
    np.testing.assert_allclose(wealth.to_numpy(), result.wealth.to_numpy(), rtol=1e-9)
    nightly = rows[rows["pool"].notna()].pivot(index="date", columns="pool", values="target_weight")
    # the backtest's last day only accrues
    nightly = nightly.reindex(index=DAYS[:-1], columns=list(PROJECT)).fillna(0.0)
    held = result.weight_panel().reindex(index=DAYS[:-1], columns=list(PROJECT)).fillna(0.0)
    np.testing.assert_allclose(nightly.to_numpy(), held.to_numpy(), rtol=1e-9, atol=1e-12)

    # the scenario does what it says
    day = {d: g.set_index("pool") for d, g in rows.groupby("date")}
    assert all(
        day[DAYS[t]].loc["d", "holding_usd"] == 0 for t in range(D_ENTERS) if "d" in day[DAYS[t]].index
    )
    assert (
        (held["d"] > 0).any()
        and (held.loc[DAYS[E_LEAVES] :, "e"] == 0).all()
        and (held.loc[: DAYS[E_LEAVES - 1], "e"] > 0).any()
    )
    for t in SHORT_GAP + LONG_GAP[:3]:  # kept through a gap of up to 3 days: no trade, its last yield
        f = day[DAYS[t]].loc["f"]
        assert f["in_gap"] and f["holding_usd"] > 0 and f["trade_usd"] == 0 and not f["in_universe"]
        assert f["earned_apy"] == day[DAYS[t - 1]].loc["f", "earned_apy"]
    sold = day[DAYS[LONG_GAP[3]]].loc["f"]  # the 4th missing day: sold
    assert not sold["in_gap"] and sold["holding_usd"] == 0 and sold["trade_usd"] < 0
    assert day[DAYS[NO_UNIVERSE[1]]]["solver_status"].tolist() == ["no_universe"]
    steps = result.steps.set_index("date")
    assert (
        steps.loc[DAYS[SHORT_GAP[0]], "n_held_in_gap"] == 1
        and steps.loc[DAYS[LONG_GAP[3]], "forced_sales"] == 1
    )
    if reference_asset != "usd":  # amounts in ETH: each trade pays 5 USD of gas at that day's price
        n_trades = rows["trade_usd"].abs().gt(0).groupby(rows["date"]).sum()
        per_day = rows.drop_duplicates("date").set_index("date")
        np.testing.assert_allclose(
            per_day["gas_usd"] * per_day["reference_price"], 5.0 * n_trades, rtol=1e-12
        )
        assert n_trades.sum() > 0 and per_day["reference_price"].nunique() > 1


@pytest.mark.parametrize("split", [SHORT_GAP[0], LONG_GAP[1], NO_UNIVERSE[1], 0])
def test_a_range_split_in_two_is_the_range(split):
    v = vault("eth")
    data = frames("eth")
    whole, _, _ = decide_range(v, DAYS, None, *data)
    first, _, _ = decide_range(v, DAYS[: split + 1], None, *data)
    state = CarriedState.from_rows(first[first["date"] == DAYS[split]])
    second, _, _ = decide_range(v, DAYS[split + 1 :], state, *data)
    joined = pd.concat([first, second], ignore_index=True)
    cols = [c for c in COLUMNS if c != "solve_time_s"]
    pd.testing.assert_frame_equal(joined[cols], whole[cols], check_exact=False, rtol=1e-12, atol=1e-9)


def test_the_gap_rule_seeded_by_what_the_carried_state_knew():
    """A pool last seen two days before the panel starts is in a gap for two more days (max 3), at the
    yield and TVL the seed carries; one whose last row was out of the universe is not kept; an
    unknown last row counts as a gap only when asked (the nightly run's real positions)."""
    T, N = 4, 3
    reported = np.zeros((T, N), dtype=bool)
    reported[2:, 2] = True
    panels = BookPanels(
        ("a", "b", "c"),
        np.arange(10.0, 10.0 + T),
        np.full(T, 1 / 365),
        np.full((T, N), np.nan),
        np.full((T, N), np.nan),
        reported.copy(),
        reported,
    )
    seed = BookSeed(
        np.array([1.0, 1.0, 1.0]),
        0.0,
        last_seen=np.array([8.0, 8.0, np.nan]),
        last_in_universe=np.array([True, False, True]),
        last_yield=np.array([[0.05, 0.06, np.nan], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
        last_tvl=np.array([1e6, 2e6, np.nan]),
    )
    g = gap_panels(panels, 3, seed)
    assert g.hold[:, 0].tolist() == [True, True, False, False]  # days 10, 11 are 2 and 3 days after day 8
    assert not g.hold[:, 1].any()  # out of the universe on its last row: sold, not kept (dust left earns)
    assert g.earned[0, 0] == 0.05 and g.tvl_accrue[0, 0] == 1e6 and g.earned[0, 1] == 0.06
    assert np.isnan(g.earned[2, 0])  # day 12 is 4 days after day 8: no yield carried
    assert not g.hold[:, 2].any() and gap_panels(panels, 3, seed, unseen_in_gap=True).hold[:2, 2].all()
    book = VaultBook(panels, BASE.strategy, base_rate=0.0, seed=seed)
    acc = book.accrue(0)
    assert acc.holdings[0] == pytest.approx(np.exp(0.05 / 365)) and book.expected is acc.holdings


def test_a_depth_panel_dilutes_the_accrual():
    """The responses' depth (a lending market's curve) replaces the TVL in the accrual's dilution."""
    T, N = 2, 1
    reported = np.ones((T, N), dtype=bool)
    args = (
        ("a",),
        np.arange(2.0),
        np.full(T, 1 / 365),
        np.full((T, N), 0.05),
        np.full((T, N), 1e6),
        reported,
        reported,
    )
    seed = BookSeed(np.array([1e6]), 0.0)
    plain = VaultBook(BookPanels(*args), BASE.strategy, base_rate=0.0, seed=seed).accrue(1)
    deep = VaultBook(
        BookPanels(*args, depth=np.full((T, N), 9e6)), BASE.strategy, base_rate=0.0, seed=seed
    ).accrue(1)
    assert plain.holdings[0] == pytest.approx(1e6 * np.exp(0.05 * 0.5 / 365))
    assert deep.holdings[0] == pytest.approx(1e6 * np.exp(0.05 * 0.9 / 365))


def lending_markets(pools=("a", "c"), seed: int = 3) -> pd.DataFrame:
    """Synthetic pool_lend_borrow rows of two lending markets over the 100 days before DAYS and DAYS."""
    from midfreq_assets.domain.yields.response import KinkedCurve

    rng = np.random.default_rng(seed)
    days = pd.date_range(DAYS[0] - pd.Timedelta(days=100), DAYS[-1])
    curve = KinkedCurve(*(np.array([v]) for v in (0.0, 0.06, 0.6, 0.9, 0.1)))
    rows = []
    for p in pools:
        u = np.clip(0.86 + 0.03 * rng.standard_normal(len(days)), 0.6, 0.97)
        borrow = curve.borrow_rate(u)
        rows.append(
            pd.DataFrame(
                {
                    "date": days,
                    "pool": p,
                    "total_supply_usd": 4e8,
                    "total_borrow_usd": 4e8 * u,
                    "apy_base_borrow": borrow,
                    "apy_base": borrow * u * 0.9,
                    "utilization": u,
                    "flag": None,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_with_the_lending_curves_nightly_and_backtest_still_agree_and_size_by_supply():
    from midfreq_assets.domain.yields.response import with_responses

    v = vault()
    predictions, universe, history, adjusted = frames()
    curved = with_responses(history, lending_markets(), v.yields.rate_curves)
    assert set(curved.loc[curved["pool"].isin(["a", "c"]), "response_method"]) == {"curve"}
    assert (curved.loc[~curved["pool"].isin(["a", "c"]), "response_method"] == "tvl_share").all()
    rows, _, _ = decide_range(v, DAYS, None, predictions, universe, curved, adjusted)
    result = backtest(v, predictions, universe, curved, adjusted)
    wealth = rows.drop_duplicates("date").set_index("date")["wealth"]
    np.testing.assert_allclose(wealth.to_numpy(), result.wealth.to_numpy(), rtol=1e-9)
    plain, _, _ = decide_range(v, DAYS, None, predictions, universe, history, adjusted)
    held = rows[rows["pool"] == "a"].set_index("date")["tvl_usd"]
    assert (held == 4e8).all()  # a lending market's size base is its supply
    assert not np.allclose(
        rows["target_weight"].fillna(0).to_numpy(), plain["target_weight"].fillna(0).to_numpy()
    )
