"""The production profile (deploy/production/): instance and workspace YAML, object-store lake, executors.

No cluster and no managed database needed: the YAML is validated against Dagster's schemas, the
Parquet lake runs on fsspec's ``memory://`` filesystem, and, when PostgreSQL binaries and
dagster-postgres are installed, one materialization goes through a throwaway local Postgres.
"""

import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    ExecutorDefinition,
    in_process_executor,
    materialize,
    multiprocess_executor,
)
from dagster._config import process_config
from dagster._core.instance.config import ConcurrencyConfig, dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.workspace.config_schema import process_workspace_config
from upath import UPath

from midfreq_assets.defs.ingest.defillama import build_defillama_assets
from midfreq_assets.defs.resources import build_resources
from midfreq_assets.executors import (
    CELERY_BACKEND_ENV,
    CELERY_BROKER_ENV,
    EXECUTOR_ENV,
    MAX_CONCURRENT_ENV,
    ExecutorSelectionError,
    select_executor,
)
from midfreq_assets.partitions import daily_partitions
from midfreq_assets.project import current_project
from midfreq_resources.clients.defillama import DefiLlamaClient
from midfreq_resources.io.lake import read_parquet
from midfreq_resources.io.parquet_io_manager import ParquetIOManager

REPO = Path(__file__).parents[2]
defillama_assets = build_defillama_assets(current_project(), daily_partitions(current_project()))
PROFILE = REPO / "deploy" / "production"
DAY = "2024-07-01"
PG_ENV = {
    "DAGSTER_PG_HOST": "db.internal",
    "DAGSTER_PG_PORT": "6543",
    "DAGSTER_PG_USER": "dagster",
    "DAGSTER_PG_PASSWORD": "s3cret",
    "DAGSTER_PG_DB": "dagster_midfreq",
}
HAS_DAGSTER_POSTGRES = importlib.util.find_spec("dagster_postgres") is not None


def set_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def instance_dir(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROFILE / "dagster.yaml", home / "dagster.yaml")
    return home


# --------------------------------------------------------------------------- instance / workspace YAML
def test_production_instance_yaml_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, PG_ENV)
    home = instance_dir(tmp_path)
    config, custom_class = dagster_instance_config(str(home))  # raises on any schema error
    assert custom_class is None
    assert set(config["storage"]) == {"postgres"}
    assert config["scheduler"]["class"] == "DagsterDaemonScheduler"
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_retries"]["enabled"] is True and config["run_retries"]["max_retries"] >= 1
    assert config["telemetry"]["enabled"] is False

    ref = InstanceRef.from_dir(str(home))
    assert (ref.storage_data.module_name, ref.storage_data.class_name) == (
        "dagster_postgres",
        "DagsterPostgresStorage",
    )
    coordinator = ref.run_coordinator  # built from its config: validates the class config too
    assert isinstance(coordinator, QueuedRunCoordinator)
    effective = ConcurrencyConfig.from_concurrency_settings(
        config["concurrency"], coordinator.get_run_queue_config()
    )
    assert effective.pool_config.default_pool_limit == 1  # every lake-writing pool: one step at a time
    queue = effective.run_queue_config
    assert queue.max_concurrent_runs > 1
    limits = {lim["key"]: lim for lim in queue.tag_concurrency_limits}
    assert limits["dagster/backfill"]["limit"] >= 1
    assert limits["dagster/partition"] == {
        "key": "dagster/partition",
        "limit": 1,
        "value": {"applyLimitPerUniqueValue": True},
    }
    assert type(ref.scheduler).__name__ == "DagsterDaemonScheduler"
    assert type(ref.run_launcher).__name__ == "DefaultRunLauncher"


def test_production_yaml_holds_no_secrets() -> None:
    """Credentials are environment references (``{env: ...}``), never literal values."""
    config = yaml.safe_load((PROFILE / "dagster.yaml").read_text())
    pg = config["storage"]["postgres"]["postgres_db"]
    for field in ("hostname", "port", "username", "password", "db_name"):
        assert set(pg[field]) == {"env"}, f"postgres_db.{field} must come from the environment"
        assert pg[field]["env"].startswith("DAGSTER_PG_")


