"""Walk-forward cross-validation with purging and embargo, scored against a naive baseline.

Time is the grid of the panel (days for daily data, bars for klines). Test folds are consecutive
blocks of that grid after ``min_train`` steps. A training row must lie before its test fold and:
- purging: its label must end before the test fold starts (its label window would otherwise
  overlap the test period, leaking test outcomes into training);
- embargo: rows within ``embargo`` steps after an earlier test fold are dropped (their features
  are serially correlated with that fold's outcomes); ``embargo`` defaults to the longest
  horizon + lag, and a smaller value is refused.
Preprocessing (scalers) lives inside the estimator Pipeline, so it is fitted on training rows
only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from midfreq_assets.domain.research.models import CVConfig, EstimatorSpec, FittedModel, Mode, fit_estimator

EPS = 1e-15


@dataclass(frozen=True)
class Split:
    fold: int
    train: np.ndarray  # row indices
    test: np.ndarray
    test_start: int  # grid positions, [start, end)
    test_end: int


def time_positions(times: pd.Series | pd.Index, grid: pd.Index) -> np.ndarray:
    """Position of each time on the sorted grid (times past the grid get positions past its end)."""
    t = pd.DatetimeIndex(times).as_unit("ns").asi8
    g = pd.DatetimeIndex(grid).as_unit("ns").asi8
    pos = np.searchsorted(g, t, side="left")
    nat = pd.isna(pd.DatetimeIndex(times))
    beyond = pos >= len(g)
    if beyond.any():
        step = g[-1] - g[-2] if len(g) > 1 else 1
        pos = np.where(beyond, len(g) - 1 + np.ceil((t - g[-1]) / step).astype(np.int64), pos)
    return np.where(nat, np.iinfo(np.int64).max, pos)


def walk_forward_splits(
    time_pos: np.ndarray, end_pos: np.ndarray, n_times: int, cv: CVConfig, embargo: int
) -> list[Split]:
    """Purged, embargoed walk-forward folds (expanding or rolling training window)."""
    usable = n_times - cv.min_train
    if usable < cv.n_splits:
        raise ValueError(
            f"{n_times} time steps leave {usable} after min_train={cv.min_train}: too few for {cv.n_splits} folds"
        )
    bounds = cv.min_train + (np.arange(cv.n_splits + 1) * usable) // cv.n_splits
    embargoed = np.zeros(len(time_pos), dtype=bool)
    splits = []
    for k in range(cv.n_splits):
        start, end = int(bounds[k]), int(bounds[k + 1])
        train = (time_pos < start) & (end_pos < start) & ~embargoed
        if cv.scheme == "rolling" and cv.train_size:
            train &= time_pos >= start - cv.train_size
        test = (time_pos >= start) & (time_pos < end)
        splits.append(Split(k, np.flatnonzero(train), np.flatnonzero(test), start, end))
        embargoed |= (time_pos >= end) & (time_pos < end + embargo)
    return splits


def _group_scores(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """Scores per instrument and over all rows; df has instrument, y, and per-source columns."""
    out = []
    for frame in (df, df.assign(instrument="all")):
        g = frame.groupby("instrument", sort=True)
        n = g.size().rename("n")
        cols = {}
        for src in ("model", "baseline"):
            if task == "regression":
                err = frame[f"{src}_pred"] - frame["y"]
                cols[(src, "mae")] = err.abs().groupby(frame["instrument"]).mean()
                sse = (err**2).groupby(frame["instrument"]).sum()
                ymean = g["y"].transform("mean")
                sst = ((frame["y"] - ymean) ** 2).groupby(frame["instrument"]).sum()
                cols[(src, "r2")] = 1 - sse / sst.where(sst > 0)
            else:
                cols[(src, "log_loss")] = (-np.log(frame[f"{src}_py"].clip(lower=EPS))).groupby(frame["instrument"]).mean()
                hit = (frame[f"{src}_pred"] == frame["y"]).astype(float)
                cols[(src, "accuracy")] = hit.groupby(frame["instrument"]).mean()
                recall = hit.groupby([frame["instrument"], frame["y"]]).mean()
                cols[(src, "balanced_accuracy")] = recall.groupby(level=0).mean()
        metrics = sorted({m for _, m in cols})
        for m in metrics:
            part = pd.DataFrame({"model": cols[("model", m)], "baseline": cols[("baseline", m)]}).join(n)
            part["metric"] = m
            out.append(part.reset_index())
    return pd.concat(out, ignore_index=True)


def score_predictions(
    instruments: np.ndarray,
    y: np.ndarray,
    model: tuple[np.ndarray, np.ndarray | None],
    baseline: tuple[np.ndarray, np.ndarray | None],
    task: str,
    classes: list[int] | None = None,
) -> pd.DataFrame:
    """Tidy scores ``[instrument, metric, model, baseline, n]`` on rows where all are known."""
    frame = pd.DataFrame({"instrument": instruments.astype(str), "y": y})
    ok = ~np.isnan(y)
    for src, (pred, proba) in (("model", model), ("baseline", baseline)):
        if task == "classification":
            assert proba is not None and classes is not None
            ok &= ~np.isnan(proba).any(axis=1)
            col = np.searchsorted(classes, np.nan_to_num(y).astype(int)).clip(0, len(classes) - 1)
            frame[f"{src}_py"] = proba[np.arange(len(y)), col]
            frame[f"{src}_pred"] = np.asarray(classes)[np.nan_to_num(proba, nan=-1).argmax(axis=1)]
        else:
            ok &= ~np.isnan(pred)
            frame[f"{src}_pred"] = pred
    frame = frame[ok]
    if frame.empty:
        return pd.DataFrame(columns=["instrument", "metric", "model", "baseline", "n"])
    return _group_scores(frame, task)


def _outputs(fitted: FittedModel, X: pd.DataFrame, rows: np.ndarray, X_all: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions for ``rows``; history estimators see every earlier row (they are causal)."""
    src = X_all if fitted.uses_history else X.iloc[rows]
    if fitted.task == "classification":
        proba = fitted.predict_proba(src)
        proba = proba[rows] if fitted.uses_history else proba
        assert fitted.classes is not None
        pred = np.asarray(fitted.classes, dtype=float)[np.nan_to_num(proba, nan=-1).argmax(axis=1)]
        return pred, proba
    pred = fitted.predict(src)
    return (pred[rows] if fitted.uses_history else pred), None


