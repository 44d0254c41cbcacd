"""Rebalance step time with the lending markets' rate curves vs today's TVL-share step.

55 pools (the bundled universe's size), 20 of them lending markets with a year of synthetic
supply/borrow history on a kinked curve; 200 daily steps, each from the previous step's weights.
Times (medians, ms):

- ``step``: today's decision, ``VaultOptimizer.solve`` with the TVL (the exact path);
- ``step_curves``: the same solve with the responses' dilution depth and the lending markets'
  supply as size base (what the book runs with curves);
- ``responses``: ``with_responses`` over the 200 days x 55 pools once (every weekly fit of every
  market, then each row's response): computed once per ``backtest_panel`` (shared by every grid point
  and walk-forward window) and once per nightly range, not per step; printed per day;
- ``fit``: one weekly refit of one market (90 days, the U* grid).

Target: ``step_curves`` <= 2 x ``step``.

    .venv/bin/python benchmarks/bench_rate_curves.py [--steps 200] [--pools 55] [--lending 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from midfreq_assets.domain.portfolio.optimizer import VaultOptimizer
from midfreq_assets.domain.portfolio.strategy import StrategyConfig
from midfreq_assets.domain.yields.config import RateCurveConfig
from midfreq_assets.domain.yields.response import KinkedCurve, fit_kinked_curve, with_responses

TARGET_RATIO = 2.0


def market(pools: list[str], days: pd.DatetimeIndex, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for p in pools:
        opt = rng.uniform(0.8, 0.92)
        curve = KinkedCurve(
            *(np.array([v]) for v in (0.0, rng.uniform(0.03, 0.08), rng.uniform(0.3, 0.8), opt, 0.1))
        )
        u = np.clip(opt - 0.03 + 0.03 * rng.standard_normal(len(days)), 0.3, 0.99)
        borrow = curve.borrow_rate(u) * (1 + 0.01 * rng.standard_normal(len(days)))
        supply = 10 ** rng.uniform(7.5, 9.5)
        frames.append(
            pd.DataFrame(
                {
                    "date": days,
                    "pool": p,
                    "total_supply_usd": supply,
                    "total_borrow_usd": supply * u,
                    "apy_base_borrow": borrow,
                    "apy_base": borrow * u * 0.9,
                    "utilization": u,
                    "flag": None,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--pools", type=int, default=55)
    ap.add_argument("--lending", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    n, steps = args.pools, args.steps
    pools = [f"pool-{i}" for i in range(n)]
    days = pd.date_range("2025-01-01", periods=steps)
    lend = market(pools[: args.lending], pd.date_range(days[0] - pd.Timedelta(days=120), days[-1]))
    apy = np.clip(
        rng.uniform(0.0, 0.12, (steps, n)) + np.cumsum(rng.normal(0, 0.002, (steps, n)), axis=0), 0, 0.2
    )
    tvl = 10 ** rng.uniform(6, 9, n) * np.exp(np.cumsum(rng.normal(0, 0.02, (steps, n)), axis=0))
    history = pd.DataFrame({"date": np.repeat(days, n), "pool": pools * steps, "tvl_usd": tvl.ravel()})
    strategy = StrategyConfig(cost=0.0005, max_pool_tvl_share=0.1)
    wealth = 5e7

    t0 = time.perf_counter()
    rows = with_responses(history, lend, RateCurveConfig())
    t_responses = time.perf_counter() - t0
    depth = rows["dilution_depth_usd"].to_numpy().reshape(steps, n)
    size = rows["size_base_usd"].to_numpy().reshape(steps, n)

    opt = VaultOptimizer(pools, strategy)
    times: dict[str, list[float]] = {"step": [], "step_curves": []}
    for name in times:
        x = np.zeros(n)
        for t in range(steps):
            if name == "step":
                r = opt.solve(apy[t], tvl[t], wealth, x)
            else:
                r = opt.solve(apy[t], size[t], wealth, x, depth=depth[t])
            assert r.status == "optimal", r.message
            times[name].append(r.solve_time_s)
            x = r.target_weights
    u = lend["utilization"].to_numpy()[:90]
    b, s = lend["apy_base_borrow"].to_numpy()[:90], lend["apy_base"].to_numpy()[:90]
    fits = []
    for _ in range(20):
        t0 = time.perf_counter()
        fit_kinked_curve(u, b, s)
        fits.append(time.perf_counter() - t0)

    step = 1e3 * float(np.median(times["step"]))
    solve_curves = 1e3 * float(np.median(times["step_curves"]))
    amortized = 1e3 * t_responses / steps
    ratio = solve_curves / step
    curve_days = int((rows["response_method"] == "curve").sum())
    print(f"pools {n} (lending {args.lending}), steps {steps}, curve pool-days {curve_days}/{len(rows)}")
    print(f"step (TVL share)          median {step:7.3f} ms")
    print(
        f"step with curves          median {solve_curves:7.3f} ms  ratio {ratio:4.2f} x (target <= "
        f"{TARGET_RATIO:g} x): {'OK' if ratio <= TARGET_RATIO else 'ABOVE TARGET'}"
    )
    print(
        f"responses (once a range)  {t_responses:7.2f} s  = {amortized:6.3f} ms per day of the range "
        f"({1e3 * t_responses / (steps * n):.3f} ms per pool-day)"
    )
    print(f"one weekly fit (90 days)  median {1e3 * float(np.median(fits)):7.3f} ms")


if __name__ == "__main__":
    main()
