"""Dagster layer: dynamic grid-point partitions, per-grid report partition, HTML in the lake."""

from __future__ import annotations

import re

import pandas as pd
import yaml
from dagster import AssetKey, AssetSpec, DagsterInstance, build_sensor_context, materialize

from midfreq_assets.defs.vault.backtests import (
    GRID_POINTS_PER_RUN,
    build_backtest_assets,
    grid_partitions_name,
)
from midfreq_assets.defs.vault.grid_sensor import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    build_grid_points_sensor,
    register_grid_points,
)
from midfreq_assets.domain.config.vault import load_vault_config
from midfreq_assets.domain.research.plan import first_fit_day
from midfreq_assets.partitions import daily_from, weekly_partitions
from midfreq_resources.io.lake import read_parquet, write_parquet
from midfreq_resources.io.model_io_manager import ModelIOManager
from midfreq_resources.io.parquet_io_manager import ParquetIOManager

VAULT = load_vault_config("configs/vaults/usd_lending.yaml")
daily_partitions = daily_from(VAULT.start_date)
#: the vault's weekly refits (none stored here: every point refits)
FITTED_MODELS = AssetSpec(
    AssetKey([VAULT.name, "fitted_models"]), partitions_def=weekly_partitions(first_fit_day(VAULT))
).with_io_manager_key("model_io_manager")


def backtest_upstream() -> list[AssetSpec]:
    """What the backtest assets read, as source specs on the lake (materialized by the test's own frames)."""
    daily = ("pool_history", "pool_metadata", "pool_lend_borrow", AssetKey([VAULT.name, "adjusted_yields"]))
    return [
        *(
            AssetSpec(k, partitions_def=daily_partitions).with_io_manager_key("parquet_io_manager")
            for k in daily
        ),
        FITTED_MODELS,
    ]


def test_grid_runs_and_report(tmp_path, synthetic_history):
    lake = tmp_path / "lake"
    io = ParquetIOManager(root=str(lake))
    hist = synthetic_history(days=220)  # models from day 60, 90 train days, then 60-day test windows
    meta = hist.assign(project="aave-v3", chain="Ethereum", vaults=[[VAULT.name]] * len(hist))
    adjusted = hist[["date", "pool"]].assign(
        adjusted_apy=hist["apy"] - 0.001,
        underlying_apy=0.0,
        peg_yield=0.0,
        il_annual=-0.001,
        price_return=0.0,
        flag_il_missing=False,
    )
    for day, rows in hist.groupby("date"):
        key = day.strftime("%Y-%m-%d")
        write_parquet(io.partition_path(["pool_history"], key), rows.drop(columns="adjusted_apy"))
        write_parquet(io.partition_path(["pool_metadata"], key), meta[meta["date"] == day])
        write_parquet(
            io.partition_path([VAULT.name, "adjusted_yields"], key), adjusted[adjusted["date"] == day]
        )
    gdir = tmp_path / "grids"
    gdir.mkdir()
    (gdir / "small.yaml").write_text(yaml.safe_dump({"parameters": {"strategy.cost": [0.0005, 0.002]}}))

    assets = build_backtest_assets(VAULT, gdir)
    upstream = backtest_upstream()
    instance = DagsterInstance.ephemeral()
    added = register_grid_points(instance, [VAULT], gdir)
    assert added[VAULT.name] == ["cost-0.0005", "cost-0.002"]
    resources = {"parquet_io_manager": io, "model_io_manager": ModelIOManager(root=str(lake))}
    panel_key, runs_key, report_key = (
        AssetKey([VAULT.name, n]) for n in ("backtest_panel", "backtest_runs", "backtest_report")
    )
    assert materialize(
        [*assets, *upstream], selection=[panel_key], instance=instance, resources=resources
    ).success
    for key in added[VAULT.name]:
        assert materialize(
            [*assets, *upstream],
            selection=[runs_key],
            partition_key=key,
            instance=instance,
            resources=resources,
        ).success
    run_file = lake / VAULT.name / "backtest_runs" / "cost-0.002.parquet"
    assert run_file.exists() and len(read_parquet(run_file)) == 219
    result = materialize(
        [*assets, *upstream],
        selection=[report_key],
        partition_key="small",
        instance=instance,
        resources=resources,
    )
    assert result.success
    table = read_parquet(lake / VAULT.name / "backtest_report" / "small.parquet")
    # the walk-forward leads; every row covers its out-of-sample days; each cost's points face
    # benchmarks paying that cost: the six rules under the limits, and the best trailing pool unconstrained
    assert list(table["kind"]) == ["walk_forward"] + ["grid_point"] * 2 + ["benchmark"] * 14
    assert table["period_start"].nunique() == 1 and table["period_start"].iloc[0] > pd.Timestamp("2024-09-01")
    assert table.loc[1:2, "benchmark_set"].tolist() == ["@cost-0.0005", "@cost-0.002"]
    assert {"equal_weight@cost-0.002", "best_trailing_apy_unconstrained@cost-0.0005"} <= set(table["name"])
    assert table.loc[1, "log_growth"] >= table.loc[2, "log_growth"] - 1e-9  # more cost, no more growth
    assert table["pbo"].iloc[:3].notna().all() and table["pbo"].iloc[3:].isna().all()
    wf = table.iloc[0]
    assert (
        wf["excess_ci_low"] <= wf["excess_vs_benchmark"] <= wf["excess_ci_high"]
        and 0 <= wf["deflated_sharpe"] <= 1
    )
    assert (table["base_rate"] == VAULT.backtest.base_rate).all()
    assert (table["excess_log_growth"] - (table["log_growth"] - table["base_rate"])).abs().max() < 1e-12
    assert (table["il_drag"] > 0).all()  # the -0.1%/yr IL inside adjusted_apy, charged once
    # the bar is a constrained benchmark; the benchmarks are invested (the old projected ones held ~0.25)
    bar = table[table["role"] == "bar: strongest constrained benchmark"]
    assert len(bar) == 1 and "_unconstrained" not in bar["name"].iloc[0]
    assert (table.loc[table["kind"] == "benchmark", "invested_share"] > 0.9).all()
    html = (lake / VAULT.name / "backtest_report" / "small.html").read_text()
    assert (
        html.count("data:image/png;base64,") == 10
    )  # 6 plots (one: the walk-forward's), 4 analysis sections
    assert "Walk-forward: the point chosen" in html and "test log growth" in html  # headers for people
    assert "Tracking error per pool" in html and "mean best available apy" in html and "tracking rmse" in html
    text = re.sub(r'src="data:[^"]*"', "", html)  # the page without its pictures' bytes
    assert "NaN" not in text and ">nan<" not in text
    meta_out = result.get_asset_materialization_events()[0].materialization.metadata
    assert "data:image/png;base64," in meta_out["summary"].value
    assert meta_out["headline"].value.startswith("walk-forward ") and meta_out["pbo_splits"].value == 16
    assert (
        "strongest constrained benchmark" in meta_out["headline"].value
        and "deflated_sharpe_excess" in meta_out
    )
    assert 0 <= meta_out["pbo"].value <= 1 and "cost-0.0005" in str(meta_out["walk_forward_windows"].value)
    # the report's path (the UI copies it on click), no dead file:// link, and how to open it
    assert meta_out["report_html"].value == str(lake / VAULT.name / "backtest_report" / "small.html")
    assert "report_url" not in meta_out and "file://" in meta_out["report_open"].value

    # a new grid value: only the new point is registered (and run) by the sensor
    (gdir / "small.yaml").write_text(yaml.safe_dump({"parameters": {"strategy.cost": [0.0005, 0.002, 0.01]}}))
    sensor = build_grid_points_sensor([VAULT], gdir)
    out = sensor(build_sensor_context(instance=instance))
    assert [r.partition_key for r in out.run_requests] == ["cost-0.01"]
    assert out.dynamic_partitions_requests[0].partition_keys == ["cost-0.01"]
    assert instance.get_dynamic_partitions(grid_partitions_name(VAULT.name)) == ["cost-0.0005", "cost-0.002"]


