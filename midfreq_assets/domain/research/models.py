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

import contextlib
import fnmatch
import functools
import importlib
import inspect
import threading
from collections.abc import Callable, Iterator, Sequence
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
from midfreq_assets.domain.research.features import PanelIndex, time_grid

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
    raise KeyError(
        f"history estimators need a time column {TIME_COLUMNS} in X (got {list(X.columns)[:8]}...)"
    )


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
            raise KeyError(
                f"EWMYieldPredictor needs column {self.source!r} (add `level: true` to its feature)"
            )
        idx = PanelIndex.from_long(X, _time_col(X), "instrument")
        return idx.gather(self.predict_wide(idx.wide(X[self.source])))

    def input_columns(self) -> list[str]:
        """The columns of ``X`` it reads (a :class:`Design` hands it only those)."""
        return [*TIME_COLUMNS, "instrument", self.source]

    def head_test(self, X: pd.DataFrame) -> Callable[[int], bool]:
        """Which heads of ``X`` (its first ``n`` rows) it predicts as the first ``n`` of its
        predictions over ``X``, so that one pass over ``X`` serves them (:class:`Design`). Each
        instrument's row is predicted from that instrument's earlier rows only, so a head is when
        the rows are in time order, the head's grid is the first part of the whole one and the
        halflife in rows (set by the grid step) is the same on both."""
        times = X[_time_col(X)]
        if not times.is_monotonic_increasing:
            return lambda n: False
        grid = time_grid(times)
        if len(grid) > 1 and (grid == grid.normalize()).all():  # every calendar day (time_grid): so is a
            return lambda n: (
                n > 0
            )  # head's grid, its first days, and its step is a day too (a day if one row)
        h = halflife_rows(self.halflife, grid)

        def same(n: int) -> bool:
            head = time_grid(times.iloc[:n])
            return n > 0 and head.equals(grid[: len(head)]) and halflife_rows(self.halflife, head) == h

        return same


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

    def input_columns(self) -> list[str]:
        return [self.source]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.source not in X.columns:
            raise KeyError(
                f"LastValueBaseline needs column {self.source!r} (add `level: true` to its feature)"
            )
        return X[self.source].to_numpy(dtype=np.float64)


class ZeroBaseline(RegressorMixin, BaseEstimator):
    """Naive forecast of a return: zero (random walk)."""

    needs_frame = True
    learns_nothing = True

    def fit(self, X: pd.DataFrame, y: Any = None) -> ZeroBaseline:
        self.is_fitted_ = True
        return self

    def input_columns(self) -> list[str]:
        return []

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.zeros(len(X))


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@functools.cache
def init_parameters(cls: type) -> tuple[str, ...]:
    """The parameter names of ``cls.__init__`` (inspected once per class: a spec is built per fit)."""
    return tuple(inspect.signature(cls.__init__).parameters)


def import_dotted(path: str) -> type:
    path = ALIASES.get(path, path)
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(
            f"estimator {path!r}: expected a dotted path like sklearn.linear_model.Ridge or one of {sorted(ALIASES)}"
        )
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
    categorical: list[str] = Field(
        default_factory=list,
        description="string feature columns given to the "
        "estimator as pandas categories (estimators that support them, e.g. hist_gb)",
    )

    @model_validator(mode="after")
    def _check_params(self) -> EstimatorSpec:
        cls = import_dotted(self.estimator)
        if not (hasattr(cls, "fit") and hasattr(cls, "get_params")):
            raise ValueError(f"estimator {self.estimator!r} is not a scikit-learn estimator")
        valid = set(init_parameters(cls)) - {"self"}
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
        if source is not None and "source" in init_parameters(cls):
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
            raise ValueError(
                f"estimator {name!r}: give `estimator:` (dotted path) or use an alias {sorted(ALIASES)}"
            )
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
            raise ValueError(
                f"estimator name {NAIVE!r} is reserved for the naive baseline every selection compares with"
            )
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
    train_size: PositiveInt | None = Field(
        default=None, description="rolling: training rows of time (days/bars)"
    )
    embargo: NonNegativeInt | None = Field(default=None, description="default: the longest horizon + lag")
    min_train: PositiveInt = Field(
        default=30, description="time steps of training data before the first test fold"
    )


