"""Reconciliation: the vault's real positions of day D against what yesterday's target should have
become by D (the target holdings of D-1 accrued with D's earned yield, ``expected_usd``).

Drift per pool ``d_i = actual_i - expected_i``, reported as a share of the expected wealth
``d_i / (sum_j expected_j + expected_base)``; the idle cash is one more line. A pool drifts when
its order was filled differently (a partial fill, a rejection), when users deposited or withdrew,
or when on-chain yield differed from DefiLlama's. Amounts are in the vault's reference asset.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from midfreq_assets.domain.portfolio.live_config import CASH_POOL
from midfreq_assets.domain.portfolio.nightly import FROM_POSITIONS

DRIFT_COLUMNS = ["date", "pool", "symbol", "expected_usd", "actual_usd", "drift_usd", "drift_share"]


def drift_table(day_rows: pd.DataFrame) -> pd.DataFrame:
    """One line per pool expected or held, plus the cash line, largest |drift| first; empty when
    the day did not start from real positions or had no previous target to compare with."""
    if day_rows.empty or day_rows["positions_source"].iloc[0] != FROM_POSITIONS:
        return pd.DataFrame(columns=DRIFT_COLUMNS)
    expected_base = float(day_rows["expected_base_usd"].iloc[0])
    if not np.isfinite(expected_base):
        return pd.DataFrame(columns=DRIFT_COLUMNS)
    pools = day_rows[day_rows["pool"].notna()]
    wealth = float(pools["wealth"].iloc[0]) if len(pools) else float(day_rows["wealth"].iloc[0])
    actual = (pools["current_weight"].fillna(0.0) * wealth).to_numpy(dtype=float)
    lines = pd.DataFrame(
        {
            "pool": pools["pool"].to_numpy(),
            "symbol": pools["symbol"].to_numpy(),
            "expected_usd": pools["expected_usd"].fillna(0.0).to_numpy(dtype=float),
            "actual_usd": actual,
        }
    )
    cash = pd.DataFrame(
        {
            "pool": [CASH_POOL],
            "symbol": [CASH_POOL],
            "expected_usd": [expected_base],
            "actual_usd": [float(day_rows["observed_base_usd"].iloc[0])],
        }
    )
    out = pd.concat([lines, cash], ignore_index=True)
    out = out[(out["expected_usd"].abs() > 0) | (out["actual_usd"].abs() > 0)]
    expected_wealth = float(out["expected_usd"].sum())
    out["drift_usd"] = out["actual_usd"] - out["expected_usd"]
    out["drift_share"] = out["drift_usd"] / expected_wealth if expected_wealth > 0 else np.nan
    out.insert(0, "date", day_rows["date"].iloc[0])
    return out.reindex(out["drift_share"].abs().sort_values(ascending=False).index)[
        DRIFT_COLUMNS
    ].reset_index(drop=True)


def drifted(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The lines whose |drift| exceeds ``threshold`` (a share of the expected wealth)."""
    return table[table["drift_share"].abs() > threshold]
