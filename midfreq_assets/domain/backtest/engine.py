"""Backtest engine: the nightly decision replayed day by day on history (no dagster).

Same code as production: predictions come from the research engine (:func:`prediction_panel`),
each decision from :func:`rebalance.rebalance_step` (``VaultOptimizer``), accrual from
:func:`rebalance.accrue_step`. Benchmarks (equal weight, best trailing APY, TVL-weighted) go
through the same accounting with :func:`rebalance.target_step`.

No look-ahead: the decision at t reads predictions, TVLs and eligibility of row t only;
the accrual t -> t+1 reads the APY and TVL of row t+1.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from midfreq_assets.domain.backtest.config import BENCHMARKS, BacktestConfig
from midfreq_assets.domain.config.tokens import TokenRegistry
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.portfolio.optimizer import VaultOptimizer
from midfreq_assets.domain.portfolio.step import StepDecision, accrue_step, rebalance_step, target_step
from midfreq_assets.domain.portfolio.strategy import StrategyConfig
from midfreq_assets.domain.research import engine as research
from midfreq_assets.domain.research.bundles import predict_days, weekly_bundles
from midfreq_assets.domain.research.models import NAIVE
from midfreq_assets.domain.research.plan import refit_dates, traded_label, warmup_rows, yield_panel
from midfreq_assets.domain.units import DAYS_PER_YEAR, WEEKS_PER_YEAR

# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BacktestInputs:
    """Wide panels on one daily calendar (index ``date``, columns ``pool``)."""

    apy: pd.DataFrame  # realized APY, fraction/yr
    tvl: pd.DataFrame
    eligible: pd.DataFrame  # bool: in the vault's universe that day
    il: pd.DataFrame | None = None  # annualized IL loss rate >= 0
    protocols: pd.Series | None = None  # pool -> project slug (for protocol caps)
    chains: pd.Series | None = None  # pool -> chain

    @property
    def pools(self) -> list[str]:
        return list(self.apy.columns)

    @property
    def dates(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.apy.index)

    def window(self, start: dt.date | None, end: dt.date | None) -> BacktestInputs:
        sl = slice(pd.Timestamp(start) if start else None, pd.Timestamp(end) if end else None)
        il = self.il.loc[sl] if self.il is not None else None
        return BacktestInputs(self.apy.loc[sl], self.tvl.loc[sl], self.eligible.loc[sl], il, self.protocols,
                              self.chains)

    @classmethod
    def from_long(
        cls,
        history: pd.DataFrame,
        vault: VaultConfig,
        metadata: pd.DataFrame | None = None,
        *,
        apy_column: str = "apy",
    ) -> BacktestInputs:
        """``pool_history`` (or ``adjusted_yields`` + tvl) rows -> panels.

        Eligibility: with ``metadata`` (``pool_metadata`` rows with a ``vaults`` list), a pool is
        eligible on the days it is in ``vault``'s universe; without, on days its TVL clears
        ``vault.min_pool_tvl_usd``. Pools never eligible are dropped.
        """
        hist = history.assign(date=pd.to_datetime(history["date"]).dt.normalize())
        days = pd.date_range(hist["date"].min(), hist["date"].max(), freq="D")
        apy = hist.pivot(index="date", columns="pool", values=apy_column).reindex(days)
        tvl = hist.pivot(index="date", columns="pool", values="tvl_usd").reindex(days)
        protocols = chains = None
        if metadata is not None and len(metadata):
            meta = metadata.assign(date=pd.to_datetime(metadata["date"]).dt.normalize())
            member = meta[meta["vaults"].map(lambda v: _member(v, vault.name))]
            flag = member.assign(flag=True).pivot_table(index="date", columns="pool", values="flag",
                                                        aggfunc="any")
            eligible = flag.reindex(index=days, columns=apy.columns).fillna(False).astype(bool)
            last = meta.sort_values("date").drop_duplicates("pool", keep="last").set_index("pool")
            protocols = last.get("project")
            chains = last.get("chain")
        else:
            eligible = (tvl >= vault.min_pool_tvl_usd) & apy.notna()
        keep = eligible.any(axis=0)
        cols = list(keep[keep].index)
        il = None
        if "il7d" in hist.columns and hist["il7d"].notna().any():
            il = (hist.pivot(index="date", columns="pool", values="il7d").reindex(days).abs() * WEEKS_PER_YEAR)[cols]
        apy.index.name = tvl.index.name = eligible.index.name = "date"
        return cls(apy[cols], tvl[cols], eligible[cols], il,
                   protocols.reindex(cols) if protocols is not None else None,
                   chains.reindex(cols) if chains is not None else None)


def _member(vaults: object, name: str) -> bool:
    if vaults is None or isinstance(vaults, float):
        return False
    return name in list(vaults)  # type: ignore[call-overload]


def load_recorded(root: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bundled DefiLlama recording -> (``pool_history`` rows, ``/pools`` snapshot frame)."""
    from midfreq_assets.domain.ingest.pool_history import charts_frame
    from midfreq_assets.domain.ingest.universe import snapshot_frame

    root = Path(root) / "defillama" / "yields"
    charts = {p.stem: json.loads(p.read_text())["data"] for p in sorted((root / "chart").glob("*.json"))}
    history = charts_frame(charts)
    raw = json.loads((root / "pools.json").read_text())["data"]
    keys = {"tvlUsd": "tvl_usd", "apyBase": "apy_base", "apyReward": "apy_reward",
            "underlyingTokens": "underlying_tokens", "rewardTokens": "reward_tokens", "poolMeta": "pool_meta",
            "apyMean30d": "apy_mean_30d", "ilRisk": "il_risk"}
    snapshot = snapshot_frame([{keys.get(k, k): v for k, v in r.items()} for r in raw])
    return history, snapshot


