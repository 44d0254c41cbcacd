"""Fixtures of the end-to-end tests: free ports, an in-memory object-store lake, a throwaway Postgres."""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from upath import UPath

HAS_DAGSTER_POSTGRES = importlib.util.find_spec("dagster_postgres") is not None


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
    start = run(pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-o", opts, "-w", "-t", "60", "start")
    try:
        assert start.returncode == 0, f"pg_ctl start failed: {start.stderr}\n{(root / 'server.log').read_text()}"
        yield {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port), "DAGSTER_PG_USER": "dagster",
               "DAGSTER_PG_PASSWORD": "unused-trust-auth", "DAGSTER_PG_DB": "postgres"}
    finally:
        with contextlib.suppress(Exception):
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
