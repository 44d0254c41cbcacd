"""Which model a label is traded with: chosen by out-of-sample evidence, the naive baseline by default.

The candidates are the family's configured estimators and the naive baseline (today's value for a
forward mean, class priors for a class label). Each is scored by the purged walk-forward CV on the
same rows (:func:`~midfreq_assets.domain.research.cross_validation.candidate_scores`); the winner
over all folds is traded, among the models that predict at least ``selection.min_coverage`` of
the labelled rows (a pool without a prediction cannot be held). A model has to beat the baseline to
be used: on a tie, or when no CV could be run yet, the baseline is traded and the note says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from midfreq_assets.domain.research.models import NAIVE, SelectionConfig

#: Metrics where a smaller value is better (the others: larger is better).
LOWER_IS_BETTER = {"mae", "log_loss"}


@dataclass(frozen=True)
class Selection:
    """The traded estimator of one label (``chosen`` is an estimator name or ``naive``) and why."""

    label: str
    chosen: str
    metric: str
    scores: dict[str, float]  # candidate -> score over all folds, on the rows every candidate predicts
    beats_naive: bool
    note: str

    @property
    def model_key(self) -> str:
        return f"{self.label}/{self.chosen}"

    def as_row(self) -> dict[str, object]:
        return {
            "label": self.label,
            "chosen": self.chosen,
            "metric": self.metric,
            "score": self.scores.get(self.chosen, np.nan),
            "naive": self.scores.get(NAIVE, np.nan),
            "beats_naive": self.beats_naive,
            "note": self.note,
        }


def fixed_selection(label: str, estimator: str, note: str) -> Selection:
    """No evidence asked for (``selection.by: fixed``, or an estimator pinned by a backtest)."""
    return Selection(label, estimator, "", {}, estimator != NAIVE, note)


def no_evidence(label: str, reason: str) -> Selection:
    """No CV could be run (too little history): nothing has been shown to beat the baseline."""
    return Selection(label, NAIVE, "", {}, False, f"naive baseline traded: no CV evidence yet ({reason})")


def select_model(folds: pd.DataFrame, label: str, task: str, config: SelectionConfig) -> Selection:
    """The candidate with the best score over all folds (``fold == 'all'``) of ``label``'s CV
    ``folds`` table (``estimator, fold, metric, score``); the baseline unless a model beats it."""
    metric = config.metric(task)
    rows = np.flatnonzero(
        (folds["label"].to_numpy() == label)
        & (folds["fold"].to_numpy() == "all")
        & (folds["metric"].to_numpy() == metric)
    )  # numpy: a small table, no frame per filter
    estimators = folds["estimator"].to_numpy()[rows]
    scores = {str(e): float(v) for e, v in zip(estimators, folds["score"].to_numpy()[rows], strict=True)}
    coverage = {str(e): float(c) for e, c in zip(estimators, folds["coverage"].to_numpy()[rows], strict=True)}
    if NAIVE not in scores or not np.isfinite(scores[NAIVE]):
        return no_evidence(label, "the baseline has no out-of-sample score")
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    models = {
        e: v
        for e, v in scores.items()
        if e != NAIVE and np.isfinite(v) and coverage[e] >= config.min_coverage
    }
    if not models:
        return Selection(
            label,
            NAIVE,
            metric,
            scores,
            False,
            "naive baseline traded: no model has an out-of-sample "
            f"score on at least {config.min_coverage:.0%} of the labelled rows",
        )
    best = min(models, key=lambda e: sign * models[e])
    if sign * models[best] < sign * scores[NAIVE]:
        note = f"{best} beats the naive baseline out of sample ({metric} {models[best]:.4g} vs {scores[NAIVE]:.4g})"
        return Selection(label, best, metric, scores, True, note)
    note = (
        f"naive baseline traded: no model beats it out of sample (best {best}: {metric} {models[best]:.4g} "
        f"vs naive {scores[NAIVE]:.4g})"
    )
    return Selection(label, NAIVE, metric, scores, False, note)


def selection_table(selections: dict[str, Selection]) -> pd.DataFrame:
    return pd.DataFrame(
        [s.as_row() for s in selections.values()],
        columns=["label", "chosen", "metric", "score", "naive", "beats_naive", "note"],
    )
