"""Async client for the CAMB.AI text-to-sound results API.

`CambClient.harvest(run_ids, workdir, deadline=...)` is the whole job: it asks the bulk
endpoint about batches of at most five runs, downloads each presigned URL the moment it
arrives (streamed to a temporary file while hashing), inspects the audio, and yields exactly
one outcome per run: `Fetched` (a verified local file), `Pending` or `Failed`.

Whatever belongs to one run ends as that run's outcome, with a reason: a result call that
keeps failing or is refused, a URL that keeps expiring, bytes that never verify. Only
trouble of the whole API raises, a `CambApiError`: `CambAuthError` (the key is refused),
`CambConfigError` (every call refused the same way), `CambOutageError` (most calls
failing); `resources.camb.api_health` states the rule that tells them apart. The operator's
mistakes (`resources.error_kinds.OperatorError`: the key, the configuration, and those of
`resources.camb.first_contact`: an API never reached, every download refused by the policy)
are never worth a retry. Retries are
bounded per call (`RetryPolicy`), per run (`url_refreshes`) and per day (`deadline`).

Two HTTP connection pools live as long as the client: one for the API (httpx), which carries
the key, and one for downloads (aiohttp: its C parser costs about a quarter of httpx's CPU per
megabyte, and a day's bytes all pass through it), which never does (httpx would forward
`x-api-key` across a redirect to the storage host), follows no redirect by itself, and
connects only where `resources.camb.netguard` allows.
"""

import asyncio
import hashlib
import json
import logging
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import urljoin, urlsplit

import aiohttp
import httpx
import yarl

from resources.audio import AudioFileError, AudioInfo, inspect_audio
from resources.camb.api_health import CallHealth, HealthRule
from resources.camb.first_contact import ApiReach, DownloadPolicyVerdict
from resources.camb.limits import RequestGate, request_gate
from resources.camb.netguard import DownloadPolicy, GuardedResolver, UnsafeDownload
from resources.camb.redact import SecretUrl, install_http_log_redaction, redact_text, redact_url
from resources.camb.retry import (
    RetryableStatus,
    RetryPolicy,
    async_retrying,
    describe_failure,
    error_detail,
    raise_for_retryable,
    retryable_status,
)
from resources.error_kinds import OperatorError, SettingError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://client.camb.ai/apis"
BULK_LIMIT = 5  # the bulk endpoint takes at most five run ids
MAX_REDIRECTS = 5
USER_AGENT = "soundharvest/0.1"
DAY_BUDGET_SPENT = "the day budget was spent before this run finished"
# Waits before asking again for a run whose fresh URL was the one that just expired: a few
# seconds in all per refresh, past any re-signing within one second.
SAME_URL_WAITS_S = (0.25, 0.5, 1.0, 2.0)

_URL_KEYS = ("output_url", "file_url", "url")
_FAILED_STATES = frozenset(
    {"ERROR", "FAILED", "FAILURE", "TIMEOUT", "CANCELLED", "CANCELED", "REVOKED", "REJECTED"}
)
_CHUNK = 64 * 1024
_READ_BUFFER = 1 << 20  # aiohttp's read buffer per download (its default is 64 KiB)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TOO_SHORT = ("too_short", "value_error.list.min_items")  # FastAPI on pydantic 2, on pydantic 1
# How long a part-filled batch waits for more ids while a `resolve` hook is still adding some.
_BATCH_LINGER_S = 0.1


