"""`midfreq pipeline`'s plan: ranges derived from the corpus, every vault's whole lineage, real jobs,
and the graph the nightly decision follows (adjusted_yields -> features -> ... -> rebalance_weights)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

from dagster import AssetKey

from midfreq_assets.definitions import defs
from midfreq_assets.pipeline import plan_stages
from midfreq_assets.project import current_project
from midfreq_resources.replay.coverage import klines_coverage, yields_coverage

REPO = Path(__file__).parents[2]
RECORDED = REPO / "recorded"


def recorded_plan(grids=("default",)):
    project = current_project()
    y = yields_coverage(RECORDED)
    b = project.binance
    return project, plan_stages(project, (y.first, y.last), klines_coverage(RECORDED, b.market, b.symbols, b.intervals),
                                list(grids))


def test_ranges_come_from_the_corpus():
    y = yields_coverage(RECORDED)
    assert (y.first, y.last, y.charts) == (dt.date(2024, 6, 6), dt.date(2025, 6, 5), 55)
    project = current_project()
    b = project.binance
    k = klines_coverage(RECORDED, b.market, b.symbols, b.intervals)
    assert k.segments(b.start_date) == [(dt.date(2023, 2, 1), dt.date(2023, 3, 31)),
                                        (dt.date(2024, 10, 1), dt.date(2025, 2, 20))]
    assert k.intervals_in(dt.date(2023, 2, 1), dt.date(2023, 3, 31)) == ["1h"]
    _, plan = recorded_plan()
    by_name = {s.name: s for s in plan.stages}
    assert (by_name["defillama"].start, by_name["defillama"].end) == (y.first, y.last)
    assert by_name["usd_lending_decisions"].start == dt.date(2024, 6, 6)
    # the live loop: usd_lending's real positions of the last recorded day, read before the decisions
    live = by_name["usd_lending_positions"]
    assert (live.start, live.end) == (dt.date(2025, 6, 5), y.last)
    assert "usd_lending_positions" in by_name["usd_lending_decisions"].needs
    orders = by_name["usd_lending_orders"]
    assert (orders.start, orders.end, orders.needs) == (y.last, y.last, ("usd_lending_decisions",))
    names = [s.name for s in plan.stages]
    assert names.index("usd_lending_positions") < names.index("usd_lending_decisions") < names.index(
        "usd_lending_orders")
    assert "eth_staking_positions" not in by_name and by_name["eth_staking_orders"].start == y.last  # dry run


def test_every_stage_is_a_job_and_every_vault_gets_the_whole_lineage():
    project, plan = recorded_plan()
    names = {s.name for s in plan.stages}
    for stage in plan.stages:
        job = defs.resolve_job_def(stage.job)
        assert job.name == stage.job
        assert set(stage.needs) <= names, stage
        if stage.start:
            assert job.partitions_def is not None and stage.start <= stage.end
    selected = set()
    for stage in plan.stages:
        job = defs.resolve_job_def(stage.job)
        keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
        selected |= {a for a in stage.assets} if stage.assets else keys
    expected = {"pool_history", "pool_metadata", "universe_exclusions", "pool_rankings", "token_prices",
                "binance_klines", "binance_premium_index_klines", "binance_funding_rates",
                "price_research/1h/signal_report", "price_research/1d/signal_report"}
    for vault in project.vaults:
        expected |= {f"{vault}/{a}" for a in ("adjusted_yields", "features", "fitted_models", "predictions",
                                              "rebalance_weights", "backtest_panel", "backtest_runs",
                                              "backtest_report", "top_pools", "trade_orders", "order_executions")}
    expected.add("usd_lending/vault_positions")
    assert expected <= selected, expected - selected
    assert {"btc_lending", "eth_staking", "usd_lending", "usd_curated"} <= set(project.vaults)


def test_the_nightly_decision_predicts_and_earns_adjusted_yields():
    graph = defs.resolve_asset_graph()
    for vault in current_project().vaults:
        deps = {k: {p.to_user_string() for p in graph.get(AssetKey([vault, k])).parent_keys}
                for k in ("features", "predictions", "rebalance_weights")}
        assert f"{vault}/adjusted_yields" in deps["features"]
        assert f"{vault}/features" in deps["predictions"]
        assert {f"{vault}/predictions", f"{vault}/adjusted_yields"} <= deps["rebalance_weights"]


def test_a_corpus_without_klines_or_a_late_vault_is_reported(tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(RECORDED / "defillama" / "yields", corpus / "defillama" / "yields")
    project, _ = recorded_plan()
    b = project.binance
    empty = klines_coverage(corpus, b.market, b.symbols, b.intervals)
    y = yields_coverage(corpus)
    plan = plan_stages(project, (y.first, dt.date(2024, 8, 1)), empty, ["default", "nope"])
    assert not [s for s in plan.stages if s.job.startswith(("binance", "price_research"))]
    assert any("no Binance klines of BTCUSDT" in n for n in plan.notes)
    assert any("grid 'nope'" in n for n in plan.notes)
    assert any("usd_lending: positions.live_from 2025-06-05 is after the data ends" in n for n in plan.notes)
    assert {s.end for s in plan.stages if s.end} == {dt.date(2024, 8, 1)}
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


def test_a_start_date_clips_every_range():
    project = current_project()
    y = yields_coverage(RECORDED)
    b = project.binance
    k = klines_coverage(RECORDED, b.market, b.symbols, b.intervals)
    start = dt.date(2024, 12, 1)
    plan = plan_stages(project, (start, y.last), k, ["default"], (start, None))
    assert min(s.start for s in plan.stages if s.start) == start
    assert [(s.start, s.end) for s in plan.stages if s.job == "binance_klines_refresh"] == [
        (start, dt.date(2025, 2, 20))]
