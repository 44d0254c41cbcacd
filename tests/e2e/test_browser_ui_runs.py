"""What a newcomer sees after ``make demo``: dagster-webserver on the demo's run history and lake, in Chromium.

``make demo`` runs as the README says in a fresh clone (``conftest.demo_clone``), then the webserver opens
on the clone's ``.dagster_home`` and ``data_lake/``, as issue 24's tryout did. Asserts, with screenshots
under ``test-output/browser/``:

- a partition's page shows its own numbers: ``usd_lending/fitted_models`` 2024-08-05 its own as_of,
  training rows and model file; a ``rebalance_weights`` day its own wealth, trades and rows; the run's
  figures only on the last partition (``run_*``, ``run_scope``); the numeric ones (wealth, invested share,
  turnover) form a series across the days, what the metadata Plots draw by partition: the Plots tab asks
  for the latest 120 keys with ``partitionKeyConnection(ascending: false)``, which gets the recording's
  last 120 days (Dagster 1.13.27 alone lists the days up to today: ``midfreq_resources/instance/
  partition_keys.py``, tested on its own in ``test_ui_plots.py``);
- the pipeline's runs are filed under the code location: the job pages and the timeline list them, an
  asset page links its latest run;
- the calendars end at the recording's last day: every daily asset has 365 partitions, none missing;
  no intraday asset (no vault enables it).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from midfreq_resources.io.lake import read_daily
from midfreq_resources.io.model_io_manager import load_path
from tests.e2e.test_browser_ui import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SCREENSHOTS,
    UI_TIMEOUT_MS,
    Webserver,
    dismiss_popups,
    stop,
    wait_until_ready,
)
from tests.e2e.test_ui_plots import LATEST_ASSET_PARTITIONS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(2400),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]

LABEL = "__repository__@midfreq"
WEEK, DAY, LAST_DAY = "2024-08-05", "2024-12-05", "2025-06-05"

RUNS = """
query Runs($job: String!) {
  runsOrError(filter: {pipelineName: $job, tags: [{key: ".dagster/repository", value: "LABEL"}]}) {
    ... on Runs { results { runId status repositoryOrigin { repositoryLocationName repositoryName } } }
  }
}""".replace("LABEL", LABEL)

STATS = """
query Stats($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode { partitionStats { numMaterialized numPartitions numFailed } }
  }
}"""

MATERIALIZATION = """
query Mat($key: AssetKeyInput!, $partition: String!) {
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetMaterializations(partitions: [$partition], limit: 1) {
        partition runId
        metadataEntries {
          label
          ... on TextMetadataEntry { text }
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
          ... on PathMetadataEntry { path }
        }
      }
    }
  }
}"""

ASSET_NODES = "{ assetNodes { assetKey { path } } }"

BY_PARTITION = """
query ByPartition($key: AssetKeyInput!, $partitions: [String!]!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      latestMaterializationByPartition(partitions: $partitions) {
        partition metadataEntries { label ... on FloatMetadataEntry { floatValue } }
      }
    }
  }
}"""


@pytest.fixture(scope="module")
def demo_ui(demo_clone, clone_kit, free_port) -> Iterator[Webserver]:
    root = demo_clone["root"]
    assert demo_clone["returncode"] == 0, (
        f"make demo failed:\n{demo_clone['stdout'][-3000:]}\n{demo_clone['stderr']}"
    )
    port = free_port()
    env = {**clone_kit.env(root), "DAGSTER_HOME": str(root / ".dagster_home")}
    log = root.parent / "webserver.log"
    exe = Path(sys.executable).with_name("dagster-webserver")
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(exe), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=root,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Webserver(url=f"http://127.0.0.1:{port}", lake=root / "data_lake", log=log, proc=proc)
    try:
        wait_until_ready(server)
        yield server
    finally:
        stop(proc)


def metadata(server: Webserver, key: list[str], partition: str) -> tuple[dict, str]:
    """The latest materialization of ``key``'s ``partition``: its metadata by label, and its run id."""
    found = server.graphql(MATERIALIZATION, {"key": {"path": key}, "partition": partition})
    (mat,) = found["assetOrError"]["assetMaterializations"]
    values = {}
    for e in mat["metadataEntries"]:
        values[e["label"]] = next(
            (e[k] for k in ("text", "intValue", "floatValue", "path") if e.get(k) is not None), None
        )
    return values, mat["runId"]


