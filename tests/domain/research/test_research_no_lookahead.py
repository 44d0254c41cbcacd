"""No look-ahead: changing anything after t changes nothing computed for t or before.

Perturbs every input after t (values scaled, rows dropped, a new instrument added) and checks
features, labels that ended before t, the model fitted with as_of=t and its predictions. Also
checks that a partition computed from ``required_lookback`` rows of history equals the
full-history computation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_labels import recorded_klines_1d

from midfreq_assets.domain.research import engine as research
from midfreq_assets.domain.research.features import FeatureMapConfig
from midfreq_assets.domain.research.labels import LabelMapConfig
from midfreq_assets.domain.research.models import ModelsConfig

T = pd.Timestamp("2025-01-15")
LM = LabelMapConfig.model_validate({"apy": {"horizons": [7, 30]}})
MODELS = ModelsConfig.model_validate(
    {"apy": {"ewm_predictor": {"halflife": "7d", "cap": 3}, "ridge": {"alpha": 1.0, "scaler": "standard"}}}
)


def perturb_after(
    df: pd.DataFrame, t: pd.Timestamp, time_col: str, cols: list[str], seed: int = 0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = df.copy()
    after = (out[time_col] > t).to_numpy()
    for c in cols:
        out.loc[after, c] = out.loc[after, c] * rng.uniform(0.2, 5.0, after.sum())
    drop = after & (rng.random(len(out)) < 0.1)
    out = out[~drop]
    inst = [c for c in out.columns if c in ("pool", "instrument")][0]
    future = out[after[~drop]]
    new = future[future[inst] == future[inst].iloc[0]].head(40).copy()
    new[inst] = "new-instrument"
    return pd.concat([out, new], ignore_index=True).sample(frac=1.0, random_state=seed)


@pytest.fixture(scope="module")
def yields(recorded_history):
    hist = recorded_history(12)
    alt = perturb_after(hist, T, "date", ["apy", "tvl_usd"])
    fm = FeatureMapConfig()
    return {
        name: (h, research.build_features(h, fm), research.build_labels(h, LM))
        for name, h in (("base", hist), ("alt", alt))
    }


def upto(df: pd.DataFrame, t: pd.Timestamp, col: str = "date") -> pd.DataFrame:
    return df[df[col] <= t].reset_index(drop=True)


def test_features_at_or_before_t_ignore_the_future(yields):
    pd.testing.assert_frame_equal(upto(yields["base"][1], T), upto(yields["alt"][1], T))


def test_labels_that_ended_before_t_ignore_the_future(yields):
    b, a = yields["base"][2], yields["alt"][2]
    for info in LM.labels():
        kb = b[b[info.end_col] < T][["date", "instrument", info.name]].reset_index(drop=True)
        ka = a[a[info.end_col] < T][["date", "instrument", info.name]].reset_index(drop=True)
        pd.testing.assert_frame_equal(kb, ka)


@pytest.mark.parametrize("estimator", ["ridge", "ewm_predictor"])
def test_model_fitted_as_of_t_and_its_predictions_ignore_the_future(yields, estimator):
    fits = {
        k: research.fit_model(f, lab, MODELS, T, estimator=estimator, label_map=LM)
        for k, (_, f, lab) in yields.items()
    }
    assert fits["base"].n_train == fits["alt"].n_train > 100
    for est_b, est_a in zip(fits["base"].estimators.values(), fits["alt"].estimators.values(), strict=True):
        assert repr(est_b) == repr(est_a)
        for attr in ("coef_", "intercept_"):
            final_b = est_b.steps[-1][1] if hasattr(est_b, "steps") else est_b
            final_a = est_a.steps[-1][1] if hasattr(est_a, "steps") else est_a
            if hasattr(final_b, attr):
                np.testing.assert_array_equal(getattr(final_b, attr), getattr(final_a, attr))
    fb, fa = yields["base"][1], yields["alt"][1]
    for day in (T - pd.Timedelta(days=40), T - pd.Timedelta(days=1), T):
        pb = research.predict(fits["base"], fb, date=day)
        pa = research.predict(fits["alt"], fa, date=day)
        pd.testing.assert_series_equal(pb.sort_index(), pa.sort_index())
        assert pb.notna().sum() >= 3
    # the model for T was trained on outcomes known before T only
    assert fits["base"].as_of == T


def test_klines_features_labels_and_classifier_ignore_the_future():
    kl = recorded_klines_1d()
    other = kl.assign(instrument="ALTUSDT", close=kl["close"] * 0.01 * (1 + 0.1 * np.sin(np.arange(len(kl)))))
    kl = pd.concat([kl, other], ignore_index=True)
    t = kl["open_time"].sort_values().iloc[int(len(kl) * 0.7)]  # ~85 of 123 recorded days
    alt = perturb_after(kl, t, "open_time", ["close", "volume", "taker_buy_volume"])
    alt["taker_buy_volume"] = np.minimum(alt["taker_buy_volume"], alt["volume"])
    fm = FeatureMapConfig.model_validate(
        {
            "close": {
                "transform": "log",
                "expansions": {
                    "ewma": {"windows": [3, 8], "weight": "volume"},
                    "cross_ewma": True,
                    "hvol": {"increments": [1, 3], "halflives": [4]},
                },
            },
            "taker_buy_volume": {
                "transform": "arctanh",
                "expansions": {"level": True, "ewma": {"windows": [5]}},
            },
            "volume": {"transform": "log", "expansions": {"ewma": {"windows": [4], "normalize": "rank"}}},
        }
    )
    lm = LabelMapConfig.model_validate(
        {"close": {"kind": "log_return", "horizons": [5], "lag": 1, "buckets": {"sigma_halflife": 10}}}
    )
    models = ModelsConfig.model_validate({"close": {"logistic": {"scaler": "standard", "C": 0.5}}})
    res = {}
    for name, panel in (("base", kl), ("alt", alt)):
        f, lab = research.build_features(panel, fm), research.build_labels(panel, lm)
        fitted = research.fit_model(f, lab, models, t, label="close_cls_5", label_map=lm)
        res[name] = (f, lab, fitted, research.predict_proba(fitted, f, date=t))
    pd.testing.assert_frame_equal(upto(res["base"][0], t, "open_time"), upto(res["alt"][0], t, "open_time"))
    lb, la = (r[1][r[1]["label_end"] < t].reset_index(drop=True) for r in (res["base"], res["alt"]))
    pd.testing.assert_frame_equal(lb, la)
    np.testing.assert_array_equal(
        res["base"][2].estimators["all"].steps[-1][1].coef_,
        res["alt"][2].estimators["all"].steps[-1][1].coef_,
    )
    pd.testing.assert_frame_equal(res["base"][3].sort_index(), res["alt"][3].sort_index())
    assert res["base"][3].shape == (2, 5)


def test_partition_with_required_lookback_equals_full_history(yields):
    hist, full, _ = yields["base"]
    fm = FeatureMapConfig()
    lookback = research.required_lookback(fm, MODELS)
    assert lookback >= 30 * 5
    start = pd.Timestamp("2025-05-01")
    window = hist[hist["date"] >= start - pd.Timedelta(days=lookback)]
    part = research.build_features(window, fm)
    got, want = (
        upto(part[part["date"] >= start], hist["date"].max()),
        upto(full[full["date"] >= start], hist["date"].max()),
    )
    assert len(got) == len(want) > 100
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-5, atol=1e-6)
    # the EWM predictor on the window's features predicts as on the full history
    fitted = research.fit_model(
        full, yields["base"][2], MODELS, start, estimator="ewm_predictor", label_map=LM
    )
    pd.testing.assert_series_equal(
        research.predict(fitted, part, date=start + pd.Timedelta(days=10)),
        research.predict(fitted, full, date=start + pd.Timedelta(days=10)),
        rtol=1e-6,
    )