def recorded_inputs(root: Path | str, vault: VaultConfig, tokens: TokenRegistry) -> tuple[pd.DataFrame, BacktestInputs]:
    """History and backtest panels of the bundled recording, universe screened like ``pool_metadata``."""
    from midfreq_assets.domain.ingest.universe import select_universe

    history, snapshot = load_recorded(root)
    members, _ = select_universe(history, snapshot, {vault.name: vault}, tokens)
    return history, BacktestInputs.from_long(history, vault, members)


# --------------------------------------------------------------------------------------------
# Predictions (research engine, causal)
# --------------------------------------------------------------------------------------------


def prediction_panel(
    history: pd.DataFrame,
    vault: VaultConfig,
    *,
    estimator: str | None = None,
    label: str | None = None,
    family: str = "apy",
) -> pd.DataFrame:
    """Predicted APY (dates x pools) made at each date with data <= that date: production's weekly
    refit loop replayed.

    Models are refit on production's calendar (every ``models.refit_every_weeks`` Mondays from the
    first day a model can be trained, :func:`~midfreq_assets.domain.research.plan.refit_dates`) by
    the function ``fitted_models`` runs (:func:`~midfreq_assets.domain.research.bundles.weekly_bundles`),
    on the rows in the vault's universe that day (``eligible``, when the history has it) whose
    label ended before the refit. Each day is predicted by the latest refit's selected model
    (``models.selection``: the purged-CV winner among the estimators and the naive baseline, chosen
    on folds that ended before the refit), or by ``estimator`` when given. Before the first refit
    the prediction is NaN (the vault stays idle).
    """
    hist = history.assign(date=pd.to_datetime(history["date"]).dt.normalize())
    hist = hist.rename(columns={"pool": "instrument"})
    models = vault.models
    fam = models.family(family)
    if estimator is not None and estimator not in fam.estimators and estimator != NAIVE:
        raise KeyError(f"models.{family} has no estimator {estimator!r} (has {sorted(fam.estimators)} and {NAIVE!r})")
    if estimator is None and models.selection.by == "fixed":
        estimator = fam.primary_name
    label = label or traded_label(vault.label_map, family)
    features = research.build_features(hist, vault.feature_map)
    labels = research.build_labels(hist, vault.label_map)
    train = features
    if "eligible" in hist:  # production trains on the pools in the universe that day
        member = hist.loc[hist["eligible"].astype(bool), ["date", "instrument"]]
        keys = pd.MultiIndex.from_arrays([features["date"], features["instrument"]])
        train = features[keys.isin(pd.MultiIndex.from_frame(member))].reset_index(drop=True)
    times = pd.DatetimeIndex(features["date"])
    days = pd.date_range(times.min(), times.max(), freq="D")
    first_fit = (days[0] + pd.Timedelta(days=warmup_rows(vault.label_map, models))).date()
    as_ofs = refit_dates(first_fit, days[-1].date(), models.refit_every_weeks)
    bundles = weekly_bundles({str(d.date()): d for d in as_ofs}, train, labels, models, vault.label_map,
                             cv_labels=None if estimator is not None else [label], only_labels=[label],
                             only_estimators=[estimator] if estimator is not None else None)
    raw = predict_days(bundles, features, days, lambda b: b.model_key(label, estimator))
    if raw.empty:
        wide = pd.DataFrame(np.nan, index=days, columns=sorted(features["instrument"].unique()))
    else:
        wide = raw.pivot(index="date", columns="instrument", values="prediction").reindex(days)
    wide.index.name = "date"
    wide.columns.name = "pool"
    return wide


