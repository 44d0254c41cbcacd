"""The pooled SQLite storage stores a range run's materializations in batches, with the same records
Dagster's own one-by-one path would: every partition materialized, the asset's latest event, tags."""

import os

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from midfreq_resources.instance import sqlite_storage
from midfreq_resources.instance.sqlite_storage import EVENT_BATCH_SIZE_ENV, PooledSqliteStorage

DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-03-01")


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def ranged(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"n": len(context.partition_keys)})


def _instance(tmp_path, name: str) -> dg.DagsterInstance:
    home = tmp_path / name
    home.mkdir()
    storage = {
        "custom": {
            "module": sqlite_storage.__name__,
            "class": "PooledSqliteStorage",
            "config": {"base_dir": str(home)},
        }
    }
    return dg.DagsterInstance.local_temp(str(home), overrides={"storage": storage})


def _materialize_range(instance: dg.DagsterInstance) -> str:
    keys = DAYS.get_partition_keys()
    result = dg.materialize(
        [ranged],
        instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
    )
    assert result.success
    return result.run_id


def _summary(instance: dg.DagsterInstance, run_id: str) -> dict:
    key = dg.AssetKey("ranged")
    records = instance.fetch_materializations(key, limit=1000).records
    latest = instance.get_latest_materialization_event(key)
    return {
        "partitions": sorted(instance.get_materialized_partitions(key)),
        "n_records": len(records),
        "run_ids": {r.run_id for r in records},
        "latest_partition": latest.dagster_event.partition,
        "latest_run": latest.run_id == run_id,
        "n_run_materializations": len(
            instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        ),
        "metadata": {
            r.event_log_entry.dagster_event.partition: r.asset_materialization.metadata["n"].value
            for r in records
        },
    }


def test_the_storage_turns_on_dagsters_batched_writes(tmp_path, monkeypatch):
    monkeypatch.delenv(EVENT_BATCH_SIZE_ENV, raising=False)
    PooledSqliteStorage(str(tmp_path))

    assert int(os.environ[EVENT_BATCH_SIZE_ENV]) > 0


def test_a_range_run_stores_the_records_dagster_would_store_one_by_one(tmp_path, monkeypatch):
    batched = _instance(tmp_path, "batched")
    monkeypatch.setenv(EVENT_BATCH_SIZE_ENV, "1000")
    calls = []
    original = sqlite_storage.PooledSqliteEventLogStorage.store_event_batch
    monkeypatch.setattr(
        sqlite_storage.PooledSqliteEventLogStorage,
        "store_event_batch",
        lambda self, events: calls.append(len(events)) or original(self, events),
    )
    got = _summary(batched, _materialize_range(batched))
    assert calls == [len(DAYS.get_partition_keys())], "the range's materializations were not one batch"

    one_by_one = _instance(tmp_path, "one_by_one")
    monkeypatch.setenv(EVENT_BATCH_SIZE_ENV, "0")
    want = _summary(one_by_one, _materialize_range(one_by_one))

    assert got["partitions"] == DAYS.get_partition_keys()
    assert got["latest_partition"] == DAYS.get_partition_keys()[-1]
    assert {k: v for k, v in got.items() if k != "run_ids"} == {
        k: v for k, v in want.items() if k != "run_ids"
    }


@pytest.mark.parametrize("size", ["1000", "0"])
def test_a_second_range_run_takes_the_latest_record(tmp_path, monkeypatch, size):
    instance = _instance(tmp_path, f"home{size}")
    monkeypatch.setenv(EVENT_BATCH_SIZE_ENV, size)
    _materialize_range(instance)
    second = _materialize_range(instance)
    summary = _summary(instance, second)
    assert summary["latest_run"] and summary["n_records"] == 2 * len(DAYS.get_partition_keys())
