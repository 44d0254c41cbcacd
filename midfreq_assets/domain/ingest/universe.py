"""Which pools a vault may hold on a day, and why every other pool was left out.

The screen has two parts: a *static* one on pool attributes (chain, protocol, underlying
tokens, exclusions) and a *TVL* one on the day's numbers, so that past days of a backfill can
be screened with the TVL that pool histories show on that day.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

from midfreq_assets.domain.config.base import normalize_slug
from midfreq_assets.domain.config.tokens import TokenRegistry
from midfreq_assets.domain.config.vault import VaultConfig

#: ``/pools`` describes "now": it stands for today and the last complete day.
LIVE_SNAPSHOT_LAG_DAYS = 1
METADATA_COLUMNS = [
    "date", "pool", "chain", "project", "symbol", "tvl_usd", "apy", "apy_base", "apy_reward",
    "underlying_tokens", "underlying_symbols", "reward_tokens", "pool_meta", "vaults", "reconstructed",
]
SNAPSHOT_COLUMNS = [
    "pool", "chain", "project", "symbol", "tvl_usd", "apy", "apy_base", "apy_reward",
    "underlying_tokens", "reward_tokens", "pool_meta",
]
_SYMBOL_SPLIT = re.compile(r"[-/_ +]+")


def snapshot_frame(records: list[Mapping[str, object]]) -> pd.DataFrame:
    """``/pools`` rows (snake_case keys, yields in percent) -> frame with yields as fractions."""
    frame = pd.DataFrame.from_records(records, columns=SNAPSHOT_COLUMNS)
    for col in ("tvl_usd", "apy", "apy_base", "apy_reward"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame[["apy", "apy_base", "apy_reward"]] /= 100.0
    frame["project"] = frame["project"].map(normalize_slug)
    return frame


def underlying_symbols(chain: str, addresses: list[str] | None, pool_symbol: str,
                       tokens: TokenRegistry) -> list[str]:
    """Map underlying token addresses to symbols; fall back to the parts of the pool symbol."""
    if addresses:
        mapped = [tokens.symbol_of(chain, a) for a in addresses]
        if all(m is not None for m in mapped):
            return [m for m in mapped if m is not None]
    return [s.lower() for s in _SYMBOL_SPLIT.split(pool_symbol) if s]


def whitelisted_tokens(vault: VaultConfig, tokens: TokenRegistry) -> set[str]:
    if vault.underlying_tokens is not None:
        return {t.lower() for t in vault.underlying_tokens}
    return set(tokens.pegged_symbols.get(vault.reference_asset, []))


def static_screen(snapshot: pd.DataFrame, vault: VaultConfig, tokens: TokenRegistry) -> pd.DataFrame:
    """Per pool of the snapshot: ``underlying_symbols`` and ``reason`` (None = passes).

    The first failing rule is the reason, in this order: excluded pool, excluded symbol,
    excluded project, chain, protocol, underlying token.
    """
    allowed_tokens = whitelisted_tokens(vault, tokens)
    chains = {c.lower() for c in vault.chains}
    projects = vault.protocol_slugs
    ex_pools = {p.lower() for p in vault.exclude.pools}
    ex_symbols = {s.lower() for s in vault.exclude.symbols}
    ex_projects = {normalize_slug(p) for p in vault.exclude.projects}

    symbols = [
        underlying_symbols(c, u if isinstance(u, list) else (list(u) if u is not None else None), s, tokens)
        for c, u, s in zip(snapshot["chain"], snapshot["underlying_tokens"], snapshot["symbol"], strict=True)
    ]
    reasons: list[str | None] = []
    for pool, chain, project, symbol, syms in zip(
        snapshot["pool"], snapshot["chain"], snapshot["project"], snapshot["symbol"], symbols, strict=True
    ):
        bad_tokens = [t for t in syms if t not in allowed_tokens]
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
            reasons.append(None)
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


def select_universe(rows: pd.DataFrame, snapshot: pd.DataFrame, vaults: Mapping[str, VaultConfig],
                    tokens: TokenRegistry) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Screen pools for every vault on every day of ``rows``.

    ``rows``: one row per (date, pool) with that day's ``tvl_usd`` (and yields); ``snapshot``:
    the pools' static attributes (``/pools``). The static screen runs once per pool, the TVL
    screen vectorized over all days. Returns (members: rows in at least one vault's universe,
    with ``underlying_symbols`` and ``vaults``; exclusions: one row per (vault, date, pool) left
    out, with its ``reason``).
    """
    static_cols = ["pool", "chain", "project", "symbol", "underlying_tokens", "reward_tokens", "pool_meta"]
    attrs = snapshot[static_cols].drop_duplicates("pool")
    screens = {name: static_screen(attrs, vault, tokens).set_index("pool") for name, vault in vaults.items()}
    day_rows = rows.drop(columns=[c for c in static_cols[1:] if c in rows.columns]).merge(attrs, on="pool", how="inner")
    member_masks = {}
    excluded = []
    for name, vault in vaults.items():
        static_reason = day_rows["pool"].map(screens[name]["reason"])
        reason = static_reason.where(static_reason.notna(), tvl_screen(day_rows, vault))
        ok = reason.isna().to_numpy()
        member_masks[name] = ok
        out = day_rows.loc[~ok, ["date", "pool", "chain", "project", "symbol", "tvl_usd"]].copy()
        out.insert(0, "vault", name)
        out["reason"] = reason[~ok].astype(str)
        excluded.append(out)
    names = np.array(list(vaults), dtype=object)
    stacked = np.column_stack([member_masks[n] for n in names]) if len(names) else np.zeros((len(day_rows), 0), bool)
    day_rows["vaults"] = [list(names[m]) for m in stacked]
    first_screen = next(iter(screens.values()))
    day_rows["underlying_symbols"] = day_rows["pool"].map(first_screen["underlying_symbols"])
    members = day_rows.loc[stacked.any(axis=1)].sort_values(["date", "pool"]).reset_index(drop=True)
    exclusions = pd.concat(excluded, ignore_index=True) if excluded else pd.DataFrame(
        columns=["vault", "date", "pool", "chain", "project", "symbol", "tvl_usd", "reason"]
    )
    return members, exclusions


