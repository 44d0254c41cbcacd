"""Freshness of the nightly ingestion: checks on pool_history / pool_metadata and the sensor that runs them.

The nightly schedule starts at 01:30 UTC (``defs/ingest/schedules.py``) and usually finishes within the
hour. From ``FRESHNESS_DEADLINE_CRON`` (04:00 UTC) on, each asset must have a materialization
recorded after 01:30 UTC that day (``deadline - LOWER_BOUND``); otherwise its
``freshness_check`` fails (severity WARN: shown in the UI and on the asset, the run is not blocked).
The sensor evaluates the checks in the daemon, without launching runs of the assets.

Wiring: this module's ``defs`` (``asset_checks=freshness_checks, sensors=[freshness_sensor]``).
Alternatively (Dagster's newer mechanism, evaluated by the daemon when the instance has
``freshness: {enabled: true}``): ``defs = with_freshness_policy(defs)`` attaches the same
deadline as a ``FreshnessPolicy`` to the assets. Use one of the two, not both.
"""

import datetime as dt
import warnings

from dagster import (
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetSpec,
    DefaultSensorStatus,
    Definitions,
    FreshnessPolicy,
    SensorDefinition,
    apply_freshness_policy,
    build_last_update_freshness_checks,
    build_sensor_for_freshness_checks,
    definitions,
)
from dagster._utils.warnings import SupersessionWarning

FRESH_ASSETS: tuple[AssetKey, ...] = (AssetKey("pool_history"), AssetKey("pool_metadata"))
FRESHNESS_DEADLINE_CRON = "0 4 * * *"  # 04:00 UTC, 2h30 after the 01:30 UTC nightly schedule
LOWER_BOUND = dt.timedelta(hours=2, minutes=30)  # materialized at or after 01:30 UTC that day
SENSOR_INTERVAL_S = 600

with warnings.catch_warnings():
    # Dagster marks the check factories as superseded by FreshnessPolicy; they remain supported and,
    # unlike policies, produce check results (pass/fail history, blocking, alerts on check failure).
    warnings.simplefilter("ignore", SupersessionWarning)
    freshness_checks: list[AssetChecksDefinition] = list(
        build_last_update_freshness_checks(
            assets=list(FRESH_ASSETS),
            lower_bound_delta=LOWER_BOUND,
            deadline_cron=FRESHNESS_DEADLINE_CRON,
            timezone="UTC",
            severity=AssetCheckSeverity.WARN,
        )
    )
    freshness_sensor: SensorDefinition = build_sensor_for_freshness_checks(
        freshness_checks=freshness_checks,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        name="ingestion_freshness_sensor",
        default_status=DefaultSensorStatus.RUNNING,
    )

nightly_freshness_policy = FreshnessPolicy.cron(
    deadline_cron=FRESHNESS_DEADLINE_CRON, lower_bound_delta=LOWER_BOUND, timezone="UTC"
)


def with_freshness_policy(defs: Definitions) -> Definitions:
    """``defs`` with ``nightly_freshness_policy`` attached to the ingestion assets (alternative to the checks)."""

    def attach(spec: AssetSpec) -> AssetSpec:
        return apply_freshness_policy(spec, nightly_freshness_policy)

    return defs.map_resolved_asset_specs(func=attach, selection=list(FRESH_ASSETS))


@definitions
def defs() -> Definitions:
    return Definitions(asset_checks=freshness_checks, sensors=[freshness_sensor])
