"""``midfreq pipeline``: the whole chain on any corpus, for every vault, over the days the corpus covers.

With ``--corpus ROOT`` it serves ROOT with the replay server (``MIDFREQ_DEPLOYMENT=replay``: no
request can reach a live service) and derives every range from what ROOT holds
(:mod:`midfreq_resources.replay.coverage`); without, it uses the ``MIDFREQ_*_URL``s (default: the
live services) over ``--start..--end``. Each stage is one Dagster run (a single-run backfill of its
range) on the instance in ``DAGSTER_HOME``, filed under the code location of ``workspace.yaml``, so
``dagster dev`` shows the runs afterwards on the job pages and the timeline:

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
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from midfreq_resources.dagster_compat import execute_in_process_from
from midfreq_resources.io.lake import read_parquet
from midfreq_resources.io.replayed_corpus import MARKER, DataEnd, write_data_end
from midfreq_resources.replay.coverage import KlinesCoverage, klines_coverage, yields_coverage
from midfreq_resources.replay.server import ReplayServer
from midfreq_resources.settings import DATA_LAKE_ENV, DEFAULT_DATA_LAKE, REPO_ROOT, env_or

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
DEFAULT_CORPUS = REPO_ROOT / "recorded"
DEFAULT_GRID = "default"
#: The code location of ``workspace.yaml`` (``make dev``): every run is filed under it, so the job pages,
#: the timeline and the asset pages' run links list the pipeline's runs.
CODE_MODULE, CODE_LOCATION = "midfreq_assets.definitions", "midfreq"
# The summary below is what a person reads; Dagster's per-event DEBUG lines stay in the run history.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
HEADLINE = [
    "name",
    "role",
    "log_growth",
    "invested_share",
    "excess_over_bar",
    "excess_sharpe",
    "max_drawdown",
    "turnover",
    "cost_drag",
]


@dataclass(frozen=True)
class Stage:
    """One job of the code location run over its range: ``runs`` are the keyword arguments of each
    ``execute_in_process`` (a range run, a partition, or unpartitioned)."""

    name: str
    job: str
    rule: str
    assets: frozenset  # AssetKey: what the job materializes
    runs: tuple[dict, ...] = ()
    span: str = ""
    vault: str | None = None
    grids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    stages: list[Stage]
    notes: list[str]  # what the corpus covers and what was left out, and why


@dataclass(frozen=True)
class DataRange:
    """The days the data covers: DefiLlama days (``yields``) and Binance klines (segments per interval)."""

    yields: tuple[dt.date, dt.date] | None
    klines: KlinesCoverage | None = None
    klines_range: tuple[dt.date, dt.date] | None = None  # without a scannable corpus: the given range


def _clip(
    first: dt.date, last: dt.date, start: dt.date | None, end: dt.date | None
) -> tuple[dt.date, dt.date]:
    return max(first, start) if start else first, min(last, end) if end else last


def _range_tags(first: str, last: str) -> dict[str, str]:
    return {RANGE_START_TAG: first, RANGE_END_TAG: last}


def _keys_in(job, first: dt.date, last: dt.date) -> list[str]:
    """The job's time partition keys whose window starts in ``first..last`` (monthly: the months
    holding any of those days)."""
    pdef = job.partitions_def
    keys = pdef.get_partition_keys(
        current_time=dt.datetime.combine(last + dt.timedelta(days=40), dt.time(), tzinfo=dt.UTC)
    )
    out = []
    for key in keys:
        window = pdef.time_window_for_partition_key(key)
        start, end = window.start.date(), (window.end - dt.timedelta(days=1)).date()
        weekly = pdef.cron_schedule.split()[-1] != "*"
        if (start <= last and end >= first) if not weekly else first <= start <= last:
            out.append(key)
    return out


def _grid_chunks(points: list[str], registered: list[str]) -> list[list[str]]:
    """Runs of at most ``grid_chunk_size(len(points))`` points, each a contiguous range of the registered keys."""
    from midfreq_assets.defs.vault.backtests import grid_chunk_size

    size = grid_chunk_size(len(points))
    position = {k: i for i, k in enumerate(registered)}
    ordered = sorted(points, key=position.__getitem__)
    chunks: list[list[str]] = []
    for key in ordered:
        if chunks and len(chunks[-1]) < size and position[key] == position[chunks[-1][-1]] + 1:
            chunks[-1].append(key)
        else:
            chunks.append([key])
    return chunks


def _job_runs(
    job, rule: str, project, vault, data: DataRange, grids: Sequence[str], instance, notes: list[str]
) -> tuple[list[dict], str]:
    """The runs of one pipeline job under its rule, and a one-line span for the summary."""
    from midfreq_assets import stages

    if rule in (stages.DAYS, stages.MONTHS, stages.WEEKS, stages.LIVE_DAYS, stages.ORDER_DAYS):
        if data.yields is None:
            return [], ""
        first, last = data.yields
        if vault is not None:
            first = max(first, vault.start_date)
        if first > last:
            return [], ""
        if rule == stages.LIVE_DAYS or rule == stages.ORDER_DAYS:
            live = _live_days(vault, first, last)
            if live is None:
                if rule == stages.LIVE_DAYS:
                    return [], ""
                live = (last, last)  # a simulated vault: its last day's ticket, dry run
            first, last = live
        if rule in (stages.DAYS, stages.LIVE_DAYS, stages.ORDER_DAYS):
            return [{"tags": _range_tags(first.isoformat(), last.isoformat())}], f"{first}...{last}"
        keys = _keys_in(job, first, last)
        if not keys:
            return [], ""
        return [{"tags": _range_tags(keys[0], keys[-1])}], f"{keys[0]}...{keys[-1]} ({rule})"
    if rule == stages.ONCE:
        return [{}], "unpartitioned"
    if rule in (stages.GRID_POINTS, stages.GRID_FILES):
        from midfreq_assets.defs.vault.backtests import grid_partitions_name
        from midfreq_assets.defs.vault.grid_sensor import register_grid_points
        from midfreq_assets.domain.backtest.grids import load_grid, validate_grid

        if rule == stages.GRID_FILES:
            return [{"partition_key": g} for g in grids], ", ".join(grids)
        register_grid_points(instance, [vault], project.grids_dir)
        registered = list(instance.get_dynamic_partitions(grid_partitions_name(vault.name)))
        runs = []
        for g in grids:
            points = [p.name for p in validate_grid(load_grid(project.grids_dir / f"{g}.yaml"), vault)]
            for chunk in _grid_chunks(points, registered):
                runs.append(
                    {"partition_key": chunk[0]}
                    if len(chunk) == 1
                    else {"tags": _range_tags(chunk[0], chunk[-1])}
                )
        return runs, f"grid {', '.join(grids)}"
    # Binance: per covered segment
    segments = _klines_segments(project, data, notes)
    interval = job.metadata.get(stages.INTERVAL)
    interval = interval.value if hasattr(interval, "value") else interval
    runs, spans = [], []
    for s, e in segments:
        if interval and data.klines is not None and interval not in data.klines.intervals_in(s, e):
            continue
        if rule == stages.KLINES_DAYS:
            runs.append({"tags": _range_tags(s.isoformat(), e.isoformat())})
            spans.append(f"{s}...{e}")
            continue
        keys = _keys_in(job, s, e)
        if keys:
            runs.append(
                {"tags": _range_tags(keys[0], keys[-1])} if len(keys) > 1 else {"partition_key": keys[0]}
            )
            spans.append(f"{keys[0]}...{keys[-1]}")
    return runs, "; ".join(spans)


def _live_days(vault, start: dt.date, last: dt.date) -> tuple[dt.date, dt.date] | None:
    """The days of ``start..last`` a vault with ``positions:`` decides from its real positions."""
    if vault is None or vault.positions is None:
        return None
    first = max(start, vault.positions.live_from or start)
    return (first, last) if first <= last else None


def _klines_segments(project, data: DataRange, notes: list[str]) -> list[tuple[dt.date, dt.date]]:
    b = project.binance
    if b is None:
        return []
    if data.klines is None:
        if data.klines_range is None:
            return []
        s, e = _clip(*data.klines_range, b.start_date, None)
        return [(s, e)] if s <= e else []
    first, last = data.klines_range if data.klines_range else (None, None)
    return data.klines.segments(max(b.start_date, first) if first else b.start_date, last)


def plan_stages(defs, project, data: DataRange, grids: Sequence[str], instance) -> Plan:
    """Every pipeline job of ``defs`` (job metadata ``midfreq/plan``, :mod:`midfreq_assets.stages`) with
    its runs over the days ``data`` covers, ordered by the asset graph: a job comes after the jobs that
    materialize its assets' parents."""
    from midfreq_assets import stages

    notes: list[str] = []
    if data.yields is None:
        notes.append("no DefiLlama pool history in range: no yield stage runs")
    else:
        first, last = _clip(*data.yields, project.earliest_start, None)
        if first > last:
            notes.append(
                f"DefiLlama days end {data.yields[1]}, before the first vault starts ({project.earliest_start})"
            )
            data = DataRange(None, data.klines, data.klines_range)
        else:
            data = DataRange((first, last), data.klines, data.klines_range)
            for vault in project.vaults.values():
                if vault.start_date > last:
                    notes.append(
                        f"vault {vault.name} starts {vault.start_date}, after the data ends ({last}): not run"
                    )
                elif (
                    vault.positions is not None
                    and _live_days(vault, max(first, vault.start_date), last) is None
                ):
                    notes.append(
                        f"vault {vault.name}: positions.live_from {vault.positions.live_from} is after the "
                        f"data ends ({last}): simulated on every day"
                    )
    available = {p.stem for p in project.grids_dir.glob("*.yaml")}
    for name in grids:
        if name not in available:
            notes.append(f"grid {name!r} not in {project.grids_dir} (have {sorted(available)}): not run")
    chosen = tuple(g for g in grids if g in available)
    if project.binance is None:
        notes.append("no binance.yaml: no klines collected")
    elif data.klines is not None:
        b = project.binance
        if not _klines_segments(project, data, []):
            notes.append(
                f"no Binance klines of {', '.join(b.symbols)} ({', '.join(b.intervals)}) in the corpus from "
                f"{b.start_date}: klines and price research not run"
            )
        for interval, days in data.klines.days.items():
            if not days:
                notes.append(f"no Binance {interval} klines in the corpus")

    jobs = []
    for job in defs.resolve_all_job_defs():
        meta = job.metadata or {}
        rule = meta.get(stages.PLAN)
        if rule is None:
            continue
        rule = getattr(rule, "value", rule)
        vault_name = getattr(meta.get(stages.VAULT), "value", meta.get(stages.VAULT))
        vault = project.vaults.get(vault_name) if vault_name else None
        if vault_name and (vault is None or (data.yields is not None and vault.start_date > data.yields[1])):
            continue
        jobs.append((job, rule, vault))
    graph = defs.resolve_asset_graph()
    producers: dict = {}
    for job, _, _ in jobs:
        for key in job.asset_layer.executable_asset_keys:
            producers.setdefault(key, job.name)
    ordered = _topological(jobs, graph, producers)
    out = []
    dropped: set[str] = set()  # pipeline jobs with nothing to run here; a job all of whose producers are
    for (
        job,
        rule,
        vault,
    ) in ordered:  # among them has nothing to read either (e.g. price reports without klines)
        own = set(job.asset_layer.executable_asset_keys)
        upstream = {producers[p] for key in own for p in graph.get(key).parent_keys if p in producers} - {
            job.name
        }
        runs, span = (
            _job_runs(job, rule, project, vault, data, chosen, instance, notes)
            if not (upstream and upstream <= dropped)
            else ([], "")
        )
        if not runs:
            dropped.add(job.name)
            continue
        out.append(
            Stage(
                job.name,
                job.name,
                rule,
                frozenset(job.asset_layer.executable_asset_keys),
                tuple(runs),
                span,
                vault.name if vault else None,
                chosen if rule in (stages.GRID_POINTS, stages.GRID_FILES) else (),
            )
        )
    return Plan(out, notes)


