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
        stop_limit:             # optional: did a long entered at close[t+lag] hit take-profit before
          take_profit: 2.0      # stop-loss within the horizon? (the original's stop_limit label)
          stop_loss: 1.0
          units: sigma          # sigma (x causal EWM std of 1-bar returns x sqrt(h)) | log_return
          sigma_halflife: 168
          high: high            # bar extremes checked against the barriers (null: closes only)
          low: low

Label columns: ``{family}_fwd_{h}`` (forward_mean), ``{family}_ret_{h}`` and, with buckets,
``{family}_cls_{h}`` (class codes 0..K as floats, NaN when unknown), with stop_limit
``{family}_sl_{h}`` (codes 0 = stop-loss hit first, 1 = neither within the horizon, 2 =
take-profit hit first). Every label ``L`` has ``L__end`` = time of row t+lag+h (for ``_sl_``: of
the bar that touched a barrier, when one did: the outcome is known then), and ``label_end`` is the
latest end in the row: a training row is usable at time T only if its end is before T.
"""

from __future__ import annotations

import functools
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
            raise ValueError(
                f"names needs {len(t) + 1} entries for {len(t)} thresholds (got {len(self.names)})"
            )
        return self

    def class_names(self) -> list[str]:
        return self.names or [f"class_{i}" for i in range(len(self.thresholds) + 1)]


class StopLimitSpec(StrictModel):
    """Barriers of the ``stop_limit`` label, as log returns from the entry close (both > 0)."""

    take_profit: float = Field(gt=0, description="upper barrier (log return, or sigma multiple)")
    stop_loss: float = Field(
        gt=0, description="lower barrier, below the entry (log return, or sigma multiple)"
    )
    units: Literal["sigma", "log_return"] = "sigma"
    sigma_halflife: PositiveInt = Field(default=30, description="EWM halflife (bars) of the 1-bar return std")
    high: str | None = Field(default="high", description="bar high checked against take-profit (null: close)")
    low: str | None = Field(default="low", description="bar low checked against stop-loss (null: close)")
    names: list[str] = Field(default_factory=lambda: list(STOP_LIMIT_CLASSES), min_length=3, max_length=3)


#: Outcome classes of a stop_limit label, in code order.
STOP_LIMIT_CLASSES = ("stop_loss", "horizon", "take_profit")


class LabelSpec(StrictModel):
    kind: Literal["forward_mean", "log_return"] = "forward_mean"
    target: str | None = Field(default=None, description="column predicted (apy | adjusted_apy | close ...)")
    horizons: IntList = Field(default_factory=lambda: [7, 30], min_length=1)
    lag: NonNegativeInt = 0
    buckets: BucketSpec | None = None
    stop_limit: StopLimitSpec | None = None

    @model_validator(mode="after")
    def _buckets_need_returns(self) -> LabelSpec:
        if self.buckets is not None and self.kind != "log_return":
            raise ValueError("buckets apply to kind: log_return only")
        if self.stop_limit is not None and self.kind != "log_return":
            raise ValueError("stop_limit applies to kind: log_return only")
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
                            LabelInfo(
                                f"{family}_cls_{h}", family, target, h, spec.lag, "classification", names
                            )
                        )
                    if spec.stop_limit is not None:
                        out.append(
                            LabelInfo(
                                f"{family}_sl_{h}",
                                family,
                                target,
                                h,
                                spec.lag,
                                "classification",
                                tuple(spec.stop_limit.names),
                            )
                        )
        return out

    def raw_columns(self) -> list[str]:
        """Panel columns the labels read (targets and the bar extremes of stop_limit labels)."""
        cols = [i.target for i in self.labels()]
        for spec in self.families.values():
            if spec.stop_limit is not None:
                cols += [c for c in (spec.stop_limit.high, spec.stop_limit.low) if c]
        return list(dict.fromkeys(cols))

    def label(self, name: str) -> LabelInfo:
        for info in self.labels():
            if info.name == name:
                return info
        raise KeyError(f"unknown label {name!r}; label_map defines {[i.name for i in self.labels()]}")

    def max_horizon(self) -> int:
        return max(i.horizon + i.lag for i in self.labels())


DEFAULT_LABEL_MAP = LabelMapConfig()


def _end_times_at(times: pd.Index, rows: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Time of grid position ``rows + steps`` per row (extrapolated past the end with the last step)."""
    t = np.asarray(pd.DatetimeIndex(times).as_unit("ns").asi8)
    pos = rows + steps
    step = (t[-1] - t[-2]) if len(t) > 1 else 86_400 * 10**9
    return np.where(pos < len(t), t[np.minimum(pos, len(t) - 1)], t[-1] + (pos - len(t) + 1) * step)


def _end_times(times: pd.Index, steps: int) -> np.ndarray:
    """Time of row position + steps on the grid, extrapolated past its end with the last step."""
    t = np.asarray(pd.DatetimeIndex(times).as_unit("ns").asi8)
    pos = np.arange(len(t)) + steps
    step = (t[-1] - t[-2]) if len(t) > 1 else 86_400 * 10**9
    inside = pos < len(t)
    out = np.where(inside, t[np.minimum(pos, len(t) - 1)], t[-1] + (pos - len(t) + 1) * step)
    return out


def _sigma1(logc: pd.DataFrame, halflife: int) -> pd.DataFrame:
    """Std of 1-bar log returns known at t: their EWM std over past bars."""
    return (logc - logc.shift(1)).ewm(halflife=halflife, min_periods=halflife).std()


