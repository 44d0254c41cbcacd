"""The newest partitions of a calendar that ended are its last days (what the UI's Plots tab asks for)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
from dagster._core.definitions.partitions.context import PartitionLoadingContext
from dagster._core.definitions.partitions.snap import PartitionsSnap
from dagster._core.definitions.temporal_context import TemporalContext

from midfreq_resources.instance import partition_keys

NOW = dt.datetime(2026, 12, 8, 4, 0, tzinfo=dt.UTC)
ENDED = dg.DailyPartitionsDefinition(start_date="2024-06-06", end_date="2025-06-06")  # last day 2025-06-05


def _context(now: dt.datetime = NOW) -> PartitionLoadingContext:
    return PartitionLoadingContext(
        temporal_context=TemporalContext(effective_dt=now, last_event_id=None), dynamic_partitions_store=None
    )


def _as_webserver_sees(partitions_def: dg.PartitionsDefinition) -> dg.PartitionsDefinition:
    """The webserver's copy: rebuilt from the code location's snapshot (a plain Dagster class)."""
    return PartitionsSnap.from_def(partitions_def).get_partitions_definition()


def test_dagster_alone_lists_days_after_the_end() -> None:
    """The bug this module works around, still in the pinned Dagster: when this fails, upstream fixed it
    (drop ``partition_keys`` and its ``install()`` in ``sqlite_storage``)."""
    found = partition_keys.ORIGINAL(_as_webserver_sees(ENDED), _context(), 3, False, None)
    assert found.results == ["2026-12-07", "2026-12-06", "2026-12-05"]
    assert not any(ENDED.has_partition_key(k) for k in found.results)


def test_newest_first_starts_at_the_calendar_end_and_pages_back() -> None:
    partition_keys.install()
    partition_keys.install()  # idempotent: wraps Dagster's method once
    webserver_def = _as_webserver_sees(ENDED)
    first = webserver_def.get_paginated_partition_keys(context=_context(), limit=120, ascending=False)
    last_120 = ENDED.get_partition_keys()[-120:][::-1]
    assert first.results == last_120 and first.has_more
    second = webserver_def.get_paginated_partition_keys(
        context=_context(), limit=3, ascending=False, cursor=first.cursor
    )
    assert second.results == ENDED.get_partition_keys()[-123:-120][::-1]
    ascending = webserver_def.get_paginated_partition_keys(context=_context(), limit=3, ascending=True)
    assert ascending.results == ["2024-06-06", "2024-06-07", "2024-06-08"]


def test_weekly_calendar_with_end_offset_ends_at_its_last_week() -> None:
    partition_keys.install()
    weeks = dg.WeeklyPartitionsDefinition(
        start_date="2024-06-04", end_date="2025-06-10", day_offset=1, end_offset=1, timezone="UTC"
    )
    found = _as_webserver_sees(weeks).get_paginated_partition_keys(
        context=_context(), limit=3, ascending=False
    )
    assert found.results == weeks.get_partition_keys()[-3:][::-1]
    assert found.results[0] == weeks.get_last_partition_key()


def test_running_calendars_get_dagsters_answer() -> None:
    """Live calendars (no end, or one after the effective time) are left to Dagster."""
    partition_keys.install()
    open_ended = dg.DailyPartitionsDefinition(start_date="2026-01-01")
    future_end = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2027-01-01")
    for partitions_def in (open_ended, future_end):
        ours = partitions_def.get_paginated_partition_keys(context=_context(), limit=5, ascending=False)
        dagsters = partition_keys.ORIGINAL(partitions_def, _context(), 5, False, None)
        assert (
            ours.results
            == dagsters.results
            == ["2026-12-07", "2026-12-06", "2026-12-05", "2026-12-04", "2026-12-03"]
        )
    assert partition_keys.ended_context(
        ENDED, _context(dt.datetime(2025, 3, 1, tzinfo=dt.UTC))
    ).effective_dt == (dt.datetime(2025, 3, 1, tzinfo=dt.UTC))
