"""Benchmark of the research engine on a synthetic panel (prints figures; not a unit test).

Default yield feature set for N pools x D days, then fit + 5-fold purged walk-forward CV of a
pooled ridge. Targets: features < 2 s and < 1 GB; fit + CV < 10 s.

    .venv/bin/python benchmarks/bench_features.py [--pools 1000] [--days 1095]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np
import pandas as pd

from midfreq_assets.domain.research import engine as research
from midfreq_assets.domain.research.features import FeatureMapConfig
from midfreq_assets.domain.research.labels import LabelMapConfig
from midfreq_assets.domain.research.models import ModelsConfig


def synthetic_history(pools: int, days: int, seed: int = 0) -> pd.DataFrame:
    """Mean-reverting log-APY and random-walk log-TVL per pool; pools start on staggered days."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2022-01-01", periods=days, freq="D")
    level = rng.normal(np.log(0.05), 0.5, pools)
    shocks = rng.normal(0, 0.08, (days, pools))
    log_apy = np.empty((days, pools))
    log_apy[0] = level
    for t in range(1, days):
        log_apy[t] = level + 0.9 * (log_apy[t - 1] - level) + shocks[t]
    log_tvl = np.log(1e7) + np.cumsum(rng.normal(0, 0.03, (days, pools)), axis=0)
    start = rng.integers(0, days // 3, pools)
    alive = np.arange(days)[:, None] >= start[None, :]
    t_idx, p_idx = np.nonzero(alive)
    return pd.DataFrame(
        {
            "date": dates[t_idx],
            "pool": np.array([f"pool-{i:05d}" for i in range(pools)])[p_idx],
            "apy": np.exp(log_apy[t_idx, p_idx]),
            "tvl_usd": np.exp(log_tvl[t_idx, p_idx]),
        }
    )


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pools", type=int, default=1000)
    ap.add_argument("--days", type=int, default=3 * 365)
    args = ap.parse_args()

    hist = synthetic_history(args.pools, args.days)
    fm, lm = FeatureMapConfig(), LabelMapConfig.model_validate({"apy": {"horizons": [7]}})
    models = ModelsConfig.model_validate(
        {"cv": {"n_splits": 5, "min_train": 90}, "apy": {"ridge": {"alpha": 1.0, "scaler": "standard"}}}
    )
    print(f"panel: {args.pools} pools x {args.days} days = {len(hist):,} rows; RSS before {rss_mb():.0f} MB")

    rss0 = rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    feats = research.build_features(hist, fm)
    t_feat, c_feat = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"features: {t_feat:.2f} s wall, {c_feat:.2f} s CPU, {feats.shape[1] - 2} features, {feats.memory_usage().sum() / 2**20:.0f} MB output; "
        f"process peak RSS {rss_mb():.0f} MB (+{rss_mb() - rss0:.0f} MB; the baseline includes importing dagster)"
    )
    # allocation peak of the feature computation alone (separate run: tracing slows it ~5x)
    tracemalloc.start()
    research.build_features(hist, fm)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"features: peak traced allocations {peak / 2**20:.0f} MB")

    t0 = time.perf_counter()
    labels = research.build_labels(hist, lm)
    t_lab = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    fitted = research.fit_model(feats, labels, models, hist["date"].max(), label_map=lm)
    t_fit = time.perf_counter() - t0
    t1 = time.perf_counter()
    cv = research.cross_validate(feats, labels, models, label_map=lm)
    t_cv, c_all = time.perf_counter() - t1, time.process_time() - c0
    print(
        f"labels: {t_lab:.2f} s; ridge fit: {t_fit:.2f} s on {fitted.n_train:,} rows; 5-fold purged CV: {t_cv:.2f} s"
    )
    print(f"fit + CV: {t_fit + t_cv:.2f} s wall, {c_all:.2f} s CPU; process peak RSS {rss_mb():.0f} MB")
    print(cv.summary().to_string(index=False))


if __name__ == "__main__":
    main()