def stats(server: Webserver, key: list[str]) -> dict:
    return server.graphql(STATS, {"key": {"path": key}})["assetNodeOrError"]["partitionStats"]


def shot(page, name: str) -> None:
    page.wait_for_timeout(1_500)  # let charts and tables settle before the picture
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def test_each_partition_shows_its_own_numbers(demo_ui: Webserver) -> None:
    """Point 1, from the instance: a week's refit and a day's decision carry their own figures."""
    lake = demo_ui.lake
    week, _ = metadata(demo_ui, ["usd_lending", "fitted_models"], WEEK)
    bundle = load_path(lake / "usd_lending" / "fitted_models" / f"{WEEK}.skops")
    assert week["as_of"] == WEEK
    assert week["n_train"] == max(bundle.n_train.values())  # this refit's rows, not the last one's
    assert week["path"].endswith(f"/usd_lending/fitted_models/{WEEK}.skops")
    assert not any(k.startswith("run_") for k in week)  # the run's figures are on its last week only
    last, _ = metadata(demo_ui, ["usd_lending", "fitted_models"], "2025-06-02")
    assert last["as_of"] == "2025-06-02" and last["n_train"] > week["n_train"]
    assert "run_scope" in last and "cv_summary" in last

    day, _ = metadata(demo_ui, ["usd_lending", "rebalance_weights"], DAY)
    rows = read_daily(lake, "usd_lending", "rebalance_weights", days=[DAY])
    assert (rows["date"] == pd.Timestamp(DAY)).all()
    assert day["dagster/row_count"] == len(rows)
    assert day["wealth"] == pytest.approx(float(rows["wealth"].iloc[0]))
    assert day["path"].endswith(
        "/usd_lending/rebalance_weights/2024-12.parquet"
    )  # the month file holding the day
    assert not any(k.startswith("run_") for k in day)
    other, _ = metadata(demo_ui, ["usd_lending", "rebalance_weights"], "2024-12-06")
    assert (other["wealth"], other["dagster/row_count"]) != (day["wealth"], day["dagster/row_count"])
    final, _ = metadata(demo_ui, ["usd_lending", "rebalance_weights"], LAST_DAY)
    assert final["run_scope"].startswith("run_* entries") and "run_days_simulated" in final

    # what a plot across partitions draws: each day's own numbers, distinct from day to day
    newest = demo_ui.graphql(
        LATEST_ASSET_PARTITIONS, {"assetKey": {"path": ["usd_lending", "rebalance_weights"]}, "limit": 120}
    )["assetNodeOrError"]["partitionKeyConnection"]["results"]
    days = [str(d.date()) for d in pd.date_range("2025-02-06", LAST_DAY, freq="D")]  # the last 120 days
    assert newest == days[::-1]
    found = demo_ui.graphql(
        BY_PARTITION, {"key": {"path": ["usd_lending", "rebalance_weights"]}, "partitions": days}
    )
    series = {
        m["partition"]: {e["label"]: e.get("floatValue") for e in m["metadataEntries"]}
        for m in found["assetNodeOrError"]["latestMaterializationByPartition"]
    }
    assert sorted(series) == days
    wealth = pd.Series({d: v["wealth"] for d, v in series.items()})
    assert wealth.notna().all() and wealth.nunique() > 100  # a time series, not one number repeated
    assert all(
        isinstance(v["invested_share"], float) and isinstance(v["turnover"], float) for v in series.values()
    )

    history, _ = metadata(demo_ui, ["pool_history"], DAY)
    own = read_daily(lake, "pool_history", days=[DAY])
    assert history["dagster/row_count"] == len(own) and history["pools"] == own["pool"].nunique()