class SelectionConfig(StrictModel):
    """Which model a label is traded with: the best purged-CV score among the family's estimators
    and the naive baseline (``cv``), or the family's ``primary`` (``fixed``)."""

    by: Literal["cv", "fixed"] = "cv"
    regression_metric: Literal["mae", "r2"] = "mae"
    classification_metric: Literal["log_loss", "balanced_accuracy", "accuracy"] = "log_loss"
    min_coverage: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="share of the labelled out-of-sample rows "
        "a model must predict to be chosen: a pool without a prediction cannot be held",
    )

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
    refit_every_weeks: PositiveInt = Field(
        default=1,
        description="learned models are refit every k weeks "
        "(Mondays, UTC), in production and in the backtest alike",
    )
    threads: PositiveInt = Field(
        default=1,
        description="OpenMP threads per estimator fit / predict: parallelism "
        "comes from processes; on a busy 2-core machine two threads per gradient-boosting "
        "fit measured 8x slower than one",
    )
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


_openmp = threading.local()  # the limit of the innermost openmp_threads context of this thread


@contextlib.contextmanager
def openmp_threads(n: int) -> Iterator[None]:
    """Context limiting OpenMP (gradient boosting) to ``n`` threads. Inside a context of the same
    limit it does nothing: setting a limit costs ~0.1 ms, and a run of refits enters one per fit
    and prediction (``weekly_bundles`` holds one around them all)."""
    if getattr(_openmp, "limit", None) == n:
        yield
        return
    outer = getattr(_openmp, "limit", None)
    with _threadpools().limit(limits=n, user_api="openmp"):
        _openmp.limit = n
        try:
            yield
        finally:
            _openmp.limit = outer


def design_matrix(X: pd.DataFrame, columns: list[str], categorical: list[str]) -> pd.DataFrame:
    frame = X if list(X.columns) == list(columns) else X[columns]  # already the design columns: no copy
    if not categorical:
        return frame
    return frame.astype({c: "category" for c in categorical if c in columns})


