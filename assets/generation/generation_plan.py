"""What becomes of each row of a day's sheets: sent now, or why not. No request is made here.

`plan_day` reads the day's sheets, the day's ledger and, for the sheet's keys only, every
other day's (`ledger.history`), then decides each row (`decide`), then lets the budget choose
among those to send (`budget.Allowance`):

| status              | when                                                             |
|---------------------|------------------------------------------------------------------|
| `rejected`          | the row breaks a rule (its reason), or the API refused its key   |
| `duplicate`         | an earlier row of the day has its key (named by file:line)        |
| `already submitted` | its key was sent on another day (named, with its task id)        |
| `created`           | sent by this day, its task id known (now or by an earlier run)   |
| `in doubt`          | sent by this day, its answer lost: sent again only when asked    |
| `deferred`          | not sent yet: over the budget, out of credits, 429/5xx for good   |
| (to send)           | none of these: the submission step sends it                      |

A created generation whose task ended `PAYMENT_REQUIRED` made nothing: its key is sent again
by a later run of its day (`unpaid`). `regenerate` asks for a new round of every row that is
not rejected or a duplicate (round 2, 3, ...: a new key, so the ledger keeps both);
`resubmit_in_doubt` sends the day's in-doubt keys again, under the same key.

The day's rows as decided are kept in `_state/generation_rows/date=D/part-0.parquet`, one row
per generation asked for: what `run_manifest` hands to the harvest, and what `soundharvest
status` counts.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from assets.generation.budget import Allowance, spent
from assets.generation.keys import Request, round_key
from assets.generation.ledger import DEAD_INTENT, SUBMITTED, Ledger, history
from assets.generation.ledger import SCHEMA as LEDGER_SCHEMA
from assets.generation.limits import GenerationLimits
from assets.generation.prompt_sheets import SheetRow, load_sheets
from assets.harvest.catalog_rows import table_bytes
from assets.harvest.records import read_state, state_relpath
from assets.harvest.task_map import TASK_STATE
from resources.camb.task_resolver import payment_required
from resources.storage import Storage

ROWS_STATE = "generation_rows"
TO_SEND = "to send"
STATUSES = ("created", "in doubt", "deferred", "rejected", "duplicate", "already submitted")
UNPAID = "its task ended PAYMENT_REQUIRED and made nothing: sent again once there are credits"
# Where a row came from and what it asks for: the columns the ledger keeps of it, as it keeps them.
_ROW_FIELDS = ("sheet", "line", "take", "prompt", "duration", "audio_type")
ROWS_SCHEMA = pa.schema(
    [
        *(LEDGER_SCHEMA.field(name) for name in _ROW_FIELDS),
        ("extra", pa.string()),
        ("key", pa.string()),  # hex
        ("round", pa.int32()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("task_id", pa.string()),
    ]
)


@dataclass(frozen=True)
class Options:
    regenerate: bool = False  # a new round of every row
    resubmit_in_doubt: bool = False  # the day's in-doubt keys sent again


@dataclass
class RowPlan:
    row: SheetRow
    status: str
    reason: str | None = None
    key: bytes | None = None
    round: int = 1
    task_id: str | None = None


@dataclass
class DayView:
    """The day's ledger as a new run sees it: dead intents in doubt, unpaid tasks unpaid."""

    latest: pd.DataFrame  # latest record per key, with those two restated
    dead: pd.DataFrame  # intents a run that died left without an outcome
    unpaid: pd.DataFrame  # created, their task PAYMENT_REQUIRED


@dataclass
class DayPlan:
    day: str
    plans: list[RowPlan]
    allowance: Allowance
    view: DayView
    counts: dict[str, int] = field(default_factory=dict)

    def to_send(self) -> list[RowPlan]:
        return [plan for plan in self.plans if plan.status == TO_SEND]


def day_view(state: Storage, day: str) -> DayView:
    latest = Ledger(state, day, "").latest()
    dead = latest[latest["state"] == "intended"]
    created = latest[latest["state"] == "created"]
    unpaid = created.iloc[0:0]
    if not created.empty and (answers := read_state(state, TASK_STATE, day)) is not None:
        failed = answers[answers["error"].map(payment_required)]
        unpaid = created[created["task_id"].isin(set(failed["task_id"]))]
    view = latest.copy()
    view.loc[dead.index, ["state", "reason"]] = ["in doubt", DEAD_INTENT]
    view.loc[unpaid.index, ["state", "reason"]] = ["unpaid", UNPAID]
    return DayView(view, dead, unpaid)


def plan_day(
    state: Storage,
    prompts: Storage,
    day: str,
    limits: GenerationLimits,
    options: Options,
    *,
    now: datetime | None = None,
) -> DayPlan:
    """Every row of the day's sheets decided, the budget applied; nothing written."""
    rows = load_sheets(prompts.fs, prompts.root, day, limits)
    view = day_view(state, day)
    bases = {row.request.base for row in rows if row.request is not None}
    elsewhere = history(state, bases, besides=day)
    plans = decide(day, rows, view.latest, elsewhere, options)
    allowance = Allowance(limits, spent(state, limits, now))
    for plan in plans:
        if plan.status == TO_SEND and (why := allowance.take(plan.row.request.duration)):
            plan.status, plan.reason = "deferred", why
    return DayPlan(day, plans, allowance, view)


