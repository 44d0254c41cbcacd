"""Backtest speed on the bundled recording (55 pools, 2024-06-06..2025-06-05).

1. One year of daily decisions with the vault's strategy (protocol caps, gas pruning: exact
   solver), the same through cvxpy (``use_fast_path: false``, the previous path), and without
   caps / pruning. Target < 1 s per year.
2. A grid (default: configs/grids/cost_sensitivity.yaml, 64 points): serial plain Python vs
   through Dagster as a backfill with ``BackfillPolicy.multi_run(GRID_POINTS_PER_RUN)`` does it:
   runs of N consecutive partitions (partition-range runs), 2 at a time (the local queued run
   coordinator's limit), in 2 worker processes against one shared SQLite instance.
   ``--points-per-run 1`` gives the previous one-run-per-point figure. Target < 60 s.

Wall and CPU seconds are printed (the machine may be shared).

    .venv/bin/python benchmarks/bench_backtest.py [--grid cost_sensitivity] [--points-per-run 8]
        [--skip-dagster] [--skip-cvxpy]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

warnings.filterwarnings("ignore")

from midfreq_assets.domain.backtest import engine as bt  # noqa: E402
from midfreq_assets.domain.backtest.grids import load_grids, run_point  # noqa: E402
from midfreq_assets.domain.config.tokens import load_token_registry  # noqa: E402
from midfreq_assets.domain.config.vault import load_vault_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VAULT = load_vault_config(REPO / "configs" / "vaults" / "usd_lending.yaml")
GRIDS = REPO / "configs" / "grids"


def bundled_panel():
    """The recording's panel with adjusted yields (what the vault earns), as backtest_panel builds it."""
    return bt.recorded_panel(REPO / "recorded", VAULT, load_token_registry())


def production_bundles(panel) -> dict:
    """The vault's weekly bundles as ``<vault>/fitted_models`` fits them on ``panel`` (every label and
    estimator, a CV of every label; the features of the pools in the universe that day; production's
    calendar), keyed by week: what a lake after ``midfreq pipeline`` holds beside the backtest panel."""
    import pandas as pd

    from midfreq_assets.domain.research import engine as research
    from midfreq_assets.domain.research.bundles import weekly_bundles
    from midfreq_assets.domain.research.plan import first_fit_day, refit_as_of, selected_labels

    hist = panel.assign(date=pd.to_datetime(panel["date"]).dt.normalize()).rename(
        columns={"pool": "instrument"}
    )
    feats = research.build_features(hist, VAULT.feature_map)
    member = pd.MultiIndex.from_frame(hist.loc[hist["eligible"].astype(bool), ["date", "instrument"]])
    train = feats[pd.MultiIndex.from_arrays([feats["date"], feats["instrument"]]).isin(member)]
    first = first_fit_day(VAULT)
    weeks = pd.date_range(pd.Timestamp(first) - pd.Timedelta(days=6), hist["date"].max(), freq="W-MON")
    as_ofs = {str(w.date()): refit_as_of(w.date(), first, VAULT.models.refit_every_weeks) for w in weeks}
    labels = research.build_labels(hist, VAULT.label_map)
    cv = selected_labels(VAULT.label_map, VAULT.models)
    return weekly_bundles(as_ofs, train.reset_index(drop=True), labels, VAULT.models, VAULT.label_map, cv)


def store_fitted_models(lake: str, bundles: dict) -> None:
    """``bundles`` written as the ``<vault>/fitted_models`` partitions of ``lake``."""
    from midfreq_resources.io.lake import write_bytes_atomic
    from midfreq_resources.io.model_io_manager import ModelIOManager, dump_bytes

    io = ModelIOManager(root=lake)
    for week, bundle in bundles.items():
        write_bytes_atomic(io.partition_path([VAULT.name, "fitted_models"], week), dump_bytes(bundle))


def backtest_upstream() -> list:
    """What the backtest assets read besides each other, as specs on the lake (``materialize``)."""
    from dagster import AssetKey, AssetSpec

    from midfreq_assets.domain.research.plan import first_fit_day
    from midfreq_assets.partitions import daily_from, weekly_partitions

    days = daily_from(VAULT.start_date)
    return [
        *(
            AssetSpec(k, partitions_def=days).with_io_manager_key("parquet_io_manager")
            for k in (
                "pool_history",
                "pool_metadata",
                "pool_lend_borrow",
                AssetKey([VAULT.name, "adjusted_yields"]),
            )
        ),
        AssetSpec(
            AssetKey([VAULT.name, "fitted_models"]), partitions_def=weekly_partitions(first_fit_day(VAULT))
        ).with_io_manager_key("model_io_manager"),
    ]


def backtest_resources(lake: str) -> dict:
    from midfreq_resources.io.model_io_manager import ModelIOManager
    from midfreq_resources.io.parquet_io_manager import ParquetIOManager

    return {"parquet_io_manager": ParquetIOManager(root=lake), "model_io_manager": ModelIOManager(root=lake)}


