"""A bad vault config through every CLI, each in its own process on a copied config dir: one short
message naming the file and the key (``midfreq_assets/definitions.py`` loads the configuration before
the defs folder), never a ComponentTreeException pointing at an unrelated defs module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
BIN = Path(sys.executable).parent

COMMANDS = {
    "dagster definitions validate": [str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
    "dagster asset materialize": [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "-m",
        "midfreq_assets.definitions",
        "--select",
        "usd_lending/trade_orders",
        "--partition",
        "2025-06-05",
    ],
    "dg check defs": [str(BIN / "dg"), "check", "defs"],
    "midfreq pipeline": [str(BIN / "midfreq"), "pipeline", "--start", "2025-06-01", "--end", "2025-06-05"],
}


@pytest.fixture(scope="module")
def bad_config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("configs")
    shutil.copytree(REPO / "configs", root, dirs_exist_ok=True)
    vault = root / "vaults" / "usd_lending.yaml"
    text = vault.read_text()
    assert "min_pool_tvl_usd: 1000000" in text
    vault.write_text(text.replace("min_pool_tvl_usd: 1000000", "min_pool_tvl_usd: lots"))
    return root


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_config_error_is_one_short_message_naming_file_and_key(name, bad_config, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = os.environ | {
        "MIDFREQ_CONFIG_DIR": str(bad_config),
        "DAGSTER_HOME": str(home),
        "MIDFREQ_DATA_LAKE": str(tmp_path / "lake"),
        "PYTHONWARNINGS": "ignore",
    }
    done = subprocess.run(COMMANDS[name], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert f"{bad_config / 'vaults' / 'usd_lending.yaml'}: invalid configuration (1 problem(s))" in out, out
    assert "min_pool_tvl_usd: Input should be a valid number" in out and "(got 'lots')" in out
    assert "ComponentTreeException" not in out and "Traceback (most recent call last)" not in out, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) <= 20, out
