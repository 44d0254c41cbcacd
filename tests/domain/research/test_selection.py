"""The traded model is chosen by out-of-sample evidence: the CV winner among the estimators and the
naive baseline, on folds that ended before the refit; the baseline unless a model beats it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.research import engine as research
from midfreq_assets.domain.research.bundles import fit_bundle, model_for_day, predict_days, weekly_bundles
from midfreq_assets.domain.research.features import FeatureMapConfig
from midfreq_assets.domain.research.labels import LabelMapConfig
from midfreq_assets.domain.research.models import NAIVE, ModelsConfig
from midfreq_assets.domain.research.plan import refit_as_of, refit_dates

LM = LabelMapConfig.model_validate({"apy": {"horizons": [7]}})
FM = FeatureMapConfig.model_validate({"apy": {"expansions": {"level": True, "ewma": {"windows": [3, 7]}}}})
EWM_ONLY = {"cv": {"n_splits": 4, "min_train": 40}, "apy": {"ewm_predictor": {"halflife": "5d", "cap": 4}}}
EWM_RIDGE = {
    "cv": {"n_splits": 4, "min_train": 40},
    "apy": {"ewm_predictor": {"halflife": "5d", "cap": 4}, "ridge": {"scaler": "standard"}},
}


def panel(kind: str, days: int = 240, pools: int = 6, seed: int = 0) -> pd.DataFrame:
    """``noisy``: each pool's APY is its own level plus daily noise (smoothing helps);
    ``walk``: a random walk (today's value is the best forecast of the next week)."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2024-01-01", periods=days, freq="D")
    rows = []
    for i in range(pools):
        if kind == "noisy":
            apy = 0.03 + 0.01 * i + rng.normal(0.0, 0.01, days)
        else:
            apy = 0.05 + np.cumsum(rng.normal(0.0, 0.004, days))
        rows.append(pd.DataFrame({"date": dates, "instrument": f"p{i}", "apy": apy, "tvl_usd": 1e7}))
    return pd.concat(rows, ignore_index=True)


def bundle(kind: str, models: dict, as_of: str = "2024-08-20", seed: int = 0, fm: FeatureMapConfig = FM):
    hist = panel(kind, seed=seed)
    cfg = ModelsConfig.model_validate(models)
    feats = research.build_features(hist, fm)
    labels = research.build_labels(hist, LM)
    as_of = pd.Timestamp(as_of)
    return fit_bundle(feats[feats["date"] < as_of], labels, cfg, LM, as_of, cv_labels=["apy_fwd_7"]), feats


def test_a_model_that_beats_naive_out_of_sample_is_traded():
    b, _ = bundle("noisy", EWM_RIDGE)
    sel = b.selection["apy_fwd_7"]
    assert sel.chosen != NAIVE and sel.beats_naive and sel.metric == "mae"
    assert sel.scores[sel.chosen] < sel.scores[NAIVE] and "beats the naive baseline" in sel.note
    assert b.model_key("apy_fwd_7") == f"apy_fwd_7/{sel.chosen}" and f"apy_fwd_7/{NAIVE}" in b.models
    # the fold table keeps every candidate's out-of-sample score per fold, on the same rows
    f = b.folds[b.folds["metric"] == "mae"]
    assert set(f["estimator"]) == {"ewm_predictor", "ridge", NAIVE}
    assert set(f["fold"]) >= {"0", "1", "2", "3", "all"}
    assert f.groupby("fold")["n"].nunique().eq(1).all()


def test_on_a_random_walk_nothing_beats_naive_and_naive_is_traded():
    b, _ = bundle("walk", EWM_ONLY)
    sel = b.selection["apy_fwd_7"]
    assert sel.chosen == NAIVE and not sel.beats_naive
    assert sel.scores["ewm_predictor"] > sel.scores[NAIVE] and "naive baseline traded" in sel.note
    assert b.model_key("apy_fwd_7") == f"apy_fwd_7/{NAIVE}"


def test_a_weeks_choice_uses_only_folds_that_ended_before_its_as_of():
    as_of = pd.Timestamp("2024-08-20")
    b, _ = bundle("noisy", EWM_RIDGE, as_of=str(as_of.date()))
    assert (pd.to_datetime(b.folds["test_end"]) < as_of).all()
    # a future that turns the data into a random walk changes nothing about this week's choice
    hist, alt = panel("noisy"), panel("walk", seed=5)
    mixed = pd.concat([hist[hist["date"] < as_of], alt[alt["date"] >= as_of]], ignore_index=True)
    cfg = ModelsConfig.model_validate(EWM_RIDGE)
    feats, labels = research.build_features(mixed, FM), research.build_labels(mixed, LM)
    again = fit_bundle(feats[feats["date"] < as_of], labels, cfg, LM, as_of, cv_labels=["apy_fwd_7"])
    assert again.selection["apy_fwd_7"] == b.selection["apy_fwd_7"]
    pd.testing.assert_frame_equal(again.folds, b.folds)


def test_without_cv_evidence_the_baseline_is_traded_and_fixed_selection_uses_primary():
    early, _ = bundle("noisy", EWM_RIDGE, as_of="2024-02-15")  # 45 days: too few for 4 folds after 40
    assert (
        early.selection["apy_fwd_7"].chosen == NAIVE and "no CV evidence" in early.selection["apy_fwd_7"].note
    )
    assert "CV skipped" in early.cv_note
    fixed, _ = bundle(
        "walk", {**EWM_RIDGE, "selection": {"by": "fixed"}, "apy": {**EWM_RIDGE["apy"], "primary": "ridge"}}
    )
    assert fixed.selection["apy_fwd_7"].chosen == "ridge" and len(fixed.folds)  # evidence still recorded


def test_predictions_use_the_model_each_week_selected():
    hist = panel("noisy")
    cfg = ModelsConfig.model_validate(EWM_RIDGE)
    feats, labels = research.build_features(hist, FM), research.build_labels(hist, LM)
    as_ofs = refit_dates(pd.Timestamp("2024-03-01").date(), pd.Timestamp("2024-08-01").date(), 2)
    bundles = weekly_bundles(
        {str(d.date()): d for d in as_ofs}, feats, labels, cfg, LM, cv_labels=["apy_fwd_7"]
    )
    days = pd.date_range("2024-03-04", "2024-08-20")
    out = predict_days(bundles, feats, days, lambda b: b.model_key("apy_fwd_7"))
    for day, rows in out.groupby("date"):
        b = model_for_day(bundles, day)
        assert set(rows["model"]) == {b.model_key("apy_fwd_7")} and (rows["model_as_of"] == b.as_of).all()
    assert out["model_as_of"].le(out["date"]).all()


def test_refit_calendar_is_every_k_mondays():
    days = refit_dates(pd.Timestamp("2024-01-03").date(), pd.Timestamp("2024-03-01").date(), 2)
    assert list(days.strftime("%Y-%m-%d")) == ["2024-01-08", "2024-01-22", "2024-02-05", "2024-02-19"]
    assert (days.dayofweek == 0).all()
    first = pd.Timestamp("2024-01-03").date()
    assert refit_as_of(pd.Timestamp("2024-01-29").date(), first, 2) == pd.Timestamp("2024-01-22")
    assert refit_as_of(pd.Timestamp("2024-01-29").date(), first, 1) == pd.Timestamp("2024-01-29")
    assert refit_as_of(pd.Timestamp("2024-01-08").date(), first, 3) == pd.Timestamp("2024-01-08")


def test_naive_is_a_reserved_estimator_name():
    with pytest.raises(ValueError, match="reserved"):
        ModelsConfig.model_validate({"apy": {"naive": {"estimator": "ridge"}}})


def test_a_model_predicting_too_few_pools_is_not_chosen():
    # a 30-day z-scored trend needs 75 days of history: ridge cannot predict the first folds' rows
    slow = FeatureMapConfig.model_validate(
        {"apy": {"expansions": {"level": True, "ewma": {"windows": [3, 30]}}}}
    )
    models = {**EWM_RIDGE, "apy": {"ridge": {"scaler": "standard"}}}
    b, _ = bundle("noisy", models, fm=slow)
    f = b.folds[(b.folds["fold"] == "all") & (b.folds["metric"] == "mae")].set_index("estimator")
    assert f.loc["ridge", "coverage"] < 0.9 <= f.loc[NAIVE, "coverage"]
    sel = b.selection["apy_fwd_7"]
    assert sel.chosen == NAIVE and "at least 90%" in sel.note
    lenient, _ = bundle("noisy", {**models, "selection": {"min_coverage": 0.0}}, fm=slow)
    assert lenient.selection["apy_fwd_7"].chosen == "ridge"  # it beats naive on the rows it predicts
