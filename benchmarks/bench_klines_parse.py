"""Parse one month of 1-minute Binance klines (44,640 rows) from an in-memory zip.

Targets: < 0.3 s per month into the typed frame, < 50 MB per month (frame size and peak).
Run: ``.venv/bin/python benchmarks/bench_klines_parse.py``; exits non-zero if a target is missed.
"""

from __future__ import annotations

import gc
import io
import os
import statistics
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pyarrow as pa

from midfreq_assets.domain.ingest.klines import parse_klines_zip

ROWS = 31 * 24 * 60
TIME_BUDGET_S = 0.3
MEMORY_BUDGET_MB = 50.0


def synthetic_month(unit: str = "ms", seed: int = 7) -> bytes:
    """A zip shaped like ``BTCUSDT-1m-2024-01.zip``: random-walk prices with the archive's 8 decimals."""
    rng = np.random.default_rng(seed)
    scale = 1_000 if unit == "ms" else 1_000_000
    open_time = 1_704_067_200 * scale + np.arange(ROWS, dtype=np.int64) * 60 * scale
    close = 42_000 * np.exp(np.cumsum(rng.normal(0, 0.0008, ROWS)))
    open_ = np.concatenate([[42_000.0], close[:-1]])
    spread = np.abs(rng.normal(0, 0.0005, ROWS)) * close
    high, low = np.maximum(open_, close) + spread, np.minimum(open_, close) - spread
    volume = rng.gamma(2.0, 20.0, ROWS)
    count = rng.integers(200, 5_000, ROWS)
    taker = volume * rng.uniform(0.3, 0.7, ROWS)
    lines = [
        f"{t},{o:.8f},{h:.8f},{lo:.8f},{c:.8f},{v:.8f},{t + 60 * scale - 1},{v * c:.8f},{n},{tb:.8f},{tb * c:.8f},0"
        for t, o, h, lo, c, v, n, tb in zip(
            open_time, open_, high, low, close, volume, count, taker, strict=True
        )
    ]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("BTCUSDT-1m-2024-01.csv", "\n".join(lines) + "\n")
    return buf.getvalue()


def parse(data: bytes):
    return parse_klines_zip(data, source="BTCUSDT-1m-2024-01.zip", symbol="BTCUSDT", interval="1m")


def bench(unit: str, repeats: int = 15) -> dict[str, float]:
    data = synthetic_month(unit)
    parse(data)  # warm-up: imports, pyarrow thread pool
    times, cpu = [], []
    for _ in range(repeats):
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        df = parse(data)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    assert len(df) == ROWS
    gc.collect()
    tracemalloc.start()
    df = parse(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "zip_mb": len(data) / 1e6,
        "median_s": statistics.median(times),
        "best_s": min(times),
        "worst_s": max(times),
        "cpu_s": statistics.median(cpu),
        "frame_mb": df.memory_usage(deep=True).sum() / 1e6,
        "peak_python_mb": peak / 1e6,
    }


def main() -> int:
    ok = True
    load = os.getloadavg()[0]
    print(
        f"one month of 1m klines: {ROWS:,} rows (pyarrow {pa.__version__}; {os.cpu_count()} CPUs, load {load:.1f})"
    )
    for unit in ("ms", "us"):
        r = bench(unit)
        rows_per_s = ROWS / r["median_s"]
        print(
            f"  {unit} timestamps: zip {r['zip_mb']:.2f} MB | parse median {r['median_s'] * 1000:.1f} ms "
            f"(best {r['best_s'] * 1000:.1f}, worst {r['worst_s'] * 1000:.1f}, CPU {r['cpu_s'] * 1000:.1f}; "
            f"{rows_per_s / 1e6:.2f} M rows/s) | "
            f"frame {r['frame_mb']:.1f} MB | tracemalloc peak {r['peak_python_mb']:.1f} MB"
        )
        ok &= r["median_s"] < TIME_BUDGET_S and max(r["frame_mb"], r["peak_python_mb"]) < MEMORY_BUDGET_MB
    print(
        f"  arrow pool high-water mark (whole process): {pa.default_memory_pool().max_memory() / 1e6:.1f} MB"
    )
    print(
        f"targets: < {TIME_BUDGET_S} s and < {MEMORY_BUDGET_MB:.0f} MB per month -> {'OK' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
