"""``weekly_bundles`` against a straightforward reference.

The refits of a run share one join of features and labels, one design per estimator (arrays made
once, fold models fitted on them) and one causal pass of the EWM predictor (``bundles``,
``models.Design``). These tests recompute refits the plain way -- the rows joined with pandas,
scikit-learn fitted directly on the purged rows, the folds and their scores from their definitions
-- and pin the fitted models, fold tables, importances, selections and predictions to it, and to
``fit_bundle`` run on each refit's own rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from midfreq_assets.domain.research import engine as research
from midfreq_assets.domain.research import models
from midfreq_assets.domain.research.bundles import fit_bundle, model_for_day, predict_days, weekly_bundles
from midfreq_assets.domain.research.features import FeatureMapConfig
from midfreq_assets.domain.research.labels import LabelMapConfig
from midfreq_assets.domain.research.models import NAIVE, EWMYieldPredictor, ModelsConfig

LM = LabelMapConfig.model_validate({"apy": {"horizons": [7, 14]}})
FM = FeatureMapConfig.model_validate(
    {
        "apy": {"expansions": {"level": True, "ewma": {"windows": [3, 7]}}},
        "tvl_usd": {"transform": "log", "expansions": {"ewma": {"windows": [5]}}},
    }
)
FEATURES = ["apy", "apy__ewma_3", "apy__ewma_7", "tvl_usd__ewma_5"]
ALPHA, HALFLIFE, CAP, N_SPLITS, MIN_TRAIN = 0.5, "5d", 3.0, 4, 40
MODELS = ModelsConfig.model_validate(
    {
        "cv": {"n_splits": N_SPLITS, "min_train": MIN_TRAIN},
        "apy": {
            "ewm_predictor": {"halflife": HALFLIFE, "cap": CAP},
            "ridge": {"alpha": ALPHA, "scaler": "standard"},
        },
    }
)
LABELS = ["apy_fwd_7", "apy_fwd_14"]
AS_OFS = {str(d.date()): d for d in pd.date_range("2024-04-01", periods=4, freq="21D")}
EXACT = {"rtol": 0, "atol": 1e-12}


def panel(days: int = 200, pools: int = 6, seed: int = 3) -> pd.DataFrame:
    """Mean-reverting APY with noise and spikes; a pool that starts late, one with a gap of missing
    days and some missing APYs (so features, labels and complete rows all have holes)."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2024-01-01", periods=days, freq="D")
    rows = []
    for i in range(pools):
        apy = 0.04 + 0.005 * i + rng.normal(0, 0.004, days) + (rng.random(days) < 0.02) * 0.05
        tvl = 1e7 * np.exp(np.cumsum(rng.normal(0, 0.02, days)))
        apy[rng.random(days) < 0.03] = np.nan
        frame = pd.DataFrame({"date": dates, "instrument": f"p{i}", "apy": apy, "tvl_usd": tvl})
        if i == 4:
            frame = frame.iloc[70:]  # a pool that starts late
        if i == 2:
            frame = frame.drop(frame.index[100:106])  # six missing days
        rows.append(frame)
    return pd.concat(rows, ignore_index=True).astype({"instrument": "str"})


@pytest.fixture(scope="module")
def run():
    hist = panel()
    feats, labels = research.build_features(hist, FM), research.build_labels(hist, LM)
    return feats, labels, weekly_bundles(AS_OFS, feats, labels, MODELS, LM, cv_labels=LABELS)


def known(feats: pd.DataFrame, labels: pd.DataFrame, label: str, as_of: pd.Timestamp) -> pd.DataFrame:
    """A refit's rows, joined the plain way: features before ``as_of`` whose label ended before it."""
    lab = labels.loc[labels[f"{label}__end"] < as_of, ["date", "instrument", label, f"{label}__end"]]
    rows = feats[feats["date"] < as_of].merge(lab, on=["date", "instrument"])
    return rows.sort_values(["date", "instrument"]).reset_index(drop=True)


def ridge(data: pd.DataFrame, label: str, rows: np.ndarray) -> Pipeline:
    """Standardized ridge fitted by scikit-learn on the complete rows among ``rows``."""
    sub = data.iloc[rows]
    sub = sub[sub[FEATURES].notna().all(axis=1) & sub[label].notna()]
    return Pipeline([("scale", StandardScaler()), ("model", Ridge(alpha=ALPHA))]).fit(
        sub[FEATURES], sub[label]
    )


def assert_same_ridge(got: Pipeline, want: Pipeline) -> None:
    for attr in ("mean_", "scale_"):
        np.testing.assert_allclose(getattr(got.steps[0][1], attr), getattr(want.steps[0][1], attr), **EXACT)
    np.testing.assert_allclose(got.steps[-1][1].coef_, want.steps[-1][1].coef_, **EXACT)
    np.testing.assert_allclose(got.steps[-1][1].intercept_, want.steps[-1][1].intercept_, **EXACT)
    assert list(got.feature_names_in_) == FEATURES  # stored models keep their feature names