def _cpu() -> float:
    """CPU seconds of this process and its reaped children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


_STATE: dict[str, object] = {}


def _run_chunk(args):
    """One Dagster run of ``backtest_runs`` over a range of consecutive grid-point partitions (what a
    multi-run backfill launches); a single key is a plain one-partition run. ``args``: (DAGSTER_HOME,
    lake, keys[, grid directory]); a process serves one grid directory."""
    home, lake, keys, *rest = args
    grids = Path(rest[0]) if rest else GRIDS  # another grid directory (bench_grid_scale)
    os.environ["DAGSTER_HOME"] = home
    warnings.filterwarnings("ignore")
    from dagster import AssetKey, DagsterInstance, materialize

    from midfreq_assets.defs.vault.backtests import build_backtest_assets
    from midfreq_assets.defs.vault.grid_sensor import RANGE_END_TAG, RANGE_START_TAG
    from midfreq_assets.pipeline import QUIET  # Dagster's per-event DEBUG lines stay in the run history

    if not _STATE:
        _STATE["assets"] = [*build_backtest_assets(VAULT, grids), *backtest_upstream()]
        _STATE["instance"] = DagsterInstance.get()
    if len(keys) == 1:
        part = {"partition_key": keys[0]}
    else:
        part = {"tags": {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}}
    res = materialize(
        _STATE["assets"],
        selection=[AssetKey([VAULT.name, "backtest_runs"])],
        instance=_STATE["instance"],
        resources=backtest_resources(lake),
        raise_on_error=False,
        run_config=QUIET,
        **part,
    )
    return len(res.get_asset_materialization_events()) if res.success else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default="cost_sensitivity")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--points-per-run",
        type=int,
        default=None,
        help="partitions per run (default: the asset's backfill policy)",
    )
    ap.add_argument("--skip-dagster", action="store_true")
    ap.add_argument("--skip-cvxpy", action="store_true", help="skip the (slow) cvxpy year")
    args = ap.parse_args()

    t0 = time.perf_counter()
    panel = bundled_panel()
    print(
        f"load + universe: {time.perf_counter() - t0:.2f}s, {panel['pool'].nunique()} pools, "
        f"{panel['date'].nunique()} days"
    )
    inputs = bt.inputs_from_panel(panel, VAULT)
    preds = bt.prediction_panel(panel, VAULT)
    cases = [
        ("vault strategy (protocol caps, exact solver + gas pruning)", VAULT.strategy),
        ("no caps (exact solver + gas pruning)", VAULT.strategy.model_copy(update={"protocol_caps": {}})),
        (
            "no caps, no gas/min trade (no pruning)",
            VAULT.strategy.model_copy(update={"protocol_caps": {}, "gas_usd": 0.0, "min_trade_usd": 0.0}),
        ),
    ]
    if not args.skip_cvxpy:
        cases.insert(
            1,
            (
                "vault strategy through cvxpy (use_fast_path=false)",
                VAULT.strategy.model_copy(update={"use_fast_path": False}),
            ),
        )
    for label, strategy in cases:
        t0, c0 = time.perf_counter(), time.process_time()
        res = bt.run_backtest(inputs, preds, strategy)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"1 year daily x {len(inputs.pools)} pools, {label}: {dt:.2f}s wall, {cpu:.2f}s CPU "
            f"({1e3 * dt / len(res.steps):.2f} ms/step), final wealth {res.wealth.iloc[-1]:,.0f}"
            f"{'  OK' if dt < 1 else '  (target < 1 s)'}"
        )
    t0 = time.perf_counter()
    bt.prediction_panel(panel, VAULT)
    print(
        f"prediction panel (production's weekly refits, CV selection at each): {time.perf_counter() - t0:.2f}s"
    )
    t0 = time.perf_counter()
    bt.prediction_panel(panel, VAULT, estimator="ewm_predictor")
    print(f"prediction panel (weekly refits, estimator pinned: no CV): {time.perf_counter() - t0:.2f}s")

    points = load_grids(GRIDS)[args.grid].points()
    t0, c0 = time.perf_counter(), time.process_time()
    for p in points:
        run_point(panel, VAULT, p)
    serial, serial_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"grid {args.grid}: {len(points)} points serial (plain Python): {serial:.1f}s wall, {serial_cpu:.1f}s CPU "
        f"({serial / len(points):.2f}s/point)"
    )
    if args.skip_dagster:
        return

    from dagster import DagsterInstance

    from midfreq_assets.defs.vault.backtests import GRID_POINTS_PER_RUN
    from midfreq_assets.defs.vault.grid_sensor import register_grid_points
    from midfreq_resources.io.lake import write_parquet
    from midfreq_resources.io.parquet_io_manager import ParquetIOManager

    with tempfile.TemporaryDirectory() as tmp:
        home, lake = Path(tmp) / "home", str(Path(tmp) / "lake")
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(home)
        io = ParquetIOManager(root=lake)
        write_parquet(io.partition_path([VAULT.name, "backtest_panel"], None), panel)
        instance = DagsterInstance.get()
        keys = register_grid_points(instance, [VAULT], GRIDS)[VAULT.name]
        keys = [p.name for p in points if p.name in set(keys)]
        per_run = args.points_per_run or GRID_POINTS_PER_RUN
        # the order of the dynamic partitions (registration order): ranges of consecutive keys
        ordered = instance.get_dynamic_partitions(f"{VAULT.name}_grid_points")
        ordered = [k for k in ordered if k in set(keys)]
        chunks = [ordered[i : i + per_run] for i in range(0, len(ordered), per_run)]
        t0, c0 = time.perf_counter(), _cpu()
        with ProcessPoolExecutor(args.workers) as pool:  # a worker takes the next run when free
            ok = sum(pool.map(_run_chunk, [(str(home), lake, c) for c in chunks]))
        dag, dag_cpu = time.perf_counter() - t0, _cpu() - c0
        print(
            f"grid {args.grid}: {len(keys)} partitions through Dagster in {len(chunks)} runs of <= {per_run}, "
            f"{args.workers} concurrent: {dag:.1f}s wall, {dag_cpu:.1f}s CPU ({ok}/{len(keys)} materialized)"
            f"{'  OK' if dag < 60 else '  (target < 60 s)'}; speed-up vs serial x{serial / dag:.2f}"
        )


if __name__ == "__main__":
    main()
