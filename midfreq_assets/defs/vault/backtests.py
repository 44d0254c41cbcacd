"""Backtests of one vault: ``backtest_panel``, ``backtest_runs`` (grid points), ``backtest_report``.

- ``<vault>/backtest_panel``: the vault's pool rows over the whole history (all ``pool_history``
  and ``pool_metadata`` partitions), read once so every grid point loads one file;
- ``<vault>/backtest_runs``: one dynamic partition per grid point; a backfill runs up to
  :data:`GRID_POINTS_PER_RUN` points per run (``BackfillPolicy.multi_run``), each computing its
  points in one step; the IO manager splits the output by its ``point`` column. It reads the vault's
  ``fitted_models`` (every week stored): a point whose research settings are the vault's own trades
  those weekly models instead of refitting them (``PointRunner``: only when they are the refits its
  replay would make; else it refits);
- ``<vault>/backtest_report``: one static partition per ``configs/grids/*.yaml``: the walk-forward
  row (the policy chosen window by window on past data, traded out of sample), one row per point
  (parameters + metrics) and the benchmarks (rules filled under each point's own constraints and costs;
  ``*_unconstrained``: without the position limits), all on the walk-forward's days, with the grid's PBO,
  the deflated Sharpe (on the excess over the bar and plain) and a bootstrap interval of the excess over
  the bar, the strongest constrained benchmark; a self-contained HTML report in the lake.

(``<vault>/top_pools``, in the same group and job: ``defs/vault/top_pools.py``.)
"""

import math
from collections.abc import Mapping
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

from midfreq_assets import stages
from midfreq_assets.asset_plots import wealth_plot
from midfreq_assets.domain.backtest import engine as bt
from midfreq_assets.domain.backtest import report
from midfreq_assets.domain.backtest.benchmarks import benchmark_set_of, benchmark_sets, is_constrained
from midfreq_assets.domain.backtest.evaluation import evaluate_vault_grid
from midfreq_assets.domain.backtest.grids import (
    PointRunner,
    apply_overrides,
    find_points,
    grid_file_names,
    load_grid,
    point_result,
    run_points,
    validate_grid,
)
from midfreq_assets.domain.backtest.metrics import METRIC_COLUMNS, backtest_metrics
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.research.plan import needs_adjusted
from midfreq_assets.domain.yields.response import with_responses
from midfreq_assets.metadata import markdown_table, report_link
from midfreq_assets.previews import schema_metadata
from midfreq_resources.io.lake import read_parquet, write_bytes_atomic
from midfreq_resources.io.model_io_manager import LAZY, NO_TABLES

#: Grid points per run when backfilling ``backtest_runs`` (and per sensor run request). Each run
#: costs seconds of Dagster overhead (process start, code load, storage); a point ~0.4 s of CPU.
GRID_POINTS_PER_RUN = 8
#: A big grid is cut into about this many runs (each then holds more than GRID_POINTS_PER_RUN points):
#: enough runs to keep the workers busy, few enough that the per-run overhead stays small.
GRID_RUNS_PER_GRID = 8


