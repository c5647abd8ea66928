"""`run_manifest`: each day's manifest files, validated, bad rows rejected with a reason."""

from collections import Counter

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.core.manifest import ManifestError, load_day
from assets.partitions import daily_partitions
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
    its reason and never reaches the API; a file that cannot be parsed fails the partition
    with a message naming the file and line.
    """
    manifests, state = storage.manifests(), storage.catalog()
    counts: Counter[str] = Counter()
    files: set[str] = set()
    for day in context.partition_keys:
        try:
            rows = load_day(manifests.fs, manifests.root, day)
        except ManifestError as exc:
            raise Failure(description=f"manifest of {day} cannot be read: {exc}") from None
        if rows.empty:
            context.log.warning(f"{day}: no manifest under {manifests.uri(day)}")
        write_manifest(state, day, rows)
        counts.update(rows["status"])
        files.update(rows["manifest"])
        context.log.info(
            f"{day}: {len(rows)} manifest rows, {(rows.status == 'rejected').sum()} rejected"
        )
    return MaterializeResult(
        metadata={
            "rows": sum(counts.values()),
            "accepted": counts["accepted"],
            "rejected": counts["rejected"],
            "files": MetadataValue.json(sorted(files)),
        }
    )
