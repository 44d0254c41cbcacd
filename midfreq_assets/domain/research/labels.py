"""Labels: what the models learn to predict, one per horizon, each with the time it ends at.

YAML shape (section ``label_map``; label family -> spec)::

    label_map:
      apy:                      # family name (models are configured under the same key)
        kind: forward_mean      # yields: mean of target over the next h rows (days)
        target: apy             # column predicted: apy | adjusted_apy (default: the family name)
        horizons: [7, 30]       # a scalar is accepted (dotted override label_map.apy.horizons: 10)
        lag: 0
      close:
        kind: log_return        # prices: log(close[t+lag+h] / close[t+lag])
        horizons: [24]
        lag: 1                  # execution lag in bars
        buckets:                # optional classes by z-score; sigma is an EWM std known at t
          thresholds: [-2, -0.5, 0.5, 2]
          names: [big_down, down, flat, up, big_up]
          sigma_halflife: 168

Label columns: ``{family}_fwd_{h}`` (forward_mean), ``{family}_ret_{h}`` and, with buckets,
``{family}_cls_{h}`` (class codes 0..K as floats, NaN when unknown). Every label ``L`` has
``L__end`` = time of row t+lag+h, and ``label_end`` is the latest end in the row: a training row
is usable at time T only if its end is before T.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BeforeValidator, Field, NonNegativeInt, PositiveInt, model_validator

from midfreq_assets.domain.config.base import StrictModel
from midfreq_assets.domain.research.features import PanelIndex, _listify

IntList = Annotated[list[PositiveInt], BeforeValidator(_listify)]
Task = Literal["regression", "classification"]


class BucketSpec(StrictModel):
    thresholds: list[float] = Field(default_factory=lambda: [-2.0, -0.5, 0.5, 2.0], min_length=1)
    names: list[str] | None = None
    sigma_halflife: PositiveInt = Field(default=30, description="EWM halflife (bars) of the 1-bar return std")

    @model_validator(mode="after")
    def _check(self) -> BucketSpec:
        t = self.thresholds
        if any(b <= a for a, b in zip(t, t[1:], strict=False)):
            raise ValueError(f"thresholds must be strictly increasing (got {t})")
        if self.names is not None and len(self.names) != len(t) + 1:
            raise ValueError(f"names needs {len(t) + 1} entries for {len(t)} thresholds (got {len(self.names)})")
        return self

    def class_names(self) -> list[str]:
        return self.names or [f"class_{i}" for i in range(len(self.thresholds) + 1)]


class LabelSpec(StrictModel):
    kind: Literal["forward_mean", "log_return"] = "forward_mean"
    target: str | None = Field(default=None, description="column predicted (apy | adjusted_apy | close ...)")
    horizons: IntList = Field(default_factory=lambda: [7, 30], min_length=1)
    lag: NonNegativeInt = 0
    buckets: BucketSpec | None = None

    @model_validator(mode="after")
    def _buckets_need_returns(self) -> LabelSpec:
        if self.buckets is not None and self.kind != "log_return":
            raise ValueError("buckets apply to kind: log_return only")
        return self


@dataclass(frozen=True)
class LabelInfo:
    name: str
    family: str
    target: str
    horizon: int
    lag: int
    task: Task
    classes: tuple[str, ...] | None = None

    @property
    def end_col(self) -> str:
        return f"{self.name}__end"


class LabelMapConfig(StrictModel):
    """Label family -> spec. Accepts the plain YAML mapping (see module doc)."""

    families: dict[str, LabelSpec] = Field(default_factory=lambda: {"apy": LabelSpec()})

    @model_validator(mode="before")
    @classmethod
    def _wrap_mapping(cls, data: Any) -> Any:
        if isinstance(data, dict) and data and set(data) != {"families"}:
            return {"families": data}
        return data

    @model_validator(mode="after")
    def _not_empty(self) -> LabelMapConfig:
        if not self.families:
            raise ValueError("label_map needs at least one family")
        return self

    def labels(self) -> list[LabelInfo]:
        out: list[LabelInfo] = []
        for family, spec in self.families.items():
            target = spec.target or family
            for h in spec.horizons:
                if spec.kind == "forward_mean":
                    out.append(LabelInfo(f"{family}_fwd_{h}", family, target, h, spec.lag, "regression"))
                else:
                    out.append(LabelInfo(f"{family}_ret_{h}", family, target, h, spec.lag, "regression"))
                    if spec.buckets is not None:
                        names = tuple(spec.buckets.class_names())
                        out.append(
                            LabelInfo(f"{family}_cls_{h}", family, target, h, spec.lag, "classification", names)
                        )
        return out

    def label(self, name: str) -> LabelInfo:
        for info in self.labels():
            if info.name == name:
                return info
        raise KeyError(f"unknown label {name!r}; label_map defines {[i.name for i in self.labels()]}")

    def max_horizon(self) -> int:
        return max(i.horizon + i.lag for i in self.labels())


DEFAULT_LABEL_MAP = LabelMapConfig()


def _end_times(times: pd.Index, steps: int) -> np.ndarray:
    """Time of row position + steps on the grid, extrapolated past its end with the last step."""
    t = np.asarray(pd.DatetimeIndex(times).as_unit("ns").asi8)
    pos = np.arange(len(t)) + steps
    step = (t[-1] - t[-2]) if len(t) > 1 else 86_400 * 10**9
    inside = pos < len(t)
    out = np.where(inside, t[np.minimum(pos, len(t) - 1)], t[-1] + (pos - len(t) + 1) * step)
    return out


def compute_labels_wide(
    label_map: LabelMapConfig, wide: dict[str, pd.DataFrame]
) -> dict[str, pd.DataFrame]:
    """Label values as wide frames (index time, columns instrument)."""
    out: dict[str, pd.DataFrame] = {}
    for info in label_map.labels():
        if info.target not in wide:
            raise KeyError(f"label {info.name} needs column {info.target!r}; panel has {sorted(wide)}")
        x = wide[info.target]
        spec = label_map.families[info.family]
        h, lag = info.horizon, info.lag
        if spec.kind == "forward_mean":
            out[info.name] = x.rolling(h).mean().shift(-h - lag)
            continue
        logc = np.log(x.where(x > 0))
        ret = logc.shift(-(lag + h)) - logc.shift(-lag)
        if info.task == "regression":
            out[info.name] = ret
            continue
        assert spec.buckets is not None
        # sigma known at t: EWM std of past 1-bar returns, scaled to h bars
        sigma1 = (logc - logc.shift(1)).ewm(
            halflife=spec.buckets.sigma_halflife, min_periods=spec.buckets.sigma_halflife
        ).std()
        z = ret / (sigma1 * np.sqrt(h)).where(sigma1 > 0)
        codes = np.digitize(z.to_numpy(), spec.buckets.thresholds).astype(np.float64)
        codes[np.isnan(z.to_numpy())] = np.nan
        out[info.name] = pd.DataFrame(codes, index=x.index, columns=x.columns)
    return out


def compute_labels(
    panel: pd.DataFrame,
    label_map: LabelMapConfig,
    *,
    time_col: str = "date",
    instrument_col: str | None = None,
) -> pd.DataFrame:
    """Long panel -> long labels ``[time_col, (date,) instrument, L, L__end ..., label_end]``."""
    idx = PanelIndex.from_long(panel, time_col, instrument_col)
    targets = {i.target for i in label_map.labels()}
    wide = {c: idx.wide(panel[c]) for c in targets if c in panel.columns}
    values = compute_labels_wide(label_map, wide)
    order = idx.order()
    ti, ii = idx.ti[order], idx.ii[order]
    time_values = panel[time_col].to_numpy()[order]
    data: dict[str, Any] = {time_col: time_values}
    if time_col != "date" and "date" in panel.columns:
        data["date"] = panel["date"].to_numpy()[order]
    data["instrument"] = panel[idx.instrument_col].iloc[order].reset_index(drop=True)
    tz = getattr(panel[time_col].dtype, "tz", None)
    latest = np.full(len(ti), np.iinfo(np.int64).min)
    for info in label_map.labels():
        data[info.name] = values[info.name].to_numpy()[ti, ii]
        end = _end_times(idx.times, info.lag + info.horizon)[ti]
        latest = np.maximum(latest, end)
        data[info.end_col] = _as_time(end, tz)
    data["label_end"] = _as_time(latest, tz)
    return pd.DataFrame(data)


def _as_time(ns: np.ndarray, tz: Any) -> pd.DatetimeIndex:
    out = pd.DatetimeIndex(ns.astype("datetime64[ns]"))
    return out.tz_localize("UTC").tz_convert(tz) if tz is not None else out


