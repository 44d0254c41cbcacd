"""Confidence interval of a mean of serially dependent daily values: the stationary block bootstrap.

Daily differences in log growth between a policy and a benchmark are autocorrelated (both hold
positions for days or weeks), so resampling single days would understate the uncertainty. The
stationary bootstrap (Politis, Romano 1994) resamples blocks of random length, geometric with mean
``mean_block``, wrapping around the end of the sample; each resample has the original length.
All resamples are drawn at once as an index matrix (no loop over resamples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MeanInterval:
    estimate: float
    low: float
    high: float
    confidence: float
    n: int
    n_resamples: int
    mean_block: float


def stationary_bootstrap_indices(
    n: int, mean_block: float, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_resamples x n`` indices into a sample of length ``n``: blocks start at uniform positions,
    each next index continues the block (wrapping) with probability ``1 - 1/mean_block``."""
    if n < 1:
        raise ValueError("cannot bootstrap an empty sample")
    if mean_block < 1:
        raise ValueError(f"mean block length must be >= 1, got {mean_block}")
    starts = rng.integers(0, n, size=(n_resamples, n))
    new_block = rng.random((n_resamples, n)) < 1.0 / mean_block
    new_block[:, 0] = True
    pos = np.arange(n)
    block_began = np.maximum.accumulate(np.where(new_block, pos, 0), axis=1)
    first = np.take_along_axis(starts, block_began, axis=1)
    return (first + pos - block_began) % n


def bootstrap_mean_interval(
    values: np.ndarray,
    *,
    mean_block: float,
    n_resamples: int,
    confidence: float,
    seed: int,
    scale: float = 1.0,
) -> MeanInterval:
    """Percentile interval of ``scale * mean(values)`` (e.g. ``scale`` = periods per year)."""
    x = np.asarray(values, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("bootstrap sample holds NaN or inf")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    idx = stationary_bootstrap_indices(len(x), mean_block, n_resamples, np.random.default_rng(seed))
    means = x[idx].mean(axis=1) * scale
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return MeanInterval(
        float(x.mean() * scale), float(low), float(high), confidence, len(x), n_resamples, float(mean_block)
    )
