"""Backtests of one vault: ``backtest_panel``, ``backtest_runs`` (grid points), ``backtest_report``.

- ``<vault>/backtest_panel``: the vault's pool rows over the whole history (all ``pool_history``
  and ``pool_metadata`` partitions), read once so every grid point loads one file;
- ``<vault>/backtest_runs``: one dynamic partition per grid point; a backfill runs up to
  :data:`GRID_POINTS_PER_RUN` points per run (``BackfillPolicy.multi_run``), each computing its
  points in one step; the IO manager splits the output by its ``point`` column;
- ``<vault>/backtest_report``: one static partition per ``configs/grids/*.yaml``: one row per point
  (parameters + metrics) plus the benchmarks, run under each point's own constraints and costs
  (and unconstrained, named ``*_unconstrained``), and a self-contained HTML report in the lake.

(``<vault>/top_pools``, in the same group and job: ``defs/vault/top_pools.py``.)
"""

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
    DynamicPartitionsDefinition,
    MetadataValue,
    Output,
    StaticPartitionsDefinition,
    asset,
    define_asset_job,
)

from midfreq_assets.domain.backtest import engine as bt
from midfreq_assets.domain.backtest import report
from midfreq_assets.domain.backtest.benchmarks import benchmark_sets, run_benchmark_sets
from midfreq_assets.domain.backtest.grids import (
    apply_overrides,
    find_point,
    grid_file_names,
    load_grid,
    point_result,
    run_point,
    validate_grid,
)
from midfreq_assets.domain.backtest.metrics import METRIC_COLUMNS, backtest_metrics
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.metadata import markdown_table
from midfreq_resources.io.lake import read_parquet, write_bytes_atomic

#: Grid points per run when backfilling ``backtest_runs`` (and per sensor run request). Each run
#: costs seconds of Dagster overhead (process start, code load, storage); a point ~0.4 s of CPU.
GRID_POINTS_PER_RUN = 8


def grid_partitions_name(vault_name: str) -> str:
    return f"{vault_name}_grid_points"


def grid_partitions(vault_name: str) -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=grid_partitions_name(vault_name))


