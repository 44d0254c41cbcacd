"""Discovery rules of a vault's universe, beyond chain, protocol, tokens and TVL.

The original midfreq's ``DiscoveryDefiLlama`` screens, each with its exclusion reason:

- static (pool attributes of ``/pools``): ``exclude_il_risk`` (DefiLlama ``ilRisk == "yes"``;
  unknown is kept, as the original did), ``stablecoin_only`` (``stablecoin`` must be true),
  ``exposure`` (``single``/``multi`` must equal the pool's), ``symbol_patterns`` (the pool symbol
  must match one), ``selected_pools`` (a hand allow-list of uuids);
- per day: ``min_apy_mean_30d``, a floor on the pool's mean APY over the 30 days ending that day.
  A live day reads DefiLlama's own ``apyMean30d``; a reconstructed past day the trailing mean of
  the pool's history (today's ``apyMean30d`` describes today: using it for a past day would be
  look-ahead);
- the ``top_pools`` allow-list (per day, point in time): :mod:`midfreq_assets.domain.ingest.ranking`.

``symbol_patterns`` also stand in for the token registry: a pool whose underlying tokens cannot
be resolved from addresses is judged on the parts of its symbol, and a part matching a pattern
counts as whitelisted (vault shares such as ``steakUSDCrwa`` or ``gtDAIcore``), so such vaults
need not list every share symbol by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from midfreq_assets.domain.config.symbol_patterns import symbol_matcher
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.ingest.ranking import DayGrid, ranking_columns, ranking_reasons

#: Window of DefiLlama's ``apyMean30d`` (and of its reconstruction from histories).
APY_MEAN_DAYS = 30
#: Pool attributes of ``/pools`` the static discovery rules read.
DISCOVERY_ATTRIBUTES = ["il_risk", "stablecoin", "exposure"]


def first_reason(current: np.ndarray | pd.Series, extra: np.ndarray) -> np.ndarray:
    """Keep an existing reason; fill the rows without one from ``extra``."""
    cur = np.asarray(current, dtype=object)
    return np.where(pd.isna(cur), extra, cur).astype(object)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series(None, index=frame.index, dtype=object)


def _flag_true(value: object) -> bool:
    """DefiLlama's boolean flag: true only when it says so (null / unknown is not true)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    return isinstance(value, str) and value.strip().lower() == "true"


def static_discovery_reasons(snapshot: pd.DataFrame, vault: VaultConfig) -> np.ndarray:
    """Reason per pool of ``snapshot`` (None = passes), first failing rule in the module's order."""
    n = len(snapshot)
    reasons = np.full(n, None, dtype=object)

    def rule(failed: np.ndarray, text: np.ndarray | str) -> None:
        fill = np.broadcast_to(np.asarray(text, dtype=object), (n,))
        take = np.asarray(failed, dtype=bool) & pd.isna(reasons)
        reasons[take] = fill[take]

    if vault.exclude_il_risk:
        il = (
            _column(snapshot, "il_risk")
            .astype(object)
            .map(lambda v: str(v).strip().lower() if v is not None else "")
        )
        rule(il.eq("yes").to_numpy(), "ilRisk yes (exclude_il_risk)")
    if vault.stablecoin_only:
        flag = _column(snapshot, "stablecoin").map(_flag_true)
        rule(~flag.to_numpy(dtype=bool), "not a stablecoin pool (stablecoin_only)")
    if vault.exposure is not None:
        exp = (
            _column(snapshot, "exposure")
            .astype(object)
            .map(lambda v: str(v).lower() if isinstance(v, str) else "unknown")
        )
        rule(
            exp.ne(vault.exposure).to_numpy(),
            ("exposure " + exp + f", vault takes {vault.exposure}").to_numpy(),
        )
    matches = symbol_matcher(vault.symbol_patterns)
    if matches is not None:
        symbols = snapshot["symbol"].astype(str)
        ok = symbols.map(matches).to_numpy(dtype=bool)
        rule(~ok, ("symbol " + symbols + " matches no symbol_patterns").to_numpy())
    if vault.selected_pools is not None:
        chosen = set(vault.selected_pools)
        rule(~snapshot["pool"].astype(str).str.lower().isin(chosen).to_numpy(), "not in selected_pools")
    return reasons