@dataclass(frozen=True)
class ClientSettings:
    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    max_concurrency: int = 8  # HTTP requests in flight at once, API calls and downloads together
    requests_per_second: float | None = None  # client-side limit on API calls
    # Download hosts exempt from the policy (plain http, private or loopback addresses).
    download_allow_hosts: frozenset[str] = frozenset()
    max_download_bytes: int = 1 << 30  # decoded bytes: a compressed body counts as it unpacks
    url_refreshes: int = 3  # fresh URLs asked for one run after expiry or a bad body
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    api_retry: RetryPolicy = field(default_factory=RetryPolicy)
    download_retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(max_attempts=4, budget_s=60.0)
    )
    health: HealthRule = field(default_factory=HealthRule)

    def __post_init__(self) -> None:
        if not self.api_key or not self.api_key.strip():
            raise SettingError(
                "CAMB_API_KEY is not set (or empty)",
                fix="set it to your CAMB.AI API key: export CAMB_API_KEY=...",
                setting="CAMB_API_KEY",
            )
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {self.max_concurrency}")
        if self.requests_per_second is not None and self.requests_per_second <= 0:
            raise ValueError(
                f"requests_per_second must be positive, not {self.requests_per_second}"
            )
        if urlsplit(self.base_url).scheme not in ("http", "https"):
            raise SettingError(
                f"the API base URL {redact_url(self.base_url)} is not an http(s) URL",
                fix=f"set CAMB_API_BASE_URL, e.g. {DEFAULT_BASE_URL}",
                setting="CAMB_API_BASE_URL",
            )
        if min(self.connect_timeout_s, self.read_timeout_s) <= 0:
            raise ValueError("connect and read timeouts must be positive")


# What the API says about one run, and what harvesting it produced.


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


class CambApiError(RuntimeError):
    """A run-wide problem: the materialization cannot go on. Never contains the key."""


class CambAuthError(CambApiError, OperatorError):
    """The API refused the key (401/403)."""

    def __init__(self, problem: str, *, fix: str = "check CAMB_API_KEY") -> None:
        super().__init__(problem, fix=fix, setting="CAMB_API_KEY")


class CambConfigError(CambApiError, OperatorError):
    """Every call was refused the same way and none succeeded: the configuration is wrong."""

    def __init__(self, problem: str, *, fix: str = "check CAMB_API_BASE_URL") -> None:
        super().__init__(problem, fix=fix, setting="CAMB_API_BASE_URL")


class CambOutageError(CambApiError):
    """The API (or its storage host) fails most calls, even after retries."""


class _NoAnswer(Exception):
    """One call outlasted its retries without a usable answer (the API's health decides)."""


class _UrlExpired(Exception):
    """The storage host refused a presigned URL (403/404/410): ask the API for a fresh one."""


