"""`midfreq pipeline`'s plan: jobs of the code location chosen by their metadata, ordered by the asset
graph (never a hand-written list of needs), ranges derived from the corpus, every vault's whole lineage."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from midfreq_assets import stages as rules
from midfreq_assets.definitions import defs
from midfreq_assets.pipeline import RANGE_END_TAG, RANGE_START_TAG, DataRange, plan_stages
from midfreq_assets.project import current_project
from midfreq_resources.replay.coverage import klines_coverage, yields_coverage

REPO = Path(__file__).parents[2]
RECORDED = REPO / "recorded"


@pytest.fixture(scope="module")
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


def recorded_plan(instance, grids=("default",), start=None, end=None):
    project = current_project()
    y = yields_coverage(RECORDED)
    b = project.binance
    k = klines_coverage(RECORDED, b.market, b.symbols, b.intervals)
    data = DataRange((start or y.first, end or y.last), k, (start, end) if start or end else None)
    return project, plan_stages(defs, project, data, list(grids), instance)


def spans(stage) -> list[tuple[str, str]]:
    return [
        (r["tags"][RANGE_START_TAG], r["tags"][RANGE_END_TAG])
        if "tags" in r
        else (r.get("partition_key"),) * 2
        for r in stage.runs
    ]


def test_ranges_come_from_the_corpus(instance):
    y = yields_coverage(RECORDED)
    assert (y.first, y.last, y.charts) == (dt.date(2024, 6, 6), dt.date(2025, 6, 5), 55)
    project = current_project()
    b = project.binance
    k = klines_coverage(RECORDED, b.market, b.symbols, b.intervals)
    assert k.segments(b.start_date) == [
        (dt.date(2023, 2, 1), dt.date(2023, 3, 31)),
        (dt.date(2024, 10, 1), dt.date(2025, 2, 20)),
    ]
    assert k.intervals_in(dt.date(2023, 2, 1), dt.date(2023, 3, 31)) == ["1h"]
    _, plan = recorded_plan(instance)
    by_name = {s.name: s for s in plan.stages}
    assert spans(by_name["nightly_refresh"]) == [("2024-06-06", "2025-06-05")]
    assert spans(by_name["usd_lending_decisions"]) == [("2024-06-06", "2025-06-05")]  # daily decisions
    assert spans(by_name["usd_lending_features"]) == [("2024-06", "2025-06")]  # monthly research
    assert spans(by_name["usd_lending_predictions"]) == [("2024-06", "2025-06")]
    weeks = spans(by_name["usd_lending_fitted_models"])[0]
    assert dt.date.fromisoformat(weeks[0]).weekday() == 0 and weeks[1] == "2025-06-02"
    # the live loop: usd_lending's real positions of the last recorded day, read before the decisions
    assert spans(by_name["usd_lending_positions"]) == [("2025-06-05", "2025-06-05")]
    assert spans(by_name["usd_lending_orders"]) == [("2025-06-05", "2025-06-05")]
    names = [s.name for s in plan.stages]
    assert (
        names.index("usd_lending_positions")
        < names.index("usd_lending_decisions")
        < names.index("usd_lending_orders")
    )
    assert "eth_staking_positions" not in by_name
    assert spans(by_name["eth_staking_orders"]) == [("2025-06-05", "2025-06-05")]  # dry run of the last day
    # Binance: per segment; a price job runs only on the segments of its interval
    assert spans(by_name["binance_klines_refresh"]) == [
        ("2023-02-01", "2023-03-31"),
        ("2024-10-01", "2025-02-20"),
    ]
    assert (
        len(by_name["price_research_1h_fitted_models"].runs) == 1
    )  # the 1h bars are in the first segment only


def test_the_order_is_the_asset_graphs(instance):
    """Every stage runs after the stages materializing its assets' parents (derived, not written down)."""
    _, plan = recorded_plan(instance)
    graph = defs.resolve_asset_graph()
    position = {}
    for i, stage in enumerate(plan.stages):
        for key in stage.assets:
            position.setdefault(key, i)
    for i, stage in enumerate(plan.stages):
        for key in stage.assets:
            for parent in graph.get(key).parent_keys:
                if parent in position and parent not in stage.assets:
                    assert position[parent] < i, (stage.name, key.to_user_string(), parent.to_user_string())
    for stage in plan.stages:  # every stage is a job of the code location with a pipeline rule
        job = defs.resolve_job_def(stage.job)
        assert (
            job.metadata[rules.PLAN].value == stage.rule
            if hasattr(job.metadata[rules.PLAN], "value")
            else True
        )


