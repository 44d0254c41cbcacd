"""Cost of a grid's honest evaluation at the scale of large grids (prints figures; not a unit test).

N stored point paths of D days (synthetic daily log returns, the shape ``backtest_runs`` stores):
the return matrix, the walk-forward's train scores over every window (selection only: the chosen
points' re-simulation costs one backtest of a window each), PBO by CSCV, the deflated Sharpe and
the bootstrap interval. Target: 1,000 points x 4 years in < 10 s.

    .venv/bin/python benchmarks/bench_evaluation.py [--points 1000] [--days 1460] [--splits 16]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from midfreq_assets.domain.backtest.bootstrap import bootstrap_mean_interval
from midfreq_assets.domain.backtest.config import EvaluationConfig, WalkForwardConfig
from midfreq_assets.domain.backtest.engine import BacktestResult
from midfreq_assets.domain.backtest.overfitting import deflated_sharpe, pbo_cscv, sharpe_per_period
from midfreq_assets.domain.backtest.walk_forward import GridPaths, plan_windows, train_scores


def stored_paths(points: int, days: int, seed: int = 0) -> dict[str, BacktestResult]:
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2021-01-01", periods=days, freq="D")
    r = rng.normal(0.0002, 0.0005, (days, points)) + rng.normal(0, 0.0001, points)
    out = {}
    for n in range(points):
        w = 1e6 * np.exp(np.cumsum(r[:, n]))
        steps = pd.DataFrame(
            {
                "date": dates,
                "date_end": dates + pd.Timedelta(days=1),
                "wealth_start": np.r_[1e6, w[:-1]],
                "wealth": w,
                "invested": 0.95,
            }
        )
        out[f"p{n}"] = BacktestResult(f"p{n}", steps, pd.DataFrame(), 1e6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--days", type=int, default=1460)
    ap.add_argument("--splits", type=int, default=16)
    args = ap.parse_args()
    results = stored_paths(args.points, args.days)
    total = 0.0

    def timed(label: str, fn):
        nonlocal total
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        total += dt
        print(f"{label}: {dt:.2f}s")
        return out

    paths = timed(
        f"return matrix of {args.points} stored paths x {args.days} days",
        lambda: GridPaths.from_results(results),
    )
    cfg = WalkForwardConfig()
    windows = plan_windows(pd.DatetimeIndex(paths.returns.index), paths.first_active(), cfg)
    for objective in ("log_growth", "sharpe"):
        timed(
            f"walk-forward train scores, {len(windows)} windows x {args.points} points ({objective})",
            lambda o=objective: train_scores(paths, windows, o).argmax(axis=1),
        )
    r = paths.returns.to_numpy()
    pbo = timed(f"PBO by CSCV, {args.splits} splits", lambda: pbo_cscv(r, args.splits))
    print(f"  PBO {pbo.pbo:.3f} over {pbo.n_combinations} splits")
    timed("deflated Sharpe", lambda: deflated_sharpe(r[:, 0], args.points, sharpe_per_period(r)))
    ev = EvaluationConfig()
    timed(
        f"bootstrap interval ({ev.bootstrap_resamples} resamples, mean block {ev.bootstrap_block_days:g} days)",
        lambda: bootstrap_mean_interval(
            r[:, 0] - r[:, 1],
            mean_block=ev.bootstrap_block_days,
            n_resamples=ev.bootstrap_resamples,
            confidence=ev.confidence,
            seed=ev.seed,
        ),
    )
    print(f"total: {total:.2f}s{'  OK' if total < 10 else '  (target < 10 s)'}")


if __name__ == "__main__":
    main()
