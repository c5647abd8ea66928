"""Materialization metadata shared by the assets: each day's own figures, typed and readable.

A range run (`BackfillPolicy.single_run`) materializes many partitions in one step. Dagster
gives every partition the metadata of the step's result, so each day's figures go on its own
partition (`context.add_asset_metadata(..., partition_key=day)`, whose keys override the
step's) and the step's result carries the range's totals under their own `range totals` key,
a table no day can take for its own figures.

Counts are `MetadataValue.int`; sizes are MiB and durations seconds or hours, the unit in the
label; tables are Markdown or `MetadataValue.table` with integer counts.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
)

from assets.harvest.catalog_schema import STATUSES
from assets.harvest.day_summary import DaySummary
from assets.steps.days import day_ranges
from resources.storage import Storage

MIB = 1 << 20
RANGE_TOTALS = "range totals"
_REASONS_SCHEMA = TableSchema(
    columns=[
        TableColumn("reason", "string", description="numbers and quoted values as N and '…'"),
        TableColumn("rows", "int"),
        TableColumn("example", "string", description="one of them, as the catalog says it"),
    ]
)

Figure = int | float


def typed(value: Figure) -> MetadataValue:
    """An int as `MetadataValue.int`, anything else as a float."""
    return MetadataValue.int(value) if isinstance(value, int) else MetadataValue.float(value)


def mib(n_bytes: int) -> float:
    return round(n_bytes / MIB, 2)


def failure_reasons(summary: DaySummary) -> MetadataValue:
    """The day's most frequent reasons rows are not `ok`, grouped, with their row counts."""
    return MetadataValue.table(
        records=[
            TableRecord({"reason": reason, "rows": n, "example": example})
            for reason, n, example in summary.reasons
        ],
        schema=_REASONS_SCHEMA,
    )


def counts(summary: DaySummary) -> dict[str, Figure]:
    """Rows by status, rows, distinct runs, stored MiB and audio hours: plain values."""
    return {
        **{status: summary.count(status) for status in STATUSES},
        "rows": summary.rows,
        "distinct runs": summary.distinct_runs,
        "stored (MiB)": mib(summary.stored_bytes),
        "audio (h)": round(summary.audio_s / 3600, 4),
    }


def figures(summary: DaySummary) -> dict[str, MetadataValue]:
    return {name: typed(value) for name, value in counts(summary).items()}


def day_metadata(summary: DaySummary, link: MetadataValue | None = None) -> dict[str, Any]:
    """One day's figures, its most frequent failure reasons, a preview and where it lives."""
    metadata: dict[str, Any] = figures(summary)
    metadata["failure reasons"] = failure_reasons(summary)
    metadata["preview"] = MetadataValue.md(summary.preview)
    if link is not None:
        metadata["location"] = link
    return metadata


def figures_table(
    named: Mapping[str, Figure], heading: str, label: str = "figure"
) -> MetadataValue:
    """Named figures as a two-column Markdown table (thousands separated, rounded as given)."""
    lines = [f"| {label} | {heading} |", "|:--|--:|"]
    lines += [f"| {name} | {value:,} |" for name, value in named.items()]
    return MetadataValue.md("\n".join(lines))


def markdown_list(items: Iterable[str]) -> MetadataValue:
    return MetadataValue.md("\n".join(f"- `{item}`" for item in items) or "(none)")


def check_result(
    name: str, severity: AssetCheckSeverity, failure: str, metadata: Mapping[str, MetadataValue]
) -> AssetCheckResult:
    """Passed when there is no `failure` to tell; else that failure as the description (the UI
    shows it without a click: it names the days) and its metadata."""
    return AssetCheckResult(
        check_name=name,
        passed=not failure,
        severity=severity,
        description=failure or None,
        metadata=metadata if failure else {},
    )


def location(storage: Storage, relpath: str) -> MetadataValue:
    """A link to a file or directory of storage: a path on local disk, else its URL."""
    uri = storage.uri(relpath)
    return MetadataValue.path(uri) if storage.is_local() else MetadataValue.url(uri)


def report_days(
    context: AssetExecutionContext,
    days: Mapping[str, DaySummary],
    link: Mapping[str, MetadataValue] | None = None,
    elapsed_s: float | None = None,
) -> dict[str, Any]:
    """Each day's figures on its own partition; returns the step's metadata (the totals)."""
    per_day = {day: day_metadata(summary, link and link[day]) for day, summary in days.items()}
    total = DaySummary.total(days.values())
    step: dict[str, Figure] = {}
    if elapsed_s:
        step = {
            "elapsed (s)": round(elapsed_s, 2),
            "runs per s": round(total.distinct_runs / elapsed_s, 1),
            "MiB per s": round(total.stored_bytes / MIB / elapsed_s, 2),
        }
    return per_partition(context, per_day, lambda: counts(total), step)


def per_partition(
    context: AssetExecutionContext,
    per_day: Mapping[str, Mapping[str, Any]],
    totals: Callable[[], Mapping[str, Figure]],
    step: Mapping[str, Figure] | None = None,
) -> dict[str, Any]:
    """Puts each day's metadata on its partition; returns the step's own metadata.

    A single day's metadata is the step's, with the step's own figures (`step`: elapsed time,
    rates). A range's step carries the totals and those figures in one table, `range totals`:
    the keys of a partition's own metadata override the step's, so no day shows the range's
    figures as its own.
    """
    if len(per_day) == 1:
        return {**next(iter(per_day.values())), **{k: typed(v) for k, v in (step or {}).items()}}
    for day, metadata in per_day.items():
        context.add_asset_metadata(metadata, partition_key=day)
    whole = {"days": len(per_day), **totals(), **(step or {})}
    return {RANGE_TOTALS: figures_table(whole, day_ranges(per_day))}


def summary_line(day: str, rows: pd.DataFrame, rejected: int, run_id: str) -> str:
    """The day's one console line: counts by status, the files run `run_id` stored (other
    runs of the day may have stored the rest), their bytes."""
    by_status = rows["status"].value_counts()
    ok = rows[rows["status"] == "ok"]
    new = ok[ok["dagster_run_id"] == run_id]
    return (
        f"{day}: {int(by_status.get('ok', 0))} ok, {int(by_status.get('pending', 0))} pending, "
        f"{int(by_status.get('failed', 0))} failed, {rejected} rejected; "
        f"{len(new)} new files, {int(new['size_bytes'].sum()) / MIB:.1f} MiB new, "
        f"{int(ok['size_bytes'].sum()) / MIB:.1f} MiB stored"
    )


def unchanged_line(days: Sequence[str], summaries: Sequence[DaySummary]) -> str:
    """One line for the days skipped as complete and unchanged, instead of one line each."""
    total = DaySummary.total(summaries)
    return (
        f"{len(days)} day{'s' * (len(days) != 1)} complete and unchanged since their last "
        f"run ({day_ranges(days)}): "
        f"{total.count('ok')} ok, {total.count('rejected')} rejected; 0 new files, "
        f"{total.stored_bytes / MIB:.1f} MiB stored"
    )
