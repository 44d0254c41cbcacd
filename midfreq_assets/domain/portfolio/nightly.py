"""The nightly decision of one vault over a range of days: the vault's book driven by daily frames.

``rebalance_weights`` calls :func:`decide_range` with the range's daily long frames (predictions,
the vault's rows of ``pool_metadata``, usable ``pool_history``, ``<vault>/adjusted_yields``) and the
:class:`CarriedState` the day before the range left. The frames become wide panels and one
:class:`~midfreq_assets.domain.portfolio.book.VaultBook` (the backtest's own) moves through the
days: accrue into the day (the carried state, post-decision of the day before), start from the
day's real holdings on a live day, decide, trade; the rows (one per pool of the day's universe or
held, one cash row on a day with neither) are built at the end.

The accrual and the decision are the backtest's (:func:`~midfreq_assets.domain.portfolio.step.accrue_step`,
:func:`~midfreq_assets.domain.portfolio.step.rebalance_step`), priced by the vault's one
:class:`~midfreq_assets.domain.portfolio.costs.TradingCosts`: holdings earn the vault's earned
yield (``backtest.apy_column``, adjusted_apy by default: IL inside, counted once) plus their legs'
price move, the idle base earns ``backtest.base_rate``. A held pool missing from the day's data
keeps its holding for up to ``strategy.max_gap_days`` days, accruing at its last known yield.
Amounts (wealth, holdings, TVL, trades, costs; the ``*_usd`` columns) are in the vault's reference
asset: TVLs and the strategy's dollar gas are divided by its USD price that day (``reference_price``).

A live vault hands :func:`decide_range` its real holdings per live day (``observed``, from
``<vault>/vault_positions``): the decision starts from them instead of the accrued state, and the
accrued state becomes what was *expected* (yesterday's target after accrual), kept per pool in
``expected_usd`` for the reconciliation (``domain.portfolio.reconcile``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.portfolio.book import (
    UNDILUTED_COLUMNS,
    BookPanels,
    BookSeed,
    Optimizers,
    VaultBook,
    day_numbers,
    ffill_rows,
)
from midfreq_assets.domain.portfolio.optimizer import VaultOptimizer
from midfreq_assets.domain.portfolio.step import StepDecision
from midfreq_assets.domain.units import DAYS_PER_YEAR

#: Weight tolerance of the limit checks.
WEIGHT_TOL = 1e-6
#: The components of adjusted_apy our own size does not dilute (the backtest's UNDILUTED_COLUMNS).
UNDILUTED = UNDILUTED_COLUMNS
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
_NS_PER_DAY = 86_400_000_000_000


@dataclass(frozen=True)
class CarriedState:
    """What day D-1 left: dollar holdings by pool, the idle base, each pool's last known TVL, and per
    held pool the last day it had data and the yield it last earned (earned, undiluted part, IL);
    ``left_universe``: held pools whose last data row was out of the universe (dust a sale left:
    no gap is kept for them)."""

    holdings: dict[str, float] = field(default_factory=dict)
    base: float = 0.0
    last_tvl: dict[str, float] = field(default_factory=dict)
    last_seen: dict[str, pd.Timestamp] = field(default_factory=dict)
    last_yield: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    reference_price: float = 1.0  # USD price of the reference asset on the last day it was known
    left_universe: frozenset[str] = frozenset()

    @classmethod
    def cash(cls, wealth: float) -> CarriedState:
        return cls({}, float(wealth), {})

    @classmethod
    def from_rows(cls, rows: pd.DataFrame | None) -> CarriedState | None:
        """The state after a day's trade, from that day's ``rebalance_weights`` rows (None without)."""
        if rows is None or rows.empty:
            return None
        # older partitions lack some columns
        rows = rows.reindex(columns=list(dict.fromkeys([*COLUMNS, *rows.columns])))
        pools = rows[rows["pool"].notna()]
        held = pools[pools["holding_usd"] > 0]
        tvl = pools.dropna(subset=["tvl_usd"])
        seen = held.dropna(subset=["last_seen"])
        yields = held[["earned_apy", "undiluted_apy", "il_apy"]].astype(float).to_numpy()
        # held without being in the universe nor in a gap: dust a sale left (never a gap to keep)
        left = held["pool"][held["in_universe"].eq(False).to_numpy() & held["in_gap"].eq(False).to_numpy()]
        ref = float(rows["reference_price"].iloc[0])
        return cls(
            dict(zip(held["pool"], held["holding_usd"].astype(float), strict=True)),
            float(rows["base_usd"].iloc[0]),
            dict(zip(tvl["pool"], tvl["tvl_usd"].astype(float), strict=True)),
            {p: pd.Timestamp(d) for p, d in zip(seen["pool"], seen["last_seen"], strict=True)},
            {p: tuple(map(float, y)) for p, y in zip(held["pool"], yields, strict=True)},
            ref if np.isfinite(ref) and ref > 0 else 1.0,
            frozenset(left),
        )


class OptimizerCache(Optimizers):
    """The vault's :class:`~midfreq_assets.domain.portfolio.book.Optimizers`: one optimizer per
    universe (pools + their project/chain), rebuilt on change; ``builds`` counts the rebuilds."""

    def __init__(self, vault: VaultConfig) -> None:
        super().__init__(vault.strategy, vault.strategy.costs())
        self.vault = vault

    def get(self, pools: pd.DataFrame) -> VaultOptimizer:
        """The optimizer of a frame of pools (``pool``, ``project``, ``chain``)."""
        labels = [
            pools[c].fillna("").astype(str).tolist() if c in pools else [""] * len(pools)
            for c in ("project", "chain")
        ]
        return self.optimizer_for(pools["pool"].astype(str).tolist(), *labels)


def reference_price(vault: VaultConfig, adjusted: pd.DataFrame, carried: float) -> float:
    """The reference asset's USD price on the day (1 for a USD vault; the last known one without rows)."""
    if vault.reference_asset == "usd":
        return 1.0
    known = adjusted["reference_price"].dropna() if "reference_price" in adjusted else pd.Series(dtype=float)
    return float(known.iloc[0]) if len(known) else carried


