"""Price models traded as signals: class probabilities and predicted returns -> positions -> P&L."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.backtest.signals import SignalConfig, next_bar_returns, signal_table
from midfreq_assets.domain.research.labels import LabelMapConfig

LABELS = LabelMapConfig.model_validate({"close": {"kind": "log_return", "horizons": [1], "lag": 1, "buckets": {
    "thresholds": [-2, -0.5, 0.5, 2], "names": ["big_down", "down", "flat", "up", "big_up"], "sigma_halflife": 24}}})
CLASSES = ["big_down", "down", "flat", "up", "big_up"]


def klines(bars: int = 600, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = pd.date_range("2023-02-01", periods=bars, freq="h", tz="UTC")
    close = 20_000 * np.exp(np.cumsum(rng.normal(0, 0.004, bars)))
    return pd.DataFrame({"symbol": "BTCUSDT", "interval": "1h", "open_time": t, "date": t.tz_localize(None).normalize(),
                         "close": close, "volume": 1.0, "taker_buy_volume": 0.5})


def predictions(k: pd.DataFrame, foresight: bool) -> pd.DataFrame:
    fwd = next_bar_returns(k, "1h", lag=1)["fwd_return"].to_numpy()
    rng = np.random.default_rng(7)
    direction = np.sign(fwd) if foresight else rng.choice([-1.0, 1.0], len(fwd))
    probs = np.zeros((len(fwd), 5))
    probs[direction > 0, 4] = 1.0  # big_up
    probs[direction <= 0, 0] = 1.0  # big_down
    folds = np.where(np.arange(len(fwd)) < len(fwd) // 2, "2023-02-06", "2023-02-13")
    out = pd.DataFrame({"open_time": k["open_time"], "instrument": "BTCUSDT", "model_as_of": folds,
                        "close_ret_1/ridge": 0.004 * direction})
    for j, c in enumerate(CLASSES[::-1]):  # stored in another order than the buckets: mapped by name
        out[f"close_cls_1/logistic:p_{c}"] = probs[:, 4 - j]
    return out


def test_next_bar_return_is_after_the_lag():
    k = klines(10)
    r = next_bar_returns(k, "1h", lag=1)
    logc = np.log(k["close"].to_numpy())
    assert r["fwd_return"].iloc[0] == pytest.approx(logc[2] - logc[1])
    assert np.isnan(r["fwd_return"].iloc[-1])


@pytest.mark.parametrize("foresight", [True, False])
def test_signal_report_per_fold_and_overall(foresight):
    k = klines()
    table = signal_table(predictions(k, foresight), k, "1h", LABELS, SignalConfig(cost=0.0, bars_per_year=8760))
    assert set(table["model"]) == {"close_ret_1/ridge", "close_cls_1/logistic"}
    assert set(table["fold"]) == {"2023-02-06", "2023-02-13", "all"}
    overall = table[table["fold"] == "all"].set_index("model")
    if foresight:  # knowing the next bar's sign: every position is right
        assert (overall["hit_ratio"] > 0.97).all()
        assert (overall["annual_return"] > 0).all()
    else:
        assert overall.loc["close_cls_1/logistic", "hit_ratio"] == pytest.approx(0.5, abs=0.1)


def test_costs_reduce_returns():
    k = klines()
    preds = predictions(k, foresight=False)
    free = signal_table(preds, k, "1h", LABELS, SignalConfig(cost=0.0, bars_per_year=8760))
    costly = signal_table(preds, k, "1h", LABELS, SignalConfig(cost=0.001, bars_per_year=8760))
    assert (costly["annual_return"] < free["annual_return"]).all()


def test_empty_inputs_give_empty_report():
    assert signal_table(pd.DataFrame(), klines(), "1h", LABELS, SignalConfig()).empty
