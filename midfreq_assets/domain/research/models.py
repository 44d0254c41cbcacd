"""Models: scikit-learn estimators built from config, the seed's EWM yield predictor, a naive
baseline, and fitting per instrument or pooled over the stacked panel.

YAML shape (section ``models``; reserved keys ``mode``, ``cv``, ``selection``, ``refit_every_weeks``;
every other key is a label family of ``label_map`` mapping estimator name -> spec)::

    models:
      mode: pooled              # pooled (one model over the stacked panel) | per_instrument
      cv: {n_splits: 5, scheme: expanding, train_size: null, embargo: null, min_train: 60}
      selection: {by: cv, regression_metric: mae, min_coverage: 0.9}   # cv: trade the CV winner (or naive)
      refit_every_weeks: 1      # production and backtest refit on the same Mondays
      threads: 1                # OpenMP threads per fit/predict (gradient boosting)
      apy:                      # label family
        primary: ewm_predictor  # (optional) traded when selection.by: fixed; default: the first
        ewm_predictor: {halflife: 7d, cap: 3}          # estimator inferred from the alias
        ridge:
          estimator: sklearn.linear_model.Ridge        # dotted path or alias
          scaler: standard                             # none | standard | robust | minmax
          alpha: 1.0                                   # any other key is an estimator parameter
          features: ["apy*"]                           # optional fnmatch patterns (default: all numeric)
          mode: per_instrument                         # optional override of models.mode
        hist_gb:
          categorical: [project, chain]                # string feature columns passed as categories

Dotted overrides address parameters directly, e.g. ``models.apy.ewm_predictor.halflife: 3d``.
Aliases: ewm_predictor, last_value, ridge, lasso, linear, logistic, random_forest,
random_forest_classifier, hist_gb, hist_gb_classifier.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from sklearn.base import BaseEstimator, RegressorMixin, clone, is_classifier
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

from midfreq_assets.domain.config.base import StrictModel
from midfreq_assets.domain.research.features import PanelIndex

Mode = Literal["pooled", "per_instrument"]
#: Key of the pooled model a per-instrument fit keeps for instruments without enough rows of their own.
POOLED_FALLBACK = "all"
TIME_COLUMNS = ("open_time", "date")

ALIASES: dict[str, str] = {
    "ewm_predictor": "midfreq_assets.domain.research.models.EWMYieldPredictor",
    "last_value": "midfreq_assets.domain.research.models.LastValueBaseline",
    "ridge": "sklearn.linear_model.Ridge",
    "lasso": "sklearn.linear_model.Lasso",
    "linear": "sklearn.linear_model.LinearRegression",
    "logistic": "sklearn.linear_model.LogisticRegression",
    "random_forest": "sklearn.ensemble.RandomForestRegressor",
    "random_forest_classifier": "sklearn.ensemble.RandomForestClassifier",
    "hist_gb": "sklearn.ensemble.HistGradientBoostingRegressor",
    "hist_gb_classifier": "sklearn.ensemble.HistGradientBoostingClassifier",
}
SCALERS = {"standard": StandardScaler, "robust": RobustScaler, "minmax": MinMaxScaler}
_SPEC_KEYS = {"estimator", "params", "scaler", "mode", "features", "categorical"}
#: The naive last-value / prior baseline, a candidate of every model selection (not configurable).
NAIVE = "naive"


# --------------------------------------------------------------------------------------------
# Custom estimators
# --------------------------------------------------------------------------------------------


def _time_col(X: pd.DataFrame) -> str:
    for col in TIME_COLUMNS:
        if col in X.columns:
            return col
    raise KeyError(f"history estimators need a time column {TIME_COLUMNS} in X (got {list(X.columns)[:8]}...)")


def halflife_rows(halflife: str | float, times: pd.Index | None = None) -> float:
    """Halflife in rows: numbers are rows; strings like '7d' / '12h' use the grid's median step."""
    if isinstance(halflife, int | float):
        if halflife <= 0:
            raise ValueError(f"halflife must be positive (got {halflife})")
        return float(halflife)
    span = pd.Timedelta(halflife)
    if times is None or len(times) < 2:
        step = pd.Timedelta(days=1)
    else:
        step = pd.Timedelta(np.median(np.diff(pd.DatetimeIndex(times).as_unit("ns").asi8)))
    return span / step


