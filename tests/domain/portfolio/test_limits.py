"""What the caps allow on a day's universe: nested groups summed over the tree, overlapping groups by
a linear program, the binding caps named; and the load-time check of caps that can never hold the budget."""

from __future__ import annotations

import pandas as pd
import pytest

from midfreq_assets.domain.portfolio.limits import caps_capacity, static_cap_problems
from midfreq_assets.domain.portfolio.strategy import StrategyConfig


def rows(chains, projects, tvl=None, wealth=1_000_000.0, in_universe=None) -> pd.DataFrame:
    n = len(chains)
    return pd.DataFrame(
        {
            "pool": [f"p{i}" for i in range(n)],
            "chain": chains,
            "project": projects,
            "tvl_usd": tvl if tvl is not None else [1e9] * n,
            "wealth": wealth,
            "in_universe": in_universe if in_universe is not None else [True] * n,
            "in_gap": False,
            "target_weight": 0.0,
        }
    )


def test_chain_caps_summing_below_the_budget_force_idle_and_are_named():
    s = StrategyConfig(base_buffer=0.02, concentration_limit=0.3, chain_caps={"Ethereum": 0.3, "Base": 0.2})
    cap = caps_capacity(s, rows(["Ethereum"] * 4 + ["Base"] * 2, ["aave-v3"] * 6))
    assert cap.capacity == pytest.approx(0.5) and cap.forced_idle == pytest.approx(0.48)
    assert cap.binding == ("chain_caps.Ethereum=0.3", "chain_caps.Base=0.2")
    assert "caps leave 0.48 of wealth idle" in cap.message and "chain_caps.Ethereum=0.3" in cap.message


def test_concentration_and_tvl_share_bind_on_a_small_universe():
    s = StrategyConfig(base_buffer=0.0, concentration_limit=0.25, max_pool_tvl_share=0.05)
    # two pools at the concentration limit, one whose TVL allows only 0.05 x 2M / 1M = 0.1
    cap = caps_capacity(s, rows(["Ethereum"] * 3, ["aave-v3"] * 3, tvl=[1e9, 1e9, 2e6]))
    assert cap.capacity == pytest.approx(0.6) and cap.pools == 3
    assert cap.binding == ("concentration_limit=0.25 on 2 pool(s)", "max_pool_tvl_share=0.05 on 1 pool(s)")
    # enough pools: nothing forced
    assert caps_capacity(s, rows(["Ethereum"] * 5, ["aave-v3"] * 5)).forced_idle == 0.0


def test_nested_and_overlapping_groups():
    s = StrategyConfig(
        base_buffer=0.0, concentration_limit=1.0, protocol_caps={"aave-v3": 0.2}, chain_caps={"Ethereum": 0.5}
    )
    # aave-v3 only on Ethereum: nested groups; Ethereum holds 0.5, of which aave at most 0.2
    nested = caps_capacity(
        s, rows(["Ethereum", "Ethereum", "Base"], ["aave-v3", "morpho-blue", "morpho-blue"])
    )
    assert nested.capacity == pytest.approx(1.0)  # Base is uncapped
    two = caps_capacity(
        s.model_copy(update={"concentration_limit": 0.1}),
        rows(["Ethereum", "Ethereum", "Base"], ["aave-v3", "morpho-blue", "morpho-blue"]),
    )
    assert two.capacity == pytest.approx(0.3) and two.binding == ("concentration_limit=0.1 on 3 pool(s)",)
    # aave-v3 on two chains, Ethereum holding another protocol: overlapping groups (a linear program)
    lp = caps_capacity(
        s.model_copy(update={"concentration_limit": 0.4}),
        rows(["Ethereum", "Base", "Ethereum"], ["aave-v3", "aave-v3", "morpho-blue"]),
    )
    assert lp.capacity == pytest.approx(0.6)  # aave 0.2 in all + morpho on Ethereum 0.4
    assert "protocol_caps.aave-v3=0.2" in lp.binding


def test_no_universe_is_not_blamed_on_the_caps():
    s = StrategyConfig(concentration_limit=0.1)
    cap = caps_capacity(s, rows(["Ethereum"], ["aave-v3"], in_universe=[False]))
    assert cap.forced_idle == 0.0 and cap.message == ""


def test_static_problems_only_when_every_member_is_capped():
    s = StrategyConfig(base_buffer=0.02, chain_caps={"ethereum": 0.4, "Base": 0.4})
    assert static_cap_problems(s, ["Ethereum", "Base"], ["aave-v3"], None)[0].startswith(
        "strategy.chain_caps: every one of the vault's chains is capped (ethereum, Base) and the caps sum to 0.8"
    )
    assert static_cap_problems(s, ["Ethereum", "Base", "Arbitrum"], ["aave-v3"], None) == []
    assert (
        static_cap_problems(s.model_copy(update={"base_buffer": 0.2}), ["Ethereum", "Base"], [], None) == []
    )
    assert static_cap_problems(StrategyConfig(concentration_limit=0.5), ["E"], ["a"], ["p1", "p2"]) == []
