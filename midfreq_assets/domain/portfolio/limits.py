"""Limits that keep the budget idle: caught at config load when they can never hold it, and measured
at decision time on the day's universe.

The vault invests at most its budget ``1 - strategy.base_buffer``. Its caps can make that budget
unreachable:

- at load (:func:`static_cap_problems`), when the caps bound the invested share whatever the data:
  every chain of the vault's ``chains`` has a ``chain_caps`` entry and those caps sum below the
  budget (the vault holds nothing else); the same for ``protocol_caps`` over the vault's
  ``protocols``; ``concentration_limit`` x the number of ``selected_pools`` (an allow-list holds no
  other pool) below the budget. A config whose caps cannot hold the budget is an error naming the
  keys and the sum;
- at decision time (:func:`caps_capacity`), on the day's universe: the most the caps allow
  (concentration limit and TVL share per pool, chain and protocol caps per group) is a small
  linear program, solved exactly (nested groups: a sum over the tree; otherwise HiGHS). What the
  budget exceeds it by is *forced idle*, named with the caps that bind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from midfreq_assets.domain.config.base import normalize_slug
from midfreq_assets.domain.portfolio.strategy import StrategyConfig

#: Caps forcing more than this share of wealth idle (beyond base_buffer) make the decision warn.
CAPS_IDLE_WARN = 0.01
_TOL = 1e-9


def _cap_sum(caps: dict[str, float], members: Sequence[str]) -> tuple[float, list[str]] | None:
    """Sum of the caps of ``members`` when every member is capped (None when one is not)."""
    by_norm = {normalize_slug(k): (k, v) for k, v in caps.items()}
    keys = []
    total = 0.0
    for m in dict.fromkeys(normalize_slug(x) for x in members):
        if m not in by_norm:
            return None
        key, value = by_norm[m]
        keys.append(key)
        total += value
    return total, keys


def static_cap_problems(
    strategy: StrategyConfig,
    chains: Sequence[str],
    protocols: Sequence[str],
    selected_pools: Sequence[str] | None,
) -> list[str]:
    """Caps that can never hold the budget, whatever the day's data (one message per problem, each
    starting with the keys involved)."""
    budget = 1.0 - strategy.base_buffer
    out = []
    for key, caps, members, what in (
        ("chain_caps", strategy.chain_caps, chains, "chains"),
        ("protocol_caps", strategy.protocol_caps, protocols, "protocols"),
    ):
        if not caps or not members:
            continue
        found = _cap_sum(caps, members)
        if found is not None and found[0] < budget - _TOL:
            total, keys = found
            out.append(
                f"strategy.{key}: every one of the vault's {what} is capped ({', '.join(keys)}) and the caps "
                f"sum to {total:g}, below the budget 1 - strategy.base_buffer = {budget:g}: at least "
                f"{budget - total:.4g} of wealth would always stay idle; raise the caps, add an uncapped "
                f"{what[:-1]}, or raise base_buffer"
            )
    if selected_pools:
        total = strategy.concentration_limit * len(selected_pools)
        if total < budget - _TOL:
            out.append(
                f"strategy.concentration_limit: {strategy.concentration_limit:g} x {len(selected_pools)} "
                f"selected_pools = {total:g}, below the budget 1 - strategy.base_buffer = {budget:g}: at "
                f"least {budget - total:.4g} of wealth would always stay idle"
            )
    return out


@dataclass(frozen=True)
class CapsCapacity:
    """What the caps allow on one day's universe."""

    budget: float
    capacity: float  # the largest invested share the caps allow (<= budget)
    pools: int
    binding: tuple[str, ...] = field(default_factory=tuple)

    @property
    def forced_idle(self) -> float:
        """Share of wealth the caps keep idle beyond base_buffer."""
        return max(0.0, self.budget - self.capacity)

    @property
    def message(self) -> str:
        if self.forced_idle <= _TOL:
            return ""
        return (
            f"caps leave {self.forced_idle:.4g} of wealth idle beyond base_buffer: they allow {self.capacity:.4g} "
            f"of the {self.budget:g} budget on the day's {self.pools} pool(s); binding: "
            f"{', '.join(self.binding) or 'none'}"
        )


def _laminar(members: np.ndarray) -> list[int] | None:
    """Group order inner first, or None when two groups overlap without nesting."""
    sizes = members.sum(axis=1)
    for i in range(len(members)):
        for j in range(i + 1, len(members)):
            common = int(np.count_nonzero(members[i] & members[j]))
            if common and common != min(sizes[i], sizes[j]):
                return None
    return list(np.argsort(sizes, kind="stable"))


