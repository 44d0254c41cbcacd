"""Write the GENERATED (synthetic) coins.llama.fi sample under ``chart/``.

No real recording of the coins API was at hand, so these prices are made up, in the exact
live response format, with realistic shapes: stablecoins near 1.0 with small noise, one DAI
depeg spike, sUSDS accruing ~6%/yr from its September 2024 launch, and the FLUID reward token
trending down. Deterministic (fixed seed). Run: ``python recorded/defillama/coins/generate_sample.py``.

Files follow the replay server's scheme (``coins_chart_filename``): one query-less file per coin,
plus one per multi-coin batch that ``DefiLlamaCoinsClient`` (default limits) sends for the
bundled vault configs: the replay server matches the exact coin list of a request.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from pathlib import Path

from midfreq_assets.domain.config.vault import load_vault_configs
from midfreq_assets.domain.yields.config import price_coins_for
from midfreq_resources.clients.defillama_coins import DefiLlamaCoinsClient, batches
from midfreq_resources.replay.server import coins_chart_filename

HERE = Path(__file__).resolve().parent
FIRST, LAST = dt.date(2024, 6, 6), dt.date(2025, 6, 5)
SEED = 20240606
GENERATED_NOTE = "GENERATED synthetic prices (not a recording of coins.llama.fi); see README.md"

USDC = "ethereum:0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
USDT = "ethereum:0xdAC17F958D2ee523a2206206994597C13D831ec7"
DAI = "ethereum:0x6B175474E89094C44Da98b954EedeAC495271d0F"
USDS = "ethereum:0xdC035D45d973E3EC169d2276DDab16f1e407384F"
SUSDS = "ethereum:0xa3931d71877C0E7a3148CB7Eb4463524FEc27fbD"
FLUID = "ethereum:0x6f40d4A6237C257fff2dB00FA0510DeEECd303eb"

USDS_LAUNCH = dt.date(2024, 9, 18)
DAI_DEPEG = {dt.date(2025, 3, 10): 0.9935, dt.date(2025, 3, 11): 0.9840, dt.date(2025, 3, 12): 0.9905}
USDT_GAP = {dt.date(2025, 1, 14), dt.date(2025, 1, 15)}  # days the API had no point


def _days(first: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((LAST - first).days + 1)]


def _timestamp(day: dt.date, rng: random.Random) -> int:
    noon = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    return int(noon.timestamp()) + rng.randint(-420, 420)


def _stable(rng: random.Random, sd: float, first: dt.date = FIRST) -> dict[dt.date, float]:
    return {d: 1.0 + rng.gauss(0.0, sd) for d in _days(first)}


def series() -> dict[str, tuple[str, int, float, dict[dt.date, float]]]:
    rng = random.Random(SEED)
    usdc = _stable(rng, 0.00025)
    usdt = {d: p for d, p in _stable(rng, 0.0004).items() if d not in USDT_GAP}
    dai = _stable(rng, 0.0006)
    dai.update(DAI_DEPEG)
    usds = _stable(rng, 0.0005, USDS_LAUNCH)
    susds = {d: 1.0 * math.exp(0.062 * (d - USDS_LAUNCH).days / 365) * (1 + rng.gauss(0, 0.0003))
             for d in _days(USDS_LAUNCH)}
    fluid: dict[dt.date, float] = {}
    log_price = math.log(9.2)
    for d in _days(FIRST):
        log_price += -0.0022 + rng.gauss(0.0, 0.035)
        fluid[d] = math.exp(log_price)
    return {
        USDC: ("USDC", 6, 0.99, usdc),
        USDT: ("USDT", 6, 0.99, usdt),
        DAI: ("DAI", 18, 0.99, dai),
        USDS: ("USDS", 18, 0.99, usds),
        SUSDS: ("sUSDS", 18, 0.99, susds),
        FLUID: ("FLUID", 18, 0.98, fluid),
    }


def body(coins: list[str], data: dict[str, tuple[str, int, float, dict[dt.date, float]]]) -> dict:
    rng = random.Random(SEED + 1)
    out = {}
    for coin in coins:
        symbol, decimals, confidence, prices = data[coin]
        out[coin] = {
            "symbol": symbol,
            "confidence": confidence,
            "decimals": decimals,
            "prices": [{"timestamp": _timestamp(d, rng), "price": round(p, 6 if p < 2 else 4)}
                       for d, p in sorted(prices.items())],
        }
    return {"coins": out, "note": GENERATED_NOTE}


def main() -> None:
    data = series()
    target = HERE / "chart"
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.json"):
        old.unlink()
    for coin in data:
        (target / coins_chart_filename(coin)).write_text(json.dumps(body([coin], data), separators=(",", ":")))
    vaults = load_vault_configs(HERE.parents[2] / "configs" / "vaults")
    client = DefiLlamaCoinsClient()
    coins = price_coins_for(v.yields for v in vaults.values())
    groups = [b for b in batches(coins, client.max_coins_per_request, client.max_coins_chars) if len(b) > 1]
    for batch in groups:
        known = [c for c in batch if c in data]
        (target / coins_chart_filename(",".join(batch))).write_text(
            json.dumps(body(known, data), separators=(",", ":")))
    print(f"wrote {len(data) + len(groups)} files to {target} ({GENERATED_NOTE})")


if __name__ == "__main__":
    main()
