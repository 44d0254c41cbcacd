"""rebalance_weights through Dagster: a range backfill carries holdings day to day with the
backtest's accrual, and a day rerun alone reproduces the range's answer."""

import re

import numpy as np
import pandas as pd
import pytest
from dagster import materialize

from midfreq_assets.defs.vault.rebalance import build_rebalance_assets
from midfreq_assets.domain.portfolio.step import accrue_step
from midfreq_assets.domain.units import DAYS_PER_YEAR
from midfreq_resources.io.lake import stored_days

START, END, RERUN = "2024-06-28", "2024-07-12", "2024-07-06"


@pytest.fixture(scope="module")
def pipe(pipeline_env):
    with pipeline_env() as p:
        features, models, predictions = p.research
        # START is not the calendar's first day: restarting from cash there needs the documented option
        p.rebalance = build_rebalance_assets(
            p.vault.model_copy(update={"on_missing_upstream_days": "tolerate"})
        )
        p.all += p.rebalance
        p.run(p.all, [features], p.first_month, p.last_month)
        p.run(p.all, [models], "2024-06-24", "2024-07-08")
        p.run(p.all, [predictions], p.first_month, p.last_month)
        p.result = p.run(p.all, p.rebalance, START, END)
        yield p


def days(start: str, end: str) -> list[str]:
    return [d.strftime("%Y-%m-%d") for d in pd.date_range(start, end)]


def test_range_backfill_carries_holdings_over(pipe):
    frames = {d: pipe.frame("usd_lending", "rebalance_weights", partition=d) for d in days(START, END)}
    first = frames[START]
    assert first["current_weight"].fillna(0).eq(0).all()  # starts from cash
    assert first["wealth"].iloc[0] == pytest.approx(pipe.vault.backtest.initial_wealth)
    assert first["target_weight"].sum() > 0.5  # invests on day one (predictions exist from 06-24)
    s = pipe.vault.strategy
    for prev_day, day in zip(days(START, END)[:-1], days(START, END)[1:], strict=True):
        prev, cur = frames[prev_day], frames[day]
        assert (cur["target_weight"] <= s.concentration_limit + 1e-6).all()
        assert cur["target_weight"].sum() <= 1 - s.base_buffer + 1e-6
        held = prev[prev["holding_usd"] > 0].set_index("pool")
        hist = pipe.frame("pool_history", partition=day).set_index("pool").reindex(held.index)
        adj = pipe.month_rows("usd_lending", "adjusted_yields", day=day).set_index("pool").reindex(held.index)
        # the vault earns adjusted_apy: IL inside it once, the undiluted parts apart from the pool-paid one
        acc = accrue_step(
            held["holding_usd"].to_numpy(),
            float(prev["base_usd"].iloc[0]),
            adj["adjusted_apy"].to_numpy(),
            hist["tvl_usd"].fillna(held["tvl_usd"]).to_numpy(),
            1 / DAYS_PER_YEAR,
            undiluted_next=(adj["underlying_apy"] + adj["peg_yield"] + adj["il_annual"]).to_numpy(),
            il_next=adj["il_annual"].to_numpy(),
            price_return_next=adj["price_return"].to_numpy(),
            base_rate=pipe.vault.backtest.base_rate,
        )
        assert (cur.set_index("pool").loc[held.index, "earned_apy"] == adj["adjusted_apy"]).all()
        wealth = float(cur["wealth"].iloc[0])
        assert wealth == pytest.approx(acc.wealth, rel=1e-12)
        current = cur.set_index("pool")["current_weight"]
        # day k's current weight is day k-1's target weight after accrual
        np.testing.assert_allclose(current.reindex(held.index).to_numpy(), acc.holdings / wealth, rtol=1e-10)
        np.testing.assert_allclose(
            held["target_weight"].to_numpy() * float(prev["wealth"].iloc[0]),
            held["holding_usd"].to_numpy(),
            rtol=1e-9,
        )
        assert current.drop(held.index, errors="ignore").fillna(0).eq(0).all()
    evaluations = {e.check_name: e.passed for e in pipe.result.get_asset_check_evaluations()}
    # usd_lending is live from 2025-06-05 only: these days are simulated, nothing to reconcile
    assert evaluations == {
        "weights_within_limits": True,
        "positions_reconciled": True,
        "caps_leave_budget_idle": True,
    }
    by_day = {
        e.materialization.partition: e.materialization.metadata
        for e in pipe.result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "usd_lending/rebalance_weights"
    }
    assert sorted(by_day) == days(START, END)  # each day its own numbers
    for day, meta in by_day.items():
        rows = frames[day]
        assert meta["wealth"].value == pytest.approx(float(rows["wealth"].iloc[0]))
        assert meta["invested_share"].value == pytest.approx(1 - float(rows["idle_share"].iloc[0]))
        assert meta["positions_source"].value == "simulated"
    last = by_day[END]  # the run's own figures: on its last day, said so
    assert last["run_optimizer_builds"].value <= len(days(START, END))
    assert last["run_days_from_positions"].value == 0 and "run_days_from_positions" not in by_day[START]
    first_meta = by_day[START]
    trades = first_meta["trades"].value  # an inline table, amounts with separators
    assert [c.name for c in trades.schema.columns][:4] == ["symbol", "project", "chain", "side"]
    assert first_meta["n_trades"].value > 0 and re.fullmatch(
        r"\d{1,3}(,\d{3})+", trades.records[0].data["usd"]
    )
    # the run's inline plots: once, on its last day, small enough for the asset page to draw them
    for plot in ("run_weights_plot", "run_trades_plot"):
        assert plot not in by_day[START]
        assert last[plot].value.startswith("![") and len(last[plot].value) < 1000
    assert "Target weights (share of wealth)" in last["run_weights_plot"].value
    assert len({m["wealth"].value for m in by_day.values()}) == len(
        by_day
    )  # wealth moves: a real time series