def _topological(jobs: list, graph, producers: dict) -> list:
    """Jobs in an order where each follows the producers of its assets' parents (ties: the order
    the code location defines them)."""
    names = [job.name for job, _, _ in jobs]
    needs: dict[str, set[str]] = {}
    for job, _, _ in jobs:
        own = set(job.asset_layer.executable_asset_keys)
        parents = {p for key in own for p in graph.get(key).parent_keys} - own
        needs[job.name] = {producers[p] for p in parents if p in producers} - {job.name}
    done: list[str] = []
    pending = list(names)
    while pending:
        ready = next((n for n in pending if needs[n] <= set(done)), None)
        if ready is None:  # a cycle between jobs (none today): keep the definition order
            ready = pending[0]
        done.append(ready)
        pending.remove(ready)
    by_name = {job.name: (job, rule, vault) for job, rule, vault in jobs}
    return [by_name[n] for n in done]


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def summarize(result) -> list[str]:
    """One line per materialized asset (rows over its partitions, how many, pools, headline, where),
    then failed checks."""
    lines = []
    by_key: dict[str, list] = {}
    for event in result.get_asset_materialization_events():
        by_key.setdefault(event.asset_key.to_user_string(), []).append(event.materialization.metadata)
    for key, metas in by_key.items():
        rows = sum(int(m["dagster/row_count"].value) for m in metas if "dagster/row_count" in m)
        last = metas[-1]
        parts = [f"  {key:<40}", f"rows={rows}"]
        if len(metas) > 1:
            parts.append(f"partitions={len(metas)}")
        for extra in ("pools", "headline", "days_without_universe"):
            if extra in last and last[extra].value not in (0, ""):
                parts.append(f"{extra}={last[extra].value}")
        path = last.get("path")
        if path is not None:
            parts.append(f"-> {Path(str(path.value)).parent}")
        lines.append(" ".join(parts))
    failed_checks = [  # what happened in one sentence (the check's description), the details in the UI
        f"  check {e.asset_key.to_user_string()}:{e.check_name}: "
        f"{'warning' if e.severity.value == 'WARN' else 'FAILED'}: "
        f"{e.description or 'see its metadata in the UI'}"
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
            text = (
                error.message.strip().splitlines()[0]
                if error is not None and error.message
                else event.message
            )
            return f"{event.step_key}: {text.removeprefix('dagster._core.definitions.events.Failure: ')}"[
                :400
            ]
    return "run failed"


def print_backtest_headlines(plan: Plan, status: dict[str, str], lake: str, instance=None) -> None:
    """Each report's headline (the walk-forward against the strongest constrained benchmark on the
    same out-of-sample days), its first table (walk-forward, bar, hindsight best point, the other
    benchmarks of the bar's set, with invested shares), how sure we are (the excess's interval, PBO,
    deflated Sharpe on the excess and plain), the chosen point per window, and where the HTML report is."""
    from dagster import AssetKey

    from midfreq_assets import stages as rules
    from midfreq_resources.io.parquet_io_manager import ParquetIOManager

    io = ParquetIOManager(root=lake)
    for stage in plan.stages:
        if stage.rule != rules.GRID_FILES or status.get(stage.name) != "succeeded":
            continue
        vault = stage.vault
        for grid in stage.grids:
            path = io.partition_path([vault, "backtest_report"], grid)
            if not path.exists():
                continue
            table = read_parquet(path)
            meta = _report_metadata(instance, AssetKey([vault, "backtest_report"]), grid)
            print(
                f"\n== {vault} backtest report '{grid}' (walk-forward, grid points and benchmarks on the same "
                "out-of-sample days; ratios over base rate)"
            )
            if "headline" in meta:
                print(f"  {meta['headline'].value}")
            if table["log_growth"].isna().all():
                print(
                    f"  no pool was in {vault}'s universe on any day: every point holds cash (see "
                    "universe_exclusions for the reasons)"
                )
            else:  # the walk-forward, the bar, the hindsight best point, the other benchmarks of the bar's set
                from midfreq_assets.domain.backtest.report import lead_table

                lead = lead_table(table) if "role" in table else table
                print(
                    lead[[c for c in HEADLINE if c in lead]].to_string(
                        index=False, float_format=lambda v: f"{v:.4f}"
                    )
                )
            for key in ("evaluation", "walk_forward_windows"):
                if key in meta:
                    print(f"\n{_printable(meta[key].value)}")
            print(f"  HTML report: {path.with_suffix('.html')}")


def _printable(value) -> str:
    """A metadata value for the terminal: an inline table as aligned text, anything else as is."""
    records = getattr(value, "records", None)
    if records is None:
        return str(value)
    import pandas as pd

    return pd.DataFrame([r.data for r in records]).to_string(index=False) if records else "(none)"


def print_live_loop(plan: Plan, status: dict[str, str], lake: str) -> None:
    """Each vault's last ticket, what the execution endpoint answered, and the reconciliation."""
    from midfreq_assets import stages as rules
    from midfreq_assets.domain.portfolio.reconcile import drift_table
    from midfreq_resources.io.parquet_io_manager import ParquetIOManager

    io = ParquetIOManager(root=lake)
    for stage in plan.stages:
        if stage.rule != rules.ORDER_DAYS or status.get(stage.name) != "succeeded":
            continue
        vault, day = stage.vault, stage.runs[-1]["tags"][RANGE_END_TAG]
        orders_store, exec_store = io.daily([vault, "trade_orders"]), io.daily([vault, "order_executions"])
        if not (day in orders_store.stored_days() and day in exec_store.stored_days()):
            continue
        orders, executions = orders_store.read([day]), exec_store.read([day])
        weights = io.daily([vault, "rebalance_weights"]).read([day])
        source = str(weights["positions_source"].iloc[0]) if "positions_source" in weights else "simulated"
        if orders.empty and source == "simulated":
            continue  # a simulated vault with nothing to trade: nothing to show
        print(
            f"\n== {vault} trade ticket {day} (started from {source}; {len(orders)} order(s); "
            f"ticket: {io.lake.joinpath(vault, 'trade_orders', f'{day}.json')})"
        )
        if len(orders):
            shown = orders.merge(
                executions[["idempotency_key", "status", "filled_usd"]], on="idempotency_key"
            )
            print(
                shown[
                    [
                        "side",
                        "symbol",
                        "chain",
                        "protocol",
                        "token_symbol",
                        "amount_usd",
                        "expected_annual_gain_usd",
                        "gas_usd",
                        "status",
                        "filled_usd",
                    ]
                ].to_string(index=False, float_format=lambda v: f"{v:,.2f}")
            )
        endpoint = executions["endpoint"].iloc[0] if len(executions) else "dry_run"
        print(f"  execution: {endpoint}; statuses {executions['status'].value_counts().to_dict()}")
        drift = drift_table(weights)
        if len(drift):
            print(
                "  reconciliation vs yesterday's target after accrual (largest drift first, share of wealth):"
            )
            print(
                drift.head(5)[["pool", "symbol", "expected_usd", "actual_usd", "drift_share"]].to_string(
                    index=False, float_format=lambda v: f"{v:,.4f}"
                )
            )


def _report_metadata(instance, key, partition: str) -> dict:
    """The latest materialization metadata of a report partition (empty without an instance)."""
    if instance is None:
        return {}
    event = instance.get_latest_materialization_event(key)
    if (
        event is None
        or event.asset_materialization is None
        or event.asset_materialization.partition != partition
    ):
        return {}
    return dict(event.asset_materialization.metadata)


@dataclass
class StageTiming:
    wall_s: float
    cpu_s: float
    runs: int
    peak_rss_mb: float | None = None


def _required_inputs(defs) -> dict:
    """Per asset, the parents it loads through a required input: their failure makes it pointless. Not
    the optional inputs (``optional`` input metadata: e.g. adjusted yields flag what has no token price)
    nor the plain deps an asset reads itself and checks (yesterday's weights, the day's positions,
    token prices for an order's token amount)."""
    out: dict = {}
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assets_def = getattr(graph.get(key), "assets_def", None)
        if assets_def is None:
            continue
        inputs = {name: assets_def.node_def.input_def_named(name) for name in assets_def.keys_by_input_name}
        out[key] = {
            in_key
            for name, in_key in assets_def.keys_by_input_name.items()
            if not inputs[name].dagster_type.is_nothing  # a plain dep: the asset reads and checks it
            and not (inputs[name].metadata or {}).get("optional")
        }
    return out


@dataclass
class StageOutcome:
    """What one stage's runs did, in a form a worker process can send back."""

    ok: bool
    wall_s: float
    cpu_s: float
    runs: int
    materialized: set  # AssetKey
    blocked: dict  # AssetKey -> why (a failed blocking check)
    lines: list[str]  # the summary and errors to print
    peak_rss_mb: float | None = None  # the process's peak resident memory while it ran the stage (Linux)


def _reset_peak_rss() -> bool:
    """Start a new peak-RSS window for this process (Linux: ``clear_refs`` 5 resets ``VmHWM``), so a
    worker reports each stage's own peak, not the largest of every stage it ran."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    """``VmHWM`` of this process in MB (None where /proc has no such figure)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def execute_stage(stage: Stage, defs, instance, resources: dict | None) -> StageOutcome:
    """Every run of ``stage`` (in this process), and what each materialized or blocked."""
    windowed = _reset_peak_rss()
    started, cpu = time.perf_counter(), time.process_time()
    job = defs.resolve_job_def(stage.job)
    results = [
        execute_in_process_from(
            job,
            CODE_MODULE,
            CODE_LOCATION,
            run_config=QUIET,
            instance=instance,
            raise_on_error=False,
            resources=resources,
            **kw,
        )
        for kw in stage.runs
    ]
    materialized, blocked, lines = set(), {}, []
    for result in results:
        materialized |= {e.asset_key for e in result.get_asset_materialization_events()}
        blocked |= {
            e.asset_key: f"blocking check {e.check_name} failed"
            for e in result.get_asset_check_evaluations()
            if not e.passed and e.blocking
        }
        lines += summarize(result)
        if not result.success:
            lines.append(f"  error: {failure_message(result)}")
    return StageOutcome(
        all(r.success for r in results),
        time.perf_counter() - started,
        time.process_time() - cpu,
        len(results),
        materialized,
        blocked,
        lines,
        _peak_rss_mb() if windowed else None,
    )


def stage_needs(plan: Plan, defs) -> dict[str, set[str]]:
    """Per stage, the earlier stages materializing a parent of its assets (what it must wait for)."""
    graph = defs.resolve_asset_graph()
    producer: dict = {}
    for stage in plan.stages:
        for key in stage.assets:
            producer.setdefault(key, stage.name)
    return {
        stage.name: {
            producer[p]
            for key in stage.assets
            for p in graph.get(key).parent_keys
            if p in producer and producer[p] != stage.name
        }
        for stage in plan.stages
    }


def run_plan(
    plan: Plan,
    defs,
    instance,
    resources: dict | None = None,
    timings: dict[str, StageTiming] | None = None,
    workers: _Workers | None = None,
) -> dict[str, str]:
    """Run every stage on ``instance`` with ``resources`` (passed to each run: the lake, the sources, the
    execution endpoint), each once the stages it depends on are done: in this process, or on ``workers``
    (processes sharing the instance's run history), as many at once as there are workers. A stage is
    skipped when an asset it loads through a required input failed, was blocked by a failed blocking
    check, or was skipped."""
    required = _required_inputs(defs)
    needs = stage_needs(plan, defs)
    by_name = {s.name: s for s in plan.stages}
    lost: dict = {}  # asset key -> why it cannot be read downstream
    status: dict[str, str] = {}
    pending = [s.name for s in plan.stages]
    running: dict = {}  # future -> stage name

    def finish(stage: Stage, outcome: StageOutcome) -> None:
        status[stage.name] = "succeeded" if outcome.ok else "FAILED"
        if timings is not None:
            timings[stage.name] = StageTiming(
                outcome.wall_s, outcome.cpu_s, outcome.runs, outcome.peak_rss_mb
            )
        peak = f", peak RSS {outcome.peak_rss_mb:.0f} MB" if outcome.peak_rss_mb is not None else ""
        print(f"\n== {stage.name}: {stage.span}")
        print(
            f"  {status[stage.name].lower() if outcome.ok else 'FAILED'} in {outcome.wall_s:.1f}s wall, "
            f"{outcome.cpu_s:.1f}s CPU ({outcome.runs} run(s)){peak}"
        )
        print("\n".join(outcome.lines))
        lost.update(outcome.blocked)
        for key in stage.assets:
            if key not in outcome.materialized and not outcome.ok:
                lost.setdefault(key, "FAILED")

    while pending or running:
        ready = [n for n in pending if needs[n] <= set(status)]
        for name in ready:
            if workers is not None and len(running) >= workers.size:
                break
            pending.remove(name)
            stage = by_name[name]
            needed = {p for key in stage.assets for p in required.get(key, set())}
            blocked = sorted({k.to_user_string() for k in needed if k in lost})
            if blocked:
                status[name] = "skipped"
                lost.update({key: "skipped" for key in stage.assets})
                print(
                    f"\n== {name}: {stage.span}\n  skipped: needs {', '.join(blocked)} "
                    f"({', '.join(sorted({lost[k] for k in needed if k in lost}))})"
                )
                continue
            if workers is None:
                finish(stage, execute_stage(stage, defs, instance, resources))
            else:
                running[workers.submit(stage)] = name
        if running:
            done = workers.wait(list(running))
            for future in done:
                finish(by_name[running.pop(future)], future.result())
        elif pending and not ready:  # nothing runnable and nothing running: a cycle (none today)
            name = pending.pop(0)
            status[name] = "skipped"
            print(f"\n== {name}: skipped: its prerequisites never finished")
    return status


class _Workers:
    """Processes that run stages: each loads the code location from the same config directory and runs on
    the instance of ``DAGSTER_HOME`` with the same resources (spawned: no thread or open database of this
    process is carried over)."""

    def __init__(
        self,
        size: int,
        config_dir: Path,
        lake: str,
        sources: dict[str, str] | None,
        execution_url: str | None,
        home: str,
        data_end: DataEnd | None = None,
    ) -> None:
        import concurrent.futures
        import multiprocessing

        self.size = size
        self._futures = concurrent.futures
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=size,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(str(config_dir), lake, sources, execution_url, home, data_end),
        )
        for _ in range(size):  # start loading now, while this process plans and runs the first stage
            self._pool.submit(_worker_ready)

    def submit(self, stage: Stage):
        return self._pool.submit(_worker_run, stage)

    def wait(self, futures: list):
        return self._futures.wait(futures, return_when=self._futures.FIRST_COMPLETED).done

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


