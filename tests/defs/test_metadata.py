"""What the UI shows of a run. Links: a backtest report opens in one click only over http (browsers refuse file:// links
from the UI's page), so the link is built from MIDFREQ_REPORTS_URL; without it, the path and how to open it."""

from upath import UPath

from midfreq_assets.metadata import report_link, tidy_numbers
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


def test_partition_figures_print_without_float_noise():
    """A day's figures read as numbers (the UI prints a float as stored); ints, text and NaN stay as they are."""
    tidy = tidy_numbers(
        {
            "invested_share": 0.9809450000000001,
            "wealth": 1005222.4567891234,
            "n": 3,
            "s": "ok",
            "x": float("nan"),
        }
    )
    assert tidy["invested_share"] == 0.980945 and repr(tidy["invested_share"]) == "0.980945"
    assert tidy["wealth"] == 1005222.457
    assert tidy["n"] == 3 and isinstance(tidy["n"], int) and tidy["s"] == "ok" and tidy["x"] != tidy["x"]