def test_backfill_runs_several_grid_points_per_run(tmp_path, synthetic_history):
    """BackfillPolicy.multi_run: one run computes a range of grid points; one file per point."""
    lake = tmp_path / "lake"
    io = ParquetIOManager(root=str(lake))
    hist = synthetic_history(days=40)
    meta = hist.assign(project="aave-v3", chain="Ethereum", vaults=[[VAULT.name]] * len(hist))
    from midfreq_assets.domain.backtest import engine as bt

    write_parquet(io.partition_path([VAULT.name, "backtest_panel"], None), bt.vault_panel(hist, meta, VAULT))
    gdir = tmp_path / "grids"
    gdir.mkdir()
    (gdir / "g.yaml").write_text(yaml.safe_dump({"parameters": {"strategy.cost": [0.0, 0.0005, 0.002]}}))
    assets = build_backtest_assets(VAULT, gdir)
    runs_def = next(a for a in assets if a.key == AssetKey([VAULT.name, "backtest_runs"]))
    policy = runs_def.backfill_policy
    assert policy is not None and policy.max_partitions_per_run == GRID_POINTS_PER_RUN
    instance = DagsterInstance.ephemeral()
    keys = register_grid_points(instance, [VAULT], gdir)[VAULT.name]
    upstream = backtest_upstream()
    result = materialize(
        [*assets, *upstream],
        selection=[runs_def.key],
        instance=instance,
        resources={"parquet_io_manager": io, "model_io_manager": ModelIOManager(root=str(lake))},
        tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]},
    )
    assert result.success
    events = result.get_asset_materialization_events()
    assert sorted(e.materialization.partition for e in events) == sorted(keys)
    frames = {k: read_parquet(lake / VAULT.name / "backtest_runs" / f"{k}.parquet") for k in keys}
    for key, frame in frames.items():
        assert len(frame) == 39 and set(frame["point"]) == {key}
    # same numbers as a one-point run
    single = materialize(
        [*assets, *upstream],
        selection=[runs_def.key],
        partition_key=keys[1],
        instance=instance,
        resources={"parquet_io_manager": io, "model_io_manager": ModelIOManager(root=str(lake))},
    )
    assert single.success
    again = read_parquet(lake / VAULT.name / "backtest_runs" / f"{keys[1]}.parquet")
    pd.testing.assert_frame_equal(again, frames[keys[1]])

    # the sensor requests one range run per GRID_POINTS_PER_RUN new points
    many = [round(0.0001 * i, 4) for i in range(1, GRID_POINTS_PER_RUN + 3)]
    (gdir / "g.yaml").write_text(yaml.safe_dump({"parameters": {"strategy.cost": many}}))
    out = build_grid_points_sensor([VAULT], gdir)(build_sensor_context(instance=instance))
    new = out.dynamic_partitions_requests[0].partition_keys
    assert len(new) == len(many) - 1  # 0.0005 exists already
    ranges = [
        (r.tags.get(RANGE_START_TAG), r.tags.get(RANGE_END_TAG), r.partition_key) for r in out.run_requests
    ]
    assert len(ranges) == 2
    assert ranges[0][:2] == (new[0], new[GRID_POINTS_PER_RUN - 1]) and ranges[0][2] is None
    assert ranges[1] == (None, None, new[-1])


