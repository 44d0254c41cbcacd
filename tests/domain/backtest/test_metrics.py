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
    assert m["max_drawdown"] == 0.0 and math.isnan(m["calmar"])


def test_drawdown_sharpe_sortino():
    days = pd.date_range("2024-01-01", periods=5, freq="D")
    w = pd.Series([100.0, 120.0, 90.0, 108.0, 130.0], index=days)
    assert max_drawdown(w) == pytest.approx(0.25)
    m = wealth_metrics(w)
    r = np.diff(np.log(w.to_numpy()))
    vol = np.std(r, ddof=1) * math.sqrt(365)
    assert m["volatility"] == pytest.approx(vol)
    assert m["sharpe"] == pytest.approx(m["log_growth"] / vol)
    down = math.sqrt(np.mean(np.minimum(r, 0) ** 2) * 365)
    assert m["sortino"] == pytest.approx(m["log_growth"] / down)
    assert m["calmar"] == pytest.approx(m["log_growth"] / 0.25)


def test_normalized_entropy():
    assert normalized_entropy(np.array([0.25] * 4), 4) == pytest.approx(1.0)
    assert normalized_entropy(np.array([1.0, 0, 0, 0]), 4) == 0.0
    assert normalized_entropy(np.array([0.5, 0.5]), 4) == pytest.approx(0.5)
