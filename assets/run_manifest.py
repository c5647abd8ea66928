"""`run_manifest`: each day's manifest files, validated, bad rows rejected with a reason."""

from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.generation.generation_plan import ROWS_STATE
from assets.generation.handover import generation_rows
from assets.harvest.day_fingerprint import Fingerprints, file_stamp, manifest_stamps
from assets.harvest.day_summary import DaySummary
from assets.harvest.manifest_files import MANIFEST_SUFFIXES, ManifestError, load_day
from assets.harvest.records import state_relpath, write_manifest
from assets.partitions import daily_partitions
from assets.sound_generations import sound_generations
from assets.steps.days import DayProblem, day_ranges, mark_done, run_days
from assets.steps.failures import fail, preflight, settings
from assets.steps.metadata import check_result, failure_reasons, markdown_list, per_partition
from resources.storage import Storage
from resources.storage_resource import StorageResource


@asset(
    deps=[sound_generations],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="harvest",
    kinds={"parquet"},
    check_specs=[
        AssetCheckSpec(
            "manifest_present",
            asset="run_manifest",
            description="Days without any manifest row (no file, or empty ones) (WARN): days "
            "with no runs, not errors; the metadata says where soundharvest looked.",
        )
    ],
)
def run_manifest(context: AssetExecutionContext, storage: StorageResource) -> MaterializeResult:
    """The run ids (or task ids) of each day's manifests (CSV, JSONL, Parquet) with their
    carried columns.

    A bad row (missing, non-integer, non-positive or duplicate id) is kept as `rejected` with
    its reason and never reaches the API; a file that cannot be parsed fails its day with a
    message naming the file and line (the other days of a range are still read).

    A day without any manifest file is a day with no runs: it materializes with no rows (and
    so gets an empty catalog partition), and the WARN check `manifest_present` names it.
    """
    config = settings()
    preflight(
        context,
        config,
        lambda: storage.probe_writable("catalog"),
        lambda: storage.probe_readable("manifests"),
    )
    manifests, state = storage.manifests(), storage.catalog()
    prints = Fingerprints(state, "run_manifest", manifests=manifests.uri(""))

    def read(day: str) -> tuple[DaySummary, list[str]]:
        record = state_relpath("run_manifest", day)
        generated = state_relpath(ROWS_STATE, day)
        try:
            files = manifest_stamps(manifests, day)
            stamp = prints.stamp(files, file_stamp(state, record), file_stamp(state, generated))
            if files and (summary := prints.unchanged(day, stamp)) is not None:
                return summary, [name for name, *_ in files]  # nothing to parse again
            rows = with_generations(load_day(manifests.fs, manifests.root, day), state, day)
        except ManifestError as exc:  # only fixing the file helps: never retried
            raise DayProblem(f"manifest cannot be read: {exc}", fix=exc.fix) from None
        if not rows["manifest"].size:
            missing[day] = where_looked(manifests.uri(day))
            if single_day:  # a range says it once, below
                context.log.warning(f"{day}: no manifest rows, a day with no runs: {missing[day]}")
        write_manifest(state, day, rows)
        rejected = (rows["status"] == "rejected").sum()
        if rejected or single_day:  # a range's plain days: its metadata counts them
            context.log.info(f"{day}: {len(rows)} manifest rows, {rejected} rejected")
        summary = DaySummary.of(rows)
        after = prints.stamp(files, file_stamp(state, record), file_stamp(state, generated))
        prints.record(day, after, summary)
        return summary, sorted(set(rows["manifest"]))

    single_day = len(context.partition_keys) == 1
    missing: dict[str, str] = {}  # day -> where its manifests were looked for

    days = run_days(context.partition_keys, read)
    if missing and not single_day:
        context.log.warning(
            f"{len(missing)} days with no manifest rows, days with no runs: "
            f"{day_ranges(missing)} (looked in {where_looked(manifests.uri('D'))})"
        )
    if days.failed:
        mark_done(context, days.done, lambda day: manifest_metadata(*days.done[day]))
        fail(context, days, config)
    per_day = {day: manifest_metadata(*done) for day, done in days.done.items()}
    total = DaySummary.total(summary for summary, _ in days.done.values())
    return MaterializeResult(
        metadata=per_partition(context, per_day, lambda: counts(total)),
        check_results=[manifest_present(missing, manifests)],
    )


def with_generations(rows: pd.DataFrame, state: Storage, day: str) -> pd.DataFrame:
    """The day's manifest rows, then those of its generations (`assets/generation/handover.py`):
    tasks the day's prompt sheets created, and the sheets' rejected rows."""
    generated = generation_rows(state, day)
    if generated is None or generated.empty:
        return rows
    generated = generated.astype({"run_id": rows["run_id"].dtype, "line": "int64"})
    return pd.concat([rows, generated], ignore_index=True)


def manifest_present(missing: dict[str, str], manifests: Storage) -> AssetCheckResult:
    """The WARN check naming the days without any manifest row (days with no runs)."""
    plural = "s" * (len(missing) != 1)
    return check_result(
        "manifest_present",
        AssetCheckSeverity.WARN,
        f"{len(missing)} day{plural} with no manifest rows, days with no runs: "
        f"{day_ranges(missing)}"
        if missing
        else "",
        {
            "days without manifest": MetadataValue.int(len(missing)),
            "looked in": MetadataValue.text(where_looked(manifests.uri("D"))),
        },
    )


def where_looked(day_uri: str) -> str:
    """Where the manifests of a day are looked for: its folder, and files named after it."""
    return f"{day_uri}/ and {day_uri}{{{','.join(MANIFEST_SUFFIXES)}}}"


def counts(summary: DaySummary) -> dict[str, int]:
    return {
        "rows": summary.rows,
        "accepted": summary.count("accepted"),
        "rejected": summary.count("rejected"),
    }


def manifest_metadata(summary: DaySummary, files: list[str]) -> dict[str, Any]:
    return {
        **{name: MetadataValue.int(n) for name, n in counts(summary).items()},
        "rejection reasons": failure_reasons(summary),
        "files": markdown_list(files),
    }
