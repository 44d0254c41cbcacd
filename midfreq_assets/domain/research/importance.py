"""Feature importance as a picture: what the fitted models lean on."""

from __future__ import annotations

import base64
import io

import pandas as pd

from midfreq_assets.domain.research.models import FittedModel


def importance_table(fitted: dict[str, FittedModel], importances: pd.DataFrame) -> pd.DataFrame:
    """``[feature, estimator, value]``: the CV importances, or the fitted models' own when no CV ran."""
    if not importances.empty:
        return importances
    rows = [m.importances().assign(model=k) for k, m in fitted.items()]
    rows = [r for r in rows if len(r)]
    if not rows:
        return pd.DataFrame(columns=["feature", "estimator", "value"])
    return pd.concat(rows, ignore_index=True).rename(columns={"model": "estimator"})


def importance_png(fitted: dict[str, FittedModel], importances: pd.DataFrame) -> str | None:
    """Base64 PNG of mean |coefficient| (or importance) per feature, one bar group per model."""
    imp = importance_table(fitted, importances)
    if imp.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = imp.assign(value=imp["value"].abs()).groupby(["feature", "estimator"])["value"].mean().unstack()
    table = table.loc[table.max(axis=1).sort_values().index]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(table) + 1.2))
    table.plot.barh(ax=ax)
    ax.set_xlabel("mean |coefficient| over folds (standardized features)")
    ax.set_title("feature importance")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()
