"""The results endpoints, and what every call under /apis goes through first.

`api_middleware` plays the API's latency and faults, checks the key (401 without a good
one), and gives errors the API's shapes; a `lost` answer is served first, then dropped.
`bulk_results` (POST /apis/text-to-sound-results, one to five run ids) and `single_result`
(GET /apis/text-to-sound-result/{run_id}, raw bytes or a URL) answer per `rules`: where the
real API is undocumented the sandbox deliberately varies the shapes (`rules.bulk_shape`), and
the per-run faults of `Faults` make one run misbehave while the others are served.
"""

import asyncio
import email.utils
import http
import time
from typing import Any

from aiohttp import web

from sandbox.answers import (
    STREAM_CHUNK,
    Invalid,
    Problem,
    detail,
    json_object,
    path_run_id,
    run_id_errors,
    unprocessable,
)
from sandbox.audio import FORMATS, served_audio_off_loop
from sandbox.connection import CONNECTION_FAULTS, connection_fault
from sandbox.faults import SERVED_THEN_LOST, Faults
from sandbox.rules import MAX_BATCH, bulk_shape, delivered_format, run_state
from sandbox.state import STATE, Presigner, same

# The real API's words for a run whose result could not be served (its `result_errors`).
RESULT_ERROR_DETAIL = "Audio file could not be fetched"


@web.middleware
async def api_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Latency, faults, auth and error shapes for everything under /apis."""
    if not request.path.startswith("/apis/"):
        return await handler(request)
    state = request.app[STATE]
    state.counters.enter_api()
    try:
        faults = state.faults
        if faults.latency_s:
            # The request as received, then the wait: a client that gives up meanwhile has
            # sent it whole, and what it asked is done all the same (a create: in doubt).
            await request.read()
            await asyncio.sleep(faults.latency_s)
        kind = state.plan.next("api")
        if kind is not None:
            state.counters.count_fault(kind)
            if kind != SERVED_THEN_LOST:
                return await _api_fault(request, kind, faults)
        key = request.headers.get("x-api-key", "")
        expected = state.api_key
        if not key or (expected is not None and not same(key, expected)):
            return detail(401, "Invalid API key")
        answer = await _served(request, handler)
        if kind == SERVED_THEN_LOST:  # done (a create made its task), the answer never sent
            return await connection_fault(request, "drop")
        return answer
    finally:
        state.counters.leave_api()


async def _served(request: web.Request, handler: Any) -> web.StreamResponse:
    """The handler's answer, its errors in the API's shapes."""
    try:
        return await handler(request)
    except Invalid as exc:
        return unprocessable(exc.errors)
    except web.HTTPException as exc:  # unknown route or method, FastAPI style
        return detail(exc.status, exc.reason)


async def _api_fault(request: web.Request, kind: str, faults: Faults) -> web.Response:
    if kind in CONNECTION_FAULTS:
        return await connection_fault(request, kind)
    if kind == "429":
        retry_after = faults.retry_after
        if retry_after.startswith("date:"):
            ahead = int(retry_after.removeprefix("date:"))
            retry_after = email.utils.formatdate(time.time() + ahead, usegmt=True)
        return detail(429, "Too Many Requests", {"Retry-After": retry_after})
    if kind == "502":  # a gateway's page, not the app's JSON
        html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
        return web.Response(status=502, text=html, content_type="text/html")
    if kind == "503":
        return detail(503, "Service Unavailable")
    return detail(500, "Internal Server Error")


async def bulk_results(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await json_object(request)
    run_ids = body.get("run_ids")
    state.counters.count_batch(len(run_ids) if isinstance(run_ids, list) else None)
    faults = state.faults
    run_ids = _valid_run_ids(body, faults)
    state.counters.count_each("lookups_by_run", run_ids)
    refusal = _batch_refusal(run_ids, faults)
    if refusal is not None:
        return refusal
    return web.json_response(_bulk_answer(run_ids, faults, state.urls, _origin(request)))


def _valid_run_ids(body: dict[str, Any], faults: Faults) -> list[int]:
    """The body's `run_ids`, or `Invalid` with every problem FastAPI would list."""
    loc: list[str | int] = ["body", "run_ids"]
    if "run_ids" not in body:
        raise Invalid((loc, "Field required", "missing"))
    run_ids = body["run_ids"]
    if not isinstance(run_ids, list):
        raise Invalid((loc, "Input should be a valid list", "list_type"))
    errors = [e for i, value in enumerate(run_ids) for e in run_id_errors(value, [*loc, i])]
    errors += _length_errors(len(run_ids), faults.bulk_min_ids, loc)
    if errors:
        raise Invalid(*errors)
    return run_ids


