"""Presigned downloads (GET /files/{run_id}.{ext}), and the ways a storage host breaks them.

A download is checked like S3 checks a presigned URL (a bad signature or an expired URL is a
403 in S3's XML) and answers the run's audio in its delivered container. Faults play on it
(`faults.py` lists them): no answer at all, an expired URL, a body cut short, stalled,
garbled, gzip'd, a gzip bomb, or endless; `redirect_downloads_to` answers 307 to another
origin first.
"""

import asyncio
import functools
import gzip
import time
from urllib.parse import urlsplit

from aiohttp import web

from sandbox.answers import STREAM_CHUNK
from sandbox.audio import FORMATS, served_audio_off_loop
from sandbox.connection import CONNECTION_FAULTS, HANG_LIMIT_S, connection_fault, hang
from sandbox.rules import delivered_format
from sandbox.state import STATE, State

GZIP_BOMB_BYTES = 64 << 20  # what the gzip bomb decodes to; ~64 KiB on the wire
_WHOLE_BODY_FAULTS = frozenset({"short", "corrupt", "gzip", "gzip_bomb"})


async def download(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    _count_or_redirect(request, state)
    if state.faults.download_latency_s:
        await asyncio.sleep(state.faults.download_latency_s)
    run_id = int(request.match_info["name"].split(".", 1)[0])
    state.counters.count_each("downloads_by_run", [run_id])
    kind = _fault(state, run_id)
    if kind in CONNECTION_FAULTS:
        return await connection_fault(request, kind)
    refusal = _refusal(request, state, kind)
    if refusal is not None:
        return refusal
    audio = await served_audio_off_loop(run_id)
    headers = {"Content-Type": FORMATS[delivered_format(run_id)].content_type}
    if kind is None:
        return web.Response(body=audio, headers=headers)
    if kind in _WHOLE_BODY_FAULTS:
        return _faulty_body(audio, headers, kind)
    return await _broken_stream(request, audio, headers, kind)


def _count_or_redirect(request: web.Request, state: State) -> None:
    """Count the download, or raise the 307 to `redirect_downloads_to`. A request that
    already reached the redirect target is served, so one server can play both hosts (e.g.
    redirect from 127.0.0.1:P to localhost:P)."""
    has_key = int("x-api-key" in request.headers)
    redirect = state.faults.redirect_downloads_to
    if redirect and urlsplit(redirect).netloc != request.host:
        state.counters.count(download_redirects=1, downloads_with_api_key=has_key)
        raise web.HTTPTemporaryRedirect(redirect.rstrip("/") + request.path_qs)
    state.counters.count(downloads=1, downloads_with_api_key=has_key)


def _fault(state: State, run_id: int) -> str | None:
    """This download's fault: scripted or drawn, else `expire` for an `expired_runs` run."""
    kind = state.plan.next("download")
    if kind is None and run_id in state.faults.expired_runs:
        kind = "expire"
    if kind is not None:
        state.counters.count_fault(kind)
    return kind


def _refusal(request: web.Request, state: State, kind: str | None) -> web.Response | None:
    """S3's 403 for an expired (or faulted) URL or a bad signature; None for a good URL."""
    if kind == "expire":
        return _s3_error(403, "AccessDenied", "Request has expired")
    error = state.urls.check(request.path, request.query)
    if error == "SignatureDoesNotMatch":
        msg = "The request signature we calculated does not match the signature you provided."
        return _s3_error(403, error, msg)
    if error is not None:
        return _s3_error(403, error, "Request has expired")
    return None


def _faulty_body(audio: bytes, headers: dict[str, str], kind: str) -> web.Response:
    """A whole answer whose body is wrong: half of it, garbled, or gzip'd (a bomb too)."""
    if kind == "short":
        return web.Response(body=audio[: len(audio) // 2], headers=headers)
    if kind == "corrupt":
        return web.Response(body=bytes(4) + audio[4:], headers=headers)
    headers["Content-Encoding"] = "gzip"
    body = gzip.compress(audio) if kind == "gzip" else _gzip_bomb()
    return web.Response(body=body, headers=headers)


async def _broken_stream(
    request: web.Request, audio: bytes, headers: dict[str, str], kind: str
) -> web.StreamResponse:
    """A body that never ends (`endless`), or one announced whole and about half sent, then
    the connection closed at once (`truncate`) or left silent until the client gives up
    (`stall`): what broken transfers look like."""
    response = web.StreamResponse(headers=headers)
    if kind == "endless":
        response.enable_chunked_encoding()
        await response.prepare(request)
        return await _write_forever(request, response, audio)
    response.content_length = len(audio)
    await response.prepare(request)
    await response.write(audio[: len(audio) // 2])
    if kind == "stall":
        await hang(request)
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
    zeros = bytes(STREAM_CHUNK)
    give_up = time.monotonic() + HANG_LIMIT_S
    try:
        await response.write(head)
        while request.transport is not None and time.monotonic() < give_up:
            await response.write(zeros)
    except (ConnectionError, RuntimeError):  # the client hung up mid-write
        pass
    if request.transport is not None:
        request.transport.close()
    return response


def _s3_error(status: int, code: str, message: str) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")
