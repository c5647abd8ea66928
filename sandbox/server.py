"""A local stand-in for the CAMB.AI text-to-sound API, served over real HTTP.

Shapes follow the vendor SDK (camb-sdk) and docs; where the real API is undocumented the
sandbox deliberately varies the shapes (see `rules.bulk_shape`), and it injects faults at
random rates, from a script, or per run id, so clients can be tested against everything the
real service may do.

Scripted faults (`SandboxServer.script(target, *kinds)`, or POST /_sandbox/script) hit the
next requests of their target, one kind per request, in order:

| target   | kind      | what the client sees                                                |
|----------|-----------|---------------------------------------------------------------------|
| api      | 429       | 429 with `Retry-After` from `Faults.retry_after` (seconds or a date) |
| api      | 500, 503  | the app's JSON error                                                 |
| api      | 502       | a gateway's HTML page                                                |
| both     | drop      | the connection closed with no answer (FIN)                          |
| both     | reset     | the connection reset (RST)                                          |
| both     | hang      | the request read, then nothing until the client hangs up            |
| download | expire    | 403 `AccessDenied` "Request has expired", S3 style                  |
| download | truncate  | the full Content-Length announced, about half sent, then FIN        |
| download | stall     | headers and about half the body, then nothing until the client hangs up |
| download | short     | half the audio with a matching Content-Length: only the header can tell |
| download | corrupt   | the whole body, but its first bytes (the container magic) garbled   |
| download | gzip      | the audio, sent `Content-Encoding: gzip` (not a fault: must decode) |
| download | gzip_bomb | `Content-Encoding: gzip` that decodes to 64 MiB of zeros             |
| download | endless   | a chunked body that never ends (until the client hangs up)          |

Random faults (`*_rate`) draw 429/5xx/drop for API calls and drop/expire/truncate for
downloads. Per-run faults make one run misbehave forever while every other run is served
normally: `result_errors` (its single-result call answers a status), `bulk_errors` (every
bulk call that includes it answers a status), `expired_runs` (its downloads always answer
403 expired), `bulk_omit` (left out of bulk answers), `bulk_strangers` (added to every bulk
answer though nobody asked), and `bulk_min_ids` (2 makes the bulk endpoint refuse a lone id
with 422, as the docs of the translation and subtitle bulk endpoints say they do).

Task status (`GET /text-to-sound/{task_id}`) answers for tasks created here (PENDING at the
first poll, then SUCCESS) and for task ids that name their run and fate (`rules.task_fate`:
`task-123` succeeds with run 123, `task-123-broken` answers 500 forever, ...); any other id
is 404. Every status call is counted, per task too (`status_requests`, `status_polls`).
"""

import asyncio
import calendar
import dataclasses
import email.utils
import functools
import gzip
import hashlib
import hmac
import http
import json
import random
import re
import secrets
import socket
import struct
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from sandbox.audio import FORMATS, served_audio
from sandbox.rules import bulk_shape, delivered_format, run_state, task_fate

Target = Literal["api", "download"]
API_FAULT_KINDS = frozenset({"429", "500", "502", "503", "drop", "reset", "hang"})
DOWNLOAD_FAULT_KINDS = frozenset(
    {"drop", "reset", "hang", "stall", "truncate", "expire", "short", "corrupt", "gzip",
     "gzip_bomb", "endless"}
)  # fmt: skip
FIRST_CREATED_RUN_ID = 1_000_001
MAX_BATCH = 5
GZIP_BOMB_BYTES = 64 << 20  # what the gzip bomb decodes to; ~64 KiB on the wire

_RATE_FIELDS = ("throttle_rate", "server_error_rate", "drop_rate", "truncate_rate", "expire_rate")
_RETRY_AFTER = re.compile(r"(date:)?\d+")
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_CHUNK = 64 * 1024
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
_HANG_LIMIT_S = 600.0  # a hanging answer gives up by itself after this, client or not
RESULT_ERROR_DETAIL = "Audio file could not be fetched"  # what the real API said (issue 6)


