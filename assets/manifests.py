"""`run_manifest`: each day's manifest files, validated, bad rows rejected with a reason."""

from typing import Any

from dagster import AssetExecutionContext, BackfillPolicy, MaterializeResult, MetadataValue, asset

from assets.core.day_fingerprint import Fingerprints, file_stamp, manifest_stamps
from assets.core.day_summary import DaySummary
from assets.core.manifest import ManifestError, load_day
from assets.metadata import failure_reasons, per_partition
from assets.partitions import daily_partitions
from assets.ranges import DayProblem, fail, mark_done, run_days, settings
from assets.state import state_relpath, write_manifest
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
    prints = Fingerprints(state, "run_manifest", manifests=manifests.uri(""))

    def read(day: str) -> tuple[DaySummary, list[str]]:
        record = state_relpath("run_manifest", day)
        try:
            files = manifest_stamps(manifests, day)
            stamp = prints.stamp(files, file_stamp(state, record))
            if (summary := prints.unchanged(day, stamp)) is not None:
                return summary, [name for name, *_ in files]  # nothing to parse again
            rows = load_day(manifests.fs, manifests.root, day)
        except ManifestError as exc:
            raise DayProblem(f"manifest cannot be read: {exc}") from None
        if rows.empty:
            context.log.warning(f"{day}: no manifest under {manifests.uri(day)}")
        write_manifest(state, day, rows)
        rejected = (rows["status"] == "rejected").sum()
        if rejected or single_day:  # a range's plain days: its metadata counts them
            context.log.info(f"{day}: {len(rows)} manifest rows, {rejected} rejected")
        summary = DaySummary.of(rows)
        prints.record(day, prints.stamp(files, file_stamp(state, record)), summary)
        return summary, sorted(set(rows["manifest"]))

    single_day = len(context.partition_keys) == 1

    days = run_days(context.partition_keys, read)
    if days.failed:
        mark_done(context, days.done, lambda day: manifest_metadata(*days.done[day]))
        fail(context, days, config)
    per_day = {day: manifest_metadata(*done) for day, done in days.done.items()}
    total = DaySummary.total(summary for summary, _ in days.done.values())
    return MaterializeResult(metadata=per_partition(context, per_day, lambda: counts(total)))


def counts(summary: DaySummary) -> dict[str, int]:
    return {
        "rows": summary.runs,
        "accepted": summary.count("accepted"),
        "rejected": summary.count("rejected"),
    }


def manifest_metadata(summary: DaySummary, files: list[str]) -> dict[str, Any]:
    return {
        **{name: MetadataValue.int(n) for name, n in counts(summary).items()},
        "rejection reasons": failure_reasons(summary),
        "files": MetadataValue.json(files),
    }
