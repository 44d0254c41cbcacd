"""Binance kline parsing, planning, merging and gap counting on real bundled files and synthetic bad ones."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from midfreq_assets.domain.config.base import ConfigError
from midfreq_assets.domain.ingest.binance_config import BinanceConfig, load_binance_config
from midfreq_assets.domain.ingest.klines import (
    KLINES_COLUMNS,
    KlinesParseError,
    bar_gaps,
    combine_klines,
    duplicate_bars,
    parse_funding_rate_zip,
    parse_klines_csv,
    parse_klines_zip,
    period_days,
    plan_archive_files,
    read_single_csv,
)

SPOT = Path(__file__).parents[3] / "recorded" / "binance" / "data" / "spot"
HOUR_MS = 3_600_000
HEADER = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"


def kline_csv(start: dt.datetime, n: int, step_s: int = 3600, unit: str = "ms", header: bool = False) -> str:
    scale = {"ms": 1_000, "us": 1_000_000}[unit]
    t0 = int(start.replace(tzinfo=dt.UTC).timestamp()) * scale
    lines = [HEADER] if header else []
    for i in range(n):
        open_t = t0 + i * step_s * scale
        price = 100.0 + i
        lines.append(
            f"{open_t},{price},{price + 1},{price - 1},{price + 0.5},10.5,{open_t + step_s * scale - 1},"
            f"1050.0,{7 + i},5.25,525.0,0"
        )
    return "\n".join(lines) + "\n"


def zip_of(files: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def parse(text: str, source: str = "BTCUSDT-1h-2023-03-01.zip", interval: str = "1h") -> pd.DataFrame:
    return parse_klines_csv(text.encode(), source=source, symbol="BTCUSDT", interval=interval)


# ----------------------------------------------------------------------------- real bundled files
def test_real_daily_1h_files_have_24_bars_and_the_contract_dtypes():
    path = SPOT / "daily/klines/BTCUSDT/1h/BTCUSDT-1h-2023-03-01.zip"
    df = parse_klines_zip(path.read_bytes(), source=path.name, symbol="BTCUSDT", interval="1h")
    assert list(df.columns) == list(KLINES_COLUMNS)
    assert len(df) == 24
    assert str(df["open_time"].dtype) == "datetime64[ns, UTC]"
    assert str(df["close_time"].dtype) == "datetime64[ns, UTC]"
    assert str(df["date"].dtype) == "datetime64[ns]"
    assert df["count"].dtype == "int64"
    assert all(df[c].dtype == "float64" for c in ("open", "high", "low", "close", "volume", "quote_volume"))
    assert (df["date"] == pd.Timestamp("2023-03-01")).all()
    first = df.iloc[0]
    assert first["open_time"] == pd.Timestamp("2023-03-01T00:00:00Z")
    assert first["close_time"] == pd.Timestamp("2023-03-01T00:59:59.999Z")
    assert first["open"] == 23141.57 and first["count"] == 430193
    assert df["open_time"].diff().dropna().eq(pd.Timedelta(hours=1)).all()


def test_real_march_daily_files_are_24_bars_except_the_maintenance_day():
    counts = {}
    for path in sorted((SPOT / "daily/klines/BTCUSDT/1h").glob("*.zip")):
        counts[path.stem[-10:]] = len(
            parse_klines_zip(path.read_bytes(), source=path.name, symbol="BTCUSDT", interval="1h")
        )
    assert len(counts) == 31
    assert counts.pop("2023-03-24") == 23  # a real, permanent maintenance gap in the archive
    assert set(counts.values()) == {24}


def test_real_monthly_file_matches_days_times_24():
    path = SPOT / "monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2023-02.zip"
    df = parse_klines_zip(path.read_bytes(), source=path.name, symbol="BTCUSDT", interval="1h")
    assert len(df) == 28 * 24
    assert df["date"].nunique() == 28


def test_real_files_switch_from_ms_to_us_on_2025_01_01():
    dec = SPOT / "monthly/klines/BTCUSDT/1d/BTCUSDT-1d-2024-12.zip"
    jan = SPOT / "monthly/klines/BTCUSDT/1d/BTCUSDT-1d-2025-01.zip"
    assert zipfile.ZipFile(jan).read("BTCUSDT-1d-2025-01.csv").startswith(b"1735689600000000,")
    frames = [
        parse_klines_zip(p.read_bytes(), source=p.name, symbol="BTCUSDT", interval="1d") for p in (dec, jan)
    ]
    both = pd.concat(frames, ignore_index=True)
    assert len(both) == 62
    assert both["open_time"].diff().dropna().eq(pd.Timedelta(days=1)).all()
    assert frames[1]["open_time"].iloc[0] == pd.Timestamp("2025-01-01T00:00:00Z")
    assert frames[1]["close_time"].iloc[0] == pd.Timestamp("2025-01-01T23:59:59.999999Z")
    assert frames[0]["close_time"].iloc[-1] == pd.Timestamp("2024-12-31T23:59:59.999Z")


# ----------------------------------------------------------------------------- layouts
def test_header_row_is_detected_and_skipped():
    start = dt.datetime(2023, 3, 1)
    with_header = parse(kline_csv(start, 24, header=True))
    without = parse(kline_csv(start, 24))
    pd.testing.assert_frame_equal(with_header, without)
    assert len(with_header) == 24


def test_microsecond_file_gives_the_same_bars_as_millisecond_file():
    start = dt.datetime(2025, 2, 1)
    pd.testing.assert_frame_equal(
        parse(kline_csv(start, 24, unit="us")).drop(columns="close_time"),
        parse(kline_csv(start, 24, unit="ms")).drop(columns="close_time"),
    )


def test_mixed_timestamp_units_in_one_file_are_an_error():
    ms = kline_csv(dt.datetime(2024, 12, 31), 1)
    us = kline_csv(dt.datetime(2025, 1, 1), 1, unit="us")
    with pytest.raises(
        KlinesParseError, match=r"BTCUSDT-1h-2023-03-01\.zip.*open_time.*mixes timestamp units"
    ):
        parse(ms + us)


def test_empty_file_and_header_only_file_give_zero_typed_bars():
    for text in ("", HEADER + "\n"):
        df = parse(text)
        assert df.empty and list(df.columns) == list(KLINES_COLUMNS)
        assert str(df["open_time"].dtype) == "datetime64[ns, UTC]"


def test_no_trailing_newline_and_crlf_are_fine():
    text = kline_csv(dt.datetime(2023, 3, 1), 3)
    assert len(parse(text.rstrip("\n"))) == 3
    assert len(parse(text.replace("\n", "\r\n"))) == 3


# ----------------------------------------------------------------------------- bad input
def test_row_with_a_missing_column_names_file_and_line():
    lines = kline_csv(dt.datetime(2023, 3, 1), 5).splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0]
    with pytest.raises(
        KlinesParseError, match=r"BTCUSDT-1h-2023-03-01\.zip, line 4: expected 12 columns, got 11"
    ):
        parse("\n".join(lines))


def test_missing_column_line_number_counts_the_header():
    lines = kline_csv(dt.datetime(2023, 3, 1), 5, header=True).splitlines()
    lines[2] = ",".join(lines[2].split(",")[:6])
    with pytest.raises(KlinesParseError, match=r"line 3: expected 12 columns, got 6"):
        parse("\n".join(lines))


@pytest.mark.parametrize("bad", ["abc", "", "nan", "inf"])
def test_non_numeric_price_names_file_line_and_column(bad: str):
    lines = kline_csv(dt.datetime(2023, 3, 1), 5).splitlines()
    fields = lines[2].split(",")
    fields[2] = bad
    lines[2] = ",".join(fields)
    with pytest.raises(
        KlinesParseError, match=rf"BTCUSDT-1h-2023-03-01\.zip, line 3: column 'high' is not a number: '{bad}'"
    ):
        parse("\n".join(lines))


def test_non_integer_trade_count_is_an_error():
    lines = kline_csv(dt.datetime(2023, 3, 1), 2).splitlines()
    fields = lines[1].split(",")
    fields[8] = "12.5"
    lines[1] = ",".join(fields)
    with pytest.raises(KlinesParseError, match=r"line 2: column 'count' is not an integer: '12.5'"):
        parse("\n".join(lines))


@pytest.mark.parametrize("members", [{}, {"readme.txt": "hi"}, {"a.csv": "1", "b.csv": "2"}])
def test_zip_with_zero_or_two_csvs_is_an_error(members: dict[str, str]):
    expected = 2 if len(members) == 2 else 0
    with pytest.raises(
        KlinesParseError,
        match=rf"BTCUSDT-1h-2023-03-01\.zip: expected exactly one CSV in the zip, found {expected}",
    ):
        parse_klines_zip(zip_of(members), source="BTCUSDT-1h-2023-03-01.zip", symbol="BTCUSDT", interval="1h")


def test_not_a_zip_is_an_error_naming_the_file():
    with pytest.raises(KlinesParseError, match=r"BTCUSDT-1h-2023-03-01\.zip: not a valid zip archive"):
        parse_klines_zip(
            b"<html>Bad gateway</html>", source="BTCUSDT-1h-2023-03-01.zip", symbol="BTCUSDT", interval="1h"
        )


def test_zip_with_flipped_bytes_is_an_error_naming_the_file():
    good = zip_of({"BTCUSDT-1h-2023-03-01.csv": kline_csv(dt.datetime(2023, 3, 1), 24)})
    data = bytearray(good)
    mid = len(data) // 2
    for i in range(mid - 4, mid + 4):
        data[i] ^= 0xFF
    with pytest.raises(KlinesParseError, match=r"BTCUSDT-1h-2023-03-01\.zip"):
        parse_klines_zip(bytes(data), source="BTCUSDT-1h-2023-03-01.zip", symbol="BTCUSDT", interval="1h")


# ----------------------------------------------------------------------------- funding rates
def test_funding_rate_file_with_header():
    text = (
        "calc_time,funding_interval_hours,last_funding_rate\n"
        "1706745600000,8,0.00010000\n1706774400000,8,-0.00005000\n"
    )
    df = parse_funding_rate_zip(
        zip_of({"BTCUSDT-fundingRate-2024-02.csv": text}),
        source="BTCUSDT-fundingRate-2024-02.zip",
        symbol="BTCUSDT",
    )
    assert list(df["funding_rate"]) == [0.0001, -0.00005]
    assert df["calc_time"].iloc[1] == pd.Timestamp("2024-02-01T08:00:00Z")
    assert (df["date"] == pd.Timestamp("2024-02-01")).all()


# ----------------------------------------------------------------------------- planning
def test_plan_uses_monthly_files_for_whole_months_and_daily_files_for_the_edges():
    plan = plan_archive_files(dt.date(2023, 2, 27), dt.date(2023, 5, 2))
    assert plan == [
        ("daily", "2023-02-27"),
        ("daily", "2023-02-28"),
        ("monthly", "2023-03"),
        ("monthly", "2023-04"),
        ("daily", "2023-05-01"),
        ("daily", "2023-05-02"),
    ]


def test_plan_single_day_whole_month_leap_february_and_year_end():
    assert plan_archive_files(dt.date(2023, 3, 5), dt.date(2023, 3, 5)) == [("daily", "2023-03-05")]
    assert plan_archive_files(dt.date(2024, 2, 1), dt.date(2024, 2, 29)) == [("monthly", "2024-02")]
    assert len(plan_archive_files(dt.date(2024, 2, 1), dt.date(2024, 2, 28))) == 28
    assert plan_archive_files(dt.date(2024, 12, 1), dt.date(2025, 1, 31)) == [
        ("monthly", "2024-12"),
        ("monthly", "2025-01"),
    ]
    assert plan_archive_files(dt.date(2024, 12, 31), dt.date(2025, 1, 1)) == [
        ("daily", "2024-12-31"),
        ("daily", "2025-01-01"),
    ]


def test_plan_covers_every_day_exactly_once():
    start, end = dt.date(2023, 1, 17), dt.date(2024, 3, 9)
    days = [d for freq, period in plan_archive_files(start, end) for d in period_days(freq, period)]
    assert days == [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    assert all(freq == "daily" for freq, _ in plan_archive_files(start, end, monthly=False))


def test_plan_rejects_a_reversed_range():
    with pytest.raises(ValueError, match="before start"):
        plan_archive_files(dt.date(2023, 3, 2), dt.date(2023, 3, 1))


# ----------------------------------------------------------------------------- merging and gaps
def test_bars_in_both_a_monthly_and_a_daily_file_are_kept_once():
    monthly = parse(kline_csv(dt.datetime(2023, 3, 1), 24 * 31 + 2), source="BTCUSDT-1h-2023-03.zip")
    daily = parse(kline_csv(dt.datetime(2023, 4, 1), 24), source="BTCUSDT-1h-2023-04-01.zip")
    daily["close"] = 999.0
    bars, dropped = combine_klines([daily, monthly], dt.date(2023, 3, 1), dt.date(2023, 4, 1))
    assert dropped == 2
    assert len(bars) == 24 * 32
    assert duplicate_bars(bars).empty
    april = bars[bars["date"] == pd.Timestamp("2023-04-01")]
    assert (april["close"] == 999.0).all()  # the first frame given (daily) wins
    assert bars["open_time"].is_monotonic_increasing


def test_combine_drops_bars_outside_the_window():
    frame = parse(kline_csv(dt.datetime(2023, 2, 28), 72))
    bars, dropped = combine_klines([frame], dt.date(2023, 3, 1), dt.date(2023, 3, 1))
    assert dropped == 0 and len(bars) == 24
    assert (bars["date"] == pd.Timestamp("2023-03-01")).all()


def test_gaps_are_counted_not_filled():
    frame = parse(kline_csv(dt.datetime(2023, 3, 1), 48))
    holed = frame.drop(index=[5, 6, 30]).reset_index(drop=True)
    gaps = bar_gaps(holed)
    assert list(gaps["missing"]) == [2, 1]
    assert list(gaps["date"]) == [pd.Timestamp("2023-03-01"), pd.Timestamp("2023-03-02")]
    covered = {("BTCUSDT", "1h"): [dt.date(2023, 3, 1), dt.date(2023, 3, 2), dt.date(2023, 3, 3)]}
    with_empty_day = bar_gaps(holed, covered)
    assert int(with_empty_day["missing"].sum()) == 3 + 24
    assert len(holed) == 45  # nothing was forward-filled
    assert bar_gaps(frame).empty


def test_weekly_bars_are_not_counted_as_gaps():
    weekly = parse(kline_csv(dt.datetime(2023, 3, 6), 2, step_s=7 * 86400), interval="1w")
    assert bar_gaps(weekly).empty


# ----------------------------------------------------------------------------- configuration
def test_bundled_config_matches_the_bundled_slice():
    cfg = load_binance_config()
    assert cfg.market == "spot" and cfg.symbols == ["BTCUSDT"]
    assert set(cfg.intervals) == {"1h", "1d"} and cfg.datasets == ["klines"]
    assert cfg.start_date == dt.date(2023, 2, 1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"intervals": ["2m"]}, "unknown interval '2m'"),
        ({"datasets": ["fundingRate"]}, "'klines' is required"),
        ({"datasets": ["klines", "fundingRate"]}, "not published for market 'spot'"),
        ({"symbols": ["BTC/USDT"]}, "letters, digits"),
        ({"market": "futures/um", "intervals": ["1s"]}, "spot only"),
        ({"interval": ["1h"]}, "unknown key"),
    ],
)
def test_config_errors_name_file_and_problem(tmp_path: Path, change: dict, message: str):
    data = {
        "market": "spot",
        "symbols": ["BTCUSDT"],
        "intervals": ["1h"],
        "start_date": "2023-02-01",
        **change,
    }
    path = tmp_path / "binance.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message) as err:
        load_binance_config(path)
    assert str(path) in str(err.value)


def test_futures_config_with_funding_rates_is_valid():
    cfg = BinanceConfig(
        market="futures/um",
        symbols=["btcusdt"],
        intervals=["1m"],
        datasets=["klines", "fundingRate", "premiumIndexKlines"],
        start_date=dt.date(2024, 1, 1),
    )
    assert cfg.symbols == ["BTCUSDT"]


# ----------------------------------------------------------------------------- zip bombs
def _bomb(uncompressed: int, name: str = "BTCUSDT-1h-2024-01-01.csv") -> bytes:
    """A zip whose one member inflates to ``uncompressed`` bytes of one repeated line (~1000:1)."""
    buf = io.BytesIO()
    line = b"1704067200000,1,1,1,1,1,1704070799999,1,1,1,1,0\n" * 20_000
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf, zf.open(name, "w") as member:
        written = 0
        while written < uncompressed:
            piece = line[: uncompressed - written]
            member.write(piece)
            written += len(piece)
    return buf.getvalue()


def test_one_megabyte_zip_inflating_to_one_gibibyte_is_refused_before_inflating():
    import resource

    data = _bomb(2**30)
    assert len(data) < 8 * 2**20
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(
        KlinesParseError, match=r"would inflate to 1,073,741,824 bytes .* refused without inflating"
    ):
        parse_klines_zip(data, source="bomb.zip", symbol="BTCUSDT", interval="1h")
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024 < 200  # MB


def test_a_member_over_the_size_limit_is_refused_even_at_a_plausible_ratio():
    data = _bomb(3 * 2**20)
    with pytest.raises(KlinesParseError, match="limits are 1,048,576 bytes"):
        read_single_csv(data, "big.zip", max_bytes=2**20, max_ratio=10_000)
