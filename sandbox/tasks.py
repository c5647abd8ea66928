"""Text-to-sound tasks: the create call, the status call, and the tasks created here.

`POST /apis/text-to-sound` validates its body as the API does and creates a task whose run is
the next ready run id from `FIRST_CREATED_RUN_ID` on. `GET /apis/text-to-sound/{task_id}`
answers for tasks created here (PENDING at the first poll, then SUCCESS) and for task ids that
name their run and fate (`rules.task_fate`: `task-123` succeeds with run 123,
`task-123-broken` answers 500 forever, ...); any other id is 404. Every status call is
counted, per task too (`status_requests`, `status_polls`).
"""

import threading
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sandbox.answers import Invalid, Problem, detail, json_object
from sandbox.rules import run_state, task_fate
from sandbox.stats import Counters

FIRST_CREATED_RUN_ID = 1_000_001


class Tasks:
    """The tasks created here: task id -> its run id and how often its status was asked."""

    def __init__(self, counters: Counters) -> None:
        self._counters = counters
        self._lock = threading.Lock()
        self._tasks: dict[str, list[int]] = {}  # task id -> [run id, polls so far]
        self._next_run_id = FIRST_CREATED_RUN_ID

    def create(self) -> str:
        task_id = str(uuid.uuid4())
        with self._lock:
            while run_state(self._next_run_id) != "ready":
                self._next_run_id += 1
            self._tasks[task_id] = [self._next_run_id, 0]
            self._next_run_id += 1
        return task_id

    def poll(self, task_id: str) -> tuple[int, int] | None:
        """(run id, how many polls including this one), or None for a task not created here."""
        self._counters.count(status_requests=1)
        self._counters.count_each("status_polls", [task_id])
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return None
            task[1] += 1
            return task[0], task[1]


TASKS = web.AppKey("tasks", Tasks)


async def create_task(request: web.Request) -> web.Response:
    body = await json_object(request)
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
    if errors:
        raise Invalid(*errors)
    return web.json_response({"task_id": request.app[TASKS].create()})


async def task_status(request: web.Request) -> web.Response:
    task_id = request.match_info["task_id"]
    polled = request.app[TASKS].poll(task_id)
    if polled is not None:  # created here: PENDING at the first poll, then SUCCESS
        run_id, polls = polled
        if polls == 1:
            return web.json_response({"status": "PENDING", "run_id": None})
        return web.json_response({"status": "SUCCESS", "run_id": run_id})
    named = task_fate(task_id)
    if named is None:
        return detail(404, "Task not found")
    run_id, fate = named
    if fate == "broken":
        return detail(500, "Internal Server Error")
    return web.json_response(_TASK_ANSWERS[fate](run_id))


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
        "message": "Insufficient credits",
    },
}
