"""Freshness: a day's `sound_catalog` is expected by a deadline on the next day (UTC).

`SOUNDHARVEST_CATALOG_DEADLINE` (`HH:MM`, default `02:00`): after that time each day, the
check `sound_catalog:freshness_check` fails (WARN) until the day that just ended has a
catalog; `freshness_checks_sensor` evaluates it once the deadline passes and again whenever
the catalog could have become late.

Dagster's partition-aware time-partition freshness check, not the newer asset
`FreshnessPolicy`: in Dagster 1.13 a policy is judged on the asset's last materialization of
*any* partition, so a backfill of an old day would turn a missing yesterday green. Dagster
marks both builders superseded by that policy; the warning is silenced here, where the choice
is made, so no command prints it (docs/operations.md#freshness).
"""

import os
import re
import warnings

from dagster import (
    AssetChecksDefinition,
    AssetCheckSeverity,
    SensorDefinition,
    SupersessionWarning,
    build_sensor_for_freshness_checks,
    build_time_partition_freshness_checks,
)

from assets.sound_catalog import sound_catalog
from pipelines.deployment import sensor_status

DEADLINE_ENV = "SOUNDHARVEST_CATALOG_DEADLINE"
DEFAULT_DEADLINE = "02:00"  # an hour after the 01:00 harvest


def deadline_cron() -> str:
    """`HH:MM` (UTC, the day after the partition) as a daily cron, read when definitions load."""
    raw = os.environ.get(DEADLINE_ENV, "").strip() or DEFAULT_DEADLINE
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", raw)
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(f"{DEADLINE_ENV}={raw!r}: expected a UTC time of day such as 02:00")
    return f"{int(match[2])} {int(match[1])} * * *"


def catalog_freshness() -> tuple[list[AssetChecksDefinition], SensorDefinition]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupersessionWarning)
        checks = build_time_partition_freshness_checks(
            assets=[sound_catalog],
            deadline_cron=deadline_cron(),
            timezone="UTC",
            severity=AssetCheckSeverity.WARN,
        )
        sensor = build_sensor_for_freshness_checks(
            freshness_checks=checks, default_status=sensor_status()
        )
    return list(checks), sensor
