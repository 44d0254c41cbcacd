"""Entry points of the research engine, called by the Dagster assets and by notebooks alike.

Yields: the long ``pool_history`` (``date, pool, apy, tvl_usd, ...``; ``adjusted_apy`` when
available) is the panel. Prices: ``binance_klines`` via :func:`klines_panel` (instrument =
symbol, time = ``open_time``, windows in bars).

Typical nightly flow for partition day D::

    lookback = required_lookback(vault.feature_map, vault.models)          # rows of history
    feats = build_features(history_window, vault.feature_map)               # then keep rows >= D
    labs = build_labels(history, vault.label_map)                           # ends known < D
    fitted = fit_model(feats_all, labs, vault.models, as_of=D, label_map=vault.label_map)
    apy_hat = predict(fitted, feats_window, date=D)                         # Series by instrument

No look-ahead: features at t use rows <= t; ``fit_model(as_of=T)`` trains only on rows whose label
ends before T; predictions at t use features at t (and, for history estimators, earlier rows).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import is_classifier

from midfreq_assets.domain.research.cross_validation import (
    SCORE_COLUMNS,
    OOSPredictions,
    Split,
    candidate_score_rows,
    candidate_scores,
    cv_splits,
    fold_span_rows,
    fold_spans,
    oos_on_design,
    vs_baseline_scores,
)
from midfreq_assets.domain.research.features import (
    FeatureMapConfig,
    compute_features,
    ewm_memory,
)
from midfreq_assets.domain.research.features import (
    required_lookback as feature_lookback,
)
from midfreq_assets.domain.research.labels import LabelInfo, LabelMapConfig, compute_labels
from midfreq_assets.domain.research.models import (
    NAIVE,
    TIME_COLUMNS,
    EstimatorSpec,
    FittedModel,
    FrameDesigns,
    ModelsConfig,
    estimator_template,
    fit_estimator,
    fit_rows,
    halflife_rows,
    spec_design,
)

KEY_COLUMNS = ("open_time", "date", "instrument")
_LABEL_RE = re.compile(r"^(?P<family>.+)_(?P<kind>fwd|ret|cls|sl)_(?P<h>\d+)$")


# --------------------------------------------------------------------------------------------
# Panels, features, labels
# --------------------------------------------------------------------------------------------


def klines_panel(klines: pd.DataFrame, interval: str | None = None) -> pd.DataFrame:
    """``binance_klines`` rows -> research panel ``[open_time, date, instrument, close, volume,
    taker_buy_volume, ...]`` for one interval (klines of several intervals cannot share a grid)."""
    df = klines
    if "interval" in df.columns:
        intervals = df["interval"].unique()
        if interval is None and len(intervals) > 1:
            raise ValueError(f"klines hold several intervals {sorted(intervals)}: pass interval=")
        if interval is not None:
            df = df[df["interval"] == interval]
    df = df.rename(columns={"symbol": "instrument"})
    return df.sort_values(["open_time", "instrument"], kind="stable").reset_index(drop=True)


#: The premium index close (``binance_premium_index_klines``) as a raw column of the price panel.
PREMIUM_COLUMN = "close_premium"


def with_close_premium(panel: pd.DataFrame, premium: pd.DataFrame | None, interval: str) -> pd.DataFrame:
    """``panel`` (:func:`klines_panel`) plus ``close_premium``: the premium index bar's close of the
    same instrument and ``open_time`` (the perpetual's premium over the index, a fraction; NaN where
    no premium bar exists: never filled from another bar)."""
    if premium is None or premium.empty:
        return panel.assign(**{PREMIUM_COLUMN: np.nan})
    bars = klines_panel(premium, interval)[["open_time", "instrument", "close"]]
    bars = bars.rename(columns={"close": PREMIUM_COLUMN}).drop_duplicates(["open_time", "instrument"])
    out = panel.drop(columns=[PREMIUM_COLUMN], errors="ignore").merge(
        bars, on=["open_time", "instrument"], how="left"
    )
    return out.sort_values(["open_time", "instrument"], kind="stable").reset_index(drop=True)


def time_column(df: pd.DataFrame) -> str:
    for col in TIME_COLUMNS:
        if col in df.columns:
            return col
    raise KeyError(f"no time column {TIME_COLUMNS} in {list(df.columns)[:10]}")


def build_features(
    panel: pd.DataFrame, feature_map: FeatureMapConfig, *, time_col: str | None = None
) -> pd.DataFrame:
    """Long panel (pool_history or klines_panel) -> ``[time, (date,) instrument, features...]``."""
    return compute_features(panel, feature_map, time_col=time_col or time_column(panel))


def build_labels(
    panel: pd.DataFrame, label_map: LabelMapConfig, *, time_col: str | None = None
) -> pd.DataFrame:
    """Long panel -> ``[time, (date,) instrument, label, label__end, ..., label_end]``."""
    return compute_labels(panel, label_map, time_col=time_col or time_column(panel))


def required_lookback(
    feature_map: FeatureMapConfig, models: ModelsConfig | None = None, tolerance: float = 1e-6
) -> int:
    """Rows (days or bars) of history to load before the first partition row so that features
    and history-based predictions equal their full-history values within ``tolerance``."""
    need = feature_lookback(feature_map, tolerance)
    for fam in models.families.values() if models else []:
        for spec in fam.estimators.values():
            hl = spec.params.get("halflife")
            if getattr(spec.estimator_class, "uses_history", False) and hl is not None:
                need = max(need, ewm_memory(halflife_rows(hl), tolerance))
    return need


# --------------------------------------------------------------------------------------------
# Fitting, prediction, cross-validation
# --------------------------------------------------------------------------------------------


def label_info(label: str, label_map: LabelMapConfig | None) -> LabelInfo:
    if label_map is not None:
        return label_map.label(label)
    m = _LABEL_RE.match(label)
    if m is None:
        raise ValueError(f"cannot parse label {label!r}: pass label_map=")
    task = "classification" if m["kind"] in ("cls", "sl") else "regression"
    return LabelInfo(label, m["family"], m["family"], int(m["h"]), 0, task)


def feature_columns(features: pd.DataFrame) -> list[str]:
    return [c for c in features.columns if c not in KEY_COLUMNS]


def join_features_labels(features: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Features and labels side by side, sorted by time then instrument."""
    tcol = time_column(features)
    keys = [tcol, "instrument"]
    extra = [c for c in labels.columns if c not in KEY_COLUMNS]
    if len(features) == len(labels) and all(
        features[k].reset_index(drop=True).equals(labels[k].reset_index(drop=True)) for k in keys
    ):
        out = pd.concat([features.reset_index(drop=True), labels[extra].reset_index(drop=True)], axis=1)
    else:
        out = features.merge(labels[keys + extra], on=keys, how="inner")
    return out.sort_values(keys, kind="stable").reset_index(drop=True)


