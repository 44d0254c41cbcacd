"""FROZEN COPY (for benchmarks/bench_nightly.py): ``domain/portfolio/nightly.py`` before the vault book
(issue 22), the per-day pandas implementation ``decide_range`` replaced. Not imported by the package.

The nightly decision of one vault for one day: accrue yesterday's holdings, then rebalance.

``rebalance_weights`` calls :func:`decide_day` for every day of its range, in order, feeding each
day the :class:`CarriedState` the previous day left. The accrual and the decision are the
backtest's own (:func:`~midfreq_assets.domain.portfolio.step.accrue_step`,
:func:`~midfreq_assets.domain.portfolio.step.rebalance_step`), priced by the vault's one
:class:`~midfreq_assets.domain.portfolio.costs.TradingCosts`: holdings earn the vault's earned
yield (``backtest.apy_column``, adjusted_apy by default: IL inside, counted once) plus their legs'
price move, the idle base earns ``backtest.base_rate``. A held pool missing from the day's data
keeps its holding for up to ``strategy.max_gap_days`` days, accruing at its last known yield.
Amounts (wealth, holdings, TVL, trades, costs; the ``*_usd`` columns) are in the vault's reference
asset: TVLs and the strategy's dollar gas are divided by its USD price that day (``reference_price``).

A live vault hands :func:`decide_day` its real holdings of the day (``observed``, from
``<vault>/vault_positions``): the decision starts from them instead of the accrued state, and the
accrued state becomes what was *expected* (yesterday's target after accrual), kept per pool in
``expected_usd`` for the reconciliation (``domain.portfolio.reconcile``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.portfolio.optimizer import VaultOptimizer, optimizer_for_vault
from midfreq_assets.domain.portfolio.step import StepDecision, accrue_step, rebalance_step
from midfreq_assets.domain.units import DAYS_PER_YEAR

#: Weight tolerance of the limit checks.
WEIGHT_TOL = 1e-6
#: The components of adjusted_apy our own size does not dilute (as the backtest's UNDILUTED_COLUMNS).
UNDILUTED = ("underlying_apy", "peg_yield", "il_annual")
VAULT_COLUMNS = [
    "wealth",
    "base_usd",
    "idle_share",
    "solver_status",
    "cost_usd",
    "gas_usd",
    "solve_time_s",
    "reference_price",
    "positions_source",
    "expected_base_usd",
    "observed_base_usd",
]
#: ``positions_source`` values: the day started from the vault's real positions, or from the carried
#: simulated state (yesterday's target accrued; cash at the configured wealth on the first day).
FROM_POSITIONS, FROM_SIMULATION = "vault_positions", "simulated"
COLUMNS = [
    "date",
    "pool",
    "symbol",
    "project",
    "chain",
    "in_universe",
    "reported",
    "in_gap",
    "last_seen",
    "tvl_usd",
    "current_weight",
    "target_weight",
    "trade_usd",
    "predicted_apy",
    "earned_apy",
    "undiluted_apy",
    "il_apy",
    "price_return",
    "dilution_factor",
    "holding_usd",
    "expected_usd",
    *VAULT_COLUMNS,
]
#: Real holdings of a day (USD value per pool) and its idle cash (USD): converted with the day's
#: reference price.
Observed = tuple[dict[str, float], float]


@dataclass(frozen=True)
class CarriedState:
    """What day D-1 left: dollar holdings by pool, the idle base, each pool's last known TVL, and per
    held pool the last day it had data and the yield it last earned (earned, undiluted part, IL)."""

    holdings: dict[str, float] = field(default_factory=dict)
    base: float = 0.0
    last_tvl: dict[str, float] = field(default_factory=dict)
    last_seen: dict[str, pd.Timestamp] = field(default_factory=dict)
    last_yield: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    reference_price: float = 1.0  # USD price of the reference asset on the last day it was known

    @classmethod
    def cash(cls, wealth: float) -> CarriedState:
        return cls({}, float(wealth), {})

    @classmethod
    def from_rows(cls, rows: pd.DataFrame | None) -> CarriedState | None:
        """The state after a day's trade, from that day's ``rebalance_weights`` rows (None without)."""
        if rows is None or rows.empty:
            return None
        rows = rows.reindex(
            columns=list(dict.fromkeys([*COLUMNS, *rows.columns]))
        )  # older partitions lack some
        pools = rows[rows["pool"].notna()]
        held = pools[pools["holding_usd"] > 0]
        tvl = pools.dropna(subset=["tvl_usd"])
        seen = held.dropna(subset=["last_seen"])
        yields = held[["earned_apy", "undiluted_apy", "il_apy"]].astype(float).to_numpy()
        ref = float(rows["reference_price"].iloc[0])
        return cls(
            dict(zip(held["pool"], held["holding_usd"].astype(float), strict=True)),
            float(rows["base_usd"].iloc[0]),
            dict(zip(tvl["pool"], tvl["tvl_usd"].astype(float), strict=True)),
            {p: pd.Timestamp(d) for p, d in zip(seen["pool"], seen["last_seen"], strict=True)},
            {p: tuple(map(float, y)) for p, y in zip(held["pool"], yields, strict=True)},
            ref if np.isfinite(ref) and ref > 0 else 1.0,
        )


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


def _earned_today(
    vault: VaultConfig, pools: list[str], history: pd.DataFrame, adjusted: pd.DataFrame
) -> pd.DataFrame:
    """Per pool: the yield earned into the day (``backtest.apy_column``), its undiluted part, its IL
    and the legs' price move; NaN yields where the pool has no data that day."""
    frame = pd.DataFrame(index=pd.Index(pools, name="pool"))
    adj = adjusted.drop_duplicates("pool").set_index("pool") if len(adjusted) else pd.DataFrame()
    if vault.backtest.apy_column == "adjusted_apy":
        frame["earned"] = adj["adjusted_apy"].reindex(pools) if "adjusted_apy" in adj else np.nan
        parts = [adj[c].reindex(pools).fillna(0.0) for c in UNDILUTED if c in adj]
        frame["undiluted"] = sum(parts) if parts else 0.0
        frame["il"] = adj["il_annual"].reindex(pools).fillna(0.0) if "il_annual" in adj else 0.0
    else:
        hist = history.drop_duplicates("pool").set_index("pool") if len(history) else pd.DataFrame()
        frame["earned"] = hist["apy"].reindex(pools) if "apy" in hist else np.nan
        frame["undiluted"] = 0.0
        frame["il"] = 0.0
    frame["price_return"] = adj["price_return"].reindex(pools).fillna(0.0) if "price_return" in adj else 0.0
    frame[["undiluted", "il"]] = frame[["undiluted", "il"]].where(frame["earned"].notna())
    return frame.astype(float)