def test_rerun_of_one_day_equals_the_range(pipe):
    in_range = pipe.frame("usd_lending", "rebalance_weights", partition=RERUN)
    pipe.run(pipe.all, pipe.rebalance, RERUN)
    alone = pipe.frame("usd_lending", "rebalance_weights", partition=RERUN)
    cols = [c for c in alone.columns if c != "solve_time_s"]
    pd.testing.assert_frame_equal(alone[cols], in_range[cols], rtol=1e-9)


def test_missing_previous_day_fails_loudly_by_default(pipe, tmp_path):
    strict = build_rebalance_assets(pipe.vault)  # on_missing_upstream_days: fail (the default)
    day = "2024-06-27"  # predictions exist; rebalance_weights of 06-26 was never materialized
    upstream = [a for a in pipe.all if a not in pipe.rebalance]
    result = materialize(
        [*upstream, *strict],
        selection=strict,
        resources=pipe.resources,
        instance=pipe.instance,
        partition_key=day,
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error.message
    assert "previous day 2024-06-26 is not in the lake" in failure and "on_missing_upstream_days" in failure
    assert day not in stored_days(pipe.lake, "usd_lending", "rebalance_weights")


def test_caps_that_keep_the_budget_idle_warn_and_are_named(pipe):
    """Chain caps summing to 0.5 with a 0.02 buffer (a config the loader refuses; here built in code, as a
    decision-time case): the rebalance is green but says it, in its metadata, solver message and a WARN check.
    Runs last: it rewrites END."""
    caps = {"Ethereum": 0.2, "Base": 0.1, "Arbitrum": 0.1, "Polygon": 0.05, "Avalanche": 0.05}
    vault = pipe.vault.model_copy(
        update={
            "on_missing_upstream_days": "tolerate",
            "strategy": pipe.vault.strategy.model_copy(update={"chain_caps": caps, "base_buffer": 0.02}),
        }
    )
    assets = build_rebalance_assets(vault)
    others = [a for a in pipe.all if a not in pipe.rebalance]
    result = materialize(
        [*others, *assets],
        selection=assets,
        resources=pipe.resources,
        instance=pipe.instance,
        partition_key=END,
    )
    meta = next(e.materialization.metadata for e in result.get_asset_materialization_events())
    rows = pipe.frame("usd_lending", "rebalance_weights", partition=END)
    forced = meta["caps_idle_share"].value
    assert forced >= 0.98 - 0.5 - 1e-9 and rows["target_weight"].sum() <= 0.5 + 1e-6
    assert (
        "caps leave" in meta["solver_message"].value
        and "chain_caps.Ethereum=0.2" in meta["binding_caps"].value
    )
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "caps_leave_budget_idle")
    assert (
        not check.passed
        and check.severity.value == "WARN"
        and check.metadata["days_over_threshold"].value == 1
    )
    assert next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "weights_within_limits"
    ).passed
