"""Futures datasets through Dagster against the replay server: premium index bars (daily, like the
klines) and funding rates (monthly files -> monthly partitions), verified, gaps reported."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import AssetCheckSeverity, materialize

from midfreq_assets.defs.ingest.binance_futures import build_funding_assets, build_premium_index_assets
from midfreq_assets.domain.config.base import ConfigError, validate_model
from midfreq_assets.domain.config.project import load_project
from midfreq_assets.domain.ingest.binance_config import BinanceConfig
from midfreq_assets.domain.ingest.funding import funding_gaps, months_between
from midfreq_resources.clients.binance_archive import BinanceArchiveClient
from midfreq_resources.io.lake import read_daily, stored_days
from midfreq_resources.io.parquet_io_manager import ParquetIOManager
from midfreq_resources.replay.server import ReplayServer

RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
CONFIG = load_project().binance
PREMIUM, PREMIUM_CHECKS = build_premium_index_assets(CONFIG)
FUNDING, FUNDING_CHECKS = build_funding_assets(CONFIG)
FUTURES = Path(__file__).resolve().parents[3] / "recorded" / "binance" / "data" / "futures" / "um"


def run(
    assets: list,
    checks: list,
    server: ReplayServer,
    lake: Path,
    partition_key: str | None = None,
    window: tuple[str, str] | None = None,
) -> Any:
    resources = {
        "binance_archive": BinanceArchiveClient(
            base_url=server.base_url + "/binance", backoff_base_s=0.001, backoff_max_s=0.01, max_attempts=2
        ),
        "parquet_io_manager": ParquetIOManager(root=str(lake)),
    }
    tags = dict(zip(RANGE, window, strict=True)) if window else None
    return materialize(
        [*assets, *checks], resources=resources, partition_key=partition_key, tags=tags, raise_on_error=False
    )


def text_of(value: Any) -> Any:
    """An inline metadata table as text, one ``a | b | c`` line per row (other values as they are)."""
    records = getattr(value, "records", None)
    return (
        value if records is None else "\n".join(" | ".join(str(v) for v in r.data.values()) for r in records)
    )


def meta(result: Any) -> dict[str, Any]:
    """The first partition's own metadata, and the run's figures (``run_`` on a range run's last partition)."""
    events = result.get_asset_materialization_events()
    first = {k: text_of(v.value) for k, v in events[0].materialization.metadata.items()}
    last = {
        k.removeprefix("run_"): text_of(v.value)
        for k, v in events[-1].materialization.metadata.items()
        if k.startswith("run_")
    }
    return {**last, **first}


def checks(result: Any) -> dict[str, Any]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_premium_index_bars_range_backfill_with_the_maintenance_gap(replay_env: ReplayServer, tmp_path: Path):
    result = run(PREMIUM, PREMIUM_CHECKS, replay_env, tmp_path, window=("2023-03-20", "2023-03-26"))
    assert result.success
    assert stored_days(tmp_path, "binance_premium_index_klines") == [f"2023-03-{d}" for d in range(20, 27)]
    day = read_daily(tmp_path, "binance_premium_index_klines", days=["2023-03-24"])
    assert set(day["interval"]) == {"1h"} and len(day) == 23  # the spot maintenance hour is missing too
    assert day["close"].abs().max() < 0.01 and (day["high"] >= day["low"]).all()  # a premium, not a price
    m = meta(result)
    assert m["files_collected"] == 7 and m["files_missing"] == 7  # no 1d premium file in 2023: reported
    assert m["gap_count"] == 1
    gap = checks(result)["bar_gaps"]
    assert not gap.passed and gap.severity == AssetCheckSeverity.WARN
    assert checks(result)["no_duplicate_bars"].passed


def test_premium_index_checksum_failure_fails_that_file_only(replay_env: ReplayServer, tmp_path: Path):
    replay_env.corrupt(r"premiumIndexKlines/BTCUSDT/1h/BTCUSDT-1h-2023-03-21\.zip$", times=None)
    result = run(PREMIUM, PREMIUM_CHECKS, replay_env, tmp_path, window=("2023-03-20", "2023-03-22"))
    assert result.success
    m = meta(result)
    assert m["files_failed"] == 1 and "checksum mismatch" in m["failed_files"]
    assert stored_days(tmp_path, "binance_premium_index_klines") == ["2023-03-20", "2023-03-21", "2023-03-22"]
    assert read_daily(tmp_path, "binance_premium_index_klines", days=["2023-03-21"]).empty
    assert (
        m["gap_days"] == 0
    )  # reported as a failed file (its day is not filled, nor double-counted as a gap)


def test_funding_rates_one_month_per_partition(replay_env: ReplayServer, tmp_path: Path):
    result = run(FUNDING, FUNDING_CHECKS, replay_env, tmp_path, partition_key="2023-03-01")
    assert result.success
    rates = pd.read_parquet(tmp_path / "binance_funding_rates" / "2023-03-01.parquet")  # monthly partitions
    assert len(rates) == 31 * 3 and (rates["funding_interval_hours"] == 8).all()
    assert rates["calc_time"].is_monotonic_increasing and rates["calc_time"].dt.hour.isin([0, 8, 16]).all()
    assert rates["funding_rate"].abs().max() < 0.0075
    assert checks(result)["funding_gaps"].passed and checks(result)["no_duplicate_funding_events"].passed
    m = meta(result)
    assert m["files_collected"] == 1 and m["gap_days"] == 0


def test_funding_backfill_of_months_and_a_month_not_published(replay_env: ReplayServer, tmp_path: Path):
    result = run(FUNDING, FUNDING_CHECKS, replay_env, tmp_path, window=("2024-10-01", "2025-02-01"))
    assert result.success
    months = sorted(p.name for p in (tmp_path / "binance_funding_rates").iterdir())
    assert months == [
        "2024-10-01.parquet",
        "2024-11-01.parquet",
        "2024-12-01.parquet",
        "2025-01-01.parquet",
        "2025-02-01.parquet",
    ]
    feb = pd.read_parquet(tmp_path / "binance_funding_rates" / "2025-02-01.parquet")
    assert feb["date"].min() == pd.Timestamp("2025-02-01") and feb["date"].max() == pd.Timestamp("2025-02-28")
    # each month's page shows its own rows and mean rate; the run's files and gaps only on its last month, said so
    by_month = {
        e.materialization.partition: e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    for month, m in by_month.items():
        own = pd.read_parquet(tmp_path / "binance_funding_rates" / f"{month}.parquet")
        assert m["dagster/row_count"].value == len(own)
        assert m["mean_funding_rate"].value == pytest.approx(own["funding_rate"].mean())
        assert ("run_files_collected" in m) == ("run_scope" in m) == (month == "2025-02-01")
        assert "files_collected" not in m
    assert by_month["2025-02-01"]["run_files_collected"].value == 5
    not_out = run(FUNDING, FUNDING_CHECKS, replay_env, tmp_path, partition_key="2025-03-01")
    assert not not_out.success  # nothing collected: fails rather than write an empty month
    assert not (tmp_path / "binance_funding_rates" / "2025-03-01.parquet").exists()


def test_funding_gaps_count_days_with_too_few_events():
    path = FUTURES / "monthly" / "fundingRate" / "BTCUSDT" / "BTCUSDT-fundingRate-2023-02.zip"
    from midfreq_assets.domain.ingest.klines import parse_funding_rate_zip

    rates = parse_funding_rate_zip(path.read_bytes(), source=path.name, symbol="BTCUSDT")
    assert funding_gaps(rates).empty
    holed = rates.drop(index=[3, 4])  # two events of 2023-02-02
    gaps = funding_gaps(holed)
    assert gaps[["date", "expected", "events", "missing"]].values.tolist() == [
        [pd.Timestamp("2023-02-02"), 3, 1, 2]
    ]
    covered = {"BTCUSDT": {pd.Timestamp("2023-03-01").date()}}  # a covered day with no event at all
    assert funding_gaps(rates, covered)["events"].tolist() == [0]
    assert months_between(pd.Timestamp("2024-12-30").date(), pd.Timestamp("2025-02-01").date()) == [
        "2024-12",
        "2025-01",
        "2025-02",
    ]


def test_funding_file_with_a_bad_rate_is_failed_not_kept(tmp_path: Path):
    from midfreq_assets.domain.ingest.archive_files import ArchiveFile
    from midfreq_assets.domain.ingest.funding import collect_funding
    from midfreq_resources.clients.binance_archive import ArchiveBatch

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(
            "BTCUSDT-fundingRate-2023-02.csv",
            "calc_time,funding_interval_hours,last_funding_rate\n"
            "1675209600000,8,0.0001\n1675238400000,8,abc\n",
        )

    def download(files):
        files = list(files)
        return ArchiveBatch(ok={files[0]: buf.getvalue()})

    result = collect_funding(
        download, CONFIG.futures, pd.Timestamp("2023-02-01").date(), pd.Timestamp("2023-02-28").date()
    )
    assert result.rates.empty and len(result.failed) == 1
    reason = next(iter(result.failed.values()))
    assert "line 3" in reason and "funding_rate" in reason
    assert isinstance(next(iter(result.failed)), ArchiveFile)


def test_futures_config_is_validated_naming_the_key():
    base = CONFIG.model_dump(mode="python")
    with pytest.raises(ConfigError, match="futures.premium_index_intervals: .*spot only"):
        validate_model(
            BinanceConfig,
            {**base, "futures": {"symbols": ["BTCUSDT"], "premium_index_intervals": ["1s"]}},
            "binance.yaml",
        )
    with pytest.raises(ConfigError, match="futures: .*collects nothing"):
        validate_model(
            BinanceConfig,
            {**base, "futures": {"symbols": ["BTCUSDT"], "funding_rate": False}},
            "binance.yaml",
        )
    with pytest.raises(ConfigError, match="futures.market"):
        validate_model(
            BinanceConfig, {**base, "futures": {"market": "spot", "symbols": ["BTCUSDT"]}}, "binance.yaml"
        )
