"""Recorder: round-trips the replay server byte for byte, retries bounded, atomic, idempotent."""

from __future__ import annotations

from pathlib import Path

import pytest

from midfreq_resources.replay.cli import main
from midfreq_resources.replay.recorder import atomic_write_bytes, binance_key, record
from midfreq_resources.replay.server import ReplayServer, coins_chart_filename

REPO_ROOT = Path(__file__).parents[3]
RECORDED = REPO_ROOT / "recorded"
YIELDS = RECORDED / "defillama" / "yields"
CHART_IDS = sorted(p.stem for p in (YIELDS / "chart").glob("*.json"))
ZIP_KEY = "data/spot/monthly/klines/SOLUSDT/1d/SOLUSDT-1d-2024-01.zip"


def _urls(server: ReplayServer) -> dict[str, str]:
    return {
        "yields_url": f"{server.base_url}/defillama/yields",
        "coins_url": f"{server.base_url}/defillama/coins",
        "binance_url": f"{server.base_url}/binance",
    }


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def archive_server(tmp_path: Path, write_archive_zip):
    """Serves one synthetic Binance zip + checksum and one coins chart from a temp tree."""
    src = tmp_path / "source"
    write_archive_zip(src, ZIP_KEY, "1704067200000,1,2,0.5,1.5,10,1704153599999,15,7,5,7.5,0\n")
    coins = (
        src / "defillama" / "coins" / "chart" / coins_chart_filename("coingecko:bitcoin", "span=3&start=1")
    )
    coins.parent.mkdir(parents=True)
    coins.write_text('{"coins":{"coingecko:bitcoin":{"prices":[{"timestamp":1,"price":42000.5}]}}}')
    with ReplayServer(src) as server:
        yield server


def test_records_snapshot_and_charts_byte_for_byte(replay_env: ReplayServer, tmp_path: Path) -> None:
    out = tmp_path / "frozen"
    report = record(out, pools=CHART_IDS[:3], backoff_s=0, **_urls(replay_env))
    assert report.ok and len(report.written) == 4
    assert (out / "defillama/yields/pools.json").read_bytes() == (YIELDS / "pools.json").read_bytes()
    for chart_id in CHART_IDS[:3]:
        rel = f"defillama/yields/chart/{chart_id}.json"
        assert (out / rel).read_bytes() == (RECORDED / rel).read_bytes()
    assert not list(out.rglob("*.tmp"))


def test_all_pools_from_snapshot_fetches_each_chart_once(replay_env: ReplayServer, tmp_path: Path) -> None:
    out = tmp_path / "frozen"
    report = record(out, all_pools_from_snapshot=True, backoff_s=0, concurrency=8, **_urls(replay_env))
    assert report.ok, report.summary()
    assert _files(out / "defillama/yields") == _files(YIELDS)
    assert replay_env.count(r"/chart/") == len(CHART_IDS) == 55
    assert all(replay_env.count(f"/chart/{chart_id}$") == 1 for chart_id in CHART_IDS)
    assert replay_env.count(r"/pools$") == 1

    # Rerun: everything present, nothing fetched; --force refetches.
    replay_env.clear_requests()
    again = record(out, pools=CHART_IDS[:2], backoff_s=0, **_urls(replay_env))
    assert again.written == [] and len(again.skipped) == 3
    assert replay_env.requests == []
    forced = record(out, pools=CHART_IDS[:2], force=True, backoff_s=0, **_urls(replay_env))
    assert len(forced.written) == 3


def test_retries_429_and_truncated_bodies(replay_env: ReplayServer, tmp_path: Path) -> None:
    chart_id = CHART_IDS[4]
    replay_env.force(f"/chart/{chart_id}$", 429, headers={"Retry-After": "0"}, times=2)
    replay_env.truncate(f"/chart/{CHART_IDS[5]}$", times=1)
    replay_env.force(
        f"/chart/{CHART_IDS[6]}$", 200, body="<html>oops</html>", content_type="text/html", times=1
    )
    out = tmp_path / "frozen"
    report = record(out, pools=CHART_IDS[4:7], snapshot=False, backoff_s=0, **_urls(replay_env))
    assert report.ok, report.failed
    assert replay_env.count(f"/chart/{chart_id}$") == 3
    assert replay_env.count(f"/chart/{CHART_IDS[5]}$") == 2
    assert replay_env.count(f"/chart/{CHART_IDS[6]}$") == 2
    for cid in CHART_IDS[4:7]:
        rel = f"defillama/yields/chart/{cid}.json"
        assert (out / rel).read_bytes() == (RECORDED / rel).read_bytes()
    assert not (out / "defillama/yields/pools.json").exists()