def reference_price(vault: VaultConfig, adjusted: pd.DataFrame, carried: float) -> float:
    """The reference asset's USD price on the day (1 for a USD vault; the last known one without rows)."""
    if vault.reference_asset == "usd":
        return 1.0
    known = adjusted["reference_price"].dropna() if "reference_price" in adjusted else pd.Series(dtype=float)
    return float(known.iloc[0]) if len(known) else carried


def _accrue(
    vault: VaultConfig,
    day: pd.Timestamp,
    state: CarriedState,
    history: pd.DataFrame,
    adjusted: pd.DataFrame,
    ref: float,
) -> tuple[dict[str, float], float, pd.DataFrame]:
    """Holdings of D-1 grown to D (the backtest's accrual); per held pool what it earned, whether it
    reported that day, and whether it is in a data gap short enough to keep."""
    pools = list(state.holdings)
    reported = set(history["pool"]) if len(history) else set()
    earned = _earned_today(vault, pools, history, adjusted)
    info = earned.assign(reported=[p in reported for p in pools])
    age = pd.Series([(day - state.last_seen.get(p, day)).days for p in pools], index=info.index, dtype=float)
    info["in_gap"] = ~info["reported"] & (age <= vault.strategy.max_gap_days)
    carry = info["in_gap"] & info["earned"].isna()
    last = pd.DataFrame(
        [state.last_yield.get(p, (np.nan, 0.0, 0.0)) for p in pools],
        index=info.index,
        columns=["earned", "undiluted", "il"],
        dtype=float,
    )
    info.loc[carry, ["earned", "undiluted", "il"]] = last.loc[carry]
    info["last_seen"] = [day if p in reported else state.last_seen.get(p, pd.NaT) for p in pools]
    hist = (
        history.drop_duplicates("pool").set_index("pool")
        if len(history)
        else pd.DataFrame(columns=["tvl_usd"])
    )
    h = np.array([state.holdings[p] for p in pools], dtype=float)
    tvl = hist["tvl_usd"].reindex(pools).to_numpy(dtype=float) / ref
    tvl = np.where(np.isfinite(tvl), tvl, [state.last_tvl.get(p, np.nan) for p in pools])
    acc = accrue_step(
        h,
        state.base,
        info["earned"].to_numpy(),
        tvl,
        1.0 / DAYS_PER_YEAR,
        undiluted_next=info["undiluted"].to_numpy(),
        il_next=info["il"].to_numpy(),
        price_return_next=info["price_return"].to_numpy(),
        base_rate=vault.backtest.base_rate,
    )
    return dict(zip(pools, acc.holdings, strict=True)), acc.base, info


