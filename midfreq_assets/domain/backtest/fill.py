"""The fill: a benchmark rule's wish list turned into weights under every limit of the strategy.

A rule ranks the pools (and, among pools it ranks equal, says in which proportions it wants them);
the fill invests ``1 - base_buffer`` of wealth in that order under the strategy's own constraint
set, the one :class:`~midfreq_assets.domain.portfolio.optimizer.VaultOptimizer` builds: concentration,
TVL share at the day's wealth (``max_pool_tvl_share * tvl / W``), protocol and chain caps, turnover,
holdings in a data gap frozen, pools without a usable yield or TVL sell-only, then gas and
minimum-trade pruning with the strategy's own rule. What a cap clips is passed on to the next pool.

It is the optimizer's own problem and solvers with the rule's objective (``docs/METHOD.md``
"Benchmarks")::

    maximize   a.x - c |x - x0| - sum_i q_i x_i^2     under the strategy's constraints

- rank-and-fill (no profile): ``a_i`` = the rule's score, ``q = 0``. A linear objective over the
  box, the budget and laminar (disjoint or nested) group caps is a polymatroid, where the greedy
  fill is optimal: pools in decreasing score, each up to its tightest limit (its own bound, what is
  left of its groups' caps, what is left of the budget); the exact solver returns exactly that in
  one O(n log n) pass (ties share pro rata to their room);
- water-filling (profile ``w``): pools of equal score form a tier filled in proportion to ``w``
  (``x_i = min(room_i, L w_i)``, one level L per tier, a capped group's pools their own lower
  level, so what a cap clips goes to the tier's other pools), tiers one after the other:
  ``q_i = 1 / (2 w_i)`` and ``a_i = A_T``, the tier's level, with ``A_T = A_{T+1} + max_{i in T}
  hi_i / w_i + 1`` so a tier is full before the next one starts;
- a band ``c`` (the amortized cost, per year): a held unit is worth ``a + c``, a new one ``a - c``,
  so a unit moves from pool j to pool i only if ``a_i - a_j > 2 c``;
- ``keep``: current holdings, trimmed to the limits, are lower bounds (the incumbent rule).

A turnover cap ``sum |x - x0| <= T`` is priced by its multiplier (the optimizer's own exact path,
``optimizer.turnover_capped``): the same exact solve with the
cost ``c + mu``, ``mu`` found by bisection where the turnover crosses T, and the two solutions
either side of it mixed to spend exactly T (both are optimal at ``mu``, so the mix is the capped
optimum): the most valuable trades are made first. Overlapping (non-nested) group caps go to the
optimizer's cvxpy solvers (there rank-and-fill is the LP optimum, which may differ from the
greedy order).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from midfreq_assets.domain.portfolio.optimizer import (
    MAX_PRUNE_RESOLVES,
    SolverFailure,
    VaultOptimizer,
    _clean_inputs,
    _freeze,
    _Inputs,
)


@dataclass(frozen=True)
class FillRule:
    """What a rule asks of the fill, per pool of the optimizer."""

    #: higher is filled first; NaN or <= 0: not bought (held: sell-only)
    score: np.ndarray
    #: water-fill the pools of equal score in these proportions (None: one by one, rank-and-fill)
    profile: np.ndarray | None = None
    #: per year: a held unit is kept unless another pool scores 2 band more (rank-and-fill only)
    band: float = 0.0
    #: current holdings (within the limits) are kept: only freed money is re-deployed
    keep: bool = False


def fill_weights(
    optimizer: VaultOptimizer,
    rule: FillRule,
    tvl: np.ndarray,
    wealth: float,
    current_weights: np.ndarray,
    *,
    gain_apy: np.ndarray,
    frozen: np.ndarray | None = None,
) -> np.ndarray:
    """Weights of ``rule`` under every constraint of ``optimizer.strategy``.

    ``gain_apy`` is the yield the rule expects per pool (its trailing earned APY): pools where it is
    not finite, or above ``strategy.max_predicted_apy``, are sell-only (the optimizer's own rule),
    and gas / minimum-trade pruning weighs each trade's expected gain over the horizon with it, as
    the strategy does with its predictions. ``frozen`` pools keep their weight (a data gap)."""
    score = np.asarray(rule.score, dtype=float)
    gain = np.asarray(gain_apy, dtype=float)
    with np.errstate(invalid="ignore"):
        wanted = np.isfinite(score) & (score > 0)
    inp = _clean_inputs(
        optimizer.strategy, np.where(wanted, gain, np.nan), tvl, wealth, current_weights, optimizer.costs
    )
    if frozen is not None and np.any(frozen):
        inp = _freeze(inp, np.asarray(frozen, dtype=bool))
    cand = wanted & inp.buyable & (inp.hi > inp.lo)
    if rule.keep:  # holdings sold into the limits are lower bounds (a hair below: float slack in the sums)
        kept = np.minimum(optimizer._sell_into_constraints(inp, inp.x0), inp.hi) * (1.0 - 1e-12)
        inp = replace(inp, lo=np.where(inp.lo == inp.hi, inp.lo, np.maximum(kept, inp.lo)))
    a, q = _rule_objective(rule, score, cand, inp.hi)
    if rule.profile is not None and rule.band:
        raise ValueError("a band (in APY units) needs a rank-and-fill rule (no profile)")
    fill_inp = replace(inp, a=a, q=q, c=float(rule.band))
    turnover = optimizer.strategy.max_turnover
    if turnover is not None:  # relaxed to what feasibility needs, as VaultOptimizer.solve does
        turnover = max(turnover, float(np.abs(optimizer._feasible_holdings(fill_inp) - inp.x0).sum()) + 1e-9)
    x = _solve(optimizer, fill_inp, turnover)
    if optimizer.costs.prunes:
        x = _prune(
            optimizer,
            fill_inp,
            replace(fill_inp, a=np.where(cand, np.maximum(np.nan_to_num(gain), 0.0), 0.0)),
            x,
            turnover,
        )
    return x


def _rule_objective(
    rule: FillRule, score: np.ndarray, cand: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(a, q) of the fill problem; pools that are not candidates get ``a = q = 0`` (kept only when
    nothing else can use the room, never bought)."""
    n = len(score)
    a, q = np.zeros(n), np.zeros(n)
    if not cand.any():
        return a, q
    if rule.profile is None:
        a[cand] = score[cand]
        return a, q
    w = np.asarray(rule.profile, dtype=float)
    ok = cand & np.isfinite(w) & (w > 0)
    if not ok.any():
        return a, q
    w = w[ok] / w[ok].max()
    _, tier = np.unique(-score[ok], return_inverse=True)  # tier 0: the highest score
    span = np.zeros(tier.max() + 1)
    np.maximum.at(span, tier, hi[ok] / w)  # the level range over which each tier fills
    level = np.cumsum((span + 1.0)[::-1])[::-1]  # A_T = A_{T+1} + span_T + 1; the last one full at 0
    a[ok] = level[tier]
    q[ok] = 0.5 / w
    return a, q


def _solve(optimizer: VaultOptimizer, inp: _Inputs, turnover: float | None) -> np.ndarray:
    try:
        return _solve_once(optimizer, inp, turnover)
    except SolverFailure:
        return optimizer._feasible_holdings(inp)


def _solve_once(optimizer: VaultOptimizer, inp: _Inputs, turnover: float | None) -> np.ndarray:
    """The optimizer's own chain: its exact solver (a turnover cap priced by its multiplier), else cvxpy."""
    return optimizer._solve_once(inp, turnover)[0]


def _prune(
    optimizer: VaultOptimizer, inp: _Inputs, gain_inp: _Inputs, x: np.ndarray, turnover: float | None
) -> np.ndarray:
    """The strategy's pruning (``VaultOptimizer._prune``) with the fill's objective: trades whose
    expected gain over the horizon is below ``gas_multiple * gas`` or whose notional is below
    ``min_trade_usd`` are frozen and the rest re-filled (what they would have taken goes to the next
    pools), at most ``MAX_PRUNE_RESOLVES`` times; what is still small is then dropped, keeping
    every constraint."""
    small = optimizer._small_trades(gain_inp, x)
    fixed = np.zeros(len(x), dtype=bool)
    for _ in range(MAX_PRUNE_RESOLVES):
        if not small.any():
            return x
        fixed |= small
        lo, hi = np.where(fixed, inp.x0, inp.lo), np.where(fixed, inp.x0, inp.hi)
        if lo.sum() > inp.budget + 1e-12 or (
            optimizer.group_matrix.shape[0]
            and np.any(optimizer.group_matrix @ lo > optimizer.group_caps + 1e-12)
        ):
            break
        try:
            x = _solve_once(optimizer, replace(inp, lo=lo, hi=hi), turnover)
        except SolverFailure:
            break
        small = optimizer._small_trades(gain_inp, x)
    if small.any():
        x, _ = optimizer._drop_small(gain_inp, x, small)
    return x
