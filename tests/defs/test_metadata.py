"""What the UI links: a backtest report opens in one click only over http (browsers refuse file:// links
from the UI's page), so the link is built from MIDFREQ_REPORTS_URL; without it, the path and how to open it."""

from upath import UPath

from midfreq_assets.metadata import report_link
from midfreq_resources.settings import REPORTS_URL_ENV


def test_a_report_is_linked_over_http_when_the_lake_is_served(tmp_path, monkeypatch):
    lake = UPath(tmp_path / "data lake")
    path = lake.joinpath("usd_lending", "backtest_report", "default.html")
    monkeypatch.setenv(REPORTS_URL_ENV, "http://127.0.0.1:8000/")
    links = report_link(path, lake)
    assert links["report_url"].value == "http://127.0.0.1:8000/usd_lending/backtest_report/default.html"
    assert links["report_html"].value == str(path) and "report_open" not in links


def test_without_a_server_the_ui_shows_the_path_and_how_to_open_it(tmp_path, monkeypatch):
    lake = UPath(tmp_path)
    path = lake.joinpath("usd_lending", "backtest_report", "my grid.html")
    monkeypatch.delenv(REPORTS_URL_ENV, raising=False)
    links = report_link(path, lake)
    assert links["report_html"].value == str(path) and not str(path).startswith("file:")
    assert "report_url" not in links
    assert REPORTS_URL_ENV in links["report_open"].value and "address bar" in links["report_open"].value
    monkeypatch.setenv(REPORTS_URL_ENV, "https://reports.example/lake")
    assert report_link(path, lake)["report_url"].value == (
        "https://reports.example/lake/usd_lending/backtest_report/my%20grid.html"
    )
