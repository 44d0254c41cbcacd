"""Write the GENERATED (synthetic) coins.llama.fi sample under ``chart/``.

No real recording of the coins API was at hand, so these prices are made up, in the exact
live response format, with realistic shapes: stablecoins near 1.0 with small noise, one DAI
depeg spike, sUSDS accruing ~6%/yr from its September 2024 launch, the FLUID reward token
trending down; ETH and BTC as random walks, with their staked/wrapped tokens priced off them (the
ETH and BTC vaults convert into those reference assets). Deterministic (fixed seed).
Run: ``python recorded/defillama/coins/generate_sample.py``.

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

from midfreq_assets.domain.config.project import load_project
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
ETH, BTC = "coingecko:ethereum", "coingecko:bitcoin"
WETH = "ethereum:0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
STETH = "ethereum:0xae7ab96520DE3A18E5e111B5EaAb095312D7fE84"
WSTETH = "ethereum:0x7f39C581F595B53c5cb19bD0b3f8dA6c935E2Ca0"
RETH = "ethereum:0xae78736Cd615f374D3085123A210448E74Fc6393"
WEETH = "ethereum:0xCd5fE23C85820F7B72D0926FC9b05b43E359b7ee"
WBTC = "ethereum:0x2260FAC5E5542a773Aa44fBCfeDf7C193bc2C599"
CBBTC = "ethereum:0xcbB7C0000aB88B473b1f5aFd9ef808440eed33Bf"
TBTC = "ethereum:0x18084fbA666a33d37592fA2633fD49a74DD93a88"

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


def _walk(rng: random.Random, start: float, sd: float) -> dict[dt.date, float]:
    out, log_price = {}, math.log(start)
    for d in _days(FIRST):
        log_price += rng.gauss(0.0, sd)
        out[d] = math.exp(log_price)
    return out


def series() -> dict[str, tuple[str, int, float, dict[dt.date, float]]]:
    rng = random.Random(SEED)
    usdc = _stable(rng, 0.00025)
    usdt = {d: p for d, p in _stable(rng, 0.0004).items() if d not in USDT_GAP}
    dai = _stable(rng, 0.0006)
    dai.update(DAI_DEPEG)
    usds = _stable(rng, 0.0005, USDS_LAUNCH)
    susds = {
        d: 1.0 * math.exp(0.062 * (d - USDS_LAUNCH).days / 365) * (1 + rng.gauss(0, 0.0003))
        for d in _days(USDS_LAUNCH)
    }
    fluid: dict[dt.date, float] = {}
    log_price = math.log(9.2)
    for d in _days(FIRST):
        log_price += -0.0022 + rng.gauss(0.0, 0.035)
        fluid[d] = math.exp(log_price)
    eth = _walk(rng, 3800.0, 0.035)
    btc = _walk(rng, 70000.0, 0.028)

    def priced_off(
        base: dict[dt.date, float], ratio: float, accrual: float, sd: float
    ) -> dict[dt.date, float]:
        return {
            d: p * ratio * math.exp(accrual * (d - FIRST).days / 365) * (1 + rng.gauss(0.0, sd))
            for d, p in base.items()
        }

    return {
        USDC: ("USDC", 6, 0.99, usdc),
        USDT: ("USDT", 6, 0.99, usdt),
        DAI: ("DAI", 18, 0.99, dai),
        USDS: ("USDS", 18, 0.99, usds),
        SUSDS: ("sUSDS", 18, 0.99, susds),
        FLUID: ("FLUID", 18, 0.98, fluid),
        ETH: ("ETH", 18, 0.99, eth),
        BTC: ("BTC", 8, 0.99, btc),
        WETH: ("WETH", 18, 0.99, priced_off(eth, 1.0, 0.0, 0.0001)),
        STETH: ("stETH", 18, 0.99, priced_off(eth, 0.9993, 0.0, 0.0004)),
        WSTETH: ("wstETH", 18, 0.99, priced_off(eth, 1.178, 0.031, 0.0004)),
        RETH: ("rETH", 18, 0.99, priced_off(eth, 1.112, 0.028, 0.0005)),
        WEETH: ("weETH", 18, 0.99, priced_off(eth, 1.043, 0.032, 0.0006)),
        WBTC: ("WBTC", 8, 0.99, priced_off(btc, 0.9995, 0.0, 0.0005)),
        CBBTC: ("cbBTC", 8, 0.99, priced_off(btc, 1.0, 0.0, 0.0004)),
        TBTC: ("tBTC", 18, 0.98, priced_off(btc, 0.998, 0.0, 0.002)),
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
            "prices": [
                {"timestamp": _timestamp(d, rng), "price": round(p, 6 if p < 2 else 4 if p < 1000 else 2)}
                for d, p in sorted(prices.items())
            ],
        }
    return {"coins": out, "note": GENERATED_NOTE}


def main() -> None:
    data = series()
    target = HERE / "chart"
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.json"):
        old.unlink()
    for coin in data:
        (target / coins_chart_filename(coin)).write_text(
            json.dumps(body([coin], data), separators=(",", ":"))
        )
    client = DefiLlamaCoinsClient()
    coins = load_project(HERE.parents[2] / "configs").price_coins()
    groups = [b for b in batches(coins, client.max_coins_per_request, client.max_coins_chars) if len(b) > 1]
    for batch in groups:
        known = [c for c in batch if c in data]
        (target / coins_chart_filename(",".join(batch))).write_text(
            json.dumps(body(known, data), separators=(",", ":"))
        )
    print(f"wrote {len(data) + len(groups)} files to {target} ({GENERATED_NOTE})")


if __name__ == "__main__":
    main()
