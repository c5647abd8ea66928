"""When and how long to wait before trying an HTTP request again.

Retried: 429 and 5xx answers, and transport failures (refused or dropped connections,
timeouts, bodies cut short). A `Retry-After` header (seconds or an HTTP date) sets the wait,
capped; otherwise exponential backoff with jitter. Every request has a total time budget:
a wait that would overrun it is not started. Everything else (401/403, other 4xx) is the
caller's to handle, never retried here. A request that must not be done twice (a create) is
retried only when the failure shows it did nothing (`nothing_done`).
"""

import email.utils
import json
import time
from dataclasses import dataclass
from datetime import UTC

import httpx
import tenacity

from resources.camb.redact import redact_text

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    budget_s: float = 300.0  # total time one request may take, waits included
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 120.0  # a server asking for longer is capped, not obeyed

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"a retry policy needs at least 1 attempt, not {self.max_attempts}")
        for name in ("budget_s", "initial_backoff_s", "max_backoff_s", "max_retry_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"RetryPolicy.{name} must be >= 0, not {getattr(self, name)}")


class RetryableStatus(Exception):
    """An answer worth asking again for (429, 5xx); carries the server's Retry-After."""

    def __init__(
        self, status: int, retry_after_s: float | None, what: str, *, detail: str = ""
    ) -> None:
        super().__init__(f"{what}: {detail or f'HTTP {status}'}")
        self.status = status
        self.retry_after_s = retry_after_s
        self.detail = detail  # "HTTP 500: <the server's detail>", secret-free


def error_detail(response: httpx.Response) -> str:
    """`HTTP <status>[: <FastAPI detail>]` of an answer that was read, short and secret-free."""
    try:
        detail = response.json().get("detail", "")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        detail = ""
    if isinstance(detail, list):  # 422: [{"loc": [...], "msg": ..., "type": ...}]
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    text = f"HTTP {response.status_code}" + (f": {detail}" if detail else "")
    return redact_text(text)[:500]


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def raise_for_retryable(response: httpx.Response, what: str, *, read: bool = False) -> None:
    """Turn a 429/5xx answer into a RetryableStatus; other answers pass through.

    `read`: the body is in hand (not a stream), so its detail goes into the reason.
    """
    detail = error_detail(response) if read and response.status_code in RETRYABLE_STATUSES else ""
    retryable_status(response.status_code, response.headers.get("retry-after"), what, detail)


def retryable_status(status: int, retry_after: str | None, what: str, detail: str = "") -> None:
    """Raise a RetryableStatus for a 429/5xx status (with its Retry-After header's value)."""
    if status in RETRYABLE_STATUSES:
        raise RetryableStatus(status, parse_retry_after(retry_after), what, detail=detail)


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, RetryableStatus | httpx.TransportError)


# Failures met before the request left: the connection was never made (refused, a name not
# found, TLS), or no connection of the pool was free.
_BEFORE_SENDING = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def nothing_done(exc: BaseException) -> bool:
    """Whether a failed request is known to have done nothing on the server: it never left
    (`_BEFORE_SENDING`), or the answer says it was refused before any work (429, and 5xx:
    the API's documented behaviour). A 504 is a gateway that gave up waiting for the server,
    which had the request: not known. A request cut off after it was sent (a read timeout, a
    reset, a closed connection) is not known either: the server may have acted on it."""
    if isinstance(exc, RetryableStatus):
        return exc.status != 504
    return isinstance(exc, _BEFORE_SENDING)


class _Wait(tenacity.wait.wait_base):
    """Retry-After when the server sent one (capped), else exponential backoff with jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._backoff = tenacity.wait_exponential_jitter(
            multiplier=policy.initial_backoff_s,
            max=policy.max_backoff_s,
            jitter=policy.initial_backoff_s,
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, RetryableStatus) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, self._policy.max_retry_after_s)
        return self._backoff(retry_state)


def step_retry_wait_s(retry: int, first_s: float, max_s: float) -> float:
    """Seconds to wait before retry number `retry` (1, 2, ...) of a whole step.

    `first_s`, doubled with each retry, plus a jitter of up to half of `first_s` (so that the
    steps one outage failed together do not all come back in the same second), never more
    than `max_s`: tenacity's exponential-with-jitter wait, asked for that retry.
    """
    state = tenacity.RetryCallState(None, None, (), {})
    state.attempt_number = retry
    wait = tenacity.wait_exponential_jitter(multiplier=first_s, max=max_s, jitter=first_s / 2)
    return wait(state)


def async_retrying(policy: RetryPolicy, *, idempotent: bool = True) -> tenacity.AsyncRetrying:
    """A tenacity loop for one request: `async for attempt in async_retrying(p): with attempt:`.

    A request that must not be done twice (`idempotent=False`: a create, which is charged) is
    tried again only after a failure that did nothing (`nothing_done`)."""
    return tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(_is_retryable if idempotent else nothing_done),
        wait=_Wait(policy),
        stop=tenacity.stop_after_attempt(policy.max_attempts)
        | tenacity.stop_before_delay(policy.budget_s),
        reraise=True,
    )


def describe_failure(exc: BaseException) -> str:
    """A short, secret-free reason: httpx messages can embed URLs, so name the error class."""
    if isinstance(exc, RetryableStatus):
        return exc.detail or f"HTTP {exc.status}"
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout ({type(exc).__name__})"
    if isinstance(exc, httpx.TransportError):
        return f"connection failed ({type(exc).__name__})"
    return type(exc).__name__