#: Prediction panels kept per process: grid points that differ only in strategy or backtest keys
#: share their research (features, weekly refits, CV selection), computed once per run of points.
PREDICTION_CACHE_SIZE = 16
_PREDICTIONS: OrderedDict[str, pd.DataFrame] = OrderedDict()


def cached_prediction_panel(history: pd.DataFrame, vault: VaultConfig, *, estimator: str | None = None,
                            label: str | None = None) -> pd.DataFrame:
    """:func:`prediction_panel`, memoized on the history's content and the research configuration."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(history, index=False).to_numpy().tobytes())
    for part in (vault.feature_map, vault.label_map, vault.models):
        digest.update(part.model_dump_json().encode())
    digest.update(f"{estimator}|{label}".encode())
    key = digest.hexdigest()
    if key not in _PREDICTIONS:
        _PREDICTIONS[key] = prediction_panel(history, vault, estimator=estimator, label=label)
        while len(_PREDICTIONS) > PREDICTION_CACHE_SIZE:
            _PREDICTIONS.popitem(last=False)
    _PREDICTIONS.move_to_end(key)
    return _PREDICTIONS[key].copy()


# --------------------------------------------------------------------------------------------
# Engine
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortfolioState:
    """Dollar holdings by pool and the idle base: where a backtest starts, or what it leaves."""

    pools: tuple[str, ...]
    holdings: np.ndarray
    base: float

    @classmethod
    def cash(cls, pools: list[str] | tuple[str, ...], wealth: float) -> PortfolioState:
        return cls(tuple(pools), np.zeros(len(pools)), float(wealth))

    @property
    def wealth(self) -> float:
        return float(self.holdings.sum() + self.base)

    def aligned(self, pools: list[str]) -> np.ndarray:
        """Holdings in the order of ``pools``; a held pool missing there is an error (its money would vanish)."""
        have = dict(zip(self.pools, self.holdings, strict=True))
        known = set(pools)
        lost = sorted(p for p, v in have.items() if v != 0 and p not in known)
        if lost:
            raise ValueError(f"start state holds pools absent from the backtest inputs: {lost[:5]}")
        return np.array([have.get(p, 0.0) for p in pools], dtype=np.float64)


@dataclass
class BacktestResult:
    """Per-step records (``steps``: one row per decision day) and held weights (``weights``, long)."""

    name: str
    steps: pd.DataFrame
    weights: pd.DataFrame
    initial_wealth: float
    end_state: PortfolioState | None = None  # holdings and base after the last accrual

    @property
    def wealth(self) -> pd.Series:
        """W at every date: W_0 at the first date, then after each step's accrual."""
        s = self.steps
        idx = pd.DatetimeIndex([s["date"].iloc[0], *s["date_end"]], name="date")
        return pd.Series([self.initial_wealth, *s["wealth"].to_numpy()], index=idx, name=self.name)

    def weight_panel(self) -> pd.DataFrame:
        """Weights after each decision (dates x pools)."""
        return self.weights.pivot(index="date", columns="pool", values="weight").fillna(0.0)


#: A policy maps (step index, current holdings, current base) -> a decision.
Policy = Callable[[int, np.ndarray, float], StepDecision]


