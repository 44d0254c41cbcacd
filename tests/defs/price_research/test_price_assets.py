"""The price research chain through Dagster on the replayed klines: features, weekly models,
predictions and the signal report are written through the Parquet IO manager, whose check holds each
frame to the asset's declared column schema (``domain/schemas.py``); every stored column is described."""

from __future__ import annotations

import warnings

import pandas as pd
from dagster import AssetKey, materialize

from midfreq_assets.defs.ingest.binance import build_binance_assets
from midfreq_assets.defs.ingest.binance_futures import build_premium_index_assets
from midfreq_assets.defs.price_research.assets import build_price_research_assets
from midfreq_assets.defs.price_research.signals import build_signal_report_assets
from midfreq_assets.domain.schemas import OTHER, SCHEMAS
from midfreq_assets.partitions import research_months
from midfreq_resources.clients.binance_archive import BinanceArchiveClient
from midfreq_resources.io.column_schema import SCHEMA_KEY
from midfreq_resources.io.lake import read_parquet
from midfreq_resources.io.model_io_manager import ModelIOManager
from midfreq_resources.io.parquet_io_manager import ParquetIOManager

RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
PREFIX = ["price_research", "1h"]


def _described(result, key: AssetKey) -> dict[str, str | None]:
    """Column -> description of the stored frame's column schema (a run of several partitions carries
    it on the last one)."""
    (schema,) = (
        e.materialization.metadata[SCHEMA_KEY].value
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == key and SCHEMA_KEY in e.materialization.metadata
    )
    return {c.name: c.description for c in schema.columns}


def test_the_price_research_frames_are_stored_under_their_declared_columns(replay_env, tmp_path, project):
    config = project.binance
    klines, _, _ = build_binance_assets(config)
    premium, _ = build_premium_index_assets(config)
    research = build_price_research_assets(
        project.price_research, research_months(config.start_date), config.start_date
    )
    reports = build_signal_report_assets(project.price_research)
    by_key = {a.key: a for a in [*research, *reports]}
    features = by_key[AssetKey([*PREFIX, "features"])]
    models = by_key[AssetKey([*PREFIX, "fitted_models"])]
    predictions = by_key[AssetKey([*PREFIX, "predictions"])]
    report = by_key[AssetKey([*PREFIX, "signal_report"])]
    resources = {
        "binance_archive": BinanceArchiveClient(base_url=replay_env.base_url + "/binance"),
        "parquet_io_manager": ParquetIOManager(root=str(tmp_path)),
        "model_io_manager": ModelIOManager(root=str(tmp_path)),
    }
    all_assets = [klines, *premium, features, models, predictions, report]
    weeks = [
        k for k in models.partitions_def.get_partition_keys() if "2023-03-06" <= k <= "2023-03-27"
    ]  # weeks with a full warm-up of the recorded 1h bars (2023-02-01..2023-03-31)

    def run(selection, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = materialize(all_assets, selection=selection, resources=resources, **kwargs)
        assert result.success
        return result

    run(
        [klines.key, *(p.key for p in premium)],
        tags=dict(zip(RANGE, ("2023-02-01", "2023-03-31"), strict=True)),
    )
    ran = {
        features.key: run([features.key], tags=dict(zip(RANGE, ("2023-02", "2023-03"), strict=True))),
    }
    run([models.key], tags=dict(zip(RANGE, (weeks[0], weeks[-1]), strict=True)))
    ran[predictions.key] = run([predictions.key], partition_key="2023-03")
    ran[report.key] = run([report.key])

    stored = {
        features.key: read_parquet(tmp_path / "price_research" / "1h" / "features" / "2023-03.parquet"),
        predictions.key: read_parquet(tmp_path / "price_research" / "1h" / "predictions" / "2023-03.parquet"),
        report.key: read_parquet(tmp_path / "price_research" / "1h" / "signal_report.parquet"),
    }
    names = {
        features.key: "price_research/features",
        predictions.key: "price_research/predictions",
        report.key: "signal_report",
    }
    for key, frame in stored.items():
        schema = SCHEMAS[names[key]]
        assert len(frame), key
        named = {c.name for c in schema.columns if c.name != OTHER}
        assert named <= set(frame.columns), (key, named - set(frame.columns))
        described = _described(ran[key], key)
        assert set(described) == set(frame.columns)
        for column in frame.columns:
            declared = schema.column(column)
            assert declared is not None, (key, column)
            text = declared.text() if declared.name != OTHER else f"every other column: {declared.text()}"
            assert described[column] == text, (key, column)
    # the generated columns are what their ``*`` says: features, model outputs, signal quantiles
    assert any("__" in c for c in stored[features.key].columns)
    outputs = [c for c in stored[predictions.key].columns if "/" in c]
    assert outputs and all(pd.api.types.is_float_dtype(stored[predictions.key][c]) for c in outputs)
    assert any(c.startswith("signal_p") for c in stored[report.key].columns)
    assert any(c.startswith("return_b") for c in stored[report.key].columns)