# --------------------------------------------------------------------------------------------
# Daily frames -> panels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NightlyPanels:
    """The book's panels of a range plus what only the rows show: the raw (uncarried) yields,
    symbol/project/chain per day, the decision TVL and the reference price per day."""

    book: BookPanels
    dates: pd.DatetimeIndex
    raw: dict[str, np.ndarray]  # earned, undiluted, il, price_return as the day's data has them
    symbol: np.ndarray
    project: np.ndarray
    chain: np.ndarray
    ref: np.ndarray
    position: dict[str, int]


def _first_rows(frame: pd.DataFrame | None, days: pd.DatetimeIndex, pools: set[str] | None) -> pd.DataFrame:
    """The rows of ``frame`` on ``days`` (by UTC day) and ``pools``, the first per (day, pool)."""
    if frame is None or frame.empty or "pool" not in frame:
        return pd.DataFrame(columns=["date", "pool"])
    out = frame.assign(date=pd.to_datetime(frame["date"]).dt.normalize().astype("datetime64[ns]"))
    keep = out["date"].isin(days)
    if pools is not None:
        keep &= out["pool"].isin(pools)
    return out[keep.to_numpy()].drop_duplicates(["date", "pool"])


def _wide(
    rows: pd.DataFrame,
    column: str,
    days: pd.DatetimeIndex,
    pools: list[str],
    fill: object = np.nan,
    dtype: object = float,
) -> np.ndarray:
    """``rows[column]`` as a (days x pools) array (``fill`` where a (day, pool) has no row)."""
    out = np.full((len(days), len(pools)), fill, dtype=dtype)
    if column not in rows or rows.empty:
        return out
    t = days.get_indexer(pd.DatetimeIndex(rows["date"]))
    i = pd.Index(pools).get_indexer(rows["pool"])
    out[t, i] = (
        rows[column].to_numpy(dtype=dtype, na_value=fill)
        if dtype is float
        else rows[column].to_numpy(dtype=dtype)
    )
    return out


