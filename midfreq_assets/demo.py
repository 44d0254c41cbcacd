"""``make demo``: the whole pipeline end to end, offline, on the bundled recorded data.

Starts the replay server on ``recorded/``, points the ``MIDFREQ_*_URL`` variables at it, then
runs each stage as one Dagster run (single-run backfill of the bundled date range) on the
persistent instance in ``DAGSTER_HOME``, so ``dagster dev`` shows the runs afterwards.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from midfreq_resources.io.lake import read_parquet
from midfreq_resources.replay.server import ReplayServer
from midfreq_resources.settings import DATA_LAKE_ENV, DEFAULT_DATA_LAKE, REPO_ROOT, env_or

DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# The summary below is what a person reads; Dagster's per-event DEBUG lines stay in the run history.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class Stage:
    """One demo step: a job over a partition range, one partition, every grid point of a vault, or unpartitioned."""

    job: str
    start: str | None = None
    end: str | None = None
    partition: str | None = None
    vault: str | None = None
    grid: str | None = None


def load_stages(path: Path = DEMO_CONFIG) -> tuple[Path, list[Stage]]:
    with path.open() as fh:
        raw = yaml.safe_load(fh)
    stages = [Stage(**s) for s in raw["stages"]]
    return REPO_ROOT / raw.get("recorded_root", "recorded"), stages


def stage_partitions(instance, stage: Stage) -> list[str | None]:
    if stage.grid:
        from midfreq_assets.defs.vault.grid_sensor import register_grid_points
        from midfreq_assets.domain.backtest.grids import load_grid, validate_grid
        from midfreq_assets.project import current_project

        project = current_project()
        vault = project.vault(stage.vault)
        register_grid_points(instance, [vault], project.grids_dir)
        return [p.name for p in validate_grid(load_grid(project.grids_dir / f"{stage.grid}.yaml"), vault)]
    return [stage.partition]


def run_stage(defs, instance, stage: Stage) -> tuple[bool, float, list]:
    job = defs.resolve_job_def(stage.job)
    tags = {RANGE_START_TAG: stage.start, RANGE_END_TAG: stage.end} if stage.start else {}
    started = time.perf_counter()
    results = [
        job.execute_in_process(run_config=QUIET, instance=instance, tags=tags, partition_key=key, raise_on_error=False)
        for key in stage_partitions(instance, stage)
    ]
    return all(r.success for r in results), time.perf_counter() - started, results


def summarize(result) -> list[str]:
    lines = []
    seen: set[str] = set()
    for event in result.get_asset_materialization_events():
        key = event.asset_key.to_user_string()
        if key in seen:
            continue
        seen.add(key)
        meta = event.materialization.metadata
        rows = meta.get("rows_in_run") or meta.get("dagster/row_count")
        path = meta.get("path")
        parts = [f"  {key:<40}"]
        if rows is not None:
            parts.append(f"rows={rows.value}")
        for extra in ("pools", "headline", "as_of", "picked"):
            if extra in meta:
                parts.append(f"{extra}={meta[extra].value}")
        if path is not None:
            parts.append(f"-> {Path(str(path.value)).parent}")
        lines.append(" ".join(parts))
    failed_checks = [
        f"  check {e.asset_key.to_user_string()}:{e.check_name}: "
        f"{'warning (reported, see its metadata in the UI)' if e.severity.value == 'WARN' else 'FAILED'}"
        for e in result.get_asset_check_evaluations()
        if not e.passed
    ]
    return lines + failed_checks


HEADLINE = ["name", "kind", "log_growth", "volatility", "sharpe", "max_drawdown", "turnover", "cost_drag", "entropy",
            "pbo"]


def print_backtest_headlines(stages: list[Stage], instance=None) -> None:
    """The report's walk-forward row (its headline), the grid points beside the benchmarks on the
    same out-of-sample days, how sure we are (PBO, deflated Sharpe, the excess's interval), the
    chosen point per window, and where the HTML report is."""
    from dagster import AssetKey

    from midfreq_resources.io.parquet_io_manager import ParquetIOManager

    io = ParquetIOManager()
    for stage in stages:
        if not stage.job.endswith("_backtest_report") or not stage.partition:
            continue
        vault = stage.job.removesuffix("_backtest_report")
        path = io.partition_path([vault, "backtest_report"], stage.partition)
        if not path.exists():
            continue
        table = read_parquet(path)
        meta = _report_metadata(instance, AssetKey([vault, "backtest_report"]), stage.partition)
        print(f"\n== {vault} backtest report '{stage.partition}' (walk-forward, grid points and benchmarks on the "
              "same out-of-sample days)")
        if "headline" in meta:
            print(f"  {meta['headline'].value}")
        print(table[[c for c in HEADLINE if c in table]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        for key in ("evaluation", "walk_forward_windows"):
            if key in meta:
                print(f"\n{meta[key].value}")
        print(f"  HTML report: {path.with_suffix('.html')}")


def _report_metadata(instance, key, partition: str) -> dict:
    """The latest materialization metadata of a report partition (empty without an instance)."""
    if instance is None:
        return {}
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None or event.asset_materialization.partition != partition:
        return {}
    return dict(event.asset_materialization.metadata)


def main() -> int:
    recorded_root, stages = load_stages()
    with ReplayServer(recorded_root) as server:
        os.environ.update(server.env())
        from dagster import DagsterInstance

        from midfreq_assets.definitions import defs

        instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
        print(f"midfreq demo: replaying {recorded_root} at {server.base_url}")
        ok = True
        for stage in stages:
            span = f" {stage.start}...{stage.end}" if stage.start else f" {stage.partition or stage.grid or ''}"
            print(f"\n== {stage.job}{span}")
            success, seconds, results = run_stage(defs, instance, stage)
            print(f"  {'succeeded' if success else 'FAILED'} in {seconds:.1f}s ({len(results)} run(s))")
            for result in results:
                print("\n".join(summarize(result)))
            ok &= success
            if not success:
                break
    lake = env_or(DATA_LAKE_ENV, DEFAULT_DATA_LAKE)
    if ok:
        print_backtest_headlines(stages, instance)
    print(f"\nData lake: {lake}")
    print(f"Run history: {os.environ.get('DAGSTER_HOME', '(ephemeral)')}; browse with `make dev`")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
