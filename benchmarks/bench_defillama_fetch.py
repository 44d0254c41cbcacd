"""Fetch 500 pool histories from the replay server with 50 ms latency per request.

Target (issue 2): <= 5 s with at most 10 concurrent connections; one at a time would take >= 25 s.
Prints the figures; run with `.venv/bin/python benchmarks/bench_defillama_fetch.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from midfreq_assets.domain.ingest.pool_history import charts_frame
from midfreq_resources.clients.defillama import DefiLlamaClient

REPO = Path(__file__).resolve().parents[1]
N_POOLS = 500
LATENCY_MS = 50
CONCURRENCY = 10


def build_corpus(root: Path) -> list[str]:
    """500 chart files: the 55 recorded histories, reused under fresh uuids."""
    charts = sorted((REPO / "recorded/defillama/yields/chart").glob("*.json"))
    out = root / "defillama/yields/chart"
    out.mkdir(parents=True)
    ids = []
    for i in range(N_POOLS):
        pool = str(uuid.UUID(int=i + 1, version=4))
        shutil.copyfile(charts[i % len(charts)], out / f"{pool}.json")
        ids.append(pool)
    return ids


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"replay server did not come up at {url}")


def main() -> None:
    """The replay server runs in its own process, as it would in front of a real client."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ids = build_corpus(root)
        rows = sum(
            len(json.loads(p.read_text())["data"]) for p in (root / "defillama/yields/chart").glob("*.json")
        )
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "midfreq_resources.replay.cli",
                "replay",
                str(root),
                "--port",
                str(port),
                "--latency-ms",
                str(LATENCY_MS),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=os.environ.copy(),
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_up(f"{base}/defillama/yields/chart/{ids[0]}")
            client = DefiLlamaClient(base_url=f"{base}/defillama/yields", max_concurrency=CONCURRENCY)
            started = time.perf_counter()
            batch = client.charts(ids)
            fetched = time.perf_counter() - started
            frame = charts_frame(batch.ok)
            total = time.perf_counter() - started
            assert not batch.failed, batch.failed
        finally:
            server.terminate()
            server.wait(timeout=10)
        serial_floor = N_POOLS * LATENCY_MS / 1000
        print(f"pools={N_POOLS} rows={rows} latency={LATENCY_MS}ms concurrency={CONCURRENCY}")
        print(f"fetch+validate: {fetched:.2f}s  (+ frame of {len(frame)} rows: {total:.2f}s)  target <= 5 s")
        print(
            f"one at a time would take >= {serial_floor:.1f}s  speed-up vs serial floor: {serial_floor / fetched:.1f}x"
        )


if __name__ == "__main__":
    main()