def _max_sum(hi: np.ndarray, members: np.ndarray, caps: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """max sum(x), 0 <= x <= hi, members @ x <= caps; returns the sum, which groups bind, which pools sit
    at their own bound."""
    order = _laminar(members)
    if order is not None:  # nested or disjoint groups: each group holds min(cap, what its members hold)
        x = hi.astype(float).copy()
        clipped = np.zeros(len(caps), dtype=bool)
        for k in order:
            held = float(x[members[k]].sum())
            if held > caps[k] + _TOL:
                x[members[k]] *= caps[k] / held
                clipped[k] = True
        free = ~members[clipped].any(axis=0) if clipped.any() else np.ones(len(hi), dtype=bool)
        return float(x.sum()), clipped, free & (hi > 0)
    from scipy.optimize import linprog  # overlapping groups (rare): a linear program

    res = linprog(
        -np.ones(len(hi)),
        A_ub=members.astype(float),
        b_ub=caps,
        bounds=list(zip(np.zeros(len(hi)), hi, strict=True)),
        method="highs",
    )
    if res.status != 0:
        return float(hi.sum()), np.zeros(len(caps), dtype=bool), hi > 0
    return float(-res.fun), np.abs(res.ineqlin.marginals) > _TOL, np.abs(res.upper.marginals) > _TOL


def caps_capacity(strategy: StrategyConfig, rows: pd.DataFrame) -> CapsCapacity:
    """What the caps allow on one day of ``rebalance_weights`` rows (``pool, project, chain, tvl_usd,
    in_universe, in_gap, target_weight, wealth``; amounts in the reference asset): pools of the universe
    up to ``concentration_limit`` and ``max_pool_tvl_share`` of their TVL, pools held through a data
    gap at their (frozen) weight, under the chain and protocol caps."""
    budget = 1.0 - strategy.base_buffer
    r = rows[rows["pool"].notna()]
    in_gap = (
        r["in_gap"].fillna(False).astype(bool).to_numpy() if "in_gap" in r else np.zeros(len(r), dtype=bool)
    )
    open_ = r["in_universe"].fillna(False).astype(bool).to_numpy() & ~in_gap
    if not open_.any():
        return CapsCapacity(budget, budget, 0)  # no universe: nothing the caps could be blamed for
    wealth = float(r["wealth"].iloc[0])
    limit, share = strategy.concentration_limit, strategy.max_pool_tvl_share
    tvl = r["tvl_usd"].to_numpy(dtype=float)
    by_tvl = np.full(len(r), math.inf)
    if share is not None and wealth > 0:
        ok = np.isfinite(tvl) & (tvl > 0)
        by_tvl[ok] = share * tvl[ok] / wealth
    hi = np.where(open_, np.minimum(limit, by_tvl), 0.0)
    hi = np.where(in_gap, r["target_weight"].fillna(0.0).to_numpy(dtype=float), hi)
    names, member_rows, caps = [], [], []
    for kind, column, cap_map in (
        ("protocol_caps", "project", strategy.protocol_caps),
        ("chain_caps", "chain", strategy.chain_caps),
    ):
        labels = [normalize_slug(str(v)) for v in r[column].fillna("")] if column in r else [""] * len(r)
        for group, cap in cap_map.items():
            member = np.array([lbl == normalize_slug(group) for lbl in labels], dtype=bool)
            if member.any():
                names.append(f"{kind}.{group}={cap:g}")
                member_rows.append(member)
                caps.append(float(cap))
    members = np.vstack(member_rows) if member_rows else np.zeros((0, len(r)), dtype=bool)
    total, clipped, at_bound = _max_sum(hi, members, np.asarray(caps, dtype=float))
    capacity = min(budget, total)
    binding: list[str] = []
    if capacity < budget - _TOL:
        binding = [n for n, c in zip(names, clipped, strict=True) if c]
        at_limit = at_bound & open_ & (hi >= limit - _TOL)
        at_tvl = at_bound & open_ & (hi < limit - _TOL)
        if at_limit.any():
            binding.append(f"concentration_limit={limit:g} on {int(at_limit.sum())} pool(s)")
        if at_tvl.any():
            binding.append(f"max_pool_tvl_share={share:g} on {int(at_tvl.sum())} pool(s)")
    return CapsCapacity(budget, capacity, int(open_.sum()), tuple(binding))
