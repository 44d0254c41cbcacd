"""A 1,000-point grid through Dagster, against the original per-step cvxpy rebuild.

The grid (written to a temporary ``grids/scale.yaml``): one year (the bundled recording,
2024-06-06..2025-06-05) x the ``usd_lending`` pools (55 in the panel), daily decisions, varying

    strategy.horizon_days                 7, 14, 30, 60, 90        (cost amortization horizon)
    strategy.base_buffer                  0, 0.02, 0.05, 0.1       (idle buffer)
    strategy.concentration_limit          0.1, 0.2, 0.25, 0.35, 0.5 (cap per pool)
    strategy.max_pool_tvl_share           0.02, 0.05               (cap on our share of a pool's TVL)
    models.apy.ewm_predictor.halflife     3d, 7d, 14d, 30d, 60d    (predictor)

= 1,000 points (``--values K``: the first K values of each, e.g. 2 -> 32 points). The panel is
written to a fresh lake as ``backtest_panel`` would, the points registered as ``backtest_runs``
partitions on a fresh local instance, and run as partition-range runs of ``--points-per-run``
points (default: what ``midfreq pipeline`` and the grid sensor use, ``grid_chunk_size``),
``--workers`` at a time in worker processes (``bench_backtest._run_chunk``: what a multi-run
backfill launches). Then the grid's ``backtest_report`` (walk-forward, benchmarks, PBO, HTML) is
materialized and timed. Printed:

    points=1000 wall_s=... s_per_point=... peak_rss_mb=...   (the runs; peak: this process + workers)
    report_s=...                                              (backtest_report of the grid)
    equal_to_plain=N/N                                        (stored frames == run_point alone)
    rebuild_s_per_point=... ratio_vs_rebuild=...              (target >= 100)

The original-style backtest is the same engine and accounting with every decision solved by a
fresh, non-DPP cvxpy problem built from constants at every step (as ``bench_optimizer.py``'s
``rebuild_and_solve``: same objective and constraints, the vault's primary solver), run in this
process on ``--rebuild-points`` points of the grid.

    .venv/bin/python benchmarks/bench_grid_scale.py                       # 1,000 points
    .venv/bin/python benchmarks/bench_grid_scale.py --values 2 --rebuild-points 1   # 32 points, quick
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cvxpy as cp
import numpy as np
import pandas as pd
import yaml

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backtest import (  # noqa: E402
    VAULT,
    _cpu,
    _run_chunk,
    backtest_resources,
    backtest_upstream,
    bundled_panel,
    production_bundles,
    store_fitted_models,
)
from bench_demo import tree_rss_mb  # noqa: E402

from midfreq_assets.domain.backtest.grids import find_points, run_point  # noqa: E402
from midfreq_assets.domain.portfolio import book as book_module  # noqa: E402
from midfreq_assets.domain.portfolio.optimizer import SolverFailure, VaultOptimizer  # noqa: E402

GRID = {
    "strategy.horizon_days": [7, 14, 30, 60, 90],
    "strategy.base_buffer": [0.0, 0.02, 0.05, 0.1],
    "strategy.concentration_limit": [0.1, 0.2, 0.25, 0.35, 0.5],
    "strategy.max_pool_tvl_share": [0.02, 0.05],
    "models.apy.ewm_predictor.halflife": ["3d", "7d", "14d", "30d", "60d"],
}
TARGET_RATIO = 100.0


class RebuildOptimizer(VaultOptimizer):
    """The original's optimizer: a new cvxpy problem (constants only, not DPP) built and solved at
    every decision; never the exact path. Same objective and constraints as ``VaultOptimizer``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.exact = False

    def _solve_cvxpy(self, inp, solver: str, turnover: float | None) -> np.ndarray:
        n = len(self.pools)
        x = cp.Variable(n)
        traded = cp.sum(cp.abs(x - inp.x0))
        obj = inp.a @ x - inp.c * traded - cp.sum_squares(cp.multiply(np.sqrt(inp.q), x))
        cons = [x >= inp.lo, x <= inp.hi, cp.sum(x) <= inp.budget]
        if self.group_matrix.shape[0]:
            cons.append(self.group_matrix @ x <= self.group_caps)
        if turnover is not None:
            cons.append(traded <= turnover)
        prob = cp.Problem(cp.Maximize(obj), cons)
        try:
            prob.solve(solver=solver, **self.strategy.solver_settings(solver))
        except Exception as exc:  # as VaultOptimizer: a solver error is a status
            raise SolverFailure(f"{solver}: {type(exc).__name__}: {exc}") from exc
        if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or x.value is None:
            raise SolverFailure(f"{solver}: status {prob.status}")
        return np.asarray(x.value, dtype=float)