def decide(
    day: str,
    rows: Iterable[SheetRow],
    own: pd.DataFrame,
    elsewhere: pd.DataFrame,
    options: Options,
) -> list[RowPlan]:
    """Each row's status (see the module doc), in sheet order, then the generations of the
    day's ledger that no row asks for now (an earlier round, a row removed from its sheet):
    they were paid for, so they keep their place (and their catalog row)."""
    records = _by_base(own.assign(date=day), elsewhere)
    plans, keys = [], set()
    for row in rows:
        plan = _decide_row(day, row, records, options)
        keys.add(plan.key)
        plans.append(plan)
    for record in own.to_dict("records"):
        if record["key"] not in keys and record["state"] in SUBMITTED:
            plans.append(_orphan(record))
    return plans


def _by_base(own: pd.DataFrame, elsewhere: pd.DataFrame) -> dict[bytes, list[dict]]:
    found: dict[bytes, list[dict]] = {}
    for frame in (own, elsewhere):
        for record in frame.to_dict("records"):
            found.setdefault(record["base"], []).append(record)
    return found


def _decide_row(
    day: str, row: SheetRow, records: dict[bytes, list[dict]], options: Options
) -> RowPlan:
    if row.request is None:
        return RowPlan(row, "rejected", row.error)
    if row.duplicate_of is not None:
        return RowPlan(row, "duplicate", f"duplicate of {row.duplicate_of} (one generation)")
    known = records.get(row.request.base, [])
    top = max((int(r["round"]) for r in known), default=0)
    round_ = top + 1 if options.regenerate else max(top, 1)
    key = round_key(row.request.base, round_)
    plan = RowPlan(row, TO_SEND, key=key, round=round_)
    mine = [r for r in known if r["key"] == key and r["date"] == day]
    theirs = [r for r in known if r["key"] == key and r["date"] != day]
    submitted = next((r for r in theirs if r["state"] in SUBMITTED), None)
    if submitted is not None:
        task = f"task {submitted['task_id']}" if submitted["task_id"] else submitted["state"]
        plan.status, plan.reason = "already submitted", f"sent on {submitted['date']} ({task})"
    elif mine:
        _as_recorded(plan, mine[0], options)
    elif refused := next((r for r in theirs if r["state"] == "refused"), None):
        plan.status, plan.reason = "rejected", f"{refused['reason']} (on {refused['date']})"
    return plan


def _as_recorded(plan: RowPlan, record: dict, options: Options) -> None:
    """A key this day sent before: as the ledger has it, or to send again."""
    state = record["state"]
    if state == "created":
        plan.status, plan.task_id = "created", record["task_id"]
    elif state in ("in doubt", "intended") and not options.resubmit_in_doubt:
        plan.status, plan.reason = "in doubt", record["reason"]
    elif state == "refused":
        plan.status, plan.reason = "rejected", record["reason"]
    # not sent, unpaid, or in doubt with resubmit_in_doubt: sent (again)


def _orphan(record: dict) -> RowPlan:
    """A generation the day's ledger has that no row asks for now: it stays."""
    request = Request(record["prompt"], _float(record["duration"]), record["audio_type"], 1)
    row = SheetRow(record["sheet"], int(record["line"]), request, None)
    status = "created" if record["state"] == "created" else "in doubt"
    plan = RowPlan(row, status, record["reason"], record["key"], int(record["round"]))
    plan.task_id = record["task_id"]
    return plan


def _float(value) -> float | None:
    return None if value is None or value != value else float(value)


# -- the day's rows record -------------------------------------------------------------------


def rows_frame(plans: Iterable[RowPlan]) -> pd.DataFrame:
    records = []
    for plan in plans:
        request = plan.row.request
        records.append(
            {
                "sheet": plan.row.sheet,
                "line": plan.row.line,
                "take": request.take if request else None,
                "prompt": request.prompt if request else plan.row.text,
                "duration": request.duration if request else None,
                "audio_type": request.audio_type if request else None,
                "extra": plan.row.extra,
                "key": plan.key.hex() if plan.key else None,
                "round": plan.round if plan.key else None,
                "status": plan.status,
                "reason": plan.reason,
                "task_id": plan.task_id,
            }
        )
    return pd.DataFrame(records, columns=ROWS_SCHEMA.names)


def write_rows(state: Storage, day: str, plans: Iterable[RowPlan]) -> None:
    table = pa.Table.from_pandas(rows_frame(plans), schema=ROWS_SCHEMA, preserve_index=False)
    state.write_bytes(table_bytes(table), state_relpath(ROWS_STATE, day), if_changed=True)


def read_rows(state: Storage, day: str) -> pd.DataFrame | None:
    """The day's rows as its last generation run decided them; None if it never ran."""
    try:
        with state.open(state_relpath(ROWS_STATE, day)) as file:
            return pq.read_table(file, schema=ROWS_SCHEMA).to_pandas()
    except FileNotFoundError:
        return None


def carried_extra(extra: str | None, take: int) -> str:
    """The catalog's `extra` of a generation: its sheet's other columns, and its take."""
    values = json.loads(extra) if isinstance(extra, str) and extra else {}
    return json.dumps({**values, "take": take}, sort_keys=True, ensure_ascii=False)
