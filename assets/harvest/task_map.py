"""The day's task ids and the runs they resolved to, kept in `_state/task_runs/`.

A manifest row may name its run by task id (`resources.camb.task_resolver` asks the API). Every
answer is recorded here, one row per task, and saved with each checkpoint of the files
ledger, so a rerun asks only about tasks without a final answer (resolved, or failed for
good) and a crash loses at most the answers since the last checkpoint.

`resolve_rows` turns the manifest's rows into rows keyed by run id where the task resolved:
a row whose two ids disagree, or whose task resolved to a run another row of the day already
names, is rejected saying so; a task that never resolved keeps its row, `pending` or `failed`
with the task's answer and no run id.
"""

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import pandas as pd
import pyarrow as pa

from resources.camb.task_resolver import TaskAnswer

TASK_STATE = "task_runs"
TASK_SCHEMA = pa.schema(
    [
        ("task_id", pa.string()),
        ("status", pa.string()),  # resolved, pending, failed
        ("run_id", pa.int64()),
        ("error", pa.string()),
        ("final", pa.bool_()),  # never asked again
        ("polls", pa.int32()),  # status calls answered for it, across materializations
        ("checked_at", pa.timestamp("us", tz="UTC")),
    ]
)
NOT_RESOLVED_YET = "task not resolved yet"


@dataclass(frozen=True)
class TaskPlan:
    run_ids: list[int]  # to harvest now: run-id rows, and tasks resolved earlier
    poll: list[str]  # tasks to ask about, beside the harvest
    task_only: frozenset[str] = frozenset()  # polled tasks of rows without a run id

    def joins(self, answer: TaskAnswer) -> bool:
        """Whether a task's run joins the harvest: only a row with no run id of its own
        brings one, and never a run the plan already keeps, adopts or fetches (a rerun after a
        crash would download again what it should adopt)."""
        return answer.task_id in self.task_only and answer.run_id not in self._covered

    @cached_property
    def _covered(self) -> frozenset[int]:
        return frozenset(self.run_ids)


class TaskMap:
    """Answers by task id; `record` is called from the client's event loop thread."""

    def __init__(self, rows: pd.DataFrame | None) -> None:
        self._rows: dict[str, dict[str, Any]] = {}
        if rows is not None:  # pandas' NA becomes None
            records = rows.astype(object).where(rows.notna(), None).to_dict("records")
            self._rows = {row["task_id"]: row for row in records}
        self._lock = threading.Lock()
        self.answered: set[str] = set()  # tasks answered in this materialization

    def plan(self, accepted: pd.DataFrame) -> TaskPlan:
        """What to harvest and what to ask, for the day's accepted manifest rows."""
        run_ids: dict[int, None] = {}
        poll, task_only = [], set()
        for run_id, task_id in zip(accepted["run_id"], accepted["task_id"], strict=True):
            known = self._rows.get(task_id) if isinstance(task_id, str) else None
            resolved = known["run_id"] if known and known["status"] == "resolved" else None
            if isinstance(task_id, str) and not (known and known["final"]):
                poll.append(task_id)
                if pd.isna(run_id):
                    task_only.add(task_id)
            if pd.notna(run_id):
                if resolved is None or resolved == run_id:  # a disagreement is not fetched
                    run_ids[int(run_id)] = None
            elif resolved is not None:
                run_ids[int(resolved)] = None
        return TaskPlan(list(run_ids), poll, frozenset(task_only))

    def record(self, answer: TaskAnswer) -> None:
        with self._lock:
            earlier = self._rows.get(answer.task_id)
            self._rows[answer.task_id] = {
                "task_id": answer.task_id,
                "status": answer.status,
                "run_id": answer.run_id,
                "error": answer.reason,
                "final": answer.final,
                "polls": (int(earlier["polls"]) if earlier else 0) + 1,
                "checked_at": datetime.now(UTC),
            }
            self.answered.add(answer.task_id)

    def unanswered(self, task_ids: Iterable[str], reason: str) -> None:
        """Tasks asked for but not answered (the day budget ran out): pending, saying why."""
        with self._lock:
            for task_id in task_ids:
                if task_id not in self.answered:
                    earlier = self._rows.get(task_id) or {"polls": 0, "checked_at": None}
                    self._rows[task_id] = {
                        **earlier, "task_id": task_id, "status": "pending", "run_id": None,
                        "error": reason, "final": False,
                    }  # fmt: skip

    def frame(self) -> pd.DataFrame:
        with self._lock:
            rows = [self._rows[task_id] for task_id in sorted(self._rows)]
        return pd.DataFrame(rows, columns=TASK_SCHEMA.names)


def has_tasks(manifest: pd.DataFrame) -> bool:
    """Does any row of the day name a task? (Else there are no task answers to read.)"""
    return bool(manifest["task_id"].notna().any())


def resolve_rows(manifest: pd.DataFrame, tasks: pd.DataFrame | None) -> pd.DataFrame:
    """The manifest's rows with resolved run ids filled in; rows of unresolved tasks get
    their task's status and error, disagreeing and duplicate rows become `rejected`."""
    if not has_tasks(manifest):
        return manifest  # run ids only: duplicates were rejected as the manifest was read
    out = manifest.copy()
    answers = {} if tasks is None else tasks.set_index("task_id").to_dict("index")
    owner: dict[int, str] = {}  # run id -> "file:line" of the first row that has it
    for index, row in out.iterrows():
        if row["status"] != "accepted":
            continue
        task_id, run_id = row["task_id"], row["run_id"]
        answer = answers.get(task_id) if isinstance(task_id, str) else None
        resolved = answer["run_id"] if answer and answer["status"] == "resolved" else None
        where = f"{row['manifest']}:{row['line']}"
        if pd.notna(run_id) and resolved is not None and int(resolved) != int(run_id):
            out.loc[index, ["status", "error"]] = [
                "rejected",
                f"run_id {int(run_id)} disagrees with task_id {task_id!r}, which the API "
                f"resolved to run {int(resolved)}",
            ]
            continue
        if pd.isna(run_id):
            if resolved is None:
                out.loc[index, ["status", "error"]] = (
                    [answer["status"], answer["error"]] if answer else ["pending", NOT_RESOLVED_YET]
                )
                continue
            run_id = int(resolved)
            out.loc[index, "run_id"] = run_id
        if int(run_id) in owner:
            how = f" (task_id {task_id!r} resolved to it)" if resolved is not None else ""
            out.loc[index, ["status", "error"]] = [
                "rejected",
                f"duplicate of run_id {int(run_id)} at {owner[int(run_id)]}{how}",
            ]
        else:
            owner[int(run_id)] = where
    return out


def unclaimed(ledger: pd.DataFrame, rows: pd.DataFrame) -> list[int]:
    """Runs in the day's ledger that no accepted row names once tasks resolved (`rows` from
    `resolve_rows`): fetched for a row with both ids whose task named another run."""
    claimed = set(rows.loc[rows["status"] == "accepted", "run_id"].dropna().astype(int))
    return sorted({int(run_id) for run_id in ledger["run_id"]} - claimed)
