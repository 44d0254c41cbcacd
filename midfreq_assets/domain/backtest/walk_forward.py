"""Walk-forward selection of a grid's policy: the out-of-sample result a user can believe.

The in-sample best point of a grid is chosen on the data it is scored on: an upper bound, not a
result. Walk-forward cuts the history into consecutive test windows W_1..W_K; for each, the grid
point with the best objective on the train days before W_k (all of them, or the last
``train_days``) is chosen from the grid's stored per-point paths (a matrix of daily returns: no
point is re-run to be scored), then traded on W_k through the backtest engine starting from the
holdings W_{k-1} left. The stitched path is the policy's out-of-sample result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from midfreq_assets.domain.backtest.config import WalkForwardConfig
from midfreq_assets.domain.backtest.engine import BacktestResult, PortfolioState
from midfreq_assets.domain.units import DAYS_PER_YEAR

WALK_FORWARD = "walk_forward"

#: Runs point ``name``'s policy on decision days ``start`` .. the day before ``end`` (its path ends at
#: ``end``) from ``state`` (None: cash), rebalancing on the point's own calendar.
RunWindow = Callable[[str, pd.Timestamp, pd.Timestamp, PortfolioState | None], BacktestResult]


@dataclass(frozen=True)
class GridPaths:
    """The grid's stored paths as matrices: one row per decision day, one column per point."""

    returns: pd.DataFrame  # log(W_{t+1} / W_t): net of costs, gas, dilution and IL
    invested: pd.DataFrame  # share of wealth invested after each decision
    ends: pd.DatetimeIndex  # the day each step's accrual ends at

    @classmethod
    def from_results(cls, results: Mapping[str, BacktestResult]) -> GridPaths:
        if not results:
            raise ValueError("no grid point paths to select from")
        steps = [r.steps for r in results.values()]
        dates = [s["date"].to_numpy("datetime64[ns]") for s in steps]
        days = np.unique(np.concatenate(dates))  # the union calendar (a point may miss days)
        shape = (len(days), len(steps))
        returns, invested = np.full(shape, np.nan), np.full(shape, np.nan)
        ends = np.full(len(days), np.datetime64("NaT"), dtype="datetime64[ns]")
        for j, (s, d) in enumerate(zip(steps, dates, strict=True)):
            pos = np.searchsorted(days, d)
            returns[pos, j] = np.log(s["wealth"].to_numpy(float) / s["wealth_start"].to_numpy(float))
            invested[pos, j] = s["invested"].to_numpy(float)
            ends[pos] = s["date_end"].to_numpy("datetime64[ns]")
        index = pd.DatetimeIndex(days, name="date")
        names = list(results)
        return cls(
            pd.DataFrame(returns, index=index, columns=names),
            pd.DataFrame(invested, index=index, columns=names),
            pd.DatetimeIndex(ends),
        )

    @property
    def points(self) -> list[str]:
        return list(self.returns.columns)

    def first_active(self) -> int:
        """Position of the first day some point is invested (0 when none ever is)."""
        active = (self.invested.fillna(0.0).to_numpy() > 0).any(axis=1)
        return int(np.argmax(active)) if active.any() else 0

    def step_years(self) -> np.ndarray:
        return (self.ends - self.returns.index).days.to_numpy(float) / DAYS_PER_YEAR


@dataclass(frozen=True)
class Window:
    """Positions on :attr:`GridPaths.returns`' rows: train ``[train_start, test_start)``, test ``[test_start, test_end)``."""

    index: int
    train_start: int
    test_start: int
    test_end: int


def plan_windows(dates: pd.DatetimeIndex, first_active: int, config: WalkForwardConfig) -> list[Window]:
    """Consecutive test windows of ``test_days`` from ``min_train_days`` after the first active day
    to the end (the last may be shorter); empty when the history is too short."""
    if not len(dates):
        return []
    first_test = dates[first_active] + pd.Timedelta(days=config.min_train_days)
    starts = pd.date_range(first_test, dates[-1], freq=f"{config.test_days}D")
    pos = np.unique(dates.searchsorted(starts))
    pos = pos[pos < len(dates)]
    bounds = [*pos.tolist(), len(dates)]
    windows = []
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        train_start = first_active
        if config.train == "rolling":
            assert config.train_days is not None
            train_start = max(
                first_active, int(dates.searchsorted(dates[a] - pd.Timedelta(days=config.train_days)))
            )
        windows.append(Window(k, train_start, int(a), int(b)))
    return windows


