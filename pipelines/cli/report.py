"""What the catalog says about some days: counts by status, new files, oldest pending, reasons;
and, where `soundharvest status` read the Dagster instance (`day_runs.py`), each day's run.

Plain pyarrow and pandas over `{CATALOG_ROOT}/sound_catalog` (any fsspec URL); no Dagster.
Shared by `soundharvest status` and the table that ends `soundharvest harvest`, whose new
files are those its run stored, as the days' files ledgers record them.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
from rich import box
from rich.table import Table
from rich.text import Text

from assets.harvest.catalog_schema import STATUSES
from assets.harvest.reasons import reason_group
from assets.harvest.records import read_state
from resources.storage import Storage

_COLUMNS = ["run_id", "status", "error", "size_bytes", "first_seen_at", "fetched_at"]
_DATE = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")


@dataclass(frozen=True)
class DayRun:
    """How the latest run of a day went for that day."""

    state: str  # ok, failed, killed (its process died: marked failed), running, queued, canceled
    run_id: str
    reason: str | None = None  # failed or killed: why

    def __str__(self) -> str:
        if self.state == "ok":
            return "ok"
        label = "killed, marked failed" if self.state == "killed" else self.state
        why = f": {self.reason}" if self.reason else ""
        return f"{label} (run {self.run_id[:8]}{why})"


@dataclass(frozen=True)
class DayCounts:
    date: str
    ok: int = 0
    pending: int = 0
    failed: int = 0
    rejected: int = 0
    new_files: int = 0  # files the harvest's own run stored (or adopted)
    new_bytes: int = 0
    catalog: bool = True  # the day has a catalog partition (else its counts are zeros)
    run: DayRun | None = None  # its latest run, where the Dagster instance was read


@dataclass(frozen=True)
class Reason:
    status: str
    reason: str
    count: int


@dataclass(frozen=True)
class Report:
    catalog: str
    days: list[DayCounts]
    reasons: list[Reason] = field(default_factory=list)  # most frequent first
    oldest_pending: str | None = None  # the earliest day that still has pending rows

    def as_json(self, *, new: bool) -> dict:
        """Plain data; `new` keeps the days' new files and bytes (a harvest's, not a status)."""
        data = asdict(self)
        for day in data["days"]:
            if new:
                del day["catalog"], day["run"]
            else:
                del day["new_files"], day["new_bytes"]
        return data


def read_catalog(
    storage: Storage, *, days: Iterable[str] | None = None, since: str | None = None
) -> pd.DataFrame | None:
    """The catalog rows of `days` (or of every day from `since`, or all); None if no catalog."""
    root = storage.path("sound_catalog")
    if not storage.fs.exists(root):
        return None
    dataset = ds.dataset(root, filesystem=storage.fs, format="parquet", partitioning=_DATE)
    where = None
    if days is not None:
        where = ds.field("date").isin(list(days))
    elif since is not None:
        where = ds.field("date") >= since
    return dataset.to_table(columns=[*_COLUMNS, "date"], filter=where).to_pandas()


def stored_by(storage: Storage, days: Iterable[str], run_id: str) -> dict[str, tuple[int, int]]:
    """Day -> (files, bytes) that the Dagster run `run_id` stored or adopted, from the days'
    files ledgers: another run of the same day (one that held its lease first) stored the
    others, even while this run was waiting."""
    stored = {}
    for day in days:
        ledger = read_state(storage, "sound_files", day)
        if ledger is None or "dagster_run_id" not in ledger:
            continue
        own = ledger[(ledger["status"] == "ok") & (ledger["dagster_run_id"] == run_id)]
        stored[day] = (len(own), int(own["size_bytes"].sum()))
    return stored


def empty_catalog() -> pd.DataFrame:
    """What `read_catalog` reads from a catalog without rows."""
    return pd.DataFrame(columns=[*_COLUMNS, "date"])


def report(
    catalog: str,
    rows: pd.DataFrame,
    *,
    new: Mapping[str, tuple[int, int]] | None = None,
    top: int = 5,
    days: Iterable[str] = (),
) -> Report:
    """Per-day counts (`days` without rows count zero: no manifest, no runs), with the new
    files and bytes of `new` (`stored_by`), the `top` reasons rows are not ok, the oldest
    pending day."""
    new = new or {}
    counted = []
    for date, day in rows.groupby("date", sort=True):
        counts = day["status"].value_counts()
        files, size = new.get(str(date), (0, 0))
        counted.append(
            DayCounts(
                str(date),
                **{s: int(counts.get(s, 0)) for s in STATUSES},
                new_files=files,
                new_bytes=size,
            )
        )
    seen = {day.date for day in counted}
    counted = sorted(
        [*counted, *(DayCounts(d) for d in days if d not in seen)], key=lambda d: d.date
    )
    pending = [day.date for day in counted if day.pending]
    return Report(catalog, counted, top_reasons(rows, top), next(iter(pending), None))


def with_runs(report: Report, runs: dict[str, DayRun], shown: Callable[[str], bool]) -> Report:
    """`report` with each day's run, and a row for each day `shown` that has no catalog
    partition but a run that did not end well (failed, killed) or has not ended."""
    days = {day.date: replace(day, run=runs.get(day.date)) for day in report.days}
    for date, run in runs.items():
        if date not in days and run.state != "ok" and shown(date):
            days[date] = DayCounts(date, catalog=False, run=run)
    return replace(report, days=sorted(days.values(), key=lambda day: day.date))


def top_reasons(rows: pd.DataFrame, top: int) -> list[Reason]:
    """The most frequent reasons rows are not ok, grouped as the step metadata groups them."""
    bad = rows[rows["status"] != "ok"]
    if bad.empty:
        return []
    reasons = bad["error"].fillna("(no reason given)").astype(str).map(reason_group)
    counted = pd.DataFrame({"status": bad["status"], "reason": reasons}).value_counts()
    return [Reason(status, reason, int(n)) for (status, reason), n in counted.head(top).items()]


def tables(report: Report, *, new: bool) -> list[Text | Table]:
    """The report for the console: where the catalog is, a row per day (with new files when
    `new`), the most frequent reasons."""
    runs = any(day.run for day in report.days)
    days = Table(box=box.SIMPLE_HEAD)
    for name in ("day", *STATUSES, *(("new files", "new MiB") if new else ())):
        days.add_column(name, justify="left" if name == "day" else "right")
    if runs:
        days.add_column("run", overflow="fold")
    for day in report.days:
        counts = (str(getattr(day, s)) if day.catalog else "-" for s in STATUSES)
        cells = [day.date, *counts]
        if new:
            cells += [str(day.new_files), f"{day.new_bytes / (1 << 20):.1f}"]
        if runs:
            cells.append(str(day.run) if day.run else "")
        days.add_row(*cells)
    out: list[Text | Table] = [Text(f"catalog: {report.catalog}"), days]
    if report.reasons:
        reasons = Table(box=box.SIMPLE_HEAD, title="most frequent reasons", title_justify="left")
        reasons.add_column("rows", justify="right")
        reasons.add_column("status")
        reasons.add_column("reason", overflow="fold")
        for reason in report.reasons:
            reasons.add_row(str(reason.count), reason.status, reason.reason)
        out.append(reasons)
    return out