def nightly_panels(
    vault: VaultConfig,
    days: pd.DatetimeIndex,
    state: CarriedState | None,
    predictions: pd.DataFrame,
    universe: pd.DataFrame,
    history: pd.DataFrame,
    adjusted: pd.DataFrame | None,
    observed: dict[pd.Timestamp, Observed],
) -> tuple[NightlyPanels, BookSeed]:
    """The daily long frames of a range as the book's panels (pools: the range's universe, the
    carried holdings and the observed ones, sorted), and the seed the carried state gives."""
    prior = state if state is not None else CarriedState.cash(vault.backtest.initial_wealth)
    uni = _first_rows(universe, days, None)
    pools = sorted(set(uni["pool"]) | set(prior.holdings) | {p for obs in observed.values() for p in obs[0]})
    members = set(pools)
    hist, adj = _first_rows(history, days, members), _first_rows(adjusted, days, members)
    pred = _first_rows(predictions, days, members)
    T, N = len(days), len(pools)
    if vault.reference_asset == "usd":
        ref = np.ones(T)
    else:
        all_adj = (
            adjusted
            if adjusted is not None and "reference_price" in adjusted
            else pd.DataFrame(columns=["date", "reference_price"])
        )
        by_day = all_adj.assign(date=pd.to_datetime(all_adj["date"]).dt.normalize().astype("datetime64[ns]"))
        first = by_day.groupby("date", sort=False)["reference_price"].first().reindex(days)
        ref = first.ffill().fillna(prior.reference_price).to_numpy(dtype=float)
    earned_col = "adjusted_apy" if vault.backtest.apy_column == "adjusted_apy" else "apy"
    earned = _wide(adj if earned_col == "adjusted_apy" else hist, earned_col, days, pools)
    has = np.isfinite(earned)
    if earned_col == "adjusted_apy":
        parts = [np.nan_to_num(_wide(adj, c, days, pools), nan=0.0) for c in UNDILUTED_COLUMNS if c in adj]
        undiluted = sum(parts) if parts else np.zeros((T, N))
        il = np.nan_to_num(_wide(adj, "il_annual", days, pools), nan=0.0)
    else:
        undiluted, il = np.zeros((T, N)), np.zeros((T, N))
    undiluted, il = np.where(has, undiluted, np.nan), np.where(has, il, np.nan)
    price = np.nan_to_num(_wide(adj, "price_return", days, pools), nan=0.0)
    reported = _wide(hist.assign(_row=True), "_row", days, pools, False, bool)
    eligible = _wide(uni.assign(_row=True), "_row", days, pools, False, bool)
    hist_tvl = _wide(hist, "tvl_usd", days, pools) / ref[:, None]
    uni_tvl = _wide(uni, "tvl_usd", days, pools)
    raw_tvl = np.where(np.isnan(uni_tvl), _wide(hist, "tvl_usd", days, pools), uni_tvl) / ref[:, None]
    depth = None
    if (
        "dilution_depth_usd" in hist and "size_base_usd" in hist
    ):  # the pools' yield responses (as the backtest's)
        size = _wide(hist, "size_base_usd", days, pools) / ref[:, None]
        raw_tvl = np.where(np.isfinite(size) & (size > 0), size, raw_tvl)
        hist_tvl = np.where(np.isfinite(size) & (size > 0), size, hist_tvl)
        depth = _wide(hist, "dilution_depth_usd", days, pools) / ref[:, None]
    position = {p: i for i, p in enumerate(pools)}
    seed_tvl = np.array([prior.last_tvl.get(p, np.nan) for p in pools], dtype=float)
    # the decision's TVL: the day's, else the last one known (a pool in a gap)
    tvl = ffill_rows(raw_tvl, seed_tvl)
    labels = {c: _wide(uni, c, days, pools, np.nan, object) for c in ("symbol", "project", "chain")}
    for c in ("project", "chain"):
        labels[c] = np.where(pd.isna(labels[c]), "", labels[c]).astype(object)
    book = BookPanels(
        tuple(pools),
        day_numbers(days),
        np.full(T, 1.0 / DAYS_PER_YEAR),
        earned,
        tvl,
        eligible,
        reported,
        predicted=_wide(pred, "predicted_apy", days, pools),
        undiluted=undiluted,
        il=il,
        price_return=price,
        tvl_reported=hist_tvl,
        protocols=labels["project"],
        chains=labels["chain"],
        ref_price=ref,
        depth=depth,
    )
    seen = np.array(
        [
            prior.last_seen[p].value // _NS_PER_DAY
            if p in prior.last_seen and pd.notna(prior.last_seen[p])
            else np.nan
            for p in pools
        ],
        dtype=float,
    )
    yields = (
        np.array([prior.last_yield.get(p, (np.nan, 0.0, 0.0)) for p in pools], dtype=float).reshape(N, 3).T
    )
    seed = BookSeed(
        np.array([prior.holdings.get(p, 0.0) for p in pools], dtype=float),
        float(prior.base),
        last_seen=seen,
        last_in_universe=np.array([p not in prior.left_universe for p in pools], dtype=bool),
        last_yield=yields,
        last_tvl=seed_tvl,
    )
    raw = {"earned": earned, "undiluted": undiluted, "il": il, "price_return": price}
    return NightlyPanels(
        book, days, raw, labels["symbol"], labels["project"], labels["chain"], ref, position
    ), seed


