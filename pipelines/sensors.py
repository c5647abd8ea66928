"""Sensors: a day runs when its manifests or prompt sheets appear or change, and again while
runs are pending.

Both keep their memory in the sensor cursor (JSON), which Dagster stores in the instance and
updates only with a successful tick, so it survives restarts and a failed tick changes
nothing. Run keys make a repeated request a no-op.

A day the manifest sensor has not seen before (a new instance, a new cursor) whose catalog
partition was written after its manifest files is already harvested from them: it is noted in
the cursor without a run (its pending rows are the pending sweep's). A new instance pointed at
an existing catalog, `dg dev` after `make demo` among them, starts no run of every old day.
"""

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from assets.generation.generation_plan import ROWS_STATE
from assets.harvest.manifest_files import manifest_day
from assets.harvest.sweep import SweepPolicy, catalog_days, day_pending, plan_sweeps
from assets.partitions import daily_partitions
from pipelines.deployment import sensor_status
from pipelines.jobs import daily_harvest
from resources.storage import Storage, StorageError
from resources.storage_resource import StorageResource

TRIGGER_TAG = "soundharvest/trigger"
# What a listing tells about a file's content, by filesystem: object stores' ETag / hashes /
# generation, and modification times everywhere (so a rewrite with equal bytes counts too).
_STAMP_KEYS = (
    "ETag", "etag", "md5Hash", "crc32c", "generation",  # content, on object stores
    "LastModified", "updated", "mtime", "created",  # time, everywhere
)  # fmt: skip


_CATALOG_FILE = re.compile(r"date=(\d{4}-\d\d-\d\d)/part-0\.parquet")


class ManifestListingError(RuntimeError):
    """The manifest (or prompt sheet) storage could not be listed: the tick fails and shows
    this message."""


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


def modified_at(entry: Mapping[str, Any]) -> float | None:
    """When a listed file was last written (epoch seconds), from whatever the storage says."""
    for key in ("mtime", "LastModified", "updated", "created"):
        value = entry.get(key)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def harvested_days(
    manifests: Mapping[str, Mapping[str, Any]], catalogs: Mapping[str, Mapping[str, Any]]
) -> set[str]:
    """Days whose catalog partition (or generation record: `date=D/part-0.parquet` either
    way) was written after every one of their manifest files (or prompt sheets): a run
    already read them as they are (an instance, or a cursor, newer than the catalog)."""
    newest: dict[str, float | None] = {}
    for relpath, entry in manifests.items():
        day = manifest_day(relpath)
        if day is not None:
            stamp, seen = modified_at(entry), newest.get(day, 0.0)
            newest[day] = None if stamp is None or seen is None else max(seen, stamp)
    written = {}
    for relpath, entry in catalogs.items():
        match = _CATALOG_FILE.fullmatch(relpath)
        if match and (stamp := modified_at(entry)) is not None:
            written[match[1]] = stamp
    return {
        day
        for day, last in newest.items()
        if last is not None and day in written and written[day] > last
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
    return _day_files_changed(
        context,
        storage.manifests(),
        "manifests",
        "manifest",
        lambda: storage.catalog().find("sound_catalog"),
    )


@_harvest_sensor(
    60, "Generates and harvests a day when its prompt sheets appear or change (any fsspec storage)."
)
def prompt_sensor(context: SensorEvaluationContext, storage: StorageResource) -> SensorResult:
    """A run for every day whose prompt sheets are new or changed since the last request: the
    daily job submits them (`sound_generations`) and harvests what they created.

    Shares the manifest sensor's rules: a day first seen whose generations were recorded after
    its sheets changed needs no run; a day without a partition yet waits in the cursor.
    """
    return _day_files_changed(
        context,
        storage.prompts(),
        "prompt sheets",
        "prompts",
        lambda: storage.catalog().find(f"_state/{ROWS_STATE}"),
    )


def _day_files_changed(
    context: SensorEvaluationContext,
    root: Storage,
    what: str,
    trigger: str,
    outputs: Callable[[], Mapping[str, Mapping[str, Any]]],
) -> SensorResult:
    """Run requests for the days whose files under `root` (manifests, prompt sheets) are new
    or changed since the cursor's; `outputs` lists what a day's run writes (`date=D/...`), so
    a day first seen whose output is newer than its files runs no more."""
    try:
        listing = root.find()
    except (StorageError, OSError) as exc:
        raise ManifestListingError(f"cannot list the {what} at {root.uri('')}: {exc}") from None
    states = manifest_states(listing)
    requested: dict[str, str] = _cursor(context).get("requested", {})
    existing = set(daily_partitions.get_partition_keys(current_time=utc_now()))
    runs, waiting, already = [], {}, []
    done = _done_before(outputs, listing, [d for d in states if d not in requested])
    for day, state in sorted(states.items()):
        if requested.get(day) == state:
            continue
        if day not in existing:
            waiting[day] = state
            continue
        if day not in requested and day in done:
            already.append(day)  # first seen, but its output is newer than its files
        else:
            runs.append(_request(day, f"{trigger}:{day}:{state}", trigger))
        requested[day] = state
    # Days whose files are gone are forgotten: should they come back, they run again.
    requested = {day: state for day, state in requested.items() if day in states}
    skip = None if runs else f"no new or changed {what}"
    if already and not runs:
        skip += f" ({len(already)} days first seen were run after their {what} changed)"
    if waiting and not runs:
        skip = f"{what} wait for their day to have a partition: {', '.join(sorted(waiting))}"
    return SensorResult(
        run_requests=runs,
        skip_reason=skip,
        cursor=json.dumps({"requested": requested, "waiting": waiting}, sort_keys=True),
    )


def _done_before(
    outputs: Callable[[], Mapping[str, Mapping[str, Any]]],
    listing: Mapping[str, Mapping[str, Any]],
    days: list[str],
) -> set[str]:
    """`harvested_days` among `days`; none when the outputs cannot be listed (they run)."""
    if not days:
        return set()
    try:
        written = outputs()
    except (StorageError, OSError):
        return set()
    wanted = set(days)
    return harvested_days(
        {path: entry for path, entry in listing.items() if manifest_day(path) in wanted}, written
    )


@_harvest_sensor(600, "Harvests days with pending runs again at growing intervals, then gives up.")
def pending_sweep(context: SensorEvaluationContext, storage: StorageResource) -> SensorResult:
    """Days of the last `give_up_after` (+2) days whose catalog still has pending rows.

    See assets/harvest/sweep.py for the intervals and the give-up rule.
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