def train_scores(
    paths: GridPaths, windows: list[Window], objective: str, risk_free: float = 0.0
) -> np.ndarray:
    """K x N objective of every point on every window's train days, from cumulative sums (vectorized
    over windows and points). A point with a missing day in the train window scores -inf."""
    r = paths.returns.to_numpy(dtype=np.float64)
    years = paths.step_years()
    excess = r - risk_free * years[:, None]
    zero = np.zeros((1, r.shape[1]))
    c_r = np.vstack([zero, np.cumsum(np.nan_to_num(r), axis=0)])
    c_x = np.vstack([zero, np.cumsum(np.nan_to_num(excess), axis=0)])
    c_x2 = np.vstack([zero, np.cumsum(np.nan_to_num(excess) ** 2, axis=0)])
    c_nan = np.vstack([zero, np.cumsum(np.isnan(r), axis=0)])
    c_years = np.concatenate([[0.0], np.cumsum(years)])
    a = np.array([w.train_start for w in windows])
    b = np.array([w.test_start for w in windows])
    n = (b - a)[:, None].astype(float)
    if objective == "log_growth":
        span = (c_years[b] - c_years[a])[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            score = (c_r[b] - c_r[a]) / span
    elif objective == "sharpe":
        mean = (c_x[b] - c_x[a]) / n
        var = np.maximum((c_x2[b] - c_x2[a]) - n * mean**2, 0.0) / np.maximum(n - 1, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(var > 0, mean / np.sqrt(var), np.sign(mean) * np.inf)
    else:
        raise ValueError(f"unknown walk-forward objective {objective!r}; known: log_growth, sharpe")
    invalid = ((c_nan[b] - c_nan[a]) > 0) | np.isnan(score)
    return np.where(invalid, -np.inf, score)


@dataclass
class WalkForwardResult:
    """The stitched out-of-sample path and the sequence of chosen points."""

    result: BacktestResult
    windows: pd.DataFrame

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.result.steps["date"].iloc[0])

    @property
    def end(self) -> pd.Timestamp:
        return pd.Timestamp(self.result.steps["date_end"].iloc[-1])


def walk_forward(
    paths: GridPaths, config: WalkForwardConfig, run_window: RunWindow, *, risk_free: float = 0.0
) -> WalkForwardResult | None:
    """Choose a point per test window on its train days, trade it there from the previous window's
    holdings, stitch. None when the history holds no test window after ``min_train_days``."""
    windows = plan_windows(pd.DatetimeIndex(paths.returns.index), paths.first_active(), config)
    if not windows:
        return None
    scores = train_scores(paths, windows, config.objective, risk_free)
    dates = pd.DatetimeIndex(paths.returns.index)
    points = paths.points
    state: PortfolioState | None = None
    parts: list[BacktestResult] = []
    rows = []
    for w, score in zip(windows, scores, strict=True):
        order = np.argsort(-score, kind="stable")
        chosen = points[int(order[0])]
        start, end = dates[w.test_start], paths.ends[w.test_end - 1]
        res = run_window(chosen, start, end, state)
        if state is not None and not np.isclose(res.initial_wealth, state.wealth, rtol=1e-12):
            raise AssertionError(
                f"window {w.index} started from {res.initial_wealth}, not the {state.wealth} left"
            )
        state = res.end_state
        parts.append(res)
        years = (end - start).days / DAYS_PER_YEAR
        rows.append(
            {
                "window": w.index,
                "train_start": dates[w.train_start],
                "train_end": dates[w.test_start - 1] if w.test_start > 0 else dates[0],
                "test_start": start,
                "test_end": end,
                "point": chosen,
                f"train_{config.objective}": float(score[order[0]]),
                "runner_up": points[int(order[1])] if len(order) > 1 else "",
                "margin": float(score[order[0]] - score[order[1]]) if len(order) > 1 else float("nan"),
                "test_log_growth": float(np.log(res.wealth.iloc[-1] / res.initial_wealth) / years)
                if years > 0
                else np.nan,
            }
        )
    return WalkForwardResult(stitch(parts, [r["point"] for r in rows]), pd.DataFrame(rows))


def stitch(parts: list[BacktestResult], points: list[str], name: str = WALK_FORWARD) -> BacktestResult:
    """Consecutive window results -> one path (``window`` and ``point`` columns say who traded)."""
    steps = pd.concat(
        [p.steps.assign(window=k, point=pt) for k, (p, pt) in enumerate(zip(parts, points, strict=True))],
        ignore_index=True,
    )
    weights = pd.concat(
        [p.weights.assign(point=pt) for p, pt in zip(parts, points, strict=True)], ignore_index=True
    )
    return BacktestResult(name, steps, weights, parts[0].initial_wealth, parts[-1].end_state)


def slice_result(
    result: BacktestResult, start: pd.Timestamp, end: pd.Timestamp | None = None
) -> BacktestResult:
    """The part of a path with decision days in ``[start, end)`` (its wealth at ``start`` as the
    initial wealth): a fixed policy scored on the walk-forward's out-of-sample days."""
    s = result.steps
    keep = (pd.DatetimeIndex(s["date"]) >= start) & (
        (pd.DatetimeIndex(s["date"]) < end) if end is not None else True
    )
    steps = s[keep].reset_index(drop=True)
    if steps.empty:
        raise ValueError(f"{result.name}: no step in {start.date()}..{end.date() if end is not None else ''}")
    w = result.weights
    wkeep = (pd.DatetimeIndex(w["date"]) >= start) & (
        (pd.DatetimeIndex(w["date"]) < end) if end is not None else True
    )
    return BacktestResult(
        result.name,
        steps,
        w[wkeep].reset_index(drop=True),
        float(steps["wealth_start"].iloc[0]),
        result.end_state if end is None else None,
    )