def run_backtest(
    inputs: BacktestInputs,
    predictions: pd.DataFrame,
    strategy: StrategyConfig,
    config: BacktestConfig | None = None,
    *,
    name: str = "strategy",
    start_state: PortfolioState | None = None,
    step_offset: int = 0,
) -> BacktestResult:
    """Replay the optimizer's decisions on ``inputs`` with ``predictions`` (dates x pools).

    ``start_state``: holdings to start from (default: cash ``initial_wealth``); ``step_offset``: steps
    already taken before ``inputs`` starts, so the rebalance days stay on the original calendar
    (a walk-forward window continues the path the previous window left)."""
    config = config or BacktestConfig()
    inputs = inputs.window(config.start, config.end)
    pools = inputs.pools
    pred = predictions.reindex(index=inputs.dates, columns=pools).to_numpy(dtype=float)
    # pools without a known project/chain (no metadata) fall under no cap
    protocols = inputs.protocols.reindex(pools).fillna("").tolist() if inputs.protocols is not None else [""] * len(pools)
    chains = inputs.chains.reindex(pools).fillna("").tolist() if inputs.chains is not None else [""] * len(pools)
    costs = strategy.costs()
    optimizer = VaultOptimizer(pools, strategy,
                               protocols=protocols if strategy.protocol_caps else None,
                               chains=chains if strategy.chain_caps else None, costs=costs)
    tvl = inputs.tvl.to_numpy(dtype=float)
    elig = inputs.eligible.to_numpy(dtype=bool)
    every = config.rebalance_every_days

    def policy(t: int, h: np.ndarray, base: float) -> StepDecision:
        if (t + step_offset) % every == 0:
            return rebalance_step(optimizer, pred[t], tvl[t], h.sum() + base, h, costs=costs, eligible=elig[t],
                                  base=base)
        wealth = h.sum() + base
        return target_step(optimizer.pools, h / wealth, tvl[t], wealth, h, costs=costs, predicted_apy=pred[t],
                           eligible=elig[t], base=base)

    return simulate(inputs, policy, config, name=name, predictions=pred, start_state=start_state)


def simulate(
    inputs: BacktestInputs,
    policy: Policy,
    config: BacktestConfig,
    *,
    name: str,
    predictions: np.ndarray | None = None,
    start_state: PortfolioState | None = None,
) -> BacktestResult:
    """The accounting loop shared by the strategy and the benchmarks (``inputs`` already windowed).

    Starts from ``start_state`` (default: cash ``config.initial_wealth``); the result's
    ``initial_wealth`` is the starting wealth and its ``end_state`` what the last step left."""
    dates = inputs.dates
    if len(dates) < 2:
        raise ValueError(f"backtest {name}: need at least two days of data, got {len(dates)}")
    apy = inputs.apy.to_numpy(dtype=float)
    il = inputs.il.to_numpy(dtype=float) if inputs.il is not None else None
    elig = inputs.eligible.to_numpy(dtype=bool)
    # TVL for dilution at t+1: the last reported value (a missing day does not undo dilution)
    tvl_filled = inputs.tvl.ffill().to_numpy(dtype=float)
    days = np.diff(dates.as_unit("ns").asi8) / 86_400e9
    start_state = start_state or PortfolioState.cash(inputs.pools, config.initial_wealth)
    h = start_state.aligned(inputs.pools)
    base = float(start_state.base)
    pools = np.asarray(inputs.pools, dtype=object)
    rows: list[dict[str, object]] = []
    w_dates: list[np.ndarray] = []
    w_pools: list[np.ndarray] = []
    w_vals: list[np.ndarray] = []
    w_pred: list[np.ndarray] = []
    w_real: list[np.ndarray] = []
    w_dil: list[np.ndarray] = []
    for t in range(len(dates) - 1):
        dec = policy(t, h, base)
        dt_years = days[t] / DAYS_PER_YEAR
        acc = accrue_step(dec.holdings_after, dec.base_after, apy[t + 1], tvl_filled[t + 1], dt_years,
                          il_next=il[t + 1] if il is not None else None, base_rate=config.base_rate)
        invested = float(dec.holdings_after.sum())
        realized = (float(np.log(acc.holdings.sum() / invested)) / dt_years) if invested > 0 else np.nan
        held = dec.holdings_after > 0
        n_elig = int(elig[t].sum())
        x = dec.target_weights
        rows.append({
            "date": dates[t],
            "date_end": dates[t + 1],
            "wealth_start": dec.wealth_before,
            "cost_usd": dec.cost_usd,
            "gas_usd": dec.gas_usd,
            "n_trades": dec.n_trades,
            "forced_sales": dec.n_forced_sales,
            "turnover": dec.turnover,
            "invested": float(x.sum()),
            "n_held": int(held.sum()),
            "n_eligible": n_elig,
            "entropy": normalized_entropy(x, n_elig),
            "predicted_apy": dec.predicted_portfolio_apy,
            "realized_apy": realized,
            "dilution": float((x * acc.dilutor).sum() / x.sum()) if x.sum() > 0 else np.nan,
            "il_usd": acc.il_usd,
            "missing_apy": acc.missing_apy,
            "status": dec.status,
            "solver": dec.result.solver if dec.result is not None else "none",
            "wealth": acc.wealth,
        })
        h, base = acc.holdings, acc.base
        if held.any():
            w_dates.append(np.full(int(held.sum()), dates[t].to_datetime64()))
            w_pools.append(pools[held])
            w_vals.append(x[held])
            w_pred.append(dec.predicted_apy[held])
            w_real.append(acc.realized_apy[held])
            w_dil.append(acc.dilutor[held])
    steps = pd.DataFrame(rows)
    steps["tracking_error"] = steps["predicted_apy"] - steps["realized_apy"]

    def cat(parts: list[np.ndarray], dtype: object) -> np.ndarray:
        return np.concatenate(parts) if parts else np.array([], dtype=dtype)

    weights = pd.DataFrame({
        "date": pd.DatetimeIndex(cat(w_dates, "datetime64[ns]")),
        "pool": cat(w_pools, object),
        "weight": cat(w_vals, float),
        "predicted_apy": cat(w_pred, float),
        "realized_apy": cat(w_real, float),
        "dilutor": cat(w_dil, float),
    })
    return BacktestResult(name, steps, weights, start_state.wealth, PortfolioState(tuple(inputs.pools), h, base))


