"""Fixtures every test folder shares: the replay server and a synthetic yield history.

Folders add their own in ``<folder>/conftest.py`` (``defs/``: the Dagster pipeline on a tmp lake).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from midfreq_resources.execution.server import ExecutionServer
from midfreq_resources.replay.server import ReplayServer

REPO_ROOT = Path(__file__).parents[1]
# The repo's data_lake/ may hold a demo's replayed_corpus.json, which would end the calendars of every code
# location a test loads at the demo's last day: tests read and write a lake of their own.
os.environ.setdefault("MIDFREQ_DATA_LAKE", tempfile.mkdtemp(prefix="midfreq-tests-lake-"))
RECORDED_DIR = REPO_ROOT / "recorded"


# --------------------------------------------------------------------------- replay server
@pytest.fixture(scope="session")
def replay_server() -> Iterator[ReplayServer]:
    """One replay server per test session (per xdist worker) serving `recorded/` on 127.0.0.1.

    Faults set on it persist across tests: prefer `replay_env` (resets before and after), or
    scope them with `with replay_server.faulted(latency_ms=50): ...` / call `replay_server.reset()`.
    """
    with ReplayServer(RECORDED_DIR) as server:
        yield server


@pytest.fixture
def replay_env(monkeypatch: pytest.MonkeyPatch, replay_server: ReplayServer) -> Iterator[ReplayServer]:
    """Point MIDFREQ_*_URL at the replay server; clean faults, forced rules and request log per test."""
    replay_server.reset()
    for name, value in replay_server.env().items():
        monkeypatch.setenv(name, value)
    yield replay_server
    replay_server.reset()


@pytest.fixture
def execution_server() -> Iterator[ExecutionServer]:
    """A local execution endpoint on 127.0.0.1 (fills everything until told otherwise)."""
    with ExecutionServer() as server:
        yield server


# --------------------------------------------------------------------------- synthetic data
def make_synthetic_history(days: int = 90, pools: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2024-06-06", periods=days, freq="D")
    rows = []
    for i in range(pools):
        apy = np.clip(0.05 + 0.01 * i + np.cumsum(rng.normal(0, 0.003, days)), 0.0, None)
        tvl = 5e7 * np.exp(np.cumsum(rng.normal(0, 0.02, days)))
        rows.append(
            pd.DataFrame({"date": dates, "pool": f"p{i}", "apy": apy, "adjusted_apy": apy, "tvl_usd": tvl})
        )
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="session")
def synthetic_history() -> Callable[..., pd.DataFrame]:
    """``synthetic_history(days=90, pools=5, seed=0)``: pools ``p0..`` with random-walk APY and TVL
    from 2024-06-06 (long ``pool_history`` shape: date, pool, apy, tvl_usd; plus ``adjusted_apy`` equal
    to ``apy``, as if no adjustment applied, since a vault earns adjusted yields by default)."""
    return make_synthetic_history
