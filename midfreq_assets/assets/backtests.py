"""Backtests as assets (thin layer over ``domain.backtest`` / ``grids`` / ``metrics`` / ``report``).

Per vault (key prefix = vault name):

- ``<vault>/backtest_panel``: the vault's pool rows over the whole history (all ``pool_history``
  and ``pool_metadata`` partitions), with ``eligible``/``project``/``chain``; read once so that
  every grid point loads one file instead of hundreds of daily partitions;
- ``<vault>/backtest_runs``: one dynamic partition per grid point (``<vault>_grid_points``), the
  point's per-day records and weights; adding a point materializes only that point. A backfill
  runs up to :data:`GRID_POINTS_PER_RUN` points per run (``BackfillPolicy.multi_run``): a 64-point
  grid is 8 runs (in parallel under the run coordinator; one pod each on a cluster) instead of 64,
  each computing its points in one step; the IO manager splits the output by its ``point`` column;
- ``<vault>/backtest_report``: one static partition per ``configs/grids/*.yaml``; one row per point
  (parameters + metrics) plus the benchmarks, and a self-contained HTML report in the lake;
- ``<vault>/top_pools``: historical top-N pools by APY over the last 30 days.

Grid points become partitions through :func:`build_grid_points_sensor` (every tick) or
:func:`register_grid_points` (demo, tests).
"""

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    DagsterInstance,
    DynamicPartitionsDefinition,
    MetadataValue,
    Output,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    StaticPartitionsDefinition,
    asset,
    define_asset_job,
    sensor,
)

from midfreq_assets.domain.backtest import engine as bt
from midfreq_assets.domain.backtest import report
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.backtest.grids import (
    grid_file_names,
    grids_dir,
    load_grid,
    load_grids,
    run_point,
    validate_grid,
)
from midfreq_assets.domain.backtest.metrics import METRIC_COLUMNS, backtest_metrics, metrics_table
from midfreq_assets.metadata import markdown_table
from midfreq_resources.io.lake import read_parquet, write_bytes_atomic

TOP_N = 10
#: Grid points per run when backfilling ``backtest_runs`` (and per sensor run request). Each run
#: costs seconds of Dagster overhead (process start, code load, storage); a point ~0.4 s of CPU.
GRID_POINTS_PER_RUN = 8
#: Run tags of a partition-range run (what a multi-run backfill sets on each run).
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
TOP_WINDOW_DAYS = 30


def grid_partitions_name(vault_name: str) -> str:
    return f"{vault_name}_grid_points"


def grid_partitions(vault_name: str) -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=grid_partitions_name(vault_name))


def grid_point_names(vault: VaultConfig, directory: Path | None = None) -> list[str]:
    """Every point of every grid file, validated against the vault (deduplicated, sorted)."""
    names = {p.name for g in load_grids(directory).values() for p in validate_grid(g, vault)}
    return sorted(names)


def register_grid_points(instance: DagsterInstance, vaults: Sequence[VaultConfig],
                         directory: Path | None = None) -> dict[str, list[str]]:
    """Add the missing grid-point partitions of each vault; returns the keys added per vault."""
    added = {}
    for vault in vaults:
        name = grid_partitions_name(vault.name)
        have = set(instance.get_dynamic_partitions(name))
        new = [k for k in grid_point_names(vault, directory) if k not in have]
        if new:
            instance.add_dynamic_partitions(name, new)
        added[vault.name] = new
    return added


def _read_lake(context: AssetExecutionContext, key: list[str], partition: str) -> pd.DataFrame | None:
    io = context.resources.parquet_io_manager
    path = io.partition_path(key, partition)
    return read_parquet(path) if path.exists() else None