def normalized_entropy(weights: np.ndarray, n: int) -> float:
    """``-sum p log p / log N`` of the invested weights (1 = spread evenly over N pools)."""
    w = np.asarray(weights, dtype=float)
    w = w[w > 0]
    if n <= 1 or w.sum() <= 0:
        return 0.0
    p = w / w.sum()
    return float(-(p * np.log(p)).sum() / np.log(n))


# --------------------------------------------------------------------------------------------
# Benchmarks (same accounting)
# --------------------------------------------------------------------------------------------


def benchmark_weights(
    kind: str, apy: np.ndarray, tvl: np.ndarray, eligible: np.ndarray, t: int, budget: float, trailing_days: int
) -> np.ndarray:
    """Target weights of a simple benchmark at step t (rows <= t of the dates x pools arrays)."""
    elig = eligible[t] & np.isfinite(apy[t])
    x = np.zeros(len(elig))
    if not elig.any():
        return x
    if kind == "equal_weight":
        x[elig] = budget / elig.sum()
    elif kind == "tvl_weighted":
        w = np.where(elig, np.nan_to_num(tvl[t], nan=0.0), 0.0)
        if w.sum() > 0:
            x = budget * w / w.sum()
    elif kind == "best_trailing_apy":
        window = apy[max(0, t - trailing_days + 1) : t + 1]
        total = np.nansum(window, axis=0)
        count = np.isfinite(window).sum(axis=0)
        trail = np.where(elig & (count > 0), total / np.maximum(count, 1), -np.inf)
        x[int(np.argmax(trail))] = budget
    else:
        raise ValueError(f"unknown benchmark {kind!r}; known: {list(BENCHMARKS)}")
    return x


def run_benchmark(
    kind: str, inputs: BacktestInputs, strategy: StrategyConfig, config: BacktestConfig | None = None
) -> BacktestResult:
    """A benchmark re-weighted every ``benchmark_rebalance_days`` (held in between, ineligible pools
    sold daily), paying the strategy's cost and gas."""
    if kind not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {kind!r}; known: {list(BENCHMARKS)}")
    config = config or BacktestConfig()
    inputs = inputs.window(config.start, config.end)
    apy = inputs.apy.to_numpy(dtype=float)
    tvl = inputs.tvl.to_numpy(dtype=float)
    elig = inputs.eligible.to_numpy(dtype=bool)
    pools = tuple(inputs.pools)
    budget = 1.0 - strategy.base_buffer
    every = config.benchmark_rebalance_days
    costs = strategy.costs()

    def policy(t: int, h: np.ndarray, base: float) -> StepDecision:
        wealth = h.sum() + base
        if t % every == 0:
            x = benchmark_weights(kind, apy, tvl, elig, t, budget, config.trailing_days)
        else:
            x = h / wealth  # hold (drift), only sell what left the universe
        return target_step(pools, x, tvl[t], wealth, h, costs=costs,
                           predicted_apy=apy[t], eligible=elig[t], base=base)

    return simulate(inputs, policy, config, name=kind)


def run_benchmarks(
    inputs: BacktestInputs, strategy: StrategyConfig, config: BacktestConfig | None = None
) -> dict[str, BacktestResult]:
    config = config or BacktestConfig()
    return {k: run_benchmark(k, inputs, strategy, config) for k in config.benchmarks}