def test_gives_up_after_bounded_retries(replay_env: ReplayServer, tmp_path: Path) -> None:
    replay_env.force("/chart/", 503, times=None)
    out = tmp_path / "frozen"
    report = record(out, pools=CHART_IDS[:1], snapshot=False, retries=2, backoff_s=0, **_urls(replay_env))
    assert not report.ok
    assert list(report.failed) == [f"{replay_env.base_url}/defillama/yields/chart/{CHART_IDS[0]}"]
    assert replay_env.count("/chart/") == 3
    assert not out.exists() or not list(out.rglob("*.json"))


def test_non_retryable_status_fails_fast(replay_env: ReplayServer, tmp_path: Path) -> None:
    replay_env.payment_required("/pools$")
    report = record(tmp_path, backoff_s=0, **_urls(replay_env))
    assert "HTTP 402" in next(iter(report.failed.values()))
    assert replay_env.count("/pools$") == 1


def test_invalid_pool_uuid_is_rejected_before_any_request(replay_env: ReplayServer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uuid"):
        record(tmp_path, pools=["not-a-uuid"], **_urls(replay_env))
    assert replay_env.requests == []


def test_binance_zip_checksum_and_coins(archive_server: ReplayServer, tmp_path: Path) -> None:
    out = tmp_path / "frozen"
    missing_key = ZIP_KEY.replace("2024-01", "2024-02")
    report = record(
        out,
        snapshot=False,
        binance=[ZIP_KEY.removeprefix("data/"), missing_key],
        coins=["coingecko:bitcoin"],
        coins_query="start=1&span=3",
        backoff_s=0,
        **_urls(archive_server),
    )
    src = archive_server.root
    for rel in (f"binance/{ZIP_KEY}", f"binance/{ZIP_KEY}.CHECKSUM"):
        assert (out / rel).read_bytes() == (src / rel).read_bytes()
    coins_rel = f"defillama/coins/chart/{coins_chart_filename('coingecko:bitcoin', 'span=3&start=1')}"
    assert (out / coins_rel).read_bytes() == (src / coins_rel).read_bytes()
    assert report.missing == [f"{archive_server.base_url}/binance/{missing_key}"]
    assert not (out / "binance" / missing_key).exists()
    assert archive_server.count(r"2024-02\.zip\.CHECKSUM") == 0  # no checksum fetched for a missing zip
    assert report.checksum_mismatches == [] and report.failed == {}

    # What we recorded replays identically.
    with ReplayServer(out) as replay:
        again = record(tmp_path / "second", snapshot=False, binance=[ZIP_KEY], backoff_s=0, **_urls(replay))
    assert again.ok
    assert (tmp_path / "second/binance" / ZIP_KEY).read_bytes() == (src / "binance" / ZIP_KEY).read_bytes()


def test_binance_corruption_is_refetched_or_reported(archive_server: ReplayServer, tmp_path: Path) -> None:
    original = (archive_server.root / "binance" / ZIP_KEY).read_bytes()
    archive_server.corrupt(r"\.zip$", times=1)  # one bad transfer: the recorder refetches
    ok = record(tmp_path / "a", snapshot=False, binance=[ZIP_KEY], backoff_s=0, **_urls(archive_server))
    assert ok.ok
    assert (tmp_path / "a/binance" / ZIP_KEY).read_bytes() == original
    assert archive_server.count(r"\.zip$") == 2

    archive_server.reset()
    archive_server.corrupt(r"\.CHECKSUM$")  # wrong checksum upstream: kept as served, reported
    bad = record(tmp_path / "b", snapshot=False, binance=[ZIP_KEY], backoff_s=0, **_urls(archive_server))
    assert bad.checksum_mismatches == [ZIP_KEY] and not bad.ok
    assert (tmp_path / "b/binance" / ZIP_KEY).read_bytes() == original


def test_cli_record(replay_env: ReplayServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "frozen"
    base = replay_env.base_url
    code = main(
        ["record", str(out), "--yields-url", f"{base}/defillama/yields", "--pools", CHART_IDS[0], "-q"]
    )
    assert code == 0
    assert "written 2" in capsys.readouterr().out
    rel = f"defillama/yields/chart/{CHART_IDS[0]}.json"
    assert (out / rel).read_bytes() == (RECORDED / rel).read_bytes()
    # URLs default to the MIDFREQ_* env vars that replay_env set.
    assert main(["record", str(out), "--pools", CHART_IDS[1], "--no-snapshot", "-q"]) == 0
    assert (out / f"defillama/yields/chart/{CHART_IDS[1]}.json").exists()
    assert main(["record", str(out), "--pools", "bad-id"]) == 2


def test_binance_key_normalisation() -> None:
    expected = "data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2023-01-01.zip"
    for raw in (
        "spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2023-01-01.zip",
        "/data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2023-01-01.zip",
        "binance/data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2023-01-01.zip",
        "https://data.binance.vision/data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2023-01-01.zip",
    ):
        assert binance_key(raw) == expected
    with pytest.raises(ValueError):
        binance_key("data/../etc/passwd")


def test_atomic_write_replaces_without_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "file.json"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]
