"""Backtest speed on the bundled recording (55 pools, 2024-06-06..2025-06-05).

1. One year of daily decisions: the vault's strategy (protocol caps -> cvxpy) and the separable
   fast path (no caps), target < 1 s per year.
2. A grid (default: configs/grids/cost_sensitivity.yaml, 64 points): serial plain Python vs
   through Dagster, one run per grid-point partition, 2 worker processes each executing runs
   against one shared SQLite instance (max 2 concurrent runs). Target < 60 s.

    .venv/bin/python benchmarks/bench_backtest.py [--grid cost_sensitivity] [--skip-dagster]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

warnings.filterwarnings("ignore")

from midfreq_assets.domain import backtest as bt  # noqa: E402
from midfreq_assets.domain.config import load_token_registry, load_vault_config  # noqa: E402
from midfreq_assets.domain.grids import load_grids, run_point  # noqa: E402
from midfreq_assets.domain.universe import select_universe  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VAULT = load_vault_config(REPO / "configs" / "vaults" / "usd_lending.yaml")


def bundled_panel():
    hist, snap = bt.load_recorded(REPO / "recorded")
    members, _ = select_universe(hist, snap, {VAULT.name: VAULT}, load_token_registry())
    return bt.vault_panel(hist, members, VAULT)


def _worker(args):
    home, lake, keys = args
    os.environ["DAGSTER_HOME"] = home
    warnings.filterwarnings("ignore")
    from dagster import AssetKey, AssetSpec, DagsterInstance, materialize

    from midfreq_assets.assets.backtests import build_backtest_assets
    from midfreq_assets.partitions import daily_partitions
    from midfreq_resources.parquet_io_manager import ParquetIOManager

    assets = build_backtest_assets(VAULT)
    upstream = [AssetSpec(k, partitions_def=daily_partitions).with_io_manager_key("parquet_io_manager")
                for k in ("pool_history", "pool_metadata")]
    instance = DagsterInstance.get()
    ok = 0
    for key in keys:
        res = materialize([*assets, *upstream], selection=[AssetKey([VAULT.name, "backtest_runs"])],
                          partition_key=key, instance=instance,
                          resources={"parquet_io_manager": ParquetIOManager(root=lake)}, raise_on_error=False)
        ok += res.success
    return ok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default="cost_sensitivity")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-dagster", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    panel = bundled_panel()
    print(f"load + universe: {time.perf_counter() - t0:.2f}s, {panel['pool'].nunique()} pools, "
          f"{panel['date'].nunique()} days")
    inputs = bt.inputs_from_panel(panel, VAULT)
    preds = bt.prediction_panel(panel, VAULT)
    for label, strategy in (("vault strategy (caps, CLARABEL + gas pruning)", VAULT.strategy),
                            ("separable fast path (no caps)", VAULT.strategy.model_copy(update={"protocol_caps": {}})),
                            ("fast path, no gas/min trade (no pruning)",
                             VAULT.strategy.model_copy(update={"protocol_caps": {}, "gas_usd": 0.0,
                                                                "min_trade_usd": 0.0}))):
        t0 = time.perf_counter()
        res = bt.run_backtest(inputs, preds, strategy)
        dt = time.perf_counter() - t0
        print(f"1 year daily x {len(inputs.pools)} pools, {label}: {dt:.2f}s "
              f"({1e3 * dt / len(res.steps):.2f} ms/step){'  OK' if dt < 1 else '  (target < 1 s)'}")
    t0 = time.perf_counter()
    bt.prediction_panel(panel, VAULT)
    print(f"prediction panel (EWM, research engine): {time.perf_counter() - t0:.2f}s")

    points = load_grids()[args.grid].points()
    t0 = time.perf_counter()
    for p in points:
        run_point(panel, VAULT, p)
    serial = time.perf_counter() - t0
    print(f"grid {args.grid}: {len(points)} points serial (plain Python): {serial:.1f}s "
          f"({serial / len(points):.2f}s/point)")
    if args.skip_dagster:
        return

    from dagster import DagsterInstance

    from midfreq_assets.assets.backtests import register_grid_points
    from midfreq_resources.lake import write_parquet
    from midfreq_resources.parquet_io_manager import ParquetIOManager

    with tempfile.TemporaryDirectory() as tmp:
        home, lake = Path(tmp) / "home", str(Path(tmp) / "lake")
        home.mkdir()
        os.environ["DAGSTER_HOME"] = str(home)
        io = ParquetIOManager(root=lake)
        write_parquet(io.partition_path([VAULT.name, "backtest_panel"], None), panel)
        instance = DagsterInstance.get()
        keys = register_grid_points(instance, [VAULT])[VAULT.name]
        keys = [p.name for p in points if p.name in set(keys)]
        chunks = [keys[i :: args.workers] for i in range(args.workers)]
        t0 = time.perf_counter()
        with ProcessPoolExecutor(args.workers) as pool:
            ok = sum(pool.map(_worker, [(str(home), lake, c) for c in chunks]))
        dag = time.perf_counter() - t0
        print(f"grid {args.grid}: {len(keys)} partitions through Dagster, {args.workers} concurrent runs: "
              f"{dag:.1f}s ({ok}/{len(keys)} succeeded){'  OK' if dag < 60 else '  (target < 60 s)'}; "
              f"speed-up vs serial x{serial / dag:.2f}")


if __name__ == "__main__":
    main()
