"""Sensors: a day runs when its manifests appear or change, and again while runs are pending.

Both keep their memory in the sensor cursor (JSON), which Dagster stores in the instance and
updates only with a successful tick, so it survives restarts and a failed tick changes
nothing. Run keys make a repeated request a no-op.
"""

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from assets.core.manifest import manifest_day
from assets.core.sweep import SweepPolicy, catalog_days, day_pending, plan_sweeps
from assets.partitions import daily_partitions
from pipelines.deployment import sensor_status
from pipelines.jobs import daily_harvest
from resources.storage import StorageError
from resources.storage_resource import StorageResource

TRIGGER_TAG = "soundharvest/trigger"
# What a listing tells about a file's content, by filesystem: object stores' ETag / hashes /
# generation, and modification times everywhere (so a rewrite with equal bytes counts too).
_STAMP_KEYS = (
    "ETag", "etag", "md5Hash", "crc32c", "generation",  # content, on object stores
    "LastModified", "updated", "mtime", "created",  # time, everywhere
)  # fmt: skip


class ManifestListingError(RuntimeError):
    """The manifest storage could not be listed: the tick fails and shows this message."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def manifest_states(listing: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Day -> a digest of its manifest files' paths, sizes and stamps."""
    lines: dict[str, list[str]] = {}
    for relpath, entry in sorted(listing.items()):
        day = manifest_day(relpath)
        if day is not None:
            stamps = [str(entry.get("size"))]
            stamps += [f"{key}={entry[key]}" for key in _STAMP_KEYS if entry.get(key) is not None]
            lines.setdefault(day, []).append(f"{relpath}\t{' '.join(stamps)}")
    return {
        day: hashlib.sha256("\n".join(files).encode()).hexdigest()[:20]
        for day, files in lines.items()
    }


def _cursor(context: SensorEvaluationContext) -> dict[str, Any]:
    return json.loads(context.cursor) if context.cursor else {}


def _harvest_sensor(every_s: int, description: str) -> Any:
    """A sensor asking for daily_harvest runs, running with the daemon unless
    SOUNDHARVEST_AUTOMATION=off."""
    return sensor(
        job=daily_harvest,
        minimum_interval_seconds=every_s,
        default_status=sensor_status(),
        description=description,
    )


def _request(day: str, run_key: str, trigger: str) -> RunRequest:
    return RunRequest(run_key=run_key, partition_key=day, tags={TRIGGER_TAG: trigger})


@_harvest_sensor(60, "Harvests a day when its manifests appear or change (any fsspec storage).")
def manifest_sensor(context: SensorEvaluationContext, storage: StorageResource) -> SensorResult:
    """A run for every day whose manifests are new or changed since the last request.

    A day that has no partition yet (today) waits in the cursor until it has one. A listing
    that fails raises: the tick shows the error, the cursor stays, the next tick tries again.
    """
    manifests = storage.manifests()
    try:
        states = manifest_states(manifests.find())
    except (StorageError, OSError) as exc:
        raise ManifestListingError(
            f"cannot list the manifests at {manifests.uri('')}: {exc}"
        ) from None
    requested: dict[str, str] = _cursor(context).get("requested", {})
    existing = set(daily_partitions.get_partition_keys(current_time=utc_now()))
    runs, waiting = [], {}
    for day, state in sorted(states.items()):
        if requested.get(day) == state:
            continue
        if day not in existing:
            waiting[day] = state
            continue
        runs.append(_request(day, f"manifest:{day}:{state}", "manifest"))
        requested[day] = state
    # Days whose manifests are gone are forgotten: should they come back, they run again.
    requested = {day: state for day, state in requested.items() if day in states}
    skip = None if runs else "no new or changed manifests"
    if waiting and not runs:
        skip = f"manifests wait for their day to have a partition: {', '.join(sorted(waiting))}"
    return SensorResult(
        run_requests=runs,
        skip_reason=skip,
        cursor=json.dumps({"requested": requested, "waiting": waiting}, sort_keys=True),
    )


@_harvest_sensor(600, "Harvests days with pending runs again at growing intervals, then gives up.")
def pending_sweep(context: SensorEvaluationContext, storage: StorageResource) -> SensorResult:
    """Days of the last `give_up_after` (+2) days whose catalog still has pending rows.

    See assets/core/sweep.py for the intervals and the give-up rule.
    """
    policy, now = SweepPolicy.from_env(), utc_now()
    catalog = storage.catalog()
    # Two days past the horizon leave time for the last run, the one that says it gave up.
    first = (now - policy.give_up_after - timedelta(days=2)).date().isoformat()
    days = {day: day_pending(catalog, day) for day in catalog_days(catalog) if day >= first}
    sweeps, state = plan_sweeps(days, _cursor(context).get("days", {}), now, policy)
    runs = [_request(s.day, s.run_key, "pending-sweep") for s in sweeps]
    return SensorResult(
        run_requests=runs,
        skip_reason=None if runs else "no day with pending runs is due",
        cursor=json.dumps({"days": state}, sort_keys=True),
    )