def test_every_vault_gets_the_whole_lineage(instance):
    project, plan = recorded_plan(instance)
    selected = {k.to_user_string() for s in plan.stages for k in s.assets}
    expected = {
        "pool_history",
        "pool_metadata",
        "universe_exclusions",
        "pool_rankings",
        "token_prices",
        "binance_klines",
        "binance_premium_index_klines",
        "binance_funding_rates",
        "price_research/1h/signal_report",
        "price_research/1d/signal_report",
    }
    for vault in project.vaults:
        expected |= {
            f"{vault}/{a}"
            for a in (
                "adjusted_yields",
                "features",
                "fitted_models",
                "predictions",
                "rebalance_weights",
                "backtest_panel",
                "backtest_runs",
                "backtest_report",
                "top_pools",
                "trade_orders",
                "order_executions",
            )
        }
    expected.add("usd_lending/vault_positions")
    assert expected <= selected, expected - selected
    assert not any("intraday" in k for k in selected)  # the hourly re-read is for schedules, not the pipeline
    assert {"btc_lending", "eth_staking", "usd_lending", "usd_curated"} <= set(project.vaults)
    grid_runs = next(s for s in plan.stages if s.name == "usd_lending_backtest_runs").runs
    assert len(grid_runs) <= 3  # 16 points, a few points per run


def test_the_nightly_decision_predicts_and_earns_adjusted_yields():
    graph = defs.resolve_asset_graph()
    for vault in current_project().vaults:
        deps = {
            k: {p.to_user_string() for p in graph.get(AssetKey([vault, k])).parent_keys}
            for k in ("features", "predictions", "rebalance_weights")
        }
        assert f"{vault}/adjusted_yields" in deps["features"]
        assert f"{vault}/features" in deps["predictions"]
        assert {f"{vault}/predictions", f"{vault}/adjusted_yields"} <= deps["rebalance_weights"]


def test_a_corpus_without_klines_or_a_late_vault_is_reported(tmp_path, instance):
    corpus = tmp_path / "corpus"
    shutil.copytree(RECORDED / "defillama" / "yields", corpus / "defillama" / "yields")
    project = current_project()
    b = project.binance
    empty = klines_coverage(corpus, b.market, b.symbols, b.intervals)
    y = yields_coverage(corpus)
    plan = plan_stages(
        defs, project, DataRange((y.first, dt.date(2024, 8, 1)), empty), ["default", "nope"], instance
    )
    assert not [s for s in plan.stages if s.job.startswith(("binance", "price_research"))]
    assert any("no Binance klines of BTCUSDT" in n for n in plan.notes)
    assert any("grid 'nope'" in n for n in plan.notes)
    assert any("usd_lending: positions.live_from 2025-06-05 is after the data ends" in n for n in plan.notes)
    assert "usd_lending_positions" not in {s.name for s in plan.stages}
    assert "usd_lending_decisions" in {s.name for s in plan.stages}  # simulated on every day
    assert {spans(s)[-1][1] for s in plan.stages if s.rule in (rules.DAYS, rules.ORDER_DAYS)} == {
        "2024-08-01"
    }
    (corpus / "defillama" / "yields" / "chart" / "broken.json").write_text("{not json")
    assert yields_coverage(corpus).unreadable == ("broken.json",)
    (corpus / "defillama" / "yields" / "chart" / "broken.json").write_text(json.dumps({"data": []}))
    assert yields_coverage(corpus).charts == 55


def test_cli_refuses_what_it_cannot_plan(tmp_path, capsys):
    from midfreq_assets.cli import main

    assert main(["pipeline", "--start", "2024-06-06"]) == 2
    assert "give --start and --end" in capsys.readouterr().out
    assert main(["pipeline", "--corpus", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().out
    assert main(["pipeline", "--corpus", str(RECORDED), "--start", "2025-01-02", "--end", "2025-01-01"]) == 2
    assert "is after --end" in capsys.readouterr().out


def test_a_start_date_clips_every_range(instance):
    start = dt.date(2024, 12, 1)
    _, plan = recorded_plan(instance, start=start)
    firsts = [spans(s)[0][0] for s in plan.stages if s.rule in (rules.DAYS, rules.MONTHS)]
    assert min(firsts) == "2024-12" and "2024-12-01" in firsts
    klines = next(s for s in plan.stages if s.job == "binance_klines_refresh")
    assert spans(klines) == [("2024-12-01", "2025-02-20")]


def test_a_stage_reports_its_own_peak_memory():
    """Each stage's peak RSS is the process's high-water mark since the stage began (Linux VmHWM reset),
    not the largest of every stage a worker ran before."""
    import numpy as np

    from midfreq_assets.pipeline import _peak_rss_mb, _reset_peak_rss

    if not _reset_peak_rss():
        pytest.skip("no /proc/self/clear_refs here")
    big = np.ones(40_000_000)  # 320 MB touched
    before = _peak_rss_mb()
    del big
    assert _reset_peak_rss()
    after = _peak_rss_mb()
    assert before is not None and after is not None
    assert before - after > 250