def take_rows(frame: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """``frame.iloc[rows]`` for increasing ``rows``; a slice (no copy) when they are the first rows of
    the frame: every row of a pooled fit, and the training rows of an expanding window often are."""
    n = len(rows)
    if n == 0 or rows[n - 1] == n - 1:  # increasing and ending at n - 1: exactly 0..n-1
        return frame.iloc[:n]
    return frame.iloc[rows]


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


def model_rows(mode: Mode, instruments: pd.Series | None, n: int) -> dict[str, np.ndarray]:
    """Positions of the ``n`` rows each model of a fit is trained on or predicts: all of them
    (``pooled``), or those of each instrument, keyed by its name in order of first appearance."""
    if mode == "pooled":
        return {"all": np.arange(n)}
    assert instruments is not None
    codes, uniq = pd.factorize(instruments)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
    return {str(u): order[bounds[i] : bounds[i + 1]] for i, u in enumerate(uniq)}


class Design:
    """A long frame as an estimator reads it: its design ``columns`` (features, declared categorical
    ones as pandas categories), which rows have all of them, and the rows of each model key.

    Built once per frame, it serves fits and predictions on any subset of the frame's rows, so
    that the folds of a CV take rows of arrays computed once instead of re-deriving them from a
    copy of the frame per fold. ``arrays=True`` hands the estimator a float matrix instead of a
    DataFrame: the same numbers in the same memory layout as scikit-learn's own conversion, without
    its per-call DataFrame checks (half the cost of a small fit), for models that are never stored
    (the CV's fold models: fitted without feature names, they are predicted with arrays too).

    :meth:`head` gives the design of the frame's first rows as slices of this one's arrays, and the
    head's history estimators a slice of one pass over the whole frame (:meth:`history_output`):
    the weekly refits and their CVs all train on first rows of one joined frame."""

    def __init__(
        self,
        frame: pd.DataFrame,
        columns: list[str],
        categorical: list[str],
        *,
        checks_missing: bool,
        reads: list[str] | None = None,
        rows: int | None = None,
    ):
        self._whole = frame
        self.n = len(frame) if rows is None else rows  # a design of the frame's first rows (a head)
        self.columns = columns
        self.categorical = categorical
        self.checks_missing = checks_missing  # rows with a missing design column are skipped
        self.reads = reads  # the columns frame estimators read (their input_columns; None: every column)
        self._root: tuple[Design, int] | None = (
            None  # (design of a frame whose first rows this one's are, rows)
        )
        self._passes: dict[tuple, np.ndarray | None] = {}  # history estimators' outputs over X
        self._heads: dict[tuple, Callable[[int], bool]] = {}  # and which heads of X they serve

    @functools.cached_property
    def frame(self) -> pd.DataFrame:
        """The long frame (its first ``n`` rows: sliced when first needed)."""
        return self._whole if self.n == len(self._whole) else self._whole.iloc[: self.n]

    @functools.cached_property
    def X(self) -> pd.DataFrame:
        """What a frame estimator gets: the columns of the frame it reads."""
        if self._root is not None:
            return self._root[0].X.iloc[: self.n]
        if self.reads is None:
            return self.frame
        reads = set(self.reads)
        return self.frame[[c for c in self.frame.columns if c in reads]]

    @functools.cached_property
    def inputs(self) -> pd.DataFrame:
        """The design columns of the frame."""
        if self._root is not None:
            return self._root[0].inputs.iloc[: self.n]
        return self.frame[self.columns]

    @functools.cached_property
    def complete(self) -> np.ndarray:
        """Rows with every design column present (numpy on float columns: pandas' row-wise
        ``notna().all(axis=1)`` builds a boolean frame first and costs several times more)."""
        if self._floats is not None:
            return ~np.isnan(self._floats).any(axis=1)
        return self.inputs.notna().all(axis=1).to_numpy()

    @functools.cached_property
    def _floats(self) -> np.ndarray | None:
        """The design columns as a C-contiguous (rows x columns) float matrix, the layout
        scikit-learn gets from a DataFrame of the rows; None when a column is not a numpy float or
        is categorical."""
        if self.categorical or not all(isinstance(d, np.dtype) and d.kind == "f" for d in self.inputs.dtypes):
            return None
        return np.ascontiguousarray(self.inputs.to_numpy(dtype=np.float64))

    def head(self, n: int) -> Design:
        """The design of the first ``n`` rows of the frame, sharing this design's arrays."""
        root = self._root[0] if self._root is not None else self
        head = Design(
            root._whole,
            self.columns,
            self.categorical,
            checks_missing=self.checks_missing,
            reads=self.reads,
            rows=n,
        )
        floats = root._floats
        head.__dict__.update(_floats=None if floats is None else floats[:n], complete=root.complete[:n])
        head._root = (root, n)
        return head

    def history_output(self, est: Any, method: str) -> np.ndarray:
        """``est.<method>(X)`` of a frame estimator. On a :meth:`head`, the first rows of one pass
        over the whole frame when the estimator vouches that they are the same (``head_test``, the
        EWM predictor): one causal pass then serves every refit of a run."""
        if self._root is not None and hasattr(est, "head_test"):
            root, n = self._root
            key = (method, type(est), repr(sorted(est.get_params().items())))
            if key not in root._heads:
                root._heads[key] = est.head_test(root.X)
            if root._heads[key](n):
                if key not in root._passes:
                    try:
                        root._passes[key] = np.asarray(getattr(est, method)(root.X), dtype=np.float64)
                    except (
                        ValueError
                    ):  # the whole frame cannot be predicted (e.g. duplicate rows after the head)
                        root._passes[key] = None
                if root._passes[key] is not None:
                    return root._passes[key][:n]
        return np.asarray(getattr(est, method)(self.X), dtype=np.float64)

    def rows_by_key(self, rows: np.ndarray, mode: Mode) -> dict[str, np.ndarray]:
        """:func:`model_rows` of ``rows`` (positions in the frame), as positions in ``rows``."""
        instruments = take_rows(self.frame["instrument"], rows) if mode == "per_instrument" else None
        return model_rows(mode, instruments, len(rows))

    def matrix(self, rows: np.ndarray, columns: list[str], arrays: bool = False) -> pd.DataFrame | np.ndarray:
        """The estimator input of ``rows`` (positions in the frame) and ``columns`` (design columns): a
        DataFrame (the model keeps the feature names), or with ``arrays`` the float matrix."""
        if self._floats is None:
            return design_matrix(
                take_rows(self.inputs, rows), columns, [c for c in self.categorical if c in columns]
            )
        if columns == self.columns:
            values = self._floats.take(rows, axis=0)
        else:
            values = self._floats[np.ix_(rows, [self.columns.index(c) for c in columns])]
        return values if arrays else pd.DataFrame(values, columns=columns, copy=False)


class FrameDesigns:
    """The :class:`Design` of one frame per estimator spec, built once and handed out as heads: for
    fits and CVs on first rows of the frame (the refits of ``weekly_bundles``), which then slice
    arrays made once instead of rebuilding them from their rows."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self._columns = list(frame.columns)
        self._dtypes = frame.dtypes
        self._designs: dict[tuple, Design] = {}

    def head(
        self,
        spec: EstimatorSpec,
        template: Any,
        X: pd.DataFrame,
        name: str,
        feature_columns: list[str] | None,
    ) -> Design:
        """:func:`spec_design` of ``X``, which must be the first ``len(X)`` rows of the frame."""
        columns, categorical, checks_missing = design_columns(
            spec, template, self._columns, self._dtypes, name, feature_columns
        )
        reads = frame_reads(template)
        key = (tuple(columns), tuple(categorical), checks_missing, None if reads is None else tuple(reads))
        if key not in self._designs:
            self._designs[key] = Design(
                self.frame, columns, categorical, checks_missing=checks_missing, reads=reads
            )
        return self._designs[key].head(len(X))

    def of_model(self, fitted: FittedModel, n: int) -> Design:
        """The design a fitted model predicts the first ``n`` rows of the frame with (its feature
        columns; frame estimators get every column, as :meth:`FittedModel.predict` gives them)."""
        key = (tuple(fitted.feature_columns), tuple(fitted.categorical), not fitted.allow_nan, None)
        if key not in self._designs:
            self._designs[key] = Design(
                self.frame, fitted.feature_columns, fitted.categorical, checks_missing=not fitted.allow_nan
            )
        return self._designs[key].head(n)


IMPORTANCE_COLUMNS = ["instrument", "feature", "class", "kind", "value"]


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
        return model_rows(self.mode, X["instrument"] if self.mode == "per_instrument" else None, len(X))

    def design(self, X: pd.DataFrame) -> pd.DataFrame:
        """The estimator's input: the feature columns, declared categorical ones as pandas categories."""
        return design_matrix(X, self.feature_columns, self.categorical)

    def _apply(self, X: pd.DataFrame, method: str, width: int) -> np.ndarray:
        design = Design(X, self.feature_columns, self.categorical, checks_missing=not self.allow_nan)
        return self.apply_rows(design, np.arange(len(X)), method, width)

    def apply_rows(
        self, design: Design, rows: np.ndarray, method: str, width: int, arrays: bool = False
    ) -> np.ndarray:
        """``method`` (predict / predict_proba) of ``rows`` of a :class:`Design` whose columns
        include this model's (``arrays``: the model was fitted on arrays of it)."""
        with openmp_threads(self.threads):
            return self._apply_all(design, rows, method, width, arrays)

    def _apply_all(
        self, design: Design, rows: np.ndarray, method: str, width: int, arrays: bool
    ) -> np.ndarray:
        out = np.full((len(rows), width), np.nan)
        complete = design.complete if self.feature_columns and not self.allow_nan else None
        for key, local in design.rows_by_key(rows, self.mode).items():
            est = self.estimators.get(
                key, self.estimators.get(POOLED_FALLBACK) if self.mode == "per_instrument" else None
            )
            if est is None or len(local) == 0:
                continue
            if self._frame_input(est):
                if len(local) == design.n:  # every row, in order: the estimator reads the whole frame
                    res = design.history_output(est, method)
                else:
                    res = getattr(est, method)(take_rows(design.X, rows[local]))
                out[local] = np.asarray(res, dtype=np.float64).reshape(len(local), -1)
                continue
            ok = local[complete[rows[local]]] if complete is not None else local
            if len(ok) == 0:
                continue
            res = getattr(est, method)(design.matrix(rows[ok], self.feature_columns, arrays))
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
        return pd.DataFrame(self.importance_rows(), columns=IMPORTANCE_COLUMNS)

    def importance_rows(self) -> list[tuple]:
        """The rows of :meth:`importances` (tuples of ``IMPORTANCE_COLUMNS``)."""
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
        return rows


def estimator_template(
    spec: EstimatorSpec,
    *,
    label: str,
    name: str,
    task: Literal["regression", "classification"],
    source: str | None = None,
) -> Any:
    """A fresh estimator of ``spec``, refused when it does not fit the label's task."""
    template = spec.build(source)
    if (
        task == "classification"
        and not is_classifier(template)
        and not getattr(template, "needs_frame", False)
    ):
        raise ValueError(f"{name} ({spec.estimator}) is not a classifier but label {label} is a class label")
    if task == "regression" and is_classifier(template):
        raise ValueError(f"{name} ({spec.estimator}) is a classifier but label {label} is a regression label")
    return template


def spec_design(
    spec: EstimatorSpec, template: Any, X: pd.DataFrame, name: str, feature_columns: list[str] | None
) -> Design:
    """The :class:`Design` of ``X`` for ``spec`` (:func:`design_columns`)."""
    columns, categorical, checks_missing = design_columns(
        spec, template, X.columns, X.dtypes, name, feature_columns
    )
    return Design(X, columns, categorical, checks_missing=checks_missing, reads=frame_reads(template))


def frame_reads(template: Any) -> list[str] | None:
    """The columns of the long frame an estimator reads: its ``input_columns`` if it reads the
    frame itself and says which (else every column), none when it takes a design matrix."""
    if not (getattr(template, "needs_frame", False) or getattr(template, "uses_history", False)):
        return []
    return list(template.input_columns()) if hasattr(template, "input_columns") else None


def design_columns(
    spec: EstimatorSpec,
    template: Any,
    columns: Sequence[str],
    dtypes: pd.Series,
    name: str,
    feature_columns: list[str] | None,
) -> tuple[list[str], list[str], bool]:
    """The design columns of a frame (``columns``, ``dtypes``) for ``spec``: the available
    ``feature_columns`` it selects, numeric or declared categorical (none for estimators that read
    the long frame themselves); the categorical ones; whether rows missing one are skipped."""
    frame_input = getattr(template, "needs_frame", False) or getattr(template, "uses_history", False)
    cols = [] if frame_input else select_features(spec.features, list(feature_columns or []))
    missing_cat = sorted(set(spec.categorical) - set(columns))
    if missing_cat and not frame_input:
        raise ValueError(
            f"{name}: categorical feature column(s) {missing_cat} are not in the features "
            "(add them to feature_map.categories)"
        )
    # string columns go only to estimators that declare them categorical
    cols = [c for c in cols if c in spec.categorical or pd.api.types.is_numeric_dtype(dtypes[c])]
    return cols, [c for c in spec.categorical if c in cols], not allows_nan(template)


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
    template = estimator_template(spec, label=label, name=name, task=task, source=source)
    design = spec_design(spec, template, X, name, feature_columns)
    return fit_rows(
        design,
        template,
        np.arange(len(X)),
        y,
        label=label,
        family=family,
        name=name,
        task=task,
        mode=mode,
        as_of=as_of,
        class_names=class_names,
        min_rows=min_rows,
        threads=threads,
    )


def fit_rows(
    design: Design,
    template: Any,
    rows: np.ndarray,
    y: np.ndarray,
    *,
    label: str,
    family: str,
    name: str,
    task: Literal["regression", "classification"],
    mode: Mode,
    as_of: pd.Timestamp | None = None,
    class_names: list[str] | None = None,
    min_rows: int = 10,
    threads: int = 1,
    arrays: bool = False,
    fresh: Callable[[], Any] | None = None,
) -> FittedModel:
    """:func:`fit_estimator` on ``rows`` (increasing positions) of the frame of ``design`` (from
    :func:`spec_design`), ``y`` their labels; ``arrays``: see :class:`Design`. ``fresh``: makes an
    unfitted estimator like ``template`` (its spec's ``build``: scikit-learn's ``clone``, the
    default, inspects every step's signature, a tenth of a small fit)."""
    frame_input = getattr(template, "needs_frame", False) or getattr(template, "uses_history", False)
    cols = design.columns
    nan_ok = not design.checks_missing
    y = np.asarray(y, dtype=np.float64)
    ok = ~np.isnan(y)
    if cols and not nan_ok:
        ok &= design.complete[rows]
    if cols and nan_ok:  # a feature never observed in training carries nothing (and breaks binning)
        seen = take_rows(design.inputs, rows[ok]).notna().any().to_numpy()
        cols = [c for c, s in zip(cols, seen, strict=True) if s]
    classes = sorted(int(c) for c in np.unique(y[ok])) if task == "classification" else None
    categorical = [c for c in design.categorical if c in cols]
    fitted = FittedModel(
        label,
        family,
        name,
        task,
        mode,
        cols,
        {},
        as_of,
        int(ok.sum()),
        classes,
        class_names,
        categorical=categorical,
        allow_nan=nan_ok,
        threads=threads,
    )
    with openmp_threads(threads):
        _fit_all(
            fitted,
            fresh or functools.partial(clone, template),
            design,
            rows,
            y,
            ok,
            frame_input,
            min_rows,
            arrays,
        )
    return fitted


def _fit_all(
    fitted: FittedModel,
    fresh: Callable[[], Any],
    design: Design,
    rows: np.ndarray,
    y: np.ndarray,
    ok: np.ndarray,
    frame_input: bool,
    min_rows: int,
    arrays: bool,
) -> None:
    """One estimator per key of ``fitted`` (pooled or per instrument), plus the pooled fallback."""
    task, mode = fitted.task, fitted.mode
    for key, local in design.rows_by_key(rows, mode).items():
        local = local[ok[local]]
        if len(local) < (1 if frame_input else min_rows):
            continue
        Xr = (
            take_rows(design.X, rows[local])
            if frame_input
            else design.matrix(rows[local], fitted.feature_columns, arrays)
        )
        yr = y[local].astype(int) if task == "classification" else y[local]
        est = fresh()
        if task == "classification" and len(np.unique(yr)) < 2:
            est = DummyClassifier(strategy="prior")
        fitted.estimators[key] = est.fit(Xr, yr)
    pooled = np.flatnonzero(ok)
    if mode == "per_instrument" and not frame_input and len(pooled) >= min_rows:
        # instruments too young for their own model (a new pool) are predicted by one pooled model
        yr = y[pooled].astype(int) if task == "classification" else y[pooled]
        est = fresh() if task == "regression" or len(np.unique(yr)) > 1 else DummyClassifier(strategy="prior")
        fitted.estimators[POOLED_FALLBACK] = est.fit(
            design.matrix(rows[pooled], fitted.feature_columns, arrays), yr
        )
