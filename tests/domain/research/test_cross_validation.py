"""Purged, embargoed walk-forward CV: split geometry, scores vs baseline, train-only preprocessing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.research import engine as research
from midfreq_assets.domain.research.cross_validation import score_predictions, walk_forward_splits
from midfreq_assets.domain.research.features import FeatureMapConfig
from midfreq_assets.domain.research.labels import LabelMapConfig
from midfreq_assets.domain.research.models import CVConfig, EstimatorSpec, ModelsConfig, fit_estimator


def grid_rows(n_times: int = 100, n_inst: int = 2, horizon: int = 5) -> tuple[np.ndarray, np.ndarray]:
    t = np.repeat(np.arange(n_times), n_inst)
    return t, t + horizon


def test_splits_purge_embargo_and_expand():
    t, end = grid_rows(horizon=5)
    cv = CVConfig(n_splits=4, min_train=20)
    splits = walk_forward_splits(t, end, 100, cv, embargo=7)
    assert [(s.test_start, s.test_end) for s in splits] == [(20, 40), (40, 60), (60, 80), (80, 100)]
    for s in splits:
        assert (t[s.test] >= s.test_start).all() and (t[s.test] < s.test_end).all()
        assert (end[s.train] < s.test_start).all()  # purged: no label reaches into the test fold
        assert t[s.train].max() == s.test_start - 6  # the last 5 rows before the fold are purged
    for k, s in enumerate(splits[1:], start=1):
        for prev in splits[:k]:  # embargo after every earlier test fold
            assert not ((t[s.train] >= prev.test_end) & (t[s.train] < prev.test_end + 7)).any()
    assert len(splits[3].train) > len(splits[1].train)
    rolling = walk_forward_splits(
        t, end, 100, CVConfig(n_splits=4, min_train=20, scheme="rolling", train_size=15), embargo=5
    )
    assert all(t[s.train].min() >= s.test_start - 15 for s in rolling)
    with pytest.raises(ValueError, match="too few"):
        walk_forward_splits(t, end, 100, CVConfig(n_splits=5, min_train=98), embargo=5)


def test_scores_regression_and_classification():
    inst = np.array(["a", "a", "b", "b"])
    y = np.array([1.0, 2.0, 3.0, 5.0])
    s = score_predictions(inst, y, (y.copy(), None), (np.zeros(4), None), "regression")
    r2 = s[(s.metric == "r2") & (s.instrument == "all")].iloc[0]
    assert r2["model"] == 1.0 and r2["baseline"] < 0
    mae_b = s[(s.metric == "mae") & (s.instrument == "b")].iloc[0]
    assert mae_b["model"] == 0 and mae_b["baseline"] == 4.0 and mae_b["n"] == 2
    yc = np.array([0.0, 1.0, 1.0, 1.0])
    good = np.array([[0.9, 0.1], [0.2, 0.8], [0.2, 0.8], [0.4, 0.6]])
    prior = np.tile([0.25, 0.75], (4, 1))
    c = score_predictions(
        inst, yc, (good.argmax(1).astype(float), good), (np.ones(4), prior), "classification", [0, 1]
    ).set_index(["instrument", "metric"])
    assert c.loc[("all", "accuracy"), "model"] == 1.0 and c.loc[("all", "accuracy"), "baseline"] == 0.75
    assert c.loc[("all", "balanced_accuracy"), "baseline"] == 0.5
    assert c.loc[("all", "log_loss"), "model"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.8, 0.6])))


def test_scaler_is_fitted_on_training_rows_only():
    X = pd.DataFrame(
        {"date": pd.date_range("2024-01-01", periods=50), "instrument": "a", "f": np.arange(50.0)}
    )
    y = 2 * X["f"].to_numpy()
    fitted = fit_estimator(
        EstimatorSpec(estimator="ridge", scaler="standard", params={"alpha": 1e-6}),
        X.iloc[:20],
        y[:20],
        label="y",
        family="f",
        name="r",
        task="regression",
        mode="pooled",
        feature_columns=["f"],
    )
    assert fitted.estimators["all"].named_steps["scale"].mean_[0] == pytest.approx(9.5)


def test_cross_validate_on_recorded_pools_beats_nothing_silly(recorded_history):
    hist = recorded_history(12)
    lm = LabelMapConfig.model_validate({"apy": {"horizons": [7]}})
    models = ModelsConfig.model_validate(
        {
            "cv": {"n_splits": 3, "min_train": 90},
            "apy": {"ewm_predictor": {"halflife": "7d", "cap": 3}, "ridge": {"scaler": "standard"}},
        }
    )
    feats = research.build_features(hist, FeatureMapConfig())
    labels = research.build_labels(hist, lm)
    res = research.cross_validate(feats, labels, models, label_map=lm)
    s = res.scores
    assert set(s.columns) >= {"fold", "instrument", "metric", "model", "baseline", "estimator"}
    assert set(s["fold"]) == {"0", "1", "2", "all"}
    assert set(s["metric"]) == {"mae", "r2"}
    assert set(s["instrument"]) - {"all"} <= set(hist["pool"])
    summary = res.summary().set_index(["estimator", "metric"])
    assert np.isfinite(summary["model"]).all() and np.isfinite(summary["baseline"]).all()
    assert (
        summary.loc[("ewm_predictor", "mae"), "model"] < 2 * summary.loc[("ewm_predictor", "mae"), "baseline"]
    )
    imp = res.importances
    assert set(imp["estimator"]) == {"ridge"} and set(imp["feature"]) == set(
        FeatureMapConfig().feature_names()
    )
    with pytest.raises(ValueError, match="embargo"):
        research.cross_validate(
            feats,
            labels,
            ModelsConfig.model_validate({"cv": {"embargo": 2}, "apy": {"ridge": {}}}),
            label_map=lm,
        )
