"""The APY a pool pays after the vault deposits x: one interface for lending markets and the rest.

A lending market's supply APY is set by its utilization U = B / S through a kinked borrow-rate
curve r(U); a deposit x lowers U to B / (S + x), so what the vault earns there is
``r(B / (S + x)) * B / (S + x) * (1 - RF)``, not the TVL-share rule ``apy * tvl / (tvl + x)`` (for a
lending pool DefiLlama's TVL is S - B, the idle liquidity). The curve is fitted per pool on the
weekly refit calendar from the days strictly before the refit date (:func:`fit_rate_curves`), and
:func:`pool_responses` gives the day's :class:`PoolResponses`: the curve where it fits, the TVL-share
rule elsewhere, with the reason per pool. Formulas: docs/METHOD.md "Lending markets' rate curves".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from midfreq_assets.domain.ingest.pool_history import FLAG
from midfreq_assets.domain.yields.config import RateCurveConfig

#: Candidate optimal utilizations U* (the kink); the fit picks the one with the least squared error.
OPTIMAL_GRID = np.round(np.arange(0.50, 0.9901, 0.01), 2)
CURVE, TVL_SHARE = "curve", "tvl_share"
FIT_COLUMNS = [
    "pool",
    "fit_date",
    "base",
    "slope1",
    "slope2",
    "optimal",
    "reserve_factor",
    "days",
    "u_min",
    "u_max",
    "rmse_borrow",
    "rmse_supply",
    "mean_borrow",
    "ok",
    "reason",
]
_PARAMS = ["base", "slope1", "slope2", "optimal", "reserve_factor"]


@dataclass(frozen=True)
class KinkedCurve:
    """Rate-curve parameters, one entry per pool (NaN: no curve). Rates are fractions per year."""

    base: np.ndarray
    slope1: np.ndarray
    slope2: np.ndarray
    optimal: np.ndarray
    reserve_factor: np.ndarray

    def borrow_rate(self, u: np.ndarray) -> np.ndarray:
        """r(U) = base + slope1 min(U, U*) / U* + slope2 max(U - U*, 0) / (1 - U*), U clipped to [0, 1]."""
        u = np.clip(u, 0.0, 1.0)
        return (
            self.base
            + self.slope1 * np.minimum(u, self.optimal) / self.optimal
            + self.slope2 * np.maximum(u - self.optimal, 0.0) / (1.0 - self.optimal)
        )

    def supply_rate(self, u: np.ndarray) -> np.ndarray:
        """r(U) U (1 - RF): what suppliers earn at utilization U."""
        return self.borrow_rate(u) * np.clip(u, 0.0, 1.0) * (1.0 - self.reserve_factor)


#: The supports a 3-coefficient non-negative least squares can have (base, slope1, slope2).
_SUPPORTS = np.array([[a, b, c] for a in (1, 0) for b in (1, 0) for c in (1, 0) if a or b or c], dtype=bool)


def _grid_design(u: np.ndarray) -> np.ndarray:
    """``[1, min(U, U*)/U*, max(U - U*, 0)/(1 - U*)]`` per day and U* of the grid: (n, G, 3)."""
    g = OPTIMAL_GRID[None, :]
    u = u[:, None]
    return np.stack(
        [np.ones((u.shape[0], g.shape[1])), np.minimum(u, g) / g, np.maximum(u - g, 0.0) / (1.0 - g)], axis=2
    )


def _nnls_windows(
    gram: np.ndarray, rhs: np.ndarray, yy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NNLS of the borrow rates on the kinked design for every window (W) and U* of the grid (G) at
    once, from the normal equations (``gram`` (W, G, 3, 3), ``rhs`` (W, G, 3), ``yy`` (W,)): with three
    coefficients the NNLS optimum is the best non-negative least-squares solution on one of the seven
    supports, each solved for all windows and U* in one batched 3x3 solve (unused coefficients pinned
    to 0). Returns per window the best U*, its coefficients (W, 3) and its squared error."""
    best_sse = np.full(gram.shape[:2], np.inf)
    best = np.zeros(rhs.shape)
    eye = np.eye(3)
    for support in _SUPPORTS:
        mask = np.outer(support, support)
        # rows/columns outside the support: identity (coefficient 0); a tiny ridge keeps a regressor
        # without variation (no day above U*: its column is 0) solvable, at coefficient 0
        a = np.where(mask, gram, eye) + 1e-12 * np.diag(support.astype(float))
        b = np.where(support, rhs, 0.0)
        coef = np.where(support, np.linalg.solve(a, b[..., None])[..., 0], 0.0)
        sse = (
            yy[:, None]
            - 2 * np.einsum("wgi,wgi->wg", coef, rhs)
            + np.einsum("wgi,wgij,wgj->wg", coef, gram, coef)
        )
        ok = np.all(coef >= -1e-12, axis=2) & np.isfinite(sse) & (sse < best_sse - 1e-15)
        best_sse = np.where(ok, sse, best_sse)
        best = np.where(ok[..., None], np.maximum(coef, 0.0), best)
    k = np.argmin(best_sse, axis=1)
    w = np.arange(gram.shape[0])
    return OPTIMAL_GRID[k], best[w, k], np.maximum(best_sse[w, k], 0.0)


