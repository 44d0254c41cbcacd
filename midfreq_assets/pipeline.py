"""``midfreq pipeline``: the whole chain on any corpus, for every vault, over the days the corpus covers.

With ``--corpus ROOT`` it serves ROOT with the replay server (``MIDFREQ_DEPLOYMENT=replay``: no
request can reach a live service) and derives every range from what ROOT holds
(:mod:`midfreq_resources.replay.coverage`); without, it uses the ``MIDFREQ_*_URL``s (default: the
live services) over ``--start..--end``. Each stage is one Dagster run (a single-run backfill of its
range) on the instance in ``DAGSTER_HOME``, so ``dagster dev`` shows the runs afterwards:

1. DefiLlama ingestion, then token prices (a price failure is reported, the yield chain goes on:
   adjusted yields flag what has no price);
2. Binance klines per covered segment (no klines in the corpus: reported, nothing to run);
3. per vault: adjusted yields + features, weekly models, the real positions of the live days
   (a vault with ``positions:``), predictions + rebalance, the trade ticket and its execution (the
   live days; a simulated vault: its last day, dry run), backtest panel, every point of each grid,
   the grid's report (an empty universe holds cash and is reported);
4. the price research per klines segment: features, weekly models per interval, predictions,
   signal reports.

A stage whose prerequisite failed is skipped; the others run; the exit status is non-zero when any
stage failed. ``make demo`` is this command on the bundled recording, with ``--execution-server``:
a local execution endpoint receives the live day's orders.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from midfreq_resources.io.lake import read_parquet
from midfreq_resources.replay.coverage import KlinesCoverage, klines_coverage, yields_coverage
from midfreq_resources.replay.server import ReplayServer
from midfreq_resources.settings import DATA_LAKE_ENV, DEFAULT_DATA_LAKE, REPO_ROOT, env_or

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
CONFIG_DIR_ENV = "MIDFREQ_CONFIG_DIR"
DEPLOYMENT_ENV = "MIDFREQ_DEPLOYMENT"
EXECUTION_URL_ENV = "MIDFREQ_EXECUTION_URL"
DEFAULT_CORPUS = REPO_ROOT / "recorded"
DEFAULT_GRID = "default"
# The summary below is what a person reads; Dagster's per-event DEBUG lines stay in the run history.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
HEADLINE = ["name", "role", "log_growth", "invested_share", "excess_over_bar", "excess_sharpe", "max_drawdown",
            "turnover", "cost_drag"]


@dataclass(frozen=True)
class Stage:
    """One run (or one run per partition) of a job: over a day range, its weekly keys in a range, given
    partitions, or unpartitioned; ``needs`` names the stages whose failure makes it pointless."""

    name: str
    job: str
    start: dt.date | None = None
    end: dt.date | None = None
    weekly: bool = False
    partitions: tuple[str, ...] = ()
    assets: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    grid: tuple[str, str] | None = None  # (vault, grid): register its points, one run per point

    @property
    def span(self) -> str:
        if self.grid:
            return f"grid {self.grid[1]}"
        if self.start:
            return f"{self.start}...{self.end}" + (" (weekly)" if self.weekly else "")
        return ", ".join(self.partitions)


@dataclass(frozen=True)
class Plan:
    stages: list[Stage]
    notes: list[str]  # what the corpus covers and what was left out, and why


def _clip(first: dt.date, last: dt.date, start: dt.date | None, end: dt.date | None) -> tuple[dt.date, dt.date]:
    return max(first, start) if start else first, min(last, end) if end else last


def plan_stages(project, yields_range: tuple[dt.date, dt.date] | None, klines: KlinesCoverage | None,
                grids: Sequence[str], klines_range: tuple[dt.date, dt.date] | None = None) -> Plan:
    """Every stage for ``project`` on the days available: ``yields_range`` (DefiLlama days), ``klines``
    (Binance days per interval, or ``klines_range`` when nothing can be scanned)."""
    stages: list[Stage] = []
    notes: list[str] = []
    if yields_range is None:
        notes.append("no DefiLlama pool history in range: no yield stage runs")
    else:
        first, last = _clip(*yields_range, project.earliest_start, None)
        if first > last:
            notes.append(f"DefiLlama days end {yields_range[1]}, before the first vault starts ({project.earliest_start})")
        else:
            stages += _yield_stages(project, first, last, grids, notes)
    if project.binance is None:
        notes.append("no binance.yaml: no klines collected")
    else:
        segments = _klines_segments(project, klines, klines_range, notes)
        for i, (s, e) in enumerate(segments):
            stages.append(Stage(f"binance_klines_{i}", "binance_klines_refresh", s, e))
        futures = project.binance.futures
        if futures is not None and futures.funding_rate:  # monthly partitions: the months the segment touches
            stages += [Stage(f"binance_funding_{i}", "binance_funding_refresh", s.replace(day=1), e.replace(day=1))
                       for i, (s, e) in enumerate(segments)]
        if project.price_research is not None:
            stages += _price_research_stages(project, segments, klines)
    return Plan(stages, notes)


def _yield_stages(project, first: dt.date, last: dt.date, grids: Sequence[str], notes: list[str]) -> list[Stage]:
    stages = [
        Stage("defillama", "nightly_refresh", first, last, assets=("pool_history", "pool_metadata",
                                                                     "universe_exclusions", "pool_rankings")),
        Stage("token_prices", "nightly_refresh", first, last, assets=("token_prices",)),
    ]
    available = {p.stem for p in project.grids_dir.glob("*.yaml")}
    for name in grids:
        if name not in available:
            notes.append(f"grid {name!r} not in {project.grids_dir} (have {sorted(available)}): not run")
    chosen = [g for g in grids if g in available]
    for vault in project.vaults.values():
        v = vault.name
        start = max(first, vault.start_date)
        if start > last:
            notes.append(f"vault {v} starts {vault.start_date}, after the data ends ({last}): not run")
            continue
        live = _live_days(vault, start, last, notes)
        positions = [Stage(f"{v}_positions", f"{v}_positions", *live, needs=("defillama",))] if live else []
        orders_from = live[0] if live else last  # a simulated vault: the last day's ticket, dry run
        stages += [
            Stage(f"{v}_features", f"{v}_features", start, last, needs=("defillama",)),
            Stage(f"{v}_fitted_models", f"{v}_fitted_models", start, last, weekly=True, needs=(f"{v}_features",)),
            *positions,
            Stage(f"{v}_decisions", f"{v}_decisions", start, last,
                  needs=(f"{v}_fitted_models", *(s.name for s in positions))),
            Stage(f"{v}_orders", f"{v}_orders", orders_from, last, needs=(f"{v}_decisions",)),
            Stage(f"{v}_backtest_inputs", f"{v}_backtest_inputs", needs=(f"{v}_features",)),
        ]
        for g in chosen:
            stages += [Stage(f"{v}_backtest_runs_{g}", f"{v}_backtest_runs", grid=(v, g),
                             needs=(f"{v}_backtest_inputs",)),
                       Stage(f"{v}_backtest_report_{g}", f"{v}_backtest_report", partitions=(g,),
                             needs=(f"{v}_backtest_runs_{g}",))]
    return stages


def _live_days(vault, start: dt.date, last: dt.date, notes: list[str]) -> tuple[dt.date, dt.date] | None:
    """The days of ``start..last`` a vault with ``positions:`` decides from its real positions."""
    if vault.positions is None:
        return None
    first = max(start, vault.positions.live_from or start)
    if first > last:
        notes.append(f"vault {vault.name}: positions.live_from {vault.positions.live_from} is after the data ends "
                     f"({last}): simulated on every day")
        return None
    return first, last


def _klines_segments(project, klines: KlinesCoverage | None, klines_range, notes: list[str]
                     ) -> list[tuple[dt.date, dt.date]]:
    b = project.binance
    if klines is None:
        if klines_range is None:
            return []
        s, e = _clip(*klines_range, b.start_date, None)
        return [(s, e)] if s <= e else []
    first, last = klines_range if klines_range else (None, None)
    segments = klines.segments(max(b.start_date, first) if first else b.start_date, last)
    if not segments:
        notes.append(f"no Binance klines of {', '.join(b.symbols)} ({', '.join(b.intervals)}) in the corpus from "
                     f"{b.start_date}: klines and price research not run")
    for interval, days in klines.days.items():
        if not days:
            notes.append(f"no Binance {interval} klines in the corpus")
    return segments


def _price_research_stages(project, segments: list[tuple[dt.date, dt.date]],
                           klines: KlinesCoverage | None) -> list[Stage]:
    stages: list[Stage] = []
    for i, (s, e) in enumerate(segments):
        collected = (f"binance_klines_{i}",)
        stages.append(Stage(f"price_research_features_{i}", "price_research_features", s, e, needs=collected))
        intervals = klines.intervals_in(s, e) if klines is not None else list(project.price_research.intervals)
        fitted = [f"price_research_{i_}_fitted_models_{i}" for i_ in intervals if i_ in project.price_research.intervals]
        stages += [Stage(name, name.removesuffix(f"_{i}"), s, e, weekly=True, needs=(f"price_research_features_{i}",))
                   for name in fitted]
        stages.append(Stage(f"price_research_predictions_{i}", "price_research_predictions", s, e,
                            needs=(f"price_research_features_{i}", *fitted)))
    if segments:
        stages.append(Stage("price_research_signal_reports", "price_research_signal_reports",
                            needs=tuple(f"price_research_predictions_{i}" for i in range(len(segments)))))
    return stages


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def _weekly_keys(job, start: dt.date, end: dt.date) -> list[str]:
    """The job's weekly partition keys whose Monday falls in ``start..end``."""
    keys = job.partitions_def.get_partition_keys(
        current_time=dt.datetime.combine(end + dt.timedelta(days=8), dt.time(), tzinfo=dt.UTC))
    return [k for k in keys if start <= dt.date.fromisoformat(k) <= end]