def test_a_big_grid_runs_in_a_few_long_runs():
    """1,000 new points: 8 range runs of 125 contiguous points (not 125 runs of 8), every point once."""
    from midfreq_assets.defs.vault.backtests import GRID_RUNS_PER_GRID, grid_chunk_size
    from midfreq_assets.defs.vault.grid_sensor import point_run_requests

    assert grid_chunk_size(16) == GRID_POINTS_PER_RUN and grid_chunk_size(1000) == 125
    new = [f"p{i:04d}" for i in range(1000)]
    runs = point_run_requests(VAULT, new)
    assert len(runs) == GRID_RUNS_PER_GRID
    starts = [new.index(r.tags[RANGE_START_TAG]) for r in runs]
    ends = [new.index(r.tags[RANGE_END_TAG]) for r in runs]
    assert starts == list(range(0, 1000, 125)) and ends == [s + 124 for s in starts]


def test_points_with_the_vaults_own_research_reuse_its_stored_weekly_models(pipeline_env, tmp_path):
    """backtest_runs predicts the points whose research settings are the vault's own with the weekly
    models fitted_models stored (no refit), and the result is the replay's: same weights and wealth.
    Exactly: the stored models were trained on the monthly features partitions, the replay's on the
    features of the whole history (in general equal within the engine's EWM tolerance, 1e-6:
    test_features_per_partition_equal_full_history), and here every number agrees to the last bit. A
    point with another predictor halflife refits."""
    from midfreq_assets.domain.backtest import engine as bt
    from midfreq_assets.domain.backtest.grids import find_points, run_point

    with pipeline_env() as p:
        features, models, _ = p.research
        p.run(p.research, [features], p.first_month, p.last_month)
        p.run(p.research, [models], "2024-06-24", "2024-07-29")  # every refit week of the two months
        gdir = tmp_path / "grids"
        gdir.mkdir()
        (gdir / "g.yaml").write_text(
            yaml.safe_dump(
                {
                    "parameters": {
                        "strategy.cost": [0.0005, 0.002],
                        "models.apy.ewm_predictor.halflife": ["7d", "3d"],
                        # the week's selected model (here the naive baseline), or ridge on the features
                        "backtest.estimator": [None, "ridge"],
                    }
                }
            )
        )
        assets = build_backtest_assets(p.vault, gdir)
        panel_key, runs_key = (AssetKey([p.vault.name, n]) for n in ("backtest_panel", "backtest_runs"))
        keys = register_grid_points(p.instance, [p.vault], gdir)[p.vault.name]
        with_all = [*p.all, *assets]
        assert materialize(
            with_all, selection=[panel_key], resources=p.resources, instance=p.instance
        ).success
        result = materialize(
            with_all,
            selection=[runs_key],
            resources=p.resources,
            instance=p.instance,
            tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]},
        )
        assert result.success
        meta = result.get_asset_materialization_events()[-1].materialization.metadata
        # the four 7d points (the vault's own halflife) on the stored models; the 3d research refitted, once
        # per traded model
        assert meta["points_on_stored_models"].value == 4 and meta["research_refitted"].value == 2
        assert meta["stored_models_note"].value == "6 stored weekly bundles"
        panel = read_parquet(p.lake / p.vault.name / "backtest_panel.parquet")
        bt._PREDICTIONS.clear()  # the replay below refits
        for point in find_points(keys, gdir):
            stored = read_parquet(p.lake / p.vault.name / "backtest_runs" / f"{point.name}.parquet")
            replayed, _ = run_point(panel, p.vault, point)
            assert replayed["invested"].max() > 0.5  # the point trades
            stored = stored[list(replayed.columns)]  # a run's file also has other points' (empty) w__ columns
            pd.testing.assert_frame_equal(stored, replayed, check_exact=True)  # weights, wealth, every column
