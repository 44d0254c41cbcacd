"""The nightly decision of one vault for one day: accrue yesterday's holdings, then rebalance.

``rebalance_weights`` calls :func:`decide_day` for every day of its range, in order, feeding each
day the :class:`CarriedState` the previous day left. The accrual and the decision are the
backtest's own (:func:`~midfreq_assets.domain.portfolio.step.accrue_step`,
:func:`~midfreq_assets.domain.portfolio.step.rebalance_step`), priced by the vault's one
:class:`~midfreq_assets.domain.portfolio.costs.TradingCosts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.portfolio.optimizer import VaultOptimizer, optimizer_for_vault
from midfreq_assets.domain.portfolio.step import StepDecision, accrue_step, rebalance_step
from midfreq_assets.domain.units import DAYS_PER_YEAR, WEEKS_PER_YEAR

#: Weight tolerance of the limit checks.
WEIGHT_TOL = 1e-6
VAULT_COLUMNS = ["wealth", "base_usd", "idle_share", "solver_status", "cost_usd", "gas_usd", "solve_time_s"]
COLUMNS = ["date", "pool", "symbol", "project", "chain", "in_universe", "tvl_usd", "current_weight",
           "target_weight", "trade_usd", "predicted_apy", "dilution_factor", "holding_usd", *VAULT_COLUMNS]


@dataclass(frozen=True)
class CarriedState:
    """What day D-1 left: dollar holdings by pool, the idle base, and each pool's last known TVL."""

    holdings: dict[str, float] = field(default_factory=dict)
    base: float = 0.0
    last_tvl: dict[str, float] = field(default_factory=dict)

    @classmethod
    def cash(cls, wealth: float) -> CarriedState:
        return cls({}, float(wealth), {})

    @classmethod
    def from_rows(cls, rows: pd.DataFrame | None) -> CarriedState | None:
        """The state after a day's trade, from that day's ``rebalance_weights`` rows (None without)."""
        if rows is None or rows.empty:
            return None
        pools = rows[rows["pool"].notna()]
        held = pools[pools["holding_usd"] > 0]
        tvl = pools.dropna(subset=["tvl_usd"])
        return cls(dict(zip(held["pool"], held["holding_usd"].astype(float), strict=True)),
                   float(rows["base_usd"].iloc[0]), dict(zip(tvl["pool"], tvl["tvl_usd"].astype(float), strict=True)))


class OptimizerCache:
    """One :class:`VaultOptimizer` per universe (pools + their project/chain), rebuilt on change."""

    def __init__(self, vault: VaultConfig) -> None:
        self.vault = vault
        self.costs = vault.strategy.costs()
        self.key: tuple | None = None
        self.optimizer: VaultOptimizer | None = None
        self.builds = 0

    def get(self, pools: pd.DataFrame) -> VaultOptimizer:
        key = tuple(map(tuple, pools[["pool", "project", "chain"]].astype(str).to_numpy()))
        if key != self.key or self.optimizer is None:
            self.optimizer = optimizer_for_vault(pools, self.vault.strategy, self.costs)
            self.key = key
            self.builds += 1
        return self.optimizer


def _accrue(state: CarriedState, history: pd.DataFrame) -> tuple[dict[str, float], float]:
    """Holdings of D-1 grown to D with D's realized APY, TVL and IL (the backtest's accrual)."""
    if not state.holdings:
        return {}, state.base
    pools = list(state.holdings)
    hist = history.set_index("pool") if len(history) else pd.DataFrame(columns=["apy", "tvl_usd", "il7d"])
    h = np.array([state.holdings[p] for p in pools])
    apy = hist["apy"].reindex(pools).to_numpy(dtype=float)
    tvl = hist["tvl_usd"].reindex(pools).to_numpy(dtype=float)
    tvl = np.where(np.isfinite(tvl), tvl, [state.last_tvl.get(p, np.nan) for p in pools])
    il = hist["il7d"].reindex(pools).abs().to_numpy(dtype=float) * WEEKS_PER_YEAR if "il7d" in hist else None
    acc = accrue_step(h, state.base, apy, tvl, 1.0 / DAYS_PER_YEAR, il_next=il)
    return dict(zip(pools, acc.holdings, strict=True)), acc.base


def _day_frame(universe: pd.DataFrame, history: pd.DataFrame, holdings: dict[str, float],
               last_tvl: dict[str, float]) -> pd.DataFrame:
    """One row per pool of the day's universe or held: symbol, project, chain, in_universe, tvl_usd."""
    uni = universe.drop_duplicates("pool").set_index("pool") if len(universe) else pd.DataFrame(
        columns=["symbol", "project", "chain", "tvl_usd"])
    frame = pd.DataFrame({"pool": sorted(set(uni.index) | set(holdings))})
    for col in ("symbol", "project", "chain"):
        frame[col] = frame["pool"].map(uni[col]) if col in uni else None
        if col != "symbol":
            frame[col] = frame[col].fillna("")
    frame["in_universe"] = frame["pool"].isin(uni.index)
    hist_tvl = history.drop_duplicates("pool").set_index("pool")["tvl_usd"] if len(history) else pd.Series(dtype=float)
    tvl = frame["pool"].map(uni["tvl_usd"]) if "tvl_usd" in uni else pd.Series(np.nan, index=frame.index)
    frame["tvl_usd"] = tvl.fillna(frame["pool"].map(hist_tvl)).fillna(frame["pool"].map(last_tvl)).astype(float)
    return frame