def stop_limit_outcome(
    logc: pd.DataFrame,
    log_high: pd.DataFrame,
    log_low: pd.DataFrame,
    up: pd.DataFrame,
    down: pd.DataFrame,
    horizon: int,
    lag: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Which barrier a long entered at ``close[t+lag]`` touches first within ``horizon`` bars.

    ``up``/``down``: the barrier distances (log returns > 0) known at t. Returns (codes: 0
    stop-loss first, 1 neither by the horizon, 2 take-profit first, NaN when unknown; steps: bars
    after the entry to the touch, or the horizon). A bar reaching both barriers counts as a stop
    (its path inside the bar is unknown: the pessimistic reading). Vectorized over the panel;
    the loop runs over the horizon's bars only.
    """
    entry = logc.shift(-lag).to_numpy()
    hi, lo = log_high.to_numpy(), log_low.to_numpy()
    tp, sl = up.to_numpy(), down.to_numpy()
    n = entry.shape[0]
    codes = np.full(entry.shape, np.nan)
    steps = np.full(entry.shape, float(horizon))
    open_ = np.isfinite(entry) & np.isfinite(tp) & np.isfinite(sl)
    for j in range(1, horizon + 1):
        shift = lag + j
        bar_hi = np.full(entry.shape, np.nan)
        bar_lo = np.full(entry.shape, np.nan)
        if shift < n:
            bar_hi[: n - shift] = hi[shift:]
            bar_lo[: n - shift] = lo[shift:]
        stop = open_ & (bar_lo - entry <= -sl)
        take = open_ & ~stop & (bar_hi - entry >= tp)
        codes[stop], codes[take] = 0.0, 2.0
        steps[stop | take] = j
        open_ &= ~(stop | take)
    # neither barrier by the horizon: known once the horizon's close exists
    last = logc.shift(-(lag + horizon)).to_numpy()
    codes[open_ & np.isfinite(last)] = 1.0
    return codes, steps


def compute_labels_wide(label_map: LabelMapConfig, wide: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Label values as wide frames (index time, columns instrument). ``{family}_sl_{h}`` labels
    also give ``{name}__steps`` (bars from the entry to the outcome) for their end times."""
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
        if info.name.endswith(f"_sl_{h}") and spec.stop_limit is not None:
            out[info.name], out[f"{info.name}__steps"] = _stop_limit(spec.stop_limit, logc, wide, info)
            continue
        assert spec.buckets is not None
        # sigma known at t: EWM std of past 1-bar returns, scaled to h bars
        sigma1 = _sigma1(logc, spec.buckets.sigma_halflife)
        z = ret / (sigma1 * np.sqrt(h)).where(sigma1 > 0)
        codes = np.digitize(z.to_numpy(), spec.buckets.thresholds).astype(np.float64)
        codes[np.isnan(z.to_numpy())] = np.nan
        out[info.name] = pd.DataFrame(codes, index=x.index, columns=x.columns)
    return out


def _stop_limit(
    sl: StopLimitSpec, logc: pd.DataFrame, wide: dict[str, pd.DataFrame], info: LabelInfo
) -> tuple[pd.DataFrame, pd.DataFrame]:
    def extreme(col: str | None) -> pd.DataFrame:
        if col is None:
            return logc
        if col not in wide:
            raise KeyError(f"label {info.name} needs column {col!r}; panel has {sorted(wide)}")
        return np.log(wide[col].where(wide[col] > 0))

    if sl.units == "sigma":
        scale = _sigma1(logc, sl.sigma_halflife) * np.sqrt(info.horizon)
        up, down = scale * sl.take_profit, scale * sl.stop_loss
    else:
        up = pd.DataFrame(sl.take_profit, index=logc.index, columns=logc.columns)
        down = pd.DataFrame(sl.stop_loss, index=logc.index, columns=logc.columns)
    codes, steps = stop_limit_outcome(
        logc, extreme(sl.high), extreme(sl.low), up, down, info.horizon, info.lag
    )
    frame = functools.partial(pd.DataFrame, index=logc.index, columns=logc.columns)
    return frame(codes), frame(steps)


def compute_labels(
    panel: pd.DataFrame,
    label_map: LabelMapConfig,
    *,
    time_col: str = "date",
    instrument_col: str | None = None,
) -> pd.DataFrame:
    """Long panel -> long labels ``[time_col, (date,) instrument, L, L__end ..., label_end]``."""
    idx = PanelIndex.from_long(panel, time_col, instrument_col)
    wide = {c: idx.wide(panel[c]) for c in label_map.raw_columns() if c in panel.columns}
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
        steps = values.get(f"{info.name}__steps")
        if steps is None:
            end = _end_times(idx.times, info.lag + info.horizon)[ti]
        else:  # the bar that decided the outcome
            offset = info.lag + steps.to_numpy()[ti, ii].astype(np.int64)
            end = _end_times_at(idx.times, ti, offset)
        latest = np.maximum(latest, end)
        data[info.end_col] = _as_time(end, tz)
    data["label_end"] = _as_time(latest, tz)
    return pd.DataFrame(data)


def _as_time(ns: np.ndarray, tz: Any) -> pd.DatetimeIndex:
    out = pd.DatetimeIndex(ns.astype("datetime64[ns]"))
    return out.tz_localize("UTC").tz_convert(tz) if tz is not None else out
