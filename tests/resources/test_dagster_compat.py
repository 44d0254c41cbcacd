"""``execute_in_process_from``: an in-process run filed under the code location (what the UI's job page,
timeline and run links select on), with the same outcome as ``execute_in_process``."""

from __future__ import annotations

from dagster import (
    AssetKey,
    BackfillPolicy,
    DagsterInstance,
    DailyPartitionsDefinition,
    Definitions,
    MaterializeResult,
    RunsFilter,
    asset,
    define_asset_job,
)
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

from midfreq_assets.pipeline import CODE_LOCATION, CODE_MODULE
from midfreq_resources.dagster_compat import execute_in_process_from, job_origins

DAYS = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-10")


@asset(partitions_def=DAYS, backfill_policy=BackfillPolicy.single_run())
def day_count(context) -> MaterializeResult:
    return MaterializeResult(
        metadata={"day": context.partition_key_range.end, "days": len(context.partition_keys)}
    )


@asset
def total() -> MaterializeResult:
    return MaterializeResult(metadata={"n": 3})


DEFS = Definitions(
    assets=[day_count, total],
    jobs=[define_asset_job("days", [day_count], partitions_def=DAYS), define_asset_job("once", [total])],
)


def test_a_run_carries_the_code_locations_origin(tmp_path):
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        job = DEFS.resolve_job_def("days")
        result = execute_in_process_from(
            job, CODE_MODULE, CODE_LOCATION, instance=instance, partition_key="2024-01-03"
        )
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert run.remote_job_origin is not None
        assert run.remote_job_origin.location_name == CODE_LOCATION
        assert run.remote_job_origin.job_name == "days"
        assert run.job_code_origin.repository_origin.code_pointer.module == CODE_MODULE
        assert run.tags["dagster/partition"] == "2024-01-03"
        label = f"__repository__@{CODE_LOCATION}"
        # the job page's query: runs of the job under the code location's repository label
        listed = instance.get_runs(RunsFilter(job_name="days", tags={REPOSITORY_LABEL_TAG: label}))
        assert [r.run_id for r in listed] == [result.run_id]
        event = instance.get_latest_materialization_event(AssetKey("day_count"))
        assert event.asset_materialization.partition == "2024-01-03"
        assert event.asset_materialization.metadata["day"].value == "2024-01-03"


def test_a_range_run_and_an_unpartitioned_run(tmp_path):
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        tags = {
            "dagster/asset_partition_range_start": "2024-01-02",
            "dagster/asset_partition_range_end": "2024-01-04",
        }
        ranged = execute_in_process_from(
            DEFS.resolve_job_def("days"), CODE_MODULE, CODE_LOCATION, instance=instance, tags=tags
        )
        once = execute_in_process_from(
            DEFS.resolve_job_def("once"), CODE_MODULE, CODE_LOCATION, instance=instance
        )
        assert ranged.success and once.success
        assert instance.get_run_by_id(ranged.run_id).tags["dagster/asset_partition_range_end"] == "2024-01-04"
        assert instance.get_run_by_id(once.run_id).remote_job_origin.job_name == "once"


def test_a_failure_is_reported_not_raised(tmp_path):
    @asset
    def broken() -> None:
        raise ValueError("no data")

    job = Definitions(assets=[broken], jobs=[define_asset_job("broken_job", [broken])]).resolve_job_def(
        "broken_job"
    )
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        result = execute_in_process_from(job, CODE_MODULE, CODE_LOCATION, instance=instance)
        assert not result.success
        assert instance.get_run_by_id(result.run_id).remote_job_origin.location_name == CODE_LOCATION


def test_origins_name_the_workspace_location():
    import yaml

    from midfreq_resources.settings import REPO_ROOT

    entry = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    remote, python = job_origins("nightly_refresh", CODE_MODULE, CODE_LOCATION)
    assert (entry["module_name"], entry["location_name"]) == (CODE_MODULE, CODE_LOCATION)
    assert remote.repository_origin.get_label() == f"__repository__@{entry['location_name']}"
    assert python.job_name == "nightly_refresh"
