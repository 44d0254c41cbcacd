"""Partition definitions shared by the asset graph (one daily calendar in UTC)."""

from __future__ import annotations

import datetime as dt

from dagster import DailyPartitionsDefinition, TimeWindow

from midfreq_assets.domain.config.vault import load_vault_configs


def earliest_vault_start() -> dt.date:
    return min(v.start_date for v in load_vault_configs().values())


daily_partitions = DailyPartitionsDefinition(
    start_date=earliest_vault_start().isoformat(), timezone="UTC", fmt="%Y-%m-%d"
)


def window_days(window: TimeWindow) -> tuple[dt.date, dt.date]:
    """First and last UTC day (inclusive) of a daily partition window."""
    first = window.start.date()
    last = (window.end - dt.timedelta(days=1)).date()
    return first, last
