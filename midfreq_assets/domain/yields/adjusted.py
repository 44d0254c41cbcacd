"""Adjusted yields: what a pool's quoted APY is worth once its risks and extras are priced in.

All yields are fractions per year, every price in the vault's reference asset
(:mod:`~midfreq_assets.domain.yields.exposure`). Components, each its own column so a reader can
see why a pool's adjusted APY differs from its quote (``docs/METHOD.md`` "Yields"):

- ``reward_haircut`` = ``(1 - discount) * apy_reward``, ``discount`` = min/max price ratio of
  the pool's worst reward token over a lookback window (reward tokens get dumped);
- ``underlying_apy`` = ``sum_i w_i apy_i`` over the pool's yield-bearing underlyings, ``w_i`` its
  share of the reserves (1/n unless configured), ``apy_i`` read from the token's own DefiLlama
  pool; 0 for projects whose APY already includes it (Curve, Convex);
- ``peg_yield`` = ``sum_i w_i (E[p_i] - p_i) / p_i / T`` per year over pegged legs (rich -> negative);
- ``il_annual`` = ``-|il7d| * 52`` (a loss, never a gain); a multi-token pool without il7d is
  flagged, and a price-exposed one gets the estimate from its legs' prices;
- ``adjusted_apy = apy - reward_haircut + underlying_apy + peg_yield + il_annual``: the one place
  IL is counted (the predictor's target and the accrual both read it).

``price_return`` (not a yield) is the day's log price move of the pool's legs against the
reference asset, 0 for pools whose legs are all pegged to it.

Every component at date t uses only prices and yields dated <= t: windows look back, gaps are
forward-filled (a bounded carry of the last good price; interpolating would read the future).
Pure pandas, no Dagster: the nightly run and the backtest call the same functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from midfreq_assets.domain.config.tokens import TokenRegistry
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.ingest.universe import vault_rows
from midfreq_assets.domain.units import DAYS_PER_YEAR
from midfreq_assets.domain.yields.config import PegYieldConfig, YieldAdjustmentConfig
from midfreq_assets.domain.yields.exposure import (
    ReferencePricing,
    basket_log_return,
    il_estimate,
    is_exposed,
    pool_legs,
    to_reference,
)

COMPONENT_COLUMNS = ["apy", "reward_haircut", "underlying_apy", "peg_yield", "il_annual", "adjusted_apy"]
FLAG_COLUMNS = [
    "flag_reward_tokens_unknown",
    "flag_reward_price_missing",
    "flag_underlying_missing",
    "flag_peg_price_missing",
    "flag_price_filled",
    "flag_depeg",
    "flag_il_missing",
    "flag_il_estimated",
    "flag_leg_price_missing",
]
#: Besides the components: the legs' price move, whether the pool is price-exposed, whether it is in the
#: universe that day, the reference asset's USD price and the TVL in the reference asset (what a vault
#: counting in ETH compares its holdings with).
EXPOSURE_COLUMNS = ["price_return", "price_exposed", "in_universe", "reference_price", "tvl_ref"]
OUTPUT_COLUMNS = [
    "date",
    "pool",
    *COMPONENT_COLUMNS,
    "apy_reward",
    "reward_discount",
    *EXPOSURE_COLUMNS,
    *FLAG_COLUMNS,
]

# --------------------------------------------------------------------------------------------
# Pool -> tokens
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolTokens:
    """What the adjustments need to know about one pool."""

    reward_coins: tuple[str, ...] | None = None
    underlying_symbols: tuple[str, ...] = ()
    project: str = ""
    weights: tuple[float, ...] | None = None  # reserve shares of the underlyings (None: 1/n)

    @property
    def shares(self) -> tuple[float, ...]:
        """Each underlying's share of the pool's reserves."""
        n = len(self.underlying_symbols)
        return self.weights if self.weights is not None else tuple([1.0 / n] * n)


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, float) and np.isnan(value):
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]  # type: ignore[union-attr]


def resolve_pool_tokens(metadata: pd.DataFrame, config: YieldAdjustmentConfig) -> dict[str, PoolTokens]:
    """Reward coins and underlying symbols per pool, from the latest ``pool_metadata`` row per pool.

    Reward tokens are DefiLlama addresses on the pool's chain; when DefiLlama has none (null), the
    project's configured default reward tokens are used. Reserve shares come from
    ``underlying_yield.pool_weights`` (DefiLlama's ``/pools`` has none): one share per underlying.
    """
    if metadata.empty:
        return {}
    latest = metadata.sort_values("date").groupby("pool", sort=False).tail(1)
    defaults = {k.lower(): v for k, v in config.reward_haircut.default_reward_tokens.items()}
    configured = config.underlying_yield.pool_weights
    out: dict[str, PoolTokens] = {}
    for row in latest.itertuples(index=False):
        rewards = _as_list(getattr(row, "reward_tokens", None))
        chain = str(getattr(row, "chain", "") or "")
        if rewards:
            coins: tuple[str, ...] | None = tuple(
                r if ":" in r else config.coin_id(chain, r) for r in rewards
            )
        else:
            project = str(getattr(row, "project", "") or "").lower()
            coins = tuple(defaults[project]) if project in defaults else None
        symbols = tuple(s.lower() for s in _as_list(getattr(row, "underlying_symbols", None)))
        weights = configured.get(str(row.pool))
        if weights is not None and len(weights) != len(symbols):
            raise ValueError(
                f"yields.underlying_yield.pool_weights.{row.pool}: {len(weights)} shares for "
                f"{len(symbols)} underlying token(s) {list(symbols)}"
            )
        out[str(row.pool)] = PoolTokens(
            reward_coins=coins,
            underlying_symbols=symbols,
            project=str(getattr(row, "project", "") or "").lower(),
            weights=tuple(weights) if weights is not None else None,
        )
    return out


# --------------------------------------------------------------------------------------------
# Prices
# --------------------------------------------------------------------------------------------


@dataclass
class PricePanel:
    """Daily prices (index date, columns coin) after cleaning, with what cleaning did."""

    prices: pd.DataFrame
    filled: pd.DataFrame
    rejected: pd.DataFrame
    report: dict[str, object] = field(default_factory=dict)


def daily_index(start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    return pd.date_range(
        pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize(), freq="D", name="date"
    )


def price_panel(
    prices: pd.DataFrame, dates: pd.DatetimeIndex, coins: Iterable[str], max_gap_days: int
) -> PricePanel:
    """Long ``token_prices`` -> a clean daily panel over ``dates``.

    Zero, negative and non-finite prices are rejected (NaN, counted); missing days are
    forward-filled up to ``max_gap_days``; whatever is still missing stays NaN and is reported.
    """
    coins = list(dict.fromkeys(coins))
    if prices.empty:
        raw = pd.DataFrame(np.nan, index=dates, columns=coins, dtype=float)
    else:
        frame = prices.assign(date=pd.to_datetime(prices["date"]).dt.normalize())
        raw = frame.pivot_table(index="date", columns="coin", values="price", aggfunc="last")
        raw.columns = raw.columns.astype(object)
        full = daily_index(min(raw.index.min(), dates.min()), max(raw.index.max(), dates.max()))
        raw = raw.reindex(index=full, columns=coins).astype(float)
    rejected = raw.notna() & ~(np.isfinite(raw) & (raw > 0))
    clean = raw.where(~rejected)
    filled_values = clean.ffill(limit=max_gap_days) if max_gap_days > 0 else clean
    filled = clean.isna() & filled_values.notna()
    panel = filled_values.reindex(dates)
    filled = filled.reindex(dates, fill_value=False)
    rejected = rejected.reindex(dates, fill_value=False)
    report = {
        "rejected_prices": {c: int(n) for c, n in rejected.sum().items() if n},
        "filled_days": {c: int(n) for c, n in filled.sum().items() if n},
        "missing_days": {c: int(n) for c, n in panel.isna().sum().items() if n},
    }
    return PricePanel(prices=panel, filled=filled, rejected=rejected, report=report)


def reward_discount_panel(prices: pd.DataFrame, lookback_days: int, min_observations: int) -> pd.DataFrame:
    """min/max price ratio per coin over the trailing window (1 = no drawdown).

    NaN when today's price is missing (beyond the fill limit) or the window holds too few prices:
    a stale window would claim a haircut nobody can observe.
    """
    window = prices.rolling(lookback_days, min_periods=min(min_observations, lookback_days))
    ratio = window.min() / window.max()
    return ratio.where(prices.notna()).clip(0.0, 1.0)


def peg_deviation_panel(
    prices: pd.DataFrame, pegs: Mapping[str, float], config: PegYieldConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per coin: annualized peg yield ``(E-p)/p / T`` (clipped, deadbanded) and the depeg flag."""
    coins = [c for c in pegs if c in prices.columns]
    p = prices[coins]
    expected = pd.Series({c: float(pegs[c]) for c in coins}, dtype=float)
    deviation = (expected - p) / p
    deviation = deviation.where(deviation.abs() >= config.deadband, 0.0).where(p.notna())
    bounded = deviation.clip(-config.max_abs_deviation, config.max_abs_deviation)
    annual = bounded * (DAYS_PER_YEAR / config.horizon_days)
    depeg = ((p / expected - 1.0).abs() > config.depeg_threshold).fillna(False)
    return annual, depeg


# --------------------------------------------------------------------------------------------
# The panel
# --------------------------------------------------------------------------------------------


def _wide(history: pd.DataFrame, column: str, dates: pd.DatetimeIndex, pools: list[str]) -> pd.DataFrame:
    if column not in history.columns or history.empty:
        return pd.DataFrame(np.nan, index=dates, columns=pools, dtype=float)
    wide = history.pivot_table(index="date", columns="pool", values=column, aggfunc="last", dropna=False)
    wide.columns = wide.columns.astype(object)
    return wide.reindex(index=dates, columns=pools).astype(float)


def _group_by_tokens(
    mapping: Mapping[str, tuple[str, ...] | None],
) -> dict[tuple[str, ...] | None, list[str]]:
    groups: dict[tuple[str, ...] | None, list[str]] = {}
    for pool, tokens in mapping.items():
        groups.setdefault(tokens, []).append(pool)
    return groups


def _broadcast(values: pd.Series, pools: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        np.repeat(values.to_numpy()[:, None], len(pools), axis=1), index=values.index, columns=pools
    )


def adjusted_yield_panel(
    history: pd.DataFrame,
    pool_tokens: Mapping[str, PoolTokens],
    prices: pd.DataFrame,
    config: YieldAdjustmentConfig,
    pools: Iterable[str] | None = None,
    output_dates: Iterable[pd.Timestamp] | None = None,
    reference: ReferencePricing | None = None,
) -> tuple[pd.DataFrame, dict[str, object]]:
    """Adjusted APY with each component, the legs' price return and flags, one row per (date, pool).

    ``history``: long ``pool_history`` (fractions) covering the output dates and the lookback;
    ``prices``: long ``token_prices`` (date, coin, price in USD); ``pools``: the pools to report
    (default: every pool in ``history``); ``output_dates``: the days to report (default: all);
    ``reference``: the vault's reference asset (default usd, nothing pegged: no price exposure).
    Returns the long frame and a report of what was filled, rejected or missing.
    """
    reference = reference or ReferencePricing()
    history = history.assign(date=pd.to_datetime(history["date"]).dt.normalize())
    pools = list(dict.fromkeys(pools)) if pools is not None else list(dict.fromkeys(history["pool"]))
    if history.empty:
        return pd.DataFrame(columns=OUTPUT_COLUMNS), {}
    start = history["date"].min()
    if not prices.empty:
        start = min(start, pd.to_datetime(prices["date"]).min().normalize())
    dates = daily_index(start, history["date"].max())
    tokens = {p: pool_tokens.get(p, PoolTokens()) for p in pools}

    apy = _wide(history, "apy", dates, pools)
    apy_reward = _wide(history, "apy_reward", dates, pools).fillna(0.0).clip(lower=0.0)
    false = pd.DataFrame(False, index=dates, columns=pools)

    coin_of = {s: t.coin for s, t in config.tokens.items()}
    coins = list(
        dict.fromkeys(
            list(coin_of.values())
            + [c for t in tokens.values() for c in (t.reward_coins or ())]
            + ([reference.coin] if reference.coin else [])
        )
    )
    panel = price_panel(prices, dates, coins, config.max_price_gap_days)
    in_ref, ref_missing = to_reference(panel.prices, reference)

    # Reward haircut: the worst reward token of the pool sets the discount.
    rh = config.reward_haircut
    discount = pd.DataFrame(1.0, index=dates, columns=pools)
    tokens_unknown = false.copy()
    price_missing = false.copy()
    price_filled = false.copy()
    if rh.method == "min_max_ratio":
        coin_discount = reward_discount_panel(in_ref, rh.lookback_days, rh.min_observations)
        for reward_coins, group in _group_by_tokens({p: t.reward_coins for p, t in tokens.items()}).items():
            has_reward = apy_reward[group] > 0
            if not reward_coins:
                discount[group] = discount[group].where(~has_reward, rh.missing_price_discount)
                tokens_unknown[group] = has_reward
                continue
            per_coin = coin_discount[list(reward_coins)]
            missing = per_coin.isna().any(axis=1)
            worst = per_coin.fillna(rh.missing_price_discount).min(axis=1)
            discount[group] = _broadcast(worst, group).where(has_reward, 1.0)
            price_missing[group] = has_reward & _broadcast(missing, group)
            price_filled[group] = has_reward & _broadcast(panel.filled[list(reward_coins)].any(axis=1), group)
    reward_haircut = (1.0 - discount) * apy_reward

    # Underlying yield: each yield-bearing underlying's own APY times its share of the reserves.
    uy = config.underlying_yield
    underlying_apy = pd.DataFrame(0.0, index=dates, columns=pools)
    underlying_missing = false.copy()
    if uy.pools:
        source = _wide(history, "apy", dates, list(dict.fromkeys(uy.pools.values())))
        source = source.ffill(limit=uy.max_gap_days) if uy.max_gap_days else source
        included = set(uy.included_in_apy)
        by_share = _group_by_tokens(
            {
                p: tuple((s, w) for s, w in zip(t.underlying_symbols, t.shares, strict=True) if s in uy.pools)
                for p, t in tokens.items()
                if t.project not in included
            }
        )
        for legs, group in by_share.items():
            if not legs:
                continue
            values = source[[uy.pools[s] for s, _ in legs]]
            shares = np.array([w for _, w in legs])
            underlying_apy[group] = _broadcast(
                pd.Series(values.fillna(0.0).to_numpy() @ shares, index=dates), group
            )
            underlying_missing[group] = _broadcast(values.isna().any(axis=1), group)

    # Peg deviation as yield, each pegged leg at its share of the reserves.
    peg_yield = pd.DataFrame(0.0, index=dates, columns=pools)
    peg_missing = false.copy()
    depeg = false.copy()
    if config.peg.enabled:
        pegs = {t.coin: t.peg for t in config.tokens.values() if t.peg is not None}
        coin_yield, coin_depeg = peg_deviation_panel(in_ref, pegs, config.peg)
        symbol_coin = {s: t.coin for s, t in config.tokens.items() if t.peg is not None}
        by_coins = _group_by_tokens(
            {
                p: tuple(
                    (symbol_coin[s], w)
                    for s, w in zip(t.underlying_symbols, t.shares, strict=True)
                    if s in symbol_coin
                )
                for p, t in tokens.items()
            }
        )
        for legs, group in by_coins.items():
            if not legs:
                continue
            cols = [c for c, _ in legs]
            shares = np.array([w for _, w in legs])
            peg_yield[group] = _broadcast(
                pd.Series(coin_yield[cols].fillna(0.0).to_numpy() @ shares, index=dates), group
            )
            peg_missing[group] = _broadcast(coin_yield[cols].isna().any(axis=1), group)
            depeg[group] = _broadcast(coin_depeg[cols].any(axis=1), group)
            price_filled[group] = price_filled[group] | _broadcast(panel.filled[cols].any(axis=1), group)

    # Legs not pegged to the reference asset: the day's price move and, without il7d, an IL estimate.
    il = config.impermanent_loss
    price_return = pd.DataFrame(0.0, index=dates, columns=pools)
    exposed = false.copy()
    leg_missing = false.copy()
    il_guess = pd.DataFrame(np.nan, index=dates, columns=pools)
    legs_of = {p: pool_legs(t.underlying_symbols, t.shares, reference, coin_of) for p, t in tokens.items()}
    for legs, group in _group_by_tokens({p: legs for p, legs in legs_of.items() if is_exposed(legs)}).items():
        ret, missing = basket_log_return(in_ref, legs)
        price_return[group] = _broadcast(ret, group)
        leg_missing[group] = _broadcast(missing, group)
        exposed[group] = True
        if len(legs) > 1:
            il_guess[group] = _broadcast(il_estimate(in_ref, legs, il.window_days), group)

    # Impermanent loss: a loss whatever sign DefiLlama gives it.
    il_annual = pd.DataFrame(0.0, index=dates, columns=pools)
    il_missing = false.copy()
    il_estimated = false.copy()
    if il.enabled:
        il7d = _wide(history, "il7d", dates, pools)
        scale = 0.01 if il.il7d_unit == "percent" else 1.0
        multi = pd.Series({p: len(t.underlying_symbols) > 1 for p, t in tokens.items()}, dtype=bool)
        il_missing = il7d.isna() & multi.reindex(pools).to_numpy()
        estimated = (
            (il_guess * il.periods_per_year).where(il_missing)
            if il.missing == "estimate"
            else il_guess * np.nan
        )
        il_estimated = estimated.notna()
        il_annual = (-il7d.abs() * scale * il.periods_per_year).fillna(estimated).fillna(0.0)

    adjusted = apy - reward_haircut + underlying_apy + peg_yield + il_annual
    ref_price = panel.prices[reference.coin] if reference.coin else pd.Series(1.0, index=dates)
    tvl_ref = _wide(history, "tvl_usd", dates, pools).div(ref_price, axis=0)

    columns = {
        "apy": apy,
        "reward_haircut": reward_haircut,
        "underlying_apy": underlying_apy,
        "peg_yield": peg_yield,
        "il_annual": il_annual,
        "adjusted_apy": adjusted,
        "apy_reward": apy_reward,
        "reward_discount": discount,
        "price_return": price_return,
        "price_exposed": exposed,
        "reference_price": _broadcast(ref_price, pools),
        "tvl_ref": tvl_ref,
        "flag_reward_tokens_unknown": tokens_unknown,
        "flag_reward_price_missing": price_missing,
        "flag_underlying_missing": underlying_missing,
        "flag_peg_price_missing": peg_missing,
        "flag_price_filled": price_filled,
        "flag_depeg": depeg,
        "flag_il_missing": il_missing,
        "flag_il_estimated": il_estimated,
        "flag_leg_price_missing": leg_missing,
    }
    present = history[history["pool"].isin(pools)][["date", "pool"]].drop_duplicates()
    if output_dates is not None:
        wanted = pd.DatetimeIndex(pd.to_datetime(list(output_dates))).normalize()
        present = present[present["date"].isin(wanted)]
    rows = pd.MultiIndex.from_frame(present)
    stacked = {
        name: frame.rename_axis(index="date", columns="pool").stack(future_stack=True).reindex(rows)
        for name, frame in columns.items()
    }
    out = pd.DataFrame(stacked).reset_index()
    for flag in [*FLAG_COLUMNS, "price_exposed"]:
        out[flag] = out[flag].fillna(False).astype(bool)
    out["in_universe"] = True
    out["pool"] = out["pool"].astype(str)
    out = out[OUTPUT_COLUMNS].sort_values(["date", "pool"]).reset_index(drop=True)
    report: dict[str, object] = {
        "prices": panel.report,
        "flag_counts": {f: int(out[f].sum()) for f in FLAG_COLUMNS if out[f].any()},
    }
    if reference.coin is not None:
        report["reference_price_missing_days"] = int(
            ref_missing.reindex(pd.DatetimeIndex(present["date"]).unique()).fillna(True).sum()
        )
    return out, report


def reference_pricing(vault: VaultConfig, tokens: TokenRegistry) -> ReferencePricing:
    """The vault's reference asset, its USD price coin and its pegged symbols."""
    asset = vault.reference_asset
    return ReferencePricing(asset, tokens.reference_coin(asset), tokens.pegged(asset))


def recent_members(
    metadata: pd.DataFrame, vault_name: str, days: pd.DatetimeIndex, memory_days: int
) -> pd.DataFrame:
    """(date, pool, in_universe) for each day of ``days`` and each pool in the vault's universe on that day
    or on one of the ``memory_days`` days before it (``metadata`` covers that window)."""
    rows = vault_rows(metadata, vault_name)
    if rows.empty or not len(days):
        return pd.DataFrame(
            {
                "date": pd.Series(dtype="datetime64[ns]"),
                "pool": pd.Series(dtype=object),
                "in_universe": pd.Series(dtype=bool),
            }
        )
    member = rows.assign(date=pd.to_datetime(rows["date"]).dt.normalize(), flag=1.0).pivot_table(
        index="date", columns="pool", values="flag", aggfunc="max"
    )
    calendar = daily_index(min(member.index.min(), days.min()), max(member.index.max(), days.max()))
    member = member.reindex(calendar).fillna(0.0)
    recent = member.rolling(memory_days + 1, min_periods=1).max().reindex(days).fillna(0.0)
    today = member.reindex(days).fillna(0.0)
    stacked = pd.DataFrame({"recent": recent.stack(), "in_universe": today.stack() > 0})
    stacked = stacked[stacked["recent"] > 0].drop(columns="recent")
    stacked.index.names = ["date", "pool"]
    out = stacked.reset_index()
    out["pool"] = out["pool"].astype(str)
    return out


def vault_adjusted_yields(
    history: pd.DataFrame,
    metadata: pd.DataFrame,
    prices: pd.DataFrame,
    vault_name: str,
    config: YieldAdjustmentConfig,
    days: pd.DatetimeIndex,
    reference: ReferencePricing | None = None,
) -> tuple[pd.DataFrame, dict[str, object]]:
    """Adjusted yields of ``vault_name``'s pools on ``days``: every pool in its universe that day or within
    ``config.exit_memory_days`` before (``in_universe`` says which), priced in ``reference``.

    ``history``/``prices`` cover ``days`` plus the config's lookback; ``metadata`` covers ``days`` plus
    the exit memory. Returns one row per (date, pool) and the price report.
    """
    members = recent_members(
        metadata, vault_name, pd.DatetimeIndex(days).normalize(), config.exit_memory_days
    )
    pools = sorted(members["pool"].unique())
    if history.empty or not pools:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in OUTPUT_COLUMNS}), {}
    out, report = adjusted_yield_panel(
        history,
        resolve_pool_tokens(vault_rows(metadata, vault_name), config),
        prices,
        config,
        pools=pools,
        output_dates=days,
        reference=reference,
    )
    out = out.drop(columns="in_universe").merge(members, on=["date", "pool"], how="inner")
    return out[OUTPUT_COLUMNS].reset_index(drop=True), report


def flag_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Rows per raised flag (only the flags that are raised somewhere)."""
    return {f: int(frame[f].sum()) for f in FLAG_COLUMNS if len(frame) and frame[f].any()}


def universe_flag_counts(frame: pd.DataFrame) -> dict[str, int]:
    """:func:`flag_counts` of the rows in the universe that day (the ones a decision can trade)."""
    return flag_counts(frame[frame["in_universe"].astype(bool)] if len(frame) else frame)