# --------------------------------------------------------------------------------------------
# The range
# --------------------------------------------------------------------------------------------


def decide_range(
    vault: VaultConfig,
    days: pd.DatetimeIndex,
    state: CarriedState | None,
    predictions: pd.DataFrame,
    universe: pd.DataFrame,
    history: pd.DataFrame,
    adjusted: pd.DataFrame | None = None,
    observed: dict[pd.Timestamp, Observed] | None = None,
    *,
    optimizers: Optimizers | None = None,
) -> tuple[pd.DataFrame, list[StepDecision | None], Optimizers]:
    """Each day in order: accrue the book into it (``state``, what the day before the range left;
    cash at the vault's initial wealth when None: nothing to accrue on the first day), start from
    the day's ``observed`` real holdings when given, decide on the day's predictions and universe,
    trade. Returns the rows (:data:`COLUMNS`), the decisions (None on a day without universe or
    holdings) and the optimizers (``builds``)."""
    observed = {pd.Timestamp(k): v for k, v in (observed or {}).items()}
    days = pd.DatetimeIndex(days)
    if days.tz is not None:
        days = days.tz_localize(None)
    days = days.as_unit("ns")
    panels, seed = nightly_panels(vault, days, state, predictions, universe, history, adjusted, observed)
    p = panels.book
    T, N = p.shape
    optimizers = optimizers if optimizers is not None else OptimizerCache(vault)
    book = VaultBook(
        p,
        vault.strategy,
        base_rate=vault.backtest.base_rate,
        seed=seed,
        unseen_in_gap=True,
        optimizers=optimizers,
    )
    record = _Record(T, N)
    decisions: list[StepDecision | None] = []
    for t in range(T):
        carried = t > 0 or state is not None
        if carried:
            book.accrue(t)
            record.expected[t], record.expected_base[t] = book.expected, book.expected_base
        obs = observed.get(days[t])
        if obs is not None:
            h = np.zeros(N)
            for pool, value in obs[0].items():
                h[panels.position[pool]] = float(value) / panels.ref[t]
            book.observe(h, float(obs[1]) / panels.ref[t])
            record.observed[t] = True
        dec, idx = book.decide(t, book.expected > 0 if carried else None)
        record.start(t, book.holdings, book.base)
        decisions.append(dec)
        if dec is not None:
            record.decision(t, dec, idx)
            book.trade(dec, idx)
    return record.frame(panels, book), decisions, optimizers