@pytest.mark.skipif(
    not HAS_DAGSTER_POSTGRES, reason="dagster-postgres not installed (pip install '.[deploy]')"
)
def test_postgres_storage_config_resolves_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster_postgres import DagsterPostgresStorage

    set_env(monkeypatch, PG_ENV)
    storage = yaml.safe_load((PROFILE / "dagster.yaml").read_text())["storage"]["postgres"]
    result = process_config(DagsterPostgresStorage.config_type(), storage)
    assert result.success, result.errors
    db = result.value["postgres_db"]
    assert (db["hostname"], db["port"], db["username"], db["password"], db["db_name"]) == (
        "db.internal",
        6543,
        "dagster",
        "s3cret",
        "dagster_midfreq",
    )
    assert db["scheme"] == "postgresql+psycopg2"  # SQLAlchemy 2.1's default psycopg 3 breaks NOTIFY


def test_production_workspace_yaml_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, {"MIDFREQ_CODE_SERVER_HOST": "user-code", "MIDFREQ_CODE_SERVER_PORT": "4000"})
    workspace = yaml.safe_load((PROFILE / "workspace.yaml").read_text())
    result = process_workspace_config(workspace)
    assert result.success, result.errors
    (entry,) = result.value["load_from"]
    assert entry["grpc_server"]["host"] == "user-code"
    assert entry["grpc_server"]["port"] == 4000
    assert entry["grpc_server"]["location_name"] == "midfreq"


# --------------------------------------------------------------------------- lake on a non-local filesystem
def replay_resources(replay_env, lake_root: str) -> dict[str, object]:
    res = build_resources()
    res["parquet_io_manager"] = ParquetIOManager(root=lake_root)
    res["defillama"] = DefiLlamaClient(
        base_url=f"{replay_env.base_url}/defillama/yields", max_attempts=2, backoff_base_s=0.01
    )
    return res


