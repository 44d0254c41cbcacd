"""Walk-forward cross-validation with purging and embargo, scored against a naive baseline.

Time is the grid of the panel (days for daily data, bars for klines). Test folds are consecutive
blocks of that grid after ``min_train`` steps. A training row must lie before its test fold and:
- purging: its label must end before the test fold starts (its label window would otherwise
  overlap the test period, leaking test outcomes into training);
- embargo: rows within ``embargo`` steps after an earlier test fold are dropped (their features
  are serially correlated with that fold's outcomes); ``embargo`` defaults to the longest
  horizon + lag, and a smaller value is refused.
Preprocessing (scalers) lives inside the estimator Pipeline, so it is fitted on training rows
only. Candidates (the estimators and the naive baseline) are tested on the same folds and scored
on the rows they all predict (:func:`candidate_scores`), so their scores compare.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from midfreq_assets.domain.research.models import (
    IMPORTANCE_COLUMNS,
    CVConfig,
    Design,
    EstimatorSpec,
    FittedModel,
    estimator_template,
    fit_rows,
    spec_design,
)

#: ``(spec, template, data, name, feature_columns) -> Design``: how an estimator's view of the CV data is made.
DesignOf = Callable[[EstimatorSpec, Any, pd.DataFrame, str, "list[str] | None"], Design]

EPS = 1e-15
METRICS = {"regression": ("mae", "r2"), "classification": ("log_loss", "accuracy", "balanced_accuracy")}


@dataclass(frozen=True)
class Split:
    fold: int
    train: np.ndarray  # row indices
    test: np.ndarray
    test_start: int  # grid positions, [start, end)
    test_end: int


NAT_I8 = np.iinfo(np.int64).min  # NaT as int64 nanoseconds


def time_positions(times: pd.Series | pd.Index, grid: pd.Index) -> np.ndarray:
    """Position of each time on the sorted grid (times past the grid get positions past its end)."""
    t = pd.DatetimeIndex(times).as_unit("ns").asi8
    g = pd.DatetimeIndex(grid).as_unit("ns").asi8
    pos = np.searchsorted(g, t, side="left")
    nat = t == NAT_I8
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
                cols[(src, "log_loss")] = (
                    (-np.log(frame[f"{src}_py"].clip(lower=EPS))).groupby(frame["instrument"]).mean()
                )
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


def _outputs(
    fitted: FittedModel,
    design: Design,
    rows: np.ndarray,
    history: pd.DataFrame,
    arrays: bool = False,
    whole: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions for ``rows`` of the design's frame (``arrays``: the model was fitted on arrays of
    it). History estimators are causal: they read ``history``, every row up to the last one wanted,
    or with ``whole`` the design's whole frame (a head of a frame reads one pass over it)."""
    classification = fitted.task == "classification"
    if fitted.uses_history and not whole:
        out = fitted.predict_proba(history) if classification else fitted.predict(history)[:, None]
        out = out[rows]
    else:
        assert not classification or fitted.classes is not None
        method, width = ("predict_proba", len(fitted.classes or [])) if classification else ("predict", 1)
        if fitted.uses_history:
            out = fitted.apply_rows(design, np.arange(design.n), method, width)[rows]
        else:
            out = fitted.apply_rows(design, rows, method, width, arrays)
    if classification:
        return np.asarray(fitted.classes, dtype=float)[np.nan_to_num(out, nan=-1).argmax(axis=1)], out
    return out[:, 0], None


def _align_proba(proba: np.ndarray | None, have: list[int] | None, want: list[int]) -> np.ndarray | None:
    if proba is None or have is None:
        return proba
    out = np.zeros((len(proba), len(want)))
    out[:, np.searchsorted(want, have)] = proba
    out[np.isnan(proba).any(axis=1)] = np.nan
    return out


@dataclass(frozen=True)
class OOSPredictions:
    """One candidate's out-of-sample predictions over the CV folds: ``rows`` of the CV data, the fold
    that tested each, the prediction (and class probabilities over every class of the label)."""

    name: str
    rows: np.ndarray
    folds: np.ndarray
    pred: np.ndarray
    proba: np.ndarray | None
    importances: pd.DataFrame


def cv_splits(data: pd.DataFrame, time_col: str, end_col: str, cv: CVConfig, embargo: int) -> list[Split]:
    """The purged, embargoed folds of ``data`` (one row per (time, instrument)) that have rows to train and test."""
    grid = pd.DatetimeIndex(np.sort(data[time_col].unique()))
    if grid.normalize().equals(grid) and len(grid) > 1:
        grid = pd.date_range(grid[0], grid[-1], freq="D", unit="ns")
    splits = walk_forward_splits(
        time_positions(data[time_col], grid), time_positions(data[end_col], grid), len(grid), cv, embargo
    )
    return [s for s in splits if len(s.train) and len(s.test)]


