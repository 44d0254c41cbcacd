"""Rebalancing optimizer (formulas: ``docs/METHOD.md`` "Rebalancing").

One convex problem per rebalance date, in weights of wealth ``W``::

    maximize   a.x - c.|x - x0| - x' diag(a W / tvl) x
    subject to sum(x) <= 1 - base_buffer,  0 <= x <= concentration_limit
               (+ optional protocol/chain caps, pool-TVL share, turnover cap)

``c = cost / (horizon_days / 365)`` amortizes the one-off trading cost over the holding horizon so
it is in the same units (per year) as the APY ``a``; the quadratic term is yield dilution.

Plain Python (no dagster): the nightly asset and the backtest both build one
:class:`VaultOptimizer` per universe and call :meth:`VaultOptimizer.solve` every step, so
production decisions and backtested decisions come from the same code.

Two solvers give the same answer:

- an exact specialised solver (protocol caps, chain caps, or both when they
  nest, i.e. any laminar family of groups; per-pool TVL share is a per-pool bound): the
  Lagrangian of the budget splits into per-pool piecewise-quadratic 1-D problems with a
  closed-form solution; the budget multiplier is found exactly from the sorted breakpoints of the
  piecewise-linear total-weight curve (no iterative tolerance). A group cap is exactly a tighter
  upper bound per pool, from the group's own exact solve (:func:`solve_nested`). A turnover cap
  ``sum |x - x0| <= T`` is priced by its multiplier: the same solve with the cost ``c + mu``, ``mu``
  bisected where the turnover crosses T, the two solutions either side mixed to spend exactly T
  (:func:`turnover_capped`; the Lagrangian of a concave separable problem);
- a DPP cvxpy problem built once per universe with ``cp.Parameter``s and re-solved with new
  values (warm start), used with overlapping (non-nested) group caps, and as fallback.

Gas / min-trade pruning freezes small and idle trades and re-solves at most
:data:`MAX_PRUNE_RESOLVES` times, then drops what is still small without re-solving.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cvxpy as cp
import numpy as np
import pandas as pd

from midfreq_assets.domain.config.base import normalize_slug
from midfreq_assets.domain.portfolio.costs import TradingCosts
from midfreq_assets.domain.portfolio.reductions import add_reduce as _sum
from midfreq_assets.domain.portfolio.reductions import and_reduce as _all
from midfreq_assets.domain.portfolio.reductions import or_reduce as _any
from midfreq_assets.domain.portfolio.strategy import StrategyConfig

#: Solver noise below this (in weight) is snapped back to "no trade".
SNAP_TOL = 1e-9
# Solver tolerances and the feasibility tolerance of an answer: ``strategy.solver_options`` and
# ``strategy.feasibility_tolerance`` (defaults in ``portfolio/strategy.py``).
#: Dilution coefficients below this are treated as zero by the exact solver (linear pool); the
#: objective error is at most this value, and it avoids 1/(2q) blowing up.
Q_EPS = 1e-9
#: Gas pruning re-solves per rebalance at most (then small trades are dropped without re-solving).
MAX_PRUNE_RESOLVES = 2


# Reductions without the ndarray-method dispatch (a few us each at ~100 elements, which matters
# when a whole solve is ~100 us).
#: ``normalize_slug`` of the few labels a vault has, remembered (an optimizer is rebuilt whenever the
#: day's pool set changes: ~100 times a year per backtest).
_slug = functools.lru_cache(maxsize=4096)(normalize_slug)

_cumsum = np.add.accumulate


@dataclass(frozen=True)
class RebalanceResult:
    """One rebalance decision. Weights are fractions of wealth; the rest of W stays idle."""

    pools: tuple[str, ...]
    target_weights: np.ndarray
    current_weights: np.ndarray
    trades_usd: np.ndarray
    objective: float
    status: str  # 'optimal' | 'optimal_fallback_solver' | 'kept_holdings'
    solver: str  # 'exact_separable' | cvxpy solver name | 'none'
    solve_time_s: float
    message: str
    dilution_factor: np.ndarray  # 1 / (1 + x_i W / tvl_i); NaN where the TVL is unknown
    n_pruned: int  # trades dropped for gas / min trade size

    @property
    def ok(self) -> bool:
        return self.status != "kept_holdings"

    @property
    def n_trades(self) -> int:
        """Transactions to send (each pays gas)."""
        return int(np.count_nonzero(self.trades_usd))

    def to_frame(self) -> pd.DataFrame:
        """One row per pool, for assets and backtest records."""
        return pd.DataFrame(
            {
                "pool": list(self.pools),
                "current_weight": self.current_weights,
                "target_weight": self.target_weights,
                "trade_usd": self.trades_usd,
                "dilution_factor": self.dilution_factor,
            }
        )


# ----------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class _Inputs:
    """Cleaned numeric inputs of one solve (shared by both solvers and the objective)."""

    a: np.ndarray  # predicted APY, >= 0, 0 where unknown or refused
    q: np.ndarray  # dilution coefficient a W / tvl, 0 where tvl unknown
    x0: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    c: float
    budget: float
    buyable: np.ndarray
    wealth: float
    tvl: np.ndarray
    refused: np.ndarray  # predictions not finite or above strategy.max_predicted_apy

    def bounded(self, lo: np.ndarray, hi: np.ndarray) -> _Inputs:
        """These inputs with bounds ``lo``, ``hi`` (``dataclasses.replace`` without its introspection:
        the pruning re-solves and frozen pools take this path every step)."""
        return _Inputs(
            self.a,
            self.q,
            self.x0,
            lo,
            hi,
            self.c,
            self.budget,
            self.buyable,
            self.wealth,
            self.tvl,
            self.refused,
        )


def _clean_inputs(
    strategy: StrategyConfig,
    predicted_apy: np.ndarray,
    tvl: np.ndarray,
    wealth: float,
    current_weights: np.ndarray,
    costs: TradingCosts | None = None,
    depth: np.ndarray | None = None,
) -> _Inputs:
    """Validate, clip and derive per-pool bounds. A pool with unknown APY or TVL can only be sold, and
    so can one whose predicted APY is not finite or above ``strategy.max_predicted_apy`` (refused:
    a glitch upstream must never become an allocation).

    ``tvl`` sizes the caps (``max_pool_tvl_share``: the supply of a lending market, else the TVL);
    ``depth`` (None: the TVL) is the pools' dilution depth, the response's hyperbolic equivalent
    (``domain/yields/response.py``): the dilution coefficient is ``a W / depth``. Where a depth is not
    finite and positive the TVL stands in."""
    a_raw = np.asarray(predicted_apy, dtype=float)
    tvl = np.asarray(tvl, dtype=float)
    x0 = np.asarray(current_weights, dtype=float)
    n = a_raw.shape[0]
    if a_raw.shape != (n,) or tvl.shape != (n,) or x0.shape != (n,):
        raise ValueError(f"shape mismatch: apy {a_raw.shape}, tvl {tvl.shape}, weights {x0.shape}")
    if not (math.isfinite(wealth) and wealth > 0):
        raise ValueError(f"wealth must be a positive finite number, got {wealth!r}")
    x0_sum = float(_sum(x0))
    if not (math.isfinite(x0_sum) and float(np.minimum.reduce(x0, initial=0.0)) >= -1e-12):
        raise ValueError("current_weights must be finite and >= 0")
    x0 = np.maximum(x0, 0.0)
    limit, share = strategy.concentration_limit, strategy.max_pool_tvl_share
    ceiling = strategy.max_predicted_apy
    with np.errstate(invalid="ignore", over="ignore"):
        sums_finite = math.isfinite(float(_sum(a_raw)) + float(_sum(tvl)))
    if (
        sums_finite
        and float(np.minimum.reduce(tvl, initial=1.0)) > 0
        and float(np.maximum.reduce(a_raw, initial=0.0)) <= ceiling
    ):
        # the common case: every pool has a finite prediction and a positive, finite TVL
        tvl_ok = buyable = np.ones(n, dtype=bool)
        a = np.maximum(a_raw, 0.0)
        q = a * (wealth / tvl)
        hi = np.minimum(limit, (share * tvl) / wealth) if share is not None else np.full(n, limit)
        tvl_out = tvl
        refused = np.zeros(n, dtype=bool)
    else:
        tvl_ok = np.isfinite(tvl) & (tvl > 0)
        refused = ~np.isfinite(a_raw) | (np.nan_to_num(a_raw, nan=0.0) > ceiling)
        refused &= ~np.isnan(a_raw)  # a missing prediction is "unknown", not "absurd"
        a_fin = np.isfinite(a_raw) & ~refused
        buyable = a_fin & tvl_ok
        a = np.where(a_fin, np.maximum(a_raw, 0.0), 0.0)
        safe_tvl = np.where(tvl_ok, tvl, 1.0)
        q = np.where(tvl_ok, a * wealth / safe_tvl, 0.0)
        hi = np.full(n, limit)
        if share is not None:
            hi = np.where(tvl_ok, np.minimum(hi, share * safe_tvl / wealth), hi)
        hi = np.where(buyable, hi, np.minimum(hi, x0))
        tvl_out = np.where(tvl_ok, tvl, np.nan)
    if depth is not None:
        d = np.asarray(depth, dtype=float)
        if d.shape != (n,):
            raise ValueError(f"shape mismatch: depth {d.shape}, expected ({n},)")
        with np.errstate(invalid="ignore", divide="ignore"):
            d_ok = np.isfinite(d) & (d > 0)
            q = np.where(d_ok, a * wealth / np.where(d_ok, d, 1.0), q)
            tvl_out = np.where(d_ok, d, tvl_out)
    return _Inputs(
        a=a,
        q=q,
        x0=x0,
        lo=np.zeros(n),
        hi=hi,
        c=(costs or strategy.costs()).amortized(),
        budget=1.0 - strategy.base_buffer,
        buyable=buyable,
        wealth=float(wealth),
        tvl=tvl_out,  # what dilutes: the depth where given, else the TVL
        refused=refused,
    )


def objective_value(
    x: np.ndarray,
    predicted_apy: np.ndarray,
    tvl: np.ndarray,
    wealth: float,
    current_weights: np.ndarray,
    strategy: StrategyConfig,
) -> float:
    """The rebalancing objective (per year) of weights ``x``, with the same input cleaning as the solve."""
    inp = _clean_inputs(strategy, predicted_apy, tvl, wealth, current_weights)
    return _objective(inp, np.asarray(x, dtype=float))


def _objective(inp: _Inputs, x: np.ndarray) -> float:
    return float(inp.a @ x - inp.c * _sum(np.abs(x - inp.x0)) - inp.q @ (x * x))


# ----------------------------------------------------------------------------------------------
# Exact separable solver


class SolverFailure(RuntimeError):
    """A solver returned no usable answer (internal: turned into a status, never raised to callers)."""


def solve_separable(
    a: np.ndarray,
    q: np.ndarray,
    x0: np.ndarray,
    c: float,
    lo: np.ndarray,
    hi: np.ndarray,
    budget: float,
) -> np.ndarray:
    """Exact maximizer of ``sum_i a_i x_i - c|x_i - x0_i| - q_i x_i^2`` s.t. ``lo <= x <= hi``,
    ``sum(x) <= budget``.

    For a budget multiplier ``lam`` each pool's problem is a concave 1-D piecewise quadratic with a
    closed-form maximizer ``x_i(lam)``. Written as a function of ``lam`` it is ``lo_i`` plus at most
    two "ramps" (the buy side above ``x0`` and the sell side below), each the difference of two
    hinges ``w (p - lam)^+`` with ``w = 1/(2q)`` (a step when ``q = 0``). The total weight S(lam) is
    evaluated at every breakpoint at once (events sorted by decreasing ``lam``, prefix sums of hinge
    weights, weight x breakpoint and step lengths), the crossing S(lam) = budget is found exactly,
    and pools tied at a step (linear pools) share the remaining budget. When the budget has slack
    at ``lam = 0`` (e.g. a group cap that does not bind) the answer is immediate.
    """
    n = a.shape[0]
    if n == 0:
        return np.zeros(0)
    lo_sum = float(_sum(lo))
    if lo_sum > budget:
        raise SolverFailure(f"exact_separable: lower bounds sum to {lo_sum:.6g} > budget {budget:.6g}")
    # pieces: [buy side (n), sell side (n)]; a value v on a piece is optimal while lam <= p(v)
    qq = np.concatenate([q, q])
    qq *= 2.0
    linear = qq <= 2.0 * Q_EPS
    # 1/(2q); finite but meaningless for linear pools, whose pieces are steps (handled apart)
    ww = 1.0 / np.maximum(qq, 2.0 * Q_EPS)
    start = np.concatenate([np.maximum(x0, lo), lo])
    end = np.concatenate([hi, np.minimum(x0, hi)])
    length = np.maximum(end - start, 0.0)
    base = np.concatenate([a - c, a + c])
    p_hi = base - qq * start  # piece empty for lam >= p_hi
    p_lo = base - qq * end  # piece full for lam <= p_lo
    step = linear & (length > 0)
    has_step = bool(_any(step))
    if has_step:
        step_len = np.where(step, length, 0.0)
        at0 = step & (p_hi == 0.0)

    def fill_at(lam: float) -> np.ndarray:
        fill = np.minimum(np.maximum(ww * (p_hi - lam), 0.0), length)
        if has_step:
            fill = np.where(step, np.where(p_hi > lam, length, 0.0), fill)
        return fill

    def tied(x: np.ndarray, lam: float, ties: np.ndarray) -> np.ndarray:
        """Linear pools tied at ``lam``: anything in [x, x + span] is optimal; start from "no trade"
        and move the tied pools together to use exactly the budget (or, at lam = 0, what fits)."""
        span = np.where(ties, length, 0.0)
        x_left = x + span[:n] + span[n:]
        x_tied = np.minimum(np.maximum(x0, x), x_left)
        rest = budget - float(_sum(x_tied))
        if lam > 0 or rest < 0:
            room = x_left - x_tied if rest > 0 else x_tied - x
            tot = float(_sum(room))
            if tot > 0:
                x_tied = x_tied + np.sign(rest) * room * min(abs(rest) / tot, 1.0)
        return x_tied

    # lam = 0: budget slack (ties at 0 included) -> done
    fill = fill_at(0.0)
    x = lo + fill[:n] + fill[n:]
    slack0 = budget - float(_sum(x))
    if slack0 >= 0:
        return tied(x, 0.0, at0) if has_step and _any(at0) else x

    # events in decreasing lam: hinge starts (+w at p_hi), hinge ends (-w at p_lo), steps (+len at p_hi)
    wr = np.where(linear | (length <= 0), 0.0, ww)  # live ramps only
    ev = np.concatenate([p_hi, p_lo])
    wv = np.concatenate([wr, -wr])
    order = np.argsort(-ev, kind="stable")
    ev = ev[order]
    wv = wv[order]
    cw = _cumsum(wv)
    cwp = _cumsum(wv * ev)
    value = cwp - ev * cw + lo_sum  # S(lam = ev[m]) with events 0..m counted
    if has_step:
        jv = np.concatenate([step_len, np.zeros(2 * n)])[order]
        cj = _cumsum(jv)
        value += cj
    over = value > budget
    m = int(np.argmax(over))  # exists: S(0) > budget and S is flat below the lowest event
    if not over[m]:  # S(0) exceeded the budget by float noise only
        return tied(x, 0.0, at0) if has_step and _any(at0) else x
    e = float(ev[m])
    if m == 0:
        w_prev, wp_prev, j_prev = 0.0, 0.0, 0.0
    else:
        w_prev, wp_prev = float(cw[m - 1]), float(cwp[m - 1])
        j_prev = float(cj[m - 1]) if has_step else 0.0
    right = lo_sum + wp_prev - e * w_prev + j_prev  # S just above e (events before m only)
    if right > budget:  # crossing on the affine piece (e, previous event]
        # (clamped to the piece: prefix sums can leave a ~1e-16 slope where it is really 0)
        lam = min(e + (right - budget) / w_prev, float(ev[m - 1])) if m > 0 else e
        fill = fill_at(lam)
        x = lo + fill[:n] + fill[n:]
        # Newton step on lam to remove float error: shift the pools strictly inside a ramp
        wa = np.where((fill > 0) & (fill < length), wr, 0.0)
        wa = wa[:n] + wa[n:]
        wsum = float(_sum(wa))
        if wsum > 0:
            x = np.minimum(np.maximum(x + wa * ((budget - float(_sum(x))) / wsum), lo), hi)
        return x
    # S jumps over the budget at a step at e: the tied linear pools share what is left
    fill = fill_at(e)
    x = lo + fill[:n] + fill[n:]
    return tied(x, max(e, 0.0), step & (p_hi == e))


def solve_nested(
    a: np.ndarray,
    q: np.ndarray,
    x0: np.ndarray,
    c: float,
    lo: np.ndarray,
    hi: np.ndarray,
    budget: float,
    groups: Sequence[tuple[np.ndarray, float]],
) -> np.ndarray:
    """Exact maximizer of the separable problem of :func:`solve_separable` plus group caps
    ``sum(x[idx]) <= cap`` for a *laminar* family of groups (any two groups are disjoint or nested,
    e.g. protocol caps, chain caps, or both when every capped protocol lives on one chain), given
    inner groups first.

    With a global multiplier ``lam``, a group's pools see the multiplier ``max(lam, nu_g)`` where
    ``nu_g`` is the multiplier of the group's own problem with budget ``cap`` (0 when the cap does
    not bind). Since each pool's maximizer ``x_i(mu)`` is non-increasing in ``mu``,
    ``x_i(max(lam, nu_g)) = min(x_i(lam), x_i(nu_g))``: the cap is *exactly* an upper bound
    ``hi_i <- x*_i`` where ``x*`` solves the group alone (:func:`solve_separable` with budget
    ``cap``, ties included). Inner groups first, then each enclosing group on the tightened bounds,
    then the global budget: one exact O(n log n) solve per capped group and one for the budget;
    no bisection. The uncapped problem is solved first: when its answer meets every cap (most
    rebalances), that is the answer. (Proof sketch: any optimum of the capped problem can be chosen <= x*; the KKT
    multiplier of the group is ``max(0, nu_g - mu)`` with ``mu`` the multiplier of the enclosing
    constraints, and a point <= x* satisfies the cap, so the tightened problem has the same optimum.)
    """
    if groups:
        # most rebalances do not hit a cap: if the uncapped optimum satisfies every cap, it is optimal
        x = solve_separable(a, q, x0, c, lo, hi, budget)
        if all(_sum(x[idx]) <= cap for idx, cap in groups):
            return x
        hi = hi.copy()
        for idx, cap in groups:
            if _sum(hi[idx]) <= cap:  # cannot bind
                continue
            xg = solve_separable(a[idx], q[idx], x0[idx], c, lo[idx], hi[idx], cap)
            hi[idx] = np.maximum(np.minimum(hi[idx], xg), lo[idx])
    return solve_separable(a, q, x0, c, lo, hi, budget)


# ----------------------------------------------------------------------------------------------
# Optimizer


#: Bisection steps on the turnover multiplier (its bracket shrinks 2^-60: exact to float precision).
TURNOVER_BISECTIONS = 60


def turnover_capped(inp: _Inputs, groups: list, turnover: float) -> np.ndarray:
    """Exact maximizer with ``sum |x - x0| <= turnover`` for laminar groups: the uncapped problem with
    the cost ``c + mu``; ``mu`` bracketed by doubling then bisection, and the solutions at the two
    ends of the bracket mixed so the turnover is exactly the cap."""

    def at(mu: float) -> tuple[np.ndarray, float]:
        x = solve_nested(inp.a, inp.q, inp.x0, inp.c + mu, inp.lo, inp.hi, inp.budget, groups)
        return x, float(_sum(np.abs(x - inp.x0)))

    x_lo, tau = at(0.0)
    if tau <= turnover:
        return x_lo
    lo, hi = 0.0, max(1.0, float(inp.a.max(initial=0.0)))
    x_hi, tau_hi = at(hi)
    while tau_hi > turnover and hi < 1e12:
        lo, x_lo, hi = hi, x_hi, 2.0 * hi
        x_hi, tau_hi = at(hi)
    if tau_hi > turnover:  # cannot reach the cap (it was relaxed to what feasibility needs)
        return x_hi
    for _ in range(TURNOVER_BISECTIONS):
        mid = 0.5 * (lo + hi)
        if not lo < mid < hi:
            break
        x_mid, tau_mid = at(mid)
        if tau_mid > turnover:
            lo, x_lo = mid, x_mid
        else:
            hi, x_hi, tau_hi = mid, x_mid, tau_mid
    # turnover of x_hi + theta (x_lo - x_hi) is convex piecewise linear in theta: exact crossing
    d = x_lo - x_hi
    with np.errstate(divide="ignore", invalid="ignore"):
        kinks = np.where(d != 0, (inp.x0 - x_hi) / d, np.nan)
    theta = np.unique(np.concatenate([[0.0, 1.0], kinks[(kinks > 0) & (kinks < 1)]]))
    taus = np.abs(x_hi[None, :] + theta[:, None] * d[None, :] - inp.x0[None, :]).sum(axis=1)
    k = int(np.argmax(taus > turnover))
    if k == 0:
        return x_hi
    t0, t1, v0, v1 = theta[k - 1], theta[k], taus[k - 1], taus[k]
    th = t0 + (t1 - t0) * (turnover - v0) / (v1 - v0) if v1 > v0 else t0
    return x_hi + th * d


class VaultOptimizer:
    """The rebalancing problem of one universe (pools + their protocol/chain groups).

    Built once; :meth:`solve` is called every rebalance with new predictions, TVLs, wealth and
    holdings. The cvxpy problem (DPP, parameters only) is built lazily on first need and re-solved
    with warm start.
    """

    def __init__(
        self,
        pools: Sequence[str],
        strategy: StrategyConfig | None = None,
        protocols: Sequence[str] | None = None,
        chains: Sequence[str] | None = None,
        costs: TradingCosts | None = None,
    ) -> None:
        self.pools = tuple(pools)
        self.strategy = strategy or StrategyConfig()
        #: What a trade costs; the same object prices the executed trades (``step.execute_trade``).
        self.costs = costs if costs is not None else self.strategy.costs()
        n = len(self.pools)
        for name, labels in (("protocols", protocols), ("chains", chains)):
            if labels is not None and len(labels) != n:
                raise ValueError(f"{name} has {len(labels)} entries for {n} pools")
        rows: list[np.ndarray] = []
        caps: list[float] = []
        self.group_names: list[str] = []
        for kind, labels, cap_map in (
            ("protocol", protocols, self.strategy.protocol_caps),
            ("chain", chains, self.strategy.chain_caps),
        ):
            if not cap_map:
                continue
            if labels is None:
                raise ValueError(f"strategy has {kind} caps but no {kind} per pool was given")
            norm = np.array([_slug(str(lbl)) for lbl in labels], dtype=object)
            for group, cap in cap_map.items():
                member = (norm == _slug(group)).astype(float)
                if _any(member):
                    rows.append(member)
                    caps.append(float(cap))
                    self.group_names.append(f"{kind}:{group}")
        self.group_matrix = np.vstack(rows) if rows else np.zeros((0, n))
        self.group_caps = np.asarray(caps, dtype=float)
        #: Capped groups as (pool indices, cap), inner groups first, when the family is laminar
        #: (disjoint or nested); None when two groups overlap partially (cvxpy only).
        self.fast_groups = _laminar_groups(self.group_matrix, self.group_caps)
        #: The exact solver applies: groups are laminar (a turnover cap is priced by its multiplier).
        self.exact = self.fast_groups is not None
        self.separable = (
            not rows and self.strategy.max_turnover is None
        )  # no groups at all (kept for callers)
        self._problem: cp.Problem | None = None
        self._params: dict[str, cp.Parameter] = {}
        self._x: cp.Variable | None = None

    def with_costs(self, costs: TradingCosts) -> VaultOptimizer:
        """This optimizer pricing trades with ``costs`` (e.g. gas converted into the vault's reference
        asset at the day's price); the cvxpy problem is shared (the costs only enter via parameters
        and the gas pruning)."""
        if costs == self.costs:
            return self
        clone = copy.copy(self)
        clone.costs = costs
        return clone

    # -- cvxpy problem -------------------------------------------------------------------------

    @property
    def problem(self) -> cp.Problem:
        """The parametrized cvxpy problem (built on first use, then reused)."""
        if self._problem is None:
            self._build()
        assert self._problem is not None
        return self._problem

    def _build(self) -> None:
        n = len(self.pools)
        x = cp.Variable(n, name="x")
        z = cp.Variable(n, name="trade")  # z == x - x0 keeps |.| of a parameter expression DPP
        p = {
            "a": cp.Parameter(n, nonneg=True, name="a"),
            "s": cp.Parameter(n, nonneg=True, name="s"),  # sqrt(a W / tvl)
            "x0": cp.Parameter(n, name="x0"),
            "lo": cp.Parameter(n, name="lo"),
            "hi": cp.Parameter(n, name="hi"),
            "c": cp.Parameter(nonneg=True, name="c"),
            "budget": cp.Parameter(nonneg=True, name="budget"),
        }
        traded = cp.sum(cp.abs(z))
        cons = [z == x - p["x0"], x >= p["lo"], x <= p["hi"], cp.sum(x) <= p["budget"]]
        if self.group_matrix.shape[0]:
            p["caps"] = cp.Parameter(self.group_matrix.shape[0], nonneg=True, name="group_caps")
            cons.append(self.group_matrix @ x <= p["caps"])
        if self.strategy.max_turnover is not None:
            p["turnover"] = cp.Parameter(nonneg=True, name="turnover")
            cons.append(traded <= p["turnover"])
        obj = p["a"] @ x - p["c"] * traded - cp.sum_squares(cp.multiply(p["s"], x))
        self._problem = cp.Problem(cp.Maximize(obj), cons)
        self._params = p
        self._x = x

    def _solve_cvxpy(self, inp: _Inputs, solver: str, turnover: float | None) -> np.ndarray:
        prob = self.problem
        p = self._params
        p["a"].value = inp.a
        p["s"].value = np.sqrt(inp.q)
        p["x0"].value = inp.x0
        p["lo"].value = inp.lo
        p["hi"].value = inp.hi
        p["c"].value = inp.c
        p["budget"].value = inp.budget
        if "caps" in p:
            p["caps"].value = self.group_caps
        if "turnover" in p:
            p["turnover"].value = turnover
        try:
            prob.solve(solver=solver, warm_start=True, **self.strategy.solver_settings(solver))
        except Exception as exc:  # any solver-side error becomes a status, never a crash
            raise SolverFailure(f"{solver}: {type(exc).__name__}: {exc}") from exc
        assert self._x is not None
        if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or self._x.value is None:
            raise SolverFailure(f"{solver}: status {prob.status}")
        return np.asarray(self._x.value, dtype=float)

    # -- feasibility -----------------------------------------------------------------------------

    def _feasible_holdings(self, inp: _Inputs) -> np.ndarray:
        """x0 moved to the feasible set by selling only (used when every solver failed)."""
        return self._sell_into_constraints(inp, inp.x0)

    def _sell_into_constraints(self, inp: _Inputs, x: np.ndarray) -> np.ndarray:
        """Clip to bounds, scale down over-cap groups, then the whole book. Scaling down towards the
        lower bounds never breaks a cap already met, so one pass gives a feasible point."""
        x = np.clip(x, inp.lo, np.maximum(inp.hi, inp.lo))
        for row, cap in zip(self.group_matrix, self.group_caps, strict=True):
            g = row > 0
            tot = _sum(x[g])
            room = _sum(x[g] - inp.lo[g])
            if tot > cap and room > 0:
                x[g] -= (x[g] - inp.lo[g]) * min((tot - cap) / room, 1.0)
        tot = _sum(x)
        room = _sum(x - inp.lo)
        if tot > inp.budget and room > 0:
            x -= (x - inp.lo) * min((tot - inp.budget) / room, 1.0)
        return x

    def _violation(self, inp: _Inputs, x: np.ndarray, turnover: float | None) -> float:
        v = [
            np.maximum.reduce(inp.lo - x, initial=0.0),
            np.maximum.reduce(x - inp.hi, initial=0.0),
            _sum(x) - inp.budget,
        ]
        if self.group_matrix.shape[0]:
            v.append(np.max(self.group_matrix @ x - self.group_caps))
        if turnover is not None:
            v.append(_sum(np.abs(x - inp.x0)) - turnover)
        return float(max(v))

    def _polish(self, inp: _Inputs, x: np.ndarray) -> np.ndarray:
        """Remove solver noise: pull tiny violations back into the constraints, and snap near-zero
        trades to exactly none."""
        x = np.minimum(np.maximum(x, inp.lo), np.maximum(inp.hi, inp.lo))
        groups = self.group_matrix.shape[0] > 0
        if _sum(x) > inp.budget or (groups and _any(self.group_matrix @ x > self.group_caps)):
            x = self._sell_into_constraints(inp, x)
        snap = (np.abs(x - inp.x0) < SNAP_TOL) & (inp.x0 >= inp.lo) & (inp.x0 <= inp.hi)
        if _any(snap):
            snapped = np.where(snap, inp.x0, x)
            if _sum(snapped) <= inp.budget + 1e-12 and (
                not groups or _all(self.group_matrix @ snapped <= self.group_caps + 1e-12)
            ):
                x = snapped
        return x

    # -- solve -----------------------------------------------------------------------------------

    def _solve_once(self, inp: _Inputs, turnover: float | None) -> tuple[np.ndarray, str, str, list[str]]:
        """Fast path, then primary, then fallback solver. Returns x, status, solver, notes."""
        notes: list[str] = []
        attempts: list[tuple[str, str]] = []
        if self.exact and self.strategy.use_fast_path:
            attempts.append(("exact_separable", "optimal"))
        attempts.append((self.strategy.primary_solver, "optimal"))
        fb = self.strategy.fallback_solver
        if fb and fb != self.strategy.primary_solver:
            attempts.append((fb, "optimal_fallback_solver"))
        for solver, status in attempts:
            try:
                if solver == "exact_separable":
                    x = (
                        solve_nested(
                            inp.a, inp.q, inp.x0, inp.c, inp.lo, inp.hi, inp.budget, self.fast_groups or ()
                        )
                        if turnover is None
                        else turnover_capped(inp, self.fast_groups or [], turnover)
                    )
                else:
                    x = self._solve_cvxpy(inp, solver, turnover)
                if not _all(np.isfinite(x)):
                    raise SolverFailure(f"{solver}: non-finite solution")
                x = self._polish(inp, x)
                viol = self._violation(inp, x, turnover)
                if viol > self.strategy.feasibility_tolerance:
                    raise SolverFailure(f"{solver}: solution violates constraints by {viol:.2e}")
                return x, status, solver, notes
            except (SolverFailure, FloatingPointError, ValueError) as exc:
                notes.append(str(exc))
        raise SolverFailure("; ".join(notes))

    def solve(
        self,
        predicted_apy: np.ndarray,
        tvl: np.ndarray,
        wealth: float,
        current_weights: np.ndarray,
        frozen: np.ndarray | None = None,
        depth: np.ndarray | None = None,
    ) -> RebalanceResult:
        """Target weights for one rebalance. Raises only for malformed inputs, never for solver trouble.

        ``frozen`` pools keep their current weight (``lo = hi = x0``: a holding in a data gap);
        ``depth`` the pools' dilution depth (None: the TVL; see :func:`_clean_inputs`)."""
        t0 = time.perf_counter()
        n = len(self.pools)
        inp = _clean_inputs(self.strategy, predicted_apy, tvl, wealth, current_weights, self.costs, depth)
        if inp.a.shape[0] != n:
            raise ValueError(f"expected {n} pools, got {inp.a.shape[0]}")
        if frozen is not None:
            inp = _freeze(inp, np.asarray(frozen, dtype=bool))
        notes: list[str] = []
        n_unbuyable = int(_sum(~inp.buyable))
        if _any(inp.refused):
            names = [p for p, r in zip(self.pools, inp.refused, strict=True) if r]
            notes.append(
                f"refused {len(names)} absurd prediction(s) (not finite or above "
                f"{self.strategy.max_predicted_apy:g}/yr), sell-only: {', '.join(names[:5])}"
            )
        if n_unbuyable:
            notes.append(f"{n_unbuyable} pool(s) without prediction/TVL or refused: sell-only")
        turnover = self.strategy.max_turnover
        if turnover is not None:
            needed = float(_sum(np.abs(self._feasible_holdings(inp) - inp.x0)))
            if needed > turnover:
                notes.append(f"turnover cap {turnover:g} relaxed to {needed:.6g} to reach feasibility")
                turnover = needed + 1e-9
        n_pruned = 0
        try:
            x, status, solver, errs = self._solve_once(inp, turnover)
            notes += errs
            x, n_pruned, prune_notes = self._prune(inp, x, turnover)
            notes += prune_notes
        except SolverFailure as exc:
            x = self._feasible_holdings(inp)
            status, solver = "kept_holdings", "none"
            notes.append(f"all solvers failed, keeping current holdings: {exc}")
            if _any(np.abs(x - inp.x0) > 0):
                notes.append("holdings clipped to the constraints")
        dx = x - inp.x0
        dilution = 1.0 / (1.0 + x * inp.wealth / inp.tvl)  # by the depth; NaN where unknown (tvl > 0)
        return RebalanceResult(
            pools=self.pools,
            target_weights=x,
            current_weights=inp.x0,
            trades_usd=dx * inp.wealth,
            objective=_objective(inp, x),
            status=status,
            solver=solver,
            solve_time_s=time.perf_counter() - t0,
            message="; ".join(notes),
            dilution_factor=dilution,
            n_pruned=n_pruned,
        )

    def project(
        self,
        target_weights: np.ndarray,
        tvl: np.ndarray,
        wealth: float,
        current_weights: np.ndarray,
        frozen: np.ndarray | None = None,
    ) -> np.ndarray:
        """The feasible weights closest to ``target_weights`` (Euclidean), under every constraint of
        the strategy (budget, concentration, TVL share, group caps, turnover) with ``frozen`` pools
        kept. How a benchmark faces the strategy's own limits: maximizing ``2 t.x - x.x`` is the
        projection, so the same two solvers apply (``a = 2 t``, unit dilution, no cost term). Trades
        below ``min_trade_usd`` are then dropped where the constraints allow. Pools without a finite
        TVL can only be sold. Falls back to selling into the constraints if every solver fails."""
        t = np.nan_to_num(np.asarray(target_weights, dtype=float), nan=0.0)
        inp = _clean_inputs(
            self.strategy, np.where(np.isfinite(tvl), 1.0, np.nan), tvl, wealth, current_weights, self.costs
        )
        inp = replace(inp, a=2.0 * np.maximum(t, 0.0), q=np.ones(len(t)), c=0.0)
        if frozen is not None:
            inp = _freeze(inp, np.asarray(frozen, dtype=bool))
        turnover = self.strategy.max_turnover
        if turnover is not None:
            turnover = max(turnover, float(_sum(np.abs(self._feasible_holdings(inp) - inp.x0))) + 1e-9)
        try:
            x, _, _, _ = self._solve_once(inp, turnover)
        except SolverFailure:
            return self._feasible_holdings(inp)
        notional = np.abs(x - inp.x0) * inp.wealth
        small = (
            (notional > 0) & (notional < self.costs.min_trade_usd) & (inp.x0 >= inp.lo) & (inp.x0 <= inp.hi)
        )
        if _any(small):
            x, _ = self._drop_small(replace(inp, a=np.zeros(len(t))), x, small)
        return x

    def _min_trade(self, inp: _Inputs) -> np.ndarray:
        """Smallest worthwhile |x_i - x0_i| (weight): gain over the horizon >= gas_multiple x gas and
        notional >= min_trade_usd (inf where the pool has no yield and gas is charged)."""
        k = self.costs
        need_gain = k.min_gain_usd  # dollars over the horizon
        per_weight = k.horizon_gain_usd(inp.a, inp.wealth)  # gain per unit of weight
        with np.errstate(divide="ignore", invalid="ignore"):
            gas_thr = np.where(per_weight > 0, need_gain / per_weight, np.inf) if need_gain > 0 else 0.0
        return np.maximum(gas_thr, k.min_trade_usd / inp.wealth)

    def _small_trades(self, inp: _Inputs, x: np.ndarray) -> np.ndarray:
        """Trades not worth sending: expected gain over the horizon below gas_multiple x gas, or
        notional below min_trade_usd. Forced trades (current weight outside its bounds) are kept."""
        k = self.costs
        notional = np.abs(x - inp.x0) * inp.wealth
        trade = notional > 0
        gain = k.horizon_gain_usd(inp.a, notional)
        small = trade & ((gain < k.min_gain_usd) | (notional < k.min_trade_usd))
        forced = (inp.x0 < inp.lo) | (inp.x0 > inp.hi)
        return small & ~forced

    def _prune(
        self, inp: _Inputs, x: np.ndarray, turnover: float | None
    ) -> tuple[np.ndarray, int, list[str]]:
        """Drop trades not worth their gas / below the minimum size, keeping every constraint.

        1. Freeze (``lo = hi = x0``) every pool with a small trade *and every pool that does not
           trade*, then re-solve; at most :data:`MAX_PRUNE_RESOLVES` times. Freezing the idle pools
           stops the cascade where each re-solve shifts the budget multiplier a little and makes
           dozens of interior pools trade a few dollars (previously up to ~40 re-solves a step).
           Each re-solve is a full solve with all constraints, so it is feasible; the money of a
           dropped trade is re-allocated optimally among the pools that still trade.
        2. Trades still small after that are dropped without re-solving (:meth:`_drop_small`), in a
           way that keeps bounds, budget, group caps and turnover.
        """
        if not self.costs.prunes:
            return x, 0, []
        notes: list[str] = []
        pruned = np.zeros(len(x), dtype=bool)
        small = self._small_trades(inp, x)
        if not _any(small):
            return x, 0, []
        frozen = x == inp.x0
        for _ in range(MAX_PRUNE_RESOLVES):
            if not _any(small):
                break
            pruned |= small
            frozen |= small
            lo = np.where(frozen, inp.x0, inp.lo)
            hi = np.where(frozen, inp.x0, inp.hi)
            if _sum(lo) > inp.budget + 1e-12 or (
                self.group_matrix.shape[0] and _any(self.group_matrix @ lo > self.group_caps + 1e-12)
            ):
                notes.append("gas pruning: frozen trades break a cap, dropped without re-solve")
                break
            try:
                x_new, _, _, _ = self._solve_once(inp.bounded(lo, hi), turnover)
            except SolverFailure as exc:
                notes.append(f"gas pruning: re-solve failed ({exc}), dropped without re-solve")
                break
            x = x_new
            small = self._small_trades(inp, x)
        if _any(small):
            pruned |= small
            x, kept = self._drop_small(inp, x, small)
            if kept:
                notes.append(f"gas pruning: {kept} small sale(s) kept (needed for the budget/caps)")
        n_pruned = int(_sum(pruned & (x == inp.x0)))
        return x, n_pruned, notes

    def _drop_small(self, inp: _Inputs, x: np.ndarray, small: np.ndarray) -> tuple[np.ndarray, int]:
        """Undo small trades without re-solving, keeping every constraint.

        - a small buy is undone (``x_i <- x0_i``): sums and turnover only fall, and ``x0_i`` is
          within its bounds (forced trades are never small);
        - a small sale is undone if the budget and every group containing the pool have room for
          it; otherwise the missing room is taken from the buys of pools that lie in *every* group
          containing it (so each of those constraints gains the same room), pro rata to how far
          each buy is above its own minimum trade, so no buy becomes small. If that is not enough,
          the sale is kept. Turnover only falls.
        """
        x = x.copy()
        dx = x - inp.x0
        buys = small & (dx > 0)
        x[buys] = inp.x0[buys]
        sells = np.flatnonzero(small & (dx < 0))
        if not sells.size:
            return x, 0
        thr = self._min_trade(inp) * (1 + 1e-9)
        members = self.group_matrix > 0
        kept = 0
        for i in sells[np.argsort(dx[sells])[::-1]]:  # smallest sales first
            d = inp.x0[i] - x[i]
            rows = members[:, i]
            room = inp.budget - _sum(x)
            scope = np.ones(len(x), dtype=bool)
            if _any(rows):
                room = min(room, float(np.min(self.group_caps[rows] - self.group_matrix[rows] @ x)))
                scope = members[rows].all(axis=0)
            need = d - max(room, 0.0)
            if need > 0:
                excess = np.where(scope & ~small & (x > inp.x0), x - inp.x0 - thr, 0.0).clip(min=0.0)
                total = _sum(excess)
                if total < need:
                    kept += 1
                    continue
                x -= excess * (need / total)
            x[i] = inp.x0[i]
        return x, kept


