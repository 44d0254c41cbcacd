"""Price models traded as signals: class probabilities and predicted returns -> positions -> P&L."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.backtest.signals import SignalConfig, next_bar_returns, signal_table
from midfreq_assets.domain.research.labels import LabelMapConfig

LABELS = LabelMapConfig.model_validate(
    {
        "close": {
            "kind": "log_return",
            "horizons": [1],
            "lag": 1,
            "buckets": {
                "thresholds": [-2, -0.5, 0.5, 2],
                "names": ["big_down", "down", "flat", "up", "big_up"],
                "sigma_halflife": 24,
            },
        }
    }
)
CLASSES = ["big_down", "down", "flat", "up", "big_up"]


def klines(bars: int = 600, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = pd.date_range("2023-02-01", periods=bars, freq="h", tz="UTC")
    close = 20_000 * np.exp(np.cumsum(rng.normal(0, 0.004, bars)))
    return pd.DataFrame(
        {
            "symbol": "BTCUSDT",
            "interval": "1h",
            "open_time": t,
            "date": t.tz_localize(None).normalize(),
            "close": close,
            "volume": 1.0,
            "taker_buy_volume": 0.5,
        }
    )


def predictions(k: pd.DataFrame, foresight: bool) -> pd.DataFrame:
    fwd = next_bar_returns(k, "1h", lag=1)["fwd_return"].to_numpy()
    rng = np.random.default_rng(7)
    direction = np.sign(fwd) if foresight else rng.choice([-1.0, 1.0], len(fwd))
    probs = np.zeros((len(fwd), 5))
    probs[direction > 0, 4] = 1.0  # big_up
    probs[direction <= 0, 0] = 1.0  # big_down
    folds = np.where(np.arange(len(fwd)) < len(fwd) // 2, "2023-02-06", "2023-02-13")
    out = pd.DataFrame(
        {
            "open_time": k["open_time"],
            "instrument": "BTCUSDT",
            "model_as_of": folds,
            "close_ret_1/ridge": 0.004 * direction,
        }
    )
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
    table = signal_table(
        predictions(k, foresight), k, "1h", LABELS, SignalConfig(cost=0.0, bars_per_year=8760)
    )
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


def test_class_values_by_name_and_loss_probability_sizing():
    from midfreq_assets.domain.backtest.signals import loss_probabilities, positions

    cfg = SignalConfig(
        class_values={"big_down": -3, "down": -1, "flat": 0, "up": 1, "big_up": 3},
        sizing="max_loss_probability",
        loss_threshold=2.0,
        max_loss_probability=0.2,
        max_leverage=2.0,
        threshold=0.1,
    )
    values = cfg.values_of(["flat", "big_up", "big_down"])  # by name, whatever the order
    assert values.tolist() == [0.0, 3.0, -3.0]
    proba = pd.DataFrame(
        [
            [0.0, 0.1, 0.2, 0.3, 0.4],  # long; P(big_down) = 0 -> full size
            [0.1, 0.0, 0.2, 0.3, 0.4],  # long; P(big_down) = 0.1 -> half size
            [0.25, 0.0, 0.0, 0.35, 0.4],  # long; P(big_down) = 0.25 >= 0.2 -> flat
            [0.4, 0.3, 0.2, 0.0, 0.1],  # short; P(big_up) = 0.1 -> half size
            [0.0, 0.0, 1.0, 0.0, 0.0],
        ],  # |signal| < threshold -> flat
        columns=CLASSES,
    )
    v = cfg.values_of(CLASSES)
    signal = pd.Series(proba.to_numpy() @ v)
    long_loss, short_loss = loss_probabilities(proba, v, cfg.loss_threshold)
    assert long_loss.tolist() == [0.0, 0.1, 0.25, 0.4, 0.0] and short_loss.tolist()[3] == 0.1
    pos = positions(signal, cfg, long_loss, short_loss)
    np.testing.assert_allclose(pos.to_numpy(), [2.0, 1.0, 0.0, -1.0, 0.0])
    # expected-value sizing of the same signal: scale and cap only
    ev = positions(signal, cfg.model_copy(update={"sizing": "expected_value"}))
    np.testing.assert_allclose(
        ev.to_numpy(), np.clip(signal.to_numpy(), -2, 2) * (np.abs(signal.to_numpy()) >= 0.1)
    )
    with pytest.raises(ValueError, match=r"no value for class\(es\) \['up'\]"):
        SignalConfig(class_values={"down": -1}).values_of(["down", "up"])


def test_loss_probability_sizing_in_the_report_takes_less_risk():
    k = klines()
    preds = predictions(k, foresight=False)
    probs = [f"close_cls_1/logistic:p_{c}" for c in CLASSES]
    rng = np.random.default_rng(3)
    preds[probs] = rng.dirichlet(np.ones(5), len(preds))  # uncertain classifiers: real tail mass both ways
    ev = signal_table(preds, k, "1h", LABELS, SignalConfig(cost=0.0, bars_per_year=8760, threshold=0.0))
    sized = signal_table(
        preds,
        k,
        "1h",
        LABELS,
        SignalConfig(
            cost=0.0,
            bars_per_year=8760,
            threshold=0.0,
            sizing="max_loss_probability",
            max_loss_probability=0.3,
        ),
    )
    key = (ev["model"] == "close_cls_1/logistic") & (ev["fold"] == "all")
    assert sized.loc[key, "exposure"].iloc[0] < ev.loc[key, "exposure"].iloc[0]
    reg = (ev["model"] == "close_ret_1/ridge") & (ev["fold"] == "all")  # regressors keep the EV sizing
    assert sized.loc[reg, "annual_return"].iloc[0] == pytest.approx(ev.loc[reg, "annual_return"].iloc[0])


def test_quantile_summaries_rank_the_signal():
    k = klines()
    table = signal_table(
        predictions(k, foresight=True), k, "1h", LABELS, SignalConfig(cost=0.0, bars_per_year=8760)
    )
    row = table[(table["model"] == "close_ret_1/ridge") & (table["fold"] == "all")].iloc[0]
    assert (
        row["signal_p05"] <= row["signal_p25"] <= row["signal_p50"] <= row["signal_p75"] <= row["signal_p95"]
    )
    buckets = [row[f"return_b{b}"] for b in range(1, 6)]
    assert buckets[-1] > 0 > buckets[0]  # knowing the sign: the strongest signals precede rises
    assert {f"return_b{b}" for b in range(1, 6)} <= set(table.columns)


def test_class_values_must_cover_every_class_of_the_study():
    from midfreq_assets.domain.config.base import ConfigError, validate_model
    from midfreq_assets.domain.research.price_config import PriceStudyConfig

    study = {
        "feature_map": {"close": {"transform": "log", "expansions": {"ewma": {"windows": [3]}}}},
        "label_map": {
            "close": {
                "kind": "log_return",
                "horizons": [4],
                "buckets": {"thresholds": [-1, 1], "names": ["down", "flat", "up"]},
                "stop_limit": {"take_profit": 1, "stop_loss": 1},
            }
        },
        "models": {"close": {"logistic": {}}},
        "signal": {"class_values": {"down": -1, "flat": 0, "up": 1}},
    }
    with pytest.raises(
        ConfigError,
        match=r"no value for class\(es\) \['stop_loss', 'horizon', 'take_profit'\] "
        r"of label close_sl_4",
    ):
        validate_model(PriceStudyConfig, study, "btc.yaml")
    study["signal"]["class_values"].update(stop_loss=-1, horizon=0, take_profit=1)
    assert validate_model(PriceStudyConfig, study, "btc.yaml").signal.values_of(["take_profit"]).tolist() == [
        1.0
    ]
