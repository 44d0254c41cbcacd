"""Labels: forward mean APY, forward log returns with lag, z-score classes, end times."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from midfreq_assets.domain.ingest.klines import KLINE_CSV_COLUMNS
from midfreq_assets.domain.research.labels import LabelMapConfig, compute_labels

ROOT = Path(__file__).resolve().parents[3]
KLINES_1D = ROOT / "recorded" / "binance" / "data" / "spot" / "monthly" / "klines" / "BTCUSDT" / "1d"


def recorded_klines_1d() -> pd.DataFrame:
    """Real BTCUSDT daily klines from the bundled archive slice (research panel layout)."""
    frames = []
    for path in sorted(KLINES_1D.glob("*.zip")):
        with zipfile.ZipFile(path) as z:
            frames.append(
                pd.read_csv(io.BytesIO(z.read(z.namelist()[0])), header=None, names=list(KLINE_CSV_COLUMNS))
            )
    df = pd.concat(frames, ignore_index=True)
    ot = df["open_time"].astype("int64")
    ot = np.where(ot > 10**14, ot * 1000, ot * 1_000_000)  # microseconds from 2025, else milliseconds
    df["open_time"] = pd.to_datetime(ot, utc=True)
    df["date"] = df["open_time"].dt.tz_convert(None).dt.normalize()
    df["instrument"] = "BTCUSDT"
    return df[["open_time", "date", "instrument", "close", "volume", "taker_buy_volume"]]


def test_forward_mean_apy_matches_formula_on_recorded_pools(recorded_history):
    hist = recorded_history(5)
    labels = compute_labels(hist, LabelMapConfig.model_validate({"apy": {"horizons": [7, 30]}}))
    assert len(labels) == len(hist)
    pool = hist["pool"].iloc[0]
    apy = hist[hist["pool"] == pool].set_index("date")["apy"].asfreq("D")
    got = labels[labels["instrument"] == pool].set_index("date")
    expected = apy.rolling(7).mean().shift(-7).reindex(got.index)
    np.testing.assert_allclose(got["apy_fwd_7"], expected)
    assert (got["apy_fwd_7__end"] - got.index == pd.Timedelta(days=7)).all()
    assert (got["label_end"] == got["apy_fwd_30__end"]).all()
    assert (
        got["apy_fwd_30"].iloc[-30:].isna().all() and got["apy_fwd_30"].iloc[:-30].notna().mean() > 0.5
    )  # gaps in the record leave NaN


def test_log_return_with_lag_and_buckets_on_recorded_klines():
    kl = recorded_klines_1d()
    lm = LabelMapConfig.model_validate(
        {
            "close": {
                "kind": "log_return",
                "horizons": [3],
                "lag": 1,
                "buckets": {
                    "thresholds": [-2, -0.5, 0.5, 2],
                    "names": ["big_down", "down", "flat", "up", "big_up"],
                    "sigma_halflife": 20,
                },
            }
        }
    )
    labels = compute_labels(kl, lm, time_col="open_time")
    close = kl.set_index("open_time")["close"]
    expected = np.log(close.shift(-4) / close.shift(-1))
    np.testing.assert_allclose(labels["close_ret_3"], expected.to_numpy())
    assert (labels["close_ret_3__end"] - labels["open_time"] == pd.Timedelta(days=4)).all()
    sigma = np.log(close).diff().ewm(halflife=20, min_periods=20).std() * np.sqrt(3)
    z = expected / sigma
    codes = labels["close_cls_3"]
    known = z.notna().to_numpy()
    np.testing.assert_array_equal(codes[known], np.digitize(z[known], [-2, -0.5, 0.5, 2]))
    assert codes[~known].isna().all()
    counts = codes.value_counts()
    assert set(counts.index) == {0.0, 1.0, 2.0, 3.0, 4.0} and counts[2.0] > counts[0.0]
    assert [i.name for i in lm.labels()] == ["close_ret_3", "close_cls_3"]
    assert lm.labels()[1].task == "classification"


def test_label_config_validation():
    assert LabelMapConfig.model_validate({"apy": {"horizons": 10}}).labels()[0].name == "apy_fwd_10"
    with pytest.raises(ValidationError, match="log_return only"):
        LabelMapConfig.model_validate({"apy": {"buckets": {}}})
    with pytest.raises(ValidationError, match="names needs 5"):
        LabelMapConfig.model_validate({"close": {"kind": "log_return", "buckets": {"names": ["a", "b"]}}})
    with pytest.raises(ValidationError, match="extra"):
        LabelMapConfig.model_validate({"apy": {"horizon": [7]}})


def test_btc_price_research_config_runs_on_recorded_klines(recorded_klines):
    from midfreq_assets.domain.research import engine as research
    from midfreq_assets.domain.research.price_config import load_price_research_config

    cfg = load_price_research_config(ROOT / "configs" / "research" / "btc_price.yaml")
    assert set(cfg.intervals) == {"1h", "1d"} and cfg.symbols == ["BTCUSDT"]
    study = cfg.intervals["1d"]
    kl = recorded_klines("1d", premium=True)
    assert kl["close_premium"].notna().all()
    feats = research.build_features(kl, study.feature_map)
    labels = research.build_labels(kl, study.label_map)
    assert list(feats.columns[:3]) == ["open_time", "date", "instrument"]
    assert set(study.feature_map.feature_names()) == set(feats.columns[3:])
    assert (
        feats["close__ewma_3"].notna().sum() > 100 and feats["taker_buy_volume__ewma_3"].notna().sum() > 100
    )
    assert {"close_ret_1", "close_cls_5", "label_end"} <= set(labels.columns)
    assert research.required_lookback(study.feature_map, study.models) >= 150
    fitted = research.fit_models(
        feats[["open_time", "date", "instrument", "close__ewma_3", "taker_buy_volume__ewma_3"]],
        labels,
        study.models,
        kl["open_time"].iloc[100],
        label_map=study.label_map,
    )
    assert set(fitted) == {
        f"close_{k}_{h}/{m}"
        for k, m in (("ret", "ridge"), ("cls", "logistic"), ("sl", "logistic"))
        for h in (1, 5)
    }
    assert (
        fitted["close_cls_5/logistic"].classes == [0, 1, 2, 3, 4]
        or len(fitted["close_cls_5/logistic"].classes) >= 3
    )