def grid_chunk_size(points: int) -> int:
    """Points per run for a grid of ``points`` new points (the grid sensor and ``midfreq pipeline``):
    ``GRID_POINTS_PER_RUN``, or more for a grid of more than ``GRID_RUNS_PER_GRID`` such runs (a
    1,000-point grid: 8 runs of 125, not 125 runs of 8; a run's points share the panel's inputs
    and predictions). A backfill launched from the UI keeps the asset's policy (runs of 8)."""
    return max(GRID_POINTS_PER_RUN, math.ceil(points / GRID_RUNS_PER_GRID))


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
    earns_adjusted = vault.backtest.apy_column == "adjusted_apy" or needs_adjusted(vault)

    @asset(
        key=AssetKey([prefix, "backtest_panel"]),
        ins={
            "pool_history": AssetIn(
                key=AssetKey("pool_history"), partition_mapping=AllPartitionMapping(), metadata=all_days
            ),
            "pool_metadata": AssetIn(
                key=AssetKey("pool_metadata"), partition_mapping=AllPartitionMapping(), metadata=all_days
            ),
            # optional only for a vault that neither earns nor predicts adjusted yields
            "adjusted_yields": AssetIn(
                key=AssetKey([prefix, "adjusted_yields"]),
                partition_mapping=AllPartitionMapping(),
                metadata={**all_days, "optional": not earns_adjusted},
            ),
            # lending markets' supply and borrows (the rate curves); none without an API key
            "pool_lend_borrow": AssetIn(
                key=AssetKey("pool_lend_borrow"),
                partition_mapping=AllPartitionMapping(),
                metadata={**all_days, "optional": True},
            ),
        },
        io_manager_key="parquet_io_manager",
        metadata=schema_metadata("backtest_panel"),
        group_name=group,
        kinds={"python", "parquet"},
        description=f"Vault {vault.name}: pool rows over the whole history with eligible (in the universe "
        "that day), project and chain. The input every backtest of the vault reads.",
    )
    def backtest_panel(
        context: AssetExecutionContext,
        pool_history: pd.DataFrame,
        pool_metadata: pd.DataFrame,
        adjusted_yields: pd.DataFrame,
        pool_lend_borrow: pd.DataFrame,
    ):
        history = with_responses(pool_history, pool_lend_borrow, vault.yields.rate_curves)
        panel = bt.vault_panel(bt.with_adjusted_apy(history, adjusted_yields), pool_metadata, vault)
        return Output(
            panel,
            metadata={
                "dagster/row_count": len(panel),
                "pools": int(panel["pool"].nunique()),
                "first_day": str(panel["date"].min().date()) if len(panel) else "",
                "last_day": str(panel["date"].max().date()) if len(panel) else "",
                "rate_curve_pool_days": int((panel["response_method"] == "curve").sum())
                if "response_method" in panel
                else 0,
            },
        )

    # the vault's weekly refits as production fitted them: the points with the vault's own research
    # settings are predicted with them instead of refitting them (a week missing: they refit); read
    # only when a point needs them; optional (`midfreq pipeline` runs the backtest when they failed)
    stored_models = AssetIn(
        key=AssetKey([prefix, "fitted_models"]),
        partition_mapping=AllPartitionMapping(),
        metadata={**all_days, LAZY: True, NO_TABLES: True, "optional": True},
    )

    @asset(
        key=AssetKey([prefix, "backtest_runs"]),
        ins={
            "panel": AssetIn(key=AssetKey([prefix, "backtest_panel"])),
            "fitted_models": stored_models,
        },
        partitions_def=grid_partitions(vault.name),
        backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=GRID_POINTS_PER_RUN),
        # ParquetIOManager: one file per point of a multi-point run
        metadata={"partition_column": "point", **schema_metadata("backtest_runs")},
        io_manager_key="parquet_io_manager",
        group_name=group,
        kinds={"python", "parquet"},
        description=f"Vault {vault.name}: one backtest per grid point (partition = point name): per-day "
        "wealth, costs, gas, predicted/realized APY, status and w__<pool> weights. A backfill runs up to "
        f"{GRID_POINTS_PER_RUN} points per run. Points with the vault's own research settings trade the weekly "
        "models fitted_models stored (when they are the refits the backtest would make); the others refit, "
        "once per distinct research setting in a run.",
    )
    def backtest_runs(context: AssetExecutionContext, panel: pd.DataFrame, fitted_models: Mapping):
        keys = list(context.partition_keys)
        points = find_points(keys, gdir)  # the grid files read once per run
        # inputs + predictions shared; the vault's own research read from fitted_models, not refitted
        runner = PointRunner(panel, vault, {p.name: p for p in points}, stored_models=fitted_models)
        frames, rows = [], []
        for key, (frame, metrics) in zip(keys, run_points(panel, vault, points, runner), strict=True):
            frames.append(frame)
            rows.append({"point": key, **{k: float(v) for k, v in metrics.items()}})
        research = {
            "points_on_stored_models": runner.on_stored,
            "research_refitted": len(runner.replayed),
            "stored_models_note": runner.stored_note or f"{len(fitted_models)} stored weekly bundles",
        }
        if len(keys) == 1:
            return Output(
                frames[0],
                metadata={
                    "dagster/row_count": len(frames[0]),
                    "params": MetadataValue.json({k: str(v) for k, v in points[0].overrides}),
                    **{k: v for k, v in rows[0].items() if k != "point"},
                    **research,
                },
            )
        return Output(
            pd.concat(frames, ignore_index=True),
            metadata={
                "dagster/row_count": sum(len(f) for f in frames),
                "points": len(keys),
                "metrics": markdown_table(pd.DataFrame(rows)),
                **research,
            },
        )

    @asset(
        key=AssetKey([prefix, "backtest_report"]),
        ins={"panel": AssetIn(key=AssetKey([prefix, "backtest_panel"])), "fitted_models": stored_models},
        deps=[AssetDep(backtest_runs, partition_mapping=AllPartitionMapping())],
        partitions_def=grid_files,
        io_manager_key="parquet_io_manager",
        metadata=schema_metadata("backtest_report"),
        required_resource_keys={"parquet_io_manager"},
        group_name=group,
        kinds={"python", "parquet", "html"},
        description=f"Vault {vault.name}: the walk-forward row first (each test window traded by the grid point "
        "that scored best on the days before it, from the holdings the previous window left), then one row per "
        "grid point (parameters + metrics) and the benchmark rules (best trailing APY rank-and-fill, top-k, "
        "hysteresis, incumbent, equal weight, TVL-weighted) filled under each point's constraints and costs (and "
        "*_unconstrained variants), all on the walk-forward's out-of-sample days, with invested shares, ratios on "
        "returns in excess of backtest.base_rate; the grid's PBO (CSCV), the deflated Sharpe (on the excess over the "
        "bar and plain) and a bootstrap interval of the excess over the bar, the strongest constrained benchmark; "
        "HTML report written next to it.",
    )
    def backtest_report(context: AssetExecutionContext, panel: pd.DataFrame, fitted_models: Mapping):
        io = context.resources.parquet_io_manager
        grid = load_grid(gdir / f"{context.partition_key}.yaml")
        points = validate_grid(grid, vault)
        by_name = {p.name: p for p in points}
        results, missing = {}, []
        for p in points:
            path = io.partition_path([prefix, "backtest_runs"], p.name)
            if not path.exists():
                missing.append(p)
                continue
            _, cfg = apply_overrides(vault, p.overrides, source=p.grid)
            results[p.name] = bt.result_from_frame(read_parquet(path), p.name, cfg.initial_wealth)
        if missing:
            context.log.warning(
                f"{len(missing)} grid point(s) not materialized yet: {[p.name for p in missing][:5]}"
            )
        if not results:
            raise ValueError(f"no backtest_runs partition of grid {grid.name} is materialized")
        params = list(grid.parameters)
        html_path = io.lake.joinpath(prefix, "backtest_report", f"{grid.name}.html")
        title = f"{vault.name} backtest report: {grid.name}"
        base_rate = vault.backtest.base_rate
        if panel.empty:
            rows = [
                (p.name, {**dict(p.overrides), "benchmark_set": ""}, backtest_metrics(r, base_rate))
                for p, r in ((by_name[k], r) for k, r in results.items())
            ]
            table = report.report_table(grid.name, params, rows, pd.DataFrame(), METRIC_COLUMNS)
            note = (
                f"Vault {vault.name} ({vault.reference_asset}): no pool was in its universe on any day of the data, "
                "so every grid point holds cash (no benchmark either). See universe_exclusions for the reasons."
            )
            write_bytes_atomic(html_path, report.html_report(title, table, [], [note]).encode("utf-8"))
            return Output(
                table.astype({c: str for c in params}),
                metadata={
                    "dagster/row_count": len(table),
                    "headline": "empty universe: every point holds cash",
                    **report_link(html_path, io.lake),
                    "missing_points": len(missing),
                    "summary": MetadataValue.md(note),
                },
            )
        evaluation = evaluate_vault_grid(panel, vault, points, results, fitted_models)
        set_of = {
            name: s.suffix
            for s in benchmark_sets(vault, [p for p in points if p.name in results])
            for name in s.points
        }
        days = pd.to_datetime(panel["date"])
        notes = [
            f"Vault {vault.name} ({vault.reference_asset}), grid {grid.name}: {len(results)} points, "
            f"{panel['pool'].nunique()} pools, {days.min().date()}..{days.max().date()}.",
            f"Yields are fractions per year, wealth in {vault.reference_asset}; metrics per year. The vault earns "
            f"{vault.backtest.apy_column}. Sharpe, Sortino and Calmar are on returns in excess of the base rate "
            f"({base_rate:g}/yr). Every row covers the walk-forward's out-of-sample days; the grid points are "
            "fixed over the whole history, so the best of them is picked with hindsight (an upper bound, not a "
            "result).",
            "Benchmarks are rules filled under each point's own constraints (caps, concentration, TVL share at "
            "the day's wealth, turnover), costs, gas and cadence, fully invested where the caps allow "
            "(invested_share); the bar is the strongest of them on these days (role); *_unconstrained variants "
            "drop the position limits and are never the bar. benchmark_set names the benchmarks a point "
            "compares with.",
            "il_drag: IL paid per year; price_pnl: the legs' price move against the reference asset per year; "
            "il_data_missing_share: held pool-days of multi-token pools without DefiLlama il7d; gap_pool_days: "
            "holdings kept through a data gap; empty_universe_days: days with nothing to hold (cash).",
        ]
        # the points re-run for plots share inputs + predictions (the vault's own research: its stored models)
        runner = PointRunner(panel, vault, by_name, stored_models=fitted_models)
        table, html_doc, wealth_png = report.grid_report(
            title,
            grid.name,
            params,
            {p.name: dict(p.overrides) for p in points},
            evaluation,
            panel,
            vault.backtest.apy_column,
            bt.pool_labels(panel),
            notes,
            lambda name: point_result(panel, vault, by_name[name], runner=runner)[0],
            vault.backtest.walk_forward.objective,
            base_rate,
            set_of,
        )
        write_bytes_atomic(html_path, html_doc.encode("utf-8"))
        stats = evaluation.stats()
        wf = evaluation.walk_forward
        return Output(
            table.astype({c: str for c in params}),
            metadata={
                "dagster/row_count": len(table),
                "headline": report.headline(table, stats),
                **wealth_plot(*report_wealth(evaluation, stats)),
                "headline_table": markdown_table(report.lead_table(table)),
                **report_link(html_path, io.lake),
                "missing_points": len(missing),
                **{
                    k: v
                    for k, v in stats.items()
                    if k
                    in (
                        "pbo",
                        "pbo_splits",
                        "pbo_points",
                        "deflated_sharpe",
                        "deflated_sharpe_excess",
                        "excess_vs_benchmark",
                        "excess_ci_low",
                        "excess_ci_high",
                        "excess_over",
                    )
                },
                "evaluation": MetadataValue.md(report.evaluation_markdown(stats, evaluation.notes)),
                "walk_forward_windows": markdown_table(
                    report.windows_table(wf.windows) if wf else pd.DataFrame(), max_rows=60
                ),
                "summary": MetadataValue.md(
                    report.headline_markdown(table) + f"\n\n![wealth](data:image/png;base64,{wealth_png})"
                ),
            },
        )

    return [backtest_panel, backtest_runs, backtest_report]