class _DownloadRefused(Exception):
    """Downloading this run's URL can never work (size cap, odd answer)."""


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


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The body of a 200 answer as a JSON object, or None when it is anything else."""
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _refusal(response: httpx.Response) -> str:
    if response.status_code == 200:
        return "HTTP 200 with a body that is not a JSON object"
    return error_detail(response)


def _refuses_lone_ids(response: httpx.Response) -> bool:
    """A 422 about the length of `run_ids` itself (not one of its items)."""
    if response.status_code != 422:
        return False
    try:
        errors = response.json()["detail"]
        return any(e["loc"] == ["body", "run_ids"] and e["type"] in _TOO_SHORT for e in errors)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return False


class CambClient:
    """`async with CambClient(settings) as client:` opens both connection pools.

    Every request first passes `gate` (in flight + rate); by default one of this process
    alone, from the settings' max_concurrency and requests_per_second.
    """

    def __init__(self, settings: ClientSettings, gate: RequestGate | None = None) -> None:
        self.settings = settings
        self.gate = gate or request_gate(settings.max_concurrency, settings.requests_per_second)
        timeout = httpx.Timeout(settings.connect_timeout_s, read=settings.read_timeout_s, pool=None)
        limits = httpx.Limits(
            max_connections=settings.max_concurrency,
            max_keepalive_connections=settings.max_concurrency,
        )
        self.api = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/") + "/",
            headers={"x-api-key": settings.api_key, "user-agent": USER_AGENT},
            timeout=timeout,
            limits=limits,
            follow_redirects=False,
        )
        # No key, no automatic redirects, no proxies, no cookies, identity bodies: the
        # download pool talks to storage hosts only, and only to those the policy allows.
        # It is opened on the harvest's event loop (aiohttp binds a session to one loop).
        self.download_policy = DownloadPolicy(settings.download_allow_hosts)
        self._downloads: aiohttp.ClientSession | None = None
        # The docs say the bulk endpoint takes one to five ids; if the API says otherwise
        # (a 422 for a lone id), lone ids go to the single-result endpoint from then on.
        self.lone_ids_to_single = False
        install_http_log_redaction()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.api.aclose()
        finally:  # the download pool's sockets are closed even if the API pool's close fails
            if self._downloads is not None:
                await self._downloads.close()

    @property
    def downloads(self) -> aiohttp.ClientSession:
        """The download pool, opened on first use."""
        if self._downloads is None:
            settings = self.settings
            connector = aiohttp.TCPConnector(
                limit=0,  # the request gate bounds the requests in flight, downloads included
                resolver=GuardedResolver(self.download_policy),
                ssl=httpx.create_ssl_context(trust_env=False),  # the same CAs as the API pool
            )
            self._downloads = aiohttp.ClientSession(
                connector=connector,
                headers={"user-agent": USER_AGENT, "accept-encoding": "identity"},
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=settings.connect_timeout_s,
                    sock_read=settings.read_timeout_s,
                ),
                auto_decompress=False,  # `_decoded` inflates, within the byte cap
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                read_bufsize=_READ_BUFFER,
            )
        return self._downloads

    async def harvest(
        self,
        run_ids: Iterable[int],
        workdir: Path,
        *,
        deadline: float | None = None,
        resolve: Resolve | None = None,
    ) -> AsyncIterator[RunOutcome]:
        """Exactly one outcome per run id, in completion order; CambApiError on run-wide trouble.

        `workdir` must be a private local directory; every `Fetched.path` lives there and is
        the caller's to move or delete, and nothing else is left there. Outcomes wait in a
        bounded queue, so a slow consumer slows the downloads instead of filling the disk.
        `deadline` (a `time.monotonic()` value) bounds the day: once it passes, no request
        starts, downloads in flight are cancelled (their temporaries removed) and every run
        without an outcome yet becomes `Pending` with `DAY_BUDGET_SPENT` as its reason.

        `resolve(ask, add)` runs beside the workers under the same deadline (the task
        resolver): it asks the API through `ask` and hands over run ids with `add`, each
        joining the next bulk batch; an id already known is ignored. Its error ends the day.
        """
        ids = list(run_ids)
        if len(set(ids)) != len(ids):
            raise ValueError("run ids must be unique")
        day = _Day(self, workdir)
        spent = deadline is not None and time.monotonic() >= deadline  # then not one request
        feed = _Feed([] if spent else ids, more=resolve is not None and not spent)
        queue: asyncio.Queue[RunOutcome | _Done] = asyncio.Queue(4 * self.settings.max_concurrency)

        async def worker() -> None:
            while (batch := await feed.batch()) is not None:  # workers share the feed
                await day.harvest_batch(batch, queue.put)

        async def resolving(hook: Resolve) -> None:
            try:
                await hook(day.ask, feed.add)
            finally:
                feed.close()

        async def run_workers() -> None:
            budget = asyncio.timeout_at(deadline)
            error: BaseException | None = None
            try:
                async with budget, asyncio.TaskGroup() as group:
                    if resolve is not None and not spent:
                        group.create_task(resolving(resolve))
                    for _ in range(self.settings.max_concurrency):
                        group.create_task(worker())
            except TimeoutError as exc:
                error = None if budget.expired() else exc  # the day budget ends the day quietly
            except BaseExceptionGroup as group_error:
                error = _first_error(group_error)
            await queue.put(_Done(error))

        done: set[int] = set()
        producer = asyncio.create_task(run_workers())
        try:
            while not isinstance(item := await queue.get(), _Done):
                done.add(item.run_id)
                yield item
            if item.error is not None:
                raise item.error
            day.download_policy.check()  # every download refused by the policy: a setting
            for run_id in ids + feed.added:  # only runs the day budget cut short are left
                if run_id not in done:
                    yield Pending(run_id, DAY_BUDGET_SPENT)
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            await day.close()


class _Feed:
    """The run ids of one harvest, in batches: those known up front, then any a `resolve`
    hook adds until it is done (a part-filled batch waits `_BATCH_LINGER_S` for more)."""

    def __init__(self, ids: list[int], *, more: bool) -> None:
        self._ids = deque(ids)
        self._seen = set(ids)
        self.added: list[int] = []
        self._open = more
        self._arrived = asyncio.Event()
        self._lock = asyncio.Lock()  # one worker fills a batch at a time

    def add(self, run_id: int) -> None:
        if run_id not in self._seen:
            self._seen.add(run_id)
            self.added.append(run_id)
            self._ids.append(run_id)
            self._arrived.set()

    def close(self) -> None:
        self._open = False
        self._arrived.set()

    async def batch(self) -> list[int] | None:
        """The next batch of at most `BULK_LIMIT` ids; None once there will be no more."""
        async with self._lock:
            batch: list[int] = []
            while len(batch) < BULK_LIMIT:
                if self._ids:
                    batch.append(self._ids.popleft())
                    continue
                if not self._open:
                    break
                self._arrived.clear()
                try:
                    async with asyncio.timeout(_BATCH_LINGER_S if batch else None):
                        await self._arrived.wait()
                except TimeoutError:
                    break
            return batch or None


class _Day:
    """One harvest: its calls, the health of its peers, and the runs' outcomes."""

    def __init__(self, client: CambClient, workdir: Path) -> None:
        self.client = client
        self.settings = client.settings
        self.workdir = workdir
        self.api_health = CallHealth(self.settings.health)
        self.storage_health = CallHealth(self.settings.health)
        self.config_probe: asyncio.Task[str | None] | None = None
        self.reach = ApiReach(self._api_target())  # never reached at all: a wrong base URL
        self.download_policy = DownloadPolicyVerdict()  # every download refused: a wrong list

    async def harvest_batch(
        self, batch: Sequence[int], put: Callable[[RunOutcome], Awaitable[None]]
    ) -> None:
        # A task group: when the day stops, every download is cancelled *and* finished
        # (its temporary removed) before the harvest reports back.
        async with asyncio.TaskGroup() as group:
            for result in await self.results(batch):
                if isinstance(result, Ready):
                    group.create_task(self._fetch_and_put(result, put))
                else:
                    await put(result)

    async def _fetch_and_put(
        self, ready: Ready, put: Callable[[RunOutcome], Awaitable[None]]
    ) -> None:
        outcome = await self.fetch(ready)
        try:
            await put(outcome)
        except BaseException:
            if isinstance(outcome, Fetched):
                outcome.path.unlink(missing_ok=True)  # never handed over: not the caller's
            raise

    async def close(self) -> None:
        if self.config_probe is not None:
            self.config_probe.cancel()
            await asyncio.gather(self.config_probe, return_exceptions=True)

    # -- the API ---------------------------------------------------------------------------

    def _api_target(self) -> str:
        return f"the API at {redact_url(self.settings.base_url)}"

    async def call_api(self, method: str, path: str, *, what: str, **kwargs: Any) -> httpx.Response:
        """One API call with retries: the answer, `_NoAnswer`, or a run-wide error."""
        client, attempts = self.client, 0
        try:
            async for attempt in async_retrying(self.settings.api_retry):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    async with client.gate.request(api=True):
                        try:
                            response = await client.api.request(method, path, **kwargs)
                        except httpx.ConnectError as exc:
                            self.reach.connect_failed(exc, attempts)  # raises once it is clear
                            raise
                    self.reach.answer()
                    raise_for_retryable(response, what, read=True)
        except (RetryableStatus, httpx.TransportError) as exc:
            last = describe_failure(exc)
            if self.api_health.failed():
                health = self.api_health
                raise CambOutageError(
                    f"an outage of {self._api_target()}, not a problem of single runs: "
                    f"{health.failures} of its last {health.calls} calls got no answer after "
                    f"retries (last: {last}); try again later"
                ) from None
            raise _NoAnswer(f"after {attempts} attempts (last: {last})") from None
        self.api_health.answered()
        if response.status_code in (401, 403):
            raise CambAuthError(f"{what}: the API rejected the API key ({error_detail(response)})")
        return response

    async def ask(self, path: str, *, what: str, key: Hashable) -> Answer:
        """A GET under the day's rules: run-wide trouble raises, the rest is the `Answer`."""
        try:
            response = await self.call_api("GET", path, what=what)
        except _NoAnswer as exc:
            return Answer(None, None, f"the API gave no answer {exc}")
        body = _json_object(response)
        if body is not None:
            self.api_health.succeeded()
            return Answer(200, body, None)
        answer = _refusal(response)
        await self._refused([key], answer)  # type: ignore[list-item]
        return Answer(response.status_code, None, answer)

    async def results(self, run_ids: Sequence[int]) -> list[RunResult]:
        """At most five runs in one bulk call; trouble is bisected so one bad id sinks no other.

        A lone id goes to the bulk endpoint too. The text-to-sound bulk docs describe "the
        results of one to five runs", and the SDK's own example for this call is
        `get_text_to_sound_results(run_ids=[1])`; the "2 to 5 ids" rule is documented for
        the translation and subtitle bulk endpoints only. One endpoint for every question
        also means a run gets the same kind of answer whether it is asked alone (a rerun, a
        fresh URL) or with others: the single-result endpoint was seen answering 500 for a
        run that the bulk endpoint reported as failed. Should the API refuse a lone id with
        422 after all, lone ids go to the single-result endpoint from then on.
        """
        if not 1 <= len(run_ids) <= BULK_LIMIT:
            raise ValueError(f"between 1 and {BULK_LIMIT} run ids per call, not {len(run_ids)}")
        if len(run_ids) == 1 and self.client.lone_ids_to_single:
            return [await self.result(run_ids[0])]
        try:
            response = await self.call_api(
                "POST",
                "text-to-sound-results",
                what=f"bulk results of runs {list(run_ids)}",
                json={"run_ids": list(run_ids)},
            )
        except _NoAnswer as exc:
            failure = str(exc)  # `exc` is gone once the except block ends
            return await self._isolate(
                run_ids, lambda i: f"the API gave no answer about run {i} {failure}"
            )
        body = _json_object(response)
        if body is not None:
            self.api_health.succeeded()
            # Ids nobody asked for are ignored; ids left out are not ready (yet).
            return [
                interpret_result(run_id, body[str(run_id)])
                if str(run_id) in body
                else Pending(run_id, "left out of the API's answer")
                for run_id in run_ids
            ]
        if len(run_ids) == 1 and _refuses_lone_ids(response):
            if not self.client.lone_ids_to_single:
                log.warning("the bulk endpoint refuses lone ids: asking for them one by one")
            self.client.lone_ids_to_single = True
            return [await self.result(run_ids[0])]
        answer = _refusal(response)
        await self._refused(run_ids, answer)
        return await self._isolate(run_ids, lambda i: f"API refused run {i}: {answer}")

    async def _isolate(
        self, run_ids: Sequence[int], reason: Callable[[int], str]
    ) -> list[RunResult]:
        """Halve a batch the API would not answer; a lone run gets the blame."""
        if len(run_ids) == 1:
            return [Failed(run_ids[0], reason(run_ids[0]))]
        middle = len(run_ids) // 2
        halves = await asyncio.gather(
            self.results(run_ids[:middle]), self.results(run_ids[middle:])
        )
        return [*halves[0], *halves[1]]

    async def result(self, run_id: int) -> RunResult:
        """One run through the single-result endpoint, as a fresh presigned URL when ready."""
        try:
            response = await self.call_api(
                "GET",
                f"text-to-sound-result/{run_id}",
                what=f"result of run {run_id}",
                params={"output_type": "file_url"},
            )
        except _NoAnswer as exc:
            return Failed(run_id, f"the API gave no answer about run {run_id} {exc}")
        body = _json_object(response)
        if body is not None:
            self.api_health.succeeded()
            return interpret_result(run_id, body)
        answer = _refusal(response)
        await self._refused([run_id], answer)
        return Failed(run_id, f"API refused run {run_id}: {answer}")

    async def _refused(self, run_ids: Sequence[int], answer: str) -> None:
        """Raise CambConfigError if every call so far was refused like this (see api_health)."""
        if not self.api_health.refused(run_ids, answer):
            return
        if self.config_probe is None:  # one probe per day, shared by concurrent callers
            self.config_probe = asyncio.ensure_future(self._probe())
        if await asyncio.shield(self.config_probe) == answer:
            raise CambConfigError(
                f"every call to {self._api_target()} was refused the same way ({answer}) and "
                "none succeeded, not even a question that names no run"
            )
        self.api_health.rule_out_config()

    async def _probe(self) -> str | None:
        """How the bulk endpoint answers an empty list: an endpoint that exists says 200 or
        422 (the list is too short); a wrong base URL refuses it like everything else."""
        try:
            response = await self.call_api(
                "POST", "text-to-sound-results", what="probe", json={"run_ids": []}
            )
        except _NoAnswer:
            return None
        if response.status_code == 422 or _json_object(response) is not None:
            return None
        return _refusal(response)

    # -- downloads -------------------------------------------------------------------------

    async def fetch(self, ready: Ready) -> RunOutcome:
        """Download and inspect one ready run, asking for a fresh URL when one goes bad."""
        run_id = ready.run_id
        current: RunResult = ready
        dead: set[str] = set()
        problems: list[str] = []
        no_answer = False  # did the storage host fail to answer the last attempt?
        for round_ in range(self.settings.url_refreshes + 1):
            if round_:
                current = await self._fresh_result(run_id, dead)
                if not isinstance(current, Ready):
                    return current
                if current.url.value in dead:  # the same dead URL again: never re-requested
                    problems.append("the API handed out an expired URL again")
                    continue
            dest = self.workdir / f"{run_id}.{round_}.download"
            no_answer = False
            try:
                size, sha256 = await self._download(current.url, dest)
                audio = await asyncio.to_thread(inspect_audio, dest)
            except UnsafeDownload as exc:
                dest.unlink(missing_ok=True)
                self.download_policy.refuse(exc)  # raises when no download was ever allowed
                return Failed(run_id, f"download refused: {exc}")
            except _DownloadRefused as exc:
                dest.unlink(missing_ok=True)
                return Failed(run_id, f"download refused: {exc}")
            except _UrlExpired as exc:
                dead.add(current.url.value)
                problems.append(str(exc))
            except AudioFileError as exc:
                problems.append(str(exc))
            except (RetryableStatus, httpx.TransportError) as exc:
                no_answer = True
                problems.append(describe_failure(exc))
            except BaseException:
                dest.unlink(missing_ok=True)
                raise
            else:
                self.storage_health.answered()
                return Fetched(run_id, dest, size, sha256, audio, downloads=round_ + 1)
            dest.unlink(missing_ok=True)
        # One outcome per run for the storage host's health: refreshes multiply no failure.
        if not no_answer:
            self.storage_health.answered()
        elif self.storage_health.failed():
            health = self.storage_health
            raise CambOutageError(
                "an outage of the storage host of the downloads, not a problem of single runs: "
                f"the downloads of {health.failures} of the last {health.calls} runs got no "
                f"answer after retries (last: {problems[-1]}); try again later"
            )
        return Failed(run_id, f"download failed {len(problems)} times; last: {problems[-1]}")

    async def _fresh_result(self, run_id: int, dead: set[str]) -> RunResult:
        """The run's result asked for again; the very URL that just died is asked for again
        after a short backoff (`SAME_URL_WAITS_S`): a presigner that re-signs within the same
        second hands out the same URL, and a refresh spent in that second is wasted."""
        [current] = await self.results([run_id])
        for wait in SAME_URL_WAITS_S:
            if not (isinstance(current, Ready) and current.url.value in dead):
                break
            await asyncio.sleep(wait)  # within the day's deadline, like every wait
            [current] = await self.results([run_id])
        return current

    async def _download(self, url: SecretUrl, dest: Path) -> tuple[int, str]:
        async for attempt in async_retrying(self.settings.download_retry):
            with attempt:
                async with self.client.gate.request(api=False):
                    return await self._stream_to_file(url, dest)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _stream_to_file(self, url: SecretUrl, dest: Path) -> tuple[int, str]:
        """GET the URL into `dest`, hashing on the way; follows redirects the policy allows.

        aiohttp's errors become httpx's (`_as_httpx_error`), so retries and reasons treat a
        download's trouble as they treat an API call's.
        """
        target = url.value
        for _ in range(MAX_REDIRECTS + 1):
            self.client.download_policy.check_url(target)
            try:
                # encoded=True: the presigned query is sent as signed, never re-quoted.
                async with self.client.downloads.get(
                    yarl.URL(target, encoded=True), allow_redirects=False
                ) as response:
                    status, headers = response.status, response.headers
                    self.download_policy.allow()  # a storage host the policy admitted answered
                    log.debug("download GET %s: HTTP %d", redact_url(target), status)
                    if status in _REDIRECTS and "location" in headers:
                        target = urljoin(target, headers["location"])
                        continue
                    if status in (401, 403, 404, 410):
                        raise _UrlExpired(f"storage answered HTTP {status}")
                    retryable_status(status, headers.get("retry-after"), "download")
                    if status != 200:
                        raise _DownloadRefused(f"storage answered HTTP {status}")
                    return await self._write_body(response, dest)
            except aiohttp.InvalidURL:  # e.g. a legacy numeric IPv4 host (2130706433)
                raise _DownloadRefused(f"download URL {redact_url(target)} is invalid") from None
            except (aiohttp.ClientError, aiohttp.ServerTimeoutError) as exc:
                raise _as_httpx_error(exc) from None  # aiohttp's text may hold the URL
        raise _DownloadRefused(f"more than {MAX_REDIRECTS} redirects")

    async def _write_body(self, response: aiohttp.ClientResponse, dest: Path) -> tuple[int, str]:
        cap = self.settings.max_download_bytes
        announced = response.headers.get("content-length", "")
        expected = int(announced) if announced.isdigit() else None  # bytes on the wire
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity") and expected is not None and expected > cap:
            raise _DownloadRefused(f"announced {expected} bytes, more than the cap of {cap}")
        digest = hashlib.sha256()
        size = received = 0
        # Hashed and written on the event loop, as aiohttp hands the chunks over: a worker
        # thread per 1 MiB batch cost more CPU (the join, the hop) and gained no wall time
        # (bench/README.md, phase 2).
        with dest.open("wb") as out:
            async for raw, chunk in _decoded(response.content.iter_any(), encoding):
                received += raw
                size += len(chunk)
                if size > cap:
                    raise _DownloadRefused(f"more than the cap of {cap} bytes")
                digest.update(chunk)
                out.write(chunk)
        if expected is not None and received != expected:
            raise httpx.RemoteProtocolError(f"body of {received} bytes, {expected} announced")
        return size, digest.hexdigest()


