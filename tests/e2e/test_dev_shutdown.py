"""``make dev`` (``python -m midfreq_assets.dev``) stops whole within the bound on SIGTERM or Ctrl-C."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).parents[2]
BOUND_S = 45.0


def processes_mentioning(*needles: str) -> list[str]:
    """Command lines of live processes that contain one of ``needles`` (this test's home or port)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in cmd for n in needles):
            found.append(cmd[:200])
    return found


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_dev_stops_within_bound(tmp_path: Path, free_port, sig: signal.Signals):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "MIDFREQ_DATA_LAKE": str(tmp_path / "lake")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "midfreq_assets.dev", "-w", "workspace.yaml", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail("dagster dev did not come up within 120 s")
        started = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=BOUND_S)
        assert time.monotonic() - started < BOUND_S
        assert "stopped" in proc.stderr.read()
        assert processes_mentioning(str(home), f"-p {port}") == []  # webserver, daemon, code servers all gone
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
