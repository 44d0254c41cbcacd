"""`make demo`'s stages name real jobs, ranges inside the recording, and grids that exist."""

from __future__ import annotations

import pandas as pd

from midfreq_assets.definitions import defs
from midfreq_assets.demo import load_stages
from midfreq_assets.domain.backtest.grids import load_grid, validate_grid
from midfreq_assets.project import current_project


def test_every_stage_is_a_job_of_the_code_location():
    root, stages = load_stages()
    assert (root / "defillama/yields/pools.json").exists()
    assert stages, "the demo runs nothing"
    for stage in stages:
        job = defs.resolve_job_def(stage.job)
        assert job.name == stage.job
        if stage.start:
            assert pd.Timestamp(stage.start) <= pd.Timestamp(stage.end)
            assert job.partitions_def is not None
        if stage.grid:
            project = current_project()
            assert validate_grid(load_grid(project.grids_dir / f"{stage.grid}.yaml"), project.vault(stage.vault))


def test_demo_covers_the_whole_lineage():
    _, stages = load_stages()
    jobs = {s.job for s in stages}
    selected = set()
    for name in jobs:
        job = defs.resolve_job_def(name)
        selected |= {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    expected = {"pool_history", "pool_metadata", "token_prices", "binance_klines", "usd_lending/adjusted_yields",
                "usd_lending/features", "usd_lending/fitted_models", "usd_lending/predictions",
                "usd_lending/rebalance_weights", "usd_lending/backtest_runs", "usd_lending/backtest_report",
                "usd_lending/top_pools", "price_research/1h/signal_report", "price_research/1d/signal_report",
                "pool_rankings", "binance_premium_index_klines", "binance_funding_rates", "usd_curated/top_pools",
                "usd_curated/backtest_runs", "usd_curated/backtest_report"}
    assert expected <= selected, expected - selected