def _day_frame(
    universe: pd.DataFrame,
    history: pd.DataFrame,
    holdings: dict[str, float],
    last_tvl: dict[str, float],
    ref: float,
) -> pd.DataFrame:
    """One row per pool of the day's universe or held: symbol, project, chain, in_universe, tvl_usd
    (in the reference asset: the USD TVL over ``ref``; the last known one when missing)."""
    uni = (
        universe.drop_duplicates("pool").set_index("pool")
        if len(universe)
        else pd.DataFrame(columns=["symbol", "project", "chain", "tvl_usd"])
    )
    frame = pd.DataFrame({"pool": sorted(set(uni.index) | set(holdings))})
    for col in ("symbol", "project", "chain"):
        frame[col] = frame["pool"].map(uni[col]) if col in uni else None
        if col != "symbol":
            frame[col] = frame[col].fillna("")
    frame["in_universe"] = frame["pool"].isin(uni.index)
    hist_tvl = (
        history.drop_duplicates("pool").set_index("pool")["tvl_usd"]
        if len(history)
        else pd.Series(dtype=float)
    )
    tvl = frame["pool"].map(uni["tvl_usd"]) if "tvl_usd" in uni else pd.Series(np.nan, index=frame.index)
    frame["tvl_usd"] = (
        (tvl.fillna(frame["pool"].map(hist_tvl)) / ref).fillna(frame["pool"].map(last_tvl)).astype(float)
    )
    return frame


def _start_of_day(
    vault: VaultConfig,
    day: pd.Timestamp,
    state: CarriedState | None,
    history: pd.DataFrame,
    adjusted: pd.DataFrame,
    observed: Observed | None,
) -> tuple[float, dict[str, float], float, pd.DataFrame, dict[str, float] | None, float]:
    """The reference price, the holdings and base the day decides from, the per-pool accrual info,
    and what the accrued state expected (holdings, base; None without a previous state)."""
    prior = state if state is not None else CarriedState.cash(vault.backtest.initial_wealth)
    ref = reference_price(vault, adjusted, prior.reference_price)
    expected: dict[str, float] | None = None
    expected_base = np.nan
    if state is None:  # the vault starts on this day: its configured wealth in cash, or its real positions
        holdings, base, info = {}, prior.base, _accrue(vault, day, prior, history, adjusted, ref)[2]
    else:
        holdings, base, info = _accrue(vault, day, state, history, adjusted, ref)
        expected, expected_base = dict(holdings), base
    if observed is not None:
        holdings = {p: float(v) / ref for p, v in observed[0].items()}
        base = float(observed[1]) / ref
        real = CarriedState(holdings, base, prior.last_tvl, prior.last_seen, prior.last_yield, ref)
        info = _accrue(vault, day, real, history, adjusted, ref)[2]
    return ref, holdings, base, info, expected, expected_base


