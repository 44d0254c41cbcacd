"""Positions files: what parses, what is refused with a message naming source/row/column, and what
parses but is flagged (unknown pool, negative, stale, twice), so the blocking check can fail."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from midfreq_assets.domain.config.base import ConfigError
from midfreq_assets.domain.config.vault import load_vault_config
from midfreq_assets.domain.portfolio.live_config import PositionsConfig
from midfreq_assets.domain.portfolio.positions import (
    PositionsError,
    observed_holdings,
    parse_positions,
    positions_totals,
    validate_positions,
)

DAY = dt.date(2025, 6, 5)
A = "f981a304-bb6c-45b8-b0c5-fd2f515ad23a"
B = "aa70268e-4b52-42bf-a116-608b370f9501"
CFG = PositionsConfig(source="positions/{date}.csv", max_age_hours=48)


def csv(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def test_csv_and_json_rows_with_usd_or_token_amounts():
    rows = parse_positions(
        csv(
            "pool,amount_usd,amount,price_usd,as_of",
            f"{A},1000,,,2025-06-05T23:00:00Z",
            f"{B},,500,1.001,2025-06-05",
            "cash,250,,,2025-06-05T20:00:00+02:00",
        ),
        "csv",
        "f.csv",
        DAY,
    )
    assert rows["value_usd"].tolist() == pytest.approx([1000.0, 500.5, 250.0])
    assert str(rows["as_of"].iloc[2]) == "2025-06-05 18:00:00+00:00"  # offsets become UTC
    body = (
        b'{"positions": [{"pool": "%s", "amount_usd": 10, "as_of": "2025-06-05T12:00:00Z"},'
        b' {"pool": "CASH", "amount_usd": 5, "as_of": "2025-06-05T12:00:00Z"}]}' % A.upper().encode()
    )
    js = parse_positions(body, "json", "svc", DAY)
    assert js["pool"].tolist() == [A, "cash"]  # ids lower-cased
    checked = validate_positions(js, DAY, {A}, CFG)
    assert checked["problem"].eq("").all()
    assert observed_holdings(checked) == ({A: 10.0}, 5.0)
    totals = positions_totals(checked)
    assert (totals["total_usd"], totals["invested_usd"], totals["cash_usd"], totals["pools"]) == (
        15.0,
        10.0,
        5.0,
        1,
    )


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        (b"", "csv", "not a readable CSV"),
        (csv("pool,amount_usd"), "csv", "missing column(s) ['as_of']"),
        (csv("pool,amount_usd,as_of"), "csv", "no rows"),
        (
            csv("pool,amount_usd,as_of", f"{A},12O0,2025-06-05"),
            "csv",
            "line 2: amount_usd: not a number ('12O0')",
        ),
        (
            csv("pool,amount_usd,as_of", f"{A},inf,2025-06-05"),
            "csv",
            "line 2: amount_usd: not a finite number",
        ),
        (
            csv("pool,amount_usd,as_of", f"{A},1,2025-06-05", f"{B},2,yesterday"),
            "csv",
            "line 3: as_of: not an ISO date/time ('yesterday')",
        ),
        (
            csv("pool,amount_usd,as_of", f"{A},1,2025-06-05", "", f"{B},2,yesterday"),
            "csv",
            "line 4: as_of: not an ISO date/time ('yesterday')",
        ),  # a blank line still counts
        (
            csv("pool,amount,as_of", f"{A},100,2025-06-05"),
            "csv",
            "line 2 (pool '" + A + "'): needs amount_usd, or amount",
        ),
        (
            csv("pool,amount_usd,amount,price_usd,as_of", f"{A},100,100,2,2025-06-05"),
            "csv",
            "disagrees with amount",
        ),
        (b"{not json", "json", "not valid JSON"),
        (b'{"rows": 3}', "json", "expected a JSON list of rows"),
        (
            b'[{"pool": "cash", "amount_usd": 1, "as_of": "2025-06-05"}, 7]',
            "json",
            "element [1] (line 1): expected an object",
        ),
        (
            b'{"vault": "v", "positions": [\n  {"pool": "cash", "amount_usd": 1, "as_of": "2025-06-05"},\n'
            b'  {"pool": "cash", "amount_usd": "x", "as_of": "2025-06-05"}\n]}',
            "json",
            "positions[1] (line 3): amount_usd: not a number ('x')",
        ),
        (
            b'[\n {"pool": "cash",\n  "amount_usd": 1, "as_of": "2025-06-05"},\n {"pool": "cash", "amount_usd": 1,\n'
            b'  "as_of": "soon"}]',
            "json",
            "element [1] (line 4): as_of: not an ISO date/time ('soon')",
        ),
    ],
)
def test_unreadable_files_name_source_row_and_column(data, fmt, message):
    with pytest.raises(PositionsError) as err:
        parse_positions(data, fmt, "/data/positions/2025-06-05." + fmt, DAY)
    assert message in str(err.value) and "/data/positions/2025-06-05." + fmt in str(err.value)


def test_untrustworthy_rows_are_kept_with_their_problem_and_refused_for_trading():
    rows = parse_positions(
        csv(
            "pool,amount_usd,as_of",
            f"{A},100,2025-06-05T23:00:00Z",
            "0b4b2b7e-0000-4000-8000-000000000000,100,2025-06-05T23:00:00Z",  # a uuid midfreq does not follow
            f"{B},-5,2025-06-05T23:00:00Z",
            f"{A},1,2025-06-05T23:00:00Z",
            "not-a-pool,1,2025-06-05T23:00:00Z",
            "cash,1,2025-06-03T23:59:00Z",  # 48 h + 1 min before the end of the day
            "cash,1,2025-06-08T01:00:00Z",  # after the end of the day by more than 48 h
        ),
        "csv",
        "f.csv",
        DAY,
    )
    checked = validate_positions(rows, DAY, {A, B}, CFG)
    problems = checked["problem"].tolist()
    assert problems[0] == "pool listed twice" and problems[3] == "pool listed twice"
    assert problems[1].startswith("unknown pool")
    assert problems[2] == "negative amount"
    assert problems[4] == "not a pool id (uuid) nor 'cash'"
    assert problems[5].startswith("stale") and "pool listed twice" in problems[5]
    assert problems[6].startswith("as_of after the end")
    assert positions_totals(checked)["problems"] == 7
    with pytest.raises(PositionsError, match="7 position row"):
        observed_holdings(checked)
    fresh = validate_positions(rows.iloc[[0, 2]], DAY, {A, B}, CFG)
    assert fresh["problem"].tolist() == ["", "negative amount"]


def test_a_bad_positions_section_names_the_file_and_key(tmp_path):
    data = yaml.safe_load(Path("configs/vaults/usd_lending.yaml").read_text())
    data["positions"] = {"source": "positions/{date}.txt", "drift_warn": 2, "live_from": "soon"}
    data["execution"] = {"max_attempts": 0}
    path = tmp_path / "usd_lending.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_vault_config(path)
    text = str(err.value)
    assert str(path) in text and "positions.drift_warn" in text and "positions.live_from" in text
    assert "execution.max_attempts" in text
    data["positions"] = {"source": "positions/{date}.txt"}
    data["execution"] = {}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="positions: .*cannot tell csv from json"):
        load_vault_config(path)