def _window_fits(
    u: np.ndarray, borrow: np.ndarray, supply: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> list[dict[str, float]]:
    """The fits of the windows ``[lo_k, hi_k)`` of one market's day rows, all at once: the normal
    equations of every window are differences of cumulative sums over the days (no per-window pass
    over the rows for the regression)."""
    x = _grid_design(u)  # (n, G, 3)
    earned = borrow * u

    def window_sums(values: np.ndarray) -> np.ndarray:
        c = np.concatenate([np.zeros((1, *values.shape[1:])), np.cumsum(values, axis=0)])
        return c[hi] - c[lo]

    gram = window_sums(np.einsum("ngi,ngj->ngij", x, x))
    rhs = window_sums(x * borrow[:, None, None])
    yy, sb, ee, es = (window_sums(v) for v in (borrow**2, borrow, earned**2, earned * supply))
    optimal, coef, sse = _nnls_windows(gram, rhs, yy)
    n = (hi - lo).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        reserve = np.where(ee > 0, np.clip(1.0 - es / ee, 0.0, 0.99), 0.0)
    fits = []
    for k in range(len(lo)):
        part = slice(int(lo[k]), int(hi[k]))
        curve = KinkedCurve(
            *(np.array([v]) for v in (coef[k, 0], coef[k, 1], coef[k, 2], optimal[k], reserve[k]))
        )
        fits.append(
            {
                "base": float(coef[k, 0]),
                "slope1": float(coef[k, 1]),
                "slope2": float(coef[k, 2]),
                "optimal": float(optimal[k]),
                "reserve_factor": float(reserve[k]),
                "rmse_borrow": float(np.sqrt(sse[k] / n[k])),
                "rmse_supply": float(np.sqrt(np.mean((curve.supply_rate(u[part]) - supply[part]) ** 2))),
                "mean_borrow": float(sb[k] / n[k]),
                "u_min": float(np.min(u[part])),
                "u_max": float(np.max(u[part])),
            }
        )
    return fits


def fit_kinked_curve(u: np.ndarray, borrow: np.ndarray, supply: np.ndarray) -> dict[str, float]:
    """Least-squares kinked curve through (U, borrow APY) with base, slopes >= 0 (NNLS for each U* of
    :data:`OPTIMAL_GRID`, the best kept), then the reserve factor from supply = borrow U (1 - RF)
    (least squares on the observed borrow rates). Returns the parameters and in-sample RMSEs."""
    u, borrow, supply = (np.asarray(v, dtype=float) for v in (u, borrow, supply))
    return _window_fits(u, borrow, supply, np.array([0]), np.array([len(u)]))[0]


def refit_dates(first: pd.Timestamp, last: pd.Timestamp, weekday: int = 0) -> pd.DatetimeIndex:
    """The weekly refit calendar: every ``weekday`` (0 = Monday) in ``first..last``."""
    days = pd.date_range(pd.Timestamp(first).normalize(), pd.Timestamp(last).normalize(), freq="D")
    return days[days.weekday == weekday]


def usable_lend_borrow(lend_borrow: pd.DataFrame) -> pd.DataFrame:
    """Rows a fit may read: not flagged, with finite utilization in (0, 1] and finite rates."""
    frame = lend_borrow
    if FLAG in frame.columns:
        frame = frame[frame[FLAG].isna().to_numpy()]
    ok = (
        np.isfinite(frame["utilization"])
        & (frame["utilization"] > 0)
        & (frame["utilization"] <= 1.0)
        & np.isfinite(frame["apy_base_borrow"])
        & np.isfinite(frame["apy_base"])
    )
    return frame[ok.to_numpy()]


def fit_rate_curves(
    lend_borrow: pd.DataFrame, dates: pd.DatetimeIndex, config: RateCurveConfig
) -> pd.DataFrame:
    """One fit per (pool, refit date t) from the pool's usable rows with
    ``t - window_days <= date < t`` (never t itself or later). ``ok`` False with the ``reason`` where
    there are fewer than ``min_days`` rows or the borrow-rate RMSE exceeds ``max_relative_rmse`` of its
    mean: those pool-weeks use the TVL-share rule."""
    rows = []
    usable = usable_lend_borrow(lend_borrow).sort_values(["pool", "date"])
    window = pd.Timedelta(days=config.window_days)
    stamps = pd.DatetimeIndex(dates).as_unit("ns")
    for pool, group in usable.groupby("pool", sort=True):
        day = group["date"].to_numpy(dtype="datetime64[ns]")
        cols = [group[c].to_numpy(dtype=float) for c in ("utilization", "apy_base_borrow", "apy_base")]
        lo = np.searchsorted(day, (stamps - window).to_numpy())
        hi = np.searchsorted(day, stamps.to_numpy())
        enough = (hi - lo) >= config.min_days
        fitted = iter(_window_fits(*cols, lo[enough], hi[enough]) if enough.any() else [])
        for t, n, has in zip(stamps, (hi - lo).tolist(), enough, strict=True):
            row: dict[str, object] = {"pool": pool, "fit_date": t, "days": n}
            if not has:
                rows.append(
                    {
                        **row,
                        "ok": False,
                        "reason": f"{n} usable days in the {config.window_days} before "
                        f"the refit date (< {config.min_days})",
                    }
                )
                continue
            fit = next(fitted)
            relative = fit["rmse_borrow"] / fit["mean_borrow"] if fit["mean_borrow"] > 0 else np.inf
            ok = bool(relative <= config.max_relative_rmse)
            rows.append(
                {
                    **row,
                    **fit,
                    "ok": ok,
                    "reason": ""
                    if ok
                    else f"poor fit: borrow-rate RMSE {relative:.0%} of its mean (> {config.max_relative_rmse:.0%})",
                }
            )
    frame = pd.DataFrame(rows).reindex(columns=FIT_COLUMNS)
    frame["fit_date"] = pd.to_datetime(frame["fit_date"])
    frame["ok"] = frame["ok"].astype(bool)
    return frame


def fits_in_force(fits: pd.DataFrame, day: pd.Timestamp) -> pd.DataFrame:
    """Each pool's latest fit with ``fit_date <= day``, indexed by pool."""
    known = fits[fits["fit_date"] <= pd.Timestamp(day)]
    return known.sort_values("fit_date").groupby("pool").tail(1).set_index("pool")


@dataclass(frozen=True)
class PoolResponses:
    """Day t's response of each pool to a deposit, vectorized over pools (arrays aligned on ``pools``).

    ``method`` is ``curve`` (a lending market with a good fit and its supply S and borrows B of t)
    or ``tvl_share``; ``reason`` says why a lending pool fell back (empty otherwise).
    """

    pools: np.ndarray
    method: np.ndarray
    reason: np.ndarray
    tvl: np.ndarray
    supply: np.ndarray
    borrow: np.ndarray
    curve: KinkedCurve
    u_min: np.ndarray  # the utilization range the curve was fitted on (below it: an extrapolation)

    def extrapolated(self, x: np.ndarray | float) -> np.ndarray:
        """True where a deposit x takes a curve pool's utilization below the range its fit saw."""
        x = np.broadcast_to(np.asarray(x, dtype=float), self.pools.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.uses_curve & (self.borrow / (self.supply + x) < self.u_min)

    @property
    def uses_curve(self) -> np.ndarray:
        return self.method == CURVE

    def size_base(self) -> np.ndarray:
        """What a pool's size caps are a share of: the supply S of a lending market, else the TVL."""
        return np.where(self.uses_curve, self.supply, self.tvl)

    def dilution_depth(self) -> np.ndarray:
        """The hyperbolic equivalent of each pool's response: D with ``base_factor(x) ~ 1 / (1 + x / D)``
        to first order in x. TVL share: D = tvl. Curve: D = S / (1 + U r'(U) / r(U)) at U = B / S, with
        the slope of the segment a deposit moves along (below the kink for U <= U*). What the
        optimizer's dilution term and the accrual read (one definition, docs/METHOD.md)."""
        u = self.borrow / self.supply
        c = self.curve
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where(u <= c.optimal, c.slope1 / c.optimal, c.slope2 / (1.0 - c.optimal))
            elasticity = u * slope / c.borrow_rate(u)
            depth = self.supply / (1.0 + elasticity)
        ok = self.uses_curve & np.isfinite(depth) & (depth > 0)
        return np.where(ok, depth, self.tvl)

    def _tvl_share(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(np.isfinite(self.tvl) & (self.tvl > 0), self.tvl / (self.tvl + x), np.nan)

    def curve_supply_apy(self, x: np.ndarray | float = 0.0) -> np.ndarray:
        """r(B / (S + x)) B / (S + x) (1 - RF): the fitted curve's supply APY after a deposit x (USD);
        NaN for a pool without a curve."""
        x = np.broadcast_to(np.asarray(x, dtype=float), self.pools.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            u = self.borrow / (self.supply + x)
            return np.where(self.uses_curve, self.curve.supply_rate(u), np.nan)

    def base_factor(self, x: np.ndarray | float) -> np.ndarray:
        """Base APY after a deposit x over base APY before: the curve's ratio, or tvl / (tvl + x)."""
        x = np.broadcast_to(np.asarray(x, dtype=float), self.pools.shape)
        now = self.curve_supply_apy(0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = self.curve_supply_apy(x) / now
        return np.where(self.uses_curve & (now > 0), ratio, self._tvl_share(x))

    def reward_factor(self, x: np.ndarray | float) -> np.ndarray:
        """Rewards are shared by supply: S / (S + x) for a lending market, tvl / (tvl + x) otherwise."""
        x = np.broadcast_to(np.asarray(x, dtype=float), self.pools.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.uses_curve, self.supply / (self.supply + x), self._tvl_share(x))

    def apy_after(self, apy_base: np.ndarray, apy_reward: np.ndarray, x: np.ndarray | float) -> np.ndarray:
        """The pools' APYs after the vault holds x (USD) in each: base and reward parts diluted apart."""
        return np.asarray(apy_base, dtype=float) * self.base_factor(x) + np.asarray(
            apy_reward, dtype=float
        ) * self.reward_factor(x)

    def capacity(self, cost: float = 0.1, iterations: int = 60) -> np.ndarray:
        """The deposit (USD) that lowers a pool's base APY by ``cost`` (a share): tvl cost / (1 - cost) by
        TVL share; on a curve, bisection of the monotone ``base_factor(x) = 1 - cost`` (vectorized)."""
        if not 0.0 < cost < 1.0:
            raise ValueError(f"capacity cost must be within (0, 1), got {cost}")
        target = 1.0 - cost
        out = self.tvl * cost / target
        curved = self.uses_curve & (self.curve_supply_apy(0.0) > 0)
        if curved.any():
            lo = np.zeros(self.pools.shape)
            hi = np.where(curved, np.nan_to_num(self.supply, nan=1.0), 1.0)
            for _ in range(40):  # grow hi until the factor is below target (at most 2^40 x S)
                high_enough = ~curved | (self.base_factor(hi) <= target)
                if high_enough.all():
                    break
                hi = np.where(high_enough, hi, hi * 2.0)
            for _ in range(iterations):
                mid = 0.5 * (lo + hi)
                above = self.base_factor(mid) > target
                lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
            out = np.where(curved, 0.5 * (lo + hi), out)
        return out


def _responses(
    rows: pd.DataFrame, lend_borrow: pd.DataFrame | None, fits: pd.DataFrame | None, max_stale_days: int
) -> PoolResponses:
    """Responses of ``rows`` (``date``, ``pool``, ``tvl_usd``; any number of days), aligned on them:
    each row's fit in force and last usable S, B row (merge_asof, vectorized over the rows)."""
    n = len(rows)
    pools = rows["pool"].to_numpy(dtype=object)
    tvl = rows["tvl_usd"].to_numpy(dtype=float)
    params = {k: np.full(n, np.nan) for k in _PARAMS}
    u_min, supply, borrow = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    method = np.full(n, TVL_SHARE, dtype=object)
    reason = np.full(n, "", dtype=object)
    if lend_borrow is not None and fits is not None and len(lend_borrow) and len(fits) and n:
        grid = pd.DataFrame(
            {
                "date": pd.to_datetime(rows["date"]).to_numpy(),
                "pool": pd.Series(pools).astype(str).to_numpy(),
                "_row": np.arange(n),
            }
        )
        grid["date"] = grid["date"].astype("datetime64[ns]")
        grid["pool"] = grid["pool"].astype(str)
        grid = grid.sort_values("date", kind="stable")
        usable = usable_lend_borrow(lend_borrow)
        sb = usable[["date", "pool", "total_supply_usd", "total_borrow_usd"]].rename(
            columns={"date": "_sb_date"}
        )
        sb = sb.assign(
            pool=sb["pool"].astype(str), _sb_date=pd.to_datetime(sb["_sb_date"]).astype("datetime64[ns]")
        )
        grid = pd.merge_asof(
            grid,
            sb.sort_values("_sb_date"),
            left_on="date",
            right_on="_sb_date",
            by="pool",
            direction="backward",
            tolerance=pd.Timedelta(days=max_stale_days),
        )
        fit_cols = fits[["pool", "fit_date", *_PARAMS, "u_min", "ok", "reason"]].sort_values("fit_date")
        fit_cols = fit_cols.assign(
            pool=fit_cols["pool"].astype(str),
            fit_date=pd.to_datetime(fit_cols["fit_date"]).astype("datetime64[ns]"),
        )
        grid = pd.merge_asof(
            grid, fit_cols, left_on="date", right_on="fit_date", by="pool", direction="backward"
        )
        grid = grid.sort_values("_row")
        is_lending = np.isin(pools, fits["pool"].unique())
        has_fit = grid["ok"].fillna(False).to_numpy(dtype=bool)
        has_row = grid["total_supply_usd"].notna().to_numpy()
        use = is_lending & has_fit & has_row
        why = grid["reason"].to_numpy(dtype=object)
        no_fit = is_lending & ~has_fit
        reason[no_fit] = [r if isinstance(r, str) and r else "no fit in force yet" for r in why[no_fit]]
        reason[is_lending & has_fit & ~has_row] = (
            f"no usable supply/borrow row in the {max_stale_days} days before"
        )
        method[use] = CURVE
        for k in _PARAMS:
            params[k] = np.where(use, grid[k].to_numpy(dtype=float), np.nan)
        u_min = np.where(use, grid["u_min"].to_numpy(dtype=float), np.nan)
        supply = np.where(use, grid["total_supply_usd"].to_numpy(dtype=float), np.nan)
        borrow = np.where(use, grid["total_borrow_usd"].to_numpy(dtype=float), np.nan)
    return PoolResponses(
        pools=pools,
        method=method,
        reason=reason,
        tvl=tvl,
        supply=supply,
        borrow=borrow,
        curve=KinkedCurve(**params),
        u_min=u_min,
    )


def pool_responses(
    day: pd.Timestamp,
    pools: np.ndarray,
    tvl: np.ndarray,
    lend_borrow: pd.DataFrame | None,
    fits: pd.DataFrame | None,
    max_stale_days: int = 3,
) -> PoolResponses:
    """Day ``day``'s responses of ``pools`` (TVL ``tvl``): a pool uses its curve when it has a good fit in
    force (the latest with ``fit_date <= day``) and a usable supply/borrow row dated
    ``day - max_stale_days .. day``; every other pool the TVL-share rule, a lending pool with the
    reason. Point in time: reads nothing after ``day``."""
    rows = pd.DataFrame(
        {
            "date": pd.Timestamp(day),
            "pool": np.asarray(pools, dtype=object),
            "tvl_usd": np.asarray(tvl, dtype=float),
        }
    )
    return _responses(rows, lend_borrow, fits, max_stale_days)


RESPONSE_COLUMNS = [
    "date",
    "pool",
    "method",
    "reason",
    "total_supply_usd",
    "total_borrow_usd",
    "dilution_depth_usd",
    "size_base_usd",
    "capacity_usd",
]


def response_frame(
    rows: pd.DataFrame,
    lend_borrow: pd.DataFrame | None,
    fits: pd.DataFrame | None,
    max_stale_days: int = 3,
    capacity_cost: float | None = 0.1,
) -> pd.DataFrame:
    """The responses of many (date, pool) rows (``tvl_usd`` their TVL) as a long frame: method, reason,
    S and B, the dilution depth (what decisions and accrual dilute by), the size base (what caps are a
    share of) and the capacity (the deposit costing ``capacity_cost`` of the base APY; None: not
    computed, NaN)."""
    resp = _responses(rows, lend_borrow, fits, max_stale_days)
    return pd.DataFrame(
        {
            "date": pd.to_datetime(rows["date"]).to_numpy(),
            "pool": resp.pools,
            "method": resp.method,
            "reason": resp.reason,
            "total_supply_usd": resp.supply,
            "total_borrow_usd": resp.borrow,
            "dilution_depth_usd": resp.dilution_depth(),
            "size_base_usd": resp.size_base(),
            "capacity_usd": resp.capacity(capacity_cost)
            if capacity_cost is not None
            else np.full(len(resp.pools), np.nan),
        }
    )


#: The columns :func:`with_responses` adds to history rows (what the book's panels read).
RESPONSE_ROW_COLUMNS = [
    "response_method",
    "response_reason",
    "size_base_usd",
    "dilution_depth_usd",
    "total_supply_usd",
    "total_borrow_usd",
    *(f"curve_{k}" for k in _PARAMS),
    "curve_u_min",
]


def with_responses(
    history: pd.DataFrame, lend_borrow: pd.DataFrame | None, config: RateCurveConfig, max_stale_days: int = 3
) -> pd.DataFrame:
    """``history`` rows (``date``, ``pool``, ``tvl_usd``) with their pools' responses that day: the
    columns of :data:`RESPONSE_ROW_COLUMNS`, from curves fitted on the weekly calendar covering the
    rows' days (each from ``lend_borrow`` rows before its date: pass the ``window_days`` before the
    first row too). Without lending data the rows come back unchanged: the TVL-share rule, as before.
    The nightly run and the backtest both call this, so both dilute and cap by the same numbers."""
    if lend_borrow is None or lend_borrow.empty or history.empty:
        return history
    days = pd.to_datetime(history["date"])
    dates = refit_dates(days.min() - pd.Timedelta(days=7), days.max(), config.refit_weekday)
    lending = lend_borrow[lend_borrow["pool"].isin(set(history["pool"]))]
    fits = fit_rate_curves(lending, dates, config) if len(lending) else None
    resp = _responses(history[["date", "pool", "tvl_usd"]], lending, fits, max_stale_days)
    params = {f"curve_{k}": getattr(resp.curve, k) for k in _PARAMS}
    return history.assign(
        response_method=resp.method,
        response_reason=resp.reason,
        size_base_usd=resp.size_base(),
        dilution_depth_usd=resp.dilution_depth(),
        total_supply_usd=resp.supply,
        total_borrow_usd=resp.borrow,
        **params,
        curve_u_min=resp.u_min,
    )


def responses_of_rows(rows: pd.DataFrame) -> PoolResponses:
    """The :class:`PoolResponses` of rows carrying :data:`RESPONSE_ROW_COLUMNS` (a backtest panel's):
    what the report reads back (curves, capacity) without refitting."""

    def col(name: str) -> np.ndarray:
        return rows[name].to_numpy(dtype=float)

    return PoolResponses(
        pools=rows["pool"].to_numpy(dtype=object),
        method=rows["response_method"].to_numpy(dtype=object),
        reason=rows["response_reason"].to_numpy(dtype=object),
        tvl=col("tvl_usd"),
        supply=col("total_supply_usd"),
        borrow=col("total_borrow_usd"),
        curve=KinkedCurve(**{k: col(f"curve_{k}") for k in _PARAMS}),
        u_min=col("curve_u_min"),
    )
