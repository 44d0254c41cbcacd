"""Fixtures of the end-to-end tests: free ports, an in-memory object-store lake, and throwaway local
services (Postgres, a Redis broker, an S3-compatible server)."""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
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
    start = run(pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-o", opts, "-w", "-t", "60", "start")
    try:
        assert start.returncode == 0, f"pg_ctl start failed: {start.stderr}\n{(root / 'server.log').read_text()}"
        yield {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port), "DAGSTER_PG_USER": "dagster",
               "DAGSTER_PG_PASSWORD": "unused-trust-auth", "DAGSTER_PG_DB": "postgres"}
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
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp_path)], stdout=out, stderr=subprocess.STDOUT)
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
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    env = {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "midfreq-test",
           "AWS_SECRET_ACCESS_KEY": "midfreq-test", "AWS_REGION": "us-east-1"}
    try:
        _wait_for(lambda: _http_ok(f"{endpoint}/moto-api/"), proc, "moto_server", log)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        _clear_s3fs_instances()
        yield env
    finally:
        _clear_s3fs_instances()
        _stop(proc)
