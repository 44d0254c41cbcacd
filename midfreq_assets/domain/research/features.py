"""Feature engine: raw panel columns -> causal features, vectorized over the whole panel.

Every computation runs on wide frames (index time, columns instrument), so pandas' Cython
``ewm``/``rolling`` kernels do the work for all instruments at once: there is no loop over
instruments. Every feature at time t uses only rows at or before t.

YAML shape (section ``feature_map`` of a vault or research config; raw column -> spec)::

    feature_map:
      apy:                          # a raw column of the long panel
        transform: as_is            # as_is | log | compound | arctanh
        expansions:
          level: true               # emit the transformed value itself (column "apy")
          ewma:                     # EWM mean, halflife w (days for daily data, bars for klines)
            windows: [3, 7, 30]
            weight: null            # optional raw column v: EWM(x*v) / EWM(v)
            normalize: zscore       # zscore (over a rolling norm_mult*w window) | rank | none
            norm_mult: 5
          cross_ewma: [[3, 30]]     # EWM(a) - EWM(b), normalized over norm_mult*max(a, b); true = all pairs
          hvol:                     # EWM std of k-step log increments, z-scored (or ranked)
            increments: [1]
            halflives: [7]
            weight_by: null         # optional raw column v: v-weighted EWM std (e.g. volume)
            normalize: zscore       # zscore | rank (rolling percentile over norm_mult*h) | none
          min: [7, 30]              # rolling min over lags [0,7), [7,30)
          max: [7, 30]
          change: [1, 7, 30]        # x_t - x_{t-k} (of a log column: log change, e.g. TVL flows)
          deviation: [90]           # x_t - its own rolling mean over w rows (distance from the long-run mean)
          cross_section: [rank, zscore]   # position in the day's universe: percentile rank, z-score
      taker_buy_volume:
        transform: arctanh          # arctanh(clip(2*taker_buy_volume/volume - 1)), denominator `volume`
        volume: volume
      reward_share:
        source: apy_reward          # the raw column read (default: the key)
        transform: ratio            # apy_reward / apy: the reward share of the yield
        over: apy
        fill_missing: 0.0           # DefiLlama's apyReward is null when a pool pays no reward
      categories: [project, chain]  # string columns carried as they are (categorical features)
      universe_column: eligible     # cross sections rank among the rows flagged here (all rows without it)

Feature names: ``{col}`` (level of as_is) or ``{col}__{transform}``, ``{col}__ewma_{w}``,
``{col}__xewma_{a}_{b}``, ``{col}__hvol_{k}_{h}``, ``{col}__min_{a}_{b}``, ``{col}__max_{a}_{b}``,
``{col}__chg_{k}``, ``{col}__dev_{w}``, ``{col}__xs_rank``, ``{col}__xs_z``; categories keep their name.

Partition stability: EWMs have infinite memory, so a feature computed from a window of history
equals the full-history value up to the EWM weight left outside the window;
:func:`required_lookback` sizes the window so that this weight is below ``tolerance``.
``compound`` levels depend on the first row loaded, so only scale-free expansions
(normalized ewma/cross_ewma, hvol) are allowed on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BeforeValidator, Field, PositiveInt, field_validator, model_validator
from scipy.signal import lfilter

from midfreq_assets.domain.config.base import StrictModel
from midfreq_assets.domain.units import DAYS_PER_YEAR

LOG_FLOOR = 1e-32
FEATURE_THREADS = 2  # the machines this runs on have 2 cores; more threads only contend
ARCTANH_EPS = 1e-8
INSTRUMENT_COLUMNS = ("instrument", "pool", "symbol")


def _listify(value: Any) -> Any:
    """Accept a scalar where a list is expected (dotted overrides like ``...windows: 7``)."""
    if value is None or isinstance(value, list | tuple):
        return value
    return [value]


IntList = Annotated[list[PositiveInt], BeforeValidator(_listify)]


class EwmaSpec(StrictModel):
    windows: IntList = Field(min_length=1, description="EWM halflives (days or bars)")
    weight: str | None = Field(default=None, description="raw column v for EWM(x*v)/EWM(v)")
    normalize: Literal["zscore", "rank", "none"] = "zscore"
    norm_mult: PositiveInt = Field(default=5, description="normalization window = norm_mult * w")


class HvolSpec(StrictModel):
    increments: IntList = Field(default_factory=lambda: [1], min_length=1)
    halflives: IntList = Field(min_length=1)
    weight_by: str | None = Field(default=None, description="raw column v: sqrt(EWM_v(d^2) - EWM_v(d)^2)")
    normalize: Literal["zscore", "rank", "none"] = "zscore"
    norm_mult: PositiveInt = 5


class Expansions(StrictModel):
    level: bool = False
    ewma: EwmaSpec | None = None
    cross_ewma: bool | list[tuple[PositiveInt, PositiveInt]] = False
    hvol: HvolSpec | None = None
    min: IntList = Field(default_factory=list)
    max: IntList = Field(default_factory=list)
    change: IntList = Field(default_factory=list, description="x_t - x_{t-k} for each k (rows)")
    deviation: IntList = Field(default_factory=list, description="x_t - rolling mean over w rows for each w")
    cross_section: list[Literal["rank", "zscore"]] = Field(
        default_factory=list, description="percentile rank / z-score among the instruments of the same time"
    )

    @field_validator("min", "max")
    @classmethod
    def _increasing(cls, ladder: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(ladder, ladder[1:], strict=False)):
            raise ValueError(f"window ladder must be strictly increasing (got {ladder})")
        return ladder

    @model_validator(mode="after")
    def _cross_needs_windows(self) -> Expansions:
        if self.cross_ewma is True and (self.ewma is None or len(self.ewma.windows) < 2):
            raise ValueError("cross_ewma: true needs an ewma block with at least two windows")
        if isinstance(self.cross_ewma, list) and any(a == b for a, b in self.cross_ewma):
            raise ValueError("cross_ewma pairs need two different windows")
        return self

    def cross_pairs(self) -> list[tuple[int, int]]:
        if self.cross_ewma is True:
            assert self.ewma is not None
            return [tuple(sorted(p)) for p in combinations(sorted(self.ewma.windows), 2)]  # type: ignore[misc]
        return list(self.cross_ewma) if self.cross_ewma else []


class ColumnSpec(StrictModel):
    source: str | None = Field(
        default=None,
        description="raw panel column read (default: the key); lets two "
        "features derive from one column, e.g. reward level and reward share",
    )
    transform: Literal["as_is", "log", "compound", "arctanh", "ratio"] = "as_is"
    volume: str = Field(default="volume", description="denominator column of the arctanh imbalance")
    over: str | None = Field(default=None, description="denominator column of the ratio transform")
    fill_missing: float | None = Field(
        default=None,
        description="value of a missing cell in a row that exists "
        "(e.g. 0 for a null reward APY); absent rows stay absent",
    )
    expansions: Expansions = Field(default_factory=Expansions)

    @model_validator(mode="after")
    def _ratio_needs_denominator(self) -> ColumnSpec:
        if (self.transform == "ratio") != (self.over is not None):
            raise ValueError(
                "transform: ratio needs `over:` (its denominator column), and `over:` needs transform: ratio"
            )
        return self

    @model_validator(mode="after")
    def _compound_scale_free(self) -> ColumnSpec:
        if self.transform != "compound":
            return self
        e = self.expansions
        bad = []
        if e.level:
            bad.append("level")
        if e.min or e.max:
            bad.append("min/max")
        if e.change or e.deviation or e.cross_section:
            bad.append("change/deviation/cross_section")
        if (e.ewma is not None or e.cross_ewma) and (e.ewma is None or e.ewma.normalize == "none"):
            bad.append("ewma/cross_ewma without normalize")
        if bad:
            raise ValueError(
                "compound levels depend on the first row loaded (not partition-stable); "
                f"use scale-free expansions only, not: {', '.join(bad)}"
            )
        return self


class FeatureMapConfig(StrictModel):
    """Raw column -> transform and expansions. Accepts the plain YAML mapping (see module doc)."""

    columns: dict[str, ColumnSpec] = Field(default_factory=lambda: dict(_default_yield_columns()))
    categories: list[str] = Field(
        default_factory=list, description="string columns carried as categorical features"
    )
    universe_column: str = Field(
        default="eligible",
        description="boolean panel column of the instruments a cross "
        "section ranks among (every instrument present when the panel has no such column)",
    )

    @model_validator(mode="before")
    @classmethod
    def _wrap_mapping(cls, data: Any) -> Any:
        reserved = {"columns", "categories", "universe_column"}
        if isinstance(data, dict) and data and "columns" not in data:
            return {
                "columns": {k: v for k, v in data.items() if k not in reserved},
                **{k: v for k, v in data.items() if k in reserved},
            }
        return data

    @model_validator(mode="after")
    def _not_empty(self) -> FeatureMapConfig:
        if not self.columns:
            raise ValueError("feature_map needs at least one column")
        return self

    def raw_columns(self) -> list[str]:
        """Raw panel columns read (keys, weights, arctanh denominators)."""
        cols: list[str] = []
        for name, spec in self.columns.items():
            cols.append(spec.source or name)
            if spec.transform == "arctanh":
                cols.append(spec.volume)
            if spec.transform == "ratio" and spec.over:
                cols.append(spec.over)
            if spec.expansions.ewma is not None and spec.expansions.ewma.weight:
                cols.append(spec.expansions.ewma.weight)
            if spec.expansions.hvol is not None and spec.expansions.hvol.weight_by:
                cols.append(spec.expansions.hvol.weight_by)
        return list(dict.fromkeys(cols))

    def feature_names(self) -> list[str]:
        return [*(name for name, _ in _feature_plan(self)), *self.categories]


def _default_yield_columns(yield_column: str = "apy") -> dict[str, ColumnSpec]:
    """Default yield feature set of a vault: APY level, trend, range; TVL trend and volatility."""
    return {
        yield_column: ColumnSpec(
            transform="as_is",
            expansions=Expansions(
                level=True,
                ewma=EwmaSpec(windows=[3, 7, 30]),
                cross_ewma=[(3, 30)],
                min=[7, 30],
                max=[7, 30],
            ),
        ),
        "tvl_usd": ColumnSpec(
            transform="log",
            expansions=Expansions(
                ewma=EwmaSpec(windows=[7, 30]), hvol=HvolSpec(increments=[1], halflives=[7])
            ),
        ),
    }


DEFAULT_FEATURE_MAP = FeatureMapConfig()


def yield_feature_map(yield_column: str) -> FeatureMapConfig:
    """The default yield feature set on ``yield_column`` (``adjusted_apy``: what a vault earns)."""
    return FeatureMapConfig(columns=_default_yield_columns(yield_column))


# --------------------------------------------------------------------------------------------
# Panel layout: long rows <-> wide (time x instrument) arrays, by integer codes (no pivot_table)
# --------------------------------------------------------------------------------------------


def instrument_column(df: pd.DataFrame) -> str:
    for col in INSTRUMENT_COLUMNS:
        if col in df.columns:
            return col
    raise KeyError(f"no instrument column: expected one of {INSTRUMENT_COLUMNS}, got {list(df.columns)}")


def time_grid(times: pd.Series | pd.Index) -> pd.DatetimeIndex:
    """The time axis of a panel (:class:`PanelIndex`): its sorted distinct times, completed to every
    calendar day when they are all midnights (windows in days are then windows in rows)."""
    uniq = pd.DatetimeIndex(pd.DatetimeIndex(times).unique()).sort_values()
    if len(uniq) and (uniq == uniq.normalize()).all() and len(uniq) > 1:
        uniq = pd.date_range(uniq[0], uniq[-1], freq="D", unit=uniq.unit)
    return uniq


@dataclass(frozen=True)
class PanelIndex:
    """Row <-> cell mapping of a long panel. Daily data is completed to a full calendar so that
    windows in days are windows in rows; bar data keeps the observed bars (windows in bars)."""

    times: pd.Index
    instruments: pd.Index
    ti: np.ndarray
    ii: np.ndarray
    time_col: str
    instrument_col: str

    @classmethod
    def from_long(
        cls, df: pd.DataFrame, time_col: str = "date", instrument_col: str | None = None
    ) -> PanelIndex:
        instrument_col = instrument_col or instrument_column(df)
        t = pd.DatetimeIndex(df[time_col])
        uniq = time_grid(t)
        ti = uniq.get_indexer(t)
        ii, instruments = pd.factorize(df[instrument_col], sort=True)
        instruments = pd.Index(instruments)
        flat = ti.astype(np.int64) * len(instruments) + ii
        if len(flat) and np.bincount(flat).max() > 1:
            dup = df.loc[pd.Index(flat).duplicated(), [time_col, instrument_col]].head(3)
            raise ValueError(f"panel has duplicate ({time_col}, {instrument_col}) rows, e.g.\n{dup}")
        return cls(uniq, instruments, ti, ii, time_col, instrument_col)

    def order(self) -> np.ndarray:
        """Row order by time then instrument (identity when the input is already sorted)."""
        key = self.ti.astype(np.int64) * len(self.instruments) + self.ii
        if len(key) < 2 or (np.diff(key) > 0).all():
            return np.arange(len(key))
        return np.argsort(key, kind="stable")

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.times), len(self.instruments)

    def wide(self, values: np.ndarray | pd.Series) -> pd.DataFrame:
        arr = np.full(self.shape, np.nan)
        arr[self.ti, self.ii] = np.asarray(values, dtype=np.float64)
        return pd.DataFrame(arr, index=self.times, columns=self.instruments)

    def gather(self, wide: pd.DataFrame | np.ndarray) -> np.ndarray:
        arr = wide.to_numpy() if isinstance(wide, pd.DataFrame) else wide
        return arr[self.ti, self.ii]


# --------------------------------------------------------------------------------------------
# Transforms and expansions on wide frames
# --------------------------------------------------------------------------------------------


def apply_transform(spec: ColumnSpec, col: str, wide: dict[str, pd.DataFrame]) -> pd.DataFrame:
    x = wide[spec.source or col]
    if spec.transform == "as_is":
        return x
    if spec.transform == "log":
        return np.log(x.clip(lower=LOG_FLOOR))
    if spec.transform == "compound":
        ns = pd.DatetimeIndex(x.index).as_unit("ns").asi8
        years = np.diff(ns, prepend=ns[0]) / (86_400e9 * DAYS_PER_YEAR)
        growth = x.mul(years, axis=0).fillna(0.0).cumsum()
        return np.exp(growth).where(x.notna())
    if spec.transform == "ratio":
        assert spec.over is not None
        denominator = wide[spec.over]
        return x / denominator.where(denominator != 0)
    # arctanh of the taker-buy imbalance
    v = wide[spec.volume]
    imbalance = (2.0 * x / v.where(v > 0) - 1.0).clip(-1 + ARCTANH_EPS, 1 - ARCTANH_EPS)
    return np.arctanh(imbalance)


def _window_sums(a: np.ndarray, window: int) -> np.ndarray:
    """Sum over the last ``window`` rows (fewer at the start) of every column."""
    c = np.zeros((a.shape[0] + 1, a.shape[1]))
    np.cumsum(a, axis=0, out=c[1:])
    lo = np.maximum(np.arange(1, a.shape[0] + 1) - window, 0)
    return c[1:] - c[lo]


def rolling_mean_std(x: pd.DataFrame, window: int, min_periods: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rolling mean and std (ddof=1) of every column at once, from cumulative sums (pandas'
    rolling loops over columns in Python, which dominates the cost on wide panels)."""
    a = x.to_numpy(dtype=np.float64)
    valid = ~np.isnan(a)
    # centre each column on its first valid value to keep the sums of squares well conditioned
    ref = np.where(valid.any(axis=0), a[valid.argmax(axis=0), np.arange(a.shape[1])], 0.0)
    v = np.where(valid, a - ref, 0.0)
    n = _window_sums(valid.astype(np.float64), window)
    m1 = _window_sums(v, window)
    m2 = _window_sums(v * v, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = m1 / n
        var = np.maximum(m2 - m1 * mean, 0.0) / (n - 1)
    enough = n >= min_periods
    mean = np.where(enough, mean + ref, np.nan)
    std = np.where(enough & (n > 1), np.sqrt(var), np.nan)
    return (
        pd.DataFrame(mean, index=x.index, columns=x.columns),
        pd.DataFrame(std, index=x.index, columns=x.columns),
    )


def rolling_extreme(x: pd.DataFrame, window: int, kind: str) -> pd.DataFrame:
    """Rolling min/max ignoring NaN (min_periods=1), all columns at once over a strided view."""
    a = x.to_numpy(dtype=np.float64)
    padded = np.vstack([np.full((window - 1, a.shape[1]), np.nan), a])
    view = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)
    ufunc = np.fmin if kind == "min" else np.fmax
    return pd.DataFrame(ufunc.reduce(view, axis=-1), index=x.index, columns=x.columns)