def _length_errors(n: int, least: int, loc: list[str | int]) -> list[Problem]:
    errors: list[Problem] = []
    if not n:
        errors.append(
            (loc, "List should have at least 1 item after validation, not 0", "too_short")
        )
    if 0 < n < least:
        msg = f"List should have at least {least} items after validation, not {n}"
        errors.append((loc, msg, "too_short"))
    if n > MAX_BATCH:
        msg = f"List should have at most {MAX_BATCH} items after validation, not {n}"
        errors.append((loc, msg, "too_long"))
    return errors


def _batch_refusal(run_ids: list[int], faults: Faults) -> web.Response | None:
    """The answer to the whole batch when one of its runs sinks it: a run with a bulk error
    (`Faults.bulk_errors`) first, then a run of another type (400)."""
    for run_id in run_ids:
        if run_id in faults.bulk_errors:
            return _stuck(faults.bulk_errors[run_id])
    for run_id in run_ids:
        if run_state(run_id) == "wrong_type":
            return _wrong_type(run_id)
    return None


def _bulk_answer(
    run_ids: list[int], faults: Faults, urls: Presigner, origin: str
) -> dict[str, Any]:
    """Run id (a string) -> its entry, in the shape `rules.bulk_shape` gives it; runs left
    out of the answer have none, strangers nobody asked for (`bulk_strangers`) have one."""
    answered = [i for i in run_ids if i not in faults.bulk_omit]
    answered += [i for i in faults.bulk_strangers if i not in run_ids]
    results: dict[str, Any] = {}
    for run_id in answered:
        if run_state(run_id) == "wrong_type":
            continue  # a stranger the batch would have failed for
        shape = bulk_shape(run_id)
        if shape == "output_url":
            results[str(run_id)] = {"output_url": urls.presign(run_id, origin, faults)}
        elif shape == "null":
            results[str(run_id)] = None
        elif shape == "status":
            results[str(run_id)] = _status_body(run_id)
    return results


async def single_result(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.counters.count(single_requests=1)
    run_id = path_run_id(request)
    state.counters.count_each("lookups_by_run", [run_id])
    output_type = request.query.get("output_type", "raw_bytes")
    if output_type not in ("raw_bytes", "file_url"):
        msg = "Input should be 'raw_bytes' or 'file_url'"
        raise Invalid((["query", "output_type"], msg, "enum"))
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
        return web.json_response({key: state.urls.presign(run_id, _origin(request), state.faults)})
    if status == "pending":
        return detail(400, f"Run {run_id} is not ready")
    if status == "failed":
        return detail(400, _failure_reason(run_id))
    return await _stream_audio(request, run_id)


async def _stream_audio(request: web.Request, run_id: int) -> web.StreamResponse:
    """The run's audio streamed like FastAPI's StreamingResponse: chunked, no Content-Length."""
    audio = await served_audio_off_loop(run_id)
    response = web.StreamResponse(
        headers={"Content-Type": FORMATS[delivered_format(run_id)].content_type}
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    for start in range(0, len(audio), STREAM_CHUNK):
        await response.write(audio[start : start + STREAM_CHUNK])
    await response.write_eof()
    return response


def _stuck(status: int) -> web.Response:
    text = RESULT_ERROR_DETAIL if status >= 500 else http.HTTPStatus(status).phrase
    return detail(status, text)


def _status_body(run_id: int) -> dict[str, str]:
    if run_state(run_id) == "failed":
        return {"status": "ERROR", "exception_reason": _failure_reason(run_id)}
    return {"status": "PENDING", "message": "Run is still processing"}


def _failure_reason(run_id: int) -> str:
    return f"Audio generation failed for run {run_id}"


def _wrong_type(run_id: int) -> web.Response:
    return detail(400, f"Run {run_id} is not a text-to-sound run")


def _origin(request: web.Request) -> str:
    """Where presigned URLs point: `download_base_url` if set, else this server."""
    state = request.app[STATE]
    base = state.faults.download_base_url
    if base:
        return base.rstrip("/")
    return state.origin or f"{request.scheme}://{request.host}"
