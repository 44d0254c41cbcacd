"""Models: config -> estimators, the EWM yield predictor, baselines, pooled vs per-instrument."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline

from midfreq_assets.domain.research.models import (
    EstimatorSpec,
    EWMYieldPredictor,
    LastValueBaseline,
    ModelsConfig,
    fit_estimator,
    halflife_rows,
)


def series_frame(values: list[float] | np.ndarray, inst: str = "a") -> pd.DataFrame:
    return pd.DataFrame(
        {"date": pd.date_range("2024-01-01", periods=len(values)), "instrument": inst, "apy": values}
    )


def test_ewm_predictor_without_outliers_is_the_ewm_mean():
    rng = np.random.default_rng(0)
    x = 0.05 + 0.002 * rng.standard_normal(80)
    pred = EWMYieldPredictor(halflife="7d", cap=1e9).fit(None).predict(series_frame(x))
    np.testing.assert_allclose(pred, pd.Series(x).ewm(halflife=7).mean(), rtol=1e-12)
    assert halflife_rows("7d", pd.date_range("2024-01-01", periods=3)) == 7
    assert halflife_rows("12h", pd.date_range("2024-01-01", periods=3, freq="h")) == 12


def test_ewm_predictor_caps_a_spike_but_follows_a_level_shift():
    x = np.r_[np.full(30, 0.05) + 0.001 * np.sin(np.arange(30)), 0.60, np.full(20, 0.05)]
    capped = EWMYieldPredictor(halflife=7, cap=3).fit(None).predict(series_frame(x))
    raw = pd.Series(x).ewm(halflife=7).mean().to_numpy()
    assert abs(capped[30] - 0.05) < 0.002 < raw[30] - 0.05  # the spike is replaced by the EWM mean
    shift = np.r_[np.full(30, 0.05) + 0.001 * np.sin(np.arange(30)), np.full(40, 0.10)]
    pred = EWMYieldPredictor(halflife=7, cap=3).fit(None).predict(series_frame(shift))
    assert abs(pred[-1] - 0.10) < 0.01  # a lasting shift is accepted after one step


def test_ewm_predictor_works_per_instrument_on_a_stacked_panel():
    a, b = np.linspace(0.01, 0.02, 40), np.linspace(0.2, 0.1, 40)
    X = pd.concat([series_frame(a, "a"), series_frame(b, "b")]).sample(frac=1, random_state=1)
    pred = EWMYieldPredictor(halflife=5, cap=1e9).fit(None).predict(X)
    ref = {"a": pd.Series(a).ewm(halflife=5).mean(), "b": pd.Series(b).ewm(halflife=5).mean()}
    for inst in ("a", "b"):
        m = (X["instrument"] == inst).to_numpy()
        order = np.argsort(X["date"].to_numpy()[m])
        np.testing.assert_allclose(pred[m][order], ref[inst])


def test_models_config_shape_aliases_and_errors():
    cfg = ModelsConfig.model_validate(
        {
            "mode": "per_instrument",
            "apy": {
                "primary": "ridge",
                "ewm_predictor": {"halflife": "3d", "cap": 2},
                "ridge": {"estimator": "sklearn.linear_model.Ridge", "alpha": 0.5, "scaler": "standard"},
            },
        }
    )
    fam = cfg.family("apy")
    assert fam.primary_name == "ridge"
    assert fam.estimators["ewm_predictor"].params == {"halflife": "3d", "cap": 2}
    est = fam.estimators["ridge"].build()
    assert isinstance(est, Pipeline) and isinstance(est.steps[-1][1], Ridge) and est.steps[-1][1].alpha == 0.5
    assert isinstance(fam.estimators["ewm_predictor"].build("adjusted_apy"), EWMYieldPredictor)
    assert fam.estimators["ewm_predictor"].build("adjusted_apy").source == "adjusted_apy"
    with pytest.raises(ValidationError, match=r"unknown parameter\(s\) \['alpah'\]"):
        ModelsConfig.model_validate({"apy": {"ridge": {"alpah": 1}}})
    with pytest.raises(ValidationError, match="cannot be imported"):
        ModelsConfig.model_validate({"apy": {"m": {"estimator": "sklearn.linear_model.Nope"}}})
    with pytest.raises(ValidationError, match="alias"):
        ModelsConfig.model_validate({"apy": {"my_model": {"alpha": 1}}})
    with pytest.raises(ValidationError, match="primary"):
        ModelsConfig.model_validate({"apy": {"primary": "x", "ridge": {}}})


def linear_panel(n_inst: int = 3, days: int = 100, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames, ys = [], []
    for i in range(n_inst):
        f1 = rng.standard_normal(days)
        frames.append(
            pd.DataFrame(
                {
                    "date": pd.date_range("2024-01-01", periods=days),
                    "instrument": f"i{i}",
                    "f1": f1,
                    "apy": 0.05 + 0.01 * rng.standard_normal(days),
                }
            )
        )
        ys.append((i + 1.0) * f1)  # slope differs per instrument
    return pd.concat(frames, ignore_index=True), np.concatenate(ys)


def test_pooled_vs_per_instrument_and_last_value():
    X, y = linear_panel()
    spec = EstimatorSpec(estimator="linear")
    kw = dict(label="y", family="apy", name="lin", task="regression", feature_columns=["f1"])
    pooled = fit_estimator(spec, X, y, mode="pooled", **kw)
    per = fit_estimator(spec, X, y, mode="per_instrument", **kw)
    assert set(pooled.estimators) == {"all"} and set(per.estimators) == {"i0", "i1", "i2", "all"}
    np.testing.assert_allclose([per.estimators[f"i{i}"].coef_[0] for i in range(3)], [1, 2, 3], atol=1e-9)
    assert pooled.estimators["all"].coef_[0] == pytest.approx(2.0, abs=0.3)
    np.testing.assert_allclose(per.predict(X), y, atol=1e-9)
    imp = per.importances()
    assert set(imp["instrument"]) == {"i0", "i1", "i2", "all"} and (imp["feature"] == "f1").all()
    # rows with missing features predict NaN instead of failing
    Xn = X.copy()
    Xn.loc[0, "f1"] = np.nan
    assert np.isnan(pooled.predict(Xn)[0]) and not np.isnan(pooled.predict(Xn)[1:]).any()
    np.testing.assert_array_equal(LastValueBaseline().fit(X).predict(X), X["apy"].to_numpy())


def test_classifier_probabilities_cover_all_classes():
    X, y = linear_panel()
    cls = np.digitize(y, [-1.0, 1.0]).astype(float)
    fitted = fit_estimator(
        EstimatorSpec(estimator="logistic", scaler="standard"),
        X,
        cls,
        label="c",
        family="apy",
        name="logit",
        task="classification",
        mode="pooled",
        feature_columns=["f1"],
    )
    proba = fitted.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (fitted.predict(X) == cls).mean() > 0.8
    with pytest.raises(ValueError, match="not a classifier"):
        fit_estimator(
            EstimatorSpec(estimator="ridge"),
            X,
            cls,
            label="c",
            family="apy",
            name="r",
            task="classification",
            mode="pooled",
            feature_columns=["f1"],
        )


def test_per_instrument_falls_back_to_the_pooled_model_for_a_new_instrument():
    X, y = linear_panel()
    young = pd.DataFrame(
        {"date": pd.date_range("2024-04-01", periods=5), "instrument": "new", "f1": np.ones(5), "apy": 0.05}
    )
    X2 = pd.concat([X, young], ignore_index=True)
    y2 = np.concatenate([y, np.full(5, 2.0)])
    spec = EstimatorSpec(estimator="linear")
    kw = dict(label="y", family="apy", name="lin", task="regression", feature_columns=["f1"])
    per = fit_estimator(spec, X2, y2, mode="per_instrument", **kw)
    assert "new" not in per.estimators  # 5 rows < min_rows
    pred = per.predict(X2)
    pooled = fit_estimator(spec, X2, y2, mode="pooled", **kw).predict(X2)
    np.testing.assert_allclose(pred[-5:], pooled[-5:])  # the pooled model, not NaN
    np.testing.assert_allclose(pred[:-5], y, atol=1e-9)  # the others keep their own models


def test_gradient_boosting_reads_categories_and_missing_features_ridge_skips_strings():
    rng = np.random.default_rng(0)
    n = 600
    project = rng.choice(["aave-v3", "morpho-blue", "euler-v2"], n)
    x = rng.normal(0.0, 1.0, n)
    x[rng.random(n) < 0.2] = np.nan  # e.g. a 30-day flow of a young pool
    y = np.where(project == "euler-v2", 0.08, 0.04) + 0.01 * np.nan_to_num(x)
    X = pd.DataFrame(
        {
            "date": pd.Timestamp("2024-01-01"),
            "instrument": [f"p{i % 30}" for i in range(n)],
            "x": x,
            "project": project,
        }
    )
    common = dict(
        label="apy_fwd_7", family="apy", task="regression", mode="pooled", feature_columns=["x", "project"]
    )
    spec = EstimatorSpec.model_validate(
        {"estimator": "hist_gb", "categorical": ["project"], "params": {"max_iter": 100, "random_state": 0}}
    )
    gb = fit_estimator(spec, X, y, name="hist_gb", **common)
    assert (
        gb.allow_nan and gb.categorical == ["project"] and gb.n_train == n
    )  # rows with a missing feature kept
    new = X.head(3).assign(project=["euler-v2", "aave-v3", "unknown-protocol"], x=[0.0, 0.0, np.nan])
    pred = gb.predict(new)
    assert np.isfinite(pred).all() and pred[0] - pred[1] == pytest.approx(0.04, abs=0.005)
    ridge = fit_estimator(EstimatorSpec(estimator="ridge"), X, y, name="ridge", **common)
    assert (
        ridge.feature_columns == ["x"] and not ridge.allow_nan and ridge.n_train == int(np.isfinite(x).sum())
    )
    with pytest.raises(ValueError, match="categories"):
        fit_estimator(EstimatorSpec(estimator="hist_gb", categorical=["chain"]), X, y, name="gb", **common)