def build_backtest_assets(vault: VaultConfig, grids_directory: Path | None = None) -> list[AssetsDefinition]:
    """``[backtest_panel, backtest_runs, backtest_report, top_pools]`` of one vault."""
    prefix = vault.name
    gdir = Path(grids_directory) if grids_directory else grids_dir()
    points_def = grid_partitions(vault.name)
    grid_files = StaticPartitionsDefinition(grid_file_names(gdir) or ["default"])
    all_days = {"allow_missing_partitions": True}

    @asset(
        key=AssetKey([prefix, "backtest_panel"]),
        ins={
            "pool_history": AssetIn(key=AssetKey("pool_history"), partition_mapping=AllPartitionMapping(),
                                    metadata=all_days),
            "pool_metadata": AssetIn(key=AssetKey("pool_metadata"), partition_mapping=AllPartitionMapping(),
                                     metadata=all_days),
            "adjusted_yields": AssetIn(key=AssetKey([prefix, "adjusted_yields"]),
                                       partition_mapping=AllPartitionMapping(),
                                       metadata={**all_days, "optional": True}),
        },
        io_manager_key="parquet_io_manager",
        group_name=f"{prefix}_backtests",
        kinds={"python", "parquet"},
        description=f"Vault {vault.name}: pool rows over the whole history with eligible (in the universe "
        "that day), project and chain. The input every backtest of the vault reads.",
    )
    def backtest_panel(context: AssetExecutionContext, pool_history: pd.DataFrame, pool_metadata: pd.DataFrame,
                       adjusted_yields: pd.DataFrame):
        panel = bt.vault_panel(bt.with_adjusted_apy(pool_history, adjusted_yields), pool_metadata, vault)
        return Output(panel, metadata={
            "dagster/row_count": len(panel),
            "pools": int(panel["pool"].nunique()),
            "first_day": str(panel["date"].min().date()) if len(panel) else "",
            "last_day": str(panel["date"].max().date()) if len(panel) else "",
        })

    @asset(
        key=AssetKey([prefix, "backtest_runs"]),
        ins={"panel": AssetIn(key=AssetKey([prefix, "backtest_panel"]))},
        partitions_def=points_def,
        backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=GRID_POINTS_PER_RUN),
        metadata={"partition_column": "point"},  # ParquetIOManager: one file per point of a multi-point run
        io_manager_key="parquet_io_manager",
        group_name=f"{prefix}_backtests",
        kinds={"python", "parquet"},
        description=f"Vault {vault.name}: one backtest per grid point (partition = point name): per-day "
        "wealth, costs, gas, predicted/realized APY, status and w__<pool> weights. A backfill runs up to "
        f"{GRID_POINTS_PER_RUN} points per run.",
    )
    def backtest_runs(context: AssetExecutionContext, panel: pd.DataFrame):
        keys = list(context.partition_keys)
        frames, rows = [], []
        for key in keys:
            point = _point(key, gdir)
            frame, metrics = run_point(panel, vault, point)
            frames.append(frame)
            rows.append({"point": key, **{k: float(v) for k, v in metrics.items()}})
        if len(keys) == 1:
            return Output(frames[0], metadata={
                "dagster/row_count": len(frames[0]),
                "params": MetadataValue.json({k: str(v) for k, v in point.overrides}),
                **{k: v for k, v in rows[0].items() if k != "point"},
            })
        table = pd.DataFrame(rows)
        return Output(pd.concat(frames, ignore_index=True), metadata={
            "dagster/row_count": sum(len(f) for f in frames),
            "points": len(keys),
            "metrics": markdown_table(table),
        })

    @asset(
        key=AssetKey([prefix, "backtest_report"]),
        ins={"panel": AssetIn(key=AssetKey([prefix, "backtest_panel"]))},
        deps=[AssetDep(backtest_runs, partition_mapping=AllPartitionMapping())],
        partitions_def=grid_files,
        io_manager_key="parquet_io_manager",
        required_resource_keys={"parquet_io_manager"},
        group_name=f"{prefix}_backtests",
        kinds={"python", "parquet", "html"},
        description=f"Vault {vault.name}: one row per grid point of the grid file (parameters + metrics) plus "
        "benchmarks (equal weight, best trailing APY, TVL-weighted); HTML report written next to it.",
    )
    def backtest_report(context: AssetExecutionContext, panel: pd.DataFrame):
        grid = load_grid(gdir / f"{context.partition_key}.yaml")
        points = validate_grid(grid, vault)
        results, rows, missing = {}, [], []
        for p in points:
            frame = _read_lake(context, [prefix, "backtest_runs"], p.name)
            if frame is None:
                missing.append(p.name)
                continue
            res = bt.result_from_frame(frame, p.name, float(frame["initial_wealth"].iloc[0]))
            results[p.name] = res
            rows.append({"name": p.name, "kind": "grid_point", **{k: v for k, v in p.overrides},
                         **backtest_metrics(res)})
        if missing:
            context.log.warning(f"{len(missing)} grid point(s) not materialized yet: {missing[:5]}")
        if not results:
            raise ValueError(f"no backtest_runs partition of grid {grid.name} is materialized")
        inputs = bt.inputs_from_panel(panel, vault)
        benches = bt.run_benchmarks(inputs, vault.strategy)
        bench_rows = metrics_table(benches).assign(kind="benchmark")
        table = pd.concat([pd.DataFrame(rows), bench_rows], ignore_index=True)
        table.insert(0, "grid", grid.name)
        table = table[["grid", "name", "kind", *grid.parameters, *METRIC_COLUMNS]]
        html_doc, headline_png = _html(vault, grid.name, table, list(grid.parameters), results, benches, panel)
        io = context.resources.parquet_io_manager
        html_path = io.lake.joinpath(prefix, "backtest_report", f"{grid.name}.html")
        write_bytes_atomic(html_path, html_doc.encode("utf-8"))
        head = table[["name", "kind", *[c for c in report.HEADLINE_COLUMNS if c in table and c != "name"]]]
        best = table[table["kind"] == "grid_point"].sort_values("log_growth", ascending=False).iloc[0]
        md = head.sort_values("log_growth", ascending=False).to_markdown(index=False, floatfmt=".4g")
        return Output(
            table.astype({c: str for c in grid.parameters}),
            metadata={
                "dagster/row_count": len(table),
                "headline": f"best {best['name']}: log growth {best['log_growth']:.4f}/yr",
                "report_html": MetadataValue.path(str(html_path)),
                "missing_points": len(missing),
                "summary": MetadataValue.md(md + f"\n\n![wealth](data:image/png;base64,{headline_png})"),
            },
        )

    @asset(
        key=AssetKey([prefix, "top_pools"]),
        ins={"panel": AssetIn(key=AssetKey([prefix, "backtest_panel"]))},
        io_manager_key="parquet_io_manager",
        group_name=f"{prefix}_backtests",
        kinds={"python", "parquet"},
        description=f"Vault {vault.name}: top {TOP_N} eligible pools by mean APY over the last {TOP_WINDOW_DAYS} days.",
    )
    def top_pools(context: AssetExecutionContext, panel: pd.DataFrame):
        column = "adjusted_apy" if "adjusted_apy" in panel else "apy"
        table = bt.top_pools(panel, TOP_N, TOP_WINDOW_DAYS, column)
        return Output(table, metadata={"dagster/row_count": len(table), "table": markdown_table(table)})

    return [backtest_panel, backtest_runs, backtest_report, top_pools]