class TreePeakOfSelf:
    """Samples the RSS of this process and its children in a thread until stopped."""

    def __init__(self, every_s: float = 0.2) -> None:
        import threading

        self.peak_mb, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, tree_rss_mb(os.getpid()))
            self._stop.wait(every_s)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def materialize_report(home: str, lake: str, grids: Path, grid: str) -> bool:
    """``backtest_report`` of ``grid`` in this process, on the instance and lake of the runs."""
    os.environ["DAGSTER_HOME"] = home
    from dagster import AssetKey, DagsterInstance, materialize

    from midfreq_assets.defs.vault.backtests import build_backtest_assets
    from midfreq_assets.pipeline import QUIET, failure_message

    res = materialize(
        [*build_backtest_assets(VAULT, grids), *backtest_upstream()],
        selection=[AssetKey([VAULT.name, "backtest_report"])],
        partition_key=grid,
        instance=DagsterInstance.get(),
        resources=backtest_resources(lake),
        raise_on_error=False,
        run_config=QUIET,
    )
    if not res.success:
        print(failure_message(res))
    return res.success


def main(argv: list[str] | None = None) -> int:
    import argparse

    from dagster import DagsterInstance

    from midfreq_assets.defs.vault.backtests import grid_chunk_size, grid_partitions_name
    from midfreq_assets.defs.vault.grid_sensor import register_grid_points
    from midfreq_resources.io.lake import read_parquet, write_parquet
    from midfreq_resources.io.parquet_io_manager import ParquetIOManager

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--values", type=int, default=5, help="first K values of each parameter (5: 1,000 points)"
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--points-per-run", type=int, default=None, help="default: grid_chunk_size(points)")
    ap.add_argument("--rebuild-points", type=int, default=3, help="points backtested the original way")
    ap.add_argument("--check-points", type=int, default=8, help="stored points compared with run_point alone")
    ap.add_argument("--skip-report", action="store_true")
    ap.add_argument(
        "--no-stored-models",
        action="store_true",
        help="no fitted_models in the lake: every point refits its research (before issue 25b)",
    )
    ap.add_argument(
        "--keep", type=Path, default=None, help="instance, lake and grid here (kept), not a temp dir"
    )
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    panel = bundled_panel()
    print(
        f"panel: {panel['pool'].nunique()} pools, {panel['date'].nunique()} days "
        f"({time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="midfreq-grid-scale-") as tmp:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=False)
            tmp = str(args.keep)
        grids, home, lake = Path(tmp) / "grids", Path(tmp) / "home", str(Path(tmp) / "lake")
        grids.mkdir()
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(home)
        (grids / "scale.yaml").write_text(
            yaml.safe_dump(
                {
                    "description": "scale benchmark: horizon x buffer x caps x predictor halflife",
                    "parameters": {k: v[: args.values] for k, v in GRID.items()},
                },
                sort_keys=False,
            )
        )
        io = ParquetIOManager(root=lake)
        write_parquet(io.partition_path([VAULT.name, "backtest_panel"], None), panel)
        if not args.no_stored_models:  # what fitted_models holds after `midfreq pipeline` (not timed)
            t0 = time.perf_counter()
            bundles = production_bundles(panel)
            store_fitted_models(lake, bundles)
            print(
                f"fitted_models: {len(bundles)} weekly bundles stored ({time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
        instance = DagsterInstance.get()
        t0 = time.perf_counter()
        register_grid_points(instance, [VAULT], grids)
        keys = list(instance.get_dynamic_partitions(grid_partitions_name(VAULT.name)))
        n = len(keys)
        per_run = args.points_per_run or grid_chunk_size(n)
        chunks = [keys[i : i + per_run] for i in range(0, n, per_run)]
        print(
            f"grid: {n} points registered in {time.perf_counter() - t0:.1f} s; {len(chunks)} runs of <= {per_run} "
            f"points, {args.workers} at a time",
            flush=True,
        )

        sampler = TreePeakOfSelf()
        t0, c0 = time.perf_counter(), _cpu()
        with ProcessPoolExecutor(args.workers) as pool:
            done = sum(pool.map(_run_chunk, [(str(home), lake, c, str(grids)) for c in chunks]))
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        peak = sampler.stop()
        print(
            f"points={n} wall_s={wall:.1f} s_per_point={wall / n:.4f} peak_rss_mb={peak:.0f} "
            f"cpu_s={cpu:.1f} cpu_s_per_point={cpu / n:.4f} materialized={done}/{n}",
            flush=True,
        )

        if not args.skip_report:
            sampler = TreePeakOfSelf()
            t0 = time.perf_counter()
            ok = materialize_report(str(home), lake, grids, "scale")
            report_s = time.perf_counter() - t0
            html = Path(lake) / VAULT.name / "backtest_report" / "scale.html"
            size = html.stat().st_size / 1e6 if html.exists() else float("nan")
            print(
                f"report_s={report_s:.1f} points={n} ok={ok} html_mb={size:.2f} "
                f"peak_rss_mb={sampler.stop():.0f}",
                flush=True,
            )

        points = find_points(keys, grids)
        rng = np.random.default_rng(0)
        sample = sorted(rng.choice(n, size=min(args.check_points, n), replace=False).tolist())
        equal = 0
        for i in sample:
            stored = read_parquet(io.partition_path([VAULT.name, "backtest_runs"], keys[i]))
            plain, _ = run_point(panel, VAULT, points[i])
            # a run of many points is stored split by point: a point's file also carries the w__<pool>
            # columns of pools only other points of its run held, all empty (never a weight)
            extra = [c for c in stored.columns if c not in plain.columns]
            try:
                assert all(c.startswith("w__") for c in extra) and stored[extra].isna().all().all(), (
                    f"columns {extra[:5]} not empty weights"
                )
                pd.testing.assert_frame_equal(
                    stored[list(plain.columns)].reset_index(drop=True),
                    plain.reset_index(drop=True),
                    check_dtype=False,
                )
                equal += 1
            except AssertionError as exc:
                print(f"  point {keys[i]}: stored frame differs from run_point: {str(exc)[:300]}")
        print(
            f"equal_to_plain={equal}/{len(sample)} (sampled points: every column of run_point's frame, exact)",
            flush=True,
        )

    # The original way, on a few points: same engine and accounting, a fresh cvxpy problem per decision.
    picks = [points[i] for i in np.linspace(0, n - 1, min(args.rebuild_points, n)).astype(int)]
    plain_s, rebuild_s, rebuild_cpu, gaps = [], [], [], []
    for p in picks:  # plain first: predictions cached, so both time the backtest alone
        c = time.perf_counter()
        frame, _ = run_point(panel, VAULT, p)
        plain_s.append(time.perf_counter() - c)
        book_module.VaultOptimizer = RebuildOptimizer
        try:
            c, c_cpu = time.perf_counter(), time.process_time()
            rebuilt, _ = run_point(panel, VAULT, p)
            rebuild_s.append(time.perf_counter() - c)
            rebuild_cpu.append(time.process_time() - c_cpu)
        finally:
            book_module.VaultOptimizer = VaultOptimizer
        gaps.append(abs(float(rebuilt["wealth"].iloc[-1]) / float(frame["wealth"].iloc[-1]) - 1))
        print(
            f"  {p.name}: plain {plain_s[-1]:.2f} s, rebuilt every step {rebuild_s[-1]:.2f} s "
            f"({len(frame)} steps), final wealth differs by {gaps[-1]:.1e}",
            flush=True,
        )
    per_rebuild = float(np.mean(rebuild_s))
    ratio = per_rebuild / (wall / n)
    print(f"plain_s_per_point={np.mean(plain_s):.3f} (one point alone, this process)")
    print(
        f"rebuild_s_per_point={per_rebuild:.3f} ratio_vs_rebuild={ratio:.1f} target>={TARGET_RATIO:g} "
        f"{'MET' if ratio >= TARGET_RATIO else 'NOT MET'} (grid s_per_point {wall / n:.4f}, "
        f"target {per_rebuild / TARGET_RATIO:.4f})"
    )
    print(
        f"rebuild_cpu_s_per_point={np.mean(rebuild_cpu):.3f} ratio_cpu_vs_rebuild={np.mean(rebuild_cpu) / (cpu / n):.1f} "
        "(CPU seconds: the grid's workers against the rebuild's; less sensitive to a shared machine)"
    )
    return 0 if done == n and equal == len(sample) else 1


if __name__ == "__main__":
    sys.exit(main())
