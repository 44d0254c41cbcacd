"""Intraday moves: today's ``/pools`` snapshot against the nightly one, for the pools a vault follows.

A pool is flagged when ``|apy_now - apy_nightly| > apy_move`` (fractions per year) or
``|tvl_now / tvl_nightly - 1| > tvl_move``, or when it vanished from the snapshot. Nothing here
decides a trade: the flags tell the desk which of the morning's orders to look at again.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from midfreq_assets.domain.portfolio.live_config import IntradayConfig

MOVE_COLUMNS = [
    "pool",
    "symbol",
    "project",
    "chain",
    "nightly_apy",
    "apy",
    "apy_change",
    "nightly_tvl_usd",
    "tvl_usd",
    "tvl_change",
    "flag",
]


def intraday_moves(nightly: pd.DataFrame, snapshot: pd.DataFrame, config: IntradayConfig) -> pd.DataFrame:
    """One row per pool of ``nightly`` (the vault's rows of the last nightly ``pool_metadata``) with
    its change since then in ``snapshot`` (now: ``pool, apy, tvl_usd``, APY as a fraction) and
    ``flag`` ('' when within the thresholds); flagged first."""
    base = nightly.drop_duplicates("pool", keep="last").set_index("pool")
    now = snapshot.drop_duplicates("pool", keep="last").set_index("pool").reindex(base.index)
    out = pd.DataFrame(
        {
            "pool": base.index,
            "symbol": base["symbol"].to_numpy(),
            "project": base["project"].to_numpy(),
            "chain": base["chain"].to_numpy(),
            "nightly_apy": base["apy"].to_numpy(dtype=float),
            "apy": now["apy"].to_numpy(dtype=float),
            "nightly_tvl_usd": base["tvl_usd"].to_numpy(dtype=float),
            "tvl_usd": now["tvl_usd"].to_numpy(dtype=float),
        }
    )
    out["apy_change"] = out["apy"] - out["nightly_apy"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["tvl_change"] = out["tvl_usd"] / out["nightly_tvl_usd"] - 1.0
    gone = out["apy"].isna() & out["tvl_usd"].isna()
    apy = out["apy_change"].abs() > config.apy_move
    tvl = out["tvl_change"].abs() > config.tvl_move
    flag = np.where(gone, "missing from /pools", "")
    flag = np.where(~gone & apy, "apy moved", flag)
    flag = np.where(~gone & tvl, np.where(apy, "apy and tvl moved", "tvl moved"), flag)
    out["flag"] = flag
    order = out["flag"].eq("").to_numpy().argsort(kind="stable")
    return out.iloc[order].reset_index(drop=True)[MOVE_COLUMNS]