def folds(data: pd.DataFrame, label: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) rows of the purged, embargoed expanding walk-forward folds, from the definition:
    test folds are consecutive blocks of days after ``min_train``; a training row lies before its
    test fold, its label ends before the fold starts and it is not within ``embargo`` days (the
    longest horizon) after an earlier test fold."""
    days = pd.date_range(data["date"].min(), data["date"].max(), freq="D")
    pos = days.get_indexer(data["date"])
    end = days.searchsorted(data[f"{label}__end"])  # past the last day: beyond every fold start
    embargo = LM.max_horizon()
    bounds = MIN_TRAIN + (np.arange(N_SPLITS + 1) * (len(days) - MIN_TRAIN)) // N_SPLITS
    out, embargoed = [], np.zeros(len(data), dtype=bool)
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        train = (pos < start) & (end < start) & ~embargoed
        out.append((np.flatnonzero(train), np.flatnonzero((pos >= start) & (pos < stop))))
        embargoed |= (pos >= stop) & (pos < stop + embargo)
    return out


def reference_cv(data: pd.DataFrame, label: str) -> tuple[dict, dict, dict]:
    """Per fold and over all folds (``'all'``): every candidate's MAE and row count on the rows all
    candidates predict, its coverage of the labelled test rows, and the ridge coefficients per fold."""
    y = data[label].to_numpy()
    ewm = EWMYieldPredictor(halflife=HALFLIFE, cap=CAP, source="apy").predict(data)  # one causal pass
    preds = {name: np.full(len(data), np.nan) for name in ("ewm_predictor", "ridge", NAIVE)}
    fold_of = np.full(len(data), -1)
    coefs = {}
    for k, (train, test) in enumerate(folds(data, label)):
        fold_of[test] = k
        preds["ewm_predictor"][test] = ewm[test]
        preds[NAIVE][test] = data["apy"].to_numpy()[test]  # today's value of the target
        complete = test[data.iloc[test][FEATURES].notna().all(axis=1).to_numpy()]
        rows = data.iloc[train]
        if (rows[FEATURES].notna().all(axis=1) & rows[label].notna()).sum() >= 10:  # a fit's min_rows
            model = ridge(data, label, train)
            preds["ridge"][complete] = model.predict(data.iloc[complete][FEATURES])
            coefs[k] = model.steps[-1][1].coef_
    mae, coverage = {}, {}
    known = ~np.isnan(y)
    common = known & np.logical_and.reduce([~np.isnan(p) for p in preds.values()])
    for fold in [*range(N_SPLITS), "all"]:
        in_fold = fold_of >= 0 if fold == "all" else fold_of == fold
        use = in_fold & common
        for name, p in preds.items():
            mae[name, str(fold)] = (
                float(np.abs(p[use] - y[use]).mean()) if use.any() else np.nan,
                int(use.sum()),
            )
            coverage[name, str(fold)] = (~np.isnan(p[in_fold & known])).mean()
    return mae, coverage, coefs


@pytest.mark.parametrize("label", LABELS)
def test_refit_models_are_scikit_learn_fitted_on_the_purged_rows(run, label):
    feats, labels, bundles = run
    for as_of in AS_OFS.values():
        data = known(feats, labels, label, as_of)
        b = bundles[str(as_of.date())]
        fitted = b.models[f"{label}/ridge"]
        assert fitted.n_train == int((data[FEATURES].notna().all(axis=1) & data[label].notna()).sum())
        assert fitted.as_of == as_of and fitted.feature_columns == FEATURES
        assert_same_ridge(fitted.estimators["all"], ridge(data, label, np.arange(len(data))))
        assert set(b.models) == {f"{lab}/{e}" for lab in LABELS for e in ("ewm_predictor", "ridge", NAIVE)}


@pytest.mark.parametrize("label", LABELS)
def test_fold_scores_importances_and_selection_match_a_direct_computation(run, label):
    feats, labels, bundles = run
    scored = 0
    for as_of in AS_OFS.values():
        b = bundles[str(as_of.date())]
        data = known(feats, labels, label, as_of)
        mae, coverage, coefs = reference_cv(data, label)
        table = b.folds[(b.folds["label"] == label) & (b.folds["metric"] == "mae")]
        assert len(table) == len(mae)
        for row in table.itertuples():
            want, n = mae[row.estimator, row.fold]
            np.testing.assert_allclose(row.score, want, **EXACT)
            assert row.n == n and row.coverage == pytest.approx(coverage[row.estimator, row.fold], abs=1e-12)
            scored += np.isfinite(row.score)
        imp = b.importances[(b.importances["label"] == label) & (b.importances["estimator"] == "ridge")]
        assert sorted(set(imp["fold"])) == sorted(coefs)
        for fold, coef in coefs.items():
            got = imp[imp["fold"] == fold].set_index("feature")["value"]
            np.testing.assert_allclose(got[FEATURES].to_numpy(), coef, **EXACT)
        allowed = {e: mae[e, "all"][0] for e in ("ewm_predictor", "ridge") if coverage[e, "all"] >= 0.9}
        best = min(allowed, key=allowed.get) if allowed else None
        chosen = best if best is not None and allowed[best] < mae[NAIVE, "all"][0] else NAIVE
        assert b.selection[label].chosen == chosen
        summary = b.cv[b.cv["label"] == label].set_index(["estimator", "metric"])
        np.testing.assert_allclose(summary.loc[("ridge", "mae"), "model"], mae["ridge", "all"][0], **EXACT)
        np.testing.assert_allclose(summary.loc[("ridge", "mae"), "baseline"], mae[NAIVE, "all"][0], **EXACT)
    assert scored > 20  # the folds were scored, not skipped


def test_a_run_of_refits_equals_each_refit_fitted_alone(run):
    """The shared join, designs and EWM pass of a run change nothing against ``fit_bundle`` on
    each refit's own features (joined per refit, designs built from its rows)."""
    feats, labels, bundles = run
    for key, as_of in AS_OFS.items():
        alone = fit_bundle(feats[feats["date"] < as_of], labels, MODELS, LM, as_of, cv_labels=LABELS)
        b = bundles[key]
        for name in ("cv", "folds", "importances"):
            pd.testing.assert_frame_equal(getattr(b, name), getattr(alone, name), check_exact=True)
        assert (
            b.selection == alone.selection
            and b.cv_note == alone.cv_note
            and list(b.models) == list(alone.models)
        )
        for k, m in b.models.items():
            other = alone.models[k]
            assert (m.n_train, m.feature_columns, m.as_of, list(m.estimators)) == (
                other.n_train,
                other.feature_columns,
                other.as_of,
                list(other.estimators),
            )
            if k.endswith("/ridge"):
                assert_same_ridge(m.estimators["all"], other.estimators["all"])


