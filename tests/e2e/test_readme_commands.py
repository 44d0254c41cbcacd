"""Every shell command of README.md runs as written, or names the test that covers it.

The README's ```bash blocks are read here; a command added there and neither run nor mapped to an
existing test fails :func:`test_every_readme_command_is_run_or_covered`. Commands run in a fresh
clone's layout (``conftest.fresh_clone``: ``$PWD``, ``data_lake/`` and ``.dagster_home/`` are the
clone's), except the read-only development checks, which run in the repository itself.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
README = REPO / "README.md"
CLI_TIMEOUT_S = 600


def readme_commands() -> list[str]:
    """The README's shell commands in order: continuations joined, comments and blank lines dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = "" if line.strip().startswith("#") else line.split("  #")[0]
            command = re.sub(r"\s+", " ", command).strip()
            if command:
                out.append(command)
    return out


def block_of(first: str) -> str:
    """The README's bash block that starts with ``first``, as written (comments kept: bash skips them)."""
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        if block.lstrip().startswith(first):
            return block
    raise AssertionError(f"README.md has no bash block starting with {first!r}")


#: Commands this file runs as written (the test that runs each).
RUN_HERE = {
    "make lint": "test_development_commands",
    "make validate": "test_development_commands",
    ".venv/bin/dg check defs": "test_development_commands",
    ".venv/bin/dg list defs": "test_development_commands",
    ".venv/bin/midfreq replay recorded/ --port 8765": "test_replay_then_backfill_a_month",
    "export MIDFREQ_DEFILLAMA_YIELDS_URL=http://127.0.0.1:8765/defillama/yields": "test_replay_then_backfill_a_month",
    "export MIDFREQ_DEFILLAMA_COINS_URL=http://127.0.0.1:8765/defillama/coins": "test_replay_then_backfill_a_month",
    "export MIDFREQ_BINANCE_ARCHIVE_URL=http://127.0.0.1:8765/binance": "test_replay_then_backfill_a_month",
    "export DAGSTER_HOME=$PWD/.dagster_home": "test_replay_then_backfill_a_month",
    ".venv/bin/dagster asset materialize -m midfreq_assets.definitions --select pool_history,pool_metadata "
    "--partition-range 2024-07-01...2024-07-31": "test_replay_then_backfill_a_month",
    ".venv/bin/dg launch --assets pool_history,pool_metadata --partition-range 2024-07-01...2024-07-31": "test_replay_then_backfill_a_month",
    "make demo": "test_make_demo_then_the_live_loop_block",
    "cat data_lake/usd_lending/trade_orders/2025-06-05.json": "test_make_demo_then_the_live_loop_block",
    ".venv/bin/midfreq pipeline --corpus recorded --execution-server": "test_make_demo_then_the_live_loop_block",
}
LIVE_LOOP_BLOCK = "POOL=$("
#: Every command of the execution-server block runs in test_make_demo_then_the_live_loop_block.
RUN_IN_LIVE_LOOP_BLOCK = "test_make_demo_then_the_live_loop_block"

#: Commands too long for this file, each with the test that runs what it does.
COVERED_ELSEWHERE = {
    "make test": "tests/",  # the suite itself
    "make dev": "tests/e2e/test_dev_shutdown.py::test_dev_stops_within_bound",
    "make bench": "tests/benchmarks/test_corpus_generator.py",
    ".venv/bin/midfreq pipeline --corpus /path/to/corpus --config-dir /path/to/configs --lake /tmp/lake": "tests/e2e/test_other_corpus.py::test_other_corpus_and_vault_through_env_only",
    ".venv/bin/midfreq pipeline --corpus recorded --start 2024-06-06 --end 2024-09-30 --grid default": "tests/e2e/test_pipeline_plan.py::test_a_start_date_clips_every_range",
    ".venv/bin/dagster asset materialize -m midfreq_assets.definitions --select usd_lending/backtest_report "
    "--partition default": "tests/e2e/test_browser_ui_runs.py::test_demo_runs_show_on_job_pages_and_the_timeline",
}


def _test_exists(ref: str) -> bool:
    path, _, name = ref.partition("::")
    target = REPO / path
    if not name:
        return target.exists()
    tree = ast.parse(target.read_text())
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body)


def test_every_readme_command_is_run_or_covered():
    commands = readme_commands()
    assert len(commands) > 20, "README.md lost its shell commands?"
    live_loop = {c for c in readme_commands_of(block_of(LIVE_LOOP_BLOCK))}
    uncovered = [
        c for c in commands if c not in RUN_HERE and c not in COVERED_ELSEWHERE and c not in live_loop
    ]
    assert not uncovered, f"README commands neither run nor covered by a named test: {uncovered}"
    here = {n.name for n in ast.parse(Path(__file__).read_text()).body if isinstance(n, ast.FunctionDef)}
    assert set(RUN_HERE.values()) | {RUN_IN_LIVE_LOOP_BLOCK} <= here
    missing = {c: t for c, t in COVERED_ELSEWHERE.items() if not _test_exists(t)}
    assert not missing, f"tests named for README commands do not exist: {missing}"
    stale = [c for c in [*RUN_HERE, *COVERED_ELSEWHERE] if c not in commands]
    assert not stale, f"commands mapped here are no longer in README.md: {stale}"