def _pick(
    models: ModelsConfig, labels: pd.DataFrame, label: str | None, label_map: LabelMapConfig | None
) -> LabelInfo:
    if label is None:
        cands = [c for c in labels.columns if c.endswith("__end") is False and f"{c}__end" in labels.columns]
        cands = [c for c in cands if label_info(c, label_map).family in models.families]
        if not cands:
            raise ValueError(f"no label column of a family in models ({sorted(models.families)})")
        label = cands[0]
    return label_info(label, label_map)


def _as_of(ts: pd.Timestamp | str, like: pd.Series) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    tz = getattr(like.dtype, "tz", None)
    if tz is not None and ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts


def head_length(keep: np.ndarray) -> int | None:
    """``n`` when ``keep`` selects exactly the first ``n`` rows, else None."""
    n = int(keep.sum())
    return n if keep[:n].all() else None


def rows_where(data: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    """``data[keep]`` with a fresh index; a slice (no copy) when ``keep`` is a prefix, as a time
    cut-off is on rows sorted by time (:func:`join_features_labels`)."""
    n = head_length(keep)
    return data.iloc[:n] if n is not None else data[keep].reset_index(drop=True)


def known_mask(data: pd.DataFrame, info: LabelInfo, as_of: pd.Timestamp | str) -> np.ndarray:
    """The joined rows whose label ``info`` ended strictly before ``as_of``: what a model stored for
    ``as_of`` may learn from, and what its CV scores."""
    end = data[info.end_col]
    return np.asarray(
        end.array < _as_of(as_of, end)
    )  # on the array: a Series comparison builds a Series first


def known_rows(data: pd.DataFrame, info: LabelInfo, as_of: pd.Timestamp | str) -> pd.DataFrame:
    """The rows of :func:`known_mask`."""
    return rows_where(data, known_mask(data, info, as_of))


def fit_model(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    models: ModelsConfig,
    as_of: pd.Timestamp | str,
    *,
    label: str | None = None,
    estimator: str | None = None,
    label_map: LabelMapConfig | None = None,
    joined: pd.DataFrame | None = None,
) -> FittedModel:
    """Train one estimator on one label with the rows whose label ended strictly before ``as_of``
    (so the model stored for day D never saw an outcome known after D). Defaults: the first label
    of a configured family, and that family's primary estimator; ``estimator="naive"`` is the
    label's naive baseline. ``joined``: :func:`join_features_labels` of the two, when already made."""
    info = _pick(models, labels, label, label_map)
    name = estimator or models.family(info.family).primary_name
    data = joined if joined is not None else join_features_labels(features, labels)
    return fit_known(known_rows(data, info, as_of), info, name, models, list(features.columns), as_of)


def fit_known(
    train: pd.DataFrame,
    info: LabelInfo,
    name: str,
    models: ModelsConfig,
    columns: Sequence[str],
    as_of: pd.Timestamp | str,
    designs: FrameDesigns | None = None,
) -> FittedModel:
    """:func:`fit_model` on ``train``, joined rows whose label ended before ``as_of``
    (:func:`known_rows`); ``columns``: the features' columns (keys included). ``designs``: of a
    frame whose first rows ``train`` is (:func:`fit_estimator` on a head of its design)."""
    fam = models.family(info.family)
    spec = _baseline(info, columns) if name == NAIVE else fam.estimators[name]
    features = [c for c in columns if c not in KEY_COLUMNS]
    fit = dict(
        label=info.name,
        family=info.family,
        name=name,
        task=info.task,
        mode=spec.mode or models.mode,
        as_of=pd.Timestamp(_as_of(as_of, train[info.end_col])),
        class_names=list(info.classes) if info.classes else None,
        threads=models.threads,
    )
    y = train[info.name].to_numpy(dtype=np.float64)
    if designs is None:
        return fit_estimator(spec, train, y, source=info.target, feature_columns=features, **fit)  # type: ignore[arg-type]
    template = estimator_template(spec, label=info.name, name=name, task=info.task, source=info.target)
    design = designs.head(spec, template, train, name, features)
    return fit_rows(
        design, template, np.arange(len(train)), y, fresh=functools.partial(spec.build, info.target), **fit
    )  # type: ignore[arg-type]


def fit_models(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    models: ModelsConfig,
    as_of: pd.Timestamp | str,
    *,
    label_map: LabelMapConfig | None = None,
    only_labels: list[str] | None = None,
    only_estimators: list[str] | None = None,
    naive_for: list[str] | None = None,
) -> dict[str, FittedModel]:
    """Every (label, estimator) pair of matching task, keyed ``"{label}/{estimator}"`` (or only the
    given labels / estimators), plus the naive baseline (``"{label}/naive"``) of the labels ``naive_for``."""
    return fit_models_joined(
        join_features_labels(features, labels),
        list(features.columns),
        list(labels.columns),
        models,
        as_of,
        label_map=label_map,
        only_labels=only_labels,
        only_estimators=only_estimators,
        naive_for=naive_for,
    )


def fit_models_joined(
    joined: pd.DataFrame,
    columns: Sequence[str],
    label_columns: Sequence[str],
    models: ModelsConfig,
    as_of: pd.Timestamp | str,
    *,
    label_map: LabelMapConfig | None = None,
    only_labels: list[str] | None = None,
    only_estimators: list[str] | None = None,
    naive_for: list[str] | None = None,
    designs: FrameDesigns | None = None,
) -> dict[str, FittedModel]:
    """:func:`fit_models` on :func:`join_features_labels` of the features (``columns``) and the labels
    (``label_columns``): each label's training rows are cut once, for all its estimators.
    ``designs``: of a frame whose first rows ``joined`` is (see :func:`fit_known`)."""
    out: dict[str, FittedModel] = {}
    for col in label_columns:
        if f"{col}__end" not in label_columns or (only_labels is not None and col not in only_labels):
            continue
        info = label_info(col, label_map)
        if info.family not in models.families:
            continue
        names = list(
            only_estimators if only_estimators is not None else models.families[info.family].estimators
        )
        train, heads = None, None
        for name in [*names, NAIVE] if col in (naive_for or []) and NAIVE not in names else names:
            spec = (
                _baseline(info, columns) if name == NAIVE else models.families[info.family].estimators[name]
            )
            if is_classifier(spec.build(info.target)) != (info.task == "classification"):
                continue
            if train is None:
                keep = known_mask(joined, info, as_of)
                train, heads = rows_where(joined, keep), designs if head_length(keep) is not None else None
            out[f"{col}/{name}"] = fit_known(train, info, name, models, columns, as_of, heads)
    return out


def _rows_for_date(
    fitted: FittedModel, features: pd.DataFrame, date: pd.Timestamp | str | None
) -> tuple[pd.DataFrame, np.ndarray]:
    tcol = time_column(features)
    feats = features.sort_values([tcol, "instrument"], kind="stable").reset_index(drop=True)
    when = feats[tcol].max() if date is None else _as_of(date, feats[tcol])
    upto = feats[feats[tcol] <= when] if fitted.uses_history else feats[feats[tcol] == when]
    rows = np.flatnonzero((upto[tcol] == when).to_numpy())
    return upto.reset_index(drop=True), rows


def predict(fitted: FittedModel, features: pd.DataFrame, date: pd.Timestamp | str | None = None) -> pd.Series:
    """Predictions at ``date`` (default: the latest time in ``features``), indexed by instrument.
    History estimators (EWM predictor) also read the earlier rows of ``features``."""
    frame, rows = _rows_for_date(fitted, features, date)
    pred = fitted.predict(frame)[rows]
    if fitted.task == "classification":
        pred = pred.astype(float)
    return pd.Series(
        pred, index=pd.Index(frame["instrument"].to_numpy()[rows], name="instrument"), name=fitted.label
    )


def predict_proba(
    fitted: FittedModel, features: pd.DataFrame, date: pd.Timestamp | str | None = None
) -> pd.DataFrame:
    """Class probabilities at ``date``: index instrument, one column per class name."""
    frame, rows = _rows_for_date(fitted, features, date)
    proba = fitted.predict_proba(frame)[rows]
    assert fitted.classes is not None
    names = fitted.class_names or [str(c) for c in fitted.classes]
    cols = [names[c] if c < len(names) else str(c) for c in fitted.classes]
    return pd.DataFrame(
        proba, index=pd.Index(frame["instrument"].to_numpy()[rows], name="instrument"), columns=cols
    )


@dataclass
class CVResult:
    scores: (
        pd.DataFrame
    )  # label, estimator, fold ('0'.. or 'all'), instrument (or 'all'), metric, model, baseline, n
    importances: pd.DataFrame  # label, estimator, fold, instrument, feature, class, kind, value
    #: label, estimator (incl. naive), fold, metric, score, n, coverage, test_start, test_end (times of its test rows)
    folds: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: :meth:`summary`, when made with ``folds`` from the same scores (:func:`cross_validate`)
    overall: pd.DataFrame | None = field(default=None, repr=False)

    def summary(self) -> pd.DataFrame:
        """Overall out-of-sample scores (fold 'all'): one row per label, estimator, metric, with the
        naive baseline's score on the same rows and the estimator's coverage."""
        if self.overall is not None:
            return self.overall.copy()
        f = self.folds
        if f.empty:
            return pd.DataFrame(columns=SUMMARY_COLUMNS)
        over_all = f["fold"].to_numpy() == "all"
        is_naive = f["estimator"].to_numpy() == NAIVE
        label, metric = f["label"].to_numpy(), f["metric"].to_numpy()
        naive, model = np.flatnonzero(over_all & is_naive), np.flatnonzero(over_all & ~is_naive)
        keys = list(zip(label[naive], metric[naive], strict=True))
        if len(set(keys)) < len(keys):  # several baselines of a (label, metric): a row per match, as merged
            base = f.iloc[naive][["label", "metric", "score"]].rename(columns={"score": "baseline"})
            est = f.iloc[model].rename(columns={"score": "model"})
            return est.merge(base, on=["label", "metric"], how="left")[SUMMARY_COLUMNS].reset_index(drop=True)
        # a left merge on (label, metric) with one baseline per key, made from the columns' arrays
        # (each pandas step on a small frame costs more than the whole table)
        score = f["score"].to_numpy()
        baseline = dict(zip(keys, score[naive], strict=True))
        return pd.DataFrame(
            {
                "label": f["label"].array[model],
                "estimator": f["estimator"].array[model],
                "metric": f["metric"].array[model],
                "model": f["score"].array[model],
                "baseline": np.array(
                    [baseline.get(k, np.nan) for k in zip(label[model], metric[model], strict=True)],
                    dtype=np.float64,
                ),
                "n": f["n"].array[model],
                "coverage": f["coverage"].array[model],
            }
        )


SUMMARY_COLUMNS = ["label", "estimator", "metric", "model", "baseline", "n", "coverage"]
SCORES_COLUMNS = ["label", "estimator", "fold", "instrument", "metric", "model", "baseline", "n"]
SCORES_TYPES = {"model": "float64", "baseline": "float64", "n": "int64"}


@functools.cache
def _no_scores() -> pd.DataFrame:
    """The empty ``CVResult.scores`` (CV without per-instrument scores), made once: copied per CV."""
    return pd.DataFrame(columns=SCORES_COLUMNS).astype(SCORES_TYPES)


def baseline_spec(info: LabelInfo, features: pd.DataFrame) -> EstimatorSpec:
    """Naive benchmark: class priors; today's value for forward means; zero for returns."""
    return _baseline(info, features.columns)


def _baseline(info: LabelInfo, columns: Sequence[str]) -> EstimatorSpec:
    """:func:`baseline_spec` given the features' columns."""
    return _baseline_of(
        info.task, info.name.startswith(f"{info.family}_fwd_") and info.target in columns, info.target
    )


@functools.cache
def _baseline_of(task: str, last_value: bool, target: str) -> EstimatorSpec:
    """The naive spec, validated once (a refit fits one per label; specs are never modified)."""
    if task == "classification":
        return EstimatorSpec(estimator="sklearn.dummy.DummyClassifier", params={"strategy": "prior"})
    if last_value:
        return EstimatorSpec(estimator="last_value", params={"source": target})
    return EstimatorSpec(estimator="midfreq_assets.domain.research.models.ZeroBaseline")


def cross_validate(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    models: ModelsConfig,
    *,
    label: str | None = None,
    estimators: list[str] | None = None,
    label_map: LabelMapConfig | None = None,
    per_instrument: bool = True,
) -> CVResult:
    """Purged walk-forward CV (``models.cv``) of the family's estimators on one label.

    Every estimator and the naive baseline are tested on the same folds: ``folds`` scores every
    candidate (the baseline as ``naive``) per fold on the rows they all predict; with
    ``per_instrument``, ``scores`` also holds each estimator against the baseline per instrument."""
    info = _pick(models, labels, label, label_map)
    embargo = cv_embargo(info, models, label_map)
    return cross_validate_joined(
        join_features_labels(features, labels),
        list(features.columns),
        info,
        models,
        embargo,
        estimators=estimators,
        per_instrument=per_instrument,
    )


def cv_embargo(info: LabelInfo, models: ModelsConfig, label_map: LabelMapConfig | None) -> int:
    """``models.cv.embargo`` (default: the longest horizon + lag); refused when shorter than ``info``'s."""
    max_h = label_map.max_horizon() if label_map is not None else info.horizon + info.lag
    embargo = models.cv.embargo if models.cv.embargo is not None else max_h
    if embargo < info.horizon + info.lag:
        raise ValueError(
            f"cv.embargo={embargo} is shorter than the horizon+lag {info.horizon + info.lag} of {info.name}"
        )
    return embargo


def cross_validate_joined(
    data: pd.DataFrame,
    columns: Sequence[str],
    info: LabelInfo,
    models: ModelsConfig,
    embargo: int,
    *,
    estimators: list[str] | None = None,
    per_instrument: bool = True,
    designs: FrameDesigns | None = None,
) -> CVResult:
    """:func:`cross_validate` on ``data``, :func:`join_features_labels` of the features (``columns``)
    and the labels, with the embargo :func:`cv_embargo` checked. ``designs``: of a frame whose first
    rows ``data`` is (the estimators read heads of its designs)."""
    design_of = designs.head if designs is not None else spec_design
    fam = models.family(info.family)
    time_col = time_column(data)  # the features' (labels bring no time column of their own)
    y = data[info.name].to_numpy(dtype=np.float64)
    classes = sorted(int(c) for c in np.unique(y[~np.isnan(y)])) if info.task == "classification" else None
    splits = cv_splits(data, time_col, info.end_col, models.cv, embargo)
    common = dict(
        label=info.name,
        family=info.family,
        task=info.task,
        source=info.target,
        feature_columns=[c for c in columns if c not in KEY_COLUMNS],
        class_names=list(info.classes) if info.classes else None,
        threads=models.threads,
    )
    baseline = oos_on_design(
        design_of,
        data,
        splits,
        _baseline(info, columns),
        NAIVE,
        y=y,
        classes=classes,
        mode=models.mode,
        **common,
    )
    instruments = data["instrument"].to_numpy() if per_instrument else np.array([])
    scores, imps, candidates = [], [], []
    for name in estimators or list(fam.estimators):
        spec = fam.estimators[name]
        oos = oos_on_design(
            design_of, data, splits, spec, name, y=y, classes=classes, mode=spec.mode or models.mode, **common
        )
        candidates.append(oos)
        if per_instrument:
            scores.append(
                vs_baseline_scores(oos, baseline, y, instruments, info.task, classes).assign(
                    label=info.name, estimator=name
                )
            )
        if not oos.importances.empty:
            imps.append(oos.importances.assign(label=info.name, estimator=name))
    out = (
        pd.concat(scores, ignore_index=True)[SCORES_COLUMNS].astype(SCORES_TYPES)
        if scores
        else _no_scores().copy()
    )
    rows = candidate_score_rows([*candidates, baseline], y, info.task, classes)
    return CVResult(
        out,
        pd.concat(imps, ignore_index=True) if imps else pd.DataFrame(),
        _fold_table(info.name, rows, [*candidates, baseline], y, info.task, classes, data[time_col], splits),
        _summary_table(info.name, rows),
    )


def _summary_table(label: str, rows: list[tuple]) -> pd.DataFrame | None:
    """:meth:`CVResult.summary` of one label's score rows (``SCORE_COLUMNS``), made from them;
    None when there is no model row (the empty summary keeps the fold table's column types)."""
    baseline = {metric: score for est, fold, metric, score, _, _ in rows if fold == "all" and est == NAIVE}
    model = [
        (est, metric, score, n, cov)
        for est, fold, metric, score, n, cov in rows
        if fold == "all" and est != NAIVE
    ]
    if not model or len(baseline) < sum(1 for est, fold, *_ in rows if fold == "all" and est == NAIVE):
        return None
    est, metric, score, n, coverage = (list(c) for c in zip(*model, strict=True))
    return pd.DataFrame(
        {
            "label": [label] * len(model),
            "estimator": est,
            "metric": metric,
            "model": np.array(score, dtype=np.float64),
            "baseline": np.array([baseline.get(m, np.nan) for m in metric], dtype=np.float64),
            "n": np.array(n, dtype=np.int64),
            "coverage": np.array(coverage, dtype=np.float64),
        }
    )


def _fold_table(
    label: str,
    rows: list[tuple],
    candidates: list[OOSPredictions],
    y: np.ndarray,
    task: str,
    classes: list[int] | None,
    times: pd.Series,
    splits: list[Split],
) -> pd.DataFrame:
    """``CVResult.folds``: :func:`candidate_scores` (``rows``: its rows) with the label and each
    fold's first and last test time, made as one table from its columns."""
    columns = ["label", *SCORE_COLUMNS, "test_start", "test_end"]
    if not rows:  # the empty table of candidate_scores, with the columns added as they were before
        spans = fold_spans(times, splits)
        folds = candidate_scores(candidates, y, task, classes).assign(label=label)
        folds["test_start"] = folds["fold"].map(lambda f: spans[f][0])
        folds["test_end"] = folds["fold"].map(lambda f: spans[f][1])
        return folds[columns]
    spans = fold_span_rows(times, splits)
    t = pd.DatetimeIndex(times)
    table: dict[str, object] = {"label": [label] * len(rows)}
    table.update({c: list(v) for c, v in zip(SCORE_COLUMNS, zip(*rows, strict=True), strict=True)})
    table["test_start"] = t.take([spans[f][0] for f in table["fold"]]).array  # type: ignore[attr-defined]
    table["test_end"] = t.take([spans[f][1] for f in table["fold"]]).array  # type: ignore[attr-defined]
    return pd.DataFrame(table)
