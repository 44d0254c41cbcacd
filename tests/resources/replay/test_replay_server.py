"""Replay server: faithful answers, live-API edge cases, fault injection, concurrency, CLI."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import httpx
import pytest

from midfreq_resources.replay.cli import main
from midfreq_resources.replay.server import (
    FaultConfig,
    ReplayServer,
    coins_chart_filename,
    corrupt_bytes,
)

REPO_ROOT = Path(__file__).parents[3]
RECORDED = REPO_ROOT / "recorded"
YIELDS = RECORDED / "defillama" / "yields"
CHART_IDS = sorted(p.stem for p in (YIELDS / "chart").glob("*.json"))
UNKNOWN_UUID = "00000000-1111-2222-3333-444444444444"
ZIP_KEY = "data/spot/daily/klines/ETHUSDT/1h/ETHUSDT-1h-2023-01-01.zip"


@pytest.fixture
def archive_root(tmp_path: Path, write_archive_zip) -> Path:
    """A tiny served tree with one Binance zip + checksum and one coins chart."""
    rows = "\n".join(
        f"{1672531200000 + h * 3600000},1,2,0.5,1.5,10,{1672534799999 + h * 3600000},15,7,5,7.5,0"
        for h in range(24)
    )
    write_archive_zip(tmp_path, ZIP_KEY, rows + "\n")
    coins_dir = tmp_path / "defillama" / "coins" / "chart"
    coins_dir.mkdir(parents=True)
    (coins_dir / coins_chart_filename("coingecko:bitcoin")).write_text('{"coins":{"coingecko:bitcoin":{}}}')
    (coins_dir / coins_chart_filename("coingecko:bitcoin", "span=2&start=1")).write_text('{"coins":{"q":1}}')
    return tmp_path


@pytest.fixture
def archive_server(archive_root: Path):
    with ReplayServer(archive_root) as server:
        yield server


# --------------------------------------------------------------------------- faithful replay
def test_pools_and_chart_are_served_byte_for_byte(replay_env: ReplayServer) -> None:
    base = replay_env.base_url
    pools = httpx.get(f"{base}/defillama/yields/pools")
    assert pools.status_code == 200
    assert pools.content == (YIELDS / "pools.json").read_bytes()
    assert pools.headers["content-type"].startswith("application/json")
    assert int(pools.headers["content-length"]) == len(pools.content)
    assert len(pools.json()["data"]) == 55

    chart = httpx.get(f"{base}/defillama/yields/chart/{CHART_IDS[0]}")
    assert chart.status_code == 200
    assert chart.content == (YIELDS / "chart" / f"{CHART_IDS[0]}.json").read_bytes()


def test_replay_env_points_clients_at_server(replay_env: ReplayServer) -> None:
    assert os.environ["MIDFREQ_DEFILLAMA_YIELDS_URL"] == f"{replay_env.base_url}/defillama/yields"
    assert os.environ["MIDFREQ_DEFILLAMA_COINS_URL"] == f"{replay_env.base_url}/defillama/coins"
    assert os.environ["MIDFREQ_BINANCE_ARCHIVE_URL"] == f"{replay_env.base_url}/binance"
    assert replay_env.base_url.startswith("http://127.0.0.1:")
    resp = httpx.get(os.environ["MIDFREQ_DEFILLAMA_YIELDS_URL"] + "/pools")
    assert resp.json()["status"] == "success"


def test_chart_edge_cases_mimic_live_api(replay_env: ReplayServer) -> None:
    base = replay_env.base_url
    unknown = httpx.get(f"{base}/defillama/yields/chart/{UNKNOWN_UUID}")
    assert unknown.status_code == 200
    assert unknown.json() == {"status": "success", "data": []}

    malformed = httpx.get(f"{base}/defillama/yields/chart/not-a-uuid")
    assert malformed.status_code == 400
    assert malformed.content == b'"invalid configID!"'
    assert malformed.json() == "invalid configID!"
    assert malformed.headers["content-type"].startswith("application/json")

    assert httpx.get(f"{base}/nope").status_code == 404
    assert httpx.get(f"{base}/defillama/yields/nope").status_code == 404


def test_path_traversal_is_refused(replay_env: ReplayServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", replay_env.port, timeout=5)
    for target in ("/defillama/../../pyproject.toml", "/binance/../README.md", "/defillama/%2e%2e/README.md"):
        conn.request("GET", target)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 404, target
    conn.close()


def test_binance_files_and_s3_style_404(archive_server: ReplayServer, archive_root: Path) -> None:
    base = archive_server.base_url
    zip_resp = httpx.get(f"{base}/binance/{ZIP_KEY}")
    assert zip_resp.status_code == 200
    assert zip_resp.headers["content-type"] == "application/zip"
    assert zip_resp.content == (archive_root / "binance" / ZIP_KEY).read_bytes()
    checksum = httpx.get(f"{base}/binance/{ZIP_KEY}.CHECKSUM")
    assert checksum.text.split() == [hashlib.sha256(zip_resp.content).hexdigest(), Path(ZIP_KEY).name]

    missing = httpx.get(f"{base}/binance/data/spot/daily/klines/ETHUSDT/1h/ETHUSDT-1h-2023-01-02.zip")
    assert missing.status_code == 404
    assert "<Code>NoSuchKey</Code>" in missing.text
    assert "ETHUSDT-1h-2023-01-02.zip" in missing.text

    head = httpx.head(f"{base}/binance/{ZIP_KEY}")
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == len(zip_resp.content)
    assert head.content == b""


def test_bundled_binance_slice_matches_its_checksums(replay_env: ReplayServer) -> None:
    checksums = sorted((RECORDED / "binance").rglob("*.zip.CHECKSUM"))
    if not checksums:
        pytest.skip("no Binance slice bundled under recorded/binance")
    with httpx.Client(base_url=replay_env.base_url) as client:
        for checksum in checksums:
            key = checksum.relative_to(RECORDED).as_posix().removesuffix(".CHECKSUM")
            digest, name = client.get(f"/{key}.CHECKSUM").text.split()
            body = client.get(f"/{key}").content
            assert name == Path(key).name
            assert hashlib.sha256(body).hexdigest() == digest, key


def test_coins_chart_filename_scheme_and_lookup(archive_server: ReplayServer) -> None:
    name = coins_chart_filename("ethereum:0xA0b8,coingecko:bitcoin", "start=1&span=2")
    assert name == "ethereum%3A0xA0b8%2Ccoingecko%3Abitcoin__span%3D2%26start%3D1.json"
    assert coins_chart_filename("coingecko:bitcoin", {"start": 1, "span": 2}) == coins_chart_filename(
        "coingecko:bitcoin", "start=1&span=2"
    )
    base = archive_server.base_url
    assert httpx.get(f"{base}/defillama/coins/chart/coingecko:bitcoin").json() == {
        "coins": {"coingecko:bitcoin": {}}
    }
    # query-specific file wins (parameter order does not matter), else fallback to the plain file
    assert httpx.get(f"{base}/defillama/coins/chart/coingecko:bitcoin?start=1&span=2").json() == {
        "coins": {"q": 1}
    }
    assert httpx.get(f"{base}/defillama/coins/chart/coingecko:bitcoin?start=9").json()["coins"] != {"q": 1}
    assert httpx.get(f"{base}/defillama/coins/chart/coingecko:nothing").json() == {"coins": {}}


# --------------------------------------------------------------------------- targeted faults
def test_force_next_n_then_normal_and_request_log(replay_env: ReplayServer) -> None:
    chart_id = CHART_IDS[1]
    rule = replay_env.force(rf"/chart/{chart_id}$", 429, headers={"Retry-After": "0"}, times=2)
    url = replay_env.url(f"/defillama/yields/chart/{chart_id}")
    with httpx.Client() as client:
        first, second, third = (client.get(url) for _ in range(3))
        other = client.get(replay_env.url(f"/defillama/yields/chart/{CHART_IDS[2]}"))
    assert [first.status_code, second.status_code, third.status_code] == [429, 429, 200]
    assert first.headers["retry-after"] == "0"
    assert third.json()["status"] == "success"
    assert other.status_code == 200
    assert rule.hits == 2 and rule.remaining == 0
    assert replay_env.count(chart_id) == 3
    assert replay_env.count(chart_id, status=429) == 2
    method, path, status = replay_env.requests[-1]
    assert (method, path, status) == ("GET", f"/defillama/yields/chart/{CHART_IDS[2]}", 200)


def test_force_json_body_and_payment_required(replay_env: ReplayServer) -> None:
    replay_env.force("/pools$", 503, body={"error": "busy"}, times=1)
    busy = httpx.get(replay_env.url("/defillama/yields/pools"))
    assert busy.status_code == 503 and busy.json() == {"error": "busy"}

    replay_env.payment_required("/defillama/yields/poolsEnriched")
    paid = httpx.get(replay_env.url("/defillama/yields/poolsEnriched"))
    assert paid.status_code == 402
    assert paid.headers["content-type"].startswith("text/plain")
    assert paid.text.startswith("Payment Required")
    with pytest.raises(json.JSONDecodeError):
        json.loads(paid.text)


def test_corrupt_zip_and_checksum(archive_server: ReplayServer, archive_root: Path) -> None:
    original = (archive_root / "binance" / ZIP_KEY).read_bytes()
    archive_server.corrupt(r"\.zip$", times=1)
    bad = httpx.get(archive_server.url(f"/binance/{ZIP_KEY}")).content
    assert len(bad) == len(original) and bad != original
    with (
        pytest.raises((zipfile.BadZipFile, zlib.error, OSError, ValueError)),
        zipfile.ZipFile(io.BytesIO(bad)) as zf,
    ):
        for name in zf.namelist():
            zf.read(name)
    assert httpx.get(archive_server.url(f"/binance/{ZIP_KEY}")).content == original  # times=1

    archive_server.corrupt(r"\.CHECKSUM$")
    digest, name = httpx.get(archive_server.url(f"/binance/{ZIP_KEY}.CHECKSUM")).text.split()
    assert len(digest) == 64 and int(digest, 16) >= 0 and name == Path(ZIP_KEY).name
    assert digest != hashlib.sha256(original).hexdigest()


def test_corrupt_bytes_keeps_length() -> None:
    assert corrupt_bytes(b"") == b""
    assert len(corrupt_bytes(b"abc" * 100)) == 300


def test_truncate_short_and_close(replay_env: ReplayServer) -> None:
    url = replay_env.url(f"/defillama/yields/chart/{CHART_IDS[0]}")
    full = (YIELDS / "chart" / f"{CHART_IDS[0]}.json").read_bytes()
    replay_env.truncate("/chart/", times=1, mode="short")
    short = httpx.get(url)
    assert short.status_code == 200
    assert len(short.content) == len(full) // 2 == int(short.headers["content-length"])
    with pytest.raises(json.JSONDecodeError):
        short.json()

    replay_env.truncate("/chart/", times=1, mode="close")
    with httpx.Client() as client, pytest.raises(httpx.RemoteProtocolError):
        client.get(url)
    assert httpx.get(url).content == full


def test_slow_rule_triggers_client_timeout(replay_env: ReplayServer) -> None:
    replay_env.slow("/pools$", delay_ms=500, times=1)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(replay_env.url("/defillama/yields/pools"), timeout=0.1)


# --------------------------------------------------------------------------- random faults
def _statuses(server: ReplayServer, n: int) -> list[tuple[int, str | None]]:
    out = []
    with httpx.Client() as client:
        for i in range(n):
            r = client.get(server.url(f"/defillama/yields/chart/{CHART_IDS[i % len(CHART_IDS)]}"))
            out.append((r.status_code, r.headers.get("retry-after")))
    return out


def test_random_errors_are_seeded_and_roughly_at_rate(replay_env: ReplayServer) -> None:
    with replay_env.faulted(error_rate=0.3, error_codes=(429, 502), retry_after_s=0, seed=7):
        first = _statuses(replay_env, 120)
    with replay_env.faulted(error_rate=0.3, error_codes=(429, 502), retry_after_s=0, seed=7):
        second = _statuses(replay_env, 120)
    assert first == second
    codes = [c for c, _ in first]
    assert set(codes) == {200, 429, 502}
    assert 0.15 < sum(c != 200 for c in codes) / len(codes) < 0.45
    assert all(ra == "0" for c, ra in first if c == 429)
    assert all(ra is None for c, ra in first if c != 429)
    assert replay_env.faults == FaultConfig()  # faulted() restored the config


def test_html_errors_and_random_truncation(replay_env: ReplayServer) -> None:
    url = replay_env.url("/defillama/yields/pools")
    with replay_env.faulted(html_error_rate=1.0, seed=1), httpx.Client() as client:
        pages = [client.get(url) for _ in range(10)]
    assert {p.status_code for p in pages} <= {200, 502}
    assert all(p.headers["content-type"].startswith("text/html") and "<html>" in p.text for p in pages)
    with replay_env.faulted(truncate_rate=1.0):
        cut = httpx.get(url)
    with pytest.raises(json.JSONDecodeError):
        cut.json()


def test_reset_clears_rules_faults_and_log(replay_env: ReplayServer) -> None:
    replay_env.force("/pools", 500, times=None)
    replay_env.set_faults(latency_ms=5)
    assert httpx.get(replay_env.url("/defillama/yields/pools")).status_code == 500
    replay_env.reset()
    assert replay_env.requests == []
    assert replay_env.faults.latency_ms == 0
    assert httpx.get(replay_env.url("/defillama/yields/pools")).status_code == 200


def test_fault_config_validation() -> None:
    with pytest.raises(ValueError):
        FaultConfig(error_rate=1.5)
    with pytest.raises(ValueError):
        FaultConfig(error_rate=0.6, html_error_rate=0.6)
    with pytest.raises(ValueError):
        FaultConfig(truncate_mode="sometimes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- concurrency
def test_500_charts_with_50ms_latency_over_10_connections_under_5s(replay_env: ReplayServer) -> None:
    replay_env.set_faults(latency_ms=50)
    urls = [replay_env.url(f"/defillama/yields/chart/{CHART_IDS[i % len(CHART_IDS)]}") for i in range(500)]
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=10)
    start = time.perf_counter()
    with httpx.Client(limits=limits) as client, cf.ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda u: client.get(u).status_code, urls))
    elapsed = time.perf_counter() - start
    assert statuses == [200] * 500
    assert elapsed < 5.0, elapsed
    assert replay_env.count("/chart/") == 500


def test_keep_alive_serves_many_requests_on_one_connection(replay_env: ReplayServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", replay_env.port, timeout=5)
    conn.connect()
    sock = conn.sock
    for chart_id in CHART_IDS[:5]:
        conn.request("GET", f"/defillama/yields/chart/{chart_id}")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["status"] == "success"
        assert conn.sock is sock
    conn.close()


def test_stop_releases_port(tmp_path: Path) -> None:
    server = ReplayServer(tmp_path).start()
    url = server.url("/nope")
    assert httpx.get(url).status_code == 404
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=1)
    with pytest.raises(FileNotFoundError):
        ReplayServer(tmp_path / "missing")


# --------------------------------------------------------------------------- CLI
def test_cli_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "replay" in out and "record" in out
    with pytest.raises(SystemExit) as exc:
        main(["replay", "--help"])
    out = capsys.readouterr().out
    assert "--latency-ms" in out and "--error-codes" in out and "--seed" in out


def test_cli_replay_runs_until_sigterm(archive_root: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "midfreq_resources.replay.cli",
            "replay",
            str(archive_root),
            "--port",
            "0",
            "--latency-ms",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(5)]
        base = lines[0].strip().rsplit(" ", 1)[-1]
        assert base.startswith("http://127.0.0.1:")
        assert f"export MIDFREQ_BINANCE_ARCHIVE_URL={base}/binance\n" in lines
        assert httpx.get(f"{base}/binance/{ZIP_KEY}", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- bad flags: one line, no traceback
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["recorded", "--error-rate", "0.7", "--html-error-rate", "0.5"], "must be <= 1"),
        (["recorded", "--error-rate", "1.5"], "within [0, 1]"),
        (["recorded", "--error-rate", "lots"], "a share within [0, 1] expected"),
        (["recorded", "--port", "70000"], "within 0..65535"),
        (["recorded", "--port", "-1"], "within 0..65535"),
        (["recorded", "--latency-ms", "-5"], "must be >= 0"),
        (["recorded", "--drip-bytes", "0"], "drip_bytes >= 1"),
        (["does/not/exist"], "is not a directory"),
        (["recorded", "--host", "256.1.1.1"], "error:"),
    ],
)
def test_cli_bad_flags_are_one_line_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).parents[3])
    try:
        code = main(["replay", *args])  # errors found after parsing are returned
    except SystemExit as exc:  # argparse's own errors exit
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0] and "Traceback" not in err
