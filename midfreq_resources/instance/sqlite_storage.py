"""The local Dagster instance's storage: Dagster's SQLite layout, with one pooled connection per shard.

Dagster's :class:`SqliteEventLogStorage` opens a new SQLAlchemy engine for every statement batch
and disposes it after: every event pays an engine, a connection, a cold statement cache (each
insert is compiled again) and a WAL checkpoint on close. A year-long single-run backfill of a
daily asset stores two asset events per partition (planned, materialized), so that cost, not the
data, dominated the demo (``docs/PERFORMANCE.md``). :class:`PooledSqliteEventLogStorage` keeps one
engine per shard (the index shard and each run's shard) with a connection held open, and commits
with ``synchronous=NORMAL`` in WAL mode (durable across process crashes; a power loss can lose the
last commits, never corrupt the file). Files, schema and layout are Dagster's own, so the
webserver, the daemon and ``dagster`` CLIs read them unchanged, and an instance can go back to
``storage: sqlite`` at any time.

Live views: the webserver learns of new events of a running run from file-system events on the
run's ``<run_id>.db``; with the connection kept open the writes stay in ``<run_id>.db-wal``, so a
run shard is checkpointed (``PRAGMA wal_checkpoint(PASSIVE)``) at most every
:data:`CHECKPOINT_EVERY_S` and when the run ends, and its engine is closed then.

Production uses Postgres (``deploy/production``), which pools connections itself.

Importing this module also installs :mod:`midfreq_resources.instance.partition_keys` (the UI's newest
partitions of a calendar that ended at a replayed corpus's last day), as the webserver loads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator, Sequence

import sqlalchemy as db
from dagster._config import StringSource
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData, serialize_value
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool, QueuePool

from midfreq_resources.instance import partition_keys

# The webserver loads this module (dagster.yaml's storage) and no other of midfreq's: the Plots tab of a
# calendar that ended (a replayed corpus's) is fixed here, in that process (see partition_keys).
partition_keys.install()

#: A running run's shard is checkpointed at most this often (the webserver's live log follows it).
CHECKPOINT_EVERY_S = 0.5
#: An empty run database (schema and alembic stamp) copied for each new run; hidden, so Dagster's
#: listing of run databases (``*.db``) never takes it for a run.
TEMPLATE_NAME = ".run_template.db"
#: Dagster's switch for batched event writes, and the batch size (a year of daily partitions in 1).
EVENT_BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
EVENT_BATCH_SIZE = 1000
RUN_END_EVENTS = frozenset(
    {DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED}
)


def _on_connect(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """:class:`SqliteEventLogStorage` with one long-lived engine and connection per shard."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self._engines: dict[str, Engine] = {}
        self._checkpointed: dict[str, float] = {}
        self._tables: set[str] = set()
        self._pid = os.getpid()
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value
    ) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        if os.getpid() != self._pid:  # a forked child never shares its parent's connections
            self._engines, self._checkpointed, self._pid = {}, {}, os.getpid()
        engine = self._engines.get(shard)
        if engine is None:
            if shard != INDEX_SHARD_NAME and shard not in self._initialized_dbs:
                self._new_run_shard(shard)
            engine = db.create_engine(
                self.conn_string_for_shard(shard),
                poolclass=QueuePool,
                pool_size=1,
                max_overflow=2,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            db.event.listen(engine, "connect", _on_connect)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            self._engines[shard] = engine
        return engine

    def _new_run_shard(self, shard: str) -> None:
        """A new run's database is a copy of an empty one made once per folder (Dagster's schema and its
        alembic stamp): creating the tables and checking the migrations for every run cost ~1 s of each
        short run (the demo makes ~60)."""
        target = self.path_for_shard(shard)
        if os.path.exists(target):
            return
        template = os.path.join(self._base_dir, TEMPLATE_NAME)
        if not os.path.exists(template):
            scratch = f"{template}.{os.getpid()}.{time.monotonic_ns()}"
            engine = db.create_engine(f"sqlite:///{scratch}", poolclass=NullPool)
            try:
                self._initdb(engine)
            finally:
                engine.dispose()
            os.replace(scratch, template)  # atomic: a concurrent process sees no template or a whole one
        scratch = f"{target}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        shutil.copyfile(template, scratch)
        try:
            os.link(
                scratch, target
            )  # atomic and exclusive: a reader never sees half a file, nor two writers race
        except FileExistsError:
            return  # another process made it first: Dagster's own check runs on it
        finally:
            os.unlink(scratch)
        self._initialized_dbs.add(shard)

    @contextlib.contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock, self._engine(shard).connect() as conn, conn.begin():
            yield conn

    @property
    def supports_partition_subset_in_asset_materialization_planned_events(self) -> bool:
        """One planned event per asset of a range run (its partitions as a subset), not one per
        partition: a failed range run then leaves its partitions "missing" rather than "failed" in
        the UI (the run itself is failed, with its error)."""
        return True

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        """Dagster's own rows, one per partition of the run, with the event serialized once (Dagster
        serializes it again for every partition: 365 times for a year-long range run)."""
        planned = event.get_dagster_event().event_specific_data
        keys = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        serialized = serialize_value(event)
        timestamp = self._event_insert_timestamp(event)
        with self.index_connection() as conn:
            conn.execute(
                AssetCheckExecutionsTable.insert(),
                [  # executemany: one compiled statement
                    dict(
                        asset_key=planned.asset_key.to_string(),
                        check_name=planned.check_name,
                        partition=key,
                        run_id=event.run_id,
                        execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
                        evaluation_event=serialized,
                        evaluation_event_timestamp=timestamp,
                        evaluation_event_storage_id=event_id,
                    )
                    for key in keys
                ],
            )

    def has_table(self, table_name: str) -> bool:
        """Asked once per asset event (for the tags table); a table, once there, stays."""
        if table_name in self._tables:
            return True
        engine = self._engine(INDEX_SHARD_NAME)  # called under _db_lock by Dagster: no _connect here
        with engine.connect() as conn:
            present = bool(engine.dialect.has_table(conn, table_name))
        if present:
            self._tables.add(table_name)
        return present

    def _checkpoint(self, shard: str, close: bool = False) -> None:
        with self._db_lock:
            engine = self._engines.get(shard)
            if engine is None:
                return
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            self._checkpointed[shard] = time.monotonic()
            if close:
                engine.dispose()
                del self._engines[shard]
                self._checkpointed.pop(shard, None)

    def store_event(self, event: EventLogEntry) -> None:
        super().store_event(event)
        shard = event.run_id
        if not shard or shard == INDEX_SHARD_NAME:
            return
        if event.is_dagster_event and event.dagster_event_type in RUN_END_EVENTS:
            self._checkpoint(shard, close=True)
        elif time.monotonic() - self._checkpointed.get(shard, 0.0) >= CHECKPOINT_EVERY_S:
            self._checkpoint(shard)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """A range run's materializations of one asset (Dagster batches them when
        ``DAGSTER_EVENT_BATCH_SIZE`` is set): Dagster's rows, written in one transaction per shard and
        the asset's latest-materialization row once for the batch, rather than two transactions and
        an upsert of the whole serialized record per partition. Anything else goes one by one."""
        first = events[0] if events else None
        if (
            first is None
            or not first.run_id
            or not all(
                e.is_dagster_event
                and e.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION
                and e.run_id == first.run_id
                and e.get_dagster_event().asset_key is not None
                for e in events
            )
        ):
            super().store_event_batch(events)
            return
        rows = [self._event_to_row(e) for e in events]
        with self.run_connection(first.run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        with self.index_transaction() as conn:
            ids = [
                conn.execute(SqlEventLogStorageTable.insert(), row).inserted_primary_key[0] for row in rows
            ]
            self._store_asset_event_tags(conn, events, ids)
            latest: dict[str, int] = {}  # the asset-key row keeps each asset's last event of the batch
            for i, e in enumerate(events):
                latest[e.get_dagster_event().asset_key.to_string()] = i
            for i in latest.values():
                self._store_asset_event(conn, events[i], ids[i])
        if time.monotonic() - self._checkpointed.get(first.run_id, 0.0) >= CHECKPOINT_EVERY_S:
            self._checkpoint(first.run_id)

    def _close_all(self) -> None:
        with self._db_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()
            self._checkpointed.clear()

    def delete_events(self, run_id: str) -> None:
        self._close_all()
        super().delete_events(run_id)

    def wipe(self) -> None:
        self._close_all()
        self._tables.clear()
        super().wipe()

    def dispose(self) -> None:
        self._close_all()
        super().dispose()


class PooledSqliteRunStorage(SqliteRunStorage):
    """:class:`SqliteRunStorage` (``runs.db``, WAL) with one long-lived engine and connection: a run's
    creation, tags and status changes commit without reopening the file each time."""

    def _pooled(self) -> Engine:
        engine = getattr(self, "_pool_engine", None)
        if engine is None or getattr(self, "_pool_pid", None) != os.getpid():
            engine = db.create_engine(
                self._conn_string,
                poolclass=QueuePool,
                pool_size=1,
                max_overflow=4,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            db.event.listen(engine, "connect", _on_connect)
            self._pool_engine, self._pool_pid = engine, os.getpid()
        return engine

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._pooled().connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        engine = getattr(self, "_pool_engine", None)
        if engine is not None:
            engine.dispose()
            self._pool_engine = None
        super().dispose()


class PooledSqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage (same files under ``base_dir``) with the pooled event log.

    ``dagster.yaml``: ``storage: {custom: {module: midfreq_resources.instance.sqlite_storage,
    class: PooledSqliteStorage, config: {base_dir: {env: DAGSTER_HOME}}}}``."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self.base_dir = base_dir
        os.makedirs(base_dir, exist_ok=True)
        # Creating the databases of a new DAGSTER_HOME is not safe to run twice at once (both stamp the
        # migrations: "more than one head"); a CLI run and the webserver starting together would.
        with open(os.path.join(base_dir, ".storage.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._run_storage = PooledSqliteRunStorage.from_local(_runs_directory(base_dir))
                self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))
                self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self._inst_data = inst_data
        DagsterStorage.__init__(self)
        # Dagster hands a range run's materializations to ``store_event_batch`` only when this is set
        # (read at each event, in the process that stores it: the one holding this storage). Without it
        # a year-long range stores 365 events one transaction pair at a time (docs/PERFORMANCE.md).
        os.environ.setdefault(EVENT_BATCH_SIZE_ENV, str(EVENT_BATCH_SIZE))

    @classmethod
    def config_type(cls):
        return {"base_dir": StringSource}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value) -> PooledSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)
