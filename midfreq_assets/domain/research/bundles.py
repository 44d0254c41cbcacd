"""Typed model bundles: everything one weekly refit produced, and how a day finds its model.

A :class:`ModelBundle` is what ``fitted_models`` stores per weekly partition: every (label,
estimator) fitted at ``as_of`` on rows whose label ended before it, the purged walk-forward CV
of the primary label and its feature importances. :func:`predict_days` applies, to each day, the
latest bundle with ``as_of`` <= that day (no model from the future).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import is_classifier

from midfreq_assets.domain.research import engine
from midfreq_assets.domain.research.labels import LabelMapConfig
from midfreq_assets.domain.research.models import FittedModel, ModelsConfig


@dataclass
class ModelBundle:
    """One refit: fitted models by ``<label>/<estimator>``, and the CV evidence behind them."""

    as_of: pd.Timestamp
    models: dict[str, FittedModel] = field(default_factory=dict)
    cv: pd.DataFrame = field(default_factory=pd.DataFrame)
    importances: pd.DataFrame = field(default_factory=pd.DataFrame)
    cv_note: str = ""

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
        return ModelBundle(ts.tz_convert("UTC").tz_localize(None), self.models, self.cv, self.importances,
                           self.cv_note)


def _is_classifier(spec, target: str) -> bool:
    return bool(is_classifier(spec.build(target)))


def fit_bundle(features: pd.DataFrame, labels: pd.DataFrame, models: ModelsConfig, label_map: LabelMapConfig,
               as_of: pd.Timestamp, cv_label: str | None) -> ModelBundle:
    """Every (label, estimator) fitted at ``as_of`` plus the CV of ``cv_label`` on the same rows."""
    fitted = engine.fit_models(features, labels, models, as_of, label_map=label_map)
    bundle = ModelBundle(as_of=pd.Timestamp(as_of), models=fitted)
    if cv_label is None:
        return bundle
    info = label_map.label(cv_label)
    known = labels[(labels[info.end_col] < engine._as_of(as_of, labels[info.end_col])).to_numpy()]
    fam = models.family(info.family)
    ests = [n for n, s in fam.estimators.items() if (info.task == "classification") == _is_classifier(s, info.target)]
    try:
        cv = engine.cross_validate(features, known, models, label=cv_label, estimators=ests, label_map=label_map)
        bundle.cv, bundle.importances = cv.summary(), cv.importances
    except Exception as exc:  # too little history for the configured folds: report, keep the fit
        bundle.cv_note = f"CV skipped: {type(exc).__name__}: {exc}"
    return bundle


def weekly_bundles(as_ofs: Mapping[str, pd.Timestamp], features: pd.DataFrame, labels: pd.DataFrame,
                   models: ModelsConfig, label_map: LabelMapConfig, cv_label: str | None,
                   time_col: str = "date") -> dict[str, ModelBundle]:
    """One :class:`ModelBundle` per refit (partition key -> ``as_of``), each trained on the feature
    rows before its ``as_of``; a refit with nothing to learn from yet is an empty bundle saying why."""
    bundles: dict[str, ModelBundle] = {}
    for key, as_of in as_ofs.items():
        if features.empty or labels.empty:
            bundles[key] = ModelBundle.empty(as_of, "no history before as_of")
            continue
        try:
            bundles[key] = fit_bundle(features[features[time_col] < as_of], labels, models, label_map, as_of,
                                      cv_label=cv_label)
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


def _prediction_frame(fitted: FittedModel, frame: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """Regression output (``prediction``) or class probabilities (``p_<class>``) of ``rows``."""
    if fitted.task == "classification":
        proba = fitted.predict_proba(frame)
        proba = proba[rows] if fitted.uses_history else proba
        names = fitted.class_names or [str(c) for c in fitted.classes or []]
        return pd.DataFrame({f"p_{names[c] if c < len(names) else c}": proba[:, i]
                             for i, c in enumerate(fitted.classes or [])})
    values = fitted.predict(frame)
    return pd.DataFrame({"prediction": values[rows] if fitted.uses_history else values})


def predict_days(bundles: Mapping[str, ModelBundle | None], features: pd.DataFrame, days: pd.DatetimeIndex,
                 model_key: str, time_col: str = "date") -> pd.DataFrame:
    """``[time, (date,) instrument, prediction | p_<class>..., model_as_of]`` for the rows of ``days``
    (by ``date``), each day with the latest model fitted at or before it. History estimators read
    earlier rows."""
    feats = features.sort_values([time_col, "instrument"], kind="stable").reset_index(drop=True)
    fday = pd.to_datetime(feats["date"]).dt.normalize()
    groups: dict[pd.Timestamp, tuple[ModelBundle, list[pd.Timestamp]]] = {}
    for day in days:
        b = model_for_day(bundles, day)
        if b is None or model_key not in b.models:
            continue
        groups.setdefault(b.as_of, (b, []))[1].append(day)
    out = []
    for as_of, (bundle, group) in groups.items():
        fitted = bundle.models[model_key]
        if not fitted.estimators:
            continue
        upto = feats[(fday <= max(group)).to_numpy()].reset_index(drop=True)
        rows = np.flatnonzero(pd.to_datetime(upto["date"]).dt.normalize().isin(group).to_numpy())
        if not len(rows):
            continue
        frame = upto if fitted.uses_history else upto.iloc[rows].reset_index(drop=True)
        keys = upto.iloc[rows][list(dict.fromkeys((time_col, "date", "instrument")))]
        piece = pd.concat([keys.reset_index(drop=True), _prediction_frame(fitted, frame, rows)], axis=1)
        piece["model_as_of"] = pd.Timestamp(as_of)
        out.append(piece)
    if not out:
        return pd.DataFrame()
    return pd.concat(out, ignore_index=True).sort_values([time_col, "instrument"], kind="stable").reset_index(drop=True)


def bundle_table(bundles: Mapping[str, ModelBundle]) -> pd.DataFrame:
    """One line per partition of a run: training rows and number of fitted models."""
    rows = [{"partition": k, "n_train": max(b.n_train.values(), default=0), "models": len(b.models)}
            for k, b in sorted(bundles.items())]
    return pd.DataFrame(rows)