_WORKER: dict = {}


def _worker_init(
    config_dir: str,
    lake: str,
    sources: dict[str, str] | None,
    execution_url: str | None,
    home: str,
    data_end: DataEnd | None = None,
) -> None:
    from dagster import DagsterInstance

    from midfreq_assets.defs.resources import pipeline_resources
    from midfreq_assets.partitions import replaying
    from midfreq_assets.project import project_at, using

    with using(project_at(Path(config_dir))), replaying(data_end):
        _WORKER["defs"] = code_location()
    _WORKER["instance"] = DagsterInstance.from_config(home)
    _WORKER["resources"] = pipeline_resources(lake, sources, execution_url)


def _worker_ready() -> bool:
    return True


def _worker_run(stage: Stage) -> StageOutcome:
    try:
        return execute_stage(stage, _WORKER["defs"], _WORKER["instance"], _WORKER["resources"])
    finally:
        release_memory()


def release_memory() -> None:
    """Hand a finished stage's heap back to the system: an idle worker would otherwise keep its last
    stage's peak resident (glibc keeps freed arenas) while the other worker runs the next big stage."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


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
    p.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="recorded directory to replay (defillama/, binance/); without it, the MIDFREQ_*_URLs "
        "(default: the live services) over --start..--end",
    )
    p.add_argument(
        "--config-dir", type=Path, default=None, help="configuration directory (default: configs/)"
    )
    p.add_argument("--start", type=_date, default=None, help="first day (default: the corpus's first)")
    p.add_argument("--end", type=_date, default=None, help="last day (default: the corpus's last)")
    p.add_argument(
        "--lake", default=None, help="data lake root or URL (default: $MIDFREQ_DATA_LAKE or data_lake/)"
    )
    p.add_argument(
        "--grid",
        action="append",
        dest="grids",
        default=None,
        metavar="NAME",
        help=f"grid file(s) of configs/grids to backtest (repeatable; default: {DEFAULT_GRID})",
    )
    p.add_argument(
        "--execution-server",
        action="store_true",
        help="start a local execution server (midfreq execution-server) for the run and send the live "
        "days' orders to it (MIDFREQ_EXECUTION_URL); without it, orders go to execution.url / "
        "$MIDFREQ_EXECUTION_URL, else dry run",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        metavar="N",
        help="processes running the stages whose inputs are ready (default: min(2, cores); 1: one "
        "stage after the other in this process)",
    )
    p.set_defaults(func=cmd_pipeline)


def cmd_pipeline(args: argparse.Namespace) -> int:
    if args.start and args.end and args.start > args.end:
        print(f"midfreq pipeline: --start {args.start} is after --end {args.end}")
        return 2
    if args.corpus is None and not (args.start and args.end):
        print("midfreq pipeline: without --corpus, give --start and --end (nothing to scan for the range)")
        return 2
    from midfreq_assets.domain.config.base import ConfigError, config_dir
    from midfreq_assets.project import project_at

    try:
        project = project_at(args.config_dir if args.config_dir is not None else config_dir())
    except ConfigError as exc:
        print(f"midfreq pipeline: {exc}")
        return 2
    lake = args.lake or env_or(DATA_LAKE_ENV, DEFAULT_DATA_LAKE)
    grids = args.grids or [DEFAULT_GRID]
    if args.corpus is None:
        data = DataRange((args.start, args.end), None, (args.start, args.end))
        with _execution_server(args.execution_server) as (execution_url, note):
            return _execute(
                project,
                data,
                grids,
                lake,
                None,
                execution_url,
                f"the MIDFREQ_*_URLs over {args.start}..{args.end}{note}",
                [],
                max(1, args.workers),
                data_end=None,
            )
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
            notes.append(
                f"corpus DefiLlama: {len(yields.unreadable)} chart file(s) unreadable: {yields.unreadable[:3]}"
            )
        if yields_range[0] > yields_range[1]:
            yields_range = None
    klines = None
    if project.binance is not None:
        b = project.binance
        klines = klines_coverage(root, b.market, b.symbols, b.intervals)
        for interval, days in klines.days.items():
            if days:
                notes.append(f"corpus Binance {interval}: {len(days)} day(s), {min(days)}..{max(days)}")
    data = DataRange(yields_range, klines, (args.start, args.end) if (args.start or args.end) else None)
    klines_days = [d for days in (klines.days.values() if klines is not None else ()) for d in days]
    end = DataEnd(yields.last if yields is not None else None, max(klines_days, default=None), str(root))
    with ReplayServer(root) as server, _execution_server(args.execution_server) as (execution_url, note):
        return _execute(
            project,
            data,
            grids,
            lake,
            server.env(),
            execution_url,
            f"replaying {root} at {server.base_url}{note}",
            notes,
            max(1, args.workers),
            data_end=end,
        )


@contextlib.contextmanager
def _execution_server(wanted: bool) -> Iterator[tuple[str | None, str]]:
    """A local execution server for the run when ``wanted``: its URL, handed to the runs' execution client."""
    if not wanted:
        yield None, ""
        return
    from midfreq_resources.execution.server import ExecutionServer

    with ExecutionServer() as server:
        yield server.base_url, f"; orders to the local execution server at {server.base_url}"