def run_vault_backtest(
    history: pd.DataFrame,
    inputs: BacktestInputs,
    vault: VaultConfig,
    config: BacktestConfig | None = None,
    *,
    name: str = "strategy",
) -> tuple[BacktestResult, pd.DataFrame]:
    """Predictions from the vault's research config, then the backtest. Returns (result, predictions)."""
    config = config or BacktestConfig()
    preds = cached_prediction_panel(history, vault, estimator=config.estimator, label=config.label)
    return run_backtest(inputs, preds, vault.strategy, config, name=name), preds


# --------------------------------------------------------------------------------------------
# Stored shapes (what the Dagster assets write)
# --------------------------------------------------------------------------------------------


def with_adjusted_apy(history: pd.DataFrame, adjusted: pd.DataFrame | None) -> pd.DataFrame:
    """``history`` plus the ``adjusted_apy`` column of ``adjusted_yields`` where it exists, so a
    backtest can earn adjusted yields (``backtest.apy_column: adjusted_apy``)."""
    if adjusted is None or adjusted.empty or "adjusted_apy" not in adjusted:
        return history
    return yield_panel(history, adjusted)


def vault_panel(history: pd.DataFrame, metadata: pd.DataFrame | None, vault: VaultConfig) -> pd.DataFrame:
    """``pool_history`` rows of the pools ever in ``vault``'s universe, with ``eligible`` (in the
    universe that day), ``project`` and ``chain``: everything a backtest of the vault reads."""
    inputs = BacktestInputs.from_long(history, vault, metadata)
    hist = history.assign(date=pd.to_datetime(history["date"]).dt.normalize())
    rows = hist[hist["pool"].isin(inputs.pools)].copy()
    elig = inputs.eligible.stack()
    elig.index.names = ["date", "pool"]
    rows["eligible"] = pd.MultiIndex.from_frame(rows[["date", "pool"]]).map(elig.to_dict()).fillna(False)
    rows["eligible"] = rows["eligible"].astype(bool)
    for col, ser in (("project", inputs.protocols), ("chain", inputs.chains)):
        rows[col] = rows["pool"].map(ser) if ser is not None else None
    if metadata is not None and "symbol" in metadata:
        rows["symbol"] = rows["pool"].map(metadata.drop_duplicates("pool", keep="last").set_index("pool")["symbol"])
    return rows.sort_values(["date", "pool"]).reset_index(drop=True)


def pool_labels(panel: pd.DataFrame) -> dict[str, str]:
    """Readable pool names for plots: ``SYMBOL project`` (the uuid prefix when unknown)."""
    last = panel.drop_duplicates("pool", keep="last").set_index("pool")
    symbol = last["symbol"] if "symbol" in last else pd.Series(index=last.index, dtype=object)
    project = last["project"] if "project" in last else pd.Series(index=last.index, dtype=object)
    return {p: (f"{symbol[p]} {project[p] or ''}".strip() if isinstance(symbol[p], str) else str(p)[:8])
            for p in last.index}


def inputs_from_panel(panel: pd.DataFrame, vault: VaultConfig, apy_column: str = "apy") -> BacktestInputs:
    """:func:`vault_panel` rows -> :class:`BacktestInputs`."""
    meta = panel.loc[panel["eligible"].astype(bool), ["date", "pool", "project", "chain"]].copy()
    meta["vaults"] = [[vault.name]] * len(meta)
    return BacktestInputs.from_long(panel, vault, meta, apy_column=apy_column)


def result_frame(result: BacktestResult) -> pd.DataFrame:
    """Steps plus one ``w__<pool>`` weight column per pool held at some point (one row per day)."""
    steps = result.steps.copy()
    if len(result.weights):
        wide = result.weight_panel().reindex(pd.DatetimeIndex(steps["date"])).fillna(0.0)
        wide.columns = [f"w__{c}" for c in wide.columns]
        steps = pd.concat([steps.reset_index(drop=True), wide.reset_index(drop=True)], axis=1)
    return steps


def result_from_frame(frame: pd.DataFrame, name: str, initial_wealth: float) -> BacktestResult:
    """Inverse of :func:`result_frame` (weights as a long frame; per-pool APYs are not stored)."""
    wcols = [c for c in frame.columns if c.startswith("w__")]
    steps = frame.drop(columns=wcols)
    long = frame[["date", *wcols]].melt(id_vars="date", var_name="pool", value_name="weight")
    long = long[long["weight"] > 0].assign(pool=lambda d: d["pool"].str.removeprefix("w__"))
    return BacktestResult(name, steps.reset_index(drop=True), long.reset_index(drop=True), initial_wealth)
