"""Previews on the asset page: formatted inline tables and plots that fit Dagster's inline limit."""

import re
import urllib.parse

import numpy as np
import pandas as pd
import pytest

from midfreq_assets import asset_plots, inline_plots, previews
from midfreq_assets.domain.schemas import APY, FRACTION, POOL_HISTORY, SCHEMAS, USD
from midfreq_resources.io.column_schema import check_frame


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (4307000.0, USD, "4,307,000"),
        (980000.0000000001, USD, "980,000"),
        (0.0, USD, "0"),
        (12.345, USD, "12.35"),
        (0.051903651903651905, APY, "5.19%"),
        (0.25, FRACTION, "25.00%"),
        (float("nan"), APY, ""),
        (1.055e6, "", "1,055,000"),
        (0.123456, "", "0.1235"),
        (3.5e-7, "", "3.500e-07"),
    ],
)
def test_numbers_are_formatted_by_unit(value, unit, text):
    assert previews.fmt_number(value, unit) == text


def test_a_preview_is_an_inline_table_with_names_beside_pools_and_no_empty_column():
    previews.learn_pool_names(
        pd.DataFrame({"pool": ["u-1"], "symbol": ["USDC"], "project": ["aave-v3"], "chain": ["Ethereum"]})
    )
    frame = pd.DataFrame(
        {
            "date": pd.to_datetime(["2025-06-05"] * 3),
            "pool": ["u-1", "u-2", "u-1"],
            "tvl_usd": [4307000.0, 980000.0000000001, 1.0],
            "apy": [0.0519, 0.03, np.nan],
            "il7d": [np.nan] * 3,
            "flag": [None] * 3,
        }
    )
    value = previews.table_preview(frame, max_rows=2, schema=POOL_HISTORY)
    names = [c.name for c in value.schema.columns]
    assert names == ["date", "pool", "name", "tvl_usd", "apy"]  # il7d and flag: empty on every shown row
    assert value.records[0].data == {
        "date": "2025-06-05",
        "pool": "u-1",
        "name": "USDC aave-v3 Ethereum",
        "tvl_usd": "4,307,000",
        "apy": "5.19%",
    }
    assert value.records[1].data["name"] == ""  # unknown pool: blank, never another pool's name
    assert value.records[-1].data["date"] == "... 1 more rows"
    described = {c.name: c.description for c in value.schema.columns}
    assert described["tvl_usd"] == "total value locked in the pool [USD]"


def test_every_declared_schema_is_a_valid_dagster_schema_that_accepts_its_own_columns():
    for name, schema in SCHEMAS.items():
        table = previews.dagster_schema(schema)
        sample = {}
        for c in schema.columns:
            if c.name == "*":
                continue
            sample[c.name] = {
                "number": [1.0],
                "integer": [1],
                "bool": [True],
                "datetime": pd.to_datetime(["2024-01-01"]),
                "string": ["x"],
                "list": [["a"]],
                "value": [0.5],
            }[c.kind]
        check_frame(pd.DataFrame(sample), table, name)


def _svg_of(md: str) -> str:
    match = re.fullmatch(r"!\[[^\]]*\]\(<data:image/svg\+xml,(.*)>\)", md)
    assert match, md[:120]
    assert not re.search(r"(?<!\\)[<>]", match.group(1)), "an unescaped angle bracket ends the destination"
    return urllib.parse.unquote(match.group(1).replace("\\<", "<").replace("\\>", ">"))


def test_plots_fit_the_inline_limit_and_are_svg():
    rng = np.random.default_rng(0)
    line = inline_plots.lines(
        {"TVL-weighted APY": rng.random(400), "median APY": rng.random(400)},
        "Universe APY",
        lambda v: previews.fmt_number(v, APY),
        ("2024-01-01", "2025-02-03"),
    )
    stacked = inline_plots.stacked(
        {f"pool {i}": rng.random(400) / 8 for i in range(4)} | {"idle": np.full(400, 0.5)},
        "weights",
        ("a", "b"),
    )
    bars = inline_plots.bars(
        {f"pool {i}": v for i, v in enumerate([250000.0, -250000.0, 1000.0])},
        "trades",
        lambda v: previews.fmt_number(v, USD),
    )
    ranges = inline_plots.ranges({f"f{i}": np.sort(rng.normal(size=5)) for i in range(11)}, "features", str)
    for value in (line, stacked, bars, ranges):
        assert value is not None and len(value.value) <= inline_plots.INLINE_LIMIT
        svg = _svg_of(value.value)
        assert svg.startswith("<svg xmlns='http://www.w3.org/2000/svg'") and svg.endswith("</svg>")
    assert "TVL-weighted APY" in _svg_of(line.value) and "2025-02-03" in _svg_of(line.value)
    assert "-250,000" in _svg_of(bars.value)


def test_weight_plot_stacks_the_most_held_pools_and_idle():
    days = pd.date_range("2024-01-01", periods=30)
    rows = pd.DataFrame(
        {
            "date": np.repeat(days, 3),
            "pool": ["a", "b", "c"] * 30,
            "symbol": ["USDC", "USDT", "DAI"] * 30,
            "project": ["aave-v3"] * 90,
            "chain": ["Base"] * 90,
            "target_weight": [0.5, 0.3, 0.0] * 30,
            "trade_usd": [0.0] * 87 + [100.0, -100.0, 0.0],
        }
    )
    plots = asset_plots.weight_plots(rows)
    svg = _svg_of(plots["weights_plot"].value)
    assert "1 USDC aave-v3" in svg and "idle" in svg
    assert "2024-01-30" in _svg_of(plots["trades_plot"].value)


def test_a_plot_with_too_many_series_keeps_the_first_ones_readable():
    names = ["walk_forward", "best_trailing_hysteresis", "best_trailing_apy", "top_k_trailing", "incumbent"]
    rng = np.random.default_rng(2)
    value = inline_plots.lines(
        {n: np.cumprod(1 + rng.normal(2e-4, 1e-4, 300)) for n in names},
        "Wealth W/W0",
        lambda v: f"{v:.3f}",
        ("2024-11-06", "2025-06-05"),
    )
    svg = _svg_of(value.value)
    assert (
        len(value.value) <= inline_plots.INLINE_LIMIT
        and "walk_forward" in svg
        and "best_trailing_hysteresis" in svg
    )
    points = re.search(r"points='([^']*)'", svg).group(1).split(",")
    assert len(points) // 2 >= 16  # a readable line: series are dropped before the line gets coarse
