"""Typed model bundles: everything one weekly refit produced, and how a day finds its model.

A :class:`ModelBundle` is what ``fitted_models`` stores per weekly partition: every (label,
estimator) and each CV'd label's naive baseline fitted at ``as_of`` on rows whose label ended
before it, the purged walk-forward CV of those labels (the fold table: every candidate's
out-of-sample score per fold) and, per label, the model the evidence selects
(:mod:`~midfreq_assets.domain.research.selection`). :func:`predict_days` applies, to each day, the
latest bundle with ``as_of`` <= that day (no model, and no choice of model, from the future).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import is_classifier

from midfreq_assets.domain.research import engine
from midfreq_assets.domain.research.labels import LabelMapConfig
from midfreq_assets.domain.research.models import (
    Design,
    FittedModel,
    FrameDesigns,
    ModelsConfig,
    openmp_threads,
)
from midfreq_assets.domain.research.selection import Selection, fixed_selection, no_evidence, select_model


@dataclass
class ModelBundle:
    """One refit: fitted models by ``<label>/<estimator>``, and the CV evidence behind them."""

    as_of: pd.Timestamp
    models: dict[str, FittedModel] = field(default_factory=dict)
    cv: pd.DataFrame = field(default_factory=pd.DataFrame)  # overall scores vs naive (CVResult.summary)
    importances: pd.DataFrame = field(default_factory=pd.DataFrame)
    cv_note: str = ""
    folds: pd.DataFrame = field(
        default_factory=pd.DataFrame
    )  # every candidate's score per fold (CVResult.folds)
    selection: dict[str, Selection] = field(default_factory=dict)  # label -> the model traded

    @classmethod
    def empty(cls, as_of: pd.Timestamp, note: str) -> ModelBundle:
        """A week with nothing to fit (no labelled history yet): predictions skip it."""
        return cls(as_of=pd.Timestamp(as_of), cv_note=note)

    @property
    def n_train(self) -> dict[str, int]:
        return {k: m.n_train for k, m in self.models.items()}

    def with_naive_as_of(self) -> ModelBundle:
        """The same bundle with a tz-naive UTC ``as_of`` (price bundles carry a UTC timestamp)."""
        ts = pd.Timestamp(self.as_of)
        if ts.tzinfo is None:
            return self
        return ModelBundle(
            ts.tz_convert("UTC").tz_localize(None),
            self.models,
            self.cv,
            self.importances,
            self.cv_note,
            self.folds,
            self.selection,
        )

    def model_key(self, label: str, estimator: str | None = None) -> str | None:
        """``<label>/<estimator>`` when given, else the label's selected model (None when not fitted)."""
        if estimator is not None:
            key = f"{label}/{estimator}"
        elif label in self.selection:
            key = self.selection[label].model_key
        else:
            return None
        return key if key in self.models else None


def _is_classifier(spec, target: str) -> bool:
    return bool(is_classifier(spec.build(target)))


def fit_bundle(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    models: ModelsConfig,
    label_map: LabelMapConfig,
    as_of: pd.Timestamp,
    cv_labels: list[str] | str | None,
    *,
    only_labels: list[str] | None = None,
    only_estimators: list[str] | None = None,
) -> ModelBundle:
    """Every (label, estimator) fitted at ``as_of`` (or only the given ones), plus, for each of
    ``cv_labels``, its naive baseline, its purged CV on the same rows and the model selected for it."""
    return _fit_joined(
        engine.join_features_labels(features, labels),
        list(features.columns),
        list(labels.columns),
        models,
        label_map,
        as_of,
        cv_labels,
        only_labels=only_labels,
        only_estimators=only_estimators,
    )