class EWMYieldPredictor(RegressorMixin, BaseEstimator):
    """The seed's yield predictor: points further than ``cap`` EWM-stdevs from the EWM mean of the
    history before them are replaced by that mean, then the prediction is the EWM mean of the
    cleaned series. Nothing is learned; predictions need the instrument's history, so ``X`` is the
    long frame (time, instrument, ``source``) and rows before the wanted ones must be included.

    Outliers are judged against the raw series' EWM stats (not the cleaned one's), so a lasting
    level shift is accepted after one step instead of being rejected forever."""

    uses_history = True
    learns_nothing = True  # fitting stores nothing: one causal pass serves every CV fold

    def __init__(self, halflife: str | float = "7d", cap: float = 3.0, source: str = "apy"):
        self.halflife = halflife
        self.cap = cap
        self.source = source

    def fit(self, X: pd.DataFrame, y: Any = None) -> EWMYieldPredictor:
        halflife_rows(self.halflife)
        if self.cap <= 0:
            raise ValueError(f"cap must be positive (got {self.cap})")
        self.is_fitted_ = True
        return self

    def predict_wide(self, x: pd.DataFrame) -> pd.DataFrame:
        h = halflife_rows(self.halflife, x.index)
        ewm = x.ewm(halflife=h, min_periods=1)
        mean_prev, std_prev = ewm.mean().shift(1), ewm.std().shift(1)
        outlier = (x - mean_prev).abs() > self.cap * std_prev
        clean = x.mask(outlier, mean_prev)
        return clean.ewm(halflife=h, min_periods=1).mean().where(x.notna())

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.source not in X.columns:
            raise KeyError(f"EWMYieldPredictor needs column {self.source!r} (add `level: true` to its feature)")
        idx = PanelIndex.from_long(X, _time_col(X), "instrument")
        return idx.gather(self.predict_wide(idx.wide(X[self.source])))


class LastValueBaseline(RegressorMixin, BaseEstimator):
    """Naive forecast: the current value of ``source`` (tomorrow's APY = today's)."""

    uses_history = False
    needs_frame = True
    learns_nothing = True

    def __init__(self, source: str = "apy"):
        self.source = source

    def fit(self, X: pd.DataFrame, y: Any = None) -> LastValueBaseline:
        self.is_fitted_ = True
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.source not in X.columns:
            raise KeyError(f"LastValueBaseline needs column {self.source!r} (add `level: true` to its feature)")
        return X[self.source].to_numpy(dtype=np.float64)


class ZeroBaseline(RegressorMixin, BaseEstimator):
    """Naive forecast of a return: zero (random walk)."""

    needs_frame = True
    learns_nothing = True

    def fit(self, X: pd.DataFrame, y: Any = None) -> ZeroBaseline:
        self.is_fitted_ = True
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.zeros(len(X))


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def import_dotted(path: str) -> type:
    path = ALIASES.get(path, path)
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(f"estimator {path!r}: expected a dotted path like sklearn.linear_model.Ridge or one of {sorted(ALIASES)}")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"estimator {path!r} cannot be imported: {exc}") from None


class EstimatorSpec(StrictModel):
    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)
    scaler: Literal["none", "standard", "robust", "minmax"] = "none"
    mode: Mode | None = None
    features: list[str] | None = None
    categorical: list[str] = Field(default_factory=list, description="string feature columns given to the "
                                   "estimator as pandas categories (estimators that support them, e.g. hist_gb)")

    @model_validator(mode="after")
    def _check_params(self) -> EstimatorSpec:
        cls = import_dotted(self.estimator)
        if not (hasattr(cls, "fit") and hasattr(cls, "get_params")):
            raise ValueError(f"estimator {self.estimator!r} is not a scikit-learn estimator")
        valid = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(self.params) - valid)
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for {cls.__name__}; valid: {sorted(valid)}")
        return self

    @property
    def estimator_class(self) -> type:
        return import_dotted(self.estimator)

    @property
    def learns_nothing(self) -> bool:
        """Fitting stores nothing (EWM predictor, baselines): predictions need no refit per fold."""
        return bool(getattr(self.estimator_class, "learns_nothing", False))

    def build(self, source: str | None = None) -> Any:
        """A fresh estimator (a Pipeline when scaled; custom frame estimators are never scaled)."""
        cls = self.estimator_class
        params = dict(self.params)
        if source is not None and "source" in inspect.signature(cls.__init__).parameters:
            params.setdefault("source", source)
        est = cls(**params)
        if self.scaler == "none" or getattr(est, "needs_frame", False) or getattr(est, "uses_history", False):
            return est
        return Pipeline([("scale", SCALERS[self.scaler]()), ("model", est)])


