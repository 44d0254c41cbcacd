"""DefiLlama /chart rows -> pool_history: fractions, UTC days, last snapshot of a day wins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.ingest.pool_history import HISTORY_COLUMNS, apy_outliers, charts_frame

EXAMPLE = Path(__file__).parents[3] / "recorded/defillama/examples/chart_5fd328af-4203-471b-bd16-1705c726d926.json"


def test_real_chart_as_the_api_answered():
    rows = json.loads(EXAMPLE.read_text())["data"]
    frame = charts_frame({"5fd328af-4203-471b-bd16-1705c726d926": rows})
    assert list(frame.columns) == HISTORY_COLUMNS
    assert len(frame) == len(rows) == 188
    assert frame["date"].iloc[0] == pd.Timestamp("2024-11-14")
    assert frame["apy"].iloc[0] == pytest.approx(0.2297383)  # 22.97383 % -> fraction
    assert frame["apy_reward"].isna().iloc[0]  # null stays missing, never zero
    assert frame["date"].is_monotonic_increasing


def test_utc_day_duplicate_days_and_unknown_keys():
    rows = [
        {"timestamp": "2024-07-01T23:01:00.000Z", "tvlUsd": 10, "apy": 5.0, "newKey": 1},
        {"timestamp": "2024-07-02T01:30:00+02:00", "tvlUsd": 11, "apy": 6.0},  # = 07-01 23:30 UTC
        {"timestamp": "2024-07-02T23:01:00.000Z", "tvlUsd": 12, "apy": 7.0, "apyBase": None},
    ]
    frame = charts_frame({"p": rows})
    assert list(frame["date"]) == [pd.Timestamp("2024-07-01"), pd.Timestamp("2024-07-02")]
    assert list(frame["apy"]) == pytest.approx([0.06, 0.07])  # the day's later snapshot kept
    assert frame["apy_base"].isna().all()


def test_empty_history_and_outliers():
    assert charts_frame({"p": []}).empty
    frame = pd.DataFrame({"date": pd.to_datetime(["2024-01-01"] * 3), "pool": ["a", "b", "c"],
                          "apy": [0.05, np.inf, 25.0]})
    assert list(apy_outliers(frame, max_abs_apy=10.0)["pool"]) == ["b", "c"]