def _fit_joined(
    joined: pd.DataFrame,
    columns: list[str],
    label_columns: list[str],
    models: ModelsConfig,
    label_map: LabelMapConfig,
    as_of: pd.Timestamp,
    cv_labels: list[str] | str | None,
    *,
    only_labels: list[str] | None = None,
    only_estimators: list[str] | None = None,
    designs: FrameDesigns | None = None,
) -> ModelBundle:
    """:func:`fit_bundle` on :func:`~midfreq_assets.domain.research.engine.join_features_labels` of the
    features (``columns``) and the labels (``label_columns``). A label's fits and its CV read the
    same rows: those whose label ended before ``as_of``. ``designs``: of a frame whose first rows
    ``joined`` is (the fits read heads of its designs)."""
    cv_list = [cv_labels] if isinstance(cv_labels, str) else list(cv_labels or [])
    fitted = engine.fit_models_joined(
        joined,
        columns,
        label_columns,
        models,
        as_of,
        label_map=label_map,
        only_labels=only_labels,
        only_estimators=only_estimators,
        naive_for=cv_list,
        designs=designs,
    )
    bundle = ModelBundle(as_of=pd.Timestamp(as_of), models=fitted)
    summaries, folds, imps, notes = [], [], [], []
    for label in cv_list:
        info = label_map.label(label)
        fam = models.family(info.family)
        if models.selection.by == "fixed":
            bundle.selection[label] = fixed_selection(
                label, fam.primary_name, "selection.by: fixed (models.primary)"
            )
        ests = [
            n
            for n, s in fam.estimators.items()
            if (info.task == "classification") == _is_classifier(s, info.target)
            and (only_estimators is None or n in only_estimators)
        ]
        try:
            embargo = engine.cv_embargo(info, models, label_map)
            keep = engine.known_mask(joined, info, as_of)
            cv = engine.cross_validate_joined(
                engine.rows_where(joined, keep),
                columns,
                info,
                models,
                embargo,
                estimators=ests,
                per_instrument=False,
                designs=designs if engine.head_length(keep) is not None else None,
            )
        except Exception as exc:  # too little history for the configured folds: report, keep the fit
            notes.append(f"{label}: CV skipped: {type(exc).__name__}: {exc}")
            bundle.selection.setdefault(label, no_evidence(label, f"{type(exc).__name__}: {exc}"))
            continue
        summaries.append(cv.summary())
        folds.append(cv.folds)
        if not cv.importances.empty:
            imps.append(cv.importances)
        bundle.selection.setdefault(label, select_model(cv.folds, label, info.task, models.selection))
    bundle.cv = pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame()
    bundle.folds = pd.concat(folds, ignore_index=True) if folds else pd.DataFrame()
    bundle.importances = pd.concat(imps, ignore_index=True) if imps else pd.DataFrame()
    bundle.cv_note = "; ".join(notes)
    return bundle


def weekly_bundles(
    as_ofs: Mapping[str, pd.Timestamp],
    features: pd.DataFrame,
    labels: pd.DataFrame,
    models: ModelsConfig,
    label_map: LabelMapConfig,
    cv_labels: list[str] | str | None,
    time_col: str = "date",
    **fit: object,
) -> dict[str, ModelBundle]:
    """One :class:`ModelBundle` per refit (partition key -> ``as_of``), each trained on the feature
    rows before its ``as_of``; a refit with nothing to learn from yet is an empty bundle saying why.
    ``fit`` goes to :func:`fit_bundle` (``only_labels``, ``only_estimators``).

    Features and labels are joined once for every refit: each refit's rows are the joined rows
    before its ``as_of``, a prefix of them (they are sorted by time), the same rows
    :func:`fit_bundle` joins from the features before ``as_of``. What the estimators read of the
    joined frame (:class:`~midfreq_assets.domain.research.models.FrameDesigns`) is made once too."""
    bundles: dict[str, ModelBundle] = {}
    if features.empty or labels.empty:
        return {key: ModelBundle.empty(as_of, "no history before as_of") for key, as_of in as_ofs.items()}
    joined = engine.join_features_labels(features, labels)
    designs = FrameDesigns(joined)
    times = joined[time_col]
    columns, label_columns = list(features.columns), list(labels.columns)
    with openmp_threads(models.threads):  # once for the run, not per fit and prediction
        for key, as_of in as_ofs.items():
            try:
                keep = np.asarray(times.array < as_of)
                bundles[key] = _fit_joined(
                    engine.rows_where(joined, keep),
                    columns,
                    label_columns,
                    models,
                    label_map,
                    as_of,
                    cv_labels=cv_labels,
                    designs=designs if engine.head_length(keep) is not None else None,
                    **fit,
                )  # type: ignore[arg-type]
            except ValueError as exc:  # e.g. no labelled rows yet
                bundles[key] = ModelBundle.empty(as_of, f"not fitted: {exc}")
    return bundles


