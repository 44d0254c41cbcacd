"""Synthetic DefiLlama corpora in the replay layout, N pools x D days, deterministic from a seed.

Writes what ``midfreq pipeline --corpus DIR`` serves and scans (``docs/REPLAY.md``), exactly in the
live JSON layout of the bundled recording (``recorded/``):

- ``defillama/yields/pools.json``: the ``/pools`` snapshot of the last day (the pools alive then,
  the recording's keys in its order; dead pools vanish, as on DefiLlama);
- ``defillama/yields/chart/<uuid>.json``: one ``/chart`` per pool, ``{"status":"success","data":[...]}``
  with ``timestamp`` (``YYYY-MM-DDT23:01:00.000Z``, as the recording writes it), ``tvlUsd`` (int),
  ``apy`` / ``apyBase`` / ``apyReward`` (percent, 5 decimals, ``apy = apyBase + apyReward``),
  ``il7d`` and ``apyBase7d`` (null, as recorded for these single-exposure stablecoin pools);
- ``defillama/coins/chart/<coins>.json``: daily prices (``{"coins": {...}}``, noon UTC +- 7 min) of
  the peg coins, sUSDS, the reward tokens, ETH/BTC and their wrapped/staked tokens: one query-less
  file per coin and one per batch that ``DefiLlamaCoinsClient`` sends for the repository's
  ``configs/`` and for the ``--config-out`` configs;
- ``README.md``: that the corpus is GENERATED, how, and what it holds (no timing: byte-identical).

No ``binance/``: the pipeline reports "no klines" and runs the yield chain.

Pool attributes (chain, project, symbol, underlying token addresses) are drawn from the real mix
of ``recorded/defillama/yields/pools.json`` (a recorded pool as template, uniformly: the joint
frequencies). The dynamics (see ``docs/PERFORMANCE.md`` "Synthetic corpora") are simulated for all
pools at once, one numpy step per day: APY as an OU process in log space around a pool level that
follows a common rate factor and jumps at regime shifts; reward APY from reward programs switching
on and off plus decaying incentive spikes, valued at the project's reward-token price; TVL as a log
random walk with whale jumps and inflows following the pool's APY above its fair level, and the
APY diluted by size (``apy ~ (tvl_ref / tvl) ** beta``). Pools start late, die (their chart ends
and they leave ``/pools``), have gaps of 1-10 days, a few one-day spikes, a few absurd values the
ingestion flags (|APY| > 1000 %/yr, TVL > 1e12), and duplicated days (a second snapshot of the
day, or the same row twice: the ingestion keeps the day's latest snapshot).

Importable (``generate``, ``write_corpus``, ``write_configs``) and a CLI:

    .venv/bin/python benchmarks/corpus_generator.py --pools 2000 --days 1095 --start 2021-06-01 \\
        --seed 7 --out /tmp/corpus --config-out /tmp/corpus-configs
    .venv/bin/midfreq pipeline --corpus /tmp/corpus --config-dir /tmp/corpus-configs --lake /tmp/lake
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import orjson
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the midfreq packages beside benchmarks/
    sys.path.insert(0, str(REPO))

RECORDED_POOLS = REPO / "recorded" / "defillama" / "yields" / "pools.json"
REPO_CONFIGS = REPO / "configs"
GENERATED_NOTE = (
    "GENERATED synthetic prices (benchmarks/corpus_generator.py), not a recording of coins.llama.fi"
)

#: Keys of a ``/pools`` row and of a ``/chart`` row, in the recording's order.
POOL_KEYS = [
    "chain",
    "project",
    "symbol",
    "tvlUsd",
    "apyBase",
    "apyReward",
    "apy",
    "rewardTokens",
    "pool",
    "apyPct1D",
    "apyPct7D",
    "apyPct30D",
    "stablecoin",
    "ilRisk",
    "exposure",
    "predictions",
    "poolMeta",
    "mu",
    "sigma",
    "count",
    "outlier",
    "underlyingTokens",
    "il7d",
    "apyBase7d",
    "apyMean30d",
    "volumeUsd1d",
    "volumeUsd7d",
    "apyBaseInception",
]
CHART_KEYS = ["timestamp", "tvlUsd", "apy", "apyBase", "apyReward", "il7d", "apyBase7d"]
TIME_OF_DAY = "T23:01:00.000Z"  # the recording's re-encoded time of every chart row
EARLY_SNAPSHOT = "T05:01:00.000Z"  # an earlier snapshot of a duplicated day (the later one wins)

# --------------------------------------------------------------------------------------------
# Coins (coins.llama.fi ids, as in configs/vaults and recorded/defillama/coins)
# --------------------------------------------------------------------------------------------
USDC = "ethereum:0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
USDT = "ethereum:0xdAC17F958D2ee523a2206206994597C13D831ec7"
DAI = "ethereum:0x6B175474E89094C44Da98b954EedeAC495271d0F"
USDS = "ethereum:0xdC035D45d973E3EC169d2276DDab16f1e407384F"
SUSDS = "ethereum:0xa3931d71877C0E7a3148CB7Eb4463524FEc27fbD"
FLUID = "ethereum:0x6f40d4A6237C257fff2dB00FA0510DeEECd303eb"
MORPHO = "ethereum:0x58D97B57BB95320F9a05dC918Aef65434969c2B2"
EUL = "ethereum:0xd9Fcd98c322942075A5C3860693e9f4f03AAE07b"
AAVE = "ethereum:0x7Fc66500c84A76Ad7e9c93437bFc5Ac374E2dDaE"
ETH, BTC = "coingecko:ethereum", "coingecko:bitcoin"
WETH = "ethereum:0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
STETH = "ethereum:0xae7ab96520DE3A18E5e111B5EaAb095312D7fE84"
WSTETH = "ethereum:0x7f39C581F595B53c5cb19bD0b3f8dA6c935E2Ca0"
RETH = "ethereum:0xae78736Cd615f374D3085123A210448E74Fc6393"
WEETH = "ethereum:0xCd5fE23C85820F7B72D0926FC9b05b43E359b7ee"
WBTC = "ethereum:0x2260FAC5E5542a773Aa44fBCfeDf7C193bc2C599"
CBBTC = "ethereum:0xcbB7C0000aB88B473b1f5aFd9ef808440eed33Bf"
TBTC = "ethereum:0x18084fbA666a33d37592fA2633fD49a74DD93a88"

#: The underlying-yield pool of sUSDS (Sky Savings USDS): the uuid configs/vaults/usd_lending.yaml
#: names in yields.underlying_yield.pools, so the shipped config finds it in a generated corpus.
SKY_SUSDS_POOL = "d8c4eff5-c8a9-46fc-a888-057c4c668e72"
USDS_ADDRESS = USDS.split(":")[1]


@dataclass(frozen=True)
class ProjectDynamics:
    """Per-protocol parameters (fractions per year, log-space standard deviations per day)."""

    base_apy: float  # median base APY of its pools (calibrated on the recording's charts)
    noise: float  # day-to-day log APY noise (iid; the recording's daily dlog APY sd is 0.2-0.4)
    program_share: float  # share of its pools running a reward program at a time
    program_apy: float  # median reward APY of a running program
    spike_every_days: float  # mean days between incentive spikes per pool
    reward_coin: str | None  # the token rewards are paid in (its price scales the reward APY)


PROJECTS: dict[str, ProjectDynamics] = {
    "aave-v3": ProjectDynamics(0.042, 0.07, 0.0, 0.0, 900.0, AAVE),
    "morpho-blue": ProjectDynamics(0.058, 0.16, 0.45, 0.009, 240.0, MORPHO),
    "fluid-lending": ProjectDynamics(0.065, 0.08, 0.85, 0.035, 365.0, FLUID),
    "euler-v2": ProjectDynamics(0.075, 0.16, 0.05, 0.015, 300.0, EUL),
}
DEFAULT_PROJECT = ProjectDynamics(0.05, 0.12, 0.2, 0.01, 365.0, None)
MARKET_APY = 0.05  # the common USD lending rate the pools' levels move with


@dataclass(frozen=True)
class CorpusSpec:
    """What to generate. Rates are per pool (``*_share``), per pool-day (``*_rate``) or per year."""

    pools: int
    days: int
    start: dt.date
    seed: int = 7
    reference: str = "usd"
    late_start_share: float = 0.4  # pools whose chart starts after day 0 (recording: ~60 %)
    death_rate_per_year: float = 0.08  # hazard of a pool dying (its chart ends; it leaves /pools)
    dead_in_pools: bool = False  # keep dead pools in /pools (DefiLlama drops them)
    gap_pool_share: float = 0.25  # pools with 1-3 gaps of 1-10 missing days
    duplicate_pool_share: float = 0.05  # pools with 1-3 duplicated days
    zero_apy_share: float = 0.03  # idle vaults quoting 0 % (the recording has 4 of 55)
    spike_rate: float = 1e-3  # one-day APY spikes x3-x12 (plausible: kept and used)
    outlier_rate: float = 1e-4  # absurd values the ingestion flags (kept, never used)
    refused_pools: int = 0  # pools with one negative-TVL record: the ingestion refuses the pool (run red)

    def __post_init__(self) -> None:
        if self.pools < 1 or self.days < 2:
            raise ValueError(f"need at least 1 pool and 2 days, got {self.pools} x {self.days}")
        if self.reference != "usd":
            raise ValueError(f"reference {self.reference!r}: only usd (the recorded mix is USD lending)")
        if not 0 <= self.refused_pools <= self.pools:
            raise ValueError("refused_pools must be within 0..pools")
        shares = ("late_start_share", "gap_pool_share", "duplicate_pool_share", "zero_apy_share")
        rates = ("death_rate_per_year", "spike_rate", "outlier_rate")
        if any(not 0 <= getattr(self, k) <= 1 for k in shares) or any(getattr(self, k) < 0 for k in rates):
            raise ValueError(f"shares ({', '.join(shares)}) must be within [0, 1] and rates >= 0")


@dataclass
class Pool:
    uuid: str
    chain: str
    project: str
    symbol: str
    underlying: list[str]


@dataclass
class Corpus:
    """A simulated corpus in memory: per pool attributes, (days, pools) arrays, masks and extras."""

    spec: CorpusSpec
    pools: list[Pool]
    dates: list[dt.date]
    birth: np.ndarray  # first day index with a row
    end: np.ndarray  # one past the last day index (== days: alive at the end)
    apy_base: np.ndarray  # (days, pools) fraction per year, after spikes and outliers
    apy_reward: np.ndarray
    tvl: np.ndarray  # USD
    observed: np.ndarray  # (days, pools) bool: a chart row that day
    flagged: np.ndarray  # (days, pools) bool: an absurd value the ingestion flags
    spikes: np.ndarray  # (days, pools) bool: a one-day plausible spike
    duplicates: dict[int, list[tuple[int, str]]]  # pool -> [(day, "exact" | "early")]
    refused: dict[int, int]  # pool -> day of its negative-TVL record
    # coin -> (symbol, decimals, confidence, price per day)
    prices: dict[str, tuple[str, int, float, np.ndarray]]
    savings_rate: np.ndarray  # (days,) the Sky savings rate sUSDS accrues at (fraction/yr)
    coin_missing: dict[str, np.ndarray] = field(default_factory=dict)  # coin -> day indices without a point
    gaps: int = 0  # gap episodes

    @property
    def listed(self) -> np.ndarray:
        """Pools in the ``/pools`` snapshot: alive on the last day (or every pool with dead_in_pools)."""
        alive = self.end >= self.spec.days
        return np.ones_like(alive) if self.spec.dead_in_pools else alive


# --------------------------------------------------------------------------------------------
# Pool attributes from the recorded mix
# --------------------------------------------------------------------------------------------


def recorded_templates(path: Path = RECORDED_POOLS) -> list[dict]:
    """The recorded ``/pools`` rows (chain, project, symbol, underlyingTokens): the mix to draw from."""
    return orjson.loads(path.read_bytes())["data"]


def _uuids(rng: np.random.Generator, n: int) -> list[str]:
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    out, seen = [], {SKY_SUSDS_POOL}
    for row in raw:
        u = str(uuid.UUID(bytes=row.tobytes(), version=4))
        while u in seen:  # practically never; keeps ids unique and deterministic
            u = str(uuid.UUID(int=(uuid.UUID(u).int + 1) % (1 << 128), version=4))
        seen.add(u)
        out.append(u)
    return out


def draw_pools(rng: np.random.Generator, n: int, templates: list[dict] | None = None) -> list[Pool]:
    """``n`` pools, each with the chain, project, symbol and underlying tokens of a recorded pool
    drawn uniformly (so the joint frequencies of the recording), and a fresh uuid."""
    templates = templates if templates is not None else recorded_templates()
    picks = rng.integers(0, len(templates), size=n)
    ids = _uuids(rng, n)
    return [
        Pool(ids[i], t["chain"], t["project"], t["symbol"], list(t.get("underlyingTokens") or []))
        for i, t in enumerate(templates[k] for k in picks)
    ]


# --------------------------------------------------------------------------------------------
# Prices
# --------------------------------------------------------------------------------------------


def _ou(rng: np.random.Generator, n: int, kappa: float, sd: float) -> np.ndarray:
    """A stationary AR(1) path (stationary sd ``sd``), vectorized with lfilter."""
    from scipy.signal import lfilter

    a = 1.0 - kappa
    shocks = rng.normal(0.0, sd * np.sqrt(1 - a * a), n)
    shocks[0] = rng.normal(0.0, sd)
    return lfilter([1.0], [1.0, -a], shocks)


def _walk(rng: np.random.Generator, n: int, start: float, drift: float, vol: float) -> np.ndarray:
    return start * np.exp(np.cumsum(rng.normal(drift, vol, n)))


def _stable(rng: np.random.Generator, n: int, sd: float, depegs_per_year: float) -> np.ndarray:
    """1 + OU noise, with depeg episodes: a drop of 0.5-2 % recovering with a 1-4 day half-life."""
    price = 1.0 + _ou(rng, n, 0.3, sd)
    k = rng.poisson(depegs_per_year * n / 365.0)
    t = np.arange(n)
    for start, depth, half in zip(
        rng.integers(0, n, k), rng.uniform(0.005, 0.02, k), rng.uniform(1, 4, k), strict=True
    ):
        age = t - start
        price -= np.where(age >= 0, depth * 0.5 ** (np.maximum(age, 0) / half), 0.0)
    return price


def simulate_prices(
    rng: np.random.Generator, days: int, savings_rate: np.ndarray
) -> tuple[dict[str, tuple[str, int, float, np.ndarray]], dict[str, np.ndarray]]:
    """Daily prices of every coin the vault configs use; sUSDS accrues at ``savings_rate`` (fraction/yr).

    Returns (coin -> (symbol, decimals, confidence, prices)), (coin -> day indices with no point)."""
    eth = _walk(rng, days, 3000.0, 0.0, 0.035)
    btc = _walk(rng, days, 50000.0, 0.0, 0.028)
    accrual = np.arange(days) / 365.0

    def off(base: np.ndarray, ratio: float, apr: float, sd: float) -> np.ndarray:
        return base * ratio * np.exp(apr * accrual) * (1 + rng.normal(0.0, sd, days))

    prices = {
        USDC: ("USDC", 6, 0.99, _stable(rng, days, 0.00025, 0.3)),
        USDT: ("USDT", 6, 0.99, _stable(rng, days, 0.0004, 0.3)),
        DAI: ("DAI", 18, 0.99, _stable(rng, days, 0.0006, 0.5)),
        USDS: ("USDS", 18, 0.99, _stable(rng, days, 0.0005, 0.3)),
        SUSDS: (
            "sUSDS",
            18,
            0.99,
            np.exp(np.cumsum(savings_rate) / 365.0) * (1 + rng.normal(0, 0.0003, days)),
        ),
        FLUID: ("FLUID", 18, 0.98, _walk(rng, days, 9.2, -0.0015, 0.04)),
        MORPHO: ("MORPHO", 18, 0.98, _walk(rng, days, 2.0, -0.001, 0.045)),
        EUL: ("EUL", 18, 0.98, _walk(rng, days, 8.0, -0.0005, 0.045)),
        AAVE: ("AAVE", 18, 0.99, _walk(rng, days, 150.0, 0.0, 0.04)),
        ETH: ("ETH", 18, 0.99, eth),
        BTC: ("BTC", 8, 0.99, btc),
        WETH: ("WETH", 18, 0.99, off(eth, 1.0, 0.0, 0.0001)),
        STETH: ("stETH", 18, 0.99, off(eth, 0.9993, 0.0, 0.0004)),
        WSTETH: ("wstETH", 18, 0.99, off(eth, 1.178, 0.031, 0.0004)),
        RETH: ("rETH", 18, 0.99, off(eth, 1.112, 0.028, 0.0005)),
        WEETH: ("weETH", 18, 0.99, off(eth, 1.043, 0.032, 0.0006)),
        WBTC: ("WBTC", 8, 0.99, off(btc, 0.9995, 0.0, 0.0005)),
        CBBTC: ("cbBTC", 8, 0.99, off(btc, 1.0, 0.0, 0.0004)),
        TBTC: ("tBTC", 18, 0.98, off(btc, 0.998, 0.0, 0.002)),
    }
    # the API misses a day now and then: about 2 a year per stablecoin (the client forward-fills)
    missing = {
        coin: np.unique(rng.integers(1, days, rng.poisson(2.0 * days / 365.0)))
        for coin in (USDC, USDT, DAI, USDS)
    }
    return prices, missing


# --------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------


def _sparse(rng: np.random.Generator, shape: tuple[int, int], rate: float) -> np.ndarray:
    """Flat indices of about ``rate`` of the cells of ``shape`` (sorted, unique)."""
    size = shape[0] * shape[1]
    return np.unique(rng.integers(0, size, rng.poisson(rate * size))) if size else np.zeros(0, np.int64)


def generate(spec: CorpusSpec, templates: list[dict] | None = None) -> Corpus:
    """Simulate ``spec``: every array is drawn from ``np.random.default_rng(spec.seed)`` in a fixed order."""
    rng = np.random.default_rng(spec.seed)
    n, d = spec.pools, spec.days
    pools = draw_pools(rng, n, templates)
    dates = [spec.start + dt.timedelta(days=i) for i in range(d)]
    dyn = [PROJECTS.get(p.project, DEFAULT_PROJECT) for p in pools]

    # ---- lifetimes: late starts, deaths (exponential hazard after a minimum life)
    min_life = max(2, min(30, d // 3))
    late = rng.random(n) < spec.late_start_share
    birth = np.where(late, rng.integers(1, max(2, d - min_life), n), 0)
    life = min_life + rng.exponential(365.0 / max(spec.death_rate_per_year, 1e-9), n)
    end = np.minimum(birth + np.ceil(life).astype(np.int64), d)
    end = np.maximum(end, birth + 2)  # at least two rows
    end = np.minimum(end, d)
    dying_from = end - rng.integers(10, 61, n)  # outflows in the last 10-60 days before a death

    # ---- per pool parameters
    base_med = np.array([p.base_apy for p in dyn])
    noise = np.array([p.noise for p in dyn])
    # the pool's fair log APY at the market rate, and its loading on the common rate factor
    level = np.log(base_med) + rng.normal(0.0, 0.25, n)
    gamma = rng.uniform(0.5, 1.2, n)
    # size dilution elasticity (1: a fixed yield budget, the optimizer's dilution model)
    beta = rng.uniform(0.5, 1.0, n)
    # daily log inflow per unit of log APY above the fair level; daily log TVL noise
    phi = rng.uniform(0.004, 0.015, n)
    tvl_sd = rng.uniform(0.008, 0.03, n)
    # equilibrium TVL (the recording's pools hold 1e6..7e8 USD); a new pool starts at 5-50 % of it
    tvl_ref = np.exp(rng.normal(np.log(1.5e7), 1.3, n)).clip(3e5, 2e9)
    launch = np.log(tvl_ref) + np.log(rng.uniform(0.05, 0.5, n))
    program_apy = np.array([p.program_apy for p in dyn]) * np.exp(rng.normal(0.0, 0.5, n))
    program_share = np.array([p.program_share for p in dyn])
    spike_p = 1.0 / np.array([p.spike_every_days for p in dyn])
    zero = rng.random(n) < spec.zero_apy_share
    coins_of = [p.reward_coin for p in dyn]

    # ---- common factor (the USD rate cycle) and the Sky savings rate (sUSDS underlying yield)
    g = _ou(rng, d, 1.0 / 120.0, 0.25)
    market = MARKET_APY * np.exp(g)
    change = rng.random(d) < 1.0 / 45.0  # governance sets the savings rate now and then, in 0.25 % steps
    change[0] = True
    savings = np.round(market[np.maximum.accumulate(np.where(change, np.arange(d), 0))] * 400.0) / 400.0
    prices, coin_missing = simulate_prices(rng, d, savings)
    token_ratio = {c: prices[c][3] / prices[c][3][0] for c in set(coins_of) if c is not None}
    ratio = np.ones((d, n))
    for c, r in token_ratio.items():
        cols = [i for i, x in enumerate(coins_of) if x == c]
        ratio[:, cols] = r[:, None]

    # ---- shocks, drawn up front (days x pools)
    z_kappa, z_sd = 1.0 / 15.0, 0.15
    ez = rng.normal(0.0, z_sd * np.sqrt(1 - (1 - z_kappa) ** 2), (d, n))
    en = rng.normal(0.0, 1.0, (d, n)) * noise
    ev = rng.normal(0.0, 1.0, (d, n)) * tvl_sd
    regime = np.zeros((d, n))
    jumps_at = _sparse(rng, (d, n), 1.0 / 150.0)
    regime.flat[jumps_at] = rng.normal(0.0, 0.3, len(jumps_at))  # regime shifts of the pool's level
    whale_at = _sparse(rng, (d, n), 1.0 / 45.0)
    whale = np.zeros((d, n))
    whale.flat[whale_at] = rng.normal(0.0, 0.25, len(whale_at))  # large deposits / withdrawals
    spike_u = rng.random((d, n))
    spike_size = np.exp(rng.normal(np.log(0.04), 0.8, (d, n)))  # incentive spike, fraction/yr
    spike_decay = 0.5 ** (1.0 / rng.uniform(5.0, 40.0, n))  # half-life 5-40 days
    flip = rng.random((d, n))
    on = rng.random(n) < program_share
    p_off = np.full(n, 1.0 / 200.0)
    p_on = np.where(program_share > 0, p_off * program_share / np.maximum(1 - program_share, 1e-9), 0.0)
    launch_spike = (rng.random(n) < 0.4) * np.exp(rng.normal(np.log(0.04), 0.6, n))

    late_pools = np.flatnonzero(birth > 0)
    births = {int(t): late_pools[birth[late_pools] == t] for t in np.unique(birth[late_pools])}

    base = np.empty((d, n))
    reward = np.empty((d, n))
    tvl = np.empty((d, n))
    z = rng.normal(0.0, z_sd, n)
    reg = np.zeros(n)
    s = launch_spike * (birth == 0)
    log_v = np.log(tvl_ref) + rng.normal(0.0, 0.3, n)
    log_ref = np.log(tvl_ref)
    lo_v, hi_v = log_ref + np.log(1e-3), log_ref + np.log(50.0)
    death_drift = -rng.uniform(0.03, 0.1, n)
    for t in range(d):  # one vectorized step over all pools per day
        born = births.get(t)
        if born is not None:
            log_v[born] = launch[born]
            s[born] = launch_spike[born]
            reg[born] = 0.0
        reg = reg * (1.0 - 1.0 / 180.0) + regime[t]
        z = z * (1.0 - z_kappa) + ez[t]
        fair = level + gamma * g[t]
        dil = np.exp(np.clip(-beta * (log_v - log_ref), -1.5, 1.0))  # x0.22..x2.7
        b = np.exp(fair + reg + z + en[t]) * dil
        on = np.where(on, flip[t] >= p_off, flip[t] < p_on)
        s = s * spike_decay + np.where(spike_u[t] < spike_p, spike_size[t], 0.0)
        r = (program_apy * on + s) * dil * ratio[t]
        base[t], reward[t], tvl[t] = b, r, np.exp(log_v)
        spread = np.clip(np.log(b + r) - fair, -2.0, 2.0)
        drift = np.where((t >= dying_from) & (t < end), death_drift, 0.0)
        log_v = np.clip(log_v + phi * spread + ev[t] + whale[t] + drift, lo_v, hi_v)

    base[:, zero] = 0.0
    reward[:, zero] = 0.0
    reward[reward < 1e-3] = 0.0  # a faded spike (< 0.1 %/yr) has ended: 0, not 1e-9

    # ---- what the charts hold: alive days minus gaps
    t_idx = np.arange(d)[:, None]
    alive = (t_idx >= birth[None, :]) & (t_idx < end[None, :])
    observed = alive.copy()
    gaps = 0
    for i in np.flatnonzero(rng.random(n) < spec.gap_pool_share):
        for _ in range(int(rng.integers(1, 4))):
            length = int(rng.integers(1, 11))
            lo, hi = int(birth[i]) + 1, int(end[i]) - 1 - length  # never the first or last row
            if hi <= lo:
                continue
            start = int(rng.integers(lo, hi))
            observed[start : start + length, i] = False
            gaps += 1
    last_row = np.zeros((d, n), dtype=bool)
    last_row[end - 1, np.arange(n)] = True  # the snapshot's row: kept clean

    # ---- one-day plausible spikes, then absurd values (flagged by the ingestion, never used)
    spikes = np.zeros((d, n), dtype=bool)
    spikes.flat[_sparse(rng, (d, n), spec.spike_rate)] = True
    spikes &= observed & ~last_row & (base > 0)
    base[spikes] = np.minimum(base[spikes] * rng.uniform(3.0, 12.0, int(spikes.sum())), 9.0)
    flagged = np.zeros((d, n), dtype=bool)
    flagged.flat[_sparse(rng, (d, n), spec.outlier_rate)] = True
    flagged &= observed & ~last_row & ~spikes
    k = int(flagged.sum())
    tvl_glitch = rng.random(k) < 0.15
    cells = np.flatnonzero(flagged.ravel())
    # APY 1,585 % .. 158,489 %/yr, or TVL 1.6e12 .. 1e14 USD
    base.flat[cells[~tvl_glitch]] = 10.0 ** rng.uniform(1.2, 3.2, int((~tvl_glitch).sum()))
    tvl.flat[cells[tvl_glitch]] = 10.0 ** rng.uniform(12.2, 14.0, int(tvl_glitch.sum()))

    # ---- duplicated days and (on request) refused records
    duplicates: dict[int, list[tuple[int, str]]] = {}
    for i in np.flatnonzero(rng.random(n) < spec.duplicate_pool_share):
        rows = np.flatnonzero(observed[:, i] & ~flagged[:, i])
        picks = rng.choice(rows, size=min(len(rows), int(rng.integers(1, 4))), replace=False)
        kinds = rng.random(len(picks)) < 0.5
        duplicates[int(i)] = sorted(
            (int(t), "exact" if e else "early") for t, e in zip(picks, kinds, strict=True)
        )
    refused: dict[int, int] = {}
    if spec.refused_pools:
        for i in rng.choice(n, size=spec.refused_pools, replace=False):
            rows = np.flatnonzero(observed[:, i])
            refused[int(i)] = int(rows[len(rows) // 2])

    return Corpus(
        spec,
        pools,
        dates,
        birth,
        end,
        base,
        reward,
        tvl,
        observed,
        flagged,
        spikes,
        duplicates,
        refused,
        prices,
        savings,
        coin_missing,
        gaps,
    )


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


@dataclass
class WriteStats:
    pools: int = 0  # chart files
    listed: int = 0  # rows of /pools
    late_starts: int = 0
    dead: int = 0
    days: int = 0
    rows: int = 0  # chart rows, duplicates included
    duplicate_rows: int = 0
    gaps: int = 0
    spikes: int = 0
    flagged_rows: int = 0
    refused_pools: int = 0
    coin_files: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"pools={self.pools} listed={self.listed} late_starts={self.late_starts} dead={self.dead} "
            f"days={self.days} rows={self.rows} duplicate_rows={self.duplicate_rows} gaps={self.gaps} "
            f"spikes={self.spikes} flagged_rows={self.flagged_rows} refused_pools={self.refused_pools} "
            f"coin_files={self.coin_files} bytes={self.bytes} ({self.bytes / 2**20:.1f} MiB) "
            f"seconds={self.seconds:.1f}"
        )


def _pct(x: np.ndarray) -> np.ndarray:
    return np.round(x * 100.0, 5)


def _chart_rows(
    stamps: list[str], idx: np.ndarray, tvl: np.ndarray, apy: np.ndarray, base: np.ndarray, reward: np.ndarray
) -> list[dict]:
    return [
        {
            "timestamp": stamps[t],
            "tvlUsd": v,
            "apy": a,
            "apyBase": b,
            "apyReward": r,
            "il7d": None,
            "apyBase7d": None,
        }
        for t, v, a, b, r in zip(
            idx.tolist(), tvl.tolist(), apy.tolist(), base.tolist(), reward.tolist(), strict=True
        )
    ]


def _pool_row(
    pool: Pool, tvl: np.ndarray, apy: np.ndarray, base: np.ndarray, reward: np.ndarray, usable: np.ndarray
) -> dict:
    """The ``/pools`` row of a pool from its chart columns (percent; the last row is the snapshot)."""
    clean = apy[usable]

    def pct_change(lag: int) -> float | None:
        return round(float(apy[-1] - apy[-1 - lag]), 5) if len(apy) > lag else None

    return {
        "chain": pool.chain,
        "project": pool.project,
        "symbol": pool.symbol,
        "tvlUsd": int(tvl[-1]),
        "apyBase": float(base[-1]),
        "apyReward": float(reward[-1]),
        "apy": float(apy[-1]),
        "rewardTokens": None,
        "pool": pool.uuid,
        "apyPct1D": pct_change(1),
        "apyPct7D": pct_change(7),
        "apyPct30D": pct_change(30),
        "stablecoin": True,
        "ilRisk": "no",
        "exposure": "single",
        "predictions": {"predictedClass": None, "predictedProbability": None, "binnedConfidence": None},
        "poolMeta": None,
        "mu": round(float(clean.mean()), 5),
        "sigma": round(float(clean.std()), 5),
        "count": len(apy),
        "outlier": False,
        "underlyingTokens": pool.underlying,
        "il7d": None,
        "apyBase7d": None,
        "apyMean30d": round(float(apy[-30:].mean()), 5),
        "volumeUsd1d": None,
        "volumeUsd7d": None,
        "apyBaseInception": None,
    }


def _write(path: Path, payload: object) -> int:
    data = orjson.dumps(payload)
    path.write_bytes(data)
    return len(data)


def write_corpus(
    corpus: Corpus, out: Path | str, configs: list[Path | str] | None = None, command: str | None = None
) -> WriteStats:
    """Write ``corpus`` under ``out`` (replay layout). ``configs``: config dirs whose coins batches
    get their own price file (default: the repository's ``configs/``). Returns what was written."""
    started = time.perf_counter()
    out = Path(out)
    clear_generated(out, CORPUS_MARKER)
    spec = corpus.spec
    stats = WriteStats(days=spec.days, gaps=corpus.gaps)
    charts = out / "defillama" / "yields" / "chart"
    charts.mkdir(parents=True, exist_ok=True)
    stamps = [d.isoformat() + TIME_OF_DAY for d in corpus.dates]
    early = [d.isoformat() + EARLY_SNAPSHOT for d in corpus.dates]
    # (pools, days): each pool's days contiguous
    base_pct, reward_pct = _pct(corpus.apy_base).T, _pct(corpus.apy_reward).T
    apy_pct = np.round(base_pct + reward_pct, 5)
    tvl_int = np.rint(corpus.tvl).astype(np.int64).T
    observed, flagged = corpus.observed.T, corpus.flagged.T
    listed = corpus.listed
    snapshot = []
    for i, pool in enumerate(corpus.pools):
        idx = np.flatnonzero(observed[i])
        tvl_i, apy_i, base_i, rew_i = tvl_int[i, idx], apy_pct[i, idx], base_pct[i, idx], reward_pct[i, idx]
        rows = _chart_rows(stamps, idx, tvl_i, apy_i, base_i, rew_i)
        if i in corpus.refused:  # an impossible record: the client refuses the pool's whole answer
            rows[int(np.searchsorted(idx, corpus.refused[i]))]["tvlUsd"] = -1234
            stats.refused_pools += 1
        for t, kind in reversed(corpus.duplicates.get(i, [])):
            pos = int(np.searchsorted(idx, t))
            row = rows[pos]
            if kind == "exact":
                rows.insert(pos, dict(row))
            else:  # an earlier snapshot of the same day, a little off: the later row is the day's value
                base = round(row["apyBase"] * 1.05, 5)
                rows.insert(
                    pos,
                    {
                        **row,
                        "timestamp": early[t],
                        "tvlUsd": int(row["tvlUsd"] * 0.97),
                        "apy": round(base + row["apyReward"], 5),
                        "apyBase": base,
                    },
                )
            stats.duplicate_rows += 1
        stats.bytes += _write(charts / f"{pool.uuid}.json", {"status": "success", "data": rows})
        stats.rows += len(rows)
        if listed[i]:
            snapshot.append(_pool_row(pool, tvl_i, apy_i, base_i, rew_i, ~flagged[i, idx]))
    # the underlying-yield pool of sUSDS (listed, fetched for yields.underlying_yield)
    sky = _sky_pool(corpus, stamps)
    stats.bytes += _write(charts / f"{SKY_SUSDS_POOL}.json", {"status": "success", "data": sky["rows"]})
    stats.rows += len(sky["rows"])
    snapshot.append(sky["snapshot"])
    snapshot.sort(key=lambda r: (-r["tvlUsd"], r["pool"]))
    stats.bytes += _write(
        out / "defillama" / "yields" / "pools.json", {"status": "success", "data": snapshot}
    )
    stats.pools = len(corpus.pools) + 1
    stats.listed = len(snapshot)
    stats.late_starts = int((corpus.birth > 0).sum())
    stats.dead = int((corpus.end < spec.days).sum())
    stats.spikes = int(corpus.spikes.sum())
    stats.flagged_rows = int(corpus.flagged.sum())
    files, size = write_coins(corpus, out, configs if configs is not None else [REPO_CONFIGS])
    stats.coin_files, stats.bytes = files, stats.bytes + size
    readme = _readme(corpus, stats, command).encode()
    (out / "README.md").write_bytes(readme)
    stats.bytes += len(readme)
    stats.seconds = time.perf_counter() - started
    return stats


def _sky_pool(corpus: Corpus, stamps: list[str]) -> dict:
    """Sky sUSDS: the savings rate sUSDS accrues at, a large slowly moving TVL, every day."""
    rate = np.round(corpus.savings_rate * 100.0, 5)
    rng = np.random.default_rng(corpus.spec.seed + 1)
    tvl = np.rint(2e9 * np.exp(np.cumsum(rng.normal(0.0, 0.01, corpus.spec.days)))).astype(np.int64)
    zero = np.zeros_like(rate)
    idx = np.arange(corpus.spec.days)
    rows = _chart_rows(stamps, idx, tvl, rate, rate, zero)
    pool = Pool(SKY_SUSDS_POOL, "Ethereum", "sky-lending", "SUSDS", [USDS_ADDRESS])
    return {"rows": rows, "snapshot": _pool_row(pool, tvl, rate, rate, zero, np.ones(len(rate), bool))}


def _noon(dates: list[dt.date], rng: np.random.Generator) -> np.ndarray:
    epoch = (np.array([d.toordinal() for d in dates]) - dt.date(1970, 1, 1).toordinal()) * 86_400
    return epoch + 12 * 3600 + rng.integers(-420, 421, len(dates))


def _round_price(p: np.ndarray) -> list[float]:
    digits = np.where(p < 2, 6, np.where(p < 1000, 4, 2))
    return [round(float(x), int(k)) for x, k in zip(p, digits, strict=True)]


def write_coins(corpus: Corpus, out: Path, configs: list[Path | str]) -> tuple[int, int]:
    """One query-less price file per coin, and one per coins batch the client sends for each of
    ``configs`` (the replay server matches a request's exact coin list). Returns (files, bytes)."""
    from midfreq_assets.domain.config.project import load_project
    from midfreq_resources.clients.defillama_coins import DefiLlamaCoinsClient, batches
    from midfreq_resources.replay.server import coins_chart_filename

    target = out / "defillama" / "coins" / "chart"
    target.mkdir(parents=True, exist_ok=True)
    stamps = _noon(corpus.dates, np.random.default_rng(corpus.spec.seed + 2))
    charts = {}
    for coin, (symbol, decimals, confidence, prices) in corpus.prices.items():
        keep = np.ones(len(prices), bool)
        keep[corpus.coin_missing.get(coin, np.zeros(0, np.int64))] = False
        charts[coin] = {
            "symbol": symbol,
            "confidence": confidence,
            "decimals": decimals,
            "prices": [
                {"timestamp": int(t), "price": p}
                for t, p in zip(stamps[keep], _round_price(prices[keep]), strict=True)
            ],
        }
    files = size = 0
    for coin, chart in charts.items():
        size += _write(target / coins_chart_filename(coin), {"coins": {coin: chart}, "note": GENERATED_NOTE})
        files += 1
    client = DefiLlamaCoinsClient()
    written = set()
    for config in configs:
        coins = load_project(config).price_coins()
        for batch in batches(coins, client.max_coins_per_request, client.max_coins_chars):
            name = coins_chart_filename(",".join(batch))
            if len(batch) < 2 or name in written:
                continue
            written.add(name)
            body = {"coins": {c: charts[c] for c in batch if c in charts}, "note": GENERATED_NOTE}
            size += _write(target / name, body)
            files += 1
    return files, size


def _readme(corpus: Corpus, stats: WriteStats, command: str | None) -> str:
    spec = corpus.spec
    mix = Counter((p.chain, p.project) for p in corpus.pools).most_common(8)
    return (
        "# GENERATED synthetic DefiLlama corpus (not a recording)\n\n"
        'Written by `benchmarks/corpus_generator.py` (see docs/PERFORMANCE.md "Synthetic corpora"), '
        "in the replay layout of `recorded/` (docs/REPLAY.md). Deterministic: the same arguments write "
        "the same bytes.\n\n"
        + (f"Command: `{command}`\n\n" if command else "")
        + f"Spec: `{orjson.dumps(asdict(spec), default=str).decode()}`\n\n"
        f"{spec.pools} pools (+ the Sky sUSDS pool {SKY_SUSDS_POOL}) x {spec.days} days from {corpus.dates[0]} "
        f"to {corpus.dates[-1]}: {stats.rows} chart rows, {stats.listed} pools in /pools, "
        f"{stats.late_starts} late starts, {stats.dead} dead (absent from /pools"
        f"{', listed anyway' if spec.dead_in_pools else ''}), {stats.gaps} gaps of 1-10 days, "
        f"{stats.duplicate_rows} duplicated rows, {stats.spikes} one-day spikes, {stats.flagged_rows} absurd "
        f"values (flagged by the ingestion), {stats.refused_pools} pools with a negative TVL (refused).\n\n"
        f"Most common (chain, project): {', '.join(f'{c}/{p} {k}' for (c, p), k in mix)}.\n"
    )


# --------------------------------------------------------------------------------------------
# A vault config dir for the corpus
# --------------------------------------------------------------------------------------------


def vault_config(corpus: Corpus, name: str = "synthetic_usd", min_pool_tvl_usd: float = 100_000) -> dict:
    """A USD vault (configs/vaults/usd_lending.yaml's settings) whose filters admit most generated
    pools: every generated chain and project, a 100k USD TVL floor, trading from the corpus's first
    day, each project's reward token priced, no live loop (positions, execution, intraday)."""
    body = yaml.safe_load((REPO_CONFIGS / "vaults" / "usd_lending.yaml").read_text())
    projects = sorted({p.project for p in corpus.pools})
    tier1 = [p for p in ("aave-v3", "morpho-blue") if p in projects]
    body.update(
        {
            "name": name,
            "start_date": corpus.dates[0],
            "chains": sorted({p.chain for p in corpus.pools}),
            "protocols": {"tier1": tier1, "tier2": [p for p in projects if p not in tier1]},
            "min_pool_tvl_usd": min_pool_tvl_usd,
        }
    )
    for key in ("positions", "execution", "intraday"):
        body.pop(key, None)
    body["yields"]["reward_haircut"]["default_reward_tokens"] = {
        p: [PROJECTS[p].reward_coin] for p in projects if p in PROJECTS and PROJECTS[p].reward_coin
    }
    body["yields"]["underlying_yield"]["pools"] = {"susds": SKY_SUSDS_POOL}
    body["strategy"]["protocol_caps"] = {p: 0.3 for p in projects if p not in tier1}
    return body


CONFIG_MARKER = "GENERATED.md"
CORPUS_MARKER = "README.md"


def check_replaceable(path: Path | str, marker: str) -> None:
    """Raise FileExistsError unless ``path`` is missing, empty, or a directory this generator wrote
    (its ``marker`` file starts with "# GENERATED"); the repository's own folders never are."""
    path = Path(path)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return
    mark = path / marker
    if path.resolve() in (REPO, REPO_CONFIGS, REPO / "recorded") or not (
        mark.is_file() and mark.read_text(errors="replace").startswith("# GENERATED")
    ):
        raise FileExistsError(f"{path} is not empty and was not written by this generator: not replaced")


def clear_generated(path: Path | str, marker: str) -> None:
    """Empty ``path`` for a new write (:func:`check_replaceable` first: nothing else is deleted)."""
    check_replaceable(path, marker)
    if Path(path).exists():
        shutil.rmtree(path)


SINGLE_GRID = {
    "description": "one point (benchmarks/corpus_generator.py): weekly decisions at the vault's own settings",
    "parameters": {"backtest.rebalance_every_days": [7]},
}


def write_configs(
    corpus: Corpus, config_out: Path | str, name: str = "synthetic_usd", min_pool_tvl_usd: float = 100_000
) -> Path:
    """``configs/`` copied to ``config_out`` with ``vaults/`` holding only the generated vault, plus
    ``grids/single.yaml`` (one point). Returns the vault file."""
    config_out = Path(config_out)
    clear_generated(config_out, CONFIG_MARKER)
    shutil.copytree(REPO_CONFIGS, config_out, ignore=shutil.ignore_patterns("vaults"), dirs_exist_ok=True)
    (config_out / "vaults").mkdir()
    (config_out / CONFIG_MARKER).write_text(
        f"# GENERATED config dir\n\nconfigs/ with one vault for a synthetic corpus ({corpus.spec.pools} pools x "
        f"{corpus.spec.days} days from {corpus.dates[0]}), written by benchmarks/corpus_generator.py.\n"
    )
    (config_out / "grids" / "single.yaml").write_text(yaml.safe_dump(SINGLE_GRID, sort_keys=False))
    path = config_out / "vaults" / f"{name}.yaml"
    header = (
        f"# GENERATED by benchmarks/corpus_generator.py for a synthetic corpus ({corpus.spec.pools} pools x "
        f"{corpus.spec.days} days from {corpus.dates[0]}):\n# configs/vaults/usd_lending.yaml widened to admit "
        "most generated pools (every chain and project, 100k USD TVL floor), no live loop.\n"
    )
    path.write_text(header + yaml.safe_dump(vault_config(corpus, name, min_pool_tvl_usd), sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from exc


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pools", type=int, required=True, help="pools to generate (plus the Sky sUSDS pool)")
    p.add_argument("--days", type=int, required=True, help="days of history")
    p.add_argument("--start", type=_date, default=dt.date(2021, 6, 1), help="first day (default 2021-06-01)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, required=True, help="corpus directory (replaced if it exists)")
    p.add_argument(
        "--reference", choices=["usd"], default="usd", help="reference asset (the recorded mix: usd)"
    )
    p.add_argument(
        "--config-out",
        type=Path,
        default=None,
        help="also write a config dir (configs/ with one vault admitting most generated pools)",
    )
    p.add_argument("--vault-name", default="synthetic_usd")
    p.add_argument(
        "--min-pool-tvl", type=float, default=100_000, help="the generated vault's TVL floor (USD)"
    )
    p.add_argument(
        "--dead-in-pools",
        action="store_true",
        help="keep dead pools in /pools (DefiLlama drops them; then the pipeline fetches them too)",
    )
    p.add_argument(
        "--refused-pools",
        type=int,
        default=0,
        help="pools with one negative-TVL record: the ingestion refuses them and its run is red",
    )
    p.add_argument(
        "--death-rate",
        type=float,
        default=CorpusSpec.death_rate_per_year,
        help="pools dying per pool-year (0: none; dead pools leave /pools unless --dead-in-pools)",
    )
    p.add_argument(
        "--late-start-share",
        type=float,
        default=CorpusSpec.late_start_share,
        help="share of pools starting after day 0 (0: every chart covers every day but gaps)",
    )
    p.add_argument(
        "--outlier-rate", type=float, default=CorpusSpec.outlier_rate, help="flagged values per pool-day"
    )
    return p


def _spec(args: argparse.Namespace) -> CorpusSpec:
    return CorpusSpec(
        pools=args.pools,
        days=args.days,
        start=args.start,
        seed=args.seed,
        reference=args.reference,
        dead_in_pools=args.dead_in_pools,
        refused_pools=args.refused_pools,
        outlier_rate=args.outlier_rate,
        death_rate_per_year=args.death_rate,
        late_start_share=args.late_start_share,
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        spec = _spec(args)
    except ValueError as exc:
        print(f"corpus_generator: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    corpus = generate(spec)
    simulated = time.perf_counter() - started
    configs = [REPO_CONFIGS]
    try:  # check both before deleting anything
        check_replaceable(args.out, CORPUS_MARKER)
        if args.config_out is not None:
            check_replaceable(args.config_out, CONFIG_MARKER)
            vault = write_configs(corpus, args.config_out, args.vault_name, args.min_pool_tvl)
            configs.append(args.config_out)
    except FileExistsError as exc:
        print(f"corpus_generator: {exc}", file=sys.stderr)
        return 2
    command = (
        f"corpus_generator.py --pools {spec.pools} --days {spec.days} --start {spec.start} --seed {spec.seed}"
        f" --reference {spec.reference}"
        + (" --dead-in-pools" if spec.dead_in_pools else "")
        + (f" --refused-pools {spec.refused_pools}" if spec.refused_pools else "")
        + (f" --outlier-rate {spec.outlier_rate:g}" if spec.outlier_rate != CorpusSpec.outlier_rate else "")
        + (f" --death-rate {args.death_rate:g}" if args.death_rate != CorpusSpec.death_rate_per_year else "")
        + (
            f" --late-start-share {args.late_start_share:g}"
            if args.late_start_share != CorpusSpec.late_start_share
            else ""
        )
    )
    stats = write_corpus(corpus, args.out, configs, command)
    print(f"wrote {args.out}: {stats.line()}")
    print(
        f"  simulate {simulated:.1f}s, write {stats.seconds:.1f}s, total {time.perf_counter() - started:.1f}s; "
        f"{corpus.dates[0]}..{corpus.dates[-1]}"
    )
    if args.config_out is not None:
        print(
            f"wrote {args.config_out}: vault {vault.relative_to(args.config_out)} (start_date {corpus.dates[0]}), "
            f"grids/single.yaml"
        )
        print(
            f"run: .venv/bin/midfreq pipeline --corpus {args.out} --config-dir {args.config_out} --lake /tmp/lake"
            " [--grid single]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