def decide_day(
    vault: VaultConfig,
    day: pd.Timestamp,
    state: CarriedState | None,
    cache: OptimizerCache,
    predictions: pd.DataFrame,
    universe: pd.DataFrame,
    history: pd.DataFrame,
    adjusted: pd.DataFrame | None = None,
    observed: Observed | None = None,
) -> tuple[pd.DataFrame, StepDecision | None]:
    """Accrue ``state`` (from D-1; cash at the vault's initial wealth when None) to ``day`` and
    rebalance on the day's predictions and universe; returns the day's rows and the decision.

    ``history`` and ``adjusted`` are the day's ``pool_history`` and ``<vault>/adjusted_yields`` rows.
    ``observed`` (the vault's real holdings and cash of the day, USD) replaces the
    accrued state as the starting point; the accrued state is then kept as ``expected_usd``."""
    adjusted = adjusted if adjusted is not None else pd.DataFrame()
    ref, holdings, base, info, expected, expected_base = _start_of_day(
        vault, day, state, history, adjusted, observed
    )
    last_tvl = state.last_tvl if state is not None else {}
    listed = holdings | {p: 0.0 for p in (expected or {}) if p not in holdings}
    frame = _day_frame(universe, history, listed, last_tvl, ref)
    wealth = sum(holdings.values()) + base
    source = FROM_POSITIONS if observed is not None else FROM_SIMULATION
    vault_values = {
        "reference_price": ref,
        "positions_source": source,
        "expected_base_usd": expected_base,
        "observed_base_usd": base if observed is not None else np.nan,
    }
    if frame.empty:
        row = {c: np.nan for c in COLUMNS} | {
            "date": day,
            "pool": None,
            "wealth": wealth,
            "base_usd": base,
            "idle_share": 1.0,
            "solver_status": "no_universe",
            "cost_usd": 0.0,
            "gas_usd": 0.0,
            "solve_time_s": 0.0,
            **vault_values,
        }
        return pd.DataFrame([row])[COLUMNS], None
    reported = set(history["pool"]) if len(history) else set()
    frame["reported"] = frame["pool"].isin(reported)
    frame["in_gap"] = frame["pool"].map(info["in_gap"]).fillna(False).astype(bool)
    frame["last_seen"] = frame["pool"].map(info["last_seen"]).where(~frame["reported"], day)
    today = _earned_today(vault, frame["pool"].tolist(), history, adjusted)
    carried = info.reindex(frame["pool"])
    for col, src in (
        ("earned_apy", "earned"),
        ("undiluted_apy", "undiluted"),
        ("il_apy", "il"),
        ("price_return", "price_return"),
    ):
        frame[col] = np.where(frame["pool"].isin(info.index), carried[src].to_numpy(), today[src].to_numpy())
    pred = (
        predictions.drop_duplicates("pool").set_index("pool")["predicted_apy"]
        if len(predictions)
        else pd.Series(dtype=float)
    )
    costs = cache.costs.in_reference(ref)
    optimizer = cache.get(frame).with_costs(costs)
    h = np.array([holdings.get(p, 0.0) for p in frame["pool"]])
    dec = rebalance_step(
        optimizer,
        frame["pool"].map(pred).to_numpy(dtype=float),
        frame["tvl_usd"].to_numpy(),
        wealth,
        h,
        costs=costs,
        eligible=frame["in_universe"].to_numpy(),
        base=base,
        hold=frame["in_gap"].to_numpy(),
    )
    out = frame.join(dec.to_frame().drop(columns="pool"))
    out.insert(0, "date", day)
    out["expected_usd"] = out["pool"].map(expected).fillna(0.0) if expected is not None else np.nan
    out["wealth"] = dec.wealth_before
    out["base_usd"] = dec.base_after
    out["idle_share"] = dec.base_after / dec.wealth_before
    out["solver_status"] = dec.status
    out["cost_usd"] = dec.cost_usd
    out["gas_usd"] = dec.gas_usd
    out["solve_time_s"] = dec.result.solve_time_s if dec.result is not None else 0.0
    for name, value in vault_values.items():
        out[name] = value
    out["last_seen"] = pd.to_datetime(out["last_seen"]).astype("datetime64[ns]")
    return out[COLUMNS], dec


