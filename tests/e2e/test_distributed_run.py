"""A real distributed run: steps on Celery workers, the lake on an S3 API, Dagster's storage in Postgres.

Starts Redis (Celery broker and result backend), moto's S3-compatible server, a throwaway Postgres
and two ``dagster-celery`` workers, then launches runs with Dagster's CLI under the production
profile, unchanged: ``deploy/production/dagster.yaml`` and ``celery.yaml``, ``MIDFREQ_DEPLOYMENT=production``,
``MIDFREQ_EXECUTOR=celery``, ``MIDFREQ_DATA_LAKE=s3://...``, sources from the replay server. Runs:
ingestion and prices for two weeks (one run, whose DefiLlama and price steps are independent), adjusted
yields and features for their month, the backtest panel, and grid points of ``backtest_runs`` as two concurrent
runs, as the grid sensor launches them. Asserts, from the events stored in Postgres, that every step
ran in a worker process and none in the launching CLI, that both workers took steps, and that the
Parquet files in the bucket are those of a local in-process run of the same assets, frame for frame.

The workers use Celery's solo pool: a step runs in the worker process itself (its pid is the
worker's) and a busy worker takes no second task, so two steps queued together go to two workers.
"""

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus
from upath import UPath

from midfreq_assets.definitions import defs
from midfreq_assets.defs.vault.grid_sensor import RANGE_END_TAG, RANGE_START_TAG, register_grid_points
from midfreq_assets.project import current_project
from midfreq_resources.io.lake import frame_to_parquet_bytes, read_parquet, write_parquet
from midfreq_resources.io.parquet_io_manager import ParquetIOManager

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

REPO = Path(__file__).parents[2]
PROFILE = REPO / "deploy" / "production"
BIN = Path(sys.executable).parent
VAULT = "usd_lending"
FIRST_DAY, LAST_DAY = "2024-06-06", "2024-06-19"  # two weeks: two weekly decisions per grid point
MONTH = "2024-06"  # the research month holding them (its days with data so far)
#: daily partitions, one range run (its DefiLlama and price steps are independent)
INGEST = ["pool_history", "pool_metadata", "universe_exclusions", "token_prices"]
#: monthly partitions (research panels), one run
RESEARCH = [f"{VAULT}/adjusted_yields", f"{VAULT}/features"]
PANEL = [f"{VAULT}/backtest_panel"]
GRID_RUNS, POINTS_PER_RUN = 2, 2
WORKERS = ("midfreq-w0", "midfreq-w1")
BUCKET, LAKE_PREFIX = "midfreq-lake", "lake"
RUN_TIMEOUT_S = 300
WORKER_START_TIMEOUT_S = 120
#: events a step emits while it executes (engine events about a step come from the launcher too)
STEP_EXECUTION_EVENTS = {
    DagsterEventType.STEP_START,
    DagsterEventType.STEP_OUTPUT,
    DagsterEventType.HANDLED_OUTPUT,
    DagsterEventType.LOADED_INPUT,
    DagsterEventType.ASSET_MATERIALIZATION,
    DagsterEventType.ASSET_CHECK_EVALUATION,
    DagsterEventType.STEP_SUCCESS,
}


def missing_celery_stack() -> str | None:
    """Why the Celery side cannot run here, or None (the services are checked by their fixtures)."""
    for module in ("dagster_celery", "redis", "s3fs"):
        if importlib.util.find_spec(module) is None:
            return f"{module} not installed (pip install '.[deploy]')"
    for script in ("dagster", "dagster-celery"):
        if not (BIN / script).exists():
            return f"{script} console script not found next to {sys.executable}"
    return None


