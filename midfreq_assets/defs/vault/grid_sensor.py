"""Grid points as ``backtest_runs`` partitions: registered by the sensor (or the demo), run in chunks.

Every tick, the points of every ``configs/grids/*.yaml`` not yet registered are added as dynamic
partitions of their vault's ``backtest_runs``, and runs are requested for the new points only
(existing points are not recomputed), up to ``grid_chunk_size`` consecutive points per run (a
partition-range run, as a backfill would launch).
"""

from collections.abc import Sequence
from pathlib import Path

from dagster import (
    AssetKey,
    DagsterInstance,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from midfreq_assets.defs.vault.backtests import grid_chunk_size, grid_partitions, grid_partitions_name
from midfreq_assets.domain.backtest.grids import grid_point_names
from midfreq_assets.domain.config.vault import VaultConfig

#: Run tags of a partition-range run (what a multi-run backfill sets on each run).
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def register_grid_points(
    instance: DagsterInstance, vaults: Sequence[VaultConfig], directory: Path
) -> dict[str, list[str]]:
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


def point_run_requests(vault: VaultConfig, new: list[str]) -> list[RunRequest]:
    """Runs of at most ``grid_chunk_size(len(new))`` consecutive new points (new keys are appended in
    this order, so each chunk is a contiguous key range)."""
    selection = [AssetKey([vault.name, "backtest_runs"])]
    runs = []
    size = grid_chunk_size(len(new))
    for i in range(0, len(new), size):
        chunk = new[i : i + size]
        if len(chunk) == 1:
            runs.append(
                RunRequest(
                    run_key=f"{vault.name}:{chunk[0]}", partition_key=chunk[0], asset_selection=selection
                )
            )
        else:
            runs.append(
                RunRequest(
                    run_key=f"{vault.name}:{chunk[0]}..{chunk[-1]}",
                    asset_selection=selection,
                    tags={RANGE_START_TAG: chunk[0], RANGE_END_TAG: chunk[-1]},
                )
            )
    return runs


def build_grid_points_sensor(
    vaults: Sequence[VaultConfig], directory: Path, minimum_interval_seconds: int = 60
) -> SensorDefinition:
    """The ``grid_points_sensor`` over every vault's ``backtest_runs``."""
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
                runs += point_run_requests(vault, new)
        return SensorResult(run_requests=runs, dynamic_partitions_requests=requests)

    return grid_points_sensor