def stage_runs(defs, instance, project, stage: Stage) -> list[dict]:
    """The keyword arguments of each ``execute_in_process`` of a stage (none: nothing to run)."""
    from dagster import AssetKey

    job = defs.resolve_job_def(stage.job)
    base: dict = {"run_config": QUIET, "instance": instance, "raise_on_error": False}
    if stage.assets:
        base["asset_selection"] = [AssetKey.from_user_string(a) for a in stage.assets]
    if stage.grid:
        from midfreq_assets.defs.vault.grid_sensor import register_grid_points
        from midfreq_assets.domain.backtest.grids import load_grid, validate_grid

        vault = project.vault(stage.grid[0])
        register_grid_points(instance, [vault], project.grids_dir)
        points = validate_grid(load_grid(project.grids_dir / f"{stage.grid[1]}.yaml"), vault)
        return [{**base, "partition_key": p.name} for p in points]
    if stage.weekly:
        keys = _weekly_keys(job, stage.start, stage.end)
        return [{**base, "tags": {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}}] if keys else []
    if stage.start:
        return [{**base, "tags": {RANGE_START_TAG: stage.start.isoformat(), RANGE_END_TAG: stage.end.isoformat()}}]
    if stage.partitions:
        return [{**base, "partition_key": k} for k in stage.partitions]
    return [base]


