"""Shared pytest fixtures. Keep each fixture small and documented; append new ones below."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from midfreq_resources.replay.server import ReplayServer

REPO_ROOT = Path(__file__).parents[1]
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