def static_candidates(snapshot: pd.DataFrame, vaults: Mapping[str, VaultConfig], tokens: TokenRegistry) -> list[str]:
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
        return pd.MultiIndex.from_arrays([pd.DatetimeIndex([]), pd.Index([], dtype=object)], names=["date", "pool"])
    return pd.MultiIndex.from_arrays([pd.to_datetime(rows["date"]).dt.normalize(), rows["pool"].astype(str)],
                                     names=["date", "pool"])


# --------------------------------------------------------------------------------------------
# The day's universe: live snapshot or reconstructed from histories
# --------------------------------------------------------------------------------------------


def live_days(first: dt.date, last: dt.date, today: dt.date) -> list[dt.date]:
    """Days of ``first..last`` that today's ``/pools`` snapshot stands for (today and the last complete day)."""
    cutoff = today - dt.timedelta(days=LIVE_SNAPSHOT_LAG_DAYS)
    return [d.date() for d in pd.date_range(max(first, cutoff), last, freq="D")]


def universe_by_day(history: pd.DataFrame, snapshot: pd.DataFrame, vaults: Mapping[str, VaultConfig],
                    tokens: TokenRegistry, live: list[dt.date]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``pool_metadata`` rows and exclusions for the days of ``history`` plus the ``live`` days.

    A past day is screened on its own history rows (``reconstructed=True``: no historical
    ``/pools`` exists, so pools that vanished since are absent); a live day on the snapshot.
    """
    past = history.loc[~history["date"].dt.date.isin(live)]
    snapshot_rows = [snapshot.assign(date=pd.Timestamp(d)) for d in live]
    rows = pd.concat([past.assign(reconstructed=True), *(r.assign(reconstructed=False) for r in snapshot_rows)],
                     ignore_index=True)
    members, exclusions = select_universe(rows, snapshot, vaults, tokens)
    return members[METADATA_COLUMNS], exclusions


def pool_days_per_vault(members: pd.DataFrame, vaults: Mapping[str, VaultConfig]) -> dict[str, int]:
    """How many (pool, day) rows each vault's universe holds."""
    return {name: int(members["vaults"].map(lambda v, n=name: in_vault(v, n)).sum()) for name in vaults}
