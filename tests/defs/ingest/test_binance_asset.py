"""``binance_klines`` through Dagster: single days, single-run backfills, missing and failing files."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import AssetCheckSeverity, materialize

from midfreq_assets.defs.ingest.binance import build_binance_assets
from midfreq_assets.domain.config.project import load_project
from midfreq_assets.domain.ingest.binance_config import BinanceConfig
from midfreq_assets.domain.ingest.klines_collection import collect_klines
from midfreq_resources.clients.binance_archive import BinanceArchiveClient
from midfreq_resources.io.lake import read_daily, stored_days
from midfreq_resources.io.parquet_io_manager import ParquetIOManager
from midfreq_resources.replay.server import ReplayServer

RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
_klines, binance_checks, binance_partitions = build_binance_assets(load_project().binance)
binance_assets = [_klines]


def run(
    assets: list,
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
        assets, resources=resources, partition_key=partition_key, tags=tags, raise_on_error=False
    )


def text_of(value: Any) -> Any:
    """An inline metadata table as text, one ``a | b | c`` line per row (other values as they are)."""
    records = getattr(value, "records", None)
    return (
        value if records is None else "\n".join(" | ".join(str(v) for v in r.data.values()) for r in records)
    )


def meta(result: Any) -> dict[str, Any]:
    """The first partition's own metadata, and the run's figures (on the last partition of a range run,
    ``run_``-prefixed, as the run's own when it covered one day)."""
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


def failure_message(result: Any) -> str:
    return next(e for e in result.all_events if e.is_step_failure).event_specific_data.error.message


def lake_frame(lake: Path, day: str) -> pd.DataFrame:
    return read_daily(lake, "binance_klines", days=[f"{day}"])


# ----------------------------------------------------------------------------- synthetic archive
def kline_lines(start: dt.datetime, n: int, step_s: int = 3600) -> list[str]:
    t0 = int(start.replace(tzinfo=dt.UTC).timestamp()) * 1000
    return [
        f"{t0 + i * step_s * 1000},{100 + i},{101 + i},{99 + i},{100.5 + i},1.5,{t0 + (i + 1) * step_s * 1000 - 1},"
        f"150.0,{10 + i},0.75,75.0,0"
        for i in range(n)
    ]


def publish(root: Path, rel: str, csv_lines: list[str]) -> None:
    """Write an archive zip and its `.CHECKSUM` (two spaces, no newline) under ROOT/binance/data/spot."""
    path = root / "binance" / "data" / "spot" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(path.name.replace(".zip", ".csv"), "\n".join(csv_lines) + "\n")
    path.write_bytes(buf.getvalue())
    path.with_name(path.name + ".CHECKSUM").write_text(
        f"{hashlib.sha256(buf.getvalue()).hexdigest()}  {path.name}"
    )


@pytest.fixture(scope="module")
def synthetic() -> Iterator[ReplayServer]:
    """January as a monthly file that sloppily also holds 2024-02-01's first two bars, then daily files;
    ETHUSDT beside BTCUSDT; SOLUSDT with a non-numeric price; BTCUSDT 2024-02-02 missing two hours."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        publish(
            root,
            "monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01.zip",
            kline_lines(dt.datetime(2024, 1, 1), 31 * 24 + 2),
        )
        feb2 = kline_lines(dt.datetime(2024, 2, 2), 24)
        del feb2[10:12]
        for symbol in ("BTCUSDT", "ETHUSDT"):
            publish(
                root,
                f"daily/klines/{symbol}/1h/{symbol}-1h-2024-02-01.zip",
                kline_lines(dt.datetime(2024, 2, 1), 24),
            )
            publish(
                root,
                f"daily/klines/{symbol}/1h/{symbol}-1h-2024-02-02.zip",
                feb2 if symbol == "BTCUSDT" else kline_lines(dt.datetime(2024, 2, 2), 24),
            )
        bad = kline_lines(dt.datetime(2024, 2, 1), 24)
        fields = bad[6].split(",")
        fields[4] = "n/a"
        bad[6] = ",".join(fields)
        publish(root, "daily/klines/SOLUSDT/1h/SOLUSDT-1h-2024-02-01.zip", bad)
        with ReplayServer(root) as server:
            yield server


@pytest.fixture
def fresh(synthetic: ReplayServer) -> Iterator[ReplayServer]:
    synthetic.reset()
    yield synthetic
    synthetic.reset()


def synthetic_assets(*symbols: str) -> list:
    cfg = BinanceConfig(
        market="spot", symbols=list(symbols), intervals=["1h"], start_date=dt.date(2024, 1, 1)
    )
    klines, check_defs, _ = build_binance_assets(cfg)
    return [klines, *check_defs]


# ----------------------------------------------------------------------------- the bundled slice
def test_exports_for_definitions():
    assert [a.key.to_user_string() for a in binance_assets] == ["binance_klines"]
    assert sorted(c.check_key.name for c in binance_checks) == ["bar_gaps", "no_duplicate_bars"]
    assert binance_partitions.get_first_partition_key() == "2023-02-01"
    assert binance_partitions.timezone == "UTC"
    assert binance_assets[0].backfill_policy is not None
    assert binance_assets[0].required_resource_keys >= {"binance_archive", "parquet_io_manager"}


def test_one_day_from_the_bundled_slice(replay_env: ReplayServer, tmp_path: Path):
    result = run([*binance_assets, *binance_checks], replay_env, tmp_path, partition_key="2023-03-05")
    assert result.success
    df = lake_frame(tmp_path, "2023-03-05")
    assert len(df) == 24 and set(df["interval"]) == {"1h"}
    assert (df["date"] == pd.Timestamp("2023-03-05")).all()
    assert str(df["open_time"].dtype) == "datetime64[ns, UTC]"
    m = meta(result)
    assert m["files_collected"] == 1 and m["files_missing"] == 1 and m["files_failed"] == 0
    assert "BTCUSDT | 1d" in m["missing_files"] and "2023-03-05" in m["missing_files"]
    assert m["gap_count"] == 0
    assert all(e.passed for e in checks(result).values())
    assert replay_env.count("monthly") == 0


def slice_assets(*intervals: str) -> list:
    cfg = BinanceConfig(symbols=["BTCUSDT"], intervals=list(intervals), start_date=dt.date(2023, 2, 1))
    klines, check_defs, _ = build_binance_assets(cfg)
    return [klines, *check_defs]


def test_backfill_uses_a_monthly_file_for_a_whole_month(replay_env: ReplayServer, tmp_path: Path):
    result = run(slice_assets("1h"), replay_env, tmp_path, window=("2023-02-01", "2023-03-02"))
    assert result.success
    assert replay_env.count(r"/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2023-02\.zip$", status=200) == 1
    assert replay_env.count(r"/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2023-02-") == 0
    assert replay_env.count(r"/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2023-03-0[12]\.zip$", status=200) == 2
    files = stored_days(tmp_path, "binance_klines")
    assert len(files) == 30 and files[0] == "2023-02-01" and files[-1] == "2023-03-02"
    assert {len(lake_frame(tmp_path, day)) for day in ("2023-02-01", "2023-02-28", "2023-03-02")} == {24}
    m = meta(result)
    assert (
        m["rows"] == 30 * 24
        and m["dagster/row_count"] == 24
        and m["files_planned"] == 3
        and m["files_missing"] == 0
    )
    assert m["gap_count"] == 0 and m["duplicate_bars_dropped"] == 0
    assert all(e.passed for e in checks(result).values())


def test_missing_monthly_file_falls_back_to_daily_files_and_gaps_are_found(replay_env: ReplayServer):
    cfg = BinanceConfig(symbols=["BTCUSDT"], intervals=["1h"], start_date=dt.date(2023, 2, 1))
    client = BinanceArchiveClient(backoff_base_s=0.001)  # base URL from MIDFREQ_BINANCE_ARCHIVE_URL
    result = collect_klines(client.download_many, cfg, dt.date(2023, 3, 1), dt.date(2023, 3, 31))
    assert [f.period for f in result.monthly_replaced] == ["2023-03"]  # not bundled: 404
    assert len(result.collected) == 31 and not result.missing and not result.failed
    assert len(result.bars) == 31 * 24 - 1
    assert result.gaps.to_dict("records") == [
        {
            "symbol": "BTCUSDT",
            "interval": "1h",
            "date": pd.Timestamp("2023-03-24"),
            "expected": 24,
            "bars": 23,
            "missing": 1,
        }
    ]


def test_gap_check_warns_on_the_real_maintenance_gap(replay_env: ReplayServer, tmp_path: Path):
    result = run(slice_assets("1h"), replay_env, tmp_path, partition_key="2023-03-24")
    assert result.success
    assert len(lake_frame(tmp_path, "2023-03-24")) == 23
    gap_check = checks(result)["bar_gaps"]
    assert not gap_check.passed and gap_check.severity == AssetCheckSeverity.WARN
    assert gap_check.metadata["gap_count"].value == 1
    assert checks(result)["no_duplicate_bars"].passed


def test_backfill_across_the_microsecond_switch(replay_env: ReplayServer, tmp_path: Path):
    result = run(slice_assets("1d"), replay_env, tmp_path, window=("2025-01-01", "2025-02-02"))
    assert result.success
    assert replay_env.count(r"/monthly/klines/BTCUSDT/1d/BTCUSDT-1d-2025-01\.zip$", status=200) == 1
    frames = [lake_frame(tmp_path, day) for day in stored_days(tmp_path, "binance_klines")]
    df = pd.concat(frames, ignore_index=True)
    assert len(df) == 31 + 2 and set(df["interval"]) == {"1d"}
    assert df["open_time"].diff().dropna().eq(pd.Timedelta(days=1)).all()
    assert df["open_time"].iloc[0] == pd.Timestamp("2025-01-01T00:00:00Z")
    assert df["close_time"].iloc[-1] == pd.Timestamp("2025-02-02T23:59:59.999999Z")
    assert (df["date"] == df["open_time"].dt.tz_convert(None)).all()


def test_unknown_symbol_is_reported_per_day_and_others_are_collected(
    replay_env: ReplayServer, tmp_path: Path
):
    cfg = BinanceConfig(symbols=["BTCUSDT", "DOGEUSDT"], intervals=["1h"], start_date=dt.date(2023, 2, 1))
    klines, check_defs, _ = build_binance_assets(cfg)
    result = run([klines, *check_defs], replay_env, tmp_path, window=("2023-03-01", "2023-03-03"))
    assert result.success
    m = meta(result)
    assert m["rows"] == 72 and m["symbols_collected"] == "BTCUSDT"
    assert m["files_missing"] == 3
    for day in ("2023-03-01", "2023-03-02", "2023-03-03"):
        assert f"DOGEUSDT | 1h | daily | {day}" in m["missing_files"]


# ----------------------------------------------------------------------------- synthetic archive
def test_bars_in_a_monthly_and_a_daily_file_are_kept_once(fresh: ReplayServer):
    cfg = BinanceConfig(symbols=["BTCUSDT"], intervals=["1h"], start_date=dt.date(2024, 1, 1))
    client = BinanceArchiveClient(base_url=fresh.base_url + "/binance", backoff_base_s=0.001)
    result = collect_klines(client.download_many, cfg, dt.date(2024, 1, 1), dt.date(2024, 2, 1))
    assert sorted((f.freq, f.period) for f in result.collected) == [
        ("daily", "2024-02-01"),
        ("monthly", "2024-01"),
    ]
    assert result.duplicates_dropped == 2
    assert len(result.bars) == 32 * 24
    assert not result.bars.duplicated(["symbol", "interval", "open_time"]).any()
    assert result.gaps.empty


def test_checksum_failure_fails_that_file_and_keeps_the_others(fresh: ReplayServer, tmp_path: Path):
    fresh.corrupt(r"ETHUSDT-1h-2024-02-01\.zip$", times=None)
    result = run(synthetic_assets("BTCUSDT", "ETHUSDT"), fresh, tmp_path, partition_key="2024-02-01")
    assert not result.success  # the blocking requested_files_fetched check names the file
    assert "ETHUSDT" in text_of(checks(result)["requested_files_fetched"].metadata["failed_files"].value)
    df = lake_frame(tmp_path, "2024-02-01")
    assert set(df["symbol"]) == {"BTCUSDT"} and len(df) == 24
    m = meta(result)
    assert m["files_failed"] == 1
    assert (
        "ETHUSDT" in m["failed_files"]
        and "checksum mismatch for ETHUSDT-1h-2024-02-01.zip" in m["failed_files"]
    )
    assert fresh.count(r"ETHUSDT-1h-2024-02-01\.zip$") == 2


def test_unparseable_file_is_reported_naming_file_and_line(fresh: ReplayServer, tmp_path: Path):
    result = run(synthetic_assets("BTCUSDT", "SOLUSDT"), fresh, tmp_path, partition_key="2024-02-01")
    assert not result.success and not checks(result)["requested_files_fetched"].passed
    m = meta(result)
    assert m["dagster/row_count"] == 24
    assert (
        "SOLUSDT-1h-2024-02-01.zip:SOLUSDT-1h-2024-02-01.csv, line 7: column 'close' is not a number"
        in m["failed_files"]
    )


def test_gaps_are_reported_and_not_filled(fresh: ReplayServer, tmp_path: Path):
    result = run(synthetic_assets("BTCUSDT"), fresh, tmp_path, partition_key="2024-02-02")
    assert result.success
    assert len(lake_frame(tmp_path, "2024-02-02")) == 22
    assert meta(result)["gap_count"] == 2
    gap_check = checks(result)["bar_gaps"]
    assert not gap_check.passed and gap_check.severity == AssetCheckSeverity.WARN


def test_nothing_collected_fails_the_run_and_writes_nothing(fresh: ReplayServer, tmp_path: Path):
    fresh.corrupt(r"BTCUSDT-1h-2024-02-01\.zip$", times=None)
    result = run(synthetic_assets("BTCUSDT", "XRPUSDT"), fresh, tmp_path, partition_key="2024-02-01")
    assert not result.success
    message = failure_message(result)
    assert "nothing collected" in message and "1 file(s) missing, 1 failed" in message
    assert not (tmp_path / "binance_klines").exists()


def test_all_missing_today_fails_rather_than_writing_an_empty_partition(fresh: ReplayServer, tmp_path: Path):
    result = run(synthetic_assets("BTCUSDT"), fresh, tmp_path, partition_key="2024-02-03")
    assert not result.success
    assert "nothing collected" in failure_message(result)
    assert not (tmp_path / "binance_klines").exists()


def test_server_errors_are_retried_inside_the_asset(fresh: ReplayServer, tmp_path: Path):
    fresh.force(r"BTCUSDT-1h-2024-02-01\.zip$", 503, times=1)
    result = run(synthetic_assets("BTCUSDT"), fresh, tmp_path, partition_key="2024-02-01")
    assert result.success and meta(result)["files_failed"] == 0
    assert fresh.count(r"BTCUSDT-1h-2024-02-01\.zip$", status=503) == 1


# ----------------------------------------------------------------------------- nothing good replaced by less
def _zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


def _serve_instead(server: ReplayServer, name: str, data: bytes) -> None:
    """Serve ``data`` (with a matching .CHECKSUM) for the archive file ``name``: a well-signed bad file."""
    server.force(rf"{name}\.CHECKSUM$", 200, body=f"{hashlib.sha256(data).hexdigest()}  {name}", times=None)
    server.force(rf"{name}$", 200, body=data, content_type="application/zip", times=None)


THIRTEEN = "\n".join(line + ",extra" for line in kline_lines(dt.datetime(2024, 2, 1), 24)) + "\n"
GOOD = "\n".join(kline_lines(dt.datetime(2024, 2, 1), 24)) + "\n"


@pytest.mark.parametrize("fault", ["checksum", "thirteen_columns", "two_csvs", "not_a_zip", "empty_csv"])
def test_a_bad_day_in_a_range_keeps_its_good_bars_and_fails_the_run(
    fresh: ReplayServer, tmp_path: Path, fault
):
    assets = synthetic_assets("BTCUSDT")
    window = ("2024-02-01", "2024-02-02")
    assert run(assets, fresh, tmp_path, window=window).success
    before = lake_frame(tmp_path, "2024-02-01")
    assert len(before) == 24
    name = "BTCUSDT-1h-2024-02-01.zip"
    if fault == "checksum":
        fresh.corrupt(rf"{name}$", times=None)
    elif fault == "thirteen_columns":
        _serve_instead(fresh, name, _zip({name.replace(".zip", ".csv"): THIRTEEN}))
    elif fault == "two_csvs":
        _serve_instead(fresh, name, _zip({"a.csv": GOOD, "b.csv": GOOD}))
    elif fault == "not_a_zip":
        _serve_instead(fresh, name, b"<html>maintenance</html>")
    else:
        _serve_instead(fresh, name, _zip({name.replace(".zip", ".csv"): ""}))
    result = run(assets, fresh, tmp_path, window=window)
    assert not result.success  # never green
    pd.testing.assert_frame_equal(lake_frame(tmp_path, "2024-02-01"), before)  # 24 good bars, not fewer
    assert len(lake_frame(tmp_path, "2024-02-02")) == 22  # the other day was rewritten
    check = checks(result)["requested_files_fetched"]
    assert not check.passed and check.metadata["bars_kept_from_previous_run"].value == 24
    if fault != "empty_csv":
        assert name in str(check.metadata["failed_files"].value)


def test_a_single_bad_day_is_never_replaced_by_an_empty_partition(fresh: ReplayServer, tmp_path: Path):
    assets = synthetic_assets("BTCUSDT")
    assert run(assets, fresh, tmp_path, partition_key="2024-02-01").success
    before = (tmp_path / "binance_klines" / "2024-02.parquet").read_bytes()
    fresh.corrupt(r"BTCUSDT-1h-2024-02-01\.zip$", times=None)
    result = run(assets, fresh, tmp_path, partition_key="2024-02-01")
    assert not result.success and "nothing collected" in failure_message(result)
    assert (tmp_path / "binance_klines" / "2024-02.parquet").read_bytes() == before