def test_lake_on_object_store_filesystem(
    replay_env, memory_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pool_history + pool_metadata for one day, stored through fsspec (``memory://`` stands in for s3://)."""
    local_default = tmp_path / "local_lake"
    monkeypatch.setenv("MIDFREQ_DATA_LAKE", str(local_default))
    result = materialize(
        defillama_assets, resources=replay_resources(replay_env, memory_lake), partition_key=DAY
    )
    assert result.success

    lake = UPath(memory_lake)
    history_path = lake / "pool_history" / f"{DAY[:7]}.parquet"  # daily partitions: one file per month
    meta_path = lake / "pool_metadata" / f"{DAY[:7]}.parquet"
    assert history_path.exists() and meta_path.exists()
    assert not local_default.exists(), "nothing may be written to the local default lake"
    leftovers = [p for p in lake.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"

    history = read_parquet(history_path)
    assert len(history) > 0
    assert (history["date"] == pd.Timestamp(DAY)).all()
    assert not history.duplicated(["pool", "date"]).any()
    meta = read_parquet(meta_path)
    assert set(meta["pool"]) <= set(history["pool"])

    mat = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert mat["pool_history"]["path"].value.startswith("memory://")
    assert mat["pool_history"]["dagster/row_count"].value == len(history)

    # a downstream read through the same IO manager, as the next asset of a run would do
    reread = materialize(
        [*defillama_assets],
        resources=replay_resources(replay_env, memory_lake),
        partition_key=DAY,
        selection=["pool_metadata", "universe_exclusions"],
    )
    assert reread.success
    assert read_parquet(meta_path).equals(meta)


# --------------------------------------------------------------------------- executor switch
@pytest.fixture
def no_executor_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    monkeypatch.delenv(MAX_CONCURRENT_ENV, raising=False)
    return monkeypatch


def job_executor(executor: ExecutorDefinition) -> ExecutorDefinition:
    """The executor that the asset job of a Definitions built with ``executor`` actually uses."""
    defs = Definitions(assets=defillama_assets, resources=build_resources(), executor=executor)
    return defs.resolve_implicit_global_asset_job_def().executor_def


def test_default_executor_is_multiprocess(no_executor_env) -> None:
    assert select_executor() is multiprocess_executor
    assert job_executor(select_executor()).name == "multiprocess"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("in_process", "in_process"), ("multiprocess", "multiprocess"), (" In-Process ", "in_process")],
)
def test_executor_from_env(no_executor_env, value: str, expected: str) -> None:
    no_executor_env.setenv(EXECUTOR_ENV, value)
    chosen = select_executor()
    assert chosen.name == expected
    assert chosen is (in_process_executor if expected == "in_process" else multiprocess_executor)
    assert job_executor(chosen).name == expected


def test_multiprocess_step_limit(no_executor_env) -> None:
    no_executor_env.setenv(MAX_CONCURRENT_ENV, "3")
    chosen = select_executor("multiprocess")
    assert chosen.name == "multiprocess_executor"
    assert chosen is not multiprocess_executor
    assert job_executor(chosen).name == "multiprocess_executor"
    no_executor_env.setenv(MAX_CONCURRENT_ENV, "many")
    with pytest.raises(ExecutorSelectionError, match=MAX_CONCURRENT_ENV):
        select_executor("multiprocess")


def test_in_process_executor_runs_assets(replay_env, memory_lake: str, no_executor_env) -> None:
    no_executor_env.setenv(EXECUTOR_ENV, "in_process")
    defs = Definitions(
        assets=defillama_assets,
        resources=replay_resources(replay_env, memory_lake),
        executor=select_executor(),
    )
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(partition_key=DAY, asset_selection=[AssetKey("pool_history")])
    assert result.success
    assert (UPath(memory_lake) / "pool_history" / f"{DAY[:7]}.parquet").exists()


@pytest.mark.parametrize(
    ("value", "package", "module", "name"),
    [
        ("k8s", "dagster-k8s", "dagster_k8s", "k8s"),
        ("celery", "dagster-celery", "dagster_celery", "celery"),
    ],
)
def test_cluster_executors(no_executor_env, value: str, package: str, module: str, name: str) -> None:
    no_executor_env.setenv(EXECUTOR_ENV, value)
    if importlib.util.find_spec(module) is None:
        with pytest.raises(ExecutorSelectionError, match=f"pip install {package}"):
            select_executor()
    else:
        assert name in select_executor().name


@pytest.mark.skipif(
    importlib.util.find_spec("dagster_celery") is None,
    reason="dagster-celery not installed (pip install '.[deploy]')",
)
def test_celery_broker_and_backend_from_env(no_executor_env) -> None:
    """Runs launched by schedules and sensors carry no run config: the URLs come from the environment,
    read when a run resolves its config (the job snapshot holds only the variable names)."""
    from dagster._core.system_config.objects import ResolvedRunConfig
    from dagster_celery import celery_executor

    for name in (CELERY_BROKER_ENV, CELERY_BACKEND_ENV):
        no_executor_env.delenv(name, raising=False)
    assert select_executor("celery") is celery_executor  # configured by the run config alone
    no_executor_env.setenv(CELERY_BACKEND_ENV, "redis://broker.internal:6379/1")
    with pytest.raises(ExecutorSelectionError, match=CELERY_BROKER_ENV):
        select_executor("celery")
    no_executor_env.setenv(CELERY_BROKER_ENV, "redis://broker.internal:6379/0")
    chosen = select_executor("celery")
    job = Definitions(
        assets=defillama_assets, resources=build_resources(), executor=chosen
    ).resolve_implicit_global_asset_job_def()
    assert job.executor_def is chosen and "celery" in chosen.name
    no_executor_env.setenv(CELERY_BROKER_ENV, "redis://other-broker:6379/0")  # read at run time, not at load
    config = ResolvedRunConfig.build(job, {}).execution.execution_engine_config
    assert (config["broker"], config["backend"]) == (
        "redis://other-broker:6379/0",
        "redis://broker.internal:6379/1",
    )


def test_unknown_executor_is_a_clear_error(no_executor_env) -> None:
    no_executor_env.setenv(EXECUTOR_ENV, "dask")
    with pytest.raises(ExecutorSelectionError, match="in_process, multiprocess, k8s, celery"):
        select_executor()


@pytest.mark.slow
def test_materialization_on_postgres_storage(
    local_postgres: dict[str, str],
    replay_env,
    memory_lake: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The production dagster.yaml, unchanged, against a real Postgres: runs, events and checks are stored."""
    set_env(monkeypatch, local_postgres)
    home = instance_dir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        result = materialize(
            defillama_assets,
            resources=replay_resources(replay_env, memory_lake),
            partition_key=DAY,
            instance=instance,
        )
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.is_success
        assert run.tags["dagster/partition"] == DAY
        for key in ("pool_history", "pool_metadata"):
            event = instance.get_latest_materialization_event(AssetKey(key))
            assert event is not None and event.dagster_event.partition == DAY
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [
                next(
                    k
                    for k in result.job_def.asset_layer.asset_graph.asset_check_keys
                    if k.name == "requested_pools_fetched" and k.asset_key == AssetKey("pool_history")
                )
            ]
        )
        assert check, "asset check results are stored in Postgres"