def _estimator_entry(name: str, entry: Any) -> Any:
    """Split an estimator entry into spec keys and estimator parameters (given at top level)."""
    if entry is None:
        entry = {}
    if not isinstance(entry, dict):
        return entry
    entry = dict(entry)
    if "estimator" not in entry:
        if name not in ALIASES:
            raise ValueError(f"estimator {name!r}: give `estimator:` (dotted path) or use an alias {sorted(ALIASES)}")
        entry["estimator"] = name
    params = dict(entry.pop("params", None) or {})
    params.update({k: entry.pop(k) for k in list(entry) if k not in _SPEC_KEYS})
    entry["params"] = params
    return entry


class FamilyModels(StrictModel):
    primary: str | None = None
    estimators: dict[str, EstimatorSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _naive_reserved(self) -> FamilyModels:
        if NAIVE in self.estimators:
            raise ValueError(f"estimator name {NAIVE!r} is reserved for the naive baseline every selection compares with")
        return self

    @model_validator(mode="before")
    @classmethod
    def _wrap(cls, data: Any) -> Any:
        if isinstance(data, dict) and "estimators" not in data:
            data = dict(data)
            primary = data.pop("primary", None)
            return {"primary": primary, "estimators": {k: _estimator_entry(k, v) for k, v in data.items()}}
        return data

    @model_validator(mode="after")
    def _primary_known(self) -> FamilyModels:
        if self.primary is not None and self.primary not in self.estimators:
            raise ValueError(f"primary {self.primary!r} is not one of {sorted(self.estimators)}")
        return self

    @property
    def primary_name(self) -> str:
        return self.primary or next(iter(self.estimators))


class CVConfig(StrictModel):
    n_splits: PositiveInt = 5
    scheme: Literal["expanding", "rolling"] = "expanding"
    train_size: PositiveInt | None = Field(default=None, description="rolling: training rows of time (days/bars)")
    embargo: NonNegativeInt | None = Field(default=None, description="default: the longest horizon + lag")
    min_train: PositiveInt = Field(default=30, description="time steps of training data before the first test fold")


class SelectionConfig(StrictModel):
    """Which model a label is traded with: the best purged-CV score among the family's estimators
    and the naive baseline (``cv``), or the family's ``primary`` (``fixed``)."""

    by: Literal["cv", "fixed"] = "cv"
    regression_metric: Literal["mae", "r2"] = "mae"
    classification_metric: Literal["log_loss", "balanced_accuracy", "accuracy"] = "log_loss"
    min_coverage: float = Field(default=0.9, ge=0, le=1, description="share of the labelled out-of-sample rows "
                                "a model must predict to be chosen: a pool without a prediction cannot be held")

    def metric(self, task: str) -> str:
        return self.regression_metric if task == "regression" else self.classification_metric


def _default_families() -> dict[str, FamilyModels]:
    return {
        "apy": FamilyModels.model_validate(
            {"ewm_predictor": {"halflife": "7d", "cap": 3.0}, "ridge": {"alpha": 1.0, "scaler": "standard"}}
        )
    }


class ModelsConfig(StrictModel):
    """Estimators per label family, mode and CV scheme. Accepts the YAML shape of the module doc."""

    mode: Mode = "pooled"
    cv: CVConfig = Field(default_factory=CVConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    refit_every_weeks: PositiveInt = Field(default=1, description="learned models are refit every k weeks "
                                           "(Mondays, UTC), in production and in the backtest alike")
    threads: PositiveInt = Field(default=1, description="OpenMP threads per estimator fit / predict: parallelism "
                                 "comes from processes; on a busy 2-core machine two threads per gradient-boosting "
                                 "fit measured 8x slower than one")
    families: dict[str, FamilyModels] = Field(default_factory=_default_families)

    @model_validator(mode="before")
    @classmethod
    def _wrap(cls, data: Any) -> Any:
        if isinstance(data, dict) and "families" not in data:
            reserved = {"mode", "cv", "selection", "refit_every_weeks", "threads"}
            fams = {k: v for k, v in data.items() if k not in reserved}
            out = {k: v for k, v in data.items() if k in reserved}
            if fams:
                out["families"] = fams
            return out
        return data

    def family(self, name: str) -> FamilyModels:
        if name not in self.families:
            raise KeyError(f"models has no entry for label family {name!r} (has {sorted(self.families)})")
        return self.families[name]


DEFAULT_MODELS = ModelsConfig()


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------


@functools.cache
def _threadpools() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # finding the loaded libraries costs ~15 ms: once per process


def openmp_threads(n: int) -> Any:
    """Context limiting OpenMP (gradient boosting) to ``n`` threads."""
    return _threadpools().limit(limits=n, user_api="openmp")


def design_matrix(X: pd.DataFrame, columns: list[str], categorical: list[str]) -> pd.DataFrame:
    frame = X[columns]
    if not categorical:
        return frame
    return frame.astype({c: "category" for c in categorical if c in columns})


def allows_nan(estimator: Any) -> bool:
    """True when every step of the estimator accepts missing values (scikit-learn's ``allow_nan`` tag)."""
    from sklearn.utils import get_tags

    steps = [s for _, s in estimator.steps] if isinstance(estimator, Pipeline) else [estimator]
    return all(get_tags(s).input_tags.allow_nan for s in steps)


def select_features(patterns: list[str] | None, available: list[str]) -> list[str]:
    if patterns is None:
        return list(available)
    chosen = [c for c in available if any(fnmatch.fnmatchcase(c, p) for p in patterns)]
    if not chosen:
        raise ValueError(f"feature patterns {patterns} match none of {available}")
    return chosen


@dataclass
class FittedModel:
    """A trained model for one label; pickleable (stored per as_of partition by the IO manager)."""

    label: str
    family: str
    name: str
    task: Literal["regression", "classification"]
    mode: Mode
    feature_columns: list[str]
    estimators: dict[str, Any]
    as_of: pd.Timestamp | None = None
    n_train: int = 0
    classes: list[int] | None = None
    class_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    categorical: list[str] = field(default_factory=list)  # feature columns passed as pandas categories
    allow_nan: bool = False  # the estimator handles missing features itself (no complete-row filter)
    threads: int = 1  # OpenMP threads of fit / predict

    @property
    def uses_history(self) -> bool:
        return any(getattr(e, "uses_history", False) for e in self.estimators.values())

    def _frame_input(self, est: Any) -> bool:
        return getattr(est, "needs_frame", False) or getattr(est, "uses_history", False)

    def _rows(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        if self.mode == "pooled":
            return {"all": np.arange(len(X))}
        codes, uniq = pd.factorize(X["instrument"])
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
        return {str(u): order[bounds[i] : bounds[i + 1]] for i, u in enumerate(uniq)}

    def design(self, X: pd.DataFrame) -> pd.DataFrame:
        """The estimator's input: the feature columns, declared categorical ones as pandas categories."""
        return design_matrix(X, self.feature_columns, self.categorical)

    def _apply(self, X: pd.DataFrame, method: str, width: int) -> np.ndarray:
        with openmp_threads(self.threads):
            return self._apply_all(X, method, width)

    def _apply_all(self, X: pd.DataFrame, method: str, width: int) -> np.ndarray:
        out = np.full((len(X), width), np.nan)
        complete = (X[self.feature_columns].notna().all(axis=1).to_numpy()
                    if self.feature_columns and not self.allow_nan else None)
        for key, rows in self._rows(X).items():
            est = self.estimators.get(key, self.estimators.get(POOLED_FALLBACK) if self.mode == "per_instrument" else None)
            if est is None or len(rows) == 0:
                continue
            if self._frame_input(est):
                res = getattr(est, method)(X.iloc[rows])
                out[rows] = np.asarray(res, dtype=np.float64).reshape(len(rows), -1)
                continue
            ok = rows[complete[rows]] if complete is not None else rows
            if len(ok) == 0:
                continue
            res = getattr(est, method)(self.design(X.iloc[ok]))
            if method == "predict_proba":
                full = np.zeros((len(ok), width))
                full[:, np.searchsorted(self.classes, est.classes_)] = res
                res = full
            out[ok] = np.asarray(res, dtype=np.float64).reshape(len(ok), -1)
        return out

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """One prediction per row of X (NaN where features are missing or no model exists)."""
        return self._apply(X, "predict", 1)[:, 0]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        if self.task != "classification" or self.classes is None:
            raise TypeError(f"{self.name} on {self.label} is not a classifier")
        return self._apply(X, "predict_proba", len(self.classes))

    def importances(self) -> pd.DataFrame:
        """Coefficients or feature importances, one row per (instrument|'all', feature[, class])."""
        rows = []
        for key, est in self.estimators.items():
            final = est.steps[-1][1] if isinstance(est, Pipeline) else est
            values = getattr(final, "coef_", None)
            kind = "coef"
            if values is None:
                values, kind = getattr(final, "feature_importances_", None), "importance"
            if values is None:
                continue
            values = np.atleast_2d(values)
            for c, row in enumerate(values):
                for feat, v in zip(self.feature_columns, row, strict=True):
                    rows.append((key, feat, c if len(values) > 1 else None, kind, float(v)))
        return pd.DataFrame(rows, columns=["instrument", "feature", "class", "kind", "value"])


def fit_estimator(
    spec: EstimatorSpec,
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    label: str,
    family: str,
    name: str,
    task: Literal["regression", "classification"],
    mode: Mode,
    source: str | None = None,
    feature_columns: list[str] | None = None,  # available features; spec.features selects among them
    as_of: pd.Timestamp | None = None,
    class_names: list[str] | None = None,
    min_rows: int = 10,
    threads: int = 1,
) -> FittedModel:
    """Fit on rows of X (long frame with ``instrument``); rows with a missing label or feature are
    dropped here, so callers only choose which rows are *allowed* (time, purging)."""
    template = spec.build(source)
    if task == "classification" and not is_classifier(template) and not getattr(template, "needs_frame", False):
        raise ValueError(f"{name} ({spec.estimator}) is not a classifier but label {label} is a class label")
    if task == "regression" and is_classifier(template):
        raise ValueError(f"{name} ({spec.estimator}) is a classifier but label {label} is a regression label")
    frame_input = getattr(template, "needs_frame", False) or getattr(template, "uses_history", False)
    cols = [] if frame_input else select_features(spec.features, list(feature_columns or []))
    missing_cat = sorted(set(spec.categorical) - set(X.columns))
    if missing_cat and not frame_input:
        raise ValueError(f"{name}: categorical feature column(s) {missing_cat} are not in the features "
                         "(add them to feature_map.categories)")
    # string columns go only to estimators that declare them categorical
    cols = [c for c in cols if c in spec.categorical or pd.api.types.is_numeric_dtype(X[c])]
    nan_ok = allows_nan(template)
    y = np.asarray(y, dtype=np.float64)
    ok = ~np.isnan(y)
    if cols and not nan_ok:
        ok &= X[cols].notna().all(axis=1).to_numpy()
    if cols and nan_ok:  # a feature never observed in training carries nothing (and breaks binning)
        cols = [c for c in cols if X[c].iloc[np.flatnonzero(ok)].notna().any()]
    classes = sorted(int(c) for c in np.unique(y[ok])) if task == "classification" else None
    categorical = [c for c in spec.categorical if c in cols]
    fitted = FittedModel(label, family, name, task, mode, cols, {}, as_of, int(ok.sum()), classes, class_names,
                         categorical=categorical, allow_nan=nan_ok, threads=threads)
    with openmp_threads(threads):
        _fit_all(fitted, template, X, y, ok, frame_input, min_rows)
    return fitted


def _fit_all(fitted: FittedModel, template: Any, X: pd.DataFrame, y: np.ndarray, ok: np.ndarray, frame_input: bool,
             min_rows: int) -> None:
    """One estimator per key of ``fitted`` (pooled or per instrument), plus the pooled fallback."""
    task, mode = fitted.task, fitted.mode
    for key, rows in fitted._rows(X).items():
        rows = rows[ok[rows]]
        if len(rows) < (1 if frame_input else min_rows):
            continue
        Xr = X.iloc[rows] if frame_input else fitted.design(X.iloc[rows])
        yr = y[rows].astype(int) if task == "classification" else y[rows]
        est = clone(template)
        if task == "classification" and len(np.unique(yr)) < 2:
            est = DummyClassifier(strategy="prior")
        fitted.estimators[key] = est.fit(Xr, yr)
    pooled_rows = np.flatnonzero(ok)
    if mode == "per_instrument" and not frame_input and len(pooled_rows) >= min_rows:
        # instruments too young for their own model (a new pool) are predicted by one pooled model
        yr = y[pooled_rows].astype(int) if task == "classification" else y[pooled_rows]
        est = clone(template) if task == "regression" or len(np.unique(yr)) > 1 else DummyClassifier(strategy="prior")
        fitted.estimators[POOLED_FALLBACK] = est.fit(fitted.design(X.iloc[pooled_rows]), yr)


