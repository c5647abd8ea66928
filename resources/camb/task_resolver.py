"""Task ids into run ids, through the status endpoint, beside the results calls.

The create call (`POST /text-to-sound`) answers a task id only; the run id appears in the
task's status (`GET /text-to-sound/{task_id}`) once the task has succeeded. There is no bulk
status endpoint: one call per task. `TaskResolver` is the `resolve` hook of
`CambClient.harvest`, so its calls pass the same request gate, retries, health rules and day
budget as the results calls, and each run id it learns joins the next bulk batch at once.

`interpret_status` maps one answer, row by row:

| answer                                   | outcome                                      |
|------------------------------------------|----------------------------------------------|
| `SUCCESS` with a run id                  | `resolved` (final): the run is harvested     |
| `SUCCESS` without a run id               | `failed`, saying so (asked again next time)  |
| `ERROR`, `TIMEOUT`, `PAYMENT_REQUIRED`   | `failed` (final), with status and reason     |
| `PENDING` or a status not known as final | `pending`, the status in the reason          |
| 404                                      | `failed` (final): no such task               |
| another refusal, or no answer at all     | `failed` for this day (asked again next time)|

A task id is untrusted text: it reaches the API only as one percent-encoded path segment.
"""

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from resources.camb.redact import redact_text
from resources.camb.results import Answer, Ask

TaskStatus = Literal["resolved", "pending", "failed"]
FAILED_STATUSES = frozenset({"ERROR", "TIMEOUT", "PAYMENT_REQUIRED"})
NO_SUCH_TASK = "no such task"


@dataclass(frozen=True)
class TaskAnswer:
    task_id: str
    status: TaskStatus
    run_id: int | None = None  # set when resolved
    reason: str | None = None  # why, when not resolved
    final: bool = False  # True: never asked again


def status_path(task_id: str) -> str:
    """The status endpoint's path for `task_id`: always exactly one path segment."""
    if task_id in ("", ".", ".."):  # dot segments would be resolved away by URL handling
        raise ValueError(f"task id {task_id!r} cannot be a path segment")
    return "text-to-sound/" + quote(task_id, safe="")


def interpret_status(task_id: str, answer: Answer) -> TaskAnswer:
    """What one status answer means for the task (see the table of the module doc)."""
    if answer.body is None:
        if answer.status == 404:
            return TaskAnswer(task_id, "failed", reason=f"{NO_SUCH_TASK} (HTTP 404)", final=True)
        return TaskAnswer(task_id, "failed", reason=f"task status: {answer.problem}")
    body = answer.body
    status = str(body.get("status") or "").upper()
    details = [str(body[k]) for k in ("exception_reason", "message") if body.get(k)]
    said = redact_text(f"{status or 'no status'}" + "".join(f": {d}" for d in details))[:500]
    if status == "SUCCESS":
        run_id = _run_id(body.get("run_id"))
        if run_id is None:
            return TaskAnswer(task_id, "failed", reason="task status SUCCESS without a run id")
        return TaskAnswer(task_id, "resolved", run_id=run_id, final=True)
    if status in FAILED_STATUSES:
        return TaskAnswer(task_id, "failed", reason=f"task status {said}", final=True)
    return TaskAnswer(task_id, "pending", reason=f"task status {said}")


def payment_required(reason: str | None) -> bool:
    """Whether a task's recorded reason says it ended PAYMENT_REQUIRED: it generated nothing
    (out of credits when it ran), so its generation may be created again."""
    return isinstance(reason, str) and reason.startswith("task status PAYMENT_REQUIRED")


def _run_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return value if isinstance(value, int) and 0 < value < 2**63 else None


class TaskResolver:
    """Asks the status of each task once, `concurrency` calls at a time (the gate decides
    how many really are in flight), reporting each answer to `on_answer` before its run id
    joins the harvest."""

    def __init__(
        self,
        task_ids: Iterable[str],
        on_answer: Callable[[TaskAnswer], None],
        *,
        concurrency: int,
        joins: Callable[[TaskAnswer], bool] | None = None,
    ) -> None:
        self.task_ids = list(dict.fromkeys(task_ids))
        self.on_answer = on_answer
        self.concurrency = concurrency
        # Whether a resolved run joins this harvest: not when the harvest covers it already
        # (a row naming both ids: its run is kept, adopted or fetched by run id).
        self.joins = joins or (lambda answer: True)

    async def __call__(self, ask: Ask, add: Callable[[int], None]) -> None:
        todo = iter(self.task_ids)

        async def worker() -> None:
            for task_id in todo:  # workers share one iterator: each takes the next task
                try:
                    path = status_path(task_id)
                except ValueError as exc:  # the manifest rejects these; never a URL anyway
                    self.on_answer(TaskAnswer(task_id, "failed", reason=str(exc), final=True))
                    continue
                what = f"status of task {task_id!r}"
                answer = interpret_status(task_id, await ask(path, what=what, key=task_id))
                self.on_answer(answer)
                if answer.run_id is not None and self.joins(answer):
                    add(answer.run_id)

        async with asyncio.TaskGroup() as group:
            for _ in range(min(self.concurrency, len(self.task_ids))):
                group.create_task(worker())
