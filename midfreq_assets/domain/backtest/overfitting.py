"""Overfitting statistics of a grid: probability of backtest overfitting (CSCV) and the deflated Sharpe ratio.

Both read the T x N matrix of per-period returns of the N grid points (one column per point,
one row per step), so a grid of any size costs matrix products, never a re-run of its points.

- PBO (Bailey, Borwein, Lopez de Prado, Zhu 2015): the T rows are cut into S equal blocks; for each
  of the C(S, S/2) ways of calling half of them in-sample, the in-sample best point's rank among
  the N out of sample gives ``w = rank / (N + 1)`` and ``logit = log(w / (1 - w))``;
  PBO = share of splits with ``logit <= 0`` (the in-sample winner at or below the out-of-sample
  median). Pure noise gives about 0.5, a truly better point about 0.
- Deflated Sharpe ratio (Bailey, Lopez de Prado 2014): the probability that the chosen policy's
  Sharpe ratio exceeds the expected maximum Sharpe ratio of N unskilled trials, given the sample
  length, skewness and kurtosis of its returns.

Formulas: ``docs/METHOD.md`` "Honest evaluation".
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

Objective = Literal["log_growth", "sharpe"]
EULER_GAMMA = 0.5772156649015329
#: Splits scored per matrix product (bounds memory for large grids: chunk x N floats per array).
COMBINATIONS_PER_CHUNK = 512


@dataclass(frozen=True)
class PBOResult:
    """PBO of one grid, with the split geometry and every split's logit (for a histogram)."""

    pbo: float
    n_splits: int
    n_combinations: int
    n_points: int
    n_rows: int
    logits: np.ndarray


def block_objective(sums: np.ndarray, squares: np.ndarray, n: int, objective: Objective) -> np.ndarray:
    """Objective of each column from its sum and sum of squares over ``n`` rows: the mean return
    (``log_growth``, up to the annualization constant, which does not change ranks) or mean / std."""
    mean = sums / n
    if objective == "log_growth":
        return mean
    var = np.maximum(squares - n * mean**2, 0.0) / max(n - 1, 1)
    std = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, mean / std, np.where(mean > 0, np.inf, np.where(mean < 0, -np.inf, 0.0)))


def _mid_rank(values: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Rank (1 = worst .. N = best) of ``chosen[c]`` among ``values[c, :]``; ties share the mid rank."""
    below = (values < chosen[:, None]).sum(axis=1)
    equal = (values == chosen[:, None]).sum(axis=1)
    return below + (equal + 1) / 2.0


def pbo_cscv(returns: np.ndarray, n_splits: int, objective: Objective = "log_growth") -> PBOResult:
    """Probability of backtest overfitting of the columns of ``returns`` (T x N) by CSCV.

    The oldest ``T mod n_splits`` rows are dropped so that the blocks are equal. Rows with a missing
    value in any column are refused: every point must be scored on the same periods."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"returns must be a T x N matrix, got shape {r.shape}")
    t_rows, n_points = r.shape
    if n_points < 2:
        raise ValueError(f"PBO needs at least 2 grid points, got {n_points}")
    if n_splits < 2 or n_splits % 2:
        raise ValueError(f"PBO needs an even number of splits >= 2, got {n_splits}")
    block = t_rows // n_splits
    if block < 2:
        raise ValueError(f"{t_rows} periods are too few for {n_splits} blocks of at least 2 periods")
    if not np.isfinite(r).all():
        raise ValueError("returns hold NaN or inf: every grid point must be scored on the same periods")
    r = r[t_rows - block * n_splits :]
    blocks = r.reshape(n_splits, block, n_points)
    sums, squares = blocks.sum(axis=1), (blocks**2).sum(axis=1)  # S x N
    total_s, total_q = sums.sum(axis=0), squares.sum(axis=0)
    half = n_splits // 2
    n_half = half * block
    logits = []
    combos = itertools.combinations(range(n_splits), half)
    while chunk := list(itertools.islice(combos, COMBINATIONS_PER_CHUNK)):
        member = np.zeros((len(chunk), n_splits))
        member[np.arange(len(chunk))[:, None], np.asarray(chunk)] = 1.0
        in_s, in_q = member @ sums, member @ squares
        perf_in = block_objective(in_s, in_q, n_half, objective)
        perf_out = block_objective(total_s - in_s, total_q - in_q, n_half, objective)
        best = np.argmax(perf_in, axis=1)
        rank = _mid_rank(perf_out, perf_out[np.arange(len(chunk)), best])
        w = rank / (n_points + 1.0)
        logits.append(np.log(w / (1.0 - w)))
    lam = np.concatenate(logits)
    return PBOResult(float(np.mean(lam <= 0.0)), n_splits, len(lam), n_points, block * n_splits, lam)


# --------------------------------------------------------------------------------------------
# Deflated Sharpe ratio
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeflatedSharpe:
    """Per-period Sharpe ratio of the chosen returns, the benchmark SR0 and the deflated probability."""

    sharpe: float  # per period (not annualized)
    expected_max_sharpe: float  # SR0, per period
    deflated_sharpe: float  # probability in [0, 1]
    n_trials: int
    n_periods: int
    skewness: float
    kurtosis: float  # not excess (normal = 3)


def sharpe_per_period(returns: np.ndarray) -> np.ndarray:
    """Mean / std (ddof=1) of each column of a T x N matrix (or of a vector)."""
    r = np.asarray(returns, dtype=np.float64)
    std = r.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, r.mean(axis=0) / std, np.nan)


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """SR0 = sqrt(V) ((1 - g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e))), g = Euler-Mascheroni:
    the expected maximum of N unskilled Sharpe ratios whose estimates have variance V."""
    if n_trials <= 1 or not sharpe_variance > 0:
        return 0.0
    z = (1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / n_trials) + EULER_GAMMA * stats.norm.ppf(
        1 - 1 / (n_trials * math.e)
    )
    return float(math.sqrt(sharpe_variance) * z)


def deflated_sharpe(returns: np.ndarray, n_trials: int, trial_sharpes: np.ndarray) -> DeflatedSharpe:
    """DSR of ``returns`` (per-period, in excess of the base rate) chosen among ``n_trials``
    whose per-period Sharpe ratios are ``trial_sharpes`` (their variance sizes SR0):

    ``DSR = Phi((SR - SR0) sqrt(T - 1) / sqrt(1 - skew SR + (kurt - 1) / 4 SR^2))``.
    NaN when the returns are constant or the denominator is not positive (the normal
    approximation breaks down)."""
    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    t = len(r)
    trials = np.asarray(trial_sharpes, dtype=np.float64)
    trials = trials[np.isfinite(trials)]
    var = float(np.var(trials, ddof=1)) if len(trials) > 1 else 0.0
    sr0 = expected_max_sharpe(n_trials, var)
    if t < 3 or not np.std(r) > 0:
        return DeflatedSharpe(float("nan"), sr0, float("nan"), n_trials, t, float("nan"), float("nan"))
    sr = float(sharpe_per_period(r))
    skew = float(stats.skew(r))
    kurt = float(stats.kurtosis(r, fisher=False))
    denom = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    dsr = (
        float(stats.norm.cdf((sr - sr0) * math.sqrt(t - 1) / math.sqrt(denom))) if denom > 0 else float("nan")
    )
    return DeflatedSharpe(sr, sr0, dsr, n_trials, t, skew, kurt)
