"""Backtest engine: the nightly decision replayed day by day on history (no dagster).

Same code as production: predictions come from the research engine (:func:`prediction_panel`),
each decision from :func:`step.rebalance_step` (``VaultOptimizer``), accrual from
:func:`step.accrue_step`. Benchmarks (``benchmarks.py``) go through the same loop (:func:`simulate`).

No look-ahead: the decision at t reads predictions, TVLs and eligibility of row t only, with an
optimizer over the pools known at t (the universe that day and the holdings); the accrual
t -> t+1 reads the earned yield, TVL and price move of row t+1.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from midfreq_assets.domain.backtest.config import BacktestConfig
from midfreq_assets.domain.config.tokens import TokenRegistry
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.ingest.universe import in_vault, vault_rows
from midfreq_assets.domain.portfolio.book import (
    UNDILUTED_COLUMNS,
    BookPanels,
    BookSeed,
    Optimizers,
    VaultBook,
    expand_decision,  # noqa: F401  (re-exported: engine.expand_decision)
    gap_panels,
)
from midfreq_assets.domain.portfolio.costs import TradingCosts
from midfreq_assets.domain.portfolio.optimizer import VaultOptimizer
from midfreq_assets.domain.portfolio.reductions import add_reduce as _sum
from midfreq_assets.domain.portfolio.reductions import or_reduce as _any
from midfreq_assets.domain.portfolio.step import StepDecision
from midfreq_assets.domain.portfolio.strategy import StrategyConfig
from midfreq_assets.domain.research import engine as research
from midfreq_assets.domain.research.bundles import ModelBundle, predict_days, weekly_bundles
from midfreq_assets.domain.research.models import NAIVE
from midfreq_assets.domain.research.plan import (
    merge_adjusted,
    needs_metadata,
    refit_dates,
    traded_label,
    warmup_rows,
)
from midfreq_assets.domain.units import DAYS_PER_YEAR

# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BacktestInputs:
    """Wide panels on one daily calendar (index ``date``, columns ``pool``).

    ``apy`` is the yield the vault earns (``adjusted_apy``: IL, underlying and peg already inside;
    or the raw quote); ``undiluted`` its part our own size does not dilute; ``il`` the IL inside it
    (annual, <= 0, for attribution); ``price_return`` the day's log price move of the pool's legs
    against the reference asset; ``present`` whether the pool had a data row that day (a short
    absence keeps a holding, ``StrategyConfig.max_gap_days``). Amounts (wealth, TVL, trades, costs)
    are in the vault's reference asset: ``ref_price`` is its USD price per day (None: USD), which
    converts TVLs and the strategy's dollar gas and minimum trade. With the pools' yield responses
    (``domain/yields/response.py``: history rows carrying ``size_base_usd`` and ``dilution_depth_usd``),
    ``tvl`` is the size base (a lending market's supply: what caps are a share of) and ``depth`` the
    dilution depth (what the decision and the accrual dilute by); without, ``depth`` is None: the TVL.
    """

    apy: pd.DataFrame  # earned yield, fraction/yr
    tvl: pd.DataFrame
    eligible: pd.DataFrame  # bool: in the vault's universe that day
    protocols: pd.Series | None = None  # pool -> project slug (for protocol caps)
    chains: pd.Series | None = None  # pool -> chain
    present: pd.DataFrame | None = None  # bool; None: where apy is finite
    undiluted: pd.DataFrame | None = None
    il: pd.DataFrame | None = None
    il_missing: pd.DataFrame | None = None  # bool: multi-token pool-day without il7d
    price_return: pd.DataFrame | None = None
    ref_price: pd.Series | None = None
    depth: pd.DataFrame | None = None  # the responses' dilution depth (None: the TVL)

    @property
    def pools(self) -> list[str]:
        return list(self.apy.columns)

    @property
    def dates(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.apy.index)

    @property
    def reported(self) -> pd.DataFrame:
        return self.present if self.present is not None else self.apy.notna()

    def window(self, start: dt.date | None, end: dt.date | None) -> BacktestInputs:
        sl = slice(pd.Timestamp(start) if start else None, pd.Timestamp(end) if end else None)
        cut = {
            f.name: getattr(self, f.name).loc[sl]
            for f in fields(self)
            if isinstance(getattr(self, f.name), pd.DataFrame)
        }
        return replace(self, **cut, ref_price=self.ref_price.loc[sl] if self.ref_price is not None else None)

    def costs_at(self, costs: TradingCosts, t: int) -> TradingCosts:
        """``costs`` in the reference asset on day t (unchanged for a USD vault). Before the first
        reference price nothing has a TVL in that asset, so nothing trades and the costs stay as given."""
        price = float(self.ref_price.iloc[t]) if self.ref_price is not None else 1.0
        return costs.in_reference(price) if np.isfinite(price) else costs

    @classmethod
    def from_long(
        cls,
        history: pd.DataFrame,
        vault: VaultConfig,
        metadata: pd.DataFrame | None = None,
        *,
        apy_column: str | None = None,
        in_reference: bool = True,
    ) -> BacktestInputs:
        """``pool_history`` rows (with the ``adjusted_yields`` columns merged in) -> panels.

        ``apy_column`` (default: the vault's ``backtest.apy_column``) is the yield earned; TVLs are
        converted into the vault's reference asset (``in_reference=False``: left in USD). Eligibility:
        with ``metadata`` (``pool_metadata`` rows with a ``vaults`` list), a pool is eligible on the
        days it is in ``vault``'s universe; without, on days its TVL clears
        ``vault.min_pool_tvl_usd``. Pools never eligible are dropped.
        """
        column = apy_column or vault.backtest.apy_column
        if column not in history.columns:
            raise KeyError(
                f"vault {vault.name}: backtest.apy_column {column!r} is not in the panel (columns: "
                f"{sorted(history.columns)}); adjusted_apy comes from <vault>/adjusted_yields"
            )
        hist = history.assign(date=pd.to_datetime(history["date"]).dt.normalize())
        days = pd.date_range(hist["date"].min(), hist["date"].max(), freq="D", name="date")

        def wide(col: str) -> pd.DataFrame:
            return hist.pivot(index="date", columns="pool", values=col).reindex(days).astype(float)

        apy, tvl = wide(column), wide("tvl_usd")
        depth = None
        if "dilution_depth_usd" in hist and "size_base_usd" in hist:  # the pools' yield responses
            size = wide("size_base_usd")
            tvl = size.where(np.isfinite(size) & (size > 0), tvl)
            depth = wide("dilution_depth_usd")
        ref_price = None
        if vault.reference_asset != "usd" and in_reference:
            if "reference_price" not in hist:
                raise KeyError(
                    f"vault {vault.name} counts in {vault.reference_asset}: the panel needs the "
                    "reference_price column of <vault>/adjusted_yields"
                )
            ref_price = hist.groupby("date")["reference_price"].first().reindex(days).ffill()
            tvl = tvl.div(ref_price, axis=0)
            depth = depth.div(ref_price, axis=0) if depth is not None else None
        present = (
            wide("_reported")
            if "_reported" in hist
            else hist.assign(_reported=1.0)
            .pivot(index="date", columns="pool", values="_reported")
            .reindex(days)
        )
        present = present.notna()
        protocols = chains = None
        if metadata is not None and len(metadata):
            meta = metadata.assign(date=pd.to_datetime(metadata["date"]).dt.normalize())
            member = meta[meta["vaults"].map(lambda v: in_vault(v, vault.name))]
            flag = member.assign(flag=True).pivot_table(
                index="date", columns="pool", values="flag", aggfunc="any"
            )
            eligible = flag.reindex(index=days, columns=apy.columns).fillna(False).astype(bool)
            last = meta.sort_values("date").drop_duplicates("pool", keep="last").set_index("pool")
            protocols = last.get("project")
            chains = last.get("chain")
        else:
            eligible = (tvl >= vault.min_pool_tvl_usd) & apy.notna()
        keep = eligible.any(axis=0)
        cols = list(keep[keep].index)
        earned = column == "adjusted_apy"
        parts = [wide(c) for c in UNDILUTED_COLUMNS if c in hist] if earned else []
        undiluted = sum(p.fillna(0.0) for p in parts).where(apy.notna())[cols] if parts else None
        il = wide("il_annual")[cols] if earned and "il_annual" in hist else None
        il_missing = (
            wide("flag_il_missing").fillna(0.0).astype(bool)[cols] if "flag_il_missing" in hist else None
        )
        price = wide("price_return")[cols] if "price_return" in hist else None
        return cls(
            apy[cols],
            tvl[cols],
            eligible[cols],
            protocols.reindex(cols) if protocols is not None else None,
            chains.reindex(cols) if chains is not None else None,
            present[cols],
            undiluted,
            il,
            il_missing,
            price,
            ref_price,
            depth[cols] if depth is not None else None,
        )


#: The adjusted_yields columns a backtest panel carries.
ADJUSTED_COLUMNS = [
    "adjusted_apy",
    *UNDILUTED_COLUMNS,
    "price_return",
    "price_exposed",
    "flag_il_missing",
    "reference_price",
]


def book_panels(inputs: BacktestInputs, predictions: pd.DataFrame | None = None) -> BookPanels:
    """``inputs`` (and ``predictions``, dates x pools) as the numpy panels a :class:`VaultBook` reads:
    gap ages in rows, steps of the calendar's length, pool labels static (the last metadata)."""
    pools = tuple(inputs.pools)
    dates = inputs.dates
    steps = np.diff(dates.as_unit("ns").asi8) / 86_400e9

    def arr(frame: pd.DataFrame | None) -> np.ndarray | None:
        return frame.to_numpy(dtype=float) if frame is not None else None

    def labels(series: pd.Series | None) -> np.ndarray | None:  # pools without a label fall under no cap
        return series.reindex(list(pools)).fillna("").to_numpy(dtype=object) if series is not None else None

    return BookPanels(
        pools,
        np.arange(len(dates), dtype=float),
        np.r_[1.0, steps] / DAYS_PER_YEAR,
        arr(inputs.apy),
        arr(inputs.tvl),
        inputs.eligible.to_numpy(dtype=bool),
        inputs.reported.to_numpy(dtype=bool),
        predicted=predictions.reindex(index=dates, columns=list(pools)).to_numpy(dtype=float)
        if predictions is not None
        else None,
        undiluted=arr(inputs.undiluted),
        il=arr(inputs.il),
        price_return=inputs.price_return.fillna(0.0).to_numpy(dtype=float)
        if inputs.price_return is not None
        else None,
        protocols=labels(inputs.protocols),
        chains=labels(inputs.chains),
        ref_price=inputs.ref_price.to_numpy(dtype=float) if inputs.ref_price is not None else None,
        depth=arr(inputs.depth),
    )


def gap_holds(inputs: BacktestInputs, max_gap_days: int) -> np.ndarray:
    """(dates x pools) True where a pool has no data row but had one, in the universe, at most
    ``max_gap_days`` days before: a holding there is kept, not sold (the book's gap rule,
    :func:`~midfreq_assets.domain.portfolio.book.gap_panels`)."""
    return gap_panels(book_panels(inputs), max_gap_days).hold


def accrual_panels(inputs: BacktestInputs, max_gap_days: int) -> dict[str, np.ndarray | None]:
    """What each accrual reads: the earned yield, its undiluted part and its IL, carried over a data
    gap of at most ``max_gap_days`` (the pool's last row's values; flagged as gap days); the legs'
    price move (0 on a day without a row: booked when the row comes back). The book's
    (:func:`~midfreq_assets.domain.portfolio.book.gap_panels`)."""
    g = gap_panels(book_panels(inputs), max_gap_days)
    return {
        "apy": g.earned,
        "undiluted": g.undiluted,
        "il": g.il,
        "price_return": inputs.price_return.fillna(0.0).to_numpy(dtype=float)
        if inputs.price_return is not None
        else None,
    }


def load_recorded(root: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bundled DefiLlama recording -> (``pool_history`` rows, ``/pools`` snapshot frame)."""
    from midfreq_assets.domain.ingest.pool_history import charts_frame
    from midfreq_assets.domain.ingest.universe import snapshot_frame

    root = Path(root) / "defillama" / "yields"
    charts = {p.stem: json.loads(p.read_text())["data"] for p in sorted((root / "chart").glob("*.json"))}
    history = charts_frame(charts)
    raw = json.loads((root / "pools.json").read_text())["data"]
    keys = {
        "tvlUsd": "tvl_usd",
        "apyBase": "apy_base",
        "apyReward": "apy_reward",
        "underlyingTokens": "underlying_tokens",
        "rewardTokens": "reward_tokens",
        "poolMeta": "pool_meta",
        "apyMean30d": "apy_mean_30d",
        "ilRisk": "il_risk",
    }
    snapshot = snapshot_frame([{keys.get(k, k): v for k, v in r.items()} for r in raw])
    return history, snapshot


def load_recorded_prices(root: Path | str) -> pd.DataFrame:
    """The recording's coins charts -> long ``token_prices`` rows (date, coin, price), one per coin and day."""
    rows = []
    for path in sorted((Path(root) / "defillama" / "coins" / "chart").glob("*.json")):
        for coin, chart in json.loads(path.read_text()).get("coins", {}).items():
            rows += [(coin, p["timestamp"], float(p["price"])) for p in chart.get("prices", [])]
    frame = pd.DataFrame(rows, columns=["coin", "timestamp", "price"])
    frame["date"] = pd.to_datetime(frame["timestamp"], unit="s").dt.normalize().astype("datetime64[ns]")
    return frame.drop_duplicates(["coin", "date"], keep="last")[["date", "coin", "price"]].reset_index(
        drop=True
    )


def recorded_panel(root: Path | str, vault: VaultConfig, tokens: TokenRegistry) -> pd.DataFrame:
    """The :func:`vault_panel` of the bundled recording: universe screened like ``pool_metadata``,
    adjusted yields computed like ``<vault>/adjusted_yields`` (what benchmarks and tests replay)."""
    from midfreq_assets.domain.ingest.universe import METADATA_COLUMNS, select_universe
    from midfreq_assets.domain.yields.adjusted import reference_pricing, vault_adjusted_yields

    history, snapshot = load_recorded(root)
    members, _ = select_universe(history.assign(reconstructed=True), snapshot, {vault.name: vault}, tokens)
    members = members[METADATA_COLUMNS]
    days = pd.date_range(history["date"].min(), history["date"].max(), freq="D")
    adjusted, _ = vault_adjusted_yields(
        history,
        members,
        load_recorded_prices(root),
        vault.name,
        vault.yields,
        days,
        reference_pricing(vault, tokens),
    )
    return vault_panel(with_adjusted_apy(history, adjusted), members, vault)


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
    stored: Mapping[str, ModelBundle | None] | None = None,
) -> pd.DataFrame:
    """Predicted APY (dates x pools) made at each date with data <= that date: production's weekly
    refit loop replayed (or, given ``stored``, production's own refits: see below).

    Models are refit on production's calendar (every ``models.refit_every_weeks`` Mondays from the
    first day a model can be trained, :func:`~midfreq_assets.domain.research.plan.refit_dates`) by
    the function ``fitted_models`` runs (:func:`~midfreq_assets.domain.research.bundles.weekly_bundles`),
    on the rows in the vault's universe that day (``eligible``, when the history has it) whose
    label ended before the refit. Each day is predicted by the latest refit's selected model
    (``models.selection``: the purged-CV winner among the estimators and the naive baseline, chosen
    on folds that ended before the refit), or by ``estimator`` when given. Before the first refit
    the prediction is NaN (the vault stays idle).

    ``stored``: the weekly bundles ``fitted_models`` stored (partition key -> bundle), used instead of
    refitting (:func:`stored_refits`: one per refit date of the calendar above, each holding the model
    the replay would fit, trained on as many rows as the replay's); :class:`StoredModelsMismatch`
    when they are not those (or may not be: features reading ``pool_metadata``), so the caller replays.
    """
    hist = history.assign(date=pd.to_datetime(history["date"]).dt.normalize())
    hist = hist.rename(columns={"pool": "instrument"})
    models = vault.models
    fam = models.family(family)
    if estimator is not None and estimator not in fam.estimators and estimator != NAIVE:
        raise KeyError(
            f"models.{family} has no estimator {estimator!r} (has {sorted(fam.estimators)} and {NAIVE!r})"
        )
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
    key_of = lambda b: b.model_key(label, estimator)  # noqa: E731
    if stored is not None:
        if needs_metadata(vault.feature_map):  # fitted_models' features read pool_metadata as known each day
            raise StoredModelsMismatch("the features read the universe or pool_metadata: the backtest refits")
        bundles = stored_refits(stored, as_ofs, train, labels, vault.label_map.label(label), key_of)
    else:
        bundles = weekly_bundles(
            {str(d.date()): d for d in as_ofs},
            train,
            labels,
            models,
            vault.label_map,
            cv_labels=None if estimator is not None else [label],
            only_labels=[label],
            only_estimators=[estimator] if estimator is not None else None,
        )
    raw = predict_days(bundles, features, days, key_of)
    if raw.empty:
        wide = pd.DataFrame(np.nan, index=days, columns=sorted(features["instrument"].unique()))
    else:
        wide = raw.pivot(index="date", columns="instrument", values="prediction").reindex(days)
    wide.index.name = "date"
    wide.columns.name = "pool"
    return wide


class StoredModelsMismatch(ValueError):
    """Stored weekly bundles that are not the refits a backtest replays (a refit date missing, or a
    model trained on other rows): the backtest refits instead."""


def research_settings(vault: VaultConfig) -> str:
    """What determines a vault's fitted models and predictions (features, labels, model families, CV,
    selection, refit calendar, predictor halflife...): two vaults with the same string fit the same
    models on the same data."""
    return json.dumps(
        [
            vault.start_date.isoformat(),
            *(p.model_dump(mode="json") for p in (vault.feature_map, vault.label_map, vault.models)),
        ],
        sort_keys=True,
    )


def stored_refits(
    stored: Mapping[str, ModelBundle | None],
    as_ofs: pd.DatetimeIndex,
    train: pd.DataFrame,
    labels: pd.DataFrame,
    info: research.LabelInfo,
    key_of: Callable[[ModelBundle], str | None],
) -> dict[str, ModelBundle]:
    """The stored bundles of the refit dates ``as_ofs`` (key: the date), checked to be the ones the
    replay would fit: one per date (an ``as_of`` on the calendar; none trained after it), and the model
    ``key_of`` names in it trained on exactly the rows the replay would train it on (the ``train``
    features joined with ``labels`` whose label ``info`` ended before the date, with a finite label and,
    unless the model takes missing values, every feature it reads). Bundles dated off the calendar are
    ignored (a week fitted for another start). Raises :class:`StoredModelsMismatch` otherwise."""
    by_date: dict[pd.Timestamp, ModelBundle] = {}
    for b in stored.values():
        if b is not None:
            by_date.setdefault(pd.Timestamp(b.as_of), b)
    joined = research.join_features_labels(train, labels) if len(train) and len(labels) else None
    finite = joined[info.name].notna().to_numpy() if joined is not None else None
    complete: dict[tuple[str, ...], np.ndarray] = {}
    out: dict[str, ModelBundle] = {}
    for as_of in as_ofs:
        bundle = by_date.get(pd.Timestamp(as_of))
        if bundle is None:
            raise StoredModelsMismatch(f"no stored model bundle with as_of {as_of.date()}")
        key = key_of(bundle)
        model = bundle.models[key] if key is not None else None
        if model is not None and model.as_of is not None and pd.Timestamp(model.as_of) > pd.Timestamp(as_of):
            raise StoredModelsMismatch(f"stored model {key} of {as_of.date()} is dated {model.as_of}")
        need = 0
        if joined is not None:  # with nothing stored, the replay must have nothing to learn from either
            ok = finite & research.known_mask(joined, info, as_of)
            cols = tuple(model.feature_columns) if model is not None and not model.allow_nan else ()
            if cols:
                if cols not in complete:
                    complete[cols] = joined[list(cols)].notna().all(axis=1).to_numpy()
                ok &= complete[cols]
            need = int(ok.sum())
        have = int(model.n_train) if model is not None else 0
        if need != have:
            raise StoredModelsMismatch(
                f"stored model {key or '(none)'} of {as_of.date()} trained on {have} rows, the replay's on {need}"
            )
        out[str(pd.Timestamp(as_of).date())] = bundle
    return out


def stored_digest(stored: Mapping[str, ModelBundle | None]) -> str:
    """A fingerprint of stored bundles (dates, models, training rows) for the prediction cache."""
    return json.dumps(
        sorted(
            (str(b.as_of), sorted((k, m.n_train) for k, m in b.models.items()))
            for b in stored.values()
            if b is not None
        )
    )


#: Prediction panels kept per process: grid points that differ only in strategy or backtest keys
#: share their research (features, weekly refits, CV selection), computed once per run of points.
PREDICTION_CACHE_SIZE = 16
_PREDICTIONS: OrderedDict[str, pd.DataFrame] = OrderedDict()


def history_digest(history: pd.DataFrame) -> str:
    """The content hash :func:`cached_prediction_panel` keys on (hash it once for many points)."""
    return hashlib.sha256(pd.util.hash_pandas_object(history, index=False).to_numpy().tobytes()).hexdigest()


def cached_prediction_panel(
    history: pd.DataFrame,
    vault: VaultConfig,
    *,
    estimator: str | None = None,
    label: str | None = None,
    digest_of_history: str | None = None,
    stored: Mapping[str, ModelBundle | None] | None = None,
) -> pd.DataFrame:
    """:func:`prediction_panel`, memoized on the history's content and the research configuration.
    ``digest_of_history``: :func:`history_digest` of ``history``, when the caller already has it.
    ``stored``: production's weekly bundles (:func:`prediction_panel`; raises
    :class:`StoredModelsMismatch` when they are not the replay's refits)."""
    digest = hashlib.sha256((digest_of_history or history_digest(history)).encode())
    for part in (vault.feature_map, vault.label_map, vault.models):
        digest.update(part.model_dump_json().encode())
    digest.update(f"{estimator}|{label}".encode())
    if stored is not None:
        digest.update(f"|stored|{stored_digest(stored)}".encode())
    key = digest.hexdigest()
    if key not in _PREDICTIONS:
        _PREDICTIONS[key] = prediction_panel(history, vault, estimator=estimator, label=label, stored=stored)
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
    """Replay the optimizer's decisions on ``inputs`` with ``predictions`` (dates x pools): the
    vault's book (:class:`~midfreq_assets.domain.portfolio.book.VaultBook`) over the panel, deciding
    at t and accruing t -> t+1.

    Causal universe: each decision's optimizer holds the pools known at t (in the universe that
    day, or held), as the nightly run's does; it is rebuilt when that set changes.
    ``start_state``: holdings to start from (default: cash ``initial_wealth``); ``step_offset``: steps
    already taken before ``inputs`` starts, so the rebalance days stay on the original calendar
    (a walk-forward window continues the path the previous window left)."""
    config = config or BacktestConfig()
    inputs = inputs.window(config.start, config.end)
    book = backtest_book(
        inputs, strategy, config, predictions=predictions, start_state=start_state, step_offset=step_offset
    )
    return simulate(
        inputs,
        book.policy,
        config,
        name=name,
        max_gap_days=strategy.max_gap_days,
        hold=book.hold,
        start_state=start_state,
        book=book,
    )


def backtest_book(
    inputs: BacktestInputs,
    strategy: StrategyConfig,
    config: BacktestConfig,
    *,
    predictions: pd.DataFrame | None = None,
    start_state: PortfolioState | None = None,
    step_offset: int = 0,
) -> VaultBook:
    """The book of a backtest on ``inputs`` (already windowed), from ``start_state`` (default: cash
    ``config.initial_wealth``), on the rebalance calendar of ``config``."""
    start_state = start_state or PortfolioState.cash(inputs.pools, config.initial_wealth)
    return VaultBook(
        book_panels(inputs, predictions),
        strategy,
        base_rate=config.base_rate,
        seed=BookSeed(start_state.aligned(inputs.pools), float(start_state.base)),
        rebalance_every_days=config.rebalance_every_days,
        step_offset=step_offset,
    )


class ActiveOptimizers(Optimizers):
    """:class:`~midfreq_assets.domain.portfolio.book.Optimizers` over the pools of ``inputs``
    (by index, labels from the metadata): the optimizer never sees a pool before it exists."""

    def __init__(self, inputs: BacktestInputs, strategy: StrategyConfig, costs: TradingCosts) -> None:
        super().__init__(strategy, costs)
        panels = book_panels(inputs)
        n = len(inputs.pools)
        empty = np.full(n, "", dtype=object)
        self.protocols = panels.protocols if panels.protocols is not None else empty
        self.chains = panels.chains if panels.chains is not None else empty
        self.pools = np.asarray(inputs.pools, dtype=object)

    def get(self, idx: np.ndarray) -> VaultOptimizer:
        return self.optimizer_for(self.pools[idx], self.protocols[idx], self.chains[idx])


def simulate(
    inputs: BacktestInputs,
    policy: Policy,
    config: BacktestConfig,
    *,
    name: str,
    max_gap_days: int = 0,
    hold: np.ndarray | None = None,
    predictions: np.ndarray | None = None,
    start_state: PortfolioState | None = None,
    book: VaultBook | None = None,
) -> BacktestResult:
    """The accounting loop shared by the strategy and the benchmarks (``inputs`` already windowed):
    each step t, ``policy`` decides from the book's holdings and base, and the book accrues into
    t + 1 (:meth:`VaultBook.accrue`, carrying a held pool's yield over a gap of at most
    ``max_gap_days``). ``hold`` (dates x pools) marks the gap days counted in ``n_held_in_gap``.

    Starts from ``start_state`` (default: cash ``config.initial_wealth``); the result's
    ``initial_wealth`` is the starting wealth and its ``end_state`` what the last step left.
    ``book``: the book to move (default: one over ``inputs`` from ``start_state``)."""
    dates = inputs.dates
    if len(dates) < 2:
        raise ValueError(f"backtest {name}: need at least two days of data, got {len(dates)}")
    start_state = start_state or PortfolioState.cash(inputs.pools, config.initial_wealth)
    if book is None:
        book = backtest_book(
            inputs,
            StrategyConfig().model_copy(update={"max_gap_days": max_gap_days}),
            config,
            start_state=start_state,
        )
    il_missing = inputs.il_missing.to_numpy(dtype=bool) if inputs.il_missing is not None else None
    elig = inputs.eligible.to_numpy(dtype=bool)
    hold = hold if hold is not None else np.zeros(elig.shape, dtype=bool)
    pools = np.asarray(inputs.pools, dtype=object)
    rows: list[dict[str, object]] = []
    w_dates: list[np.ndarray] = []
    w_pools: list[np.ndarray] = []
    w_vals: list[np.ndarray] = []
    w_pred: list[np.ndarray] = []
    w_real: list[np.ndarray] = []
    w_dil: list[np.ndarray] = []
    dt_years = book.panels.dt_years
    stamps = list(dates)  # Timestamps, once (indexing the DatetimeIndex per step boxes each)
    days64 = dates.to_numpy()
    il_missing_held = il_missing[1:] if il_missing is not None else None

    for t in range(len(dates) - 1):
        dec = policy(t, book.holdings, book.base)
        book.trade(dec)
        acc = book.accrue(t + 1)
        invested = float(_sum(dec.holdings_after))
        realized = (
            (float(np.log(_sum(acc.holdings) / invested)) / dt_years[t + 1]) if invested > 0 else np.nan
        )
        held = dec.holdings_after > 0
        n_elig = int(_sum(elig[t]))
        x = dec.target_weights
        rows.append(
            {
                "date": stamps[t],
                "date_end": stamps[t + 1],
                "wealth_start": dec.wealth_before,
                "cost_usd": dec.cost_usd,
                "gas_usd": dec.gas_usd,
                "n_trades": dec.n_trades,
                "forced_sales": dec.n_forced_sales,
                "turnover": dec.turnover,
                "invested": float(_sum(x)),
                "n_held": int(_sum(held)),
                "n_eligible": n_elig,
                "n_held_in_gap": int(_sum(held & hold[t])),
                "n_held_il_missing": int(_sum(held & il_missing_held[t]))
                if il_missing_held is not None
                else 0,
                "entropy": normalized_entropy(x, n_elig),
                "predicted_apy": dec.predicted_portfolio_apy,
                "realized_apy": realized,
                "dilution": float(_sum(x * acc.dilutor) / _sum(x)) if _sum(x) > 0 else np.nan,
                "il_usd": acc.il_usd,
                "price_pnl_usd": acc.price_pnl_usd,
                "missing_apy": acc.missing_apy,
                "status": dec.status,
                "solver": dec.result.solver if dec.result is not None else "none",
                "wealth": acc.wealth,
            }
        )
        if _any(held):
            w_dates.append(np.full(int(_sum(held)), days64[t]))
            w_pools.append(pools[held])
            w_vals.append(x[held])
            w_pred.append(dec.predicted_apy[held])
            w_real.append(acc.realized_apy[held])
            w_dil.append(acc.dilutor[held])
    steps = pd.DataFrame(rows)
    steps["tracking_error"] = steps["predicted_apy"] - steps["realized_apy"]

    def cat(parts: list[np.ndarray], dtype: object) -> np.ndarray:
        return np.concatenate(parts) if parts else np.array([], dtype=dtype)

    weights = pd.DataFrame(
        {
            "date": pd.DatetimeIndex(cat(w_dates, "datetime64[ns]")),
            "pool": cat(w_pools, object),
            "weight": cat(w_vals, float),
            "predicted_apy": cat(w_pred, float),
            "realized_apy": cat(w_real, float),
            "dilutor": cat(w_dil, float),
        }
    )
    return BacktestResult(
        name,
        steps,
        weights,
        start_state.wealth,
        PortfolioState(tuple(inputs.pools), book.holdings, book.base),
    )


def normalized_entropy(weights: np.ndarray, n: int) -> float:
    """``-sum p log p / log N`` of the invested weights (1 = spread evenly over N pools)."""
    w = np.asarray(weights, dtype=float)
    w = w[w > 0]
    if n <= 1 or _sum(w) <= 0:
        return 0.0
    p = w / _sum(w)
    return float(-_sum(p * np.log(p)) / np.log(n))


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
    """``history`` plus the :data:`ADJUSTED_COLUMNS` of ``adjusted_yields`` where they exist (the
    earned yield and what its accrual reads), so a backtest earns adjusted yields."""
    if adjusted is None or adjusted.empty or "adjusted_apy" not in adjusted:
        return history
    return merge_adjusted(history, adjusted, ADJUSTED_COLUMNS, "left")


def vault_panel(history: pd.DataFrame, metadata: pd.DataFrame | None, vault: VaultConfig) -> pd.DataFrame:
    """``pool_history`` rows of the pools ever in ``vault``'s universe, with ``eligible`` (in the
    universe that day), ``project`` and ``chain``: everything a backtest of the vault reads.
    Empty (no rows) when no pool was ever in the universe."""
    if history.empty or (metadata is not None and vault_rows(metadata, vault.name).empty):
        return history.iloc[0:0].assign(eligible=pd.Series(dtype=bool), project=None, chain=None)
    inputs = BacktestInputs.from_long(history, vault, metadata, apy_column="apy", in_reference=False)
    hist = history.assign(date=pd.to_datetime(history["date"]).dt.normalize())
    rows = hist[hist["pool"].isin(inputs.pools)].copy()
    elig = inputs.eligible.stack()
    elig.index.names = ["date", "pool"]
    rows["eligible"] = pd.MultiIndex.from_frame(rows[["date", "pool"]]).map(elig.to_dict()).fillna(False)
    rows["eligible"] = rows["eligible"].astype(bool)
    for col, ser in (("project", inputs.protocols), ("chain", inputs.chains)):
        rows[col] = rows["pool"].map(ser) if ser is not None else None
    if metadata is not None and "symbol" in metadata:
        rows["symbol"] = rows["pool"].map(
            metadata.drop_duplicates("pool", keep="last").set_index("pool")["symbol"]
        )
    return rows.sort_values(["date", "pool"]).reset_index(drop=True)


def pool_labels(panel: pd.DataFrame) -> dict[str, str]:
    """Readable pool names for plots: ``SYMBOL project`` (the uuid prefix when unknown)."""
    last = panel.drop_duplicates("pool", keep="last").set_index("pool")
    symbol = last["symbol"] if "symbol" in last else pd.Series(index=last.index, dtype=object)
    project = last["project"] if "project" in last else pd.Series(index=last.index, dtype=object)
    return {
        p: (f"{symbol[p]} {project[p] or ''}".strip() if isinstance(symbol[p], str) else str(p)[:8])
        for p in last.index
    }


def inputs_from_panel(
    panel: pd.DataFrame, vault: VaultConfig, apy_column: str | None = None
) -> BacktestInputs:
    """:func:`vault_panel` rows -> :class:`BacktestInputs` (earning ``apy_column``, default the vault's)."""
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
