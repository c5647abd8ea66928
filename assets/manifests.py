"""`run_manifest`: each day's manifest files, validated, bad rows rejected with a reason."""

from collections import Counter
from collections.abc import Mapping
from typing import Any

import pandas as pd
from dagster import AssetExecutionContext, BackfillPolicy, MaterializeResult, MetadataValue, asset

from assets.core.manifest import ManifestError, load_day
from assets.metadata import failure_reasons, per_partition
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
        mark_done(context, days.done, lambda day: manifest_metadata(days.done[day]))
        fail(context, days, config)
    per_day = {day: manifest_metadata(rows) for day, rows in days.done.items()}
    return MaterializeResult(metadata=per_partition(context, per_day, lambda: totals(days.done)))


def manifest_metadata(rows: pd.DataFrame) -> dict[str, Any]:
    counts = rows["status"].value_counts()
    return {
        "rows": MetadataValue.int(len(rows)),
        "accepted": MetadataValue.int(int(counts.get("accepted", 0))),
        "rejected": MetadataValue.int(int(counts.get("rejected", 0))),
        "rejection reasons": failure_reasons(rows),
        "files": MetadataValue.json(sorted(set(rows["manifest"]))),
    }


def totals(days: Mapping[str, pd.DataFrame]) -> dict[str, int]:
    counts = Counter(status for rows in days.values() for status in rows["status"])
    return {"rows": counts.total(), "accepted": counts["accepted"], "rejected": counts["rejected"]}
