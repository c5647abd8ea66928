"""Async client for the CAMB.AI text-to-sound results API.

`CambClient.harvest(run_ids, workdir)` is the whole job: it asks the bulk endpoint about
batches of at most five runs, downloads each presigned URL the moment it arrives (streamed
to a temporary file while hashing), inspects the audio, and yields one outcome per run:
`Fetched` (a verified local file), `Pending` or `Failed`. Run-wide trouble (a rejected key,
an API that stays unreachable) raises `CambApiError` instead.

Two HTTP connection pools live as long as the client: one for the API, which carries the
key, and one for downloads, which never does (httpx would forward `x-api-key` across a
redirect to the storage host).
"""

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import urljoin, urlsplit

import httpx

from resources.audio_file import AudioFileError, AudioInfo, inspect_audio
from resources.limits import RequestGate, request_gate
from resources.redact import SecretUrl, install_http_log_redaction, redact_text, redact_url
from resources.retry import (
    RetryableStatus,
    RetryPolicy,
    async_retrying,
    describe_failure,
    raise_for_retryable,
)

DEFAULT_BASE_URL = "https://client.camb.ai/apis"
BULK_LIMIT = 5  # the bulk endpoint takes at most five run ids
MAX_REDIRECTS = 5
USER_AGENT = "soundharvest/0.1"

_URL_KEYS = ("output_url", "file_url", "url")
_FAILED_STATES = frozenset(
    {"ERROR", "FAILED", "FAILURE", "TIMEOUT", "CANCELLED", "CANCELED", "REVOKED", "REJECTED"}
)


@dataclass(frozen=True)
class ClientSettings:
    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    max_concurrency: int = 8  # HTTP requests in flight at once, API calls and downloads together
    requests_per_second: float | None = None  # client-side limit on API calls
    download_allow_hosts: frozenset[str] = frozenset()  # hosts allowed to serve plain http
    max_download_bytes: int = 1 << 30
    url_refreshes: int = 3  # fresh URLs asked for one run after expiry or a bad body
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    api_retry: RetryPolicy = field(default_factory=RetryPolicy)
    download_retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(max_attempts=4, budget_s=60.0)
    )

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("the CAMB.AI API key is empty: set CAMB_API_KEY")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {self.max_concurrency}")
        if self.requests_per_second is not None and self.requests_per_second <= 0:
            raise ValueError(
                f"requests_per_second must be positive, not {self.requests_per_second}"
            )
        if urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ValueError(f"the API base URL must be http(s): {redact_url(self.base_url)}")


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


class CambApiError(RuntimeError):
    """A run-wide problem: the materialization cannot go on. Never contains the key."""


class CambAuthError(CambApiError):
    pass


class _UrlExpired(Exception):
    """The storage host refused a presigned URL (403/404/410): ask the API for a fresh one."""


class _DownloadRefused(Exception):
    """Downloading this run's URL can never work (host policy, size cap, odd answer)."""


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


def _error_detail(response: httpx.Response) -> str:
    """The FastAPI `detail` of an error answer, short and secret-free."""
    try:
        detail = response.json().get("detail", "")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        detail = ""
    if isinstance(detail, list):  # 422: [{"loc": [...], "msg": ..., "type": ...}]
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    text = f"HTTP {response.status_code}" + (f": {detail}" if detail else "")
    return redact_text(text)[:500]


