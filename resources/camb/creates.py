"""One text-to-sound create (`POST /text-to-sound`), its outcome classified where it is known.

The API has no idempotency key and no list of the tasks a key created: a create whose answer
is lost may have been made, and charged. So every create ends in exactly one of these states:

| state            | when                                                          | then          |
|------------------|---------------------------------------------------------------|---------------|
| `created`        | 200 with a task id                                            | harvested     |
| `not sent`       | never left (connection refused, no name, TLS), or 429 / 5xx   | tried again   |
|                  | after the retries, or the run stopped before it was sent      | later         |
| `refused`        | a 4xx saying what is wrong with the request (422, 400, ...)   | never again   |
| `out of credits` | 402: the day's submissions stop at once                       | once topped up|
| `in doubt`       | sent, and its answer lost (a read timeout, a reset, a closed  | only when the |
|                  | connection, a 504, a 200 that is not a task id)               | operator asks |

Retries follow the API calls' policy (`RetryPolicy`, `Retry-After`), but only after a
failure that did nothing (`retry.nothing_done`). A refused key (401/403), every create
refused the same way (a wrong base URL), an API never reached, and an outage stop the run:
the create's outcome says what became of it, and the error goes with it (`Attempt.stop`).

Each create is tagged for a person looking in the vendor's studio: `project_name` and
`project_description` come with the `Creation`.
"""

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from resources.camb.calls import ApiCalls
from resources.camb.errors import CambApiError, CambOutageError, NoAnswer
from resources.camb.redact import redact_text
from resources.camb.retry import error_detail
from resources.error_kinds import OperatorError

CreateState = Literal["created", "not sent", "refused", "out of credits", "in doubt"]
MAX_TASK_ID_CHARS = 200  # the API's are UUIDs; anything far longer is not a task id
OUT_OF_CREDITS = "the API is out of credits (HTTP 402)"


@dataclass(frozen=True)
class Creation:
    """One generation to create; `key` is the caller's name for it, never sent."""

    key: str
    prompt: str
    duration: float | None  # seconds; None: the API's default
    audio_type: str  # sound | music
    project_name: str = ""
    project_description: str = ""

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": self.prompt, "audio_type": self.audio_type}
        if self.duration is not None:
            body["duration"] = self.duration
        for name in ("project_name", "project_description"):
            if getattr(self, name):
                body[name] = getattr(self, name)
        return body


@dataclass(frozen=True)
class CreateOutcome:
    key: str
    state: CreateState
    task_id: str | None = None  # created only
    reason: str | None = None  # every state but created


@dataclass
class Attempt:
    """One create as it goes: whether its request left, and the error that stops the run."""

    creation: Creation
    sent: bool = False  # the request left at least once (past the request gate)
    stop: BaseException | None = field(default=None, repr=False)

    def sending(self) -> None:
        self.sent = True


async def create(calls: ApiCalls, attempt: Attempt) -> CreateOutcome:
    """Create `attempt.creation` once, classified; a run-wide error goes to `attempt.stop`."""
    key = attempt.creation.key
    try:
        response = await calls.call_api(
            "POST",
            "text-to-sound",
            what=f"create {key}",
            idempotent=False,
            sending=attempt.sending,
            json=attempt.creation.body(),
        )
    except NoAnswer as exc:
        return _unanswered(key, exc.maybe_done, f"the API gave no answer {exc}")
    except (CambApiError, OperatorError) as exc:  # the run stops; what became of this one?
        attempt.stop = exc
        maybe_done = isinstance(exc, CambOutageError) and exc.maybe_done
        return _unanswered(key, maybe_done, f"not created: {exc}")
    return await _answered(calls, attempt, response)


def _unanswered(key: str, maybe_done: bool, reason: str) -> CreateOutcome:
    return CreateOutcome(key, "in doubt" if maybe_done else "not sent", reason=reason)


async def _answered(calls: ApiCalls, attempt: Attempt, response: httpx.Response) -> CreateOutcome:
    key = attempt.creation.key
    if response.status_code == 402:
        return CreateOutcome(key, "out of credits", reason=OUT_OF_CREDITS)
    if response.status_code == 200:
        task_id = _task_id(response)
        if task_id is None:  # it did something, but not what we can name: maybe created
            reason = "HTTP 200 whose body holds no task id: the task may have been created"
            return CreateOutcome(key, "in doubt", reason=reason)
        calls.api_health.succeeded()
        return CreateOutcome(key, "created", task_id=task_id)
    answer = _refusal(response)
    try:  # a refusal is final: first make sure it is not the configuration (a wrong base URL)
        await calls.refused([key], answer, at_once=True)
    except CambApiError as exc:
        attempt.stop = exc
        return CreateOutcome(key, "not sent", reason=f"not created: {exc}")
    return CreateOutcome(key, "refused", reason=f"the API refused it: {answer}")


def _task_id(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    task_id = body.get("task_id") if isinstance(body, dict) else None
    if not isinstance(task_id, str) or not 0 < len(task_id) <= MAX_TASK_ID_CHARS:
        return None
    if not task_id.isprintable() or any(c.isspace() for c in task_id) or task_id in (".", ".."):
        return None
    return task_id


def _refusal(response: httpx.Response) -> str:
    return redact_text(error_detail(response))