def decide_day(vault: VaultConfig, day: pd.Timestamp, state: CarriedState | None, cache: OptimizerCache,
               predictions: pd.DataFrame, universe: pd.DataFrame, history: pd.DataFrame
               ) -> tuple[pd.DataFrame, StepDecision | None]:
    """Accrue ``state`` (from D-1; cash at the vault's initial wealth when None) to ``day`` and
    rebalance on the day's predictions and universe; returns the day's rows and the decision."""
    state = state if state is not None else CarriedState.cash(vault.backtest.initial_wealth)
    holdings, base = _accrue(state, history)
    frame = _day_frame(universe, history, holdings, state.last_tvl)
    wealth = sum(holdings.values()) + base
    if frame.empty:
        row = {c: np.nan for c in COLUMNS} | {"date": day, "pool": None, "wealth": wealth, "base_usd": base,
                                                "idle_share": 1.0, "solver_status": "no_universe",
                                                "cost_usd": 0.0, "gas_usd": 0.0, "solve_time_s": 0.0}
        return pd.DataFrame([row])[COLUMNS], None
    pred = predictions.drop_duplicates("pool").set_index("pool")["predicted_apy"] if len(predictions) else pd.Series(
        dtype=float)
    optimizer = cache.get(frame)
    h = np.array([holdings.get(p, 0.0) for p in frame["pool"]])
    dec = rebalance_step(optimizer, frame["pool"].map(pred).to_numpy(dtype=float), frame["tvl_usd"].to_numpy(),
                         wealth, h, costs=cache.costs, eligible=frame["in_universe"].to_numpy(), base=base)
    out = frame.join(dec.to_frame().drop(columns="pool"))
    out.insert(0, "date", day)
    out["wealth"] = dec.wealth_before
    out["base_usd"] = dec.base_after
    out["idle_share"] = dec.base_after / dec.wealth_before
    out["solver_status"] = dec.status
    out["cost_usd"] = dec.cost_usd
    out["gas_usd"] = dec.gas_usd
    out["solve_time_s"] = dec.result.solve_time_s if dec.result is not None else 0.0
    return out[COLUMNS], dec


def decide_range(vault: VaultConfig, days: pd.DatetimeIndex, state: CarriedState | None,
                 predictions: pd.DataFrame, universe: pd.DataFrame, history: pd.DataFrame
                 ) -> tuple[pd.DataFrame, list[StepDecision | None], OptimizerCache]:
    """:func:`decide_day` for each day in order, each starting from the state the day before left."""
    cache = OptimizerCache(vault)
    universe_day, pred_day, hist_day = by_day(universe), by_day(predictions), by_day(history)
    frames, decisions = [], []
    empty = pd.DataFrame()
    for day in days:
        rows, dec = decide_day(vault, day, state, cache, pred_day.get(day, empty), universe_day.get(day, empty),
                               hist_day.get(day, empty))
        frames.append(rows)
        decisions.append(dec)
        state = CarriedState.from_rows(rows)
    out = pd.concat(frames, ignore_index=True)
    out["date"] = pd.to_datetime(out["date"]).astype("datetime64[ns]")
    return out, decisions, cache


def by_day(frame: pd.DataFrame | None) -> dict[pd.Timestamp, pd.DataFrame]:
    """Rows grouped by their UTC day."""
    if frame is None or frame.empty:
        return {}
    day = pd.to_datetime(frame["date"]).dt.normalize()
    return {pd.Timestamp(d): g for d, g in frame.groupby(day.to_numpy())}


def trades_table(day_rows: pd.DataFrame) -> pd.DataFrame:
    """What a desk executes: one line per trade, largest first."""
    t = day_rows[day_rows["trade_usd"].fillna(0).abs() > 0]
    t = t.assign(side=np.where(t["trade_usd"] > 0, "buy", "sell"), usd=t["trade_usd"].abs().round(2),
                 target_weight=t["target_weight"].round(4))
    return t.sort_values("usd", ascending=False)[["symbol", "project", "chain", "side", "usd", "target_weight", "pool"]]


def weight_violations(rows: pd.DataFrame, vault: VaultConfig) -> pd.DataFrame:
    """Days whose weights leave [0, concentration_limit] or whose sum exceeds 1 - base_buffer."""
    s = vault.strategy
    r = rows[rows["pool"].notna()]
    bad_pool = r[(r["target_weight"] < -WEIGHT_TOL) | (r["target_weight"] > s.concentration_limit + WEIGHT_TOL)]
    sums = r.groupby("date")["target_weight"].sum()
    bad_sum = sums[sums > 1 - s.base_buffer + WEIGHT_TOL]
    out = [bad_pool[["date", "pool", "target_weight"]].assign(problem="weight out of bounds")]
    if len(bad_sum):
        out.append(pd.DataFrame({"date": bad_sum.index, "pool": None, "target_weight": bad_sum.to_numpy(),
                                 "problem": "sum above 1 - base_buffer"}))
    return pd.concat(out, ignore_index=True)