def _freeze(inp: _Inputs, frozen: np.ndarray) -> _Inputs:
    """``lo = hi = x0`` on the frozen pools."""
    if frozen.shape != inp.x0.shape:
        raise ValueError(f"frozen has shape {frozen.shape}, expected {inp.x0.shape}")
    return inp.bounded(np.where(frozen, inp.x0, inp.lo), np.where(frozen, inp.x0, inp.hi))


def _laminar_groups(matrix: np.ndarray, caps: np.ndarray) -> list[tuple[np.ndarray, float]] | None:
    """Groups as (indices, cap) sorted inner first, or None if two groups overlap without nesting."""
    members = matrix > 0
    sizes = members.sum(axis=1)
    for i in range(len(members)):
        for j in range(i + 1, len(members)):
            common = int(np.count_nonzero(members[i] & members[j]))
            if common and common != min(sizes[i], sizes[j]):
                return None
    order = np.argsort(sizes, kind="stable")
    return [(np.flatnonzero(members[k]), float(caps[k])) for k in order]


def optimizer_for_vault(
    pools: pd.DataFrame, strategy: StrategyConfig, costs: TradingCosts | None = None
) -> VaultOptimizer:
    """Convenience: build from a frame with columns ``pool`` and optionally ``project``, ``chain``."""
    return VaultOptimizer(
        pools["pool"].astype(str).tolist(),
        strategy,
        protocols=pools["project"].tolist() if "project" in pools else None,
        chains=pools["chain"].tolist() if "chain" in pools else None,
        costs=costs,
    )