def oos_predictions(
    data: pd.DataFrame,
    splits: list[Split],
    spec: EstimatorSpec,
    name: str,
    *,
    y: np.ndarray,
    classes: list[int] | None,
    **common: object,
) -> OOSPredictions:
    """Fit on each fold's training rows, predict its test rows. An estimator that learns nothing
    (EWM predictor, last value) is fitted once and evaluated in one causal pass over ``data``:
    the same numbers as a refit per fold, at the cost of one. The estimator's view of ``data``
    (:class:`~midfreq_assets.domain.research.models.Design`) is built once for all folds."""
    return oos_on_design(spec_design, data, splits, spec, name, y=y, classes=classes, **common)


def oos_on_design(
    design_of: DesignOf,
    data: pd.DataFrame,
    splits: list[Split],
    spec: EstimatorSpec,
    name: str,
    *,
    y: np.ndarray,
    classes: list[int] | None,
    **common: object,
) -> OOSPredictions:
    """:func:`oos_predictions` with the estimator's design of ``data`` from ``design_of``
    (:func:`~midfreq_assets.domain.research.models.spec_design`, or the heads of a
    :class:`~midfreq_assets.domain.research.models.FrameDesigns` when ``data`` is the first rows of its frame)."""
    task = common["task"]
    rows = np.concatenate([s.test for s in splits]) if splits else np.array([], dtype=np.int64)
    folds = (
        np.concatenate([np.full(len(s.test), s.fold) for s in splits])
        if splits
        else np.array([], dtype=np.int64)
    )
    preds, probas, imps = [], [], []
    if not splits:
        return OOSPredictions(name, rows, folds, np.array([]), None, pd.DataFrame())
    fit = {k: v for k, v in common.items() if k not in ("source", "feature_columns")}
    fit["fresh"] = functools.partial(spec.build, common.get("source"))
    template = estimator_template(
        spec, label=common["label"], name=name, task=task, source=common.get("source")
    )  # type: ignore[arg-type]
    design = design_of(spec, template, data, name, common.get("feature_columns"))  # type: ignore[arg-type]
    if spec.learns_nothing:
        fitted = fit_rows(design, template, splits[0].train, y[splits[0].train], name=name, **fit)  # type: ignore[arg-type]
        pred, proba = _outputs(fitted, design, rows, data, whole=True)
        if task == "classification":
            assert classes is not None
            proba = _align_proba(proba, fitted.classes, classes)
        return OOSPredictions(name, rows, folds, pred, proba, pd.DataFrame())
    for split in splits:  # fold models are never stored: fitted and predicted on arrays (Design)
        fitted = fit_rows(design, template, split.train, y[split.train], name=name, arrays=True, **fit)  # type: ignore[arg-type]
        upto = data.iloc[: split.test.max() + 1] if fitted.uses_history else data
        pred, proba = _outputs(fitted, design, split.test, upto, arrays=True)
        if task == "classification":
            assert classes is not None
            proba = _align_proba(proba, fitted.classes, classes)
        preds.append(pred)
        probas.append(proba)
        imps += [(*r, split.fold) for r in fitted.importance_rows()]
    pred = np.concatenate(preds) if preds else np.array([])
    proba = np.concatenate(probas) if probas and probas[0] is not None else None
    importances = pd.DataFrame(imps, columns=[*IMPORTANCE_COLUMNS, "fold"]) if imps else pd.DataFrame()
    return OOSPredictions(name, rows, folds, pred, proba, importances)


def _metric_values(
    task: str, y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None, classes: list[int] | None
) -> dict[str, float]:
    if task == "regression":
        err = pred - y
        sst = float(((y - y.mean()) ** 2).sum())
        return {
            "mae": float(np.abs(err).mean()),
            "r2": 1.0 - float((err**2).sum()) / sst if sst > 0 else np.nan,
        }
    assert proba is not None and classes is not None
    col = np.searchsorted(classes, y.astype(int)).clip(0, len(classes) - 1)
    hit = (np.asarray(classes)[proba.argmax(axis=1)] == y).astype(float)
    recall = pd.Series(hit).groupby(y).mean()
    return {
        "log_loss": float(-np.log(proba[np.arange(len(y)), col].clip(min=EPS)).mean()),
        "accuracy": float(hit.mean()),
        "balanced_accuracy": float(recall.mean()),
    }


