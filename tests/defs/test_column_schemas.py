"""Every stored table declares its columns (kind, unit, description): the definitions carry the schema of
``domain/schemas.py`` and the Parquet IO manager refuses a frame that breaks it, naming asset and column.

The real frames pass: the tests that materialize each asset (``ingest/test_binance_asset.py``,
``ingest/test_binance_futures_assets.py``, ``ingest/test_prices_assets.py``, ``ingest/test_ingestion_assets.py``,
``ingest/test_lend_borrow_asset.py``, ``vault/test_top_pools_asset.py``, ``vault/test_backtest_assets.py``,
``vault/test_live_loop.py``, ``price_research/test_price_assets.py``) write them through the same IO manager
and its check.
"""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.

import re

import pandas as pd
import pytest
from dagster import AssetKey, asset, materialize

from midfreq_assets.domain.schemas import OTHER, SCHEMAS, Schema
from midfreq_assets.previews import dagster_schema, schema_metadata
from midfreq_resources.io.column_schema import SCHEMA_KEY
from midfreq_resources.io.parquet_io_manager import ParquetIOManager

#: Each schema of ``domain/schemas.py`` and the key of one asset declaring it (vault assets under a
#: vault's prefix, price research assets under an interval's).
DECLARED = {
    "pool_history": ["pool_history"],
    "pool_metadata": ["pool_metadata"],
    "pool_rankings": ["pool_rankings"],
    "universe_exclusions": ["universe_exclusions"],
    "pool_lend_borrow": ["pool_lend_borrow"],
    "binance_klines": ["binance_klines"],
    "binance_premium_index_klines": ["binance_premium_index_klines"],
    "binance_funding_rates": ["binance_funding_rates"],
    "token_prices": ["token_prices"],
    "adjusted_yields": ["usd_lending", "adjusted_yields"],
    "features": ["usd_lending", "features"],
    "predictions": ["usd_lending", "predictions"],
    "rebalance_weights": ["usd_lending", "rebalance_weights"],
    "top_pools": ["usd_lending", "top_pools"],
    "vault_positions": ["usd_lending", "vault_positions"],
    "trade_orders": ["usd_lending", "trade_orders"],
    "order_executions": ["usd_lending", "order_executions"],
    "intraday_moves": ["usd_lending", "intraday_moves"],
    "backtest_panel": ["usd_lending", "backtest_panel"],
    "backtest_runs": ["usd_lending", "backtest_runs"],
    "backtest_report": ["usd_lending", "backtest_report"],
    "price_research/features": ["price_research", "1h", "features"],
    "price_research/predictions": ["price_research", "1h", "predictions"],
    "signal_report": ["price_research", "1h", "signal_report"],
}
SAMPLE = {
    "number": 1.5,
    "integer": 2,
    "bool": True,
    "datetime": pd.Timestamp("2025-06-05"),
    "string": "x",
    "list": ["a"],
    "value": 0.5,
}


def valid_frame(schema: Schema) -> pd.DataFrame:
    """One row with every declared column of its kind (``*``: one extra column of its kind)."""
    row = {(c.name if c.name != OTHER else "w__extra"): SAMPLE[c.kind] for c in schema.columns}
    return pd.DataFrame([row])


def store(key: list[str], name: str, frame: pd.DataFrame, tmp_path) -> object:
    @asset(key=AssetKey(key), io_manager_key="io", metadata=schema_metadata(name))
    def table() -> pd.DataFrame:
        return frame

    return materialize([table], resources={"io": ParquetIOManager(root=str(tmp_path))}, raise_on_error=False)


