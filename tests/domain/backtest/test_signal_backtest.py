"""Signal backtest: positions from probabilities, costs, metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.backtest.signals import (
    SignalConfig,
    expected_class_value,
    positions,
    signal_backtest,
)


def test_expected_value_positions_and_pnl():
    proba = pd.DataFrame([[0.0, 0.0, 1.0], [0.5, 0.5, 0.0], [0.2, 0.6, 0.2]])
    ev = expected_class_value(proba)
    np.testing.assert_allclose(ev, [1.0, -0.5, 0.0])
    cfg = SignalConfig(threshold=0.5, max_leverage=0.8, cost=0.01)
    np.testing.assert_allclose(positions(ev, cfg), [0.8, -0.5, 0.0])
    frame = pd.DataFrame(
        {
            "fold": 0,
            "instrument": "BTC",
            "date": pd.date_range("2024-01-01", periods=3),
            "signal": ev,
            "fwd_return": [0.02, -0.01, 0.05],
        }
    )
    out = signal_backtest(frame, cfg).iloc[0]
    pnl = np.array([0.8 * 0.02 - 0.01 * 0.8, -0.5 * -0.01 - 0.01 * 1.3, 0.0 - 0.01 * 0.5])
    assert out["annual_return"] == pytest.approx(pnl.mean() * 365)
    assert out["hit_ratio"] == 1.0 and out["exposure"] == pytest.approx(2 / 3)
    assert out["max_drawdown"] == pytest.approx(-(pnl[1] + pnl[2]))
