"""Which pools a vault may hold on a day, and why every other pool was left out.

The screen has two parts: a *static* one on pool attributes (chain, protocol, underlying
tokens, exclusions, DefiLlama flags, symbol patterns, allow-list) and a *per-day* one on the
day's numbers (TVL, 30-day mean APY, the ``top_pools`` ranking of the window before the day), so
that past days of a backfill are screened with what the pool histories show up to that day.
The discovery rules live in ``discovery.py`` and ``ranking.py``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from midfreq_assets.domain.config.base import normalize_slug
from midfreq_assets.domain.config.tokens import TokenRegistry
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.ingest import discovery
from midfreq_assets.domain.ingest.pool_history import FLAG, sanity_flags
from midfreq_assets.domain.ingest.ranking import RANKING_COLUMNS

#: ``/pools`` describes "now": it stands for today and the last complete day.
LIVE_SNAPSHOT_LAG_DAYS = 1
METADATA_COLUMNS = [
    "date",
    "pool",
    "chain",
    "project",
    "symbol",
    "tvl_usd",
    "apy",
    "apy_base",
    "apy_reward",
    "underlying_tokens",
    "underlying_symbols",
    "reward_tokens",
    "pool_meta",
    "vaults",
    "reconstructed",
]
SNAPSHOT_COLUMNS = [
    "pool",
    "chain",
    "project",
    "symbol",
    "tvl_usd",
    "apy",
    "apy_base",
    "apy_reward",
    "underlying_tokens",
    "reward_tokens",
    "pool_meta",
    "apy_mean_30d",
    *discovery.DISCOVERY_ATTRIBUTES,
]
_SYMBOL_SPLIT = re.compile(r"[-/_ +]+")


def snapshot_frame(records: list[Mapping[str, object]]) -> pd.DataFrame:
    """``/pools`` rows (snake_case keys, yields in percent) -> frame with yields as fractions."""
    frame = pd.DataFrame.from_records(records, columns=SNAPSHOT_COLUMNS)
    for col in ("tvl_usd", "apy", "apy_base", "apy_reward", "apy_mean_30d"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame[["apy", "apy_base", "apy_reward", "apy_mean_30d"]] /= 100.0
    frame["project"] = frame["project"].map(normalize_slug)
    return frame


def underlying_symbols(
    chain: str, addresses: list[str] | None, pool_symbol: str, tokens: TokenRegistry
) -> list[str]:
    """Map underlying token addresses to symbols; fall back to the parts of the pool symbol."""
    return resolve_underlying(chain, addresses, pool_symbol, tokens)[0]


def resolve_underlying(
    chain: str, addresses: list[str] | None, pool_symbol: str, tokens: TokenRegistry
) -> tuple[list[str], bool]:
    """(underlying symbols, whether every address was known to the registry, i.e. no fallback)."""
    if addresses:
        mapped = [tokens.symbol_of(chain, a) for a in addresses]
        if all(m is not None for m in mapped):
            return [m for m in mapped if m is not None], True
    return [s.lower() for s in _SYMBOL_SPLIT.split(pool_symbol) if s], False


def whitelisted_tokens(vault: VaultConfig, tokens: TokenRegistry) -> set[str]:
    if vault.underlying_tokens is not None:
        return {t.lower() for t in vault.underlying_tokens}
    return set(tokens.pegged_symbols.get(vault.reference_asset, []))


def price_exposure_reason(symbols: list[str], vault: VaultConfig, pegged: frozenset[str]) -> str | None:
    """Why a pool holding tokens not pegged to the vault's reference asset is refused (None: it may be held).

    Refused unless the vault sets ``allow_price_exposure``; even then each such token needs a price
    (``yields.tokens``), or its moves could not be accounted.
    """
    exposed = [t for t in symbols if t not in pegged]
    if not exposed:
        return None
    if not vault.allow_price_exposure:
        return (
            f"price exposure: {','.join(exposed)} not pegged to {vault.reference_asset} "
            "(allow_price_exposure is false)"
        )
    unpriced = [t for t in exposed if t not in vault.yields.tokens]
    if unpriced:
        return f"price exposure: no price coin for {','.join(unpriced)} in yields.tokens"
    return None


def static_screen(snapshot: pd.DataFrame, vault: VaultConfig, tokens: TokenRegistry) -> pd.DataFrame:
    """Per pool of the snapshot: ``underlying_symbols`` and ``reason`` (None = passes).

    The first failing rule is the reason, in this order: excluded pool, excluded symbol,
    excluded project, chain, protocol, underlying token, price exposure (a share symbol vouched
    for by ``symbol_patterns`` counts as pegged), then the discovery rules
    (:func:`discovery.static_discovery_reasons`). (Per day, a row flagged implausible comes next,
    then the TVL screen.)
    """
    allowed_tokens = whitelisted_tokens(vault, tokens)
    pegged = tokens.pegged(vault.reference_asset)
    chains = {c.lower() for c in vault.chains}
    projects = vault.protocol_slugs
    ex_pools = {p.lower() for p in vault.exclude.pools}
    ex_symbols = {s.lower() for s in vault.exclude.symbols}
    ex_projects = {normalize_slug(p) for p in vault.exclude.projects}

    resolved = [
        resolve_underlying(c, u if isinstance(u, list) else (list(u) if u is not None else None), s, tokens)
        for c, u, s in zip(snapshot["chain"], snapshot["underlying_tokens"], snapshot["symbol"], strict=True)
    ]
    symbols = [syms for syms, _ in resolved]
    vouch = discovery.share_symbol_matcher(vault)
    reasons: list[str | None] = []
    for pool, chain, project, symbol, (syms, known) in zip(
        snapshot["pool"], snapshot["chain"], snapshot["project"], snapshot["symbol"], resolved, strict=True
    ):
        bad_tokens = [t for t in syms if t not in allowed_tokens and not (vouch and not known and vouch(t))]
        if str(pool).lower() in ex_pools:
            reasons.append("excluded pool")
        elif str(symbol).lower() in ex_symbols:
            reasons.append(f"excluded symbol {symbol}")
        elif project in ex_projects:
            reasons.append(f"excluded project {project}")
        elif str(chain).lower() not in chains:
            reasons.append(f"chain {chain} not in vault chains")
        elif project not in projects:
            reasons.append(f"protocol {project} not whitelisted")
        elif bad_tokens:
            reasons.append(f"underlying {','.join(bad_tokens)} not whitelisted for {vault.reference_asset}")
        else:
            vouched = {t for t in syms if vouch and not known and vouch(t)}
            reasons.append(price_exposure_reason([t for t in syms if t not in vouched], vault, pegged))
    reasons = list(
        discovery.first_reason(
            np.asarray(reasons, dtype=object), discovery.static_discovery_reasons(snapshot, vault)
        )
    )
    return pd.DataFrame(
        {"pool": snapshot["pool"].to_numpy(), "underlying_symbols": symbols, "reason": reasons},
        index=snapshot.index,
    )


def protocol_tvl(rows: pd.DataFrame) -> pd.Series:
    """Sum of pool TVL per (date, project), aligned to ``rows`` (from the pools the data covers)."""
    return rows.groupby(["date", "project"])["tvl_usd"].transform("sum")


def tvl_screen(rows: pd.DataFrame, vault: VaultConfig) -> pd.Series:
    """Reason (or None) per row of candidate pools, from each row's own day's TVL."""
    tvl = rows["tvl_usd"].to_numpy(dtype="float64")
    reasons = np.full(len(rows), None, dtype=object)
    missing = ~np.isfinite(tvl)
    reasons[missing] = "no TVL on this day"
    low = ~missing & (tvl < vault.min_pool_tvl_usd)
    reasons[low] = f"pool TVL below {vault.min_pool_tvl_usd:,.0f} USD"
    if vault.min_protocol_tvl_usd is not None:
        ptvl = protocol_tvl(rows).to_numpy(dtype="float64")
        low_protocol = pd.isna(reasons) & (ptvl < vault.min_protocol_tvl_usd)
        reasons[low_protocol] = f"protocol TVL below {vault.min_protocol_tvl_usd:,.0f} USD"
    return pd.Series(reasons, index=rows.index, dtype=object)


@dataclass(frozen=True)
class Universe:
    """The screen of some days: ``members`` (rows in at least one vault's universe), ``exclusions``
    (one row per (vault, date, pool) left out, with its reason) and ``rankings`` (every vault's
    ``top_pools`` ranking of the pools passing its other rules, :data:`RANKING_COLUMNS`)."""

    members: pd.DataFrame
    exclusions: pd.DataFrame
    rankings: pd.DataFrame


def select_universe(
    rows: pd.DataFrame,
    snapshot: pd.DataFrame,
    vaults: Mapping[str, VaultConfig],
    tokens: TokenRegistry,
    *,
    lookback: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(members, exclusions) of :func:`screen_universe`."""
    universe = screen_universe(rows, snapshot, vaults, tokens, lookback=lookback)
    return universe.members, universe.exclusions


def screen_universe(
    rows: pd.DataFrame,
    snapshot: pd.DataFrame,
    vaults: Mapping[str, VaultConfig],
    tokens: TokenRegistry,
    *,
    lookback: pd.DataFrame | None = None,
) -> Universe:
    """Screen pools for every vault on every day of ``rows``.

    ``rows``: one row per (date, pool) with that day's ``tvl_usd`` (and yields); ``snapshot``:
    the pools' static attributes (``/pools``). The static screen runs once per pool, the TVL
    screen vectorized over all days. ``lookback``: history rows (any days; those within
    :func:`discovery.lookback_days` before the first day of ``rows`` are used) that the trailing
    discovery rules read; they are screened the same way but never returned. Returns a
    :class:`Universe` (members with ``underlying_symbols`` and ``vaults``, exclusions with their
    ``reason``, and every vault's ``top_pools`` ranking of the days of ``rows``).
    """
    static_cols = [
        "pool",
        "chain",
        "project",
        "symbol",
        "underlying_tokens",
        "reward_tokens",
        "pool_meta",
        *discovery.DISCOVERY_ATTRIBUTES,
    ]
    attrs = snapshot[[c for c in static_cols if c in snapshot]].drop_duplicates("pool")
    screens = {name: static_screen(attrs, vault, tokens).set_index("pool") for name, vault in vaults.items()}
    rows = _with_lookback(rows, lookback, discovery.lookback_days(vaults))
    day_rows = rows.drop(columns=[c for c in static_cols[1:] if c in rows.columns]).merge(
        attrs, on="pool", how="inner"
    )
    in_range = ~day_rows.pop("_lookback").to_numpy(dtype=bool)
    mean_30d = discovery.apy_mean_30d(day_rows) if len(day_rows) else np.zeros(0)
    member_masks = {}
    excluded = []
    ranked = []
    flag = day_rows[FLAG] if FLAG in day_rows.columns else pd.Series(None, index=day_rows.index, dtype=object)
    flag_reason = ("implausible value: " + flag.astype(str)).where(flag.notna(), None)
    for name, vault in vaults.items():
        static_reason = day_rows["pool"].map(screens[name]["reason"])
        reason = static_reason.where(static_reason.notna(), flag_reason)
        reason = reason.where(reason.notna(), tvl_screen(day_rows, vault))
        reason, ranking, screened = _day_discovery(day_rows, reason, mean_30d, vault)
        ranked.append(ranking[in_range & screened].assign(vault=name))
        reason = reason[in_range]
        ok = reason.isna().to_numpy()
        member_masks[name] = ok
        out = day_rows[in_range].loc[~ok, ["date", "pool", "chain", "project", "symbol", "tvl_usd"]].copy()
        out.insert(0, "vault", name)
        out["reason"] = reason[~ok].astype(str)
        excluded.append(out)
    day_rows = day_rows[in_range].drop(
        columns=["apy_mean_30d", *discovery.DISCOVERY_ATTRIBUTES], errors="ignore"
    )
    names = np.array(list(vaults), dtype=object)
    stacked = (
        np.column_stack([member_masks[n] for n in names])
        if len(names)
        else np.zeros((len(day_rows), 0), bool)
    )
    day_rows["vaults"] = [list(names[m]) for m in stacked]
    first_screen = next(iter(screens.values()))
    day_rows["underlying_symbols"] = day_rows["pool"].map(first_screen["underlying_symbols"])
    members = day_rows.loc[stacked.any(axis=1)].sort_values(["date", "pool"]).reset_index(drop=True)
    exclusions = (
        pd.concat(excluded, ignore_index=True)
        if excluded
        else pd.DataFrame(
            columns=["vault", "date", "pool", "chain", "project", "symbol", "tvl_usd", "reason"]
        )
    )
    rankings = pd.concat(ranked, ignore_index=True) if ranked else pd.DataFrame(columns=RANKING_COLUMNS)
    return Universe(
        members,
        exclusions,
        rankings.sort_values(["vault", "date", "pool"])[RANKING_COLUMNS].reset_index(drop=True),
    )


def _with_lookback(rows: pd.DataFrame, lookback: pd.DataFrame | None, days: int) -> pd.DataFrame:
    """``rows`` flagged ``_lookback=False``, after the ``days`` days of ``lookback`` before them (``True``)."""
    rows = rows.assign(_lookback=False)
    if lookback is None or not days or rows.empty or lookback.empty:
        return rows
    first = pd.to_datetime(rows["date"]).min()
    when = pd.to_datetime(lookback["date"])
    before = lookback[(when < first) & (when >= first - pd.Timedelta(days=days))]
    return pd.concat([before.assign(_lookback=True), rows], ignore_index=True)


def _day_discovery(
    day_rows: pd.DataFrame, reason: pd.Series, mean_30d: np.ndarray, vault: VaultConfig
) -> tuple[pd.Series, pd.DataFrame, np.ndarray]:
    """The day-level discovery rules after the static and TVL screens: the 30-day mean APY floor,
    then the ``top_pools`` ranking of the rows passing every other rule (and its allow-list).
    Returns the reasons, the ranking per row and which rows it ranked (passing every other rule)."""
    out = discovery.first_reason(reason.to_numpy(dtype=object), discovery.apy_mean_reasons(mean_30d, vault))
    screened = pd.isna(out)
    ranking, allow = discovery.top_pools_screen(day_rows, screened, vault)
    out = discovery.first_reason(out, allow)
    ranking = pd.concat(
        [
            day_rows[["date", "pool", "symbol", "project", "chain"]],
            ranking.drop(columns="date", errors="ignore"),
        ],
        axis=1,
    )
    return pd.Series(out, index=reason.index, dtype=object), ranking, screened


def static_candidates(
    snapshot: pd.DataFrame, vaults: Mapping[str, VaultConfig], tokens: TokenRegistry
) -> list[str]:
    """Pools that pass at least one vault's static screen: the ones worth fetching histories for."""
    keep = np.zeros(len(snapshot), dtype=bool)
    for vault in vaults.values():
        keep |= static_screen(snapshot, vault, tokens)["reason"].isna().to_numpy()
    return snapshot.loc[keep, "pool"].tolist()


# --------------------------------------------------------------------------------------------
# Membership: the one test of "is this pool in this vault's universe that day"
# --------------------------------------------------------------------------------------------


def in_vault(vaults: object, name: str) -> bool:
    """True when a ``pool_metadata`` ``vaults`` cell (a list of vault names, or null) names ``name``."""
    if vaults is None or isinstance(vaults, float | str):
        return False
    return name in list(vaults)  # type: ignore[call-overload]


def vault_rows(metadata: pd.DataFrame, name: str) -> pd.DataFrame:
    """The ``pool_metadata`` rows of vault ``name``'s universe."""
    if metadata is None or metadata.empty or "vaults" not in metadata:
        return metadata.iloc[0:0] if metadata is not None else pd.DataFrame()
    return metadata[metadata["vaults"].map(lambda v: in_vault(v, name)).to_numpy(dtype=bool)]


def universe_pairs(metadata: pd.DataFrame, name: str) -> pd.MultiIndex:
    """(date, pool) pairs of vault ``name``'s universe (dates normalized to the UTC day)."""
    rows = vault_rows(metadata, name)
    if rows.empty:
        return pd.MultiIndex.from_arrays(
            [pd.DatetimeIndex([]), pd.Index([], dtype=object)], names=["date", "pool"]
        )
    return pd.MultiIndex.from_arrays(
        [pd.to_datetime(rows["date"]).dt.normalize(), rows["pool"].astype(str)], names=["date", "pool"]
    )


# --------------------------------------------------------------------------------------------
# The day's universe: live snapshot or reconstructed from histories
# --------------------------------------------------------------------------------------------


def live_days(first: dt.date, last: dt.date, today: dt.date) -> list[dt.date]:
    """Days of ``first..last`` that today's ``/pools`` snapshot stands for (today and the last complete day)."""
    cutoff = today - dt.timedelta(days=LIVE_SNAPSHOT_LAG_DAYS)
    return [d.date() for d in pd.date_range(max(first, cutoff), last, freq="D")]


def universe_by_day(
    history: pd.DataFrame,
    snapshot: pd.DataFrame,
    vaults: Mapping[str, VaultConfig],
    tokens: TokenRegistry,
    live: list[dt.date],
    *,
    lookback: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``pool_metadata`` rows, exclusions and rankings for the days of ``history`` plus the ``live`` days.

    A past day is screened on its own history rows (``reconstructed=True``: no historical
    ``/pools`` exists, so pools that vanished since are absent); a live day on the snapshot.
    ``lookback``: every fetched history row, for the trailing discovery rules (:func:`select_universe`).
    """
    past = history.loc[~history["date"].dt.date.isin(live)]
    snapshot = snapshot.assign(**{FLAG: sanity_flags(snapshot)})
    snapshot_rows = [snapshot.assign(date=pd.Timestamp(d)) for d in live]
    rows = pd.concat(
        [past.assign(reconstructed=True), *(r.assign(reconstructed=False) for r in snapshot_rows)],
        ignore_index=True,
    )
    universe = screen_universe(rows, snapshot, vaults, tokens, lookback=lookback)
    return universe.members[METADATA_COLUMNS], universe.exclusions, universe.rankings


def pool_days_per_vault(members: pd.DataFrame, vaults: Mapping[str, VaultConfig]) -> dict[str, int]:
    """How many (pool, day) rows each vault's universe holds."""
    return {name: int(members["vaults"].map(lambda v, n=name: in_vault(v, n)).sum()) for name in vaults}
