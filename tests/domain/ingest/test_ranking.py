"""The top_pools ranking: daily rank <= N over the window *before* each day, as the original did."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from midfreq_assets.domain.config.tokens import load_token_registry
from midfreq_assets.domain.config.vault import load_vault_config
from midfreq_assets.domain.ingest.ranking import (
    RANKING_REASON_PREFIX,
    TopPoolsConfig,
    daily_ranks,
    ranking_columns,
    ranking_table,
)
from midfreq_assets.domain.ingest.universe import select_universe

DAY0 = pd.Timestamp("2024-06-01")


def rows(apy: dict[str, list[float]]) -> pd.DataFrame:
    return pd.concat(
        [
            pd.DataFrame({"date": pd.date_range(DAY0, periods=len(v), freq="D"), "pool": k, "apy": v})
            for k, v in apy.items()
        ],
        ignore_index=True,
    )


def picked_on(frame: pd.DataFrame, cfg: TopPoolsConfig, eligible=None) -> dict[pd.Timestamp, set[str]]:
    ranked = ranking_columns(frame, np.ones(len(frame), bool) if eligible is None else eligible, cfg)
    out = frame.assign(picked=ranked["picked"], complete=ranked["complete"])
    return {d: set(g.loc[g["picked"], "pool"]) for d, g in out.groupby("date") if g["complete"].all()}


def test_daily_ranks_skip_ineligible_and_share_ties():
    values = pd.DataFrame({"a": [0.05, 0.04], "b": [0.05, 0.09], "c": [0.10, np.nan]})
    eligible = pd.DataFrame({"a": [True, True], "b": [True, True], "c": [False, True]})
    ranks = daily_ranks(values, eligible)
    assert ranks.iloc[0].tolist()[:2] == [1.0, 1.0] and np.isnan(ranks.iloc[0, 2])  # c not eligible on day 0
    assert ranks.iloc[1].tolist()[:2] == [2.0, 1.0] and np.isnan(ranks.iloc[1, 2])  # no value on day 1


def test_the_window_is_strictly_before_the_day_it_feeds():
    # "spike" tops the ranking on day 10 only; window 5 days, top 1
    apy = {"base": [0.05] * 20, "spike": [0.01] * 10 + [0.50] + [0.01] * 9}
    cfg = TopPoolsConfig(top_n=1, window_days=5)
    got = picked_on(rows(apy), cfg)
    assert min(got) == DAY0 + pd.Timedelta(days=5)  # first day with a complete window
    assert "spike" not in got[DAY0 + pd.Timedelta(days=10)]  # its own day's APY is not used
    for k in range(11, 16):
        assert got[DAY0 + pd.Timedelta(days=k)] == {"base", "spike"}
    assert got[DAY0 + pd.Timedelta(days=16)] == {"base"}  # out of the window again


def test_min_days_in_top_and_the_point_in_time_property():
    rng = np.random.default_rng(3)
    apy = {f"p{i}": list(0.03 + 0.01 * rng.standard_normal(60)) for i in range(8)}
    frame = rows(apy)
    cfg = TopPoolsConfig(top_n=3, window_days=10, min_days_in_top=4)
    full = picked_on(frame, cfg)
    assert all(len(p) <= 3 * 10 // 4 for p in full.values())
    cut = DAY0 + pd.Timedelta(days=35)
    assert picked_on(frame[frame["date"] <= cut], cfg) == {d: p for d, p in full.items() if d <= cut}
    with pytest.raises(ValidationError, match="min_days_in_top"):
        TopPoolsConfig(window_days=5, min_days_in_top=6)


def test_the_table_as_of_a_day_is_that_days_allow_list():
    rng = np.random.default_rng(7)
    frame = rows({f"p{i}": list(0.02 + 0.005 * i + 0.01 * rng.standard_normal(50)) for i in range(10)})
    cfg = TopPoolsConfig(top_n=2, window_days=15)
    allow = picked_on(frame, cfg)
    for day in (DAY0 + pd.Timedelta(days=k) for k in (15, 30, 49)):
        table = ranking_table(frame, cfg, day)
        assert set(table.loc[table["picked"], "pool"]) == allow[day]
        assert table["window_start"].iloc[0] == day - pd.Timedelta(days=15)
        assert table["window_end"].iloc[0] == day - pd.Timedelta(days=1) and table["as_of"].iloc[0] == day
        assert table["rank"].tolist() == list(range(1, len(table) + 1))
        assert table["picked"].is_monotonic_decreasing
    assert ranking_table(frame, cfg, DAY0 + pd.Timedelta(days=14)).empty  # window not covered by data


def test_universe_allow_list_ranks_the_pools_passing_every_other_rule():
    """On real recorded pools: excluded pools are never ranked, each exclusion names its window,
    and the first days without a complete window hold nothing."""
    from midfreq_assets.domain.backtest.engine import load_recorded

    hist, snap = load_recorded("recorded")
    base = load_vault_config("configs/vaults/usd_lending.yaml")
    vault = base.model_copy(
        update={"name": "ranked", "top_pools": TopPoolsConfig(top_n=5, window_days=30, allow_list=True)}
    )
    members, exclusions = select_universe(
        hist, snap, {"ranked": vault, "usd_lending": base}, load_token_registry()
    )
    ranked = members[members["vaults"].map(lambda v: "ranked" in v)]
    plain = members[members["vaults"].map(lambda v: "usd_lending" in v)]
    first = hist["date"].min()
    assert ranked["date"].min() == first + pd.Timedelta(days=30)
    assert set(ranked["pool"]) <= set(plain["pool"])  # a subset of the universe without the allow-list
    mine = exclusions[exclusions["vault"] == "ranked"]
    by_ranking = mine[mine["reason"].str.startswith(RANKING_REASON_PREFIX)]
    later = by_ranking[by_ranking["date"] >= first + pd.Timedelta(days=30)]
    assert (
        len(later) and later["reason"].str.contains(r"rank <= 5 by daily apy on >= 1 of 30 days \d{4}-").all()
    )
    day = pd.Timestamp("2025-01-15")
    table = ranking_table(plain[["date", "pool", "apy"]], vault.top_pools, day)
    assert set(table.loc[table["picked"], "pool"]) == set(ranked.loc[ranked["date"] == day, "pool"])
