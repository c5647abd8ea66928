"""Materialization metadata shared by the assets: each day's own figures, typed.

A range run (`BackfillPolicy.single_run`) materializes many partitions in one step. Dagster
gives every partition the metadata of the step's result, so each day's figures go on its own
partition (`context.add_asset_metadata(..., partition_key=day)`, which overrides the step's
keys) and the step's result carries the range's totals under their own `range` key.
"""

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, TableColumn, TableRecord, TableSchema

from assets.core.catalog import STATUSES
from assets.core.reasons import reason_group
from resources.storage import Storage

PREVIEW_COLUMNS = [
    "run_id",
    "status",
    "error",
    "duration_s",
    "sample_rate",
    "channels",
    "size_bytes",
]
TOP_REASONS = 5
MIB = 1 << 20

_REASONS_SCHEMA = TableSchema(
    columns=[
        TableColumn("reason", "string", description="error, numbers and quoted values as N / '…'"),
        TableColumn("runs", "int"),
        TableColumn("example", "string", description="one of them, as the catalog says it"),
    ]
)


def failure_reasons(rows: pd.DataFrame, top: int = TOP_REASONS) -> MetadataValue:
    """The most frequent reasons rows are not `ok` (failed, rejected, pending), with counts."""
    errors = rows.loc[rows["status"] != "ok", "error"].dropna().astype(str)
    groups = errors.groupby(errors.map(reason_group), sort=False)
    counted = groups.agg(["size", "first"]).sort_values("size", ascending=False, kind="stable")
    return MetadataValue.table(
        records=[
            TableRecord({"reason": reason, "runs": int(n), "example": example})
            for reason, (n, example) in counted.head(top).iterrows()
        ],
        schema=_REASONS_SCHEMA,
    )


def figures(rows: pd.DataFrame) -> dict[str, Any]:
    """Counts by status, runs, stored bytes and audio hours: typed, units in the key."""
    counts = rows["status"].value_counts()
    ok = rows[rows["status"] == "ok"]
    stored = int(ok["size_bytes"].sum())
    return {
        **{status: MetadataValue.int(int(counts.get(status, 0))) for status in STATUSES},
        "runs": MetadataValue.int(len(rows)),
        "stored_bytes": MetadataValue.int(stored),
        "stored (MiB)": MetadataValue.float(round(stored / MIB, 2)),
        "audio (h)": MetadataValue.float(round(float(ok["duration_s"].sum()) / 3600, 4)),
    }


def day_metadata(rows: pd.DataFrame, link: str | None = None) -> dict[str, Any]:
    """One day's figures, its most frequent failure reasons, a preview and where it lives."""
    metadata = figures(rows)
    metadata["failure reasons"] = failure_reasons(rows)
    preview = rows.reindex(columns=PREVIEW_COLUMNS).sort_values("run_id").head(10)
    metadata["preview"] = MetadataValue.md(preview.to_markdown(index=False))
    if link is not None:
        metadata["location"] = link
    return metadata


def location(storage: Storage, relpath: str) -> MetadataValue:
    """A link to a file or directory of storage: a path on local disk, else its URL."""
    uri = storage.uri(relpath)
    return MetadataValue.path(uri) if storage.is_local() else MetadataValue.url(uri)


def report_days(
    context: AssetExecutionContext,
    days: Mapping[str, pd.DataFrame],
    link: Mapping[str, MetadataValue] | None = None,
    elapsed_s: float | None = None,
) -> dict[str, Any]:
    """Each day's figures on its own partition; returns the step's metadata (the totals)."""
    per_day = {day: day_metadata(rows, link and link[day]) for day, rows in days.items()}

    def totals() -> dict[str, Any]:
        every = pd.concat(days.values(), ignore_index=True)
        return {name: value.value for name, value in figures(every).items()}

    step = per_partition(context, per_day, totals)
    if elapsed_s:
        step |= throughput(pd.concat(days.values(), ignore_index=True), elapsed_s)
    return step


def per_partition(
    context: AssetExecutionContext,
    per_day: Mapping[str, Mapping[str, Any]],
    totals: Callable[[], Mapping[str, Any]],
) -> dict[str, Any]:
    """Puts each day's metadata on its partition; returns the step's own metadata.

    A single day's metadata is the step's. A range's step carries the totals under `range`:
    the keys of a partition's own metadata override the step's, so no day shows the range's
    figures as its own.
    """
    if len(per_day) == 1:
        return dict(*per_day.values())
    for day, metadata in per_day.items():
        context.add_asset_metadata(metadata, partition_key=day)
    return {"range": MetadataValue.json({"days": len(per_day), **totals()})}


def throughput(rows: pd.DataFrame, elapsed_s: float | None) -> dict[str, Any]:
    if not elapsed_s:
        return {}
    stored = int(rows.loc[rows["status"] == "ok", "size_bytes"].sum())
    return {
        "elapsed (s)": MetadataValue.float(round(elapsed_s, 2)),
        "runs per s": MetadataValue.float(round(len(rows) / elapsed_s, 1)),
        "MB per s": MetadataValue.float(round(stored / elapsed_s / 1e6, 2)),
    }


def summary_line(day: str, rows: pd.DataFrame, rejected: int, since: datetime) -> str:
    """The day's one console line: counts by status, files new since `since`, their bytes."""
    counts = rows["status"].value_counts()
    ok = rows[rows["status"] == "ok"]
    new = ok[ok["fetched_at"].notna() & (pd.to_datetime(ok["fetched_at"], utc=True) >= since)]
    return (
        f"{day}: {int(counts.get('ok', 0))} ok, {int(counts.get('pending', 0))} pending, "
        f"{int(counts.get('failed', 0))} failed, {rejected} rejected; "
        f"{len(new)} new files, {int(new['size_bytes'].sum()) / MIB:.1f} MiB new, "
        f"{int(ok['size_bytes'].sum()) / MIB:.1f} MiB stored"
    )