def readme_commands_of(block: str) -> list[str]:
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        command = "" if line.strip().startswith("#") else line.split("  #")[0]
        command = re.sub(r"\s+", " ", command).strip()
        if command:
            out.append(command)
    return out


def bash(
    script: str, cwd: Path, env: dict[str, str], timeout: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_development_commands(clone_kit):
    """``make lint``, ``make validate``, ``dg check defs``, ``dg list defs`` in the repository, as written."""
    env = clone_kit.env(REPO)
    env.pop("MIDFREQ_DATA_LAKE")
    for command in ("make lint", "make validate", ".venv/bin/dg check defs", ".venv/bin/dg list defs"):
        proc = bash(command, REPO, env)
        assert proc.returncode == 0, (
            f"{command}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
        if command.endswith("list defs"):
            assert "usd_lending/rebalance_weights" in proc.stdout and "nightly_refresh" in proc.stdout


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.timeout(1200)
def test_replay_then_backfill_a_month(tmp_path: Path, clone_kit):
    """The replay block (its server in the background, then its exports), then the backfill block, in a fresh
    clone: both CLIs backfill July 2024 of pool_history and pool_metadata from the recording."""
    root, clone_env = clone_kit.fresh(tmp_path / "midfreq"), clone_kit.env
    replay, backfill = block_of(".venv/bin/midfreq replay"), block_of("export DAGSTER_HOME")
    if not _port_free(8765):
        pytest.skip("port 8765 (the README's replay port) is taken on this machine")
    (root / ".dagster_home").mkdir()
    shutil.copy(REPO / "deploy" / "local" / "dagster.yaml", root / ".dagster_home" / "dagster.yaml")
    server_cmd, exports = replay.splitlines()[0].split("  #")[0].strip(), replay.splitlines()[1:]
    server = subprocess.Popen(
        ["bash", "-c", server_cmd],
        cwd=root,
        env=clone_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        printed = server.stdout.readline() + server.stdout.readline()
        deadline = time.monotonic() + 30
        while _port_free(8765) and time.monotonic() < deadline:
            time.sleep(0.2)
        proc = bash("\n".join([*exports, backfill]), root, clone_env(root))
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert "8765" in printed, printed
    from midfreq_resources.io.lake import read_daily, stored_days

    days = stored_days(root / "data_lake", "pool_history")
    assert days[0] == "2024-07-01" and days[-1] == "2024-07-31" and len(days) == 31
    assert len(read_daily(root / "data_lake", "pool_metadata", days=["2024-07-15"])) > 0
    assert len(list((root / ".dagster_home").glob("**/*.db"))) > 0  # the runs are in the clone's run history


@pytest.mark.timeout(2400)
def test_make_demo_then_the_live_loop_block(demo_clone, clone_kit, tmp_path):
    """``make demo`` in a fresh clone, ``cat`` its ticket, then the README's execution-server block as written:
    the orders reach the local endpoint once, the second run answers from the ledger. The block runs in a
    copy of the demo's clone (the session's one ``make demo``, which the browser tests read meanwhile)."""
    clone_env = clone_kit.env
    assert demo_clone["returncode"] == 0, f"{demo_clone['stdout'][-3000:]}\n{demo_clone['stderr'][-3000:]}"
    root = clone_kit.copy(demo_clone["root"], tmp_path / "midfreq")
    assert "Stages: " in demo_clone["stdout"] and " 0 failed" in demo_clone["stdout"]
    print(f"make demo: {demo_clone['wall_s']:.0f}s wall")
    ticket = bash("cat data_lake/usd_lending/trade_orders/2025-06-05.json", root, clone_env(root))
    assert ticket.returncode == 0 and json.loads(ticket.stdout)["orders"]
    if not _port_free(8777):
        pytest.skip("port 8777 (the README's execution server port) is taken on this machine")
    proc = bash(block_of(LIVE_LOOP_BLOCK), root, clone_env(root), timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    bodies = json_bodies(proc.stdout)
    assert len(bodies) == 2, proc.stdout[-2000:]  # curl /orders, then curl /positions
    orders, positions = bodies
    assert orders and all(r["posts"] == 1 for r in orders.values())  # once each, the re-run from the ledger
    assert positions, positions


def json_bodies(text: str) -> list:
    """The JSON documents printed one after the other (curl -s ends none with a newline)."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while (start := min((j for j in (text.find("{", i), text.find("[", i)) if j >= 0), default=-1)) >= 0:
        try:
            body, i = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            i = start + 1
            continue
        out.append(body)
    return out
