"""What the integrity guards cost and bound (issue 12): prints the figures.

- completeness merge of a one-year backfill: reading the previous 365 ``pool_history`` partitions
  of 500 pools and merging the rows of pools that failed (target: small next to the fetch, < 5 s);
- a drip-fed body is abandoned within ``request_deadline_s + timeout_s``;
- a 300 MiB body and a 512 MiB gzip bomb are refused with memory near the endpoint limit;
- a 1 GiB zip bomb is refused before inflating.

Run with `.venv/bin/python benchmarks/bench_integrity.py`.
"""

from __future__ import annotations

import contextlib
import io
import resource
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from midfreq_assets.domain.ingest.klines import KlinesParseError, parse_klines_zip
from midfreq_assets.domain.ingest.pool_history import merge_kept_rows
from midfreq_resources.clients.defillama import DefiLlamaClient
from midfreq_resources.clients.http_retry import DeadlineExceededError, ResponseTooLargeError
from midfreq_resources.io.parquet_io_manager import ParquetIOManager
from midfreq_resources.replay.server import ReplayServer

REPO = Path(__file__).resolve().parents[1]
POOL = "f981a304-bb6c-45b8-b0c5-fd2f515ad23a"
N_POOLS, N_DAYS, FAILED_SHARE = 500, 365, 0.5


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_merge() -> None:
    rng = np.random.default_rng(0)
    days = pd.date_range("2024-06-06", periods=N_DAYS)
    pools = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(N_POOLS)]
    with tempfile.TemporaryDirectory() as root:
        io_m = ParquetIOManager(root=root)
        frame = pd.DataFrame(
            {
                "date": np.repeat(days, N_POOLS),
                "pool": pools * N_DAYS,
                "tvl_usd": rng.uniform(1e6, 1e9, N_DAYS * N_POOLS),
                "apy": rng.uniform(0, 0.2, N_DAYS * N_POOLS),
            }
        )
        io_m.daily(["pool_history"]).write({f"{day:%Y-%m-%d}": rows for day, rows in frame.groupby("date")})
        keys = [f"{d:%Y-%m-%d}" for d in days]
        t0 = time.perf_counter()
        found, _ = io_m.read_existing(["pool_history"], keys)
        previous = pd.concat(found.values(), ignore_index=True)
        t1 = time.perf_counter()
        failed = set(pools[: int(N_POOLS * FAILED_SHARE)])
        fetched = frame[~frame["pool"].isin(failed)]
        merged, kept = merge_kept_rows(fetched, previous, ["pool", "date"], previous["pool"].isin(pools))
        t2 = time.perf_counter()
    assert len(merged) == len(frame) and len(kept) == len(frame) - len(fetched)
    print(
        f"completeness merge, {N_DAYS} days x {N_POOLS} pools ({len(frame):,} rows), {FAILED_SHARE:.0%} failed: "
        f"read previous partitions {t1 - t0:.2f} s, merge {t2 - t1:.2f} s"
    )


def bench_hostile() -> None:
    with ReplayServer(REPO / "recorded") as server:
        base = f"{server.base_url}/defillama/yields"
        server.drip(rf"/chart/{POOL}$", interval_ms=100)
        client = DefiLlamaClient(base_url=base, timeout_s=2.0, request_deadline_s=3.0, max_attempts=1)
        t = time.perf_counter()
        with contextlib.suppress(DeadlineExceededError):
            client.chart(POOL)
        print(
            f"drip-fed body (1 byte / 100 ms): abandoned after {time.perf_counter() - t:.2f} s "
            "(bound: request_deadline_s 3 + timeout_s 2 = 5 s)"
        )
        server.reset()
        server.oversize(rf"/chart/{POOL}$", size_bytes=300 * 2**20, announce_length=False)
        before = peak_mb()
        t = time.perf_counter()
        with contextlib.suppress(ResponseTooLargeError):
            DefiLlamaClient(base_url=base, max_chart_mb=32, max_attempts=1).chart(POOL)
        print(
            f"300 MiB body, no Content-Length: refused after {time.perf_counter() - t:.2f} s, "
            f"peak RSS +{peak_mb() - before:.0f} MB (limit 32 MiB)"
        )
        server.reset()
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        bomb = b"".join(packer.compress(b" " * 2**20) for _ in range(512)) + packer.flush()
        server.force(rf"/chart/{POOL}$", 200, body=bomb, headers={"Content-Encoding": "gzip"}, times=None)
        before = peak_mb()
        t = time.perf_counter()
        with contextlib.suppress(ResponseTooLargeError):
            DefiLlamaClient(base_url=base, max_chart_mb=32, max_attempts=1).chart(POOL)
        print(
            f"gzip bomb ({len(bomb) / 2**10:.0f} KiB -> 512 MiB): refused after {time.perf_counter() - t:.2f} s, "
            f"peak RSS +{peak_mb() - before:.0f} MB (limit 32 MiB)"
        )


def bench_zip_bomb() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf, zf.open("x.csv", "w") as fh:
        block = b"\0" * (64 * 2**20)
        for _ in range(16):
            fh.write(block)
    data = buf.getvalue()
    before = peak_mb()
    t = time.perf_counter()
    with contextlib.suppress(KlinesParseError):
        parse_klines_zip(data, source="bomb.zip", symbol="BTCUSDT", interval="1h")
    print(
        f"zip bomb ({len(data) / 2**20:.1f} MiB -> 1 GiB): refused after {(time.perf_counter() - t) * 1e3:.1f} ms, "
        f"peak RSS +{peak_mb() - before:.0f} MB"
    )


if __name__ == "__main__":
    bench_merge()
    bench_hostile()
    bench_zip_bomb()
