"""Fixtures of the end-to-end tests: free ports, an in-memory object-store lake, throwaway local
services (Postgres, a Redis broker, an S3-compatible server), and `midfreq pipeline` on a GENERATED
corpus of ETH, BTC and LP pools (which the bundled recording lacks)."""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib.util
import os
import pickle
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from filelock import FileLock
from upath import UPath

HAS_DAGSTER_POSTGRES = importlib.util.find_spec("dagster_postgres") is not None
SERVICE_START_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """``free_port()``: a TCP port on 127.0.0.1 nobody listens on right now."""
    return _free_port


@pytest.fixture
def memory_lake() -> Iterator[str]:
    """A fresh ``memory://`` lake (fsspec's in-memory filesystem stands in for s3://), removed afterwards."""
    root = f"memory://midfreq-{uuid.uuid4().hex}/lake"
    yield root
    lake = UPath(root)
    if lake.exists():
        lake.fs.rm(lake.path, recursive=True)


def postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@pytest.fixture
def local_postgres() -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (skipped when the binaries are missing)."""
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not installed (apt-get install postgresql)")
    if not HAS_DAGSTER_POSTGRES:
        pytest.skip("dagster-postgres not installed (pip install '.[deploy]')")
    run_as: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="midfreq-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root: use the postgres account
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and no 'postgres' account to run PostgreSQL as")
        os.chown(root, account.pw_uid, account.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*run_as, *cmd], capture_output=True, text=True, timeout=120)

    init = run(initdb, "-D", str(data), "-U", "dagster", "--auth=trust", "-E", "UTF8", "--no-sync")
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = run(
        pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-o", opts, "-w", "-t", "60", "start"
    )
    try:
        assert start.returncode == 0, (
            f"pg_ctl start failed: {start.stderr}\n{(root / 'server.log').read_text()}"
        )
        yield {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(port),
            "DAGSTER_PG_USER": "dagster",
            "DAGSTER_PG_PASSWORD": "unused-trust-auth",
            "DAGSTER_PG_DB": "postgres",
        }
    finally:
        with contextlib.suppress(Exception):
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _wait_for(ready: Callable[[], bool], proc: subprocess.Popen, what: str, log: Path) -> None:
    """Poll ``ready()`` until it holds; fail with the service's log if it exits or times out."""
    deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            if ready():
                return
        time.sleep(0.1)
    raise AssertionError(f"{what} not ready after {SERVICE_START_TIMEOUT_S}s:\n{log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _redis_pings(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A throwaway ``redis-server`` on 127.0.0.1 (no persistence); yields ``redis://127.0.0.1:<port>``.

    Skipped when Debian's ``redis-server`` is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    port, log = _free_port(), tmp_path / "redis.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(lambda: _redis_pings(port), proc, "redis-server", log)
        yield f"redis://127.0.0.1:{port}"
    finally:
        _stop(proc)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as response:
        return response.status == 200


def _clear_s3fs_instances() -> None:
    """fsspec reuses one S3FileSystem per set of arguments, built for the endpoint of its first use."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """moto's standalone S3-compatible server on 127.0.0.1, in its own process.

    Yields the variables that point s3fs/botocore at it (``AWS_ENDPOINT_URL_S3``, test credentials),
    already set in this process. Skipped when ``moto[server]`` (dev extra) or ``s3fs`` (deploy
    extra) is not installed."""
    for module, extra in (("moto", "dev"), ("flask", "dev"), ("s3fs", "deploy")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} not installed (pip install '.[{extra}]')")
    port, log = _free_port(), tmp_path / "moto.log"
    endpoint = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    env = {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": "midfreq-test",
        "AWS_SECRET_ACCESS_KEY": "midfreq-test",
        "AWS_REGION": "us-east-1",
    }
    try:
        _wait_for(lambda: _http_ok(f"{endpoint}/moto-api/"), proc, "moto_server", log)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        _clear_s3fs_instances()
        yield env
    finally:
        _clear_s3fs_instances()
        _stop(proc)


# --------------------------------------------------------------------------- a generated ETH/BTC/LP corpus
GEN_FIRST = "2024-06-06"
GEN_DAYS = 100
ADDR = {  # Ethereum token addresses (configs/tokens.yaml maps them to symbols)
    "weth": "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2",
    "steth": "0xae7ab96520DE3A18E5e111B5EaAb095312D7fE84",
    "wsteth": "0x7f39C581F595B53c5cb19bD0b3f8dA6c935E2Ca0",
    "usdc": "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
    "wbtc": "0x2260FAC5E5542a773Aa44fBCfeDf7C193bc2C599",
    "cbbtc": "0xcbB7C0000aB88B473b1f5aFd9ef808440eed33Bf",
}
LIDO = "747c1d2a-c668-4682-b9f9-296708a3dd90"
GEN_POOLS = {
    # pool: (project, symbol, underlying, apy %/yr, tvl USD, il7d % (None: not reported))
    "00000000-0000-4000-8000-0000000e0001": ("aave-v3", "WETH", ["weth"], 2.0, 2e9, None),
    "00000000-0000-4000-8000-0000000e0002": ("aave-v3", "WSTETH", ["wsteth"], 0.1, 1.5e9, None),
    LIDO: ("lido", "STETH", ["steth"], 3.2, 2.5e10, None),
    "00000000-0000-4000-8000-0000000e0004": ("curve-dex", "STETH-ETH", None, 2.5, 3e8, 0.01),
    "00000000-0000-4000-8000-0000000e0005": ("uniswap-v3", "USDC-WETH", ["usdc", "weth"], 25.0, 2e8, "half"),
    "00000000-0000-4000-8000-0000000e0006": ("aave-v3", "USDC", ["usdc"], 5.0, 1e9, None),
    "00000000-0000-4000-8000-0000000b0001": ("aave-v3", "WBTC", ["wbtc"], 0.5, 1e9, None),
    "00000000-0000-4000-8000-0000000b0002": ("aave-v3", "CBBTC", ["cbbtc"], 1.0, 5e8, None),
    "00000000-0000-4000-8000-0000000b0003": ("uniswap-v3", "WBTC-USDC", ["wbtc", "usdc"], 20.0, 1e8, None),
}
GAP_POOL, GAP_DAYS = "00000000-0000-4000-8000-0000000e0001", (40, 41)  # aave WETH missing two days
RESEARCH = {
    "label_map": {"apy": {"target": "adjusted_apy", "horizons": [7]}},
    "models": {"cv": {"n_splits": 2, "min_train": 14}, "apy": {"ewm_predictor": {"halflife": "7d"}}},
}


def _gen_vaults() -> dict[str, dict]:
    common = {"start_date": GEN_FIRST, "chains": ["Ethereum"], "min_pool_tvl_usd": 1e6, **RESEARCH}
    return {
        "eth_generated": {
            **common,
            "reference_asset": "eth",
            "protocols": {"tier1": ["aave-v3", "lido", "curve-dex"]},
            "yields": {
                "tokens": {
                    t: {"coin": f"ethereum:{ADDR[t]}", "peg": p}
                    for t, p in (("weth", 1.0), ("steth", 1.0), ("wsteth", None))
                },
                "peg": {"enabled": True},
                "underlying_yield": {"pools": {"steth": LIDO, "wsteth": LIDO}},
            },
            "strategy": {"concentration_limit": 0.4, "gas_usd": 10.0, "min_trade_usd": 2000},
            "backtest": {"initial_wealth": 500.0},
        },
        "usd_lp": {
            **common,
            "reference_asset": "usd",
            "protocols": {"tier1": ["uniswap-v3", "aave-v3"]},
            "underlying_tokens": ["usdc", "weth", "wbtc"],
            "allow_price_exposure": True,
            "yields": {
                "tokens": {
                    "usdc": {"coin": f"ethereum:{ADDR['usdc']}", "peg": 1.0},
                    "weth": {"coin": f"ethereum:{ADDR['weth']}", "peg": None},
                }
            },
            "strategy": {"concentration_limit": 0.6, "gas_usd": 5.0},
            "backtest": {"initial_wealth": 1e6, "base_rate": 0.04},
        },
        "btc_generated": {
            **common,
            "reference_asset": "btc",
            "protocols": {"tier1": ["aave-v3"]},
            "yields": {
                "tokens": {t: {"coin": f"ethereum:{ADDR[t]}", "peg": 1.0} for t in ("wbtc", "cbbtc")},
                "peg": {"enabled": True},
            },
            "strategy": {"concentration_limit": 0.6, "gas_usd": 10.0},
            "backtest": {"initial_wealth": 20.0},
        },
    }


def _gen_prices(days: list) -> dict[str, list[float]]:
    import numpy as np

    rng = np.random.default_rng(2024)
    eth = 3800 * np.exp(np.cumsum(rng.normal(0, 0.03, len(days))))
    btc = 65000 * np.exp(np.cumsum(rng.normal(0, 0.025, len(days))))
    t = np.arange(len(days)) / 365
    return {
        "coingecko:ethereum": eth,
        "coingecko:bitcoin": btc,
        f"ethereum:{ADDR['weth']}": eth,
        f"ethereum:{ADDR['steth']}": eth * 0.998,
        f"ethereum:{ADDR['wsteth']}": eth * 1.17 * np.exp(0.032 * t),
        f"ethereum:{ADDR['usdc']}": 1.0 + rng.normal(0, 2e-4, len(days)),
        f"ethereum:{ADDR['wbtc']}": btc * 0.9995,
        f"ethereum:{ADDR['cbbtc']}": btc,
    }


def write_generated_corpus(
    root: Path, configs: Path, vaults: list[str] | None = None, broken_prices: bool = False
) -> dict[str, object]:
    """A corpus of GENERATED data (ETH, BTC and LP pools, which the bundled recording lacks) in the live
    layout, and a config dir with one vault of each reference asset (or ``vaults``); returns what was
    generated. ``broken_prices`` answers the coins API with a malformed body."""
    import datetime as dt
    import json

    import numpy as np
    import yaml

    from midfreq_assets.domain.config.project import load_project
    from midfreq_resources.clients.defillama_coins import DefiLlamaCoinsClient, batches
    from midfreq_resources.replay.server import coins_chart_filename

    repo = Path(__file__).parents[2]
    (configs / "vaults").mkdir(parents=True)
    (configs / "grids").mkdir()
    shutil.copyfile(repo / "configs" / "tokens.yaml", configs / "tokens.yaml")
    for name, body in _gen_vaults().items():
        if vaults is None or name in vaults:
            (configs / "vaults" / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **body}))
    (configs / "grids" / "default.yaml").write_text(
        yaml.safe_dump(
            {
                "description": "generated corpus",
                "parameters": {"strategy.cost": [0.0005, 0.002], "backtest.rebalance_every_days": [7]},
            }
        )
    )
    first = dt.date.fromisoformat(GEN_FIRST)
    days = [first + dt.timedelta(days=i) for i in range(GEN_DAYS)]
    rng = np.random.default_rng(7)
    charts = root / "defillama" / "yields" / "chart"
    charts.mkdir(parents=True)
    snapshot = []
    for pool, (project, symbol, tokens, apy, tvl, il7d) in GEN_POOLS.items():
        rows = []
        for i, day in enumerate(days):
            if pool == GAP_POOL and i in GAP_DAYS:
                continue
            a = max(apy + rng.normal(0, apy * 0.05), 0.0)
            il = None if il7d is None else (il7d if il7d != "half" else (0.05 if i < GEN_DAYS // 2 else None))
            rows.append(
                {
                    "timestamp": f"{day.isoformat()}T23:01:00.000Z",
                    "tvlUsd": tvl * (1 + rng.normal(0, 0.01)),
                    "apy": a,
                    "apyBase": a,
                    "apyReward": None,
                    "il7d": il,
                    "apyBase7d": None,
                }
            )
        (charts / f"{pool}.json").write_text(json.dumps({"status": "success", "data": rows}))
        snapshot.append(
            {
                "pool": pool,
                "chain": "Ethereum",
                "project": project,
                "symbol": symbol,
                "tvlUsd": tvl,
                "apy": apy,
                "apyBase": apy,
                "apyReward": None,
                "rewardTokens": None,
                "underlyingTokens": [ADDR[t] for t in tokens] if tokens else None,
                "poolMeta": None,
            }
        )
    (root / "defillama" / "yields" / "pools.json").write_text(
        json.dumps({"status": "success", "data": snapshot})
    )
    prices = _gen_prices(days)
    coins_dir = root / "defillama" / "coins" / "chart"
    coins_dir.mkdir(parents=True)

    def body(coins: list[str]) -> dict:
        return {
            "coins": {
                c: {
                    "symbol": c.split(":")[-1][:6],
                    "confidence": 0.99,
                    "decimals": 18,
                    "prices": [
                        {
                            "timestamp": int(dt.datetime.combine(d, dt.time(12), tzinfo=dt.UTC).timestamp()),
                            "price": float(p),
                        }
                        for d, p in zip(days, prices[c], strict=True)
                    ],
                }
                for c in coins
                if c in prices
            },
            "note": "GENERATED for a test",
        }

    project = load_project(configs)
    client = DefiLlamaCoinsClient()
    for batch in batches(project.price_coins(), client.max_coins_per_request, client.max_coins_chars):
        text = (
            json.dumps({"coins": {batch[0]: {"prices": "not a list"}}})
            if broken_prices
            else json.dumps(body(batch))
        )
        (coins_dir / coins_chart_filename(",".join(batch))).write_text(text)
    return {"days": days, "prices": prices, "first": first, "last": days[-1]}


def run_pipeline_cli(tmp: Path, *args: str, **corpus: object) -> dict[str, object]:
    """``midfreq pipeline`` (the real console script, a fresh process, an ephemeral Dagster instance)
    on a generated corpus: its output, exit status, lake and what was generated."""
    root, configs, lake = tmp / "corpus", tmp / "configs", tmp / "lake"
    info = write_generated_corpus(root, configs, **corpus)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDFREQ_", "DAGSTER_HOME"))}
    script = Path(sys.executable).parent / "midfreq"
    proc = subprocess.run(
        [
            str(script),
            "pipeline",
            "--corpus",
            str(root),
            "--config-dir",
            str(configs),
            "--lake",
            str(lake),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1500,
    )
    return {
        **info,
        "returncode": proc.returncode,
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "lake": lake,
        "corpus": root,
        "configs": configs,
    }


def once_per_session(
    tmp_path_factory, name: str, build: Callable[[Path], dict[str, object]]
) -> dict[str, object]:
    """``build(folder)`` once per test session, whatever the number of xdist workers: the first worker
    to ask builds it under the session's shared temp root (holding a file lock), the others wait and read
    its pickled result. What it built is shared: a test that changes it works on a copy."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent  # the workers' common parent
    result = shared / f"{name}.pickle"
    with FileLock(str(shared / f"{name}.lock")):
        if result.exists():
            return pickle.loads(result.read_bytes())
        folder = shared / name
        folder.mkdir()
        value = build(folder)
        result.write_bytes(pickle.dumps(value))
        return value


@pytest.fixture(scope="session")
def generated_run(tmp_path_factory) -> dict[str, object]:
    """The pipeline on the whole generated corpus (ETH, BTC and USD-with-price-exposure vaults); once per
    session, read only."""
    return once_per_session(tmp_path_factory, "generated", run_pipeline_cli)


@pytest.fixture
def pipeline_cli(tmp_path) -> Callable[..., dict[str, object]]:
    """``pipeline_cli(*args, vaults=None, broken_prices=False)``: the pipeline on a fresh generated corpus."""
    return functools.partial(run_pipeline_cli, tmp_path)


# --------------------------------------------------------------------------- a fresh clone, and make demo in one
REPO = Path(__file__).parents[2]
#: what a fresh clone does not have (or has empty: data_lake/ holds its README only)
NOT_IN_A_CLONE = {".git", "data_lake", ".dagster_home", "test-output", ".pytest_cache", ".ruff_cache", "tmp"}
DEMO_TIMEOUT_S = 1200


def fresh_clone(root: Path) -> Path:
    """``root`` laid out as a fresh clone of this repository with its venv installed: every tracked top-level
    entry linked (code, configs, recorded data, ``.venv``), ``data_lake/`` holding its README only, no run
    history. README commands run in it as written (``$PWD``, ``data_lake/``, ``.dagster_home/``)."""
    root.mkdir(parents=True, exist_ok=True)
    for entry in REPO.iterdir():
        if entry.name not in NOT_IN_A_CLONE:
            (root / entry.name).symlink_to(entry)
    (root / "data_lake").mkdir()
    shutil.copy(REPO / "data_lake" / "README.md", root / "data_lake" / "README.md")
    return root


def clone_env(root: Path) -> dict[str, str]:
    """The environment of a shell in the clone: no MIDFREQ_* or DAGSTER_HOME of the test session; the lake
    is the clone's ``data_lake/`` (what the default is in a real clone: the package's own folder)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDFREQ_") and k != "DAGSTER_HOME"}
    env["MIDFREQ_DATA_LAKE"] = str(root / "data_lake")
    return env


@pytest.fixture(scope="session")
def demo_clone(tmp_path_factory) -> dict[str, object]:
    """``make demo`` as the README says, in a fresh clone: the clone, its output and exit status, its wall
    time. Once per session, read only (:func:`copy_of_clone` for a test that runs more in it)."""
    return once_per_session(tmp_path_factory, "demo", make_demo_in_a_fresh_clone)


def make_demo_in_a_fresh_clone(folder: Path) -> dict[str, object]:
    root = fresh_clone(folder / "midfreq")
    started = time.monotonic()
    proc = subprocess.run(
        ["make", "demo"],
        cwd=root,
        env=clone_env(root),
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
    )
    return {
        "root": root,
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "returncode": proc.returncode,
        "wall_s": time.monotonic() - started,
    }


@pytest.fixture(scope="session")
def clone_kit():
    """``clone_kit.fresh(root)`` and ``clone_kit.env(root)``: a fresh clone's layout and its shell environment."""
    import types

    return types.SimpleNamespace(fresh=fresh_clone, env=clone_env, copy=copy_of_clone)


def copy_of_clone(root: Path, into: Path) -> Path:
    """A fresh clone at ``into`` holding a copy of ``root``'s lake and run history (``DAGSTER_HOME`` is the
    clone's own ``.dagster_home``), for a test that runs more commands after ``make demo``."""
    copy = fresh_clone(into)
    shutil.rmtree(copy / "data_lake")
    shutil.copytree(root / "data_lake", copy / "data_lake", symlinks=True)
    shutil.copytree(root / ".dagster_home", copy / ".dagster_home", symlinks=True)
    return copy