class CambClient:
    """`async with CambClient(settings) as client:` opens both connection pools.

    Every request first passes `gate` (in flight + rate); by default one of this process
    alone, from the settings' max_concurrency and requests_per_second.
    """

    def __init__(self, settings: ClientSettings, gate: RequestGate | None = None) -> None:
        self._settings = settings
        self._gate = gate or request_gate(settings.max_concurrency, settings.requests_per_second)
        timeout = httpx.Timeout(settings.connect_timeout_s, read=settings.read_timeout_s, pool=None)
        limits = httpx.Limits(
            max_connections=settings.max_concurrency,
            max_keepalive_connections=settings.max_concurrency,
        )
        self._api = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/") + "/",
            headers={"x-api-key": settings.api_key, "user-agent": USER_AGENT},
            timeout=timeout,
            limits=limits,
            follow_redirects=False,
        )
        # No key, no default redirects: the download pool only ever talks to storage hosts.
        self._downloads = httpx.AsyncClient(
            headers={"user-agent": USER_AGENT},
            timeout=timeout,
            limits=limits,
            follow_redirects=False,
        )
        install_http_log_redaction()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._api.aclose()
        await self._downloads.aclose()

    # -- the API ---------------------------------------------------------------------------

    async def _call_api(
        self, method: str, path: str, *, what: str, **kwargs: Any
    ) -> httpx.Response:
        """One API request with retries; 401/403 raise at once, other answers are returned."""
        try:
            async for attempt in async_retrying(self._settings.api_retry):
                with attempt:
                    async with self._gate.request(api=True):
                        response = await self._api.request(method, path, **kwargs)
                    raise_for_retryable(response, what)
        except (RetryableStatus, httpx.TransportError) as exc:
            raise CambApiError(
                f"{what}: the API at {redact_url(self._settings.base_url)} did not answer "
                f"successfully after retries (last: {describe_failure(exc)})"
            ) from None
        if response.status_code in (401, 403):
            raise CambAuthError(
                f"{what}: the API rejected the API key ({_error_detail(response)}); "
                "check CAMB_API_KEY"
            )
        return response

    def _json(self, response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CambApiError(
                f"{what}: the API answered with something that is not JSON"
            ) from None

    async def result(self, run_id: int) -> RunResult:
        """One run, through the single-result endpoint (a fresh presigned URL when ready)."""
        what = f"result of run {run_id}"
        response = await self._call_api(
            "GET", f"text-to-sound-result/{run_id}", params={"output_type": "file_url"}, what=what
        )
        if response.status_code == 200:
            return interpret_result(run_id, self._json(response, what))
        if 400 <= response.status_code < 500:
            return Failed(run_id, f"API refused run {run_id}: {_error_detail(response)}")
        raise CambApiError(f"{what}: unexpected answer {_error_detail(response)}")

    async def results(self, run_ids: Sequence[int]) -> list[RunResult]:
        """At most five runs in one bulk call; a 4xx is bisected so one bad id sinks no other."""
        if not 1 <= len(run_ids) <= BULK_LIMIT:
            raise ValueError(f"between 1 and {BULK_LIMIT} run ids per call, not {len(run_ids)}")
        if len(run_ids) == 1:  # some docs say the bulk call wants 2..5 ids
            return [await self.result(run_ids[0])]
        what = f"bulk results of runs {list(run_ids)}"
        response = await self._call_api(
            "POST", "text-to-sound-results", json={"run_ids": list(run_ids)}, what=what
        )
        if response.status_code == 200:
            body = self._json(response, what)
            if not isinstance(body, dict):
                raise CambApiError(f"{what}: expected a JSON object, got {type(body).__name__}")
            return [interpret_result(run_id, body.get(str(run_id))) for run_id in run_ids]
        if 400 <= response.status_code < 500:
            middle = len(run_ids) // 2
            return [*await self.results(run_ids[:middle]), *await self.results(run_ids[middle:])]
        raise CambApiError(f"{what}: unexpected answer {_error_detail(response)}")

    # -- downloads -------------------------------------------------------------------------

    def _check_download_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme == "https":
            return
        if parts.scheme == "http" and parts.hostname in self._settings.download_allow_hosts:
            return
        raise _DownloadRefused(
            f"download URL {redact_url(url)} is not allowed: only https, or http from a host "
            "in CAMB_DOWNLOAD_ALLOW_HOSTS"
        )

    async def _stream_to_file(self, url: SecretUrl, dest: Path) -> tuple[int, str]:
        """GET the URL into `dest`, hashing on the way; follows redirects the policy allows."""
        target = url.value
        for _ in range(MAX_REDIRECTS + 1):
            self._check_download_url(target)
            async with self._downloads.stream("GET", target) as response:
                if response.is_redirect and "location" in response.headers:
                    target = urljoin(target, response.headers["location"])
                    continue
                if response.status_code in (401, 403, 404, 410):
                    raise _UrlExpired(f"storage answered HTTP {response.status_code}")
                raise_for_retryable(response, "download")
                if response.status_code != 200:
                    raise _DownloadRefused(f"storage answered HTTP {response.status_code}")
                return await self._write_body(response, dest)
        raise _DownloadRefused(f"more than {MAX_REDIRECTS} redirects")

    async def _write_body(self, response: httpx.Response, dest: Path) -> tuple[int, str]:
        cap = self._settings.max_download_bytes
        announced = response.headers.get("content-length", "")
        # A compressed body's length says nothing about the decoded bytes we store.
        encoded = response.headers.get("content-encoding", "identity") != "identity"
        expected = int(announced) if announced.isdigit() and not encoded else None
        if expected is not None and expected > cap:
            raise _DownloadRefused(f"announced {expected} bytes, more than the cap of {cap}")
        digest = hashlib.sha256()
        size = 0
        with dest.open("wb") as out:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > cap:
                    raise _DownloadRefused(f"more than the cap of {cap} bytes")
                digest.update(chunk)
                out.write(chunk)
        if expected is not None and size != expected:
            raise httpx.RemoteProtocolError(f"body of {size} bytes, {expected} announced")
        return size, digest.hexdigest()

    async def _download(self, url: SecretUrl, dest: Path) -> tuple[int, str]:
        async for attempt in async_retrying(self._settings.download_retry):
            with attempt:
                async with self._gate.request(api=False):
                    return await self._stream_to_file(url, dest)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def fetch(self, ready: Ready, workdir: Path) -> RunOutcome:
        """Download and inspect one ready run, asking for a fresh URL when one goes bad."""
        run_id = ready.run_id
        current: RunResult = ready
        problems: list[str] = []
        for round_ in range(self._settings.url_refreshes + 1):
            if round_:
                current = await self.result(run_id)
                if not isinstance(current, Ready):
                    return current
            dest = workdir / f"{run_id}.{round_}.download"
            try:
                size, sha256 = await self._download(current.url, dest)
                audio = await asyncio.to_thread(inspect_audio, dest)
            except _DownloadRefused as exc:
                dest.unlink(missing_ok=True)
                return Failed(run_id, f"download refused: {exc}")
            except (_UrlExpired, AudioFileError) as exc:
                problems.append(str(exc))
            except (RetryableStatus, httpx.TransportError) as exc:
                problems.append(describe_failure(exc))
            except BaseException:
                dest.unlink(missing_ok=True)
                raise
            else:
                return Fetched(run_id, dest, size, sha256, audio, downloads=round_ + 1)
            dest.unlink(missing_ok=True)
        return Failed(run_id, f"download failed {len(problems)} times; last: {problems[-1]}")

    # -- the whole job ---------------------------------------------------------------------

    async def _harvest_batch(
        self, batch: Sequence[int], workdir: Path
    ) -> AsyncIterator[RunOutcome]:
        pending_downloads = []
        for result in await self.results(batch):
            if isinstance(result, Ready):
                pending_downloads.append(asyncio.ensure_future(self.fetch(result, workdir)))
            else:
                yield result
        try:
            for next_done in asyncio.as_completed(pending_downloads):
                yield await next_done
        finally:
            for task in pending_downloads:
                task.cancel()

    async def harvest(self, run_ids: Iterable[int], workdir: Path) -> AsyncIterator[RunOutcome]:
        """One outcome per run id, in completion order; raises CambApiError on run-wide trouble.

        `workdir` must be a private local directory; every `Fetched.path` lives there and is
        the caller's to move or delete. Outcomes wait in a bounded queue, so a slow consumer
        slows the downloads instead of filling the disk.
        """
        ids = list(run_ids)
        if len(set(ids)) != len(ids):
            raise ValueError("run ids must be unique")
        batches = iter([ids[i : i + BULK_LIMIT] for i in range(0, len(ids), BULK_LIMIT)])
        queue: asyncio.Queue[RunOutcome | _Done] = asyncio.Queue(4 * self._settings.max_concurrency)

        async def worker() -> None:
            for batch in batches:  # workers share one iterator: each takes the next batch
                async for outcome in self._harvest_batch(batch, workdir):
                    await queue.put(outcome)

        async def run_workers() -> None:
            try:
                async with asyncio.TaskGroup() as group:
                    for _ in range(self._settings.max_concurrency):
                        group.create_task(worker())
            except BaseExceptionGroup as group_error:
                await queue.put(_Done(_first_error(group_error)))
            else:
                await queue.put(_Done(None))

        producer = asyncio.create_task(run_workers())
        try:
            while not isinstance(item := await queue.get(), _Done):
                yield item
            if item.error is not None:
                raise item.error
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)


@dataclass(frozen=True)
class _Done:
    error: BaseException | None


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a failed task group: a run-wide API error first."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    return next((e for e in leaves if isinstance(e, CambApiError)), leaves[0])
