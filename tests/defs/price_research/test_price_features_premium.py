"""The close_premium feature through Dagster: price features read the premium index bars of the
same bars, with the same lookback as the klines; a study needing them without the data is an error."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dagster import AssetKey, materialize

from midfreq_assets.defs.ingest.binance import build_binance_assets
from midfreq_assets.defs.ingest.binance_futures import build_premium_index_assets
from midfreq_assets.defs.price_research.assets import build_price_research_assets
from midfreq_assets.defs.price_research.definitions import build_price_research_defs
from midfreq_assets.domain.config.base import ConfigError
from midfreq_assets.domain.config.project import load_project
from midfreq_assets.domain.research import engine
from midfreq_assets.partitions import research_months
from midfreq_resources.clients.binance_archive import BinanceArchiveClient
from midfreq_resources.io.lake import read_daily, read_parquet
from midfreq_resources.io.parquet_io_manager import ParquetIOManager

RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
REPO = Path(__file__).resolve().parents[3]


def test_close_premium_features_come_from_the_premium_bars(replay_env, tmp_path, project):
    config = project.binance
    klines, _, _ = build_binance_assets(config)
    premium, _ = build_premium_index_assets(config)
    research = build_price_research_assets(
        project.price_research, research_months(config.start_date), config.start_date
    )
    features = next(a for a in research if a.key == AssetKey(["price_research", "1h", "features"]))
    resources = {
        "binance_archive": BinanceArchiveClient(base_url=replay_env.base_url + "/binance"),
        "parquet_io_manager": ParquetIOManager(root=str(tmp_path)),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert materialize(
            [klines, *premium],
            resources=resources,
            tags=dict(zip(RANGE, ("2023-03-01", "2023-03-12"), strict=True)),
        ).success
        assert materialize(
            [klines, *premium, features],
            selection=[features.key],
            resources=resources,
            partition_key="2023-03",
        ).success  # the month so far: its days with klines
    month = read_parquet(tmp_path / "price_research" / "1h" / "features" / "2023-03.parquet")
    assert month["date"].max() == pd.Timestamp("2023-03-12")
    out = month[month["date"] == pd.Timestamp("2023-03-12")].reset_index(drop=True)
    bars = read_daily(tmp_path, "binance_premium_index_klines", days=["2023-03-12"])
    got = out.set_index("open_time")["close_premium"]
    expected = bars[bars["interval"] == "1h"].set_index("open_time")["close"]
    assert len(got) == 24
    pd.testing.assert_series_equal(got, expected.reindex(got.index), check_names=False)
    # the EWM features of the premium equal the engine's on the whole loaded panel
    panel = read_daily(tmp_path, "binance_klines")
    prem = read_daily(tmp_path, "binance_premium_index_klines")
    full = engine.build_features(
        engine.with_close_premium(engine.klines_panel(panel, "1h"), prem, "1h"),
        project.price_research.intervals["1h"].feature_map,
    )
    ref = full[full["date"] == pd.Timestamp("2023-03-12")].reset_index(drop=True)
    np.testing.assert_allclose(out["close_premium__ewma_8"], ref["close_premium__ewma_8"], rtol=1e-9)


def test_premium_bars_are_never_filled_from_another_bar():
    times = pd.date_range("2023-03-01", periods=4, freq="h", tz="UTC")
    spot = pd.DataFrame({"symbol": "BTCUSDT", "interval": "1h", "open_time": times, "close": [1.0, 2, 3, 4]})
    prem = spot.iloc[[0, 2]].assign(close=[0.001, 0.003])
    merged = engine.with_close_premium(engine.klines_panel(spot, "1h"), prem, "1h")
    assert merged["close_premium"].tolist()[0] == 0.001 and np.isnan(merged["close_premium"].iloc[1])
    assert (
        engine.with_close_premium(engine.klines_panel(spot, "1h"), None, "1h")["close_premium"].isna().all()
    )


def test_a_study_reading_close_premium_needs_the_premium_interval(tmp_path):
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    binance = yaml.safe_load((configs / "binance.yaml").read_text())
    binance["futures"]["premium_index_intervals"] = ["1d"]
    (configs / "binance.yaml").write_text(yaml.safe_dump(binance))
    with pytest.raises(
        ConfigError, match=r"intervals.1h.feature_map: close_premium needs premium index bars at 1h"
    ):
        build_price_research_defs(load_project(configs))