def process_tree(root: int) -> set[int]:
    """``root`` and every live descendant (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += children.get(pid, [])
    return tree


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def stop_group(proc: subprocess.Popen) -> None:
    """Warm shutdown of a worker started in its own session (dagster-celery and its celery child)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def celery_workers(env: dict[str, str], logs: Path) -> Iterator[list[subprocess.Popen]]:
    """The deployment's worker command, twice (each in its own session, stopped on exit)."""
    procs = []
    try:
        for name in WORKERS:
            with (logs / f"{name}.log").open("w") as out:
                procs.append(
                    subprocess.Popen(
                        [
                            str(BIN / "dagster-celery"),
                            "worker",
                            "start",
                            "-A",
                            "dagster_celery.app",
                            "-y",
                            str(PROFILE / "celery.yaml"),
                            "-n",
                            name,
                            "-i",
                            "midfreq_assets.definitions",
                            "--",
                            "--pool=solo",
                        ],
                        env=env,
                        cwd=REPO,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        yield procs
    finally:
        for proc in procs:
            stop_group(proc)


def wait_until_ready(broker: str, procs: list[subprocess.Popen], logs: Path) -> None:
    """Until every worker answers a ping through the broker."""
    from celery import Celery

    probe = Celery(broker=broker)
    deadline, ready = time.monotonic() + WORKER_START_TIMEOUT_S, set()
    while ready != set(WORKERS):
        for name, proc in zip(WORKERS, procs, strict=True):
            assert proc.poll() is None, f"worker {name} exited:\n{tail(logs / f'{name}.log')}"
        assert time.monotonic() < deadline, "workers not ready: " + "\n".join(
            tail(logs / f"{n}.log") for n in WORKERS
        )
        ready = {host.split("@")[0] for reply in probe.control.ping(timeout=1) for host in reply}
    probe.close()


def dagster_cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [str(BIN / "dagster"), *args, "-m", "midfreq_assets.definitions"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_all(procs: list[tuple[subprocess.Popen, Path]]) -> None:
    for proc, log in procs:
        assert proc.wait(timeout=RUN_TIMEOUT_S) == 0, f"{' '.join(proc.args)} failed:\n{tail(log)}"


def grid_points(instance: DagsterInstance) -> list[list[str]]:
    """Register the grid points as partitions (as the grid sensor does); the first points, per run."""
    project = current_project()
    register_grid_points(instance, [project.vault(VAULT)], project.grids_dir)
    keys = instance.get_dynamic_partitions(f"{VAULT}_grid_points")[: GRID_RUNS * POINTS_PER_RUN]
    return [keys[i : i + POINTS_PER_RUN] for i in range(0, len(keys), POINTS_PER_RUN)]


def range_tags(first: str, last: str) -> dict[str, str]:
    return {RANGE_START_TAG: first, RANGE_END_TAG: last}


def launch_runs(env: dict[str, str], home: Path, logs: Path) -> tuple[set[int], list[str]]:
    """Every run through the CLI, as a deployment launches them; returns (CLI pids, grid points)."""
    with DagsterInstance.from_config(str(home)) as instance:
        chunks = grid_points(instance)
    ingest = (
        dagster_cli(
            [
                "asset",
                "materialize",
                "--select",
                ",".join(INGEST),
                "--partition-range",
                f"{FIRST_DAY}...{LAST_DAY}",
            ],
            env,
            logs / "ingest.log",
        ),
        logs / "ingest.log",
    )
    wait_all([ingest])
    research = (
        dagster_cli(
            ["asset", "materialize", "--select", ",".join(RESEARCH), "--partition", MONTH],
            env,
            logs / "research.log",
        ),
        logs / "research.log",
    )
    wait_all([research])
    panel = (
        dagster_cli(["asset", "materialize", "--select", ",".join(PANEL)], env, logs / "panel.log"),
        logs / "panel.log",
    )
    wait_all([panel])
    grid = [
        (
            dagster_cli(
                [
                    "job",
                    "execute",
                    "-j",
                    f"{VAULT}_backtest_runs",
                    "--tags",
                    json.dumps(range_tags(c[0], c[-1])),
                ],
                env,
                logs / f"grid{i}.log",
            ),
            logs / f"grid{i}.log",
        )
        for i, c in enumerate(chunks)
    ]
    wait_all(grid)
    return {p.pid for p, _ in [ingest, research, panel, *grid]}, [k for c in chunks for k in c]


def local_reference(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same assets, in process, on a local lake (the default deployment)."""
    monkeypatch.setenv("MIDFREQ_DATA_LAKE", str(lake))
    instance = DagsterInstance.ephemeral()

    def run(keys: list[str], tags: dict[str, str] | None = None) -> None:
        selection = [AssetKey.from_user_string(k) for k in keys]
        job = defs.resolve_implicit_job_def_def_for_assets(selection)
        assert job.execute_in_process(instance=instance, asset_selection=selection, tags=tags or {}).success

    run(INGEST, range_tags(FIRST_DAY, LAST_DAY))
    run(RESEARCH, {"dagster/partition": MONTH})
    run(PANEL)
    for chunk in grid_points(instance):
        assert (
            defs.resolve_job_def(f"{VAULT}_backtest_runs")
            .execute_in_process(instance=instance, tags=range_tags(chunk[0], chunk[-1]))
            .success
        )


def check_steps_ran_on_workers(
    instance: DagsterInstance, cli_pids: set[int], worker_of: dict[int, int]
) -> None:
    runs = instance.get_runs()
    assert len(runs) == 3 + GRID_RUNS
    workers_used, hosts = set(), set()
    launchers = set()
    for run in runs:
        assert run.status == DagsterRunStatus.SUCCESS, run.run_id
        events = [r.dagster_event for r in instance.all_logs(run.run_id) if r.dagster_event is not None]
        (launcher,) = {e.pid for e in events if e.event_type == DagsterEventType.RUN_START}
        assert launcher in cli_pids, f"run {run.run_id} was not orchestrated by a CLI launch"
        launchers.add(launcher)
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        started = {e.step_key for e in events if e.event_type == DagsterEventType.STEP_START}
        succeeded = {e.step_key for e in events if e.event_type == DagsterEventType.STEP_SUCCESS}
        assert started == succeeded == set(plan.step_keys_to_execute), run.run_id
        for event in events:
            if event.event_type in STEP_EXECUTION_EVENTS:
                assert event.pid != launcher, f"{event.event_type_value} of {event.step_key} in the launcher"
                assert event.pid in worker_of, (
                    f"{event.event_type_value} of {event.step_key} in pid {event.pid}, "
                    f"not a worker process {sorted(worker_of)}"
                )
                workers_used.add(worker_of[event.pid])
            worker = (
                event.event_type == DagsterEventType.ENGINE_EVENT
                and event.engine_event_data.metadata.get("Celery worker")
            )
            if worker:
                hosts.add(str(worker.value).split("@")[0])
    assert launchers == cli_pids, "one run per CLI launch"
    assert workers_used == set(range(len(WORKERS))), f"steps ran on workers {workers_used} only"
    assert hosts == set(WORKERS)


def check_lake_equals_local(fs, local_lake: Path, points: list[str]) -> None:
    root = f"{BUCKET}/{LAKE_PREFIX}/"
    in_bucket = {key.removeprefix(root) for key in fs.find(root)}
    local = {p.relative_to(local_lake).as_posix() for p in local_lake.rglob("*") if p.is_file()}
    expected = (
        {f"{a}/{MONTH}.parquet" for a in INGEST + RESEARCH}  # daily assets: a file per month
        | {f"{PANEL[0]}.parquet"}
        | {f"{VAULT}/backtest_runs/{p}.parquet" for p in points}
    )
    assert expected <= local, f"the local run misses {sorted(expected - local)[:5]}"
    assert in_bucket == local, (
        f"only in the bucket: {sorted(in_bucket - local)[:5]}; only local: {sorted(local - in_bucket)[:5]}"
    )
    for name in sorted(local):
        remote = read_parquet(UPath(f"s3://{root}{name}"))
        pd.testing.assert_frame_equal(remote, read_parquet(UPath(local_lake / name)), obj=name)
        assert len(remote) > 0 or not name.startswith(("pool_history/", f"{VAULT}/backtest_runs/")), name


@pytest.mark.skipif(missing_celery_stack() is not None, reason=str(missing_celery_stack()))
def test_steps_run_on_celery_workers_and_partitions_land_in_s3(
    redis_url: str,
    s3_env: dict[str, str],
    local_postgres: dict[str, str],
    replay_env,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import s3fs

    started = time.perf_counter()
    for name, value in local_postgres.items():
        monkeypatch.setenv(name, value)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(BUCKET)

    home, logs = tmp_path / "dagster_home", tmp_path / "logs"
    home.mkdir()
    logs.mkdir()
    shutil.copy(PROFILE / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        **local_postgres,
        **s3_env,
        **replay_env.env(),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # dagster-celery runs `celery` from PATH
        "DAGSTER_HOME": str(home),
        "MIDFREQ_DEPLOYMENT": "production",
        "MIDFREQ_EXECUTOR": "celery",
        "MIDFREQ_DATA_LAKE": f"s3://{BUCKET}/{LAKE_PREFIX}",
        "DAGSTER_CELERY_BROKER_URL": f"{redis_url}/0",
        "DAGSTER_CELERY_BACKEND_URL": f"{redis_url}/1",
    }
    local_lake = tmp_path / "local_lake"
    with celery_workers(env, logs) as workers:
        local_reference(local_lake, monkeypatch)  # in this process, while the workers import the code
        wait_until_ready(env["DAGSTER_CELERY_BROKER_URL"], workers, logs)
        launched = time.perf_counter()
        cli_pids, points = launch_runs(env, home, logs)
        distributed_s = time.perf_counter() - launched
        worker_of = {pid: i for i, w in enumerate(workers) for pid in process_tree(w.pid)}

    with DagsterInstance.from_config(str(home)) as instance:
        check_steps_ran_on_workers(instance, cli_pids, worker_of)
        (event,) = instance.fetch_materializations(AssetKey.from_user_string(PANEL[0]), limit=1).records
        assert str(event.asset_materialization.metadata["path"].value).startswith(f"s3://{BUCKET}/")
    check_lake_equals_local(fs, local_lake, points)
    print(f"distributed runs {distributed_s:.1f}s, whole test {time.perf_counter() - started:.1f}s")


def test_lake_listing_sees_partitions_other_workers_wrote(s3_env: dict[str, str]) -> None:
    """A worker lives for many steps, and s3fs caches listings per process: a partition another worker
    wrote since must still be found, by the IO manager's listing and by a later existence check."""
    import s3fs

    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(BUCKET)
    io = ParquetIOManager(root=f"s3://{BUCKET}/{LAKE_PREFIX}")
    other_worker = s3fs.S3FileSystem(skip_instance_cache=True)
    folder = io.lake / "pool_history"
    frame = pd.DataFrame({"date": pd.to_datetime([FIRST_DAY]), "pool": ["p0"], "apy": [0.05]})
    write_parquet(io.partition_path(["pool_history"], FIRST_DAY), frame)
    folder.fs.ls(folder.path)  # any listing of this process (glob, ls, walk) fills the cache
    other_worker.pipe(
        f"{BUCKET}/{LAKE_PREFIX}/pool_history/2024-06-07.parquet", frame_to_parquet_bytes(frame)
    )
    assert io.stored_partitions(["pool_history"]) == {FIRST_DAY, "2024-06-07"}
    other_worker.pipe(
        f"{BUCKET}/{LAKE_PREFIX}/pool_history/2024-06-08.parquet", frame_to_parquet_bytes(frame)
    )
    assert io.partition_path(["pool_history"], "2024-06-08").exists(), "a stale listing was left in the cache"
