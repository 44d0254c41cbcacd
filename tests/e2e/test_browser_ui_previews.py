"""What a newcomer sees after ``make demo``, in a real browser (issue 24, points 4-6).

Takes the instance and lake of ``make demo`` in a fresh clone (``conftest.demo_clone``), serves it with ``dagster-webserver`` and opens
it in headless Chromium:

- point 4: each asset page shows its preview as an inline table (formatted numbers, a pool's name
  beside its uuid, no column empty on every row) and its plot inline (no "[Show Markdown]" click):
  universe APY/TVL (pool_history), stacked weights and the day's trades (rebalance_weights),
  feature distributions (features), the traded model's CV folds (fitted_models), wealth against
  the benchmarks (backtest_report); column descriptions carry units;
- point 5: a failing check says what happened in one sentence and lists its top offenders inline;
- point 6: the HTML report's headline table fits a laptop screen, has no NaN, and every plot loads.

Screenshots go to ``test-output/browser/previews_*.png``.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_browser_ui import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    SCREENSHOTS,
    Webserver,
    dismiss_popups,
    stop,
    wait_until_ready,
)

VAULT = "usd_lending"
UI_TIMEOUT_MS = 90_000
LAPTOP_WIDTH_PX = 1366

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def demo(demo_clone) -> Iterator[dict[str, Path]]:
    """The demo's instance, lake and config dir: ``make demo`` in a fresh clone (the session's one run,
    shared with the job-page and README tests; ``MIDFREQ_BROWSER_DEMO``: the folder of an earlier clone,
    reused as it is, to iterate on the pages)."""
    reuse = os.environ.get("MIDFREQ_BROWSER_DEMO")
    root = Path(reuse) if reuse else demo_clone["root"]
    if not reuse:
        assert demo_clone["returncode"] == 0, demo_clone["stdout"][-4000:] + demo_clone["stderr"][-4000:]
    yield {
        "home": root / ".dagster_home",
        "lake": root / "data_lake",
        "configs": root / "configs",
    }


@pytest.fixture(scope="module")
def server(demo, free_port) -> Iterator[Webserver]:
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(demo["home"]),
        "MIDFREQ_DATA_LAKE": str(demo["lake"]),
        "MIDFREQ_CONFIG_DIR": str(demo["configs"]),
    }
    log = demo["home"].parent / "webserver.log"
    exe = Path(sys.executable).with_name("dagster-webserver")
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(exe), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    web = Webserver(url=f"http://127.0.0.1:{port}", lake=demo["lake"], log=log, proc=proc)
    try:
        wait_until_ready(web)
        yield web
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            p = browser.new_page(
                viewport={"width": LAPTOP_WIDTH_PX, "height": 2400}
            )  # Dagster scrolls inside
            p.set_default_timeout(UI_TIMEOUT_MS)
            yield p
        finally:
            browser.close()


def open_asset(page, server: Webserver, key: str, view: str = "") -> None:
    page.goto(f"{server.url}/assets/{key}{'?view=' + view if view else ''}", wait_until="domcontentloaded")
    dismiss_popups(page)
    page.get_by_text("Metadata" if not view else "Checks").first.wait_for()


def inline_plot(page, alt: str):
    """The plot drawn on the page (an <img> whose SVG loaded), not behind a click."""
    img = page.locator(f'img[alt^="{alt}"]').first
    img.wait_for()
    img.scroll_into_view_if_needed()
    assert img.evaluate("i => i.complete && i.naturalWidth > 0"), f"plot {alt!r} did not load"
    return img


def inline_table_text(page, header: str) -> str:
    """The text of the first inline metadata table with a column ``header``."""
    table = page.locator("table:not(:has(table))", has=page.locator(f'th:text-is("{header}")')).first
    table.wait_for()
    return table.inner_text()


def shot(page, name: str) -> None:
    page.wait_for_timeout(800)
    dismiss_popups(page)  # the community dialog may open a while after the page
    page.screenshot(path=str(SCREENSHOTS / f"previews_{name}.png"), full_page=True)


def test_asset_pages_show_previews_and_plots_inline(page, server):
    open_asset(page, server, "pool_history")
    inline_plot(page, "Universe APY")
    inline_plot(page, "Universe TVL")
    shot(page, "pool_history")
    text = inline_table_text(page, "tvl_usd")
    assert "aave-v3" in text and "%" in text and "e+0" not in text and "nan" not in text.lower()
    assert "il7d" not in text  # empty on every shown row: left out
    assert "total value locked in the pool [USD]" in page.inner_text(
        "body"
    )  # the Columns section, with units

    open_asset(page, server, f"{VAULT}/rebalance_weights")
    inline_plot(page, "Target weights")
    inline_plot(page, "Trades")
    shot(page, "rebalance_weights")

    open_asset(page, server, f"{VAULT}/features")
    inline_plot(page, "Feature distributions")
    shot(page, "features")

    open_asset(page, server, f"{VAULT}/fitted_models")
    inline_plot(page, "apy_fwd_")
    shot(page, "fitted_models")
    body = page.inner_text("body")
    assert "traded_model" in body and "naive" in body

    open_asset(page, server, f"{VAULT}/backtest_report")
    inline_plot(page, "Wealth")
    shot(page, "backtest_report")
    text = inline_table_text(page, "role")
    assert "walk_forward" in text and "%" in text and "nan" not in text.lower()
    body = page.inner_text("body")  # the HTML report's path (copied on click) and how to open it
    assert "/backtest_report/default.html" in body and "address bar" in body


def test_a_failed_check_says_what_to_do(page, server):
    open_asset(page, server, f"{VAULT}/rebalance_weights", view="checks")
    page.get_by_text("positions_reconciled").first.click()
    page.get_by_text("top_offenders").first.wait_for()
    shot(page, "check_positions_reconciled")
    body = page.inner_text("body")
    assert "were expected" in body and "order_executions" in body  # the one-sentence reason
    assert "first day decided from real positions" in body  # the demo's expected warning, explained


def test_the_html_report_reads_at_a_glance(page, demo):
    report = demo["lake"] / VAULT / "backtest_report" / "default.html"
    page.set_viewport_size({"width": LAPTOP_WIDTH_PX, "height": 900})
    page.goto(report.as_uri(), wait_until="load")
    head = page.locator("table.headline")
    box = head.bounding_box()
    assert box is not None and box["x"] + box["width"] <= LAPTOP_WIDTH_PX, box  # fits without scrolling
    headers = head.locator("th").all_inner_texts()
    assert headers[:6] == [
        "row",
        "what it is",
        "log growth /yr",
        "invested",
        "excess over bar /yr",
        "excess CI",
    ]
    assert "PBO" in headers and "deflated Sharpe of excess" in headers
    text = page.inner_text("body")
    assert " nan " not in f" {text.lower()} " and "NaN" not in text
    images = page.locator("img")
    assert images.count() >= 8
    assert all(images.nth(i).evaluate("i => i.complete && i.naturalWidth > 0") for i in range(images.count()))
    page.screenshot(path=str(SCREENSHOTS / "previews_report_top.png"))
    page.screenshot(path=str(SCREENSHOTS / "previews_report_full.png"), full_page=True)
