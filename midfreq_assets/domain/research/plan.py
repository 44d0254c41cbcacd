"""What a vault's research needs from the data: history lengths, inputs and the model it trades on."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd

from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.ingest.pool_history import usable_rows
from midfreq_assets.domain.research.features import ewm_memory
from midfreq_assets.domain.research.labels import LabelMapConfig
from midfreq_assets.domain.research.models import ModelsConfig, halflife_rows


def needs_adjusted(vault: VaultConfig) -> bool:
    """True when a label family targets, or a feature reads, ``adjusted_apy``."""
    targets = {spec.target or fam for fam, spec in vault.label_map.families.items()}
    return "adjusted_apy" in targets or "adjusted_apy" in vault.feature_map.columns


def history_lookback(models: ModelsConfig, tolerance: float = 1e-6) -> int:
    """Rows of feature history a history estimator (EWM predictor) reads before the predicted row."""
    need = 0
    for fam in models.families.values():
        for spec in fam.estimators.values():
            hl = spec.params.get("halflife")
            if getattr(spec.estimator_class, "uses_history", False) and hl is not None:
                need = max(need, ewm_memory(halflife_rows(hl), tolerance))
    return need


def primary_key(label_map: LabelMapConfig, models: ModelsConfig, family: str = "apy") -> tuple[str, str]:
    """(label, estimator) the nightly decision uses: the family's first regression label and its
    primary estimator (the backtest's defaults)."""
    label = next(i.name for i in label_map.labels() if i.family == family and i.task == "regression")
    return label, models.family(family).primary_name


def warmup_rows(label_map: LabelMapConfig, models: ModelsConfig) -> int:
    """Rows (days or bars) before a first model can be trained: the longest label plus min_train."""
    return label_map.max_horizon() + models.cv.min_train


def first_fit_day(vault: VaultConfig) -> dt.date:
    return vault.start_date + dt.timedelta(days=warmup_rows(vault.label_map, vault.models))


def merge_adjusted(pool_history: pd.DataFrame, adjusted: pd.DataFrame | None, columns: Sequence[str],
                   how: str) -> pd.DataFrame:
    """``pool_history`` rows with ``columns`` of ``adjusted_yields`` merged on (date, pool), sorted, date
    normalized: the one merge of the research panel and the backtest panel (``how``: ``inner`` keeps the
    rows ``adjusted`` has, ``left`` every history row). ``adjusted`` None: history only. Only usable
    rows: the ones flagged implausible at ingestion are dropped."""
    pool_history = usable_rows(pool_history)
    if pool_history.empty:
        return pool_history
    panel = pool_history.assign(date=pd.to_datetime(pool_history["date"]).dt.normalize())
    if adjusted is not None:
        cols = [c for c in columns if c in adjusted] if len(adjusted) else list(columns)
        adj = adjusted[["date", "pool", *cols]] if len(adjusted) else pd.DataFrame(
            {"date": pd.Series(dtype="datetime64[ns]"), "pool": pd.Series(dtype=object),
             **{c: pd.Series(dtype=float) for c in cols}})
        adj = adj.assign(date=pd.to_datetime(adj["date"]).dt.normalize())
        panel = panel.drop(columns=cols, errors="ignore").merge(adj, on=["date", "pool"], how=how)
    return panel.sort_values(["date", "pool"], kind="stable").reset_index(drop=True)


def yield_panel(pool_history: pd.DataFrame, adjusted: pd.DataFrame | None = None) -> pd.DataFrame:
    """The research panel: ``pool_history`` rows, and given ``adjusted`` (the vault's
    ``adjusted_yields``) only the rows it has, with their ``adjusted_apy``: the pools of the vault's
    universe (an ETH vault never studies USD pools), row by row so a partition's rows do not depend
    on the range it was computed in. Empty when the vault has no pool."""
    return merge_adjusted(pool_history, adjusted, ["adjusted_apy"], "inner")


def in_window(frame: pd.DataFrame, first: dt.date, last: dt.date) -> pd.DataFrame:
    """Rows whose ``date`` falls in ``first..last`` (inclusive)."""
    if frame.empty:
        return frame
    day = pd.to_datetime(frame["date"]).dt.normalize()
    return frame[(day >= pd.Timestamp(first)) & (day <= pd.Timestamp(last))].reset_index(drop=True)