def test_partition_pages_in_the_browser(demo_ui: Webserver) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    week, _ = metadata(demo_ui, ["usd_lending", "fitted_models"], WEEK)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(
                f"{demo_ui.url}/assets/usd_lending/fitted_models?view=partitions&partition={WEEK}",
                wait_until="domcontentloaded",
            )
            dismiss_popups(page)
            page.get_by_text(f"{WEEK}.skops").first.wait_for()  # its own model file
            page.get_by_text(str(week["n_train"]), exact=True).first.wait_for()  # its own training rows
            shot(page, "runs_fitted_models_partition.png")

            page.goto(
                f"{demo_ui.url}/assets/usd_lending/rebalance_weights?view=partitions&partition={DAY}",
                wait_until="domcontentloaded",
            )
            page.get_by_text("positions_source").first.wait_for()
            page.get_by_text("2024-12.parquet").first.wait_for()
            assert page.get_by_text("run_days_simulated").count() == 0  # the run's figures: not on this day
            shot(page, "runs_rebalance_weights_partition.png")

        finally:
            browser.close()


def test_demo_runs_show_on_job_pages_and_the_timeline(demo_ui: Webserver) -> None:
    """Point 2: the pipeline's runs are filed under the code location (job pages, timeline, run links)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    for job in ("nightly_refresh", "usd_lending_decisions", "usd_lending_backtest_report"):
        runs = demo_ui.graphql(RUNS, {"job": job})["runsOrError"]["results"]
        assert runs, f"no run of {job} under {LABEL}"
        assert all(r["status"] == "SUCCESS" for r in runs), runs
        assert {r["repositoryOrigin"]["repositoryLocationName"] for r in runs} == {"midfreq"}
    _, run_id = metadata(demo_ui, ["pool_history"], DAY)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(
                f"{demo_ui.url}/locations/midfreq/jobs/usd_lending_decisions/runs",
                wait_until="domcontentloaded",
            )
            dismiss_popups(page)
            page.get_by_text("Success").first.wait_for()
            assert page.get_by_text("No runs found").count() == 0
            shot(page, "runs_job_page.png")

            page.goto(f"{demo_ui.url}/overview/activity/timeline", wait_until="domcontentloaded")
            page.get_by_text("nightly_refresh").first.wait_for()
            page.get_by_text("usd_lending_decisions").first.wait_for()
            assert page.get_by_text("No runs found").count() == 0
            shot(page, "runs_timeline.png")

            page.goto(f"{demo_ui.url}/assets/pool_history", wait_until="domcontentloaded")
            page.locator(f"a[href*='/runs/{run_id}']").first.wait_for()  # the latest run, one click away
            shot(page, "runs_asset_page.png")
        finally:
            browser.close()


def test_calendars_end_at_the_recordings_last_day(demo_ui: Webserver) -> None:
    """Point 3: 365 daily partitions (2024-06-06..2025-06-05), none missing; no intraday asset."""
    for key in (["pool_history"], ["pool_metadata"], ["token_prices"], ["usd_lending", "rebalance_weights"]):
        s = stats(demo_ui, key)
        assert (s["numPartitions"], s["numMaterialized"], s["numFailed"]) == (365, 365, 0), (key, s)
    s = stats(demo_ui, ["usd_lending", "features"])
    assert s["numPartitions"] == s["numMaterialized"] == 13  # 2024-06..2025-06
    s = stats(demo_ui, ["usd_lending", "fitted_models"])
    assert s["numPartitions"] == s["numMaterialized"]  # the weeks to 2025-06-02
    served = {"/".join(n["assetKey"]["path"]) for n in demo_ui.graphql(ASSET_NODES)["assetNodes"]}
    assert not any("intraday" in k for k in served)
    assert (demo_ui.lake / "replayed_corpus.json").exists()

    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(f"{demo_ui.url}/assets/pool_history?view=partitions", wait_until="domcontentloaded")
            dismiss_popups(page)
            page.get_by_text(LAST_DAY).first.wait_for()
            shot(page, "runs_pool_history_partitions.png")
        finally:
            browser.close()