@dataclass
class Faults:
    """What goes wrong, and how often. Shares are drawn from `random.Random(seed)`."""

    latency_s: float = 0.0  # delay before every API answer (not downloads)
    download_latency_s: float = 0.0  # delay before every download's first byte
    throttle_rate: float = 0.0  # share of API requests answered 429
    retry_after: str = "1"  # Retry-After on 429: seconds, or "date:N" for an HTTP date N s ahead
    server_error_rate: float = 0.0  # share of API requests answered 500/502/503
    drop_rate: float = 0.0  # share of requests (API and downloads) closed with no answer
    truncate_rate: float = 0.0  # share of downloads cut after ~half the announced body
    expire_rate: float = 0.0  # share of downloads answered 403 as expired
    url_ttl_s: float = 600.0
    # Sign with whole seconds only, as S3 presigners do: a URL re-signed within the same
    # second is the very same URL (and an expired one comes back as it was).
    whole_second_urls: bool = False
    download_base_url: str | None = None  # origin put into presigned URLs instead of our own
    redirect_downloads_to: str | None = None  # /files answers 307 to this origin
    seed: int = 0
    # Per-run faults: these runs misbehave on every request, all others are served normally.
    result_errors: dict[int, int] = field(default_factory=dict)  # run id -> status of its GET
    bulk_errors: dict[int, int] = field(default_factory=dict)  # run id -> status of its batch
    expired_runs: tuple[int, ...] = ()  # downloads always answer 403 expired
    bulk_omit: tuple[int, ...] = ()  # never in a bulk answer, even when asked for
    bulk_strangers: tuple[int, ...] = ()  # in every bulk answer, though nobody asked
    bulk_min_ids: int = 1  # fewer ids in a bulk call are refused with 422

    def __post_init__(self) -> None:
        # The control plane speaks JSON: object keys arrive as strings, tuples as lists.
        for name in ("result_errors", "bulk_errors"):
            statuses = dict(getattr(self, name))
            setattr(self, name, {_positive(k, name): _status(v, name) for k, v in statuses.items()})
        for name in ("expired_runs", "bulk_omit", "bulk_strangers"):
            setattr(self, name, tuple(_positive(i, name) for i in getattr(self, name)))
        if not 1 <= self.bulk_min_ids <= MAX_BATCH:
            raise ValueError(f"Faults.bulk_min_ids must be within 1..{MAX_BATCH}")
        for name in _RATE_FIELDS:
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"Faults.{name} must be within [0, 1], got {rate!r}")
        # One draw decides each request's fault, so the shares of one target must fit in 1.
        if self.drop_rate + self.throttle_rate + self.server_error_rate > 1.0:
            raise ValueError("Faults: drop_rate + throttle_rate + server_error_rate exceeds 1")
        if self.drop_rate + self.truncate_rate + self.expire_rate > 1.0:
            raise ValueError("Faults: drop_rate + truncate_rate + expire_rate exceeds 1")
        for name in ("latency_s", "download_latency_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"Faults.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.url_ttl_s <= 0:
            raise ValueError(f"Faults.url_ttl_s must be > 0, got {self.url_ttl_s!r}")
        if not isinstance(self.retry_after, str) or not _RETRY_AFTER.fullmatch(self.retry_after):
            raise ValueError(
                f"Faults.retry_after must be 'N' or 'date:N', got {self.retry_after!r}"
            )
        for name in ("download_base_url", "redirect_downloads_to"):
            url = getattr(self, name)
            if url is not None and not re.fullmatch(r"https?://[^/?#]+/?", url):
                raise ValueError(
                    f"Faults.{name} must be an origin like http://host:port, got {url!r}"
                )


def _positive(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number <= 0 or isinstance(value, bool | float):
        raise ValueError(f"Faults.{name}: run ids must be positive integers, got {value!r}")
    return number


def _status(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise ValueError(f"Faults.{name}: statuses must be 400..599, got {value!r}")
    return value


@dataclass
class _Stats:
    api_requests: int = 0
    bulk_requests: int = 0
    bulk_batch_sizes: list[int] = field(default_factory=list)
    single_requests: int = 0
    status_requests: int = 0
    status_polls: Counter[str] = field(default_factory=Counter)  # task id -> status calls
    downloads: int = 0
    downloads_with_api_key: int = 0
    download_redirects: int = 0
    max_in_flight_api: int = 0
    max_in_flight: int = 0  # API calls and downloads together
    faults_injected: Counter[str] = field(default_factory=Counter)
    # Per run id (keys are strings in JSON): how often it was looked up and downloaded.
    lookups_by_run: Counter[int] = field(default_factory=Counter)
    downloads_by_run: Counter[int] = field(default_factory=Counter)


class _Invalid(Exception):
    """A request that FastAPI would reject with 422; carries (loc, msg, type) triples."""

    def __init__(self, *errors: tuple[list[str | int], str, str]) -> None:
        super().__init__(errors)
        self.errors = errors


class _State:
    """Everything the handlers share with the controlling thread, behind one lock."""

    def __init__(self, api_key: str | None, faults: Faults) -> None:
        self.api_key = api_key
        self.faults = faults  # replaced as a whole, never mutated: handlers read it lock-free
        self.origin: str | None = None  # our own http://host:port, once bound
        self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._rng = random.Random(faults.seed)
        self._scripts: dict[Target, deque[str]] = {"api": deque(), "download": deque()}
        self._tasks: dict[str, list[int]] = {}  # task id -> [run id, polls so far]
        self._next_run_id = FIRST_CREATED_RUN_ID
        self._in_flight_api = 0
        self._in_flight = 0
        self._stats = _Stats()

    # -- faults ---------------------------------------------------------------------------

    def set_faults(self, changes: Mapping[str, Any]) -> Faults:
        unknown = set(changes) - {f.name for f in dataclasses.fields(Faults)}
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        with self._lock:
            self.faults = dataclasses.replace(self.faults, **changes)
            if "seed" in changes:
                self._rng.seed(self.faults.seed)
            return self.faults

    def script(self, target: str, kinds: Iterable[str]) -> None:
        allowed = {"api": API_FAULT_KINDS, "download": DOWNLOAD_FAULT_KINDS}.get(target)
        if allowed is None:
            raise ValueError(f"script target must be 'api' or 'download', got {target!r}")
        kinds = list(kinds)
        bad = [k for k in kinds if k not in allowed]
        if bad:
            raise ValueError(f"{target} faults must be among {sorted(allowed)}, got {bad}")
        with self._lock:
            self._scripts[target].extend(kinds)  # type: ignore[index]

    def next_fault(self, target: Target) -> str | None:
        """The fault for the next request: scripted ones first, then one random draw."""
        with self._lock:
            if self._scripts[target]:
                return self._scripts[target].popleft()
            f = self.faults
            if target == "api":
                shares = (
                    ("drop", f.drop_rate),
                    ("429", f.throttle_rate),
                    ("5xx", f.server_error_rate),
                )
            else:
                shares = (
                    ("drop", f.drop_rate),
                    ("expire", f.expire_rate),
                    ("truncate", f.truncate_rate),
                )
            draw = self._rng.random()
            for kind, share in shares:
                if draw < share:
                    return self._rng.choice(("500", "502", "503")) if kind == "5xx" else kind
                draw -= share
            return None

    # -- stats ----------------------------------------------------------------------------

    def count(self, **increments: int) -> None:
        with self._lock:
            for name, n in increments.items():
                setattr(self._stats, name, getattr(self._stats, name) + n)

    def count_run(self, kind: str, run_ids: Iterable[int]) -> None:
        with self._lock:
            getattr(self._stats, kind).update(run_ids)

    def count_fault(self, kind: str) -> None:
        with self._lock:
            self._stats.faults_injected[kind] += 1

    def count_batch(self, size: int | None) -> None:
        with self._lock:
            self._stats.bulk_requests += 1
            if size is not None:
                self._stats.bulk_batch_sizes.append(size)

    def enter_api(self) -> None:
        with self._lock:
            self._stats.api_requests += 1
            self._in_flight_api += 1
            self._stats.max_in_flight_api = max(self._stats.max_in_flight_api, self._in_flight_api)

    def leave_api(self) -> None:
        with self._lock:
            self._in_flight_api -= 1

    def track(self, change: int) -> None:
        with self._lock:
            self._in_flight += change
            self._stats.max_in_flight = max(self._stats.max_in_flight, self._in_flight)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            stats = dataclasses.asdict(self._stats)
            for name in ("faults_injected", "lookups_by_run", "downloads_by_run", "status_polls"):
                stats[name] = dict(getattr(self._stats, name))
            return stats

    def reset_stats(self, *, scripts: bool = False) -> None:
        with self._lock:
            # Requests still running stay counted in the new peak.
            self._stats = _Stats(
                max_in_flight_api=self._in_flight_api, max_in_flight=self._in_flight
            )
            if scripts:
                for queue in self._scripts.values():
                    queue.clear()

    # -- tasks ----------------------------------------------------------------------------

    def create_task(self) -> str:
        task_id = str(uuid.uuid4())
        with self._lock:
            while run_state(self._next_run_id) != "ready":
                self._next_run_id += 1
            self._tasks[task_id] = [self._next_run_id, 0]
            self._next_run_id += 1
        return task_id

    def poll_task(self, task_id: str) -> tuple[int, int] | None:
        """(run id, how many polls including this one), or None for a task not created here."""
        with self._lock:
            self._stats.status_requests += 1
            self._stats.status_polls[task_id] += 1
            task = self._tasks.get(task_id)
            if task is None:
                return None
            task[1] += 1
            return task[0], task[1]

    # -- presigned URLs -------------------------------------------------------------------

    def _sign(self, path: str, date: str, expires: str) -> str:
        message = f"{path}\n{date}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def presign(self, run_id: int, origin: str) -> str:
        path = f"/files/{run_id}.{FORMATS[delivered_format(run_id)].extension}"
        now = time.time()
        issued = int(now)
        # X-Amz-Date has whole seconds only; the fraction goes into X-Amz-Expires so that a
        # short TTL (tests use 0.2 s) expires exactly `url_ttl_s` after issue.
        expires = f"{self.faults.url_ttl_s + (now - issued):.3f}"
        if self.faults.whole_second_urls:
            expires = f"{self.faults.url_ttl_s:g}"
        date = time.strftime(_AMZ_DATE, time.gmtime(issued))
        query = urlencode(
            {
                "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                "X-Amz-Date": date,
                "X-Amz-Expires": expires,
                "X-Amz-Signature": self._sign(path, date, expires),
            }
        )
        return f"{origin}{path}?{query}"

    def check_presigned(self, path: str, query: Mapping[str, str]) -> str | None:
        """None when the URL is valid, else the S3 error code."""
        date, expires = query.get("X-Amz-Date", ""), query.get("X-Amz-Expires", "")
        signature = query.get("X-Amz-Signature", "")
        if not _same(signature, self._sign(path, date, expires)):
            return "SignatureDoesNotMatch"
        issued = calendar.timegm(time.strptime(date, _AMZ_DATE))
        return "AccessDenied" if time.time() > issued + float(expires) else None


STATE = web.AppKey("state", _State)


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison that also copes with non-ASCII (even undecodable) input."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


# -- response helpers -----------------------------------------------------------------------


def _detail(status: int, detail: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"detail": detail}, status=status, headers=headers)


def _unprocessable(errors: Iterable[tuple[list[str | int], str, str]]) -> web.Response:
    detail = [{"loc": loc, "msg": msg, "type": kind} for loc, msg, kind in errors]
    return web.json_response({"detail": detail}, status=422)


def _s3_error(status: int, code: str, message: str) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


def _drop(request: web.Request) -> web.Response:
    """Close the connection with no answer at all."""
    if request.transport is not None:
        request.transport.close()
    return web.Response()  # never sent: the transport is gone


def _reset(request: web.Request) -> web.Response:
    """Abort the connection with a TCP reset (RST) instead of an orderly close."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:  # linger on, timeout 0: close() sends RST
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response()  # never sent


async def _hang(request: web.Request) -> None:
    """Wait, answering nothing, until the client hangs up (or a long time has passed)."""
    give_up = time.monotonic() + _HANG_LIMIT_S
    while (
        request.transport is not None
        and not request.transport.is_closing()
        and time.monotonic() < give_up
    ):
        await asyncio.sleep(0.01)


_CONNECTION_FAULTS = frozenset({"drop", "reset", "hang"})


async def _connection_fault(request: web.Request, kind: str) -> web.Response:
    """No HTTP answer at all: a closed, a reset, or a silent connection."""
    # The whole request first: a client still writing its body would meet the reset there
    # (and may swallow it), not where a real broken answer is met, on reading.
    await request.read()
    if kind == "hang":
        await _hang(request)
    return _reset(request) if kind == "reset" else _drop(request)


def _stuck(status: int) -> web.Response:
    detail = RESULT_ERROR_DETAIL if status >= 500 else http.HTTPStatus(status).phrase
    return _detail(status, detail)


def _status_body(run_id: int) -> dict[str, str]:
    if run_state(run_id) == "failed":
        return {"status": "ERROR", "exception_reason": _failure_reason(run_id)}
    return {"status": "PENDING", "message": "Run is still processing"}


def _failure_reason(run_id: int) -> str:
    return f"Audio generation failed for run {run_id}"


def _wrong_type(run_id: int) -> web.Response:
    return _detail(400, f"Run {run_id} is not a text-to-sound run")


def _origin(request: web.Request) -> str:
    state = request.app[STATE]
    base = state.faults.download_base_url
    if base:
        return base.rstrip("/")
    return state.origin or f"{request.scheme}://{request.host}"


async def _audio(run_id: int) -> bytes:
    # Rendering takes a millisecond or more (the first MP3 of a kind ~30 ms): keep it off
    # the event loop, which serves every other connection meanwhile.
    return await asyncio.get_running_loop().run_in_executor(None, served_audio, run_id)


# -- request parsing ------------------------------------------------------------------------


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        raise _Invalid((["body"], "Field required", "missing"))
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _Invalid(
            (["body", getattr(exc, "pos", 0)], "JSON decode error", "json_invalid")
        ) from None
    if not isinstance(body, dict):
        msg = "Input should be a valid dictionary or object to extract fields from"
        raise _Invalid((["body"], msg, "model_attributes_type"))
    return body


def _run_id_errors(value: Any, loc: list[str | int]) -> list[tuple[list[str | int], str, str]]:
    if isinstance(value, bool) or not isinstance(value, int):
        return [(loc, "Input should be a valid integer", "int_type")]
    if value <= 0:
        return [(loc, "Input should be greater than 0", "greater_than")]
    return []


def _path_run_id(request: web.Request) -> int:
    text = request.match_info["run_id"]
    loc: list[str | int] = ["path", "run_id"]
    if not re.fullmatch(r"[+-]?\d+", text.strip()):
        msg = "Input should be a valid integer, unable to parse string as an integer"
        raise _Invalid((loc, msg, "int_parsing"))
    errors = _run_id_errors(int(text), loc)
    if errors:
        raise _Invalid(*errors)
    return int(text)


# -- API handlers ---------------------------------------------------------------------------


@web.middleware
async def _in_flight_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Counts API calls and downloads being answered, for the peak in `max_in_flight`."""
    if request.path.startswith("/_sandbox/"):
        return await handler(request)
    state = request.app[STATE]
    state.track(+1)
    try:
        return await handler(request)
    finally:
        state.track(-1)


@web.middleware
async def _api_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Latency, faults, auth and error shapes for everything under /apis."""
    if not request.path.startswith("/apis/"):
        return await handler(request)
    state = request.app[STATE]
    state.enter_api()
    try:
        faults = state.faults
        if faults.latency_s:
            await asyncio.sleep(faults.latency_s)
        kind = state.next_fault("api")
        if kind is not None:
            state.count_fault(kind)
            return await _api_fault(request, kind, faults)
        key = request.headers.get("x-api-key", "")
        expected = state.api_key
        if not key or (expected is not None and not _same(key, expected)):
            return _detail(401, "Invalid API key")
        try:
            return await handler(request)
        except _Invalid as exc:
            return _unprocessable(exc.errors)
        except web.HTTPException as exc:  # unknown route or method, FastAPI style
            return _detail(exc.status, exc.reason)
    finally:
        state.leave_api()


async def _api_fault(request: web.Request, kind: str, faults: Faults) -> web.Response:
    if kind in _CONNECTION_FAULTS:
        return await _connection_fault(request, kind)
    if kind == "429":
        retry_after = faults.retry_after
        if retry_after.startswith("date:"):
            ahead = int(retry_after.removeprefix("date:"))
            retry_after = email.utils.formatdate(time.time() + ahead, usegmt=True)
        return _detail(429, "Too Many Requests", {"Retry-After": retry_after})
    if kind == "502":  # a gateway's page, not the app's JSON
        html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
        return web.Response(status=502, text=html, content_type="text/html")
    if kind == "503":
        return _detail(503, "Service Unavailable")
    return _detail(500, "Internal Server Error")


async def bulk_results(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _json_object(request)
    run_ids = body.get("run_ids")
    state.count_batch(len(run_ids) if isinstance(run_ids, list) else None)
    loc: list[str | int] = ["body", "run_ids"]
    if "run_ids" not in body:
        raise _Invalid((loc, "Field required", "missing"))
    if not isinstance(run_ids, list):
        raise _Invalid((loc, "Input should be a valid list", "list_type"))
    errors = [e for i, value in enumerate(run_ids) for e in _run_id_errors(value, [*loc, i])]
    if not run_ids:
        errors.append(
            (loc, "List should have at least 1 item after validation, not 0", "too_short")
        )
    faults = state.faults
    if 0 < len(run_ids) < faults.bulk_min_ids:
        least = faults.bulk_min_ids
        msg = f"List should have at least {least} items after validation, not {len(run_ids)}"
        errors.append((loc, msg, "too_short"))
    if len(run_ids) > MAX_BATCH:
        msg = f"List should have at most {MAX_BATCH} items after validation, not {len(run_ids)}"
        errors.append((loc, msg, "too_long"))
    if errors:
        raise _Invalid(*errors)
    state.count_run("lookups_by_run", run_ids)
    for run_id in run_ids:
        if run_id in faults.bulk_errors:
            return _stuck(faults.bulk_errors[run_id])
    for run_id in run_ids:
        if run_state(run_id) == "wrong_type":
            return _wrong_type(run_id)
    results: dict[str, Any] = {}
    answered = [i for i in run_ids if i not in faults.bulk_omit]
    answered += [i for i in faults.bulk_strangers if i not in run_ids]
    for run_id in answered:
        if run_state(run_id) == "wrong_type":
            continue  # a stranger the batch would have failed for
        shape = bulk_shape(run_id)
        if shape == "output_url":
            results[str(run_id)] = {"output_url": state.presign(run_id, _origin(request))}
        elif shape == "null":
            results[str(run_id)] = None
        elif shape == "status":
            results[str(run_id)] = _status_body(run_id)
    return web.json_response(results)


async def single_result(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.count(single_requests=1)
    run_id = _path_run_id(request)
    state.count_run("lookups_by_run", [run_id])
    output_type = request.query.get("output_type", "raw_bytes")
    if output_type not in ("raw_bytes", "file_url"):
        msg = "Input should be 'raw_bytes' or 'file_url'"
        raise _Invalid((["query", "output_type"], msg, "enum"))
    if run_id in state.faults.result_errors:
        return _stuck(state.faults.result_errors[run_id])
    status = run_state(run_id)
    if status == "wrong_type":
        return _wrong_type(run_id)
    if output_type == "file_url":
        if status != "ready":
            return web.json_response(_status_body(run_id))
        # The docs disagree on the key; the sandbox serves both.
        key = "output_url" if run_id % 2 == 0 else "file_url"
        return web.json_response({key: state.presign(run_id, _origin(request))})
    if status == "pending":
        return _detail(400, f"Run {run_id} is not ready")
    if status == "failed":
        return _detail(400, _failure_reason(run_id))
    audio = await _audio(run_id)
    # Streamed like FastAPI's StreamingResponse: chunked, no Content-Length.
    response = web.StreamResponse(
        headers={"Content-Type": FORMATS[delivered_format(run_id)].content_type}
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    for start in range(0, len(audio), _CHUNK):
        await response.write(audio[start : start + _CHUNK])
    await response.write_eof()
    return response


async def create_task(request: web.Request) -> web.Response:
    body = await _json_object(request)
    errors: list[tuple[list[str | int], str, str]] = []
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
        raise _Invalid(*errors)
    return web.json_response({"task_id": request.app[STATE].create_task()})


async def task_status(request: web.Request) -> web.Response:
    task_id = request.match_info["task_id"]
    polled = request.app[STATE].poll_task(task_id)
    if polled is not None:  # created here: PENDING at the first poll, then SUCCESS
        run_id, polls = polled
        if polls == 1:
            return web.json_response({"status": "PENDING", "run_id": None})
        return web.json_response({"status": "SUCCESS", "run_id": run_id})
    named = task_fate(task_id)
    if named is None:
        return _detail(404, "Task not found")
    run_id, fate = named
    if fate == "broken":
        return _detail(500, "Internal Server Error")
    return web.json_response(_TASK_ANSWERS[fate](run_id))


_TASK_ANSWERS: dict[str, Any] = {
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


# -- presigned downloads --------------------------------------------------------------------


async def download(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    has_key = int("x-api-key" in request.headers)
    redirect = state.faults.redirect_downloads_to
    # A request that already reached the redirect target is served, so one server can play
    # both hosts (e.g. redirect from 127.0.0.1:P to localhost:P).
    if redirect and urlsplit(redirect).netloc != request.host:
        state.count(download_redirects=1, downloads_with_api_key=has_key)
        raise web.HTTPTemporaryRedirect(redirect.rstrip("/") + request.path_qs)
    state.count(downloads=1, downloads_with_api_key=has_key)
    if state.faults.download_latency_s:
        await asyncio.sleep(state.faults.download_latency_s)
    run_id = int(request.match_info["name"].split(".", 1)[0])
    state.count_run("downloads_by_run", [run_id])
    kind = state.next_fault("download")
    if kind is None and run_id in state.faults.expired_runs:
        kind = "expire"
    if kind is not None:
        state.count_fault(kind)
    if kind in _CONNECTION_FAULTS:
        return await _connection_fault(request, kind)
    if kind == "expire":
        return _s3_error(403, "AccessDenied", "Request has expired")
    error = state.check_presigned(request.path, request.query)
    if error == "SignatureDoesNotMatch":
        msg = "The request signature we calculated does not match the signature you provided."
        return _s3_error(403, error, msg)
    if error is not None:
        return _s3_error(403, error, "Request has expired")
    audio = await _audio(run_id)
    headers = {"Content-Type": FORMATS[delivered_format(run_id)].content_type}
    if kind is None:
        return web.Response(body=audio, headers=headers)
    if kind == "short":
        return web.Response(body=audio[: len(audio) // 2], headers=headers)
    if kind == "corrupt":
        return web.Response(body=bytes(4) + audio[4:], headers=headers)
    if kind in ("gzip", "gzip_bomb"):
        headers["Content-Encoding"] = "gzip"
        body = gzip.compress(audio) if kind == "gzip" else _gzip_bomb()
        return web.Response(body=body, headers=headers)
    response = web.StreamResponse(headers=headers)
    if kind == "endless":
        response.enable_chunked_encoding()
        await response.prepare(request)
        return await _write_forever(request, response, audio)
    # truncate, stall: announce the whole body and send about half; then hang up at once
    # (what a broken transfer looks like) or wait for the client to give up.
    response.content_length = len(audio)
    await response.prepare(request)
    await response.write(audio[: len(audio) // 2])
    if kind == "stall":
        await _hang(request)
    if request.transport is not None:
        request.transport.close()
    return response


@functools.cache
def _gzip_bomb() -> bytes:
    return gzip.compress(bytes(GZIP_BOMB_BYTES), compresslevel=9)


async def _write_forever(
    request: web.Request, response: web.StreamResponse, head: bytes
) -> web.StreamResponse:
    """The audio, then zeros, until the client hangs up (or a long time has passed)."""
    zeros = bytes(_CHUNK)
    give_up = time.monotonic() + _HANG_LIMIT_S
    try:
        await response.write(head)
        while request.transport is not None and time.monotonic() < give_up:
            await response.write(zeros)
    except (ConnectionError, RuntimeError):  # the client hung up mid-write
        pass
    if request.transport is not None:
        request.transport.close()
    return response


# -- control plane for a sandbox in another process (no auth, no faults) ---------------------


async def control_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats())


async def control_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "POST":
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object of fault settings")
            state.set_faults(changes)
        except (ValueError, TypeError) as exc:
            return _detail(400, str(exc))
    return web.json_response(dataclasses.asdict(state.faults))


async def control_script(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("kinds"), list):
            raise ValueError('expected {"target": "api"|"download", "kinds": [...]}')
        request.app[STATE].script(body.get("target"), body["kinds"])
    except (ValueError, TypeError) as exc:
        return _detail(400, str(exc))
    return web.json_response({"ok": True})


async def control_reset(request: web.Request) -> web.Response:
    request.app[STATE].reset_stats(scripts=True)
    return web.json_response({"ok": True})


def make_app(state: _State) -> web.Application:
    app = web.Application(middlewares=[_in_flight_middleware, _api_middleware])
    app[STATE] = state
    app.router.add_post("/apis/text-to-sound-results", bulk_results)
    app.router.add_get("/apis/text-to-sound-result/{run_id}", single_result)
    app.router.add_post("/apis/text-to-sound", create_task)
    app.router.add_get("/apis/text-to-sound/{task_id}", task_status)
    app.router.add_get(r"/files/{name:\d+\.(?:wav|flac|mp3)}", download)
    app.router.add_get("/_sandbox/stats", control_stats)
    app.router.add_route("*", "/_sandbox/faults", control_faults)
    app.router.add_post("/_sandbox/script", control_script)
    app.router.add_post("/_sandbox/reset", control_reset)
    return app


# -- the server -----------------------------------------------------------------------------


class SandboxServer:
    """The sandbox API on a real socket, served from a daemon thread with its own loop.

    Usage::

        with SandboxServer(api_key="k", faults=Faults(throttle_rate=0.1)) as sb:
            sb.base_url  # "http://127.0.0.1:PORT/apis"
            sb.script("download", "truncate")  # the next download is cut short

    Without `api_key`, any non-empty `x-api-key` passes. `port=0` picks a free port.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        faults: Faults | None = None,
        access_log: bool = False,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._access_log = access_log
        self._state = _State(api_key, dataclasses.replace(faults) if faults else Faults())
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the sandbox is not started")
        return self._port

    @property
    def origin(self) -> str:
        """`http://host:port`, the origin of the API and of its presigned URLs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/apis"

    @property
    def faults(self) -> Faults:
        """A copy of the current faults; change them with `set_faults`."""
        return dataclasses.replace(self._state.faults)

    def set_faults(self, **changes: Any) -> Faults:
        """Update some fault settings, effective from the next request."""
        return dataclasses.replace(self._state.set_faults(changes))

    def script(self, target: Target, *kinds: str) -> None:
        """The next requests of `target` ("api" or "download") get exactly these faults."""
        self._state.script(target, kinds)

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset.

        api_requests: every request under /apis (faulted ones too); bulk_requests and
        bulk_batch_sizes (when `run_ids` is a list), single_requests and
        status_requests (status_polls: per task id): those that got past faults and auth;
        downloads: /files requests served or faulted, download_redirects:
        those answered 307; downloads_with_api_key: /files requests that carried
        `x-api-key`; max_in_flight_api: peak concurrent API requests; max_in_flight: peak
        concurrent API requests and downloads together (each counted until its handler has
        answered); faults_injected: kind -> count.
        """
        return self._state.stats()

    def reset_stats(self) -> None:
        self._state.reset_stats()

    def reset(self) -> None:
        """Reset the stats and forget scripted faults not yet served."""
        self._state.reset_stats(scripts=True)

    def start(self) -> "SandboxServer":
        if self._thread is not None:
            raise RuntimeError("the sandbox is already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self._requested_port), family=family, backlog=1024)
        self._port = sock.getsockname()[1]
        if self.host not in _WILDCARD_HOSTS:
            self._state.origin = self.origin
        # No access log by default: one line per request would drown a benchmark.
        log_options: dict[str, Any] = {} if self._access_log else {"access_log": None}
        runner = web.AppRunner(make_app(self._state), shutdown_timeout=1.0, **log_options)
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(runner.setup())
                loop.run_until_complete(web.SockSite(runner, sock, backlog=1024).start())
            except BaseException as exc:  # reported to start() in the calling thread
                failure.append(exc)
                sock.close()
                loop.close()
                return
            finally:
                started.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            # Handlers of connections the cleanup closed (a hang, a keep-alive) end here,
            # not as "Task was destroyed but it is pending" when the loop closes.
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name=f"sandbox-{self._port}", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread = self._loop = None
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = self._loop = None

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
