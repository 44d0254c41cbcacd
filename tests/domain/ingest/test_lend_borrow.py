"""chartLendBorrow records -> pool_lend_borrow frame: units, utilization, flags, duplicates, problems."""

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.ingest.lend_borrow import (
    LEND_BORROW_COLUMNS,
    lend_borrow_frame,
    lend_borrow_problem,
    lending_pool_ids,
)

POOL = "aa70268e-4b52-42bf-a116-608b370f9501"


def row(ts: str, supply: float | None = 100.0, borrow: float | None = 80.0, borrow_apy=5.0, supply_apy=3.6):
    return {
        "timestamp": ts,
        "totalSupplyUsd": supply,
        "totalBorrowUsd": borrow,
        "debtCeilingUsd": None,
        "apyBaseBorrow": borrow_apy,
        "apyRewardBorrow": None,
        "apyBase": supply_apy,
    }


def test_fractions_utilization_and_the_latest_snapshot_of_a_day():
    frame = lend_borrow_frame(
        {
            POOL: [
                row("2025-01-02T23:00:00Z", borrow=90.0),
                row("2025-01-01T10:00:00Z"),
                row("2025-01-02T01:00:00Z", borrow=10.0),
            ]
        }
    )
    assert list(frame.columns) == LEND_BORROW_COLUMNS
    assert frame["date"].tolist() == [pd.Timestamp("2025-01-01"), pd.Timestamp("2025-01-02")]
    assert frame["utilization"].tolist() == pytest.approx([0.8, 0.9])  # the later snapshot of 01-02 wins
    assert frame["apy_base_borrow"].iloc[0] == pytest.approx(0.05) and frame["apy_base"].iloc[
        0
    ] == pytest.approx(0.036)
    assert frame["flag"].isna().all()


def test_implausible_rows_are_flagged_not_dropped():
    frame = lend_borrow_frame(
        {
            POOL: [
                row("2025-01-01T00:00:00Z", borrow=150.0),
                row("2025-01-02T00:00:00Z", supply=None),
                row("2025-01-03T00:00:00Z", borrow_apy=5000.0),
                row("2025-01-04T00:00:00Z", supply=0.0, borrow=0.0),
            ]
        }
    )
    assert frame["flag"].tolist()[:3] == [
        "borrows above supply",
        "supply or borrow not finite",
        "|apy_base_borrow| above 10/yr",
    ]
    assert np.isnan(frame["utilization"].iloc[3])  # no supply: no utilization


def test_impossible_records_name_the_record():
    assert "record 1" in lend_borrow_problem([row("2025-01-01T00:00:00Z"), row("yesterday")])
    assert "negative totalBorrowUsd" in lend_borrow_problem([row("2025-01-01T00:00:00Z", borrow=-1.0)])
    assert lend_borrow_problem([row("2025-01-01T00:00:00Z")]) is None


def test_lending_pool_ids():
    assert lending_pool_ids([{"pool": POOL}, {"pool": None}, {"symbol": "x"}]) == {POOL}