def _point(name: str, directory: Path):
    from midfreq_assets.domain.backtest.grids import find_point

    return find_point(name, directory)


def _html(vault: VaultConfig, grid: str, table: pd.DataFrame, params: list[str],
          results: dict[str, bt.BacktestResult], benches: dict[str, bt.BacktestResult],
          panel: pd.DataFrame) -> tuple[str, str]:
    wealth = {**{k: r.wealth for k, r in results.items()}, **{k: r.wealth for k, r in benches.items()}}
    pts = table[table["kind"] == "grid_point"].sort_values("log_growth", ascending=False)
    best = str(pts["name"].iloc[0])
    highlight = [best, *benches]
    wealth_png = report.plot_wealth(wealth, highlight)
    sections = [
        ("Wealth: all grid points (thin), best point and benchmarks", wealth_png),
        ("Drawdowns", report.plot_drawdowns(wealth, highlight)),
        (f"Weights of the best point ({best})", report.plot_weights(results[best].weight_panel(),
                                                                          labels=bt.pool_labels(panel))),
        ("Sensitivity of metrics to each hyperparameter",
         report.plot_sensitivity(pts, params, ["log_growth", "sharpe", "cost_drag", "turnover"])),
        (f"Predicted vs realized portfolio APY ({best})", report.plot_predicted_vs_realized(results[best].steps)),
    ]
    notes = [f"Vault {vault.name}, grid {grid}: {len(pts)} points, {panel['pool'].nunique()} pools, "
             f"{pd.to_datetime(panel['date']).min().date()}..{pd.to_datetime(panel['date']).max().date()}.",
             "Yields are fractions per year; metrics per year. Benchmarks pay the same cost and gas."]
    return report.html_report(f"{vault.name} backtest report: {grid}", table, sections, notes), wealth_png


