"""What ``midfreq pipeline`` runs of a job: the range rule a pipeline job carries in its metadata.

The pipeline does not know job names: it runs every job of the code location whose metadata has
:data:`PLAN` (the rule below, over the days the data covers), in the order the asset graph gives
(a job runs after the jobs materializing its assets' parents). Jobs without it (the nightly
``<vault>_research`` / ``<vault>_daily`` halves, the intraday jobs) are for schedules and people.
"""

from __future__ import annotations

#: Job metadata: the rule of :mod:`midfreq_assets.pipeline` that picks the job's runs.
PLAN = "midfreq/plan"
#: Job metadata: the vault a job belongs to (its start date, live days, grids).
VAULT = "midfreq/vault"
#: Job metadata: the kline interval a price job reads (segments without it are skipped).
INTERVAL = "midfreq/interval"

DAYS = "days"  # the yield data's days (from the vault's start for a vault job): one range run
MONTHS = "months"  # the months holding those days: one range run
WEEKS = "weeks"  # the weekly partitions whose Monday falls in those days: one range run
LIVE_DAYS = "live_days"  # the days a vault decides from its real positions
ORDER_DAYS = "order_days"  # the live days, else the last day (a simulated vault's dry-run ticket)
ONCE = "once"  # unpartitioned: one run
GRID_POINTS = "grid_points"  # each chosen grid's points (registered first): runs of a few points
GRID_FILES = "grid_files"  # one run per chosen grid file
KLINES_DAYS = "klines_days"  # the Binance days, per covered segment
KLINES_MONTHS = "klines_months"  # the months of each Binance segment
KLINES_WEEKS = "klines_weeks"  # the weekly partitions of each Binance segment

RULES = (
    DAYS,
    MONTHS,
    WEEKS,
    LIVE_DAYS,
    ORDER_DAYS,
    ONCE,
    GRID_POINTS,
    GRID_FILES,
    KLINES_DAYS,
    KLINES_MONTHS,
    KLINES_WEEKS,
)


def plan(rule: str, vault: str | None = None, interval: str | None = None) -> dict[str, str]:
    """The job metadata of a pipeline job: its rule (and its vault, or its kline interval)."""
    if rule not in RULES:
        raise ValueError(f"unknown pipeline rule {rule!r}; known: {', '.join(RULES)}")
    return {PLAN: rule, **({VAULT: vault} if vault else {}), **({INTERVAL: interval} if interval else {})}