class _Record:
    """Per day what the rows show, filled by the loop, turned into rows at the end."""

    def __init__(self, T: int, N: int) -> None:
        self.holdings = np.zeros((T, N))
        self.base = np.zeros(T)
        self.expected = np.full((T, N), np.nan)
        self.expected_base = np.full(T, np.nan)
        self.observed = np.zeros(T, dtype=bool)
        self.rows = np.zeros((T, N), dtype=bool)
        nan = np.full((T, N), np.nan)
        self.current, self.target, self.trade, self.pred, self.dilution, self.after = (
            nan.copy() for _ in range(6)
        )
        self.wealth, self.base_after, self.cost, self.gas, self.solve = (np.full(T, np.nan) for _ in range(5))
        self.status = np.full(T, "no_universe", dtype=object)

    def start(self, t: int, holdings: np.ndarray, base: float) -> None:
        self.holdings[t], self.base[t] = holdings, base

    def decision(self, t: int, dec: StepDecision, idx: np.ndarray) -> None:
        self.rows[t, idx] = True
        self.current[t, idx] = dec.holdings_before / dec.wealth_before
        self.target[t, idx] = dec.target_weights
        self.trade[t, idx] = dec.trades_usd
        self.pred[t, idx] = dec.predicted_apy
        self.dilution[t, idx] = dec.dilution_factor
        self.after[t, idx] = dec.holdings_after
        self.wealth[t], self.base_after[t] = dec.wealth_before, dec.base_after
        self.cost[t], self.gas[t] = dec.cost_usd, dec.gas_usd
        self.solve[t] = dec.result.solve_time_s if dec.result is not None else 0.0
        self.status[t] = dec.status

    def frame(self, panels: NightlyPanels, book: VaultBook) -> pd.DataFrame:
        """The rows: one per pool of a decided day, one cash row (pool None) per day without."""
        days, p, g = panels.dates, panels.book, book.gaps
        ti, ii = np.nonzero(self.rows)
        held = self.holdings[ti, ii] > 0  # the pools the day's accrual covered
        reported = p.reported[ti, ii]
        seen_day = np.where(reported, p.day[ti], np.where(held, g.last_seen[ti, ii], np.nan))
        seen = np.where(
            np.isnan(seen_day), np.iinfo(np.int64).min, np.nan_to_num(seen_day).astype(np.int64) * _NS_PER_DAY
        ).view("datetime64[ns]")
        source = np.where(self.observed, FROM_POSITIONS, FROM_SIMULATION)
        has_expected = ~np.isnan(self.expected_base)
        pool_rows = pd.DataFrame(
            {
                "date": days[ti],
                "pool": pd.array(np.asarray(p.pools, dtype=object)[ii], dtype="str"),
                "symbol": pd.array(panels.symbol[ti, ii], dtype="str"),
                "project": pd.array(panels.project[ti, ii], dtype="str"),
                "chain": pd.array(panels.chain[ti, ii], dtype="str"),
                "in_universe": p.eligible[ti, ii],
                "reported": reported,
                "in_gap": g.hold[ti, ii] & held,
                "last_seen": seen,
                "tvl_usd": p.tvl[ti, ii],
                "current_weight": self.current[ti, ii],
                "target_weight": self.target[ti, ii],
                "trade_usd": self.trade[ti, ii],
                "predicted_apy": self.pred[ti, ii],
                "earned_apy": np.where(held, g.earned[ti, ii], panels.raw["earned"][ti, ii]),
                "undiluted_apy": np.where(held, g.undiluted[ti, ii], panels.raw["undiluted"][ti, ii]),
                "il_apy": np.where(held, g.il[ti, ii], panels.raw["il"][ti, ii]),
                "price_return": panels.raw["price_return"][ti, ii],
                "dilution_factor": self.dilution[ti, ii],
                "holding_usd": self.after[ti, ii],
                "expected_usd": np.where(
                    has_expected[ti], np.nan_to_num(self.expected[ti, ii], nan=0.0), np.nan
                ),
                "wealth": self.wealth[ti],
                "base_usd": self.base_after[ti],
                "idle_share": self.base_after[ti] / self.wealth[ti],
                "solver_status": pd.array(self.status[ti], dtype="str"),
                "cost_usd": self.cost[ti],
                "gas_usd": self.gas[ti],
                "solve_time_s": self.solve[ti],
                "reference_price": panels.ref[ti],
                "positions_source": pd.array(source[ti], dtype="str"),
                "expected_base_usd": self.expected_base[ti],
                "observed_base_usd": np.where(self.observed[ti], self.base[ti], np.nan),
            }
        )
        if (~p.eligible.any(axis=1) & self.rows.any(axis=1)).any():
            # a day deciding on held pools only (no universe) labels them from an empty frame: object columns
            pool_rows = pool_rows.astype({"symbol": object, "project": object, "chain": object})
        empty = np.flatnonzero(~self.rows.any(axis=1))
        if not len(empty):
            return pool_rows
        wealth = self.holdings[empty].sum(axis=1) + self.base[empty]
        cash = pd.DataFrame(
            [
                {c: np.nan for c in COLUMNS}
                | {
                    "date": days[t],
                    "pool": None,
                    "wealth": w,
                    "base_usd": self.base[t],
                    "idle_share": 1.0,
                    "solver_status": "no_universe",
                    "cost_usd": 0.0,
                    "gas_usd": 0.0,
                    "solve_time_s": 0.0,
                    "reference_price": panels.ref[t],
                    "positions_source": source[t],
                    "expected_base_usd": self.expected_base[t],
                    "observed_base_usd": self.base[t] if self.observed[t] else np.nan,
                }
                for t, w in zip(empty, wealth, strict=True)
            ]
        )
        cash = cash[COLUMNS]
        # concatenated run by run in day order: pandas types a column by the frames' order (a range
        # opening on cash rows types in_universe as float), as the day-by-day concatenation did
        decided = self.rows.any(axis=1)
        starts = np.flatnonzero(np.r_[True, decided[1:] != decided[:-1]])
        ends = np.r_[starts[1:], len(decided)]
        first_row = np.searchsorted(ti, np.arange(len(decided) + 1))
        parts = [
            pool_rows.iloc[first_row[a] : first_row[b]]
            if decided[a]
            else cash.iloc[np.searchsorted(empty, a) : np.searchsorted(empty, b)]
            for a, b in zip(starts, ends, strict=True)
        ]
        out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
        out["date"] = pd.to_datetime(out["date"]).astype("datetime64[ns]")
        return out


def decide_day(
    vault: VaultConfig,
    day: pd.Timestamp,
    state: CarriedState | None,
    cache: Optimizers,
    predictions: pd.DataFrame,
    universe: pd.DataFrame,
    history: pd.DataFrame,
    adjusted: pd.DataFrame | None = None,
    observed: Observed | None = None,
) -> tuple[pd.DataFrame, StepDecision | None]:
    """:func:`decide_range` on one day: accrue ``state`` (from D-1; cash at the vault's initial wealth
    when None) to ``day`` and rebalance on the day's predictions and universe; returns the day's
    rows and the decision. ``observed`` (the vault's real holdings and cash of the day, USD)
    replaces the accrued state as the starting point; the accrued state is then kept as
    ``expected_usd``."""
    day = pd.Timestamp(day)
    rows, decisions, _ = decide_range(
        vault,
        pd.DatetimeIndex([day]),
        state,
        predictions,
        universe,
        history,
        adjusted,
        {day: observed} if observed is not None else None,
        optimizers=cache,
    )
    return rows, decisions[0]


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