def build_backtest_assets(vault: VaultConfig, grids_directory: Path) -> list[AssetsDefinition]:
    """``[backtest_panel, backtest_runs, backtest_report]`` of one vault."""
    prefix = vault.name
    gdir = Path(grids_directory)
    grid_files = StaticPartitionsDefinition(grid_file_names(gdir) or ["default"])
    all_days = {"allow_missing_partitions": True}
    group = f"{prefix}_backtests"

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
        group_name=group,
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
        partitions_def=grid_partitions(vault.name),
        backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=GRID_POINTS_PER_RUN),
        metadata={"partition_column": "point"},  # ParquetIOManager: one file per point of a multi-point run
        io_manager_key="parquet_io_manager",
        group_name=group,
        kinds={"python", "parquet"},
        description=f"Vault {vault.name}: one backtest per grid point (partition = point name): per-day "
        "wealth, costs, gas, predicted/realized APY, status and w__<pool> weights. A backfill runs up to "
        f"{GRID_POINTS_PER_RUN} points per run.",
    )
    def backtest_runs(context: AssetExecutionContext, panel: pd.DataFrame):
        keys = list(context.partition_keys)
        frames, rows = [], []
        for key in keys:
            point = find_point(key, gdir)
            frame, metrics = run_point(panel, vault, point)
            frames.append(frame)
            rows.append({"point": key, **{k: float(v) for k, v in metrics.items()}})
        if len(keys) == 1:
            return Output(frames[0], metadata={
                "dagster/row_count": len(frames[0]),
                "params": MetadataValue.json({k: str(v) for k, v in point.overrides}),
                **{k: v for k, v in rows[0].items() if k != "point"},
            })
        return Output(pd.concat(frames, ignore_index=True), metadata={
            "dagster/row_count": sum(len(f) for f in frames),
            "points": len(keys),
            "metrics": markdown_table(pd.DataFrame(rows)),
        })

    @asset(
        key=AssetKey([prefix, "backtest_report"]),
        ins={"panel": AssetIn(key=AssetKey([prefix, "backtest_panel"]))},
        deps=[AssetDep(backtest_runs, partition_mapping=AllPartitionMapping())],
        partitions_def=grid_files,
        io_manager_key="parquet_io_manager",
        required_resource_keys={"parquet_io_manager"},
        group_name=group,
        kinds={"python", "parquet", "html"},
        description=f"Vault {vault.name}: one row per grid point of the grid file (parameters + metrics, ratios on "
        "returns in excess of backtest.base_rate) plus benchmarks (equal weight, best trailing APY, TVL-weighted) "
        "under each point's constraints and costs, and their *_unconstrained variants; HTML report next to it.",
    )
    def backtest_report(context: AssetExecutionContext, panel: pd.DataFrame):
        io = context.resources.parquet_io_manager
        grid = load_grid(gdir / f"{context.partition_key}.yaml")
        results, points, missing, by_name = {}, [], [], {}
        for p in validate_grid(grid, vault):
            by_name[p.name] = p
            path = io.partition_path([prefix, "backtest_runs"], p.name)
            if not path.exists():
                missing.append(p)
                continue
            _, cfg = apply_overrides(vault, p.overrides, source=p.grid)
            res = bt.result_from_frame(read_parquet(path), p.name, cfg.initial_wealth)
            results[p.name] = res
            points.append((p, backtest_metrics(res, cfg.base_rate)))
        if missing:
            context.log.warning(f"{len(missing)} grid point(s) not materialized yet: {[p.name for p in missing][:5]}")
        if not results:
            raise ValueError(f"no backtest_runs partition of grid {grid.name} is materialized")
        params = list(grid.parameters)
        html_path = io.lake.joinpath(prefix, "backtest_report", f"{grid.name}.html")
        title = f"{vault.name} backtest report: {grid.name}"
        if panel.empty:
            table = report.report_table(grid.name, params, [(p.name, {**dict(p.overrides), "benchmark_set": ""}, m)
                                                            for p, m in points], pd.DataFrame(), METRIC_COLUMNS)
            note = (f"Vault {vault.name} ({vault.reference_asset}): no pool was in its universe on any day of the data, "
                    "so every grid point holds cash (no benchmark either). See universe_exclusions for the reasons.")
            write_bytes_atomic(html_path, report.html_report(title, table, [], [note]).encode("utf-8"))
            return Output(table.astype({c: str for c in params}), metadata={
                "dagster/row_count": len(table), "headline": "empty universe: every point holds cash",
                "report_html": MetadataValue.path(str(html_path)), "missing_points": len(missing),
                "summary": MetadataValue.md(note)})
        sets = benchmark_sets(vault, [p for p, _ in points])
        benches = run_benchmark_sets(panel, sets)
        suffix_of = {name: s.suffix for s in sets for name in s.points}
        rows = [(p.name, {**dict(p.overrides), "benchmark_set": suffix_of[p.name]}, m) for p, m in points]
        bench_rows = pd.DataFrame([{"name": name, "benchmark_set": s.suffix,
                                    **backtest_metrics(res, s.config.base_rate)} for name, (res, s) in benches.items()])
        table = report.report_table(grid.name, params, rows, bench_rows, METRIC_COLUMNS)
        best = report.best_point(table)
        days = pd.to_datetime(panel["date"])
        base_rates = sorted({float(s.config.base_rate) for s in sets})
        notes = [f"Vault {vault.name} ({vault.reference_asset}), grid {grid.name}: {len(points)} points, "
                 f"{panel['pool'].nunique()} pools, {days.min().date()}..{days.max().date()}.",
                 f"Yields are fractions per year, wealth in {vault.reference_asset}; metrics per year. The vault earns "
                 f"{sets[0].config.apy_column}. Sharpe, Sortino and Calmar are on returns in excess of the base rate "
                 f"({', '.join(f'{r:g}' for r in base_rates)}/yr).",
                 "Benchmarks face each point's own constraints (caps, concentration, TVL share, turnover), costs, gas "
                 "and cadence; *_unconstrained variants drop the position limits. benchmark_set names the benchmarks "
                 "a point compares with.",
                 "il_drag: IL paid per year; price_pnl: the legs' price move against the reference asset per year; "
                 "il_data_missing_share: held pool-days of multi-token pools without DefiLlama il7d; gap_pool_days: "
                 "holdings kept through a data gap; empty_universe_days: days with nothing to hold (cash)."]
        best_result = results[str(best["name"])]
        best_set = suffix_of[str(best["name"])]
        highlight = [n for n, (_, s) in benches.items() if s.suffix == best_set and not n.removesuffix(s.suffix)
                     .endswith("_unconstrained")]
        rerun, best_cfg = point_result(panel, vault, by_name[str(best["name"])])  # per-pool APYs for the analysis
        labels = bt.pool_labels(panel)
        analysis_part = report.analysis_sections(
            rerun, {**{k: r.steps for k, r in results.items()}, **{k: r.steps for k, (r, _) in benches.items()}},
            panel, best_cfg.apy_column, labels, highlight)
        html_doc, wealth_png = report.render_report(
            title, table, params,
            {**{k: r.wealth for k, r in results.items()}, **{k: r.wealth for k, (r, _) in benches.items()}},
            highlight, best_result.weight_panel(), best_result.steps, labels, notes, analysis_part)
        write_bytes_atomic(html_path, html_doc.encode("utf-8"))
        return Output(table.astype({c: str for c in params}), metadata={
            "dagster/row_count": len(table),
            "headline": f"best {best['name']}: log growth {best['log_growth']:.4f}/yr, excess over base "
                        f"{best['excess_log_growth']:.4f}/yr",
            "report_html": MetadataValue.path(str(html_path)),
            "missing_points": len(missing),
            "summary": MetadataValue.md(report.headline_markdown(table)
                                        + f"\n\n![wealth](data:image/png;base64,{wealth_png})"),
        })

    return [backtest_panel, backtest_runs, backtest_report]


def build_backtest_jobs(vault: VaultConfig) -> list:
    """``<vault>_backtest_inputs`` (panel, top pools), ``<vault>_backtest_runs`` (grid points) and
    ``<vault>_backtest_report`` (one grid file)."""
    key = lambda name: AssetKey([vault.name, name])  # noqa: E731
    return [
        define_asset_job(f"{vault.name}_backtest_inputs", selection=[key("backtest_panel"), key("top_pools")],
                         description="The vault's backtest panel over the whole history, and its top pools."),
        define_asset_job(f"{vault.name}_backtest_runs", selection=[key("backtest_runs")],
                         partitions_def=grid_partitions(vault.name),
                         description="Backtest grid points of the vault (one partition per point)."),
        define_asset_job(f"{vault.name}_backtest_report", selection=[key("backtest_report")],
                         description="Report of one grid file (partition = grid file name)."),
    ]