def share_symbol_matcher(vault: VaultConfig) -> Callable[[str], bool] | None:
    """The matcher that vouches for a symbol part of a pool whose underlying tokens the registry
    could not resolve (a resolved token is judged by the registry alone); None without patterns."""
    return symbol_matcher(vault.symbol_patterns)


# --------------------------------------------------------------------------------------------
# Day-level rules: the 30-day mean APY floor and the top_pools allow-list
# --------------------------------------------------------------------------------------------


def lookback_days(vaults: Mapping[str, VaultConfig]) -> int:
    """Days of history before a range that the day-level rules of ``vaults`` read: the ranking's
    window, and before each of its days the 30 days of that day's APY floor."""
    need = 0
    for v in vaults.values():
        days = v.top_pools.window_days  # every vault's ranking is recorded (pool_rankings)
        if v.min_apy_mean_30d is not None:
            days += APY_MEAN_DAYS
        need = max(need, days)
    return need


def apy_mean_30d(rows: pd.DataFrame) -> np.ndarray:
    """Per row (``date, pool, apy``, optional ``apy_mean_30d``): DefiLlama's value where the row
    carries one (a live snapshot row), else the mean APY of the pool's rows over the 30 days
    ending that day (calendar days; missing days are skipped, as DefiLlama's mean does)."""
    grid = DayGrid.of(rows["date"], rows["pool"])
    wide = grid.wide(pd.to_numeric(rows["apy"], errors="coerce")).to_numpy()
    computed = _trailing_mean(wide, APY_MEAN_DAYS)[grid.ti, grid.ii]
    own = pd.to_numeric(_column(rows, "apy_mean_30d"), errors="coerce").to_numpy(dtype=float)
    return np.where(np.isfinite(own), own, computed)


def _trailing_mean(a: np.ndarray, window: int) -> np.ndarray:
    """Mean of the finite values in the last ``window`` rows (this one included), every column at
    once from cumulative sums (pandas' rolling loops over columns in Python); NaN when none."""
    finite = np.isfinite(a)
    sums = np.vstack([np.zeros((1, a.shape[1])), np.cumsum(np.where(finite, a, 0.0), axis=0)])
    counts = np.vstack([np.zeros((1, a.shape[1])), np.cumsum(finite, axis=0)])
    lo = np.maximum(np.arange(1, len(a) + 1) - window, 0)
    n = counts[1:] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[1:] - sums[lo]) / n, np.nan)


def apy_mean_reasons(mean_30d: np.ndarray, vault: VaultConfig) -> np.ndarray:
    """Reason per row of the ``min_apy_mean_30d`` floor (None = passes, or no floor)."""
    out = np.full(len(mean_30d), None, dtype=object)
    floor = vault.min_apy_mean_30d
    if floor is None:
        return out
    low = ~(np.asarray(mean_30d, dtype=float) >= floor)  # NaN (no APY at all) fails too
    out[low] = f"30-day mean APY below {floor:.2%} (min_apy_mean_30d)"
    return out


def top_pools_screen(
    rows: pd.DataFrame, passing: np.ndarray, vault: VaultConfig
) -> tuple[pd.DataFrame, np.ndarray]:
    """The vault's ``top_pools`` ranking of the rows ``passing`` every other rule (over the window
    before each day), and the reason per row of its allow-list (all None when ``allow_list`` is off)."""
    cfg = vault.top_pools
    ranking = ranking_columns(rows, passing, cfg)
    out = np.full(len(rows), None, dtype=object)
    if not cfg.allow_list or rows.empty:
        return ranking, out
    first_day = pd.to_datetime(rows["date"]).min().date()
    return ranking, ranking_reasons(ranking, cfg, first_day)