def _as_httpx_error(exc: Exception) -> httpx.TransportError:
    """The httpx error that names an aiohttp download failure, without its text (a URL)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout("connecting to the storage host timed out")
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout("the storage host stopped sending")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError("cannot connect to the storage host")
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(f"a malformed answer ({type(exc).__name__})")
    return httpx.ReadError(f"the connection failed ({type(exc).__name__})")


async def _decoded(
    raw_chunks: AsyncIterator[bytes], encoding: str
) -> AsyncIterator[tuple[int, bytes]]:
    """(raw bytes read, decoded bytes) of a body, decoding at most `_CHUNK` bytes at a time.

    A gzip bomb's 64 KiB can inflate to 64 MiB; here the byte cap is checked between
    slices, so a bomb costs no more memory than audio.
    """
    if encoding in ("", "identity"):
        async for raw in raw_chunks:
            yield len(raw), raw
        return
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise _DownloadRefused(f"storage sent an unsupported Content-Encoding: {encoding[:40]}")
    inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)  # gzip or zlib header
    try:
        async for raw in raw_chunks:
            data, read = raw, len(raw)
            while True:
                chunk = inflate.decompress(data, _CHUNK)
                data = inflate.unconsumed_tail
                yield read, chunk
                read = 0
                if not data and len(chunk) < _CHUNK:
                    break
    except zlib.error as exc:
        raise _DownloadRefused(f"a {encoding} body that does not decode ({exc})") from None
    if not inflate.eof:
        raise httpx.RemoteProtocolError(f"a {encoding} body that ends early")


@dataclass(frozen=True)
class _Done:
    error: BaseException | None


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a failed task group: a run-wide or operator's error first."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    return next((e for e in leaves if isinstance(e, CambApiError | OperatorError)), leaves[0])
