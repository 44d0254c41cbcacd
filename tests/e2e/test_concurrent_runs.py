"""Run history agrees with the disk on the default local instance (deploy/local/dagster.yaml): a CLI
backfill and the nightly day never write the same files at once, a killed run does not stay
STARTED, its pool slot comes back, and a rerun repairs the lake. Real `dagster asset materialize`
processes against the replay server; the daemon's own monitoring iterations."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, EventRecordsFilter

from midfreq_resources.io.lake import read_daily, stored_days
from tests.dagster_cli import materialize_argv

REPO = Path(__file__).parents[2]
ASSETS = "pool_history,pool_metadata,universe_exclusions"
LOCAL_YAML = REPO / "deploy" / "local" / "dagster.yaml"

pytestmark = pytest.mark.slow


def _home(tmp_path: Path, **monitoring: int) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = yaml.safe_load(LOCAL_YAML.read_text())
    config["run_monitoring"].update(monitoring)
    config["storage"]["custom"]["config"]["base_dir"] = str(home)  # what {env: DAGSTER_HOME} gives the CLIs
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def _launch(home: Path, lake: Path, replay_env, *partition: str) -> subprocess.Popen:
    env = {**os.environ, "DAGSTER_HOME": str(home), "MIDFREQ_DATA_LAKE": str(lake), **replay_env.env()}
    where = (
        ["--partition-range", f"{partition[0]}...{partition[1]}"]
        if len(partition) == 2
        else ["--partition", partition[0]]
    )
    return subprocess.Popen(
        materialize_argv(ASSETS, *where),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait(proc: subprocess.Popen, timeout: float = 600) -> str:
    """The process's output once it exits; killed (with its output in the failure) past ``timeout``."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out = proc.communicate()[0]
        raise AssertionError(f"run still going after {timeout} s:\n{out[-4000:]}") from None


def _wait_for_step(instance: DagsterInstance, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not _step_windows(instance) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _step_windows(instance), f"no ingest step started within {timeout} s"


def _step_windows(instance: DagsterInstance) -> dict[str, tuple[float, float]]:
    """run id -> (start, end) of its defillama_ingest step."""
    out: dict[str, list[float]] = {}
    for kind in (DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
        for rec in instance.get_event_records(EventRecordsFilter(event_type=kind)):
            entry = rec.event_log_entry
            if entry.step_key == "defillama_ingest":
                out.setdefault(entry.run_id, []).append(entry.timestamp)
    return {run: (min(ts), max(ts)) for run, ts in out.items()}


@pytest.mark.timeout(1800)  # two CLI processes each loading the code location; slow on a loaded machine
def test_backfill_and_nightly_run_together_never_overlap_their_writes(tmp_path, replay_env):
    home, lake = _home(tmp_path), tmp_path / "lake"
    replay_env.slow(r"/pools$", 3000)  # each ingest step holds its slot >= 3 s
    backfill = _launch(home, lake, replay_env, "2024-07-01", "2024-07-05")
    with DagsterInstance.from_config(str(home)) as instance:  # the nightly fires while the backfill writes
        _wait_for_step(instance)
    nightly = _launch(home, lake, replay_env, "2024-07-03")  # a day inside the backfill's range
    outputs = [_wait(p) for p in (backfill, nightly)]
    assert [backfill.returncode, nightly.returncode] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    with DagsterInstance.from_config(str(home)) as instance:
        windows = sorted(_step_windows(instance).values())
        runs = instance.get_runs()
        assert len(windows) == 2 and all(r.status == DagsterRunStatus.SUCCESS for r in runs)
    (first_start, first_end), (second_start, _) = windows
    assert second_start >= first_end, f"ingest steps overlapped: {windows}"  # the pool serialized them
    assert stored_days(lake, "pool_history") == [f"2024-07-0{d}" for d in range(1, 6)]
    assert not list(lake.rglob("*.tmp"))


def test_killed_run_is_failed_by_monitoring_frees_its_slot_and_a_rerun_repairs(tmp_path, replay_env):
    import logging

    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import EmptyWorkspaceTarget
    from dagster._daemon.monitoring.concurrency import execute_concurrency_slots_iteration
    from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration

    shipped = yaml.safe_load(LOCAL_YAML.read_text())["run_monitoring"]
    assert shipped["enabled"] and 0 < shipped["max_runtime_seconds"] <= 4 * 3600
    assert shipped["free_slots_after_run_end_seconds"] <= 120
    # the same settings, with a runtime bound a test can wait for
    home, lake = _home(tmp_path, max_runtime_seconds=5, free_slots_after_run_end_seconds=1), tmp_path / "lake"
    replay_env.slow(r"/pools$", 120_000, times=1)  # the first run hangs inside its ingest step
    victim = _launch(home, lake, replay_env, "2024-07-01", "2024-07-03")
    with DagsterInstance.from_config(str(home)) as instance:
        _wait_for_step(instance)
        os.killpg(victim.pid, signal.SIGKILL)  # the operator's kill -9, or an OOM kill
        victim.wait(timeout=30)
        (run,) = instance.get_runs()
        assert run.status == DagsterRunStatus.STARTED  # what the run history says without monitoring
        assert instance.event_log_storage.get_concurrency_run_ids() == {run.run_id}  # it holds the slot

        time.sleep(6)  # past max_runtime_seconds
        log = logging.getLogger("run_monitoring_test")
        with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as context:
            list(execute_run_monitoring_iteration(context, log))
            assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
            time.sleep(2)
            list(execute_concurrency_slots_iteration(context, log))
        assert not instance.event_log_storage.get_concurrency_run_ids()  # the slot went back to the pool

    rerun = _launch(home, lake, replay_env, "2024-07-01", "2024-07-03")
    out = _wait(rerun)
    assert rerun.returncode == 0, out[-2000:]
    assert sorted(p.name for p in (lake / "pool_history").iterdir()) == [
        "2024-07.parquet"
    ]  # no temp file left
    assert stored_days(lake, "pool_history") == ["2024-07-01", "2024-07-02", "2024-07-03"]
    history = read_daily(lake, "pool_history", days=["2024-07-02"])
    assert len(history) >= 20 and not history.duplicated(["pool", "date"]).any()
    assert not list(lake.rglob("*.tmp"))