def _normalize(df: pd.DataFrame, how: str, window: int) -> pd.DataFrame:
    if how == "none":
        return df
    min_periods = max(2, window // 2)
    if how == "rank":
        return df.rolling(window, min_periods=min_periods).rank(pct=True)
    mean, std = rolling_mean_std(df, window, min_periods)
    return (df - mean) / std.where(std > 0)


def ewm_mean(x: pd.DataFrame, halflife: float, min_periods: int = 0) -> pd.DataFrame:
    """``x.ewm(halflife, min_periods).mean()`` (adjust=True, NaN-aware) for all columns at once:
    the ratio of two first-order recursive filters, num_t = d*num_{t-1} + x_t and
    den_t = d*den_{t-1} + 1 over observed points (pandas loops over columns in Python)."""
    a = x.to_numpy(dtype=np.float64)
    obs = ~np.isnan(a)
    decay = 0.5 ** (1.0 / halflife)
    num = lfilter([1.0], [1.0, -decay], np.where(obs, a, 0.0), axis=0)
    den = lfilter([1.0], [1.0, -decay], obs.astype(np.float64), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[np.cumsum(obs, axis=0) < max(min_periods, 1)] = np.nan
    return pd.DataFrame(out, index=x.index, columns=x.columns)


def _ewm_mean(x: pd.DataFrame, halflife: int, weight: pd.DataFrame | None) -> pd.DataFrame:
    if weight is None:
        return ewm_mean(x, halflife, halflife)
    w = weight.where(x.notna())
    num = ewm_mean(x * w, halflife, halflife)
    den = ewm_mean(w, halflife, halflife)
    return num / den.where(den > 0)


def _feature_plan(cfg: FeatureMapConfig) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """(feature name, recipe) in output order; shared by naming, lookback and computation."""
    for col, spec in cfg.columns.items():
        e = spec.expansions
        if e.level:
            yield (col if spec.transform == "as_is" else f"{col}__{spec.transform}"), (col, "level")
        if e.ewma is not None:
            for w in e.ewma.windows:
                yield f"{col}__ewma_{w}", (col, "ewma", w)
        for a, b in e.cross_pairs():
            yield f"{col}__xewma_{a}_{b}", (col, "xewma", a, b)
        if e.hvol is not None:
            for k in e.hvol.increments:
                for h in e.hvol.halflives:
                    yield f"{col}__hvol_{k}_{h}", (col, "hvol", k, h)
        for kind in ("min", "max"):
            ladder = getattr(e, kind)
            for a, b in zip([0, *ladder][: len(ladder)], ladder, strict=True):
                yield f"{col}__{kind}_{a}_{b}", (col, kind, a, b)
        for k in e.change:
            yield f"{col}__chg_{k}", (col, "change", k)
        for w in e.deviation:
            yield f"{col}__dev_{w}", (col, "deviation", w)
        for how in e.cross_section:
            yield f"{col}__xs_{'z' if how == 'zscore' else how}", (col, "cross_section", how)


def ewm_memory(halflife: float, tolerance: float) -> int:
    """Rows after which the EWM weight left out is below ``tolerance``: 2**(-n/h) <= tol."""
    return math.ceil(halflife * math.log2(1.0 / tolerance))


def required_lookback(feature_map: FeatureMapConfig, tolerance: float = 1e-6) -> int:
    """Rows (days for daily data, bars for klines) of history to load before the first row whose
    features are wanted, so that they equal the full-history values within ``tolerance``."""
    need = 0
    for _, recipe in _feature_plan(feature_map):
        col, kind = recipe[0], recipe[1]
        spec = feature_map.columns[col]
        if kind == "level":
            n = 0
        elif kind == "ewma":
            assert spec.expansions.ewma is not None
            w = recipe[2]
            norm = 0 if spec.expansions.ewma.normalize == "none" else spec.expansions.ewma.norm_mult * w
            n = ewm_memory(w, tolerance) + norm
        elif kind == "xewma":
            ew = spec.expansions.ewma
            w = max(recipe[2], recipe[3])
            norm = 0 if ew is not None and ew.normalize == "none" else (ew.norm_mult if ew else 5) * w
            n = ewm_memory(w, tolerance) + norm
        elif kind == "hvol":
            hv = spec.expansions.hvol
            assert hv is not None
            k, h = recipe[2], recipe[3]
            n = k + ewm_memory(h, tolerance) + (0 if hv.normalize == "none" else hv.norm_mult * h)
        elif kind in ("change", "deviation"):
            n = recipe[2]
        elif kind == "cross_section":
            n = 0
        else:  # min / max over lags [a, b)
            n = recipe[3]
        need = max(need, n)
    return need


def _hvol(
    y: pd.DataFrame, transform: str, k: int, h: int, weight: pd.DataFrame | None = None
) -> pd.DataFrame:
    """EWM std of k-step log increments; with ``weight`` (e.g. volume) the v-weighted EWM std
    ``sqrt(EWM(v d^2)/EWM(v) - (EWM(v d)/EWM(v))^2)``, so high-volume bars count for more."""
    logy = y if transform in ("log", "arctanh") else np.log(y.clip(lower=LOG_FLOOR))
    inc = logy - logy.shift(k)
    if weight is None:
        return inc.ewm(halflife=h, min_periods=h).std()
    w = weight.where(inc.notna() & (weight > 0))
    den = ewm_mean(w, h, h)
    mean = ewm_mean(inc * w, h, h) / den
    var = ewm_mean(inc * inc * w, h, h) / den - mean * mean
    return np.sqrt(var.clip(lower=0.0)).where(den > 0)


def cross_section(x: pd.DataFrame, how: str, universe: pd.DataFrame | None) -> pd.DataFrame:
    """Each value's position among the instruments of its own time (row) that are in the universe:
    percentile rank in (0, 1] or z-score (NaN outside the universe, or alone in it)."""
    xs = x.where(universe) if universe is not None else x
    if how == "rank":
        return xs.rank(axis=1, pct=True)
    std = xs.std(axis=1)
    return xs.sub(xs.mean(axis=1), axis=0).div(std.where(std > 0), axis=0)


def compute_features_wide(
    feature_map: FeatureMapConfig, wide: dict[str, pd.DataFrame], universe: pd.DataFrame | None = None
) -> dict[str, pd.DataFrame]:
    """All features as wide frames, from raw wide frames (index time, columns instrument);
    ``universe`` (bool, same shape) restricts the cross sections."""
    missing = [c for c in feature_map.raw_columns() if c not in wide]
    if missing:
        raise KeyError(f"feature_map needs raw columns {missing}; panel has {sorted(wide)}")
    transformed = {col: apply_transform(spec, col, wide) for col, spec in feature_map.columns.items()}
    ewm_cache: dict[tuple[str, int], pd.DataFrame] = {}

    def ewm(col: str, w: int) -> pd.DataFrame:
        if (col, w) not in ewm_cache:
            ew = feature_map.columns[col].expansions.ewma
            weight = wide[ew.weight] if ew is not None and ew.weight else None
            ewm_cache[(col, w)] = _ewm_mean(transformed[col], w, weight)
        return ewm_cache[(col, w)]

    def one(recipe: tuple) -> pd.DataFrame:
        col, kind = recipe[0], recipe[1]
        spec = feature_map.columns[col]
        x = transformed[col]
        ew = spec.expansions.ewma
        how, mult = (ew.normalize, ew.norm_mult) if ew is not None else ("zscore", 5)
        if kind == "level":
            return x
        if kind == "ewma":
            return _normalize(ewm(col, recipe[2]), how, mult * recipe[2])
        if kind == "xewma":
            a, b = recipe[2], recipe[3]
            return _normalize(ewm(col, a) - ewm(col, b), how, mult * max(a, b))
        if kind == "hvol":
            hv = spec.expansions.hvol
            assert hv is not None
            k, h = recipe[2], recipe[3]
            weight = wide[hv.weight_by] if hv.weight_by else None
            return _normalize(_hvol(x, spec.transform, k, h, weight), hv.normalize, hv.norm_mult * h)
        if kind == "change":
            return x - x.shift(recipe[2])
        if kind == "deviation":
            w = recipe[2]
            mean, _ = rolling_mean_std(x, w, max(2, w // 2))
            return x - mean
        if kind == "cross_section":
            return cross_section(x, recipe[2], universe)
        a, b = recipe[2], recipe[3]
        return rolling_extreme(x.shift(a) if a else x, b - a, kind)

    plan = list(_feature_plan(feature_map))
    # numpy/scipy release the GIL in the heavy whole-panel kernels: two threads use both cores
    with ThreadPoolExecutor(max_workers=FEATURE_THREADS) as pool:
        frames = list(pool.map(one, [recipe for _, recipe in plan]))
    out = {name: frame for (name, _), frame in zip(plan, frames, strict=True)}
    return out


def compute_features(
    panel: pd.DataFrame,
    feature_map: FeatureMapConfig,
    *,
    time_col: str = "date",
    instrument_col: str | None = None,
) -> pd.DataFrame:
    """Long panel -> long features ``[time_col, (date,) instrument, features...]``, one row per
    input row, sorted by time then instrument."""
    idx = PanelIndex.from_long(panel, time_col, instrument_col)
    missing = [c for c in feature_map.categories if c not in panel.columns]
    if missing:
        raise KeyError(
            f"feature_map.categories needs panel columns {missing}; panel has {sorted(panel.columns)}"
        )
    fills = {
        spec.source or c: spec.fill_missing
        for c, spec in feature_map.columns.items()
        if spec.fill_missing is not None
    }
    wide = {
        c: idx.wide(panel[c].fillna(fills[c]) if c in fills else panel[c])
        for c in feature_map.raw_columns()
        if c in panel.columns
    }
    ucol = feature_map.universe_column
    universe = idx.wide(panel[ucol].astype(bool).astype(float)) > 0 if ucol in panel.columns else None
    feats = compute_features_wide(feature_map, wide, universe)
    order = idx.order()
    ti, ii = idx.ti[order], idx.ii[order]
    n_t, n_i = idx.shape
    block = np.empty((len(order), len(feats)))
    for j, frame in enumerate(feats.values()):
        arr = frame.to_numpy()
        # pandas stores a wide frame column-major: gather from the contiguous transpose (no copy)
        block[:, j] = arr.T.ravel()[ii * n_t + ti] if arr.flags.f_contiguous else arr.ravel()[ti * n_i + ii]
    out = pd.DataFrame(block, columns=list(feats), copy=False)
    for c in feature_map.categories:
        out[c] = panel[c].astype(object).to_numpy()[order]
    out.insert(0, "instrument", panel[idx.instrument_col].iloc[order].reset_index(drop=True))
    if time_col != "date" and "date" in panel.columns:
        out.insert(0, "date", panel["date"].to_numpy()[order])
    out.insert(0, time_col, panel[time_col].to_numpy()[order])
    return out
