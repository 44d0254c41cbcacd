"""Write the GENERATED (synthetic) USD-M futures sample: BTCUSDT premiumIndexKlines and fundingRate.

No recording of the futures archive was at hand, so these series are made up, in the exact
archive layout (``data/futures/um/{daily,monthly}/...``, one CSV with a header row per zip, epoch
milliseconds, a ``.CHECKSUM`` beside each zip), over the days the bundled spot klines cover:

- premium index bars (1h: 2023-02 monthly + 2023-03-01..31 daily; 1d: 2024-10..2025-01 monthly +
  2025-02-01..20 daily): an AR(1) premium of a few basis points that leans with the spot bar's
  return (perpetuals trade rich in rallies), as fractions of the index price; volumes are 0, as
  in the real premium-index files. A bar exists where the spot bar does, so the real spot
  maintenance gap of 2023-03-24 (one hour) is a gap here too;
- funding rates (monthly files only, as the archive publishes them: 2023-02, 2023-03, 2024-10 ..
  2025-02): every 8 hours, the mean premium of the 8 hours plus the clamped interest term
  ``clamp(0.0001 - premium, -0.0005, 0.0005)``, Binance's formula, with an 8-hour interval.

Deterministic (fixed seed). Run: ``python recorded/binance/generate_futures_sample.py``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
import random
import zipfile
from pathlib import Path

from midfreq_assets.domain.ingest.klines import parse_klines_zip

HERE = Path(__file__).resolve().parent
SPOT = HERE / "data" / "spot"
FUTURES = HERE / "data" / "futures" / "um"
SYMBOL = "BTCUSDT"
SEED = 20230201
KLINE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    "taker_buy_quote_volume,ignore"
)
FUNDING_HEADER = "calc_time,funding_interval_hours,last_funding_rate"
INTERVAL_MS = {"1h": 3_600_000, "1d": 86_400_000}
# (interval, monthly periods, daily first..last) as in the bundled spot slice
SLICES = [
    ("1h", ["2023-02"], (dt.date(2023, 3, 1), dt.date(2023, 3, 31))),
    ("1d", ["2024-10", "2024-11", "2024-12", "2025-01"], (dt.date(2025, 2, 1), dt.date(2025, 2, 20))),
]
FUNDING_MONTHS = ["2023-02", "2023-03", "2024-10", "2024-11", "2024-12", "2025-01", "2025-02"]
FUNDING_INTERVAL_HOURS = 8
MEAN_PREMIUM = 0.0003


def spot_returns(interval: str) -> dict[int, float]:
    """open_time (ms) -> log return of the spot bar, from the bundled spot zips."""
    out: dict[int, float] = {}
    for path in sorted(SPOT.glob(f"*/klines/{SYMBOL}/{interval}/*.zip")):
        bars = parse_klines_zip(path.read_bytes(), source=path.name, symbol=SYMBOL, interval=interval)
        for t, o, c in zip(bars["open_time"], bars["open"], bars["close"], strict=True):
            out[int(t.timestamp() * 1000)] = math.log(c / o)
    return out


def premium_bars(interval: str, rng: random.Random) -> list[tuple[int, float, float, float, float]]:
    """(open_time ms, open, high, low, close) per spot bar, an AR(1) premium leaning with spot."""
    lean, noise, keep = (0.05, 0.00025, 0.7) if interval == "1h" else (0.02, 0.0003, 0.5)
    prev, bars = MEAN_PREMIUM, []
    for t, ret in sorted(spot_returns(interval).items()):
        close = keep * prev + (1 - keep) * MEAN_PREMIUM + lean * ret + rng.gauss(0, noise)
        high = max(prev, close) + abs(rng.gauss(0, noise / 2))
        low = min(prev, close) - abs(rng.gauss(0, noise / 2))
        bars.append((t, prev, high, low, close))
        prev = close
    return bars


def kline_csv(rows: list[tuple[int, float, float, float, float]], interval: str) -> bytes:
    lines = [KLINE_HEADER]
    for t, o, h, lo, c in rows:
        lines.append(f"{t},{o:.8f},{h:.8f},{lo:.8f},{c:.8f},0,{t + INTERVAL_MS[interval] - 1},0,0,0,0,0")
    return ("\n".join(lines) + "\n").encode()


def write_zip(path: Path, member: str, data: bytes) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo(
            member, date_time=(2025, 3, 1, 0, 0, 0)
        )  # fixed: the zip bytes are reproducible
        z.writestr(info, data, zipfile.ZIP_DEFLATED)
    body = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    (path.parent / (path.name + ".CHECKSUM")).write_text(f"{hashlib.sha256(body).hexdigest()}  {path.name}")


def day_of(t_ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(t_ms / 1000, dt.UTC).date()


def write_premium(rng: random.Random) -> dict[int, float]:
    """Write the premium-index zips; return the premium close per hour (for the funding rates)."""
    hourly: dict[int, float] = {}
    for interval, months, (first, last) in SLICES:
        bars = premium_bars(interval, rng)
        for month in months:
            rows = [b for b in bars if day_of(b[0]).strftime("%Y-%m") == month]
            name = f"{SYMBOL}-{interval}-{month}"
            write_zip(
                FUTURES / "monthly" / "premiumIndexKlines" / SYMBOL / interval / f"{name}.zip",
                f"{name}.csv",
                kline_csv(rows, interval),
            )
        day = first
        while day <= last:
            rows = [b for b in bars if day_of(b[0]) == day]
            name = f"{SYMBOL}-{interval}-{day.isoformat()}"
            write_zip(
                FUTURES / "daily" / "premiumIndexKlines" / SYMBOL / interval / f"{name}.zip",
                f"{name}.csv",
                kline_csv(rows, interval),
            )
            day += dt.timedelta(days=1)
        for t, _, _, _, close in bars:  # daily bars stand for each of their hours
            for h in range(INTERVAL_MS[interval] // INTERVAL_MS["1h"]):
                hourly.setdefault(t + h * INTERVAL_MS["1h"], close)
    return hourly


def write_funding(hourly: dict[int, float], rng: random.Random) -> None:
    step = FUNDING_INTERVAL_HOURS * INTERVAL_MS["1h"]
    for month in FUNDING_MONTHS:
        first = dt.datetime.strptime(month + "-01", "%Y-%m-%d").replace(tzinfo=dt.UTC)
        nxt = (first + dt.timedelta(days=32)).replace(day=1)
        lines, t, last_premium = [FUNDING_HEADER], int(first.timestamp() * 1000), MEAN_PREMIUM
        while t < int(nxt.timestamp() * 1000):
            window = [
                hourly[t - k * INTERVAL_MS["1h"]]
                for k in range(1, FUNDING_INTERVAL_HOURS + 1)
                if t - k * INTERVAL_MS["1h"] in hourly
            ]
            # days after the spot slice (2025-02-21..28) continue the premium as noise around its mean
            premium = (
                sum(window) / len(window)
                if window
                else 0.5 * last_premium + 0.5 * MEAN_PREMIUM + rng.gauss(0, 0.00025)
            )
            last_premium = premium
            rate = premium + min(max(0.0001 - premium, -0.0005), 0.0005)
            lines.append(f"{t},{FUNDING_INTERVAL_HOURS},{rate:.8f}")
            t += step
        name = f"{SYMBOL}-fundingRate-{month}"
        write_zip(
            FUTURES / "monthly" / "fundingRate" / SYMBOL / f"{name}.zip",
            f"{name}.csv",
            ("\n".join(lines) + "\n").encode(),
        )


def main() -> None:
    rng = random.Random(SEED)
    hourly = write_premium(rng)
    write_funding(hourly, rng)


if __name__ == "__main__":
    main()