def _align_proba(proba: np.ndarray | None, have: list[int] | None, want: list[int]) -> np.ndarray | None:
    if proba is None or have is None:
        return proba
    out = np.zeros((len(proba), len(want)))
    out[:, np.searchsorted(want, have)] = proba
    out[np.isnan(proba).any(axis=1)] = np.nan
    return out


def cross_validate_estimator(
    data: pd.DataFrame,
    *,
    time_col: str,
    label: str,
    end_col: str,
    family: str,
    task: str,
    spec: EstimatorSpec,
    name: str,
    baseline: EstimatorSpec,
    mode: Mode,
    cv: CVConfig,
    embargo: int,
    feature_columns: list[str],
    source: str | None,
    class_names: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores (fold, instrument|'all', metric, model, baseline, n) and importances per fold.
    ``data`` holds features and labels, one row per (time, instrument)."""
    grid = pd.DatetimeIndex(np.sort(data[time_col].unique()))
    if grid.normalize().equals(grid) and len(grid) > 1:
        grid = pd.date_range(grid[0], grid[-1], freq="D", unit="ns")
    time_pos = time_positions(data[time_col], grid)
    end_pos = time_positions(data[end_col], grid)
    y = data[label].to_numpy(dtype=np.float64)
    instruments = data["instrument"].to_numpy()
    all_classes = sorted(int(c) for c in np.unique(y[~np.isnan(y)])) if task == "classification" else None
    scores, importances, tests = [], [], []
    common = dict(label=label, family=family, task=task, mode=mode, source=source, feature_columns=feature_columns)
    for split in walk_forward_splits(time_pos, end_pos, len(grid), cv, embargo):
        if len(split.train) == 0 or len(split.test) == 0:
            continue
        X_train = data.iloc[split.train]
        fitted = fit_estimator(spec, X_train, y[split.train], name=name, **common)
        base = fit_estimator(baseline, X_train, y[split.train], name="baseline", **common)
        X_upto = data.iloc[: split.test.max() + 1] if fitted.uses_history else data
        m_pred, m_proba = _outputs(fitted, data, split.test, X_upto)
        b_pred, b_proba = _outputs(base, data, split.test, X_upto)
        if task == "classification":
            assert all_classes is not None
            m_proba = _align_proba(m_proba, fitted.classes, all_classes)
            b_proba = _align_proba(b_proba, base.classes, all_classes)
        s = score_predictions(instruments[split.test], y[split.test], (m_pred, m_proba), (b_pred, b_proba), task, all_classes)
        scores.append(s.assign(fold=split.fold))
        tests.append((split.test, m_pred, m_proba, b_pred, b_proba))
        imp = fitted.importances()
        if not imp.empty:
            importances.append(imp.assign(fold=split.fold))
    if tests:
        rows = np.concatenate([t[0] for t in tests])
        cat = [None if tests[0][i] is None else np.concatenate([t[i] for t in tests]) for i in range(1, 5)]
        overall = score_predictions(instruments[rows], y[rows], (cat[0], cat[1]), (cat[2], cat[3]), task, all_classes)
        scores.append(overall.assign(fold="all"))
    cols = ["label", "estimator", "fold", "instrument", "metric", "model", "baseline", "n"]
    out = pd.concat(scores, ignore_index=True) if scores else pd.DataFrame(columns=cols[3:] + ["fold"])
    out = out.assign(label=label, estimator=name)[cols]
    out["fold"] = out["fold"].astype(str)
    out = out.astype({"model": "float64", "baseline": "float64", "n": "int64"})
    imps = pd.concat(importances, ignore_index=True).assign(label=label, estimator=name) if importances else pd.DataFrame()
    return out, imps
