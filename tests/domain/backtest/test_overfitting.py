"""PBO by CSCV, the deflated Sharpe ratio and the stationary bootstrap, on corpora whose answer is known."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from midfreq_assets.domain.backtest.bootstrap import bootstrap_mean_interval, stationary_bootstrap_indices
from midfreq_assets.domain.backtest.overfitting import (
    EULER_GAMMA,
    deflated_sharpe,
    expected_max_sharpe,
    pbo_cscv,
)


def test_pbo_of_pure_noise_is_one_half_on_average():
    # one noise corpus gives a PBO anywhere in ~[0.1, 0.9] (the splits are dependent); the mean over
    # 40 independent corpora has a standard error of ~0.03, so +-0.1 is > 3 standard errors
    pbos = [pbo_cscv(np.random.default_rng(seed).normal(0.0, 0.01, (400, 20)), 16).pbo for seed in range(40)]
    assert abs(np.mean(pbos) - 0.5) < 0.1


def test_pbo_of_a_truly_better_point_is_near_zero():
    for seed in range(10):
        r = np.random.default_rng(seed).normal(0.0, 0.01, (400, 20))
        r[:, 7] += 0.003  # a third of a daily standard deviation better, every day
        res = pbo_cscv(r, 16)
        assert res.pbo < 0.05, seed
        assert res.n_combinations == math.comb(16, 8) and res.n_points == 20 and res.n_rows == 400


def test_pbo_matches_a_direct_implementation_and_drops_oldest_rows():
    r = np.random.default_rng(3).normal(0.0, 1.0, (43, 5))  # 43 = 4 * 10 + 3: the 3 oldest rows are dropped
    res = pbo_cscv(r, 4, objective="sharpe")
    blocks = np.split(r[3:], 4)
    lams = []
    for ins in itertools.combinations(range(4), 2):
        a = np.vstack([blocks[i] for i in ins])
        b = np.vstack([blocks[i] for i in range(4) if i not in ins])
        best = np.argmax(a.mean(0) / a.std(0, ddof=1))
        perf = b.mean(0) / b.std(0, ddof=1)
        rank = stats.rankdata(perf)[best]
        w = rank / 6
        lams.append(math.log(w / (1 - w)))
    np.testing.assert_allclose(res.logits, lams)
    assert res.pbo == np.mean(np.array(lams) <= 0) and res.n_rows == 40


def test_pbo_refuses_what_it_cannot_score():
    with pytest.raises(ValueError, match="even"):
        pbo_cscv(np.zeros((100, 3)), 5)
    with pytest.raises(ValueError, match="at least 2 grid points"):
        pbo_cscv(np.zeros((100, 1)), 4)
    with pytest.raises(ValueError, match="too few"):
        pbo_cscv(np.zeros((7, 3)), 4)
    bad = np.zeros((100, 3))
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match="same periods"):
        pbo_cscv(bad, 4)


def test_expected_max_sharpe_formula_and_simulation():
    n, var = 100, 0.04
    z = (1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / n) + EULER_GAMMA * stats.norm.ppf(1 - 1 / (n * math.e))
    assert expected_max_sharpe(n, var) == pytest.approx(0.2 * z)
    # the maximum of 100 standard normals is close to it on average
    maxima = np.random.default_rng(0).normal(0, 0.2, (4000, n)).max(axis=1)
    assert maxima.mean() == pytest.approx(expected_max_sharpe(n, var), rel=0.03)
    assert expected_max_sharpe(1, var) == 0.0


def test_deflated_sharpe_separates_luck_from_skill():
    rng = np.random.default_rng(1)
    trials = rng.normal(0.0, 0.01, (500, 200))  # 200 unskilled strategies, 500 days
    sharpes = trials.mean(0) / trials.std(0, ddof=1)
    lucky = trials[:, int(np.argmax(sharpes))]
    assert deflated_sharpe(lucky, 200, sharpes).deflated_sharpe < 0.5  # its Sharpe is what luck buys
    skilled = rng.normal(0.003, 0.01, 500)  # daily Sharpe 0.3 over 500 days
    res = deflated_sharpe(skilled, 200, sharpes)
    assert res.deflated_sharpe > 0.99 and res.n_trials == 200 and res.n_periods == 500
    sr, skew, kurt = res.sharpe, res.skewness, res.kurtosis
    z = (sr - res.expected_max_sharpe) * math.sqrt(499) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    assert res.deflated_sharpe == pytest.approx(stats.norm.cdf(z))
    assert math.isnan(deflated_sharpe(np.full(50, 0.001), 10, sharpes).deflated_sharpe)  # no risk: undefined


def test_stationary_bootstrap_blocks_and_interval():
    idx = stationary_bootstrap_indices(50, 10.0, 400, np.random.default_rng(0))
    assert idx.shape == (400, 50) and idx.min() >= 0 and idx.max() < 50
    continues = np.mean((idx[:, 1:] - idx[:, :-1]) % 50 == 1)
    assert continues == pytest.approx(0.9, abs=0.02)  # a block goes on with probability 1 - 1/10
    # iid data: the interval is the usual one, sigma / sqrt(n) * z on each side
    x = np.random.default_rng(1).normal(0.0, 1.0, 400)
    ci = bootstrap_mean_interval(x, mean_block=1.0, n_resamples=4000, confidence=0.9, seed=0)
    assert ci.estimate == pytest.approx(x.mean())
    assert (ci.high - ci.low) == pytest.approx(2 * 1.645 * x.std() / 20, rel=0.1)
    assert (
        bootstrap_mean_interval(x, mean_block=1.0, n_resamples=4000, confidence=0.9, seed=0) == ci
    )  # seeded


def test_block_bootstrap_widens_for_autocorrelated_data():
    rng = np.random.default_rng(2)
    e = rng.normal(0.0, 1.0, 600)
    x = np.zeros(600)
    for t in range(1, 600):
        x[t] = 0.8 * x[t - 1] + e[t]
    iid = bootstrap_mean_interval(x, mean_block=1.0, n_resamples=2000, confidence=0.9, seed=0)
    block = bootstrap_mean_interval(x, mean_block=20.0, n_resamples=2000, confidence=0.9, seed=0)
    # the long-run variance of an AR(1) with phi 0.8 is (1 + 0.8) / (1 - 0.8) = 9 times the iid one
    assert (block.high - block.low) > 2.0 * (iid.high - iid.low)


def test_bootstrap_interval_covers_the_true_mean_at_about_its_confidence():
    hits = 0
    for seed in range(100):
        x = np.random.default_rng(100 + seed).normal(0.5, 1.0, 200)
        ci = bootstrap_mean_interval(x, mean_block=5.0, n_resamples=1000, confidence=0.9, seed=seed)
        hits += ci.low <= 0.5 <= ci.high
    assert 78 <= hits <= 98  # nominal 90; binomial sd 3
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_mean_interval(np.array([1.0, np.nan]), mean_block=2, n_resamples=10, confidence=0.9, seed=0)
