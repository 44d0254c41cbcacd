"""Universe screen speed with the discovery rules and the top_pools ranking (``screen_universe``).

1. The bundled recording (55 pools x 365 days) for the bundled vaults (usd_lending: flags,
   symbol patterns, 30-day APY floor; usd_curated: allow-list + 30-day ranking).
2. A live-sized night: a ``/pools`` snapshot of 17,000 pools (today's two live days) plus 120
   days of lookback history for 600 candidate pools, with a 90-day ranking allow-list and the APY
   floor on every vault. Target < 5 s per night (it runs inside the nightly ingestion).
3. A live-sized year backfill: 600 candidate pools x 365 days (+ lookback). Target < 20 s.

Wall and CPU seconds are printed (the machine may be shared).

    .venv/bin/python benchmarks/bench_universe.py
"""

from __future__ import annotations

import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")

from midfreq_assets.domain.backtest import engine as bt  # noqa: E402
from midfreq_assets.domain.config.project import load_project  # noqa: E402
from midfreq_assets.domain.ingest.universe import screen_universe  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"


def timed(label: str, fn) -> object:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    print(f"{label:<62} wall {time.perf_counter() - wall:6.2f} s   cpu {time.process_time() - cpu:6.2f} s")
    return out


def synthetic(
    n_pools: int, n_candidates: int, days: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A snapshot of ``n_pools`` (the first ``n_candidates`` pass the static screen) and their histories."""
    ids = [str(uuid.UUID(int=int(i) + 1, version=4)) for i in range(n_pools)]
    good = np.arange(n_pools) < n_candidates
    snap = pd.DataFrame(
        {
            "pool": ids,
            "chain": np.where(good, "Ethereum", "Solana"),
            "project": "aave-v3",
            "symbol": np.where(rng.random(n_pools) < 0.5, "USDC", "steakUSDC"),
            "tvl_usd": 10 ** rng.uniform(5, 9, n_pools),
            "apy": rng.uniform(0, 0.2, n_pools),
            "apy_base": rng.uniform(0, 0.1, n_pools),
            "apy_reward": 0.0,
            "underlying_tokens": [[USDC]] * n_pools,
            "reward_tokens": None,
            "pool_meta": None,
            "apy_mean_30d": rng.uniform(0, 0.2, n_pools),
            "il_risk": "no",
            "stablecoin": True,
            "exposure": "single",
        }
    )
    dates = pd.date_range("2024-01-01", periods=days, freq="D")
    apy = np.clip(0.05 + 0.02 * rng.standard_normal((days, n_candidates)).cumsum(axis=0) / 10, 0, None)
    hist = pd.DataFrame(
        {
            "date": np.repeat(dates, n_candidates),
            "pool": np.tile(ids[:n_candidates], days),
            "apy": apy.ravel(),
            "apy_base": apy.ravel(),
            "tvl_usd": np.tile(snap["tvl_usd"][:n_candidates], days),
        }
    )
    return snap, hist


def main() -> None:
    project = load_project()
    vaults, tokens = project.vaults, project.tokens
    hist, snap = bt.load_recorded(REPO / "recorded")
    u = timed(
        "bundled recording, 55 pools x 365 days, bundled vaults",
        lambda: screen_universe(hist, snap, vaults, tokens),
    )
    print(f"  members {len(u.members)}, exclusions {len(u.exclusions)}, ranking rows {len(u.rankings)}")

    ranked = {
        name: v.model_copy(
            update={
                "min_apy_mean_30d": 0.01,
                "top_pools": v.top_pools.model_copy(update={"allow_list": True, "window_days": 90}),
            }
        )
        for name, v in vaults.items()
    }
    rng = np.random.default_rng(0)
    snap, hist = synthetic(17_000, 600, 365 + 120, rng)
    last = hist["date"].max()
    live = pd.concat([snap.assign(date=last - pd.Timedelta(days=d)) for d in (1, 0)], ignore_index=True)
    night = timed(
        "live night: 17,000-pool snapshot x 2 days + 120 days lookback",
        lambda: screen_universe(live, snap, ranked, tokens, lookback=hist),
    )
    print(
        f"  members {len(night.members)}, exclusions {len(night.exclusions)}, ranking rows {len(night.rankings)}"
    )
    year = hist[hist["date"] > hist["date"].min() + pd.Timedelta(days=119)]
    backfill = timed(
        "year backfill: 600 candidates x 365 days (+ lookback)",
        lambda: screen_universe(year, snap, ranked, tokens, lookback=hist),
    )
    print(f"  members {len(backfill.members)}, ranking rows {len(backfill.rankings)}")


if __name__ == "__main__":
    main()
