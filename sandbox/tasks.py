"""Text-to-sound tasks: the create call, the status call, and the tasks created here.

`POST /apis/text-to-sound` validates its body as the API does and creates a task. Its run is
the next run id from `FIRST_CREATED_RUN_ID` on that `rules.run_state` calls ready, so the
results and download endpoints serve its audio like any other ready run's. The task stays
`PENDING` for `Faults.generation_s` (as set when it was created), then answers `SUCCESS` with
its run id. Credits (`Faults.credits`) run out like the API's: a create past them answers 402,
or, with `out_of_credits="task"`, creates a task that ends `PAYMENT_REQUIRED`. Every create
that reaches the handler is counted, per prompt too (`create_requests`, `creates_by_prompt`:
tasks created), so a test can tell how often a prompt was really created.

`GET /apis/text-to-sound/{task_id}` answers for tasks created here and for task ids that name
their run and fate (`rules.task_fate`: `task-123` succeeds with run 123, `task-123-broken`
answers 500 forever, ...); any other id is 404. Every status call is counted, per task too
(`status_requests`, `status_polls`).
"""

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sandbox.answers import Invalid, Problem, detail, json_object
from sandbox.faults import Faults
from sandbox.rules import run_state, task_fate
from sandbox.stats import Counters

FIRST_CREATED_RUN_ID = 1_000_001
INSUFFICIENT_CREDITS = "Insufficient credits"


@dataclass
class Task:
    run_id: int
    ready_at: float  # time.monotonic() from which it answers SUCCESS
    paid: bool  # False: it ends PAYMENT_REQUIRED (created past the credits)


class Tasks:
    """The tasks created here, and the credits they spent."""

    def __init__(self, counters: Counters, faults: Callable[[], Faults]) -> None:
        self._counters = counters
        self._faults = faults  # the faults in force, read at each create
        self._lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._next_run_id = FIRST_CREATED_RUN_ID
        self._charged = 0  # creates since the credits were last set

    def reset_credits(self) -> None:
        """The credits were set anew: they count from now on."""
        with self._lock:
            self._charged = 0

    def create(self, prompt: str) -> str | None:
        """A new task's id; None when the credits are spent and such creates answer 402."""
        self._counters.count(create_requests=1)
        faults = self._faults()
        with self._lock:
            paid = faults.credits is None or self._charged < faults.credits
            if not paid and faults.out_of_credits == "402":
                return None
            self._charged += paid
            while run_state(self._next_run_id) != "ready":
                self._next_run_id += 1
            task_id = str(uuid.uuid4())
            ready_at = time.monotonic() + faults.generation_s
            self._tasks[task_id] = Task(self._next_run_id, ready_at, paid)
            self._next_run_id += 1
        self._counters.count(tasks_created=1)
        self._counters.count_each("creates_by_prompt", [prompt])
        return task_id

    def poll(self, task_id: str) -> Task | None:
        """The task created here under `task_id`, or None (counted either way)."""
        self._counters.count(status_requests=1)
        self._counters.count_each("status_polls", [task_id])
        with self._lock:
            return self._tasks.get(task_id)


TASKS = web.AppKey("tasks", Tasks)


def _body_errors(body: dict[str, Any]) -> list[Problem]:
    """What FastAPI would say of a create's body (the SDK's `CreateTextToAudio` model)."""
    errors: list[Problem] = []
    if "prompt" not in body:
        errors.append((["body", "prompt"], "Field required", "missing"))
    elif not isinstance(body["prompt"], str):
        errors.append((["body", "prompt"], "Input should be a valid string", "string_type"))
    duration = body.get("duration")
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, int | float)
    ):
        errors.append((["body", "duration"], "Input should be a valid number", "float_type"))
    if body.get("audio_type") not in (None, "sound", "music"):
        errors.append((["body", "audio_type"], "Input should be 'sound' or 'music'", "enum"))
    for name in ("project_name", "project_description"):
        if body.get(name) is not None and not isinstance(body[name], str):
            errors.append((["body", name], "Input should be a valid string", "string_type"))
    return errors


async def create_task(request: web.Request) -> web.Response:
    body = await json_object(request)
    errors = _body_errors(body)
    if errors:
        raise Invalid(*errors)
    task_id = request.app[TASKS].create(body["prompt"])
    if task_id is None:
        return detail(402, INSUFFICIENT_CREDITS)
    return web.json_response({"task_id": task_id})


async def task_status(request: web.Request) -> web.Response:
    task_id = request.match_info["task_id"]
    task = request.app[TASKS].poll(task_id)
    if task is not None:
        return web.json_response(_created_answer(task))
    named = task_fate(task_id)
    if named is None:
        return detail(404, "Task not found")
    run_id, fate = named
    if fate == "broken":
        return detail(500, "Internal Server Error")
    return web.json_response(_TASK_ANSWERS[fate](run_id))


def _created_answer(task: Task) -> dict[str, Any]:
    if time.monotonic() < task.ready_at:
        return {"status": "PENDING", "run_id": None}
    if not task.paid:
        return _TASK_ANSWERS["payment"](task.run_id)
    return {"status": "SUCCESS", "run_id": task.run_id}


_TASK_ANSWERS: dict[str, Callable[[int], dict[str, Any]]] = {
    "success": lambda run_id: {"status": "SUCCESS", "run_id": run_id},
    "norun": lambda run_id: {"status": "SUCCESS", "run_id": None},
    "pending": lambda run_id: {"status": "PENDING", "run_id": None},
    "error": lambda run_id: {
        "status": "ERROR",
        "exception_reason": "INTERNAL_ERROR",
        "message": f"Audio generation failed for task of run {run_id}",
    },
    "timeout": lambda run_id: {"status": "TIMEOUT", "exception_reason": "NONE"},
    "payment": lambda run_id: {
        "status": "PAYMENT_REQUIRED",
        "exception_reason": "PAYMENT_REQUIRED",
        "message": INSUFFICIENT_CREDITS,
    },
}