def model_for_day(bundles: Mapping[str, ModelBundle | None], day: pd.Timestamp) -> ModelBundle | None:
    """The bundle with the latest ``as_of`` <= ``day`` (None before the first fit)."""
    best: ModelBundle | None = None
    for b in bundles.values():
        if b is not None and b.as_of <= day and (best is None or b.as_of > best.as_of):
            best = b
    return best


def _prediction_frame(fitted: FittedModel, design: Design, rows: np.ndarray) -> pd.DataFrame:
    """Regression output (``prediction``) or class probabilities (``p_<class>``) of ``rows`` of the
    design's frame (history estimators read all of it)."""
    every = np.arange(design.n)
    if fitted.task == "classification":
        if fitted.classes is None:
            raise TypeError(f"{fitted.name} on {fitted.label} is not a classifier")
        width = len(fitted.classes)
        proba = (
            fitted.apply_rows(design, every, "predict_proba", width)[rows]
            if fitted.uses_history
            else fitted.apply_rows(design, rows, "predict_proba", width)
        )
        names = fitted.class_names or [str(c) for c in fitted.classes or []]
        return pd.DataFrame(
            {
                f"p_{names[c] if c < len(names) else c}": proba[:, i]
                for i, c in enumerate(fitted.classes or [])
            }
        )
    values = (
        fitted.apply_rows(design, every, "predict", 1)[rows]
        if fitted.uses_history
        else fitted.apply_rows(design, rows, "predict", 1)
    )[:, 0]
    return pd.DataFrame({"prediction": values})


def predict_days(
    bundles: Mapping[str, ModelBundle | None],
    features: pd.DataFrame,
    days: pd.DatetimeIndex,
    model_key: str | Callable[[ModelBundle], str | None],
    time_col: str = "date",
) -> pd.DataFrame:
    """``[time, (date,) instrument, prediction | p_<class>..., model, model_as_of]`` for the rows of
    ``days`` (by ``date``), each day with the latest bundle fitted at or before it and, in it, the
    model ``model_key`` names (a key, or a function of the bundle: e.g. its selected model). History
    estimators read earlier rows: each group of days reads the features up to its last day, first
    rows of the sorted features, so their designs are heads of one (a causal pass is shared)."""
    feats = features.sort_values([time_col, "instrument"], kind="stable").reset_index(drop=True)
    fday = pd.to_datetime(feats["date"]).dt.normalize()
    designs = FrameDesigns(feats)
    key_of = model_key if callable(model_key) else (lambda b: model_key if model_key in b.models else None)
    groups: dict[pd.Timestamp, tuple[ModelBundle, str, list[pd.Timestamp]]] = {}
    for day in days:
        b = model_for_day(bundles, day)
        key = key_of(b) if b is not None else None
        if b is None or key is None:
            continue
        groups.setdefault(b.as_of, (b, key, []))[2].append(day)
    out = []
    for as_of, (bundle, key, group) in groups.items():
        fitted = bundle.models[key]
        if not fitted.estimators:
            continue
        keep = (fday <= max(group)).to_numpy()
        upto = engine.rows_where(feats, keep)
        rows = np.flatnonzero(fday[keep].isin(group).to_numpy())
        if not len(rows):
            continue
        n = engine.head_length(keep)
        design = (
            designs.of_model(fitted, n)
            if n is not None
            else Design(upto, fitted.feature_columns, fitted.categorical, checks_missing=not fitted.allow_nan)
        )
        keys = upto.iloc[rows][list(dict.fromkeys((time_col, "date", "instrument")))]
        piece = pd.concat([keys.reset_index(drop=True), _prediction_frame(fitted, design, rows)], axis=1)
        piece["model"] = key
        piece["model_as_of"] = pd.Timestamp(as_of)
        out.append(piece)
    if not out:
        return pd.DataFrame()
    return (
        pd.concat(out, ignore_index=True)
        .sort_values([time_col, "instrument"], kind="stable")
        .reset_index(drop=True)
    )


def bundle_table(bundles: Mapping[str, ModelBundle]) -> pd.DataFrame:
    """One line per partition of a run: training rows and number of fitted models."""
    rows = [
        {"partition": k, "n_train": max(b.n_train.values(), default=0), "models": len(b.models)}
        for k, b in sorted(bundles.items())
    ]
    return pd.DataFrame(rows)
