"""What the generation records say about some days: per day the generations submitted, resolved
(their task named its run), deferred, rejected and in doubt, and the most frequent reasons.

Plain pyarrow and pandas over `{CATALOG_ROOT}/_state/` (any fsspec URL); no Dagster. Shared by
`soundharvest status` (a second table, when any day has prompt sheets) and `soundharvest
generate`, whose dry run shows the same columns as planned.
"""

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import pandas as pd
from rich import box
from rich.table import Table

from assets.generation.generation_plan import ROWS_STATE, TO_SEND, DayPlan, read_rows
from assets.generation.ledger import in_doubt
from assets.generation.limits import variable
from assets.harvest.reasons import reason_group
from assets.harvest.records import read_state
from assets.harvest.task_map import TASK_STATE
from resources.storage import Storage

# The table's columns (80 characters wide); duplicates and rows another day sent are in --json.
COLUMNS = ("submitted", "resolved", "deferred", "rejected", "in doubt")
_STATUS = {"created": "submitted", "already submitted": "sent before"}  # rows' words -> columns


@dataclass(frozen=True)
class DayGenerations:
    date: str
    submitted: int = 0  # created: a task id known
    resolved: int = 0  # of those, tasks the harvest resolved to a run
    deferred: int = 0
    rejected: int = 0
    in_doubt: int = 0
    duplicate: int = 0
    sent_before: int = 0  # rows whose key another day sent


def generation_days(storage: Storage) -> list[str]:
    """Days with a generation record, sorted."""
    names = storage.listdir(f"_state/{ROWS_STATE}")
    return sorted(name.removeprefix("date=") for name in names if name.startswith("date="))


def read_generations(storage: Storage, days: Iterable[str]) -> dict[str, pd.DataFrame]:
    """Each day's rows as its last generation run decided them (days without: left out)."""
    found = {}
    for day in days:
        rows = read_rows(storage, day)
        if rows is not None:
            found[day] = rows
    return found


def summarize(storage: Storage, rows_by_day: dict[str, pd.DataFrame]) -> list[DayGenerations]:
    """The counts per day; in doubt as the ledger has it now (a resubmission clears it)."""
    doubtful = in_doubt(storage) if rows_by_day else {}
    out = []
    for day, rows in sorted(rows_by_day.items()):
        counts = rows["status"].map(lambda s: _STATUS.get(s, s)).value_counts()
        created = set(rows.loc[rows["status"] == "created", "task_id"].dropna())
        out.append(
            DayGenerations(
                day,
                submitted=int(counts.get("submitted", 0)),
                resolved=_resolved(storage, day, created),
                deferred=int(counts.get("deferred", 0)),
                rejected=int(counts.get("rejected", 0)),
                in_doubt=doubtful.get(day, 0),
                duplicate=int(counts.get("duplicate", 0)),
                sent_before=int(counts.get("sent before", 0)),
            )
        )
    return out


def _resolved(storage: Storage, day: str, task_ids: set[str]) -> int:
    answers = read_state(storage, TASK_STATE, day) if task_ids else None
    if answers is None:
        return 0
    done = answers[(answers["status"] == "resolved") & answers["task_id"].isin(task_ids)]
    return len(done)


def top_reasons(rows_by_day: dict[str, pd.DataFrame], top: int = 5) -> list[tuple[int, str, str]]:
    """(rows, status, reason) most frequent among rows deferred, rejected or in doubt."""
    frames = [rows for rows in rows_by_day.values() if not rows.empty]
    if not frames:
        return []
    rows = pd.concat(frames)
    rows = rows[rows["status"].isin(["deferred", "rejected", "in doubt"]) & rows["reason"].notna()]
    grouped = pd.DataFrame({"status": rows["status"], "reason": rows["reason"].map(reason_group)})
    counted = grouped.value_counts().head(top)
    return [(int(n), status, reason) for (status, reason), n in counted.items()]


def days_table(days: list[DayGenerations]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="generations", title_justify="left")
    table.add_column("day")
    for name in COLUMNS:
        table.add_column(name, justify="right")
    for day in days:
        values = asdict(day)
        table.add_row(day.date, *(str(values[name.replace(" ", "_")]) for name in COLUMNS))
    return table


def reasons_table(reasons: list[tuple[int, str, str]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="why rows were not sent", title_justify="left")
    table.add_column("rows", justify="right")
    table.add_column("status")
    table.add_column("reason", overflow="fold")
    for n, status, reason in reasons:
        table.add_row(str(n), status, reason)
    return table


def plan_table(plans: list[DayPlan]) -> Table:
    """What a dry run would do, per day: `already` counts the rows whose generation exists or
    is asked for on an earlier row (created or in doubt, sent by another day, duplicates)."""
    table = Table(box=box.SIMPLE_HEAD, title="would be sent (dry run)", title_justify="left")
    for name in ("day", "rows", "to send", "audio s", "deferred", "rejected", "already"):
        table.add_column(name, justify="left" if name == "day" else "right")
    for plan in plans:
        counts: dict[str, int] = {}
        for row in plan.plans:
            counts[row.status] = counts.get(row.status, 0) + 1
        seconds = sum(
            plan.allowance.limits.budget_seconds(row.row.request.duration) for row in plan.to_send()
        )
        already = ("created", "in doubt", "already submitted", "duplicate")
        table.add_row(
            plan.day,
            str(len(plan.plans)),
            str(counts.get(TO_SEND, 0)),
            f"{seconds:g}",
            str(counts.get("deferred", 0)),
            str(counts.get("rejected", 0)),
            str(sum(counts.get(status, 0) for status in already)),
        )
    return table


def budget_line(plan: DayPlan) -> str:
    """The budget left once the dry run's rows would be sent."""
    left = plan.allowance.left()
    limited = [
        f"{variable(name)}: {value:g} left" for name, value in left.items() if value is not None
    ]
    return "budget: " + (
        "; ".join(limited) if limited else "no limit set (SOUNDHARVEST_GENERATE_*)"
    )