def build_backtest_jobs(vault: VaultConfig):
    """``<vault>_backtest_inputs`` (panel, top pools), ``<vault>_backtest_runs`` (grid points) and
    ``<vault>_backtest_report`` (one grid file)."""
    inputs = define_asset_job(f"{vault.name}_backtest_inputs",
                              selection=[AssetKey([vault.name, "backtest_panel"]), AssetKey([vault.name, "top_pools"])],
                              description="The vault's backtest panel over the whole history, and its top pools.")
    runs = define_asset_job(f"{vault.name}_backtest_runs", selection=[AssetKey([vault.name, "backtest_runs"])],
                            partitions_def=grid_partitions(vault.name),
                            description="Backtest grid points of the vault (one partition per point).")
    rep = define_asset_job(f"{vault.name}_backtest_report",
                           selection=[AssetKey([vault.name, "backtest_report"])],
                           description="Report of one grid file (partition = grid file name).")
    return [inputs, runs, rep]


def build_grid_points_sensor(vaults: Sequence[VaultConfig], directory: Path | None = None,
                             minimum_interval_seconds: int = 60) -> SensorDefinition:
    """Registers every grid file's points as partitions of each vault's ``backtest_runs`` and
    requests runs for the new points only (existing points are not recomputed), up to
    :data:`GRID_POINTS_PER_RUN` consecutive new points per run (a partition-range run, as a backfill)."""
    vaults = list(vaults)

    @sensor(
        name="grid_points_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        asset_selection=[AssetKey([v.name, "backtest_runs"]) for v in vaults],
        description="Adds grid points of configs/grids/*.yaml as backtest_runs partitions and runs the new ones.",
    )
    def grid_points_sensor(context: SensorEvaluationContext):
        requests, runs = [], []
        for vault in vaults:
            pdef = grid_partitions(vault.name)
            have = set(context.instance.get_dynamic_partitions(pdef.name))
            new = [k for k in grid_point_names(vault, directory) if k not in have]
            if new:
                requests.append(pdef.build_add_request(new))
                # new keys are appended in this order, so each chunk is a contiguous key range
                for i in range(0, len(new), GRID_POINTS_PER_RUN):
                    chunk = new[i : i + GRID_POINTS_PER_RUN]
                    selection = [AssetKey([vault.name, "backtest_runs"])]
                    if len(chunk) == 1:
                        runs.append(RunRequest(run_key=f"{vault.name}:{chunk[0]}", partition_key=chunk[0],
                                               asset_selection=selection))
                    else:
                        runs.append(RunRequest(
                            run_key=f"{vault.name}:{chunk[0]}..{chunk[-1]}", asset_selection=selection,
                            tags={RANGE_START_TAG: chunk[0], RANGE_END_TAG: chunk[-1]},
                        ))
        return SensorResult(run_requests=runs, dynamic_partitions_requests=requests)

    return grid_points_sensor


def point_params(frame: pd.DataFrame) -> dict[str, object]:
    """Overrides stored with a backtest_runs partition."""
    return json.loads(frame["params"].iloc[0]) if len(frame) else {}