def report_wealth(evaluation, stats: dict, benchmarks: int = 2) -> tuple[dict[str, pd.Series], list[str]]:
    """The wealth paths the asset page plots: the walk-forward, the bar (the strongest constrained
    benchmark) and the next ``benchmarks`` constrained benchmarks of its set by final wealth."""
    bar = str(stats.get("excess_over", ""))
    same = {
        k: r.wealth
        for k, r in evaluation.benchmarks.items()
        if is_constrained(k) and benchmark_set_of(k) == benchmark_set_of(bar)
    }
    others = sorted(
        (k for k in same if k != bar), key=lambda k: -float(same[k].iloc[-1]) if len(same[k]) else 0.0
    )
    wealth = {
        **({"walk_forward": evaluation.walk_forward.result.wealth} if evaluation.walk_forward else {}),
        **{k: same[k] for k in [bar, *others[:benchmarks]] if k in same},
    }
    return {k.split("@")[0]: v for k, v in wealth.items()}, [k.split("@")[0] for k in wealth]


def build_backtest_jobs(vault: VaultConfig) -> list:
    """``<vault>_backtest_inputs`` (panel, top pools), ``<vault>_backtest_runs`` (grid points) and
    ``<vault>_backtest_report`` (one grid file)."""
    key = lambda name: AssetKey([vault.name, name])  # noqa: E731
    return [
        define_asset_job(
            f"{vault.name}_backtest_inputs",
            metadata=stages.plan(stages.ONCE, vault.name),
            selection=[key("backtest_panel"), key("top_pools")],
            description="The vault's backtest panel over the whole history, and its top pools.",
        ),
        define_asset_job(
            f"{vault.name}_backtest_runs",
            metadata=stages.plan(stages.GRID_POINTS, vault.name),
            selection=[key("backtest_runs")],
            partitions_def=grid_partitions(vault.name),
            description="Backtest grid points of the vault (one partition per point).",
        ),
        define_asset_job(
            f"{vault.name}_backtest_report",
            metadata=stages.plan(stages.GRID_FILES, vault.name),
            selection=[key("backtest_report")],
            description="Report of one grid file (partition = grid file name).",
        ),
    ]
