"""The asset page's Plots tab draws a calendar that ended: ``dagster-webserver`` on the local instance
(``deploy/local/dagster.yaml`` as shipped) answers the two queries the tab sends with the last days'
per-partition metadata, not with the days before today (``midfreq_resources/instance/partition_keys.py``).

A one-asset code location (a daily calendar ending 2025-06-05, as a replayed corpus's) keeps it small:
the webserver, not midfreq's pipeline, is under test here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from tests.e2e.test_browser_ui import REPO, Webserver, stop, wait_until_ready

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

LOCATION = "plots"
FIRST_DAY, LAST_DAY = "2025-01-01", "2025-06-05"
CODE = f'''
import dagster as dg

DAYS = dg.DailyPartitionsDefinition(start_date="{FIRST_DAY}", end_date="2025-06-06", timezone="UTC")


@dg.asset(partitions_def=DAYS)
def wealth_by_day() -> None:
    ...


defs = dg.Definitions(assets=[wealth_by_day])
'''
WORKSPACE = f"""
load_from:
  - python_file:
      relative_path: plots_location.py
      location_name: {LOCATION}
"""

# The Plots tab's queries, as the Dagster 1.13.27 UI sends them (AssetEventsQuery chunk of the webapp).
LATEST_ASSET_PARTITIONS = """
query LatestAssetPartitionsQuery($assetKey: AssetKeyInput!, $limit: Int!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode { id partitionKeyConnection(limit: $limit, ascending: false) { results } }
  }
}"""
ASSET_PARTITION_EVENTS = """
query AssetPartitionEventsQuery($assetKey: AssetKeyInput!, $partitions: [String!]!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      latestMaterializationByPartition(partitions: $partitions) {
        partition metadataEntries { label ... on FloatMetadataEntry { floatValue } }
      }
    }
  }
}"""
PLOTS_LIMIT = 120  # the tab's limit


def wealth(day: str) -> float:
    return 1_000_000.0 + 10.0 * (pd.Timestamp(day) - pd.Timestamp(FIRST_DAY)).days


@pytest.fixture
def plots_ui(tmp_path: Path, free_port, monkeypatch: pytest.MonkeyPatch) -> Iterator[Webserver]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    days = [str(d.date()) for d in pd.date_range(FIRST_DAY, LAST_DAY, freq="D")]
    with dg.DagsterInstance.get() as instance:
        for day in days:
            instance.report_runless_asset_event(
                dg.AssetMaterialization("wealth_by_day", partition=day, metadata={"wealth": wealth(day)})
            )
    root = tmp_path / "project"
    root.mkdir()
    (root / "plots_location.py").write_text(CODE)
    (root / "workspace.yaml").write_text(WORKSPACE)
    port = free_port()
    log = tmp_path / "webserver.log"
    exe = Path(sys.executable).with_name("dagster-webserver")
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(exe), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=root,
            env={**os.environ, "DAGSTER_HOME": str(home)},
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Webserver(url=f"http://127.0.0.1:{port}", lake=tmp_path, log=log, proc=proc)
    try:
        wait_until_ready(server, LOCATION)
        yield server
    finally:
        stop(proc)


def test_plots_tab_gets_the_last_days_series(plots_ui: Webserver) -> None:
    key = {"path": ["wealth_by_day"]}
    node = plots_ui.graphql(LATEST_ASSET_PARTITIONS, {"assetKey": key, "limit": PLOTS_LIMIT})[
        "assetNodeOrError"
    ]
    newest = node["partitionKeyConnection"]["results"]
    expected = [str(d.date()) for d in pd.date_range(end=LAST_DAY, periods=PLOTS_LIMIT, freq="D")]
    assert newest == expected[::-1]  # the calendar's last 120 days, newest first (not the days before today)

    found = plots_ui.graphql(ASSET_PARTITION_EVENTS, {"assetKey": key, "partitions": newest[::-1]})
    series = {
        m["partition"]: {e["label"]: e.get("floatValue") for e in m["metadataEntries"]}["wealth"]
        for m in found["assetNodeOrError"]["latestMaterializationByPartition"]
        if m is not None
    }
    assert series == {day: wealth(day) for day in expected}  # one point per day, each its own number