def decide_range(
    vault: VaultConfig,
    days: pd.DatetimeIndex,
    state: CarriedState | None,
    predictions: pd.DataFrame,
    universe: pd.DataFrame,
    history: pd.DataFrame,
    adjusted: pd.DataFrame | None = None,
    observed: dict[pd.Timestamp, Observed] | None = None,
) -> tuple[pd.DataFrame, list[StepDecision | None], OptimizerCache]:
    """:func:`decide_day` for each day in order, each starting from the state the day before left
    (or from that day's ``observed`` real holdings, when given)."""
    observed = observed or {}
    cache = OptimizerCache(vault)
    universe_day, pred_day, hist_day, adj_day = (
        by_day(universe),
        by_day(predictions),
        by_day(history),
        by_day(adjusted),
    )
    frames, decisions = [], []
    empty = pd.DataFrame()
    for day in days:
        rows, dec = decide_day(
            vault,
            day,
            state,
            cache,
            pred_day.get(day, empty),
            universe_day.get(day, empty),
            hist_day.get(day, empty),
            adj_day.get(day, empty),
            observed.get(pd.Timestamp(day)),
        )
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
    t = t.assign(
        side=np.where(t["trade_usd"] > 0, "buy", "sell"),
        usd=t["trade_usd"].abs().round(2),
        target_weight=t["target_weight"].round(4),
    )
    return t.sort_values("usd", ascending=False)[
        ["symbol", "project", "chain", "side", "usd", "target_weight", "pool"]
    ]


def weight_violations(rows: pd.DataFrame, vault: VaultConfig) -> pd.DataFrame:
    """Days whose weights leave [0, concentration_limit] or whose sum exceeds 1 - base_buffer. A holding
    kept through a data gap is not a decision (it cannot be traded without data): its drift above the
    limit is not a violation, and it fills the sum first; the decided weights may only use the room it
    leaves (none when the held-in-gap weights alone have accrued past 1 - base_buffer)."""
    s = vault.strategy
    r = rows[rows["pool"].notna()]
    decided = ~r["in_gap"].fillna(False).astype(bool) if "in_gap" in r else pd.Series(True, index=r.index)
    bad_pool = r[
        (r["target_weight"] < -WEIGHT_TOL)
        | (decided & (r["target_weight"] > s.concentration_limit + WEIGHT_TOL))
    ]
    budget = 1 - s.base_buffer
    sums = r.groupby("date")["target_weight"].sum()
    held_in_gap = r["target_weight"].where(~decided, 0.0).groupby(r["date"]).sum()
    decided_sum = sums - held_in_gap
    bad_sum = sums[
        (sums > budget + WEIGHT_TOL) & (decided_sum > (budget - held_in_gap).clip(lower=0.0) + WEIGHT_TOL)
    ]
    out = [bad_pool[["date", "pool", "target_weight"]].assign(problem="weight out of bounds")]
    if len(bad_sum):
        out.append(
            pd.DataFrame(
                {
                    "date": bad_sum.index,
                    "pool": None,
                    "target_weight": bad_sum.to_numpy(),
                    "problem": "sum above 1 - base_buffer",
                }
            )
        )
    return pd.concat(out, ignore_index=True)