def test_every_stored_table_of_the_code_location_declares_its_columns():
    from midfreq_assets.definitions import defs

    stored = {}
    for spec in defs.resolve_all_asset_specs():
        assets_def = defs.resolve_assets_def(spec.key)
        if assets_def.get_io_manager_key_for_asset_key(spec.key) == "parquet_io_manager":
            stored[spec.key] = (spec.metadata or {}).get(SCHEMA_KEY)
    assert len(stored) > 30, sorted(k.to_user_string() for k in stored)
    undeclared = sorted(key.to_user_string() for key, schema in stored.items() if schema is None)
    assert not undeclared, f"stored tables without a column schema: {undeclared}"
    assert sorted(DECLARED) == sorted(SCHEMAS)
    for name, path in DECLARED.items():
        key = AssetKey(path)
        if name == "intraday_moves":  # only where a vault enables intraday: none of configs/ does
            assert key not in stored
            continue
        assert stored[key] == dagster_schema(SCHEMAS[name]), name


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_a_frame_of_the_declared_columns_is_stored_with_their_descriptions(name, tmp_path):
    schema = SCHEMAS[name]
    result = store(DECLARED[name], name, valid_frame(schema), tmp_path)
    assert result.success
    (event,) = result.get_asset_materialization_events()
    columns = event.materialization.metadata[SCHEMA_KEY].value.columns
    described = {c.name: c.description for c in columns}
    for column in schema.columns:
        if column.name != OTHER:
            assert described[column.name] == column.text()
            assert column.description, f"{name}.{column.name} has no description"


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_a_frame_that_breaks_the_schema_is_refused_naming_asset_and_column(name, tmp_path):
    schema = SCHEMAS[name]
    required = next(c for c in schema.columns if not c.optional and c.name != OTHER)
    # a named number column, else the generated column standing for ``*`` (price research features)
    number = min((c for c in schema.columns if c.kind in ("number", "value")), key=lambda c: c.name == OTHER)
    number_name = number.name if number.name != OTHER else "w__extra"
    asset_name = "/".join(DECLARED[name])
    for broken, problem in (
        (
            valid_frame(schema).drop(columns=required.name),
            re.escape(f"column '{required.name}' ({required.kind}) missing"),
        ),
        (valid_frame(schema).assign(**{number_name: "1.5"}), f"column '{number_name}' is (str|object)"),
    ):
        result = store(DECLARED[name], name, broken, tmp_path)
        assert not result.success
        error = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error
        assert f"asset {asset_name}, partition -: the frame does not match" in error.message
        assert re.search(problem, error.message), error.message
        assert "nothing written" in error.message
    assert not list(tmp_path.rglob("*.parquet"))


def _empty_and_nan_frames() -> dict[str, pd.DataFrame]:
    """What the domain code hands the IO manager when there is nothing, or partly nothing, to write."""
    from midfreq_assets.defs.price_research.assets import _empty_bars
    from midfreq_assets.defs.vault.top_pools import top_pools_table
    from midfreq_assets.domain.config.project import load_project
    from midfreq_assets.domain.ingest.lend_borrow import empty_lend_borrow, lend_borrow_frame
    from midfreq_assets.domain.ingest.ranking import RANKING_COLUMNS

    vault = load_project().vaults["usd_lending"]
    record = {  # a market without supply yet, no debt ceiling nor reward: utilization and those are NaN
        "timestamp": "2025-01-01T10:00:00Z",
        "totalSupplyUsd": 0.0,
        "totalBorrowUsd": 0.0,
        "debtCeilingUsd": None,
        "apyBaseBorrow": 5.0,
        "apyRewardBorrow": None,
        "apyBase": 3.6,
    }
    nan = lend_borrow_frame({"pool-a": [record]})
    assert nan[["utilization", "debt_ceiling_usd", "apy_reward_borrow"]].isna().all().all()
    return {
        "top_pools: no ranking yet": top_pools_table(pd.DataFrame(columns=RANKING_COLUMNS), vault),
        "pool_lend_borrow: no lending pool": empty_lend_borrow(),
        "pool_lend_borrow: NaN columns": nan,
        "price_research/features: no klines": _empty_bars(),
        "price_research/predictions: no model": _empty_bars(),
    }


@pytest.mark.parametrize("case", sorted(_empty_and_nan_frames()))
def test_the_empty_and_nan_frames_the_assets_write_are_stored(case, tmp_path):
    name = case.split(":")[0]
    frame = _empty_and_nan_frames()[case]
    key = DECLARED[name]
    result = store(key, name, frame, tmp_path)
    assert result.success, case
    (event,) = result.get_asset_materialization_events()
    described = {c.name: c.description for c in event.materialization.metadata[SCHEMA_KEY].value.columns}
    assert set(described) == {str(c) for c in frame.columns}
    assert all(described.values()), described
    assert list(tmp_path.rglob("*.parquet"))