SCORE_COLUMNS = ["estimator", "fold", "metric", "score", "n", "coverage"]


def candidate_scores(
    candidates: list[OOSPredictions], y: np.ndarray, task: str, classes: list[int] | None = None
) -> pd.DataFrame:
    """Out-of-sample scores ``[estimator, fold, metric, score, n, coverage]`` of every candidate per
    fold and over all folds (``fold = 'all'``), on the rows where every candidate predicts and the
    label is known: the candidates are compared on the same rows. ``coverage`` = the share of the
    fold's labelled rows the candidate predicts (a model that cannot predict a pool cannot trade it)."""
    rows = candidate_score_rows(candidates, y, task, classes)
    return pd.DataFrame(rows, columns=SCORE_COLUMNS) if rows else pd.DataFrame(columns=SCORE_COLUMNS)


def candidate_score_rows(
    candidates: list[OOSPredictions], y: np.ndarray, task: str, classes: list[int] | None = None
) -> list[tuple]:
    """The rows of :func:`candidate_scores` (tuples of ``SCORE_COLUMNS``), for callers that add
    columns before making the one table (a small DataFrame per step costs more than the scores)."""
    if not candidates or not len(candidates[0].rows):
        return []
    first = candidates[0]
    for c in candidates[1:]:
        if not np.array_equal(c.rows, first.rows):
            raise ValueError(f"candidates {first.name} and {c.name} were tested on different rows")
    yy = y[first.rows]
    known = ~np.isnan(yy)

    def predicts(c: OOSPredictions) -> np.ndarray:
        return (
            ~np.isnan(c.proba).any(axis=1)
            if task == "classification" and c.proba is not None
            else ~np.isnan(c.pred)
        )

    covered = {c.name: predicts(c) & known for c in candidates}
    common = known & np.logical_and.reduce(list(covered.values()))
    groups = [(str(f), first.folds == f) for f in np.unique(first.folds)] + [
        ("all", np.ones(len(yy), dtype=bool))
    ]
    rows = []
    for c in candidates:
        for fold, in_fold in groups:
            use = in_fold & common
            n_known = int((in_fold & known).sum())
            coverage = float(covered[c.name][in_fold].sum() / n_known) if n_known else np.nan
            if not use.any():  # no row every candidate predicts: the fold stays in the table, unscored
                rows += [(c.name, fold, m, np.nan, 0, coverage) for m in METRICS[task]]
                continue
            proba = c.proba[use] if c.proba is not None else None
            for metric, value in _metric_values(task, yy[use], c.pred[use], proba, classes).items():
                rows.append((c.name, fold, metric, value, int(use.sum()), coverage))
    return rows


def fold_spans(times: pd.Series, splits: list[Split]) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """First and last time of each fold's test rows, and over all folds (``'all'``)."""
    t = pd.DatetimeIndex(times)
    return {fold: (t[a], t[b]) for fold, (a, b) in fold_span_rows(times, splits).items()}


def fold_span_rows(times: pd.Series, splits: list[Split]) -> dict[str, tuple[int, int]]:
    """:func:`fold_spans` as positions in ``times`` (of a first and a last time)."""
    ns = pd.DatetimeIndex(times).as_unit("ns").asi8
    spans = {}
    for s in splits:  # the positions of the smallest and the largest test time
        test_ns = ns[s.test]
        spans[str(s.fold)] = (int(s.test[np.argmin(test_ns)]), int(s.test[np.argmax(test_ns)]))
    if splits:
        starts, ends = [a for a, _ in spans.values()], [b for _, b in spans.values()]
        spans["all"] = (starts[int(np.argmin(ns[starts]))], ends[int(np.argmax(ns[ends]))])
    return spans


def vs_baseline_scores(
    model: OOSPredictions,
    baseline: OOSPredictions,
    y: np.ndarray,
    instruments: np.ndarray,
    task: str,
    classes: list[int] | None,
) -> pd.DataFrame:
    """``[fold, instrument, metric, model, baseline, n]``: the model against the naive baseline per fold
    and instrument, and over all folds and instruments, on the rows where both predict."""
    out = []
    for fold in [*np.unique(model.folds), "all"]:
        sel = np.ones(len(model.rows), dtype=bool) if fold == "all" else model.folds == fold
        rows = model.rows[sel]
        s = score_predictions(
            instruments[rows],
            y[rows],
            (model.pred[sel], model.proba[sel] if model.proba is not None else None),
            (baseline.pred[sel], baseline.proba[sel] if baseline.proba is not None else None),
            task,
            classes,
        )
        out.append(s.assign(fold=str(fold)))
    return pd.concat(out, ignore_index=True)