def summarize(result) -> list[str]:
    """One line per materialized asset (rows, pools, headline, where), then failed checks."""
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
        for extra in ("pools", "headline", "days_without_universe"):
            if extra in meta and meta[extra].value not in (0, ""):
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


def failure_message(result) -> str:
    """The first step failure of a run, one line: the innermost error's message (without the
    exception's module path: a lake error reads ``<path> (asset ..., partition ...): ...``)."""
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = getattr(event.event_specific_data, "error", None)
            while error is not None and error.cause is not None:
                error = error.cause
            text = error.message.strip().splitlines()[0] if error is not None and error.message else event.message
            return f"{event.step_key}: {text.removeprefix('dagster._core.definitions.events.Failure: ')}"[:400]
    return "run failed"


def print_backtest_headlines(stages: list[Stage], done: dict[str, str], instance=None) -> None:
    """Each report's headline (the walk-forward against the strongest constrained benchmark on the
    same out-of-sample days), its first table (walk-forward, bar, hindsight best point, the other
    benchmarks of the bar's set, with invested shares), how sure we are (the excess's interval, PBO,
    deflated Sharpe on the excess and plain), the chosen point per window, and where the HTML report is."""
    from dagster import AssetKey

    from midfreq_resources.io.parquet_io_manager import ParquetIOManager

    io = ParquetIOManager()
    for stage in stages:
        if not stage.job.endswith("_backtest_report") or done.get(stage.name) != "succeeded":
            continue
        vault = stage.job.removesuffix("_backtest_report")
        for grid in stage.partitions:
            path = io.partition_path([vault, "backtest_report"], grid)
            if not path.exists():
                continue
            table = read_parquet(path)
            meta = _report_metadata(instance, AssetKey([vault, "backtest_report"]), grid)
            print(f"\n== {vault} backtest report '{grid}' (walk-forward, grid points and benchmarks on the same "
                  "out-of-sample days; ratios over base rate)")
            if "headline" in meta:
                print(f"  {meta['headline'].value}")
            if table["log_growth"].isna().all():
                print(f"  no pool was in {vault}'s universe on any day: every point holds cash (see "
                      "universe_exclusions for the reasons)")
            else:  # the walk-forward, the bar, the hindsight best point, the other benchmarks of the bar's set
                from midfreq_assets.domain.backtest.report import lead_table

                lead = lead_table(table) if "role" in table else table
                print(lead[[c for c in HEADLINE if c in lead]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
            for key in ("evaluation", "walk_forward_windows"):
                if key in meta:
                    print(f"\n{meta[key].value}")
            print(f"  HTML report: {path.with_suffix('.html')}")


def print_live_loop(stages: list[Stage], done: dict[str, str]) -> None:
    """Each vault's last ticket, what the execution endpoint answered, and the reconciliation."""
    from midfreq_assets.domain.portfolio.reconcile import drift_table
    from midfreq_resources.io.parquet_io_manager import ParquetIOManager

    io = ParquetIOManager()
    for stage in stages:
        if not stage.job.endswith("_orders") or done.get(stage.name) != "succeeded":
            continue
        vault, day = stage.job.removesuffix("_orders"), stage.end.isoformat()
        orders_path = io.partition_path([vault, "trade_orders"], day)
        exec_path = io.partition_path([vault, "order_executions"], day)
        if not (orders_path.exists() and exec_path.exists()):
            continue
        orders, executions = read_parquet(orders_path), read_parquet(exec_path)
        weights = read_parquet(io.partition_path([vault, "rebalance_weights"], day))
        source = str(weights["positions_source"].iloc[0]) if "positions_source" in weights else "simulated"
        if orders.empty and source == "simulated":
            continue  # a simulated vault with nothing to trade: nothing to show
        print(f"\n== {vault} trade ticket {day} (started from {source}; {len(orders)} order(s); "
              f"ticket: {orders_path.with_suffix('.json')})")
        if len(orders):
            shown = orders.merge(executions[["idempotency_key", "status", "filled_usd"]], on="idempotency_key")
            print(shown[["side", "symbol", "chain", "protocol", "token_symbol", "amount_usd",
                         "expected_annual_gain_usd", "gas_usd", "status", "filled_usd"]].to_string(
                index=False, float_format=lambda v: f"{v:,.2f}"))
        endpoint = executions["endpoint"].iloc[0] if len(executions) else "dry_run"
        print(f"  execution: {endpoint}; statuses {executions['status'].value_counts().to_dict()}")
        drift = drift_table(weights)
        if len(drift):
            print("  reconciliation vs yesterday's target after accrual (largest drift first, share of wealth):")
            print(drift.head(5)[["pool", "symbol", "expected_usd", "actual_usd", "drift_share"]].to_string(
                index=False, float_format=lambda v: f"{v:,.4f}"))


def _report_metadata(instance, key, partition: str) -> dict:
    """The latest materialization metadata of a report partition (empty without an instance)."""
    if instance is None:
        return {}
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None or event.asset_materialization.partition != partition:
        return {}
    return dict(event.asset_materialization.metadata)


def run_plan(plan: Plan, instance=None) -> dict[str, str]:
    """Run every stage in order on ``instance`` (default: ``DAGSTER_HOME``'s, else an ephemeral
    one); a stage whose prerequisite did not succeed is skipped."""
    from dagster import DagsterInstance

    from midfreq_assets.definitions import defs
    from midfreq_assets.project import current_project

    project = current_project()
    if instance is None:
        instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
    status: dict[str, str] = {}
    for stage in plan.stages:
        print(f"\n== {stage.name}: {stage.job} {stage.span}")
        blocked = [n for n in stage.needs if status.get(n, "succeeded") != "succeeded"]
        if blocked:
            status[stage.name] = "skipped"
            print(f"  skipped: needs {', '.join(blocked)} ({', '.join(status[n] for n in blocked)})")
            continue
        runs = stage_runs(defs, instance, project, stage)
        if not runs:
            status[stage.name] = "succeeded"
            print("  nothing to run in this range (no partition of the job falls in it)")
            continue
        started = time.perf_counter()
        job = defs.resolve_job_def(stage.job)
        results = [job.execute_in_process(**kw) for kw in runs]
        ok = all(r.success for r in results)
        status[stage.name] = "succeeded" if ok else "FAILED"
        print(f"  {status[stage.name].lower() if ok else 'FAILED'} in {time.perf_counter() - started:.1f}s "
              f"({len(results)} run(s))")
        for result in results:
            print("\n".join(summarize(result)))
            if not result.success:
                print(f"  error: {failure_message(result)}")
    return status


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from exc


def add_pipeline_command(sub) -> None:
    """Register ``midfreq pipeline`` on the console script's subcommands."""
    p = sub.add_parser(
        "pipeline",
        help="run every stage (ingestion, yields, research, rebalance, backtests, price research) on a corpus",
        description="Run the whole chain, one Dagster run per stage, for every vault of the config dir, over "
        "the days the corpus covers (or --start..--end). Exits non-zero when a stage failed.",
    )
    p.add_argument("--corpus", type=Path, default=None,
                   help="recorded directory to replay (defillama/, binance/); without it, the MIDFREQ_*_URLs "
                   "(default: the live services) over --start..--end")
    p.add_argument("--config-dir", type=Path, default=None, help="configuration directory (default: configs/)")
    p.add_argument("--start", type=_date, default=None, help="first day (default: the corpus's first)")
    p.add_argument("--end", type=_date, default=None, help="last day (default: the corpus's last)")
    p.add_argument("--lake", default=None, help="data lake root or URL (default: $MIDFREQ_DATA_LAKE or data_lake/)")
    p.add_argument("--grid", action="append", dest="grids", default=None, metavar="NAME",
                   help=f"grid file(s) of configs/grids to backtest (repeatable; default: {DEFAULT_GRID})")
    p.add_argument("--execution-server", action="store_true",
                   help="start a local execution server (midfreq execution-server) for the run and send the live "
                   "days' orders to it (MIDFREQ_EXECUTION_URL); without it, orders go to execution.url / "
                   "$MIDFREQ_EXECUTION_URL, else dry run")
    p.set_defaults(func=cmd_pipeline)


def cmd_pipeline(args: argparse.Namespace) -> int:
    if args.config_dir is not None:
        os.environ[CONFIG_DIR_ENV] = str(args.config_dir.resolve())
    if args.lake:
        os.environ[DATA_LAKE_ENV] = args.lake
    if args.start and args.end and args.start > args.end:
        print(f"midfreq pipeline: --start {args.start} is after --end {args.end}")
        return 2
    if args.corpus is None and not (args.start and args.end):
        print("midfreq pipeline: without --corpus, give --start and --end (nothing to scan for the range)")
        return 2
    from midfreq_assets.domain.config.base import ConfigError
    from midfreq_assets.project import current_project

    try:
        project = current_project()
    except ConfigError as exc:
        print(f"midfreq pipeline: {exc}")
        return 2
    grids = args.grids or [DEFAULT_GRID]
    if args.corpus is None:
        plan = plan_stages(project, (args.start, args.end), None, grids, (args.start, args.end))
        with _execution_server(args.execution_server) as execution:
            return _execute(plan, f"the MIDFREQ_*_URLs over {args.start}..{args.end}{execution}")
    root = args.corpus.resolve()
    if not root.is_dir():
        print(f"midfreq pipeline: corpus {root} is not a directory")
        return 2
    yields = yields_coverage(root)
    yields_range = None
    notes = []
    if yields is not None:
        yields_range = _clip(yields.first, yields.last, args.start, args.end)
        notes.append(f"corpus DefiLlama: {yields.charts} pool histories, {yields.first}..{yields.last}")
        if yields.unreadable:
            notes.append(f"corpus DefiLlama: {len(yields.unreadable)} chart file(s) unreadable: {yields.unreadable[:3]}")
        if yields_range[0] > yields_range[1]:
            yields_range = None
    klines = None
    if project.binance is not None:
        b = project.binance
        klines = klines_coverage(root, b.market, b.symbols, b.intervals)
        for interval, days in klines.days.items():
            if days:
                notes.append(f"corpus Binance {interval}: {len(days)} day(s), {min(days)}..{max(days)}")
    plan = plan_stages(project, yields_range, klines, grids,
                       (args.start, args.end) if (args.start or args.end) else None)
    plan = Plan(plan.stages, notes + plan.notes)
    os.environ[DEPLOYMENT_ENV] = "replay"  # every source from the replay server: never the internet
    with ReplayServer(root) as server, _execution_server(args.execution_server) as execution:
        os.environ.update(server.env())
        return _execute(plan, f"replaying {root} at {server.base_url}{execution}")


@contextlib.contextmanager
def _execution_server(wanted: bool) -> Iterator[str]:
    """A local execution server for the run when ``wanted`` (its URL in ``MIDFREQ_EXECUTION_URL``)."""
    if not wanted:
        yield ""
        return
    from midfreq_resources.execution.server import ExecutionServer

    with ExecutionServer() as server:
        previous = os.environ.get(EXECUTION_URL_ENV)
        os.environ.update(server.env())
        try:
            yield f"; orders to the local execution server at {server.base_url}"
        finally:
            if previous is None:
                os.environ.pop(EXECUTION_URL_ENV, None)
            else:
                os.environ[EXECUTION_URL_ENV] = previous


def _execute(plan: Plan, source: str) -> int:
    print(f"midfreq pipeline: {source}")
    for note in plan.notes:
        print(f"  {note}")
    from dagster import DagsterInstance

    instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
    status = run_plan(plan, instance)
    print_backtest_headlines(plan.stages, status, instance)
    print_live_loop(plan.stages, status)
    failed = [n for n, s in status.items() if s == "FAILED"]
    skipped = [n for n, s in status.items() if s == "skipped"]
    print(f"\nStages: {len(status) - len(failed) - len(skipped)} succeeded, {len(failed)} failed, "
          f"{len(skipped)} skipped (a prerequisite failed)")
    for name in failed:
        print(f"  FAILED: {name}")
    print(f"Data lake: {env_or(DATA_LAKE_ENV, DEFAULT_DATA_LAKE)}")
    print(f"Run history: {os.environ.get('DAGSTER_HOME', '(ephemeral)')}; browse with `make dev`")
    return 1 if failed else 0
