"""`run_manifest`: each day's manifest files, validated, bad rows rejected with a reason."""

from collections import Counter
from collections.abc import Iterable
from typing import Any

import pandas as pd
from dagster import AssetExecutionContext, BackfillPolicy, MaterializeResult, MetadataValue, asset

from assets.core.manifest import ManifestError, load_day
from assets.partitions import daily_partitions
from assets.ranges import DayProblem, fail, mark_done, run_days, settings
from assets.state import write_manifest
from resources.storage_resource import StorageResource


@asset(
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="harvest",
    kinds={"parquet"},
)
def run_manifest(context: AssetExecutionContext, storage: StorageResource) -> MaterializeResult:
    """The run ids of each day's manifests (CSV, JSONL, Parquet) with their carried columns.

    A bad row (missing, non-integer, non-positive or duplicate id) is kept as `rejected` with
    its reason and never reaches the API; a file that cannot be parsed fails its day with a
    message naming the file and line (the other days of a range are still read).
    """
    config = settings()
    manifests, state = storage.manifests(), storage.catalog()

    def read(day: str) -> pd.DataFrame:
        try:
            rows = load_day(manifests.fs, manifests.root, day)
        except ManifestError as exc:
            raise DayProblem(f"manifest cannot be read: {exc}") from None
        if rows.empty:
            context.log.warning(f"{day}: no manifest under {manifests.uri(day)}")
        write_manifest(state, day, rows)
        rejected = (rows["status"] == "rejected").sum()
        if rejected or single_day:  # a range's plain days: its metadata counts them
            context.log.info(f"{day}: {len(rows)} manifest rows, {rejected} rejected")
        return rows

    single_day = len(context.partition_keys) == 1

    days = run_days(context.partition_keys, read)
    if days.failed:
        mark_done(context, days.done, lambda day: manifest_metadata([days.done[day]]))
        fail(context, days, config)
    return MaterializeResult(metadata=manifest_metadata(days.done.values()))


def manifest_metadata(frames: Iterable[pd.DataFrame]) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    files: set[str] = set()
    for rows in frames:
        counts.update(rows["status"])
        files.update(rows["manifest"])
    return {
        "rows": sum(counts.values()),
        "accepted": counts["accepted"],
        "rejected": counts["rejected"],
        "files": MetadataValue.json(sorted(files)),
    }
