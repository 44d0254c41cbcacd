"""What a vault's research needs from the data: history lengths, inputs and the model it trades on."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd

from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.ingest.pool_history import usable_rows
from midfreq_assets.domain.ingest.universe import universe_pairs
from midfreq_assets.domain.research.features import FeatureMapConfig, ewm_memory
from midfreq_assets.domain.research.labels import LabelMapConfig
from midfreq_assets.domain.research.models import ModelsConfig, halflife_rows


def needs_adjusted(vault: VaultConfig) -> bool:
    """True when a label family targets, or a feature reads, ``adjusted_apy``."""
    targets = {spec.target or fam for fam, spec in vault.label_map.families.items()}
    return "adjusted_apy" in targets or "adjusted_apy" in vault.feature_map.columns


#: Columns of ``pool_metadata`` a feature map may read (categories), beside the universe flag.
METADATA_COLUMNS = ("project", "chain")


def needs_metadata(feature_map: FeatureMapConfig) -> bool:
    """True when features read the universe (cross sections) or ``pool_metadata`` columns (categories)."""
    return bool(feature_map.categories) or any(
        spec.expansions.cross_section for spec in feature_map.columns.values()
    )


def with_universe(
    panel: pd.DataFrame, metadata: pd.DataFrame, vault_name: str, universe_column: str
) -> pd.DataFrame:
    """``panel`` rows with ``universe_column`` (in the vault's universe that day) and each pool's
    ``project`` / ``chain`` as known that day (carried forward from its last ``pool_metadata`` row)."""
    keys = pd.MultiIndex.from_arrays(
        [pd.to_datetime(panel["date"]).dt.normalize(), panel["pool"].astype(str)]
    )
    out = panel.assign(**{universe_column: keys.isin(universe_pairs(metadata, vault_name))})
    cols = [c for c in METADATA_COLUMNS if c in metadata.columns]
    if not cols:
        return out
    meta = metadata[["date", "pool", *cols]].assign(
        date=lambda d: pd.to_datetime(d["date"]).dt.normalize(), pool=lambda d: d["pool"].astype(str)
    )
    meta = meta.drop_duplicates(["date", "pool"], keep="last")
    out = out.drop(columns=cols, errors="ignore").assign(pool=lambda d: d["pool"].astype(str))
    out = out.merge(meta, on=["date", "pool"], how="left").sort_values(["pool", "date"], kind="stable")
    out[cols] = out.groupby("pool", sort=False)[cols].ffill()
    return out.sort_values(["date", "pool"], kind="stable").reset_index(drop=True)


def history_lookback(models: ModelsConfig, tolerance: float = 1e-6) -> int:
    """Rows of feature history a history estimator (EWM predictor) reads before the predicted row."""
    need = 0
    for fam in models.families.values():
        for spec in fam.estimators.values():
            hl = spec.params.get("halflife")
            if getattr(spec.estimator_class, "uses_history", False) and hl is not None:
                need = max(need, ewm_memory(halflife_rows(hl), tolerance))
    return need


def traded_label(label_map: LabelMapConfig, family: str = "apy") -> str:
    """The label the nightly decision (and, by default, the backtest) trades: the family's first
    regression label. Its model is the one each refit selects (``ModelBundle.selection``)."""
    labels = [i.name for i in label_map.labels() if i.family == family and i.task == "regression"]
    if not labels:
        raise ValueError(f"label_map defines no regression label of family {family!r}")
    return labels[0]


def selected_labels(label_map: LabelMapConfig, models: ModelsConfig) -> list[str]:
    """Every label with configured models: each gets a CV and a selected model at every refit."""
    return [i.name for i in label_map.labels() if i.family in models.families]


def first_monday(day: dt.date) -> dt.date:
    """The first Monday on or after ``day`` (refits happen on Mondays, UTC)."""
    return day + dt.timedelta(days=(7 - day.weekday()) % 7)


def refit_dates(first_fit: dt.date, last: dt.date, every_weeks: int) -> pd.DatetimeIndex:
    """The refit calendar shared by production and the backtest: every ``every_weeks`` Mondays from
    the first Monday on or after ``first_fit``, up to ``last``."""
    start = first_monday(first_fit)
    return pd.date_range(pd.Timestamp(start), pd.Timestamp(last), freq=f"{7 * every_weeks}D")


def refit_as_of(week: dt.date, first_fit: dt.date, every_weeks: int) -> pd.Timestamp:
    """The as_of a weekly partition's models are trained at: the latest refit date on or before its
    Monday (the Monday itself when refitting every week)."""
    start = first_monday(first_fit)
    weeks = max((week - start).days // 7, 0)
    return pd.Timestamp(start + dt.timedelta(weeks=weeks - weeks % every_weeks))


def warmup_rows(label_map: LabelMapConfig, models: ModelsConfig) -> int:
    """Rows (days or bars) before a first model can be trained: the longest label plus min_train."""
    return label_map.max_horizon() + models.cv.min_train


def first_fit_day(vault: VaultConfig) -> dt.date:
    return vault.start_date + dt.timedelta(days=warmup_rows(vault.label_map, vault.models))


def merge_adjusted(
    pool_history: pd.DataFrame, adjusted: pd.DataFrame | None, columns: Sequence[str], how: str
) -> pd.DataFrame:
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
        adj = (
            adjusted[["date", "pool", *cols]]
            if len(adjusted)
            else pd.DataFrame(
                {
                    "date": pd.Series(dtype="datetime64[ns]"),
                    "pool": pd.Series(dtype=object),
                    **{c: pd.Series(dtype=float) for c in cols},
                }
            )
        )
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