def _execute(
    project,
    data: DataRange,
    grids: Sequence[str],
    lake: str,
    sources: dict[str, str] | None,
    execution_url: str | None,
    source: str,
    notes: list[str],
    workers: int = 1,
    timings: dict[str, StageTiming] | None = None,
    data_end: DataEnd | None = None,
) -> int:
    """Plan from the code location built on ``project`` (its calendars ending at ``data_end``: the replayed
    corpus's last day, None: yesterday, recorded in the lake for the UI), run with explicit resources
    (the lake, the replay server's URLs or the configured services, the execution endpoint) on
    ``workers`` processes, print the results."""
    from dagster import DagsterInstance

    from midfreq_assets.defs.resources import pipeline_resources
    from midfreq_assets.partitions import replaying
    from midfreq_assets.project import using

    print(f"midfreq pipeline: {source}")
    write_data_end(
        lake, data_end
    )  # a code location loaded later on this lake (make dev) ends where the data does
    if data_end is not None:
        print(
            f"  partition calendars end at the corpus's last day: DefiLlama {data_end.yields}, "
            f"Binance klines {data_end.klines or 'none'} ({lake}/{MARKER})"
        )
    with using(project), replaying(data_end):
        defs = code_location()
    resources = pipeline_resources(lake, sources, execution_url)
    home = os.environ.get("DAGSTER_HOME")
    with contextlib.ExitStack() as stack:
        if home is None and workers > 1:  # processes share a run history: a temporary one
            home = stack.enter_context(tempfile.TemporaryDirectory(prefix="midfreq-pipeline-home-"))
            write_local_instance(Path(home))
        instance = stack.enter_context(
            DagsterInstance.from_config(home) if home else DagsterInstance.ephemeral()
        )
        plan = plan_stages(defs, project, data, grids, instance)
        for note in notes + plan.notes:
            print(f"  {note}")
        pool = None
        if workers > 1:
            pool = _Workers(workers, project.config_dir, lake, sources, execution_url, home, data_end)
            stack.callback(pool.close)
            print(f"  {workers} worker processes run the stages whose inputs are ready")
        status = run_plan(plan, defs, instance, resources, timings, pool)
        print_backtest_headlines(plan, status, lake, instance)
        print_live_loop(plan, status, lake)
    failed = [n for n, s in status.items() if s == "FAILED"]
    skipped = [n for n, s in status.items() if s == "skipped"]
    print(
        f"\nStages: {len(status) - len(failed) - len(skipped)} succeeded, {len(failed)} failed, "
        f"{len(skipped)} skipped (a prerequisite failed)"
    )
    for name in failed:
        print(f"  FAILED: {name}")
    print(f"Data lake: {lake}")
    print(f"Run history: {os.environ.get('DAGSTER_HOME', '(temporary)')}; browse with `make dev`")
    return 1 if failed else 0


def write_local_instance(home: Path) -> None:
    """``home/dagster.yaml``: the local instance's settings (``deploy/local/dagster.yaml``) with the
    storage under ``home``."""
    import yaml

    shipped = REPO_ROOT / "deploy" / "local" / "dagster.yaml"
    config = yaml.safe_load(shipped.read_text()) if shipped.exists() else {}
    config["storage"] = {
        "custom": {
            "module": "midfreq_resources.instance.sqlite_storage",
            "class": "PooledSqliteStorage",
            "config": {"base_dir": str(home)},
        }
    }
    config["telemetry"] = {"enabled": False}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def code_location():
    """The code location's definitions, built now from the current project (``project.using``)."""
    from dagster import load_from_defs_folder

    return load_from_defs_folder(path_within_project=Path(__file__).parent)
