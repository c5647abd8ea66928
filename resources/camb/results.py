"""What the API says about one run, and what harvesting it produced.

A results answer becomes `Ready` (a presigned URL to download at once), `Pending` (ask again
later) or `Failed` (with the API's reason); `interpret_result` reads every shape the API is
known to use. A harvested run ends as `Fetched` (a verified local file), `Pending` or
`Failed`. `Answer` is the reply to any other call (`ask`), such as a task's status.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from resources.audio import AudioInfo
from resources.camb.redact import SecretUrl, redact_text

DAY_BUDGET_SPENT = "the day budget was spent before this run finished"

_URL_KEYS = ("output_url", "file_url", "url")
_FAILED_STATES = frozenset(
    {"ERROR", "FAILED", "FAILURE", "TIMEOUT", "CANCELLED", "CANCELED", "REVOKED", "REJECTED"}
)


@dataclass(frozen=True)
class Ready:
    status: ClassVar[str] = "ready"
    run_id: int
    url: SecretUrl


@dataclass(frozen=True)
class Pending:
    status: ClassVar[str] = "pending"
    run_id: int
    reason: str


@dataclass(frozen=True)
class Failed:
    status: ClassVar[str] = "failed"
    run_id: int
    reason: str


@dataclass(frozen=True)
class Fetched:
    """The run's audio, downloaded to a local temporary file and verified."""

    status: ClassVar[str] = "ok"
    run_id: int
    path: Path
    size_bytes: int
    sha256: str
    audio: AudioInfo
    downloads: int  # attempts it took, 1 when nothing went wrong


RunResult = Ready | Pending | Failed
RunOutcome = Fetched | Pending | Failed


@dataclass(frozen=True)
class Answer:
    """One API call outside the results flow, after the day's retries and health rules."""

    status: int | None  # HTTP status; None when no answer came after the retries
    body: dict[str, Any] | None  # the JSON object of a 200
    problem: str | None  # the refusal (status and detail) or why no answer came; None on 200


# `ask(path, what=..., key=...)`: a GET through the day's gate, retries and health rules;
# `key` names what the call is about (a run id, a task id) for the configuration rule.
Ask = Callable[..., Awaitable[Answer]]
# A `harvest` hook that runs beside the results calls and adds run ids as it learns them.
Resolve = Callable[[Ask, Callable[[int], None]], Awaitable[None]]


def interpret_result(run_id: int, value: Any) -> RunResult:
    """One run's entry of a results answer, in any of the shapes the API is known to use.

    The bulk endpoint's way of saying "not ready" or "failed" is undocumented: the key may be
    missing or null (not ready), or the value may carry `status` / `exception_reason` /
    `message` instead of a URL; single results use `output_url` or `file_url`.
    """
    if value is None:
        return Pending(run_id, "no result yet")
    if isinstance(value, str):
        if value.startswith(("https://", "http://")):
            return Ready(run_id, SecretUrl(value))
        return Failed(run_id, "unrecognised result: a string that is not a URL")
    if not isinstance(value, dict):
        return Failed(run_id, f"unrecognised result of type {type(value).__name__}")
    for key in _URL_KEYS:
        url = value.get(key)
        if isinstance(url, str) and url:
            return Ready(run_id, SecretUrl(url))
    status = str(value.get("status") or "").upper()
    message = next(
        (value[k] for k in ("exception_reason", "message", "detail", "error") if value.get(k)), None
    )
    reason = redact_text(str(message))[:500] if message else None
    if status in _FAILED_STATES or (not status and value.get("exception_reason")):
        return Failed(run_id, reason or f"API status {status}")
    # PENDING, RUNNING, a SUCCESS without a URL yet, or a status nobody documented:
    # all are worth asking about again later rather than giving up on.
    return Pending(run_id, reason or f"API status {status or 'unknown'}")
