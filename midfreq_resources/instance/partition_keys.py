"""The UI's "latest partitions" of a calendar that has ended: its last days, not the days up to today.

The asset page's **Plots** tab (and the partition list's newest-first pages) ask the webserver for
``partitionKeyConnection(limit: 120, ascending: false)``. Dagster 1.13.27 (unchanged in 1.13.29)
answers it with :meth:`TimeWindowPartitionsDefinition.get_paginated_partition_keys`, which, without a
cursor, walks back from the current time and never looks at the calendar's ``end_date``. A replayed
corpus's calendars end at its last day (``midfreq_assets/partitions.py``: e.g. 2025-06-05), so the UI
asks for the 120 days before *today*, none of which exists, and the Plots tab is empty.

:func:`install` wraps that method so that, when the calendar ended before the effective time, the
walk starts at the calendar's end: exactly the answer Dagster gives on the calendar's last day. A
calendar still running (live: it ends at yesterday, or has no end) gets Dagster's answer unchanged.

Where it runs: the webserver rebuilds each asset's calendar from the code location's snapshot as a
plain :class:`TimeWindowPartitionsDefinition` and never imports midfreq's code, so the patch must
live in the webserver's own process. The one midfreq module that process loads is the local
instance's storage (``dagster.yaml``: ``midfreq_resources.instance.sqlite_storage``, shipped in
``deploy/local/`` and written by ``midfreq pipeline``), which calls :func:`install` on import: so
``make dev`` and ``dagster-webserver -w workspace.yaml`` on that instance both get it. An instance on
another storage (the production profile's Postgres) runs live calendars, which do not need it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from dagster._core.definitions.partitions.context import PartitionLoadingContext
from dagster._core.definitions.partitions.definition.time_window import TimeWindowPartitionsDefinition

_ORIGINAL_ATTR = "_midfreq_original"
#: Dagster's own method (kept for the test that tells when upstream fixes it: then drop this module).
ORIGINAL: Callable = getattr(
    TimeWindowPartitionsDefinition.get_paginated_partition_keys,
    _ORIGINAL_ATTR,
    TimeWindowPartitionsDefinition.get_paginated_partition_keys,
)


def ended_context(
    partitions_def: TimeWindowPartitionsDefinition, context: PartitionLoadingContext
) -> PartitionLoadingContext:
    """``context`` with its effective time moved back to the calendar's end, if the calendar ended before."""
    end = partitions_def.end
    if end is None or end >= context.effective_dt:
        return context
    return context.updated(effective_dt=end, dynamic_partitions_store=None)


def install() -> None:
    """Wrap ``get_paginated_partition_keys`` (idempotent)."""
    if hasattr(TimeWindowPartitionsDefinition.get_paginated_partition_keys, _ORIGINAL_ATTR):
        return

    @functools.wraps(ORIGINAL)
    def get_paginated_partition_keys(self, context, limit, ascending, cursor=None):
        return ORIGINAL(self, ended_context(self, context), limit, ascending, cursor)

    setattr(get_paginated_partition_keys, _ORIGINAL_ATTR, ORIGINAL)
    TimeWindowPartitionsDefinition.get_paginated_partition_keys = get_paginated_partition_keys
