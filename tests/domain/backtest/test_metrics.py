"""Metrics on paths whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.backtest.engine import normalized_entropy
from midfreq_assets.domain.backtest.metrics import max_drawdown, wealth_metrics


def test_constant_growth_path():
    days = pd.date_range("2024-01-01", periods=366, freq="D")
    t = np.arange(366) / 365.0
    m = wealth_metrics(pd.Series(100 * np.exp(0.05 * t), index=days))
    assert m["log_growth"] == pytest.approx(0.05)
    assert m["volatility"] == pytest.approx(0.0, abs=1e-12)
    assert m["max_drawdown"] == 0.0 and math.isnan(m["excess_calmar"])


def test_drawdown_sharpe_sortino():
    days = pd.date_range("2024-01-01", periods=5, freq="D")
    w = pd.Series([100.0, 120.0, 90.0, 108.0, 130.0], index=days)
    assert max_drawdown(w) == pytest.approx(0.25)
    m = wealth_metrics(w)
    r = np.diff(np.log(w.to_numpy()))
    vol = np.std(r, ddof=1) * math.sqrt(365)
    assert m["volatility"] == pytest.approx(vol)
    assert m["excess_sharpe"] == pytest.approx(m["log_growth"] / vol)
    down = math.sqrt(np.mean(np.minimum(r, 0) ** 2) * 365)
    assert m["excess_sortino"] == pytest.approx(m["log_growth"] / down)
    assert m["excess_calmar"] == pytest.approx(m["log_growth"] / 0.25)


def test_ratios_are_on_returns_in_excess_of_the_base_rate():
    """Near-riskless carry: 5%/yr with a little noise. On total returns the Sharpe is huge; over a 4.5%
    base rate it is the excess (0.5%/yr) over the same volatility, and Sortino counts only the days
    that fell short of the base rate."""
    days = pd.date_range("2024-01-01", periods=366, freq="D")
    noise = np.random.default_rng(3).normal(0.0, 2e-5, 365)
    r = 0.05 / 365 + noise
    w = pd.Series(1e6 * np.exp(np.concatenate([[0.0], np.cumsum(r)])), index=days)
    raw, excess = wealth_metrics(w, base_rate=0.0), wealth_metrics(w, base_rate=0.045)
    assert excess["base_rate"] == 0.045 and excess["volatility"] == pytest.approx(raw["volatility"])
    assert excess["excess_log_growth"] == pytest.approx(raw["log_growth"] - 0.045)
    assert excess["excess_sharpe"] == pytest.approx((raw["log_growth"] - 0.045) / raw["volatility"])
    assert raw["excess_sharpe"] > 100 and excess["excess_sharpe"] < raw["excess_sharpe"] / 5
    short = np.minimum(np.diff(np.log(w.to_numpy())) - 0.045 / 365, 0.0)
    assert excess["excess_sortino"] == pytest.approx(
        excess["excess_log_growth"] / math.sqrt(np.mean(short**2) * 365)
    )


def test_normalized_entropy():
    assert normalized_entropy(np.array([0.25] * 4), 4) == pytest.approx(1.0)
    assert normalized_entropy(np.array([1.0, 0, 0, 0]), 4) == 0.0
    assert normalized_entropy(np.array([0.5, 0.5]), 4) == pytest.approx(0.5)
