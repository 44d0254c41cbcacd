"""stop_limit labels: which barrier a trade hits first within the horizon, and when that is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.config.base import ConfigError, validate_model
from midfreq_assets.domain.research import engine
from midfreq_assets.domain.research.labels import LabelMapConfig, compute_labels
from midfreq_assets.domain.research.models import ModelsConfig

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def panel(
    close: list[float], high: list[float] | None = None, low: list[float] | None = None
) -> pd.DataFrame:
    n = len(close)
    times = pd.date_range(T0, periods=n, freq="h")
    return pd.DataFrame(
        {
            "open_time": times,
            "date": times.tz_convert(None).normalize(),
            "instrument": "X",
            "close": close,
            "high": high or close,
            "low": low or close,
        }
    )


def label_map(horizon: int = 3, **stop_limit) -> LabelMapConfig:
    spec = {"take_profit": 0.05, "stop_loss": 0.05, "units": "log_return", **stop_limit}
    return LabelMapConfig.model_validate(
        {"close": {"kind": "log_return", "horizons": [horizon], "lag": 0, "stop_limit": spec}}
    )


def test_barriers_on_a_hand_path_with_end_times_at_the_touch():
    up, down = np.exp(0.06), np.exp(-0.06)
    close = [100, 100, 100 * up, 100, 100, 100, 100 * down, 100, 100, 100, 100, 100]
    labels = compute_labels(panel(close), label_map(high=None, low=None), time_col="open_time")
    code, end = labels["close_sl_3"].to_numpy(), labels["close_sl_3__end"]
    assert code[0] == 2 and end[0] == T0 + pd.Timedelta(hours=2)  # take-profit at bar 2: known then
    assert code[1] == 2 and end[1] == T0 + pd.Timedelta(hours=2)
    assert code[3] == 0 and end[3] == T0 + pd.Timedelta(hours=6)  # stop at bar 6
    assert code[7] == 1 and end[7] == T0 + pd.Timedelta(hours=10)  # neither: the horizon's end
    assert np.isnan(code[-2]) and end.iloc[-2] == T0 + pd.Timedelta(hours=13)  # not known yet (past the data)
    assert labels["close_sl_3"].isin([0, 1, 2]).sum() == len(close) - 3


def test_bar_extremes_and_a_bar_touching_both_barriers():
    close = [100.0] * 8
    high = [100, 100, 106.5, 100, 100, 107, 100, 100]
    low = [100, 100, 100, 100, 100, 94, 100, 100]
    labels = compute_labels(panel(close, high, low), label_map(), time_col="open_time")
    code = labels["close_sl_3"].to_numpy()
    assert code[0] == 2 and code[1] == 2  # the high of bar 2 reached take-profit
    assert code[2] == 0 and code[4] == 0  # bar 5 reached both: counted as the stop (pessimistic)
    assert np.isnan(code[6])
    # with closes only, the same path never touches
    assert (
        compute_labels(panel(close, high, low), label_map(high=None, low=None), time_col="open_time")[
            "close_sl_3"
        ].iloc[0]
        == 1
    )


def brute_force(bars: pd.DataFrame, h: int, lag: int, tp_mult: float, sl_mult: float, halflife: int):
    logc = np.log(bars["close"].to_numpy())
    sigma = (
        pd.Series(np.diff(logc, prepend=np.nan)).ewm(halflife=halflife, min_periods=halflife).std().to_numpy()
    )
    hi, lo = np.log(bars["high"].to_numpy()), np.log(bars["low"].to_numpy())
    codes, steps = [], []
    for t in range(len(bars)):
        if t + lag >= len(bars) or not np.isfinite(sigma[t]):
            codes.append(np.nan), steps.append(h)
            continue
        entry, up, down = logc[t + lag], tp_mult * sigma[t] * np.sqrt(h), sl_mult * sigma[t] * np.sqrt(h)
        code, step = np.nan, h
        for j in range(1, h + 1):
            k = t + lag + j
            if k >= len(bars):
                break
            if lo[k] - entry <= -down:
                code, step = 0.0, j
                break
            if hi[k] - entry >= up:
                code, step = 2.0, j
                break
        else:
            code = 1.0
        codes.append(code), steps.append(step)
    return np.array(codes), np.array(steps)


def test_matches_a_per_row_loop_on_recorded_btc_bars(recorded_klines):
    bars = recorded_klines("1d")
    lm = LabelMapConfig.model_validate(
        {
            "close": {
                "kind": "log_return",
                "horizons": [5],
                "lag": 1,
                "stop_limit": {"take_profit": 1.5, "stop_loss": 1.0, "units": "sigma", "sigma_halflife": 10},
            }
        }
    )
    labels = compute_labels(bars, lm, time_col="open_time")
    codes, steps = brute_force(bars, 5, 1, 1.5, 1.0, 10)
    np.testing.assert_array_equal(labels["close_sl_5"].to_numpy(), codes)
    known = np.isfinite(codes)
    times = bars["open_time"].to_numpy()
    expected_end = times[np.arange(len(bars))[known] + 1 + steps[known].astype(int)]
    np.testing.assert_array_equal(labels.loc[known, "close_sl_5__end"].to_numpy(), expected_end)
    counts = pd.Series(codes[known]).value_counts()
    assert set(counts.index) == {0.0, 1.0, 2.0}  # every outcome occurs on real data
    assert (labels["label_end"] >= labels["close_sl_5__end"]).all()


def test_known_labels_do_not_change_when_later_bars_are_cut(recorded_klines):
    bars = recorded_klines("1d")
    lm = label_map(take_profit=1.0, stop_loss=1.0, units="sigma", sigma_halflife=10)
    full = compute_labels(bars, lm, time_col="open_time")
    cut = bars["open_time"].iloc[80]
    part = compute_labels(bars[bars["open_time"] <= cut], lm, time_col="open_time")
    known = part["close_sl_3__end"] <= cut
    assert known.sum() > 60
    pd.testing.assert_series_equal(part.loc[known, "close_sl_3"], full.loc[known[known].index, "close_sl_3"])


def test_training_uses_rows_whose_outcome_was_known_before_as_of(recorded_klines):
    bars = recorded_klines("1d")
    lm = label_map(10, take_profit=0.5, stop_loss=0.5, units="sigma", sigma_halflife=10)
    fmap = {"close": {"transform": "log", "expansions": {"ewma": {"windows": [3, 10]}}}}
    from midfreq_assets.domain.research.features import FeatureMapConfig

    feats = engine.build_features(bars, FeatureMapConfig.model_validate(fmap))
    labels = engine.build_labels(bars, lm)
    models = ModelsConfig.model_validate(
        {"mode": "pooled", "close": {"logistic": {"C": 1.0, "max_iter": 200}}}
    )
    as_of = bars["open_time"].iloc[90]
    fitted = engine.fit_model(feats, labels, models, as_of, label="close_sl_10", label_map=lm)
    data = engine.join_features_labels(feats, labels)
    usable = (data["close_sl_10__end"] < as_of) & data["close_sl_10"].notna()
    usable &= data[engine.feature_columns(feats)].notna().all(axis=1)
    assert fitted.n_train == int(usable.sum()) > 40
    assert fitted.class_names == ["stop_loss", "horizon", "take_profit"]
    # rows whose barrier was touched early are in, although their horizon ends at or after as_of
    horizon_end = data["open_time"] + pd.Timedelta(days=10)
    assert (usable & (horizon_end >= as_of)).any()
    assert not (usable & (data["close_sl_10__end"] >= as_of)).any()


def test_stop_limit_needs_log_returns_and_positive_barriers():
    with pytest.raises(ConfigError, match="stop_limit applies to kind: log_return only"):
        validate_model(
            LabelMapConfig,
            {"apy": {"kind": "forward_mean", "stop_limit": {"take_profit": 1, "stop_loss": 1}}},
            "x.yaml",
        )
    with pytest.raises(ConfigError, match="stop_loss"):
        validate_model(
            LabelMapConfig,
            {"close": {"kind": "log_return", "stop_limit": {"take_profit": 1, "stop_loss": -1}}},
            "x.yaml",
        )