def test_the_ewm_predictor_runs_once_for_all_refits(run, monkeypatch):
    """Its prediction of a row reads only earlier rows, so one pass over the joined rows serves the
    CV of every refit and label (each a head of them) with the numbers of a pass per CV."""
    feats, labels, bundles = run
    calls = []
    predict = EWMYieldPredictor.predict
    monkeypatch.setattr(
        EWMYieldPredictor, "predict", lambda self, X: calls.append(len(X)) or predict(self, X)
    )
    again = weekly_bundles(AS_OFS, feats, labels, MODELS, LM, cv_labels=LABELS)
    assert len(calls) == 1
    for key, b in bundles.items():
        pd.testing.assert_frame_equal(again[key].folds, b.folds, check_exact=True)


def test_the_shared_ewm_pass_is_refused_where_a_head_would_read_another_grid():
    """Bars at irregular steps: the halflife in rows follows the grid's median step, which differs
    between early heads (1-hour bars) and the whole frame (mostly 2-hour bars)."""
    times = pd.DatetimeIndex(
        np.concatenate(
            [
                pd.date_range("2024-01-01", periods=40, freq="h", tz="UTC"),
                pd.date_range("2024-01-03", periods=100, freq="2h", tz="UTC"),
            ]
        )
    )
    X = pd.DataFrame({"open_time": times, "instrument": "BTC", "close": np.linspace(1.0, 2.0, len(times))})
    est = EWMYieldPredictor(halflife="6h", cap=3.0, source="close")
    same = est.head_test(X)
    assert same(len(X)) and not same(30)  # 30 hourly bars: a 1-hour step, the whole frame's is 2 hours
    design = models.Design(X, [], [], checks_missing=True, reads=est.input_columns())
    for n in (30, 90, len(X)):
        np.testing.assert_array_equal(design.head(n).history_output(est, "predict"), est.predict(X.iloc[:n]))
    daily = pd.DataFrame({"date": pd.date_range("2024-01-01", periods=50), "instrument": "a", "close": 1.0})
    assert EWMYieldPredictor(source="close").head_test(daily)(7)  # a daily grid: every head


def test_predictions_are_each_days_model_applied_to_the_features_up_to_that_day(run):
    feats, labels, bundles = run
    days = pd.date_range("2024-04-01", "2024-07-18")
    out = predict_days(bundles, feats, days, lambda b: b.model_key("apy_fwd_7"))
    ordered = feats.sort_values(["date", "instrument"]).reset_index(drop=True)
    for day in days[::9]:
        b = model_for_day(bundles, day)
        fitted = b.models[b.model_key("apy_fwd_7")]
        upto = ordered[ordered["date"] <= day]
        want = fitted.predict(upto)[(upto["date"] == day).to_numpy()]
        got = out[out["date"] == day]
        assert list(got["instrument"]) == list(upto.loc[upto["date"] == day, "instrument"])
        np.testing.assert_allclose(got["prediction"].to_numpy(), want, **EXACT)
    assert set(out["model"]) >= {"apy_fwd_7/ewm_predictor"} or set(out["model"]) >= {"apy_fwd_7/ridge"}
