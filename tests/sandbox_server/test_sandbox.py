"""The sandbox API over real loopback HTTP: shapes, errors, presigned URLs, faults, CLI, SDK."""

import dataclasses
import email.utils
import hashlib
import io
import json
import re
import signal
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import count, pairwise
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import pydantic
import pytest
import soundfile as sf

from sandbox import (
    GZIP_BOMB_BYTES,
    RESULT_ERROR_DETAIL,
    AudioSizes,
    Decoy,
    Faults,
    SandboxServer,
    audio_params,
    bulk_shape,
    delivered_format,
    full_backlog,
    render_audio,
    run_state,
)
from sandbox.audio import PARAMS_PERIOD

KEY = "test-key"
CONTENT_TYPES = {"WAV": "audio/wav", "FLAC": "audio/flac", "MP3": "audio/mpeg"}


def find_id(predicate: Callable[[int], bool], start: int = 1) -> int:
    """The first run id from `start` on that the rules make match `predicate`."""
    return next(i for i in count(start) if predicate(i))


def ready(fmt: str = "WAV", start: int = 1) -> int:
    return find_id(lambda i: run_state(i) == "ready" and delivered_format(i) == fmt, start)


PENDING_MISSING = find_id(lambda i: run_state(i) == "pending" and bulk_shape(i) == "missing")
PENDING_NULL = find_id(lambda i: run_state(i) == "pending" and bulk_shape(i) == "null")
FAILED = find_id(lambda i: run_state(i) == "failed")
WRONG_TYPE = find_id(lambda i: run_state(i) == "wrong_type")


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(api_key=KEY) as sb:
        yield sb


@pytest.fixture
def sb(server: SandboxServer) -> SandboxServer:
    """The shared server with default faults, fresh stats, and no scripted faults left over."""
    server.set_faults(**dataclasses.asdict(Faults()))
    server.reset()
    return server


@pytest.fixture
def api(sb: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sb.base_url + "/", headers={"x-api-key": KEY}, timeout=5) as c:
        yield c


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A client without the API key, as for the storage host."""
    with httpx.Client(timeout=5) as c:
        yield c


def bulk(api: httpx.Client, run_ids: object) -> httpx.Response:
    return api.post("text-to-sound-results", json={"run_ids": run_ids})


def file_url(api: httpx.Client, run_id: int) -> str:
    response = bulk(api, [run_id])
    assert response.status_code == 200, response.text
    return response.json()[str(run_id)]["output_url"]


def decode(data: bytes) -> tuple[Any, int]:
    info = sf.info(io.BytesIO(data))
    frames = len(sf.read(io.BytesIO(data))[0])
    return info, frames


# -- rules and audio ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run_id", "state"),
    [(1, "ready"), (7, "pending"), (17, "pending"), (13, "failed"), (63, "failed"),
     (99, "wrong_type"), (199, "wrong_type"), (57, "pending"), (100, "ready")],
)  # fmt: skip
def test_run_state_follows_the_documented_rules(run_id: int, state: str) -> None:
    assert run_state(run_id) == state


def test_audio_params_follow_the_documented_rules() -> None:
    assert [delivered_format(i) for i in (4, 5, 6, 13, 14)] == ["FLAC", "MP3", "WAV", "FLAC", "MP3"]
    p = audio_params(12)  # 12 % 5 = 2, 12 // 5 = 2, 12 % 7 = 5, 12 % 3 = 0
    assert (p.sample_rate, p.channels, p.duration_s, p.subtype) == (24000, 1, 3.0, "PCM_16")
    assert audio_params(5).subtype == "MPEG_LAYER_III"
    assert {audio_params(i).subtype for i in (4, 13)} == {"PCM_16", "PCM_24"}
    with pytest.raises(ValueError, match="99"):
        bulk_shape(99)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "MP3"])
def test_sized_audio_keeps_the_rules_and_takes_its_size_from_the_range(fmt: str) -> None:
    sizes = AudioSizes.parse_mb("0.2-0.4")
    run_ids = [ready(fmt, start) for start in (1, 100, 200)]
    pcm_sizes = []
    for run_id in run_ids:
        params, default = audio_params(run_id, sizes), audio_params(run_id)
        assert dataclasses.replace(params, duration_s=default.duration_s) == default
        width = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4, "MPEG_LAYER_III": 2}[params.subtype]
        pcm_sizes.append(params.frames * params.channels * width)
        data = render_audio(run_id, sizes)
        assert data == render_audio(run_id, sizes) != render_audio(run_id)
        info, frames = decode(data)
        assert (info.format, info.samplerate, info.channels, info.subtype) == (
            fmt, params.sample_rate, params.channels, params.subtype
        )  # fmt: skip
        if fmt != "MP3":  # an MP3's frame count is the decoder's estimate (see resources/audio)
            assert frames == params.frames
        if fmt == "WAV":  # the WAV is its PCM and a header
            assert 0 < len(data) - pcm_sizes[-1] <= 64
    assert all(199_990 <= size <= 400_000 for size in pcm_sizes), pcm_sizes
    assert len(set(pcm_sizes)) == len(pcm_sizes)  # spread over the range


@pytest.mark.parametrize(
    ("text", "expected"),
    [("50", (50_000_000, 50_000_000)), ("0.5-1.5", (500_000, 1_500_000)), (" 1 - 2 ", None)],
)
def test_audio_sizes_parse_mb(text: str, expected: tuple[int, int] | None) -> None:
    sizes = AudioSizes.parse_mb(text)
    assert (sizes.min_bytes, sizes.max_bytes) == (expected or (1_000_000, 2_000_000))


@pytest.mark.parametrize("text", ["", "big", "2-1", "0", "1-", "nan"])
def test_audio_sizes_refuse_what_is_not_a_size(text: str) -> None:
    with pytest.raises(ValueError, match="audio size"):
        AudioSizes.parse_mb(text)


def test_the_rules_repeat_with_the_period_the_renderer_relies_on() -> None:
    for run_id in range(1, 2 * PARAMS_PERIOD):
        later = run_id + PARAMS_PERIOD
        assert audio_params(later) == audio_params(run_id), run_id
        assert delivered_format(later) == delivered_format(run_id), run_id


def test_rendered_audio_is_deterministic_and_decodes_to_its_advertised_params() -> None:
    # Enough ids to cover every container, WAV subtype, sample rate and channel count, and
    # two MP3 runs that share their samples.
    ids = [*range(1, 31), 5 + PARAMS_PERIOD]
    first = {i: render_audio(i) for i in ids}
    assert len(set(first.values())) == len(first), "different runs must differ"
    # Another process, at least a second later (formats may stamp times), same bytes.
    time.sleep(1.0)
    script = (
        "import hashlib, sys; from sandbox import render_audio; "
        "print(*(hashlib.sha256(render_audio(int(i))).hexdigest() for i in sys.argv[1:]))"
    )
    again = subprocess.run(
        [sys.executable, "-c", script, *map(str, ids)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert again == [hashlib.sha256(first[i]).hexdigest() for i in ids]

    magic = {"WAV": (b"RIFF",), "FLAC": (b"fLaC",), "MP3": (b"ID3", b"\xff\xf3", b"\xff\xfb")}
    seen = set()
    for run_id, data in first.items():
        fmt, params = delivered_format(run_id), audio_params(run_id)
        assert data.startswith(magic[fmt]), run_id
        info, frames = decode(data)
        assert info.format == fmt
        assert (info.samplerate, info.channels, info.subtype) == (
            params.sample_rate,
            params.channels,
            params.subtype,
        ), run_id
        assert frames == params.frames, run_id
        seen.add((fmt, params.subtype, params.channels))
    assert len(seen) >= 8  # the loop above really saw the variety


# -- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers", [{}, {"x-api-key": ""}, {"x-api-key": "wrong"}, {"x-api-key": b"\xe9t\xe9"}]
)
def test_a_missing_or_wrong_key_is_401(sb: SandboxServer, headers: dict[str, str]) -> None:
    for method, path in [("POST", "text-to-sound-results"), ("GET", "text-to-sound-result/1")]:
        response = httpx.request(method, f"{sb.base_url}/{path}", headers=headers, json={})
        assert response.status_code == 401
        assert response.json() == {"detail": "Invalid API key"}


def test_without_a_configured_key_any_key_passes_but_one_is_required() -> None:
    with SandboxServer() as open_sb:
        url = f"{open_sb.base_url}/text-to-sound-result/2?output_type=file_url"
        assert httpx.get(url, headers={"x-api-key": "anything"}).status_code == 200
        assert httpx.get(url).status_code == 401


# -- bulk results ---------------------------------------------------------------------------


def test_bulk_results_vary_their_shape_by_run_state(
    sb: SandboxServer, api: httpx.Client, http: httpx.Client
) -> None:
    wav, flac = ready("WAV"), ready("FLAC")
    response = bulk(api, [wav, FAILED, PENDING_MISSING, PENDING_NULL, flac])
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {str(wav), str(FAILED), str(PENDING_NULL), str(flac)}
    assert body[str(PENDING_NULL)] is None
    assert body[str(FAILED)] == {
        "status": "ERROR",
        "exception_reason": f"Audio generation failed for run {FAILED}",
    }
    for run_id in (wav, flac):
        url = body[str(run_id)]["output_url"]
        assert url.startswith(f"{sb.origin}/files/{run_id}.")
        download = http.get(url)
        assert download.status_code == 200
        assert download.content == render_audio(run_id)
        assert download.headers["content-type"] == CONTENT_TYPES[delivered_format(run_id)]
        assert int(download.headers["content-length"]) == len(download.content)
    stats = sb.stats()
    assert (stats["bulk_requests"], stats["bulk_batch_sizes"]) == (1, [5])
    assert (stats["downloads"], stats["downloads_with_api_key"]) == (2, 0)


@pytest.mark.parametrize(
    ("content", "loc", "kind"),
    [
        ({"run_ids": []}, ["body", "run_ids"], "too_short"),
        ({"run_ids": [1, 2, 3, 4, 5, 6]}, ["body", "run_ids"], "too_long"),
        ({"run_ids": [1, "x"]}, ["body", "run_ids", 1], "int_type"),
        ({"run_ids": [1, 2.5]}, ["body", "run_ids", 1], "int_type"),
        ({"run_ids": [0]}, ["body", "run_ids", 0], "greater_than"),
        ({"run_ids": 5}, ["body", "run_ids"], "list_type"),
        ({}, ["body", "run_ids"], "missing"),
        (b"{not json", ["body", 1], "json_invalid"),
        (b"", ["body"], "missing"),
        ([1, 2], ["body"], "model_attributes_type"),
    ],
)
def test_bad_bulk_requests_are_422_fastapi_style(
    api: httpx.Client, content: object, loc: list[object], kind: str
) -> None:
    if isinstance(content, bytes):
        response = api.post("text-to-sound-results", content=content)
    else:
        response = api.post("text-to-sound-results", json=content)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["loc"], error["type"]) == (loc, kind)
    assert error["msg"]


def test_a_wrong_type_run_fails_the_whole_batch_with_400(api: httpx.Client) -> None:
    response = bulk(api, [ready(), WRONG_TYPE])
    assert response.status_code == 400
    assert response.json() == {"detail": f"Run {WRONG_TYPE} is not a text-to-sound run"}


# -- single result --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "MP3"])
def test_single_result_streams_the_audio_with_its_content_type(api: httpx.Client, fmt: str) -> None:
    run_id = ready(fmt)
    response = api.get(f"text-to-sound-result/{run_id}")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPES[fmt]
    assert response.headers.get("transfer-encoding") == "chunked"  # streamed, like FastAPI
    assert response.content == render_audio(run_id)


def test_single_file_url_uses_both_documented_keys(
    sb: SandboxServer, api: httpx.Client, http: httpx.Client
) -> None:
    even = find_id(lambda i: i % 2 == 0 and run_state(i) == "ready")
    odd = find_id(lambda i: i % 2 == 1 and run_state(i) == "ready")
    for run_id, key in ((even, "output_url"), (odd, "file_url")):
        response = api.get(f"text-to-sound-result/{run_id}", params={"output_type": "file_url"})
        assert response.status_code == 200
        assert list(response.json()) == [key]
        assert http.get(response.json()[key]).content == render_audio(run_id)
    assert sb.stats()["single_requests"] == 2


@pytest.mark.parametrize(
    ("run_id", "output_type", "status", "body"),
    [
        (PENDING_NULL, "file_url", 200,
         {"status": "PENDING", "message": "Run is still processing"}),
        (PENDING_NULL, "raw_bytes", 400, {"detail": f"Run {PENDING_NULL} is not ready"}),
        (FAILED, "file_url", 200,
         {"status": "ERROR", "exception_reason": f"Audio generation failed for run {FAILED}"}),
        (FAILED, "raw_bytes", 400, {"detail": f"Audio generation failed for run {FAILED}"}),
        (WRONG_TYPE, "file_url", 400, {"detail": f"Run {WRONG_TYPE} is not a text-to-sound run"}),
        (WRONG_TYPE, "raw_bytes", 400, {"detail": f"Run {WRONG_TYPE} is not a text-to-sound run"}),
    ],
)  # fmt: skip
def test_single_result_of_runs_that_are_not_ready(
    api: httpx.Client, run_id: int, output_type: str, status: int, body: dict[str, str]
) -> None:
    response = api.get(f"text-to-sound-result/{run_id}", params={"output_type": output_type})
    assert (response.status_code, response.json()) == (status, body)


@pytest.mark.parametrize(
    ("path", "loc", "kind"),
    [
        ("text-to-sound-result/abc", ["path", "run_id"], "int_parsing"),
        ("text-to-sound-result/0", ["path", "run_id"], "greater_than"),
        ("text-to-sound-result/-3", ["path", "run_id"], "greater_than"),
        ("text-to-sound-result/2?output_type=zip", ["query", "output_type"], "enum"),
    ],
)
def test_bad_single_requests_are_422(api: httpx.Client, path: str, loc: list, kind: str) -> None:
    response = api.get(path)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["loc"], error["type"]) == (loc, kind)


def test_unknown_api_paths_are_404_json(api: httpx.Client) -> None:
    response = api.get("no-such-endpoint")
    assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})


# -- create and poll ------------------------------------------------------------------------


def test_created_tasks_become_fresh_ready_runs_after_their_generation_time(
    sb: SandboxServer, api: httpx.Client
) -> None:
    sb.set_faults(generation_s=0.2)
    run_ids = []
    for n in range(8):  # enough to pass a non-ready id the counter must skip
        created = api.post("text-to-sound", json={"prompt": f"rain {n}", "audio_type": "sound"})
        assert created.status_code == 200
        task_id = created.json()["task_id"]
        uuid.UUID(task_id)
        first = api.get(f"text-to-sound/{task_id}").json()
        assert first == {"status": "PENDING", "run_id": None}
        time.sleep(0.25)
        second = api.get(f"text-to-sound/{task_id}").json()
        assert second["status"] == "SUCCESS"
        run_ids.append(second["run_id"])
    assert run_ids[0] >= 1_000_001
    assert all(run_state(r) == "ready" for r in run_ids)
    for low, high in pairwise(run_ids):
        assert high > low
        assert all(run_state(skipped) != "ready" for skipped in range(low + 1, high))
    assert run_ids[-1] - run_ids[0] > len(run_ids) - 1, "expected the counter to skip an id"


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({"duration": 2.0}, ["body", "prompt"], "missing"),
        ({"prompt": 3}, ["body", "prompt"], "string_type"),
        ({"prompt": "x", "duration": "long"}, ["body", "duration"], "float_type"),
        ({"prompt": "x", "audio_type": "speech"}, ["body", "audio_type"], "enum"),
    ],
)
def test_bad_create_requests_are_422(api: httpx.Client, body: dict, loc: list, kind: str) -> None:
    response = api.post("text-to-sound", json=body)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["loc"], error["type"]) == (loc, kind)


def test_unknown_task_is_404(api: httpx.Client) -> None:
    response = api.get(f"text-to-sound/{uuid.uuid4()}")
    assert (response.status_code, response.json()) == (404, {"detail": "Task not found"})


# -- presigned URLs -------------------------------------------------------------------------


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return urlunsplit(parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())))


def test_tampered_or_unsigned_urls_are_403_in_s3_style(api: httpx.Client, http: httpx.Client):
    url = file_url(api, ready())
    sig = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    for bad in (
        with_query(url, **{"X-Amz-Signature": sig[::-1]}),
        with_query(url, **{"X-Amz-Signature": "%C3%A9"}),
        with_query(url, **{"X-Amz-Expires": "999999"}),  # lengthening the TTL breaks the sig
        url.replace(f"/{ready()}.wav", f"/{ready(start=ready() + 1)}.wav"),  # another file
        url.split("?")[0],
    ):
        response = http.get(bad)
        assert response.status_code == 403
        assert response.headers["content-type"].startswith("application/xml")
        assert "<Code>SignatureDoesNotMatch</Code>" in response.text
    assert http.get(url).status_code == 200


def test_urls_really_expire_after_their_ttl(
    sb: SandboxServer, api: httpx.Client, http: httpx.Client
) -> None:
    sb.set_faults(url_ttl_s=0.3)
    url = file_url(api, ready())
    assert http.get(url).status_code == 200
    time.sleep(0.5)
    expired = http.get(url)
    assert expired.status_code == 403
    assert "<Code>AccessDenied</Code><Message>Request has expired</Message>" in expired.text
    assert file_url(api, ready()) != url  # asking again gives a fresh, working URL
    assert http.get(file_url(api, ready())).status_code == 200


def test_download_base_url_and_the_api_key_counter(
    sb: SandboxServer, api: httpx.Client, http: httpx.Client
) -> None:
    sb.set_faults(download_base_url=f"http://localhost:{sb.port}")
    url = file_url(api, ready())
    assert url.startswith(f"http://localhost:{sb.port}/files/")
    assert http.get(url).status_code == 200
    assert http.get(url, headers={"x-api-key": KEY}).status_code == 200  # like S3: ignored
    stats = sb.stats()
    assert (stats["downloads"], stats["downloads_with_api_key"]) == (2, 1)


def test_downloads_can_redirect_to_another_host(
    sb: SandboxServer, api: httpx.Client, http: httpx.Client
) -> None:
    run_id = ready()
    url = file_url(api, run_id)
    target = f"http://localhost:{sb.port}"
    sb.set_faults(redirect_downloads_to=target)
    hop = http.get(url, headers={"x-api-key": KEY})
    assert hop.status_code == 307
    assert hop.headers["location"] == target + url.removeprefix(sb.origin)
    final = http.get(hop.headers["location"])
    assert final.content == render_audio(run_id)
    stats = sb.stats()
    assert (stats["download_redirects"], stats["downloads"]) == (1, 1)
    assert stats["downloads_with_api_key"] == 1  # the hop, which a careful client avoids


# -- faults ---------------------------------------------------------------------------------


def test_scripted_api_faults_come_in_order_then_normal_service(
    sb: SandboxServer, api: httpx.Client
) -> None:
    sb.script("api", "429", "500", "502", "503", "drop")
    url = f"text-to-sound-result/{ready()}?output_type=file_url"
    throttled = api.get(url)
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "1"
    assert throttled.json() == {"detail": "Too Many Requests"}
    assert api.get(url).json() == {"detail": "Internal Server Error"}
    gateway = api.get(url)
    assert gateway.status_code == 502
    assert gateway.headers["content-type"].startswith("text/html")
    assert api.get(url).status_code == 503
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        api.get(url)
    assert api.get(url).status_code == 200
    injected = sb.stats()["faults_injected"]
    assert injected == {"429": 1, "500": 1, "502": 1, "503": 1, "drop": 1}


def test_retry_after_can_be_an_http_date(sb: SandboxServer, api: httpx.Client) -> None:
    sb.set_faults(retry_after="date:30")
    sb.script("api", "429")
    response = bulk(api, [1])
    when = email.utils.parsedate_to_datetime(response.headers["retry-after"])
    assert 25 < when.timestamp() - time.time() <= 31


def test_scripted_download_faults(sb: SandboxServer, api: httpx.Client, http: httpx.Client):
    run_id = ready()
    url = file_url(api, run_id)
    sb.script("download", "drop", "truncate", "expire")
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(url)
    with http.stream("GET", url) as response:
        announced = int(response.headers["content-length"])
        assert announced == len(render_audio(run_id))
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
            for chunk in response.iter_raw():
                received += chunk
        assert 0 < len(received) < announced
    expired = http.get(url)
    assert expired.status_code == 403
    assert "Request has expired" in expired.text
    assert http.get(url).content == render_audio(run_id)
    assert sb.stats()["faults_injected"] == {"drop": 1, "truncate": 1, "expire": 1}


def test_per_run_faults_hit_only_their_runs(
    sb: SandboxServer, api: httpx.Client, http: httpx.Client
) -> None:
    broken, refused, poison, expired, fine = (ready(start=s) for s in (1, 21, 41, 61, 81))
    sb.set_faults(
        result_errors={broken: 500, refused: 404}, bulk_errors={poison: 503},
        expired_runs=(expired,),
    )  # fmt: skip

    def single(run_id: int) -> httpx.Response:
        return api.get(f"text-to-sound-result/{run_id}", params={"output_type": "file_url"})

    assert (single(broken).status_code, single(broken).json()["detail"]) == (
        500,
        RESULT_ERROR_DETAIL,
    )
    assert (single(refused).status_code, single(refused).json()) == (404, {"detail": "Not Found"})
    assert bulk(api, [broken, refused, fine]).status_code == 200  # only their GET is broken
    poisoned = bulk(api, [fine, poison])
    assert (poisoned.status_code, poisoned.json()["detail"]) == (503, RESULT_ERROR_DETAIL)
    assert single(poison).status_code == 200  # only its batches are broken
    expired_url = file_url(api, expired)
    assert {http.get(expired_url).status_code for _ in range(3)} == {403}
    assert http.get(file_url(api, fine)).content == render_audio(fine)


def test_bulk_answers_can_leave_out_asked_ids_and_add_strangers(api: httpx.Client, sb) -> None:
    asked, left_out, stranger = ready(), ready(start=ready() + 1), ready("FLAC")
    sb.set_faults(bulk_omit=(left_out,), bulk_strangers=(stranger, WRONG_TYPE))
    body = bulk(api, [asked, left_out]).json()
    assert set(body) == {str(asked), str(stranger)}  # a wrong-type stranger has no answer
    assert body[str(stranger)]["output_url"].startswith(f"{sb.origin}/files/{stranger}.flac?")


def test_the_bulk_endpoint_can_refuse_a_lone_id(sb: SandboxServer, api: httpx.Client) -> None:
    sb.set_faults(bulk_min_ids=2)
    lone = bulk(api, [ready()])
    assert lone.status_code == 422
    [error] = lone.json()["detail"]
    assert (error["loc"], error["type"]) == (["body", "run_ids"], "too_short")
    assert bulk(api, [ready(), ready(start=ready() + 1)]).status_code == 200


def test_per_run_faults_arrive_as_json_through_the_control_plane(sb: SandboxServer) -> None:
    with httpx.Client(timeout=5) as c:
        changes = {"result_errors": {"1059": 500}, "expired_runs": [1061], "bulk_min_ids": 2}
        answer = c.post(f"{sb.origin}/_sandbox/faults", json=changes)
        assert answer.status_code == 200, answer.text
        assert answer.json()["result_errors"] == {"1059": 500}
        bad = c.post(f"{sb.origin}/_sandbox/faults", json={"result_errors": {"1059": 200}})
        assert bad.status_code == 400
    faults = sb.faults
    assert (faults.result_errors, faults.expired_runs, faults.bulk_min_ids) == (
        {1059: 500},
        (1061,),
        2,
    )


@pytest.mark.parametrize("target", ["api", "download"])
def test_connection_faults_reset_or_hang(
    sb: SandboxServer, api: httpx.Client, http: httpx.Client, target: str
) -> None:
    run_id = ready()
    url = file_url(api, run_id)

    def request(client: httpx.Client) -> httpx.Response:
        if target == "api":
            return client.post(f"{sb.base_url}/text-to-sound-results", json={"run_ids": [run_id]})
        return client.get(url)

    sb.script(target, "reset", "hang")
    with pytest.raises(httpx.ReadError):  # ECONNRESET, not an orderly close
        request(api if target == "api" else http)
    headers = {"x-api-key": KEY} if target == "api" else {}
    with httpx.Client(timeout=httpx.Timeout(5, read=0.3), headers=headers) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            request(impatient)
        assert request(impatient).status_code == 200
    assert sb.stats()["faults_injected"] == {"reset": 1, "hang": 1}


def test_a_stalled_download_sends_headers_then_half_the_body(
    sb: SandboxServer, api: httpx.Client
) -> None:
    run_id = ready()
    url = file_url(api, run_id)
    sb.script("download", "stall")
    received = bytearray()
    with (
        httpx.Client(timeout=httpx.Timeout(5, read=0.3)) as impatient,
        impatient.stream("GET", url) as response,
    ):
        assert int(response.headers["content-length"]) == len(render_audio(run_id))
        with pytest.raises(httpx.ReadTimeout):
            for chunk in response.iter_raw():
                received += chunk
    assert 0 < len(received) < len(render_audio(run_id))


def test_corrupt_bomb_and_endless_bodies(
    sb: SandboxServer, api: httpx.Client, http: httpx.Client
) -> None:
    run_id = ready()
    audio = render_audio(run_id)
    url = file_url(api, run_id)
    sb.script("download", "corrupt", "gzip", "gzip_bomb", "endless")

    corrupt = http.get(url)
    assert len(corrupt.content) == len(audio) and corrupt.content[4:] == audio[4:]
    assert corrupt.content[:4] != audio[:4]

    compressed = http.get(url)
    assert compressed.headers["content-encoding"] == "gzip"
    assert compressed.content == audio  # httpx decodes it

    with http.stream("GET", url) as bomb:
        assert bomb.headers["content-encoding"] == "gzip"
        wire = b"".join(bomb.iter_raw())
    assert len(wire) < 1 << 20
    assert len(zlib.decompress(wire, wbits=31)) == GZIP_BOMB_BYTES

    received = 0
    with http.stream("GET", url) as endless:
        assert "content-length" not in endless.headers
        for chunk in endless.iter_raw():
            received += len(chunk)
            if received > 4 * len(audio):
                break
    assert received > 4 * len(audio)
    injected = sb.stats()["faults_injected"]
    assert injected == {"corrupt": 1, "gzip": 1, "gzip_bomb": 1, "endless": 1}


def test_a_decoy_counts_connections_and_a_full_backlog_never_connects() -> None:
    with Decoy("127.0.0.2") as decoy:
        assert decoy.accepted == 0
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(decoy.origin(), timeout=httpx.Timeout(5, read=0.2))
        deadline = time.monotonic() + 5
        while decoy.accepted < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert decoy.accepted == 1
    with pytest.raises(ValueError, match="loopback"):
        Decoy("0.0.0.0")
    with full_backlog() as port, pytest.raises(httpx.ConnectTimeout):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=0.3)


@pytest.mark.parametrize(
    ("target", "kinds"), [("api", ["truncate"]), ("download", ["429"]), ("disk", ["drop"])]
)
def test_impossible_scripts_are_refused(sb: SandboxServer, target: str, kinds: list[str]) -> None:
    with pytest.raises(ValueError):
        sb.script(target, *kinds)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [{"throttle_rate": 1.5}, {"drop_rate": 0.6, "throttle_rate": 0.6}, {"retry_after": "soon"},
     {"url_ttl_s": 0}, {"redirect_downloads_to": "localhost:1"}, {"colour": "red"},
     {"result_errors": {1: 200}}, {"bulk_errors": {0: 500}}, {"expired_runs": ("x",)},
     {"bulk_strangers": (1.5,)}, {"bulk_min_ids": 6}],
)  # fmt: skip
def test_invalid_fault_settings_are_refused(sb: SandboxServer, changes: dict) -> None:
    with pytest.raises(ValueError):
        sb.set_faults(**changes)
    assert sb.faults == Faults()  # nothing half-applied


def test_random_faults_follow_their_rate_and_seed(sb: SandboxServer, api: httpx.Client) -> None:
    def statuses() -> list[int]:
        return [bulk(api, [1]).status_code for _ in range(60)]

    sb.set_faults(throttle_rate=0.5, seed=7)
    first = statuses()
    sb.set_faults(seed=7)
    assert statuses() == first
    assert set(first) == {200, 429}
    assert 15 <= first.count(429) <= 45
    sb.set_faults(throttle_rate=0.0, server_error_rate=1.0)
    assert set(statuses()) <= {500, 502, 503}


def test_random_download_faults(sb: SandboxServer, api: httpx.Client, http: httpx.Client):
    url = file_url(api, ready())
    sb.set_faults(expire_rate=1.0)
    assert {http.get(url).status_code for _ in range(5)} == {403}
    sb.set_faults(expire_rate=0.0, drop_rate=1.0)
    for _ in range(3):
        with pytest.raises(httpx.RemoteProtocolError):
            http.get(url)
    assert sb.stats()["faults_injected"] == {"expire": 5, "drop": 3}


@pytest.mark.parametrize("delayed", ["api", "download"])
def test_latency_delays_its_own_target_only(
    sb: SandboxServer, api: httpx.Client, http: httpx.Client, delayed: str
) -> None:
    url = file_url(api, ready())
    sb.set_faults(**{"latency_s" if delayed == "api" else "download_latency_s": 0.3})
    calls = {"api": lambda: bulk(api, [1]), "download": lambda: http.get(url)}
    for target, call in calls.items():
        started = time.perf_counter()
        assert call().status_code == 200
        took = time.perf_counter() - started
        assert took >= 0.3 if target == delayed else took < 0.3, (target, took)


def test_max_in_flight_counts_concurrent_api_requests(sb: SandboxServer, api: httpx.Client):
    sb.set_faults(latency_s=0.4)
    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda i: bulk(api, [i]).status_code, range(1, 7)))
    assert codes == [200] * 6
    stats = sb.stats()
    assert (stats["max_in_flight_api"], stats["api_requests"]) == (6, 6)
    assert stats["max_in_flight"] == 6  # API calls and downloads together
    sb.set_faults(latency_s=0.0)
    for _ in range(3):
        bulk(api, [1])
    assert sb.stats()["max_in_flight_api"] == 6
    sb.reset_stats()
    assert sb.stats() == {
        "api_requests": 0,
        "bulk_requests": 0,
        "bulk_batch_sizes": [],
        "single_requests": 0,
        "status_requests": 0,
        "status_polls": {},
        "create_requests": 0,
        "tasks_created": 0,
        "creates_by_prompt": {},
        "downloads": 0,
        "downloads_with_api_key": 0,
        "download_redirects": 0,
        "max_in_flight_api": 0,
        "max_in_flight": 0,
        "faults_injected": {},
        "lookups_by_run": {},
        "downloads_by_run": {},
    }


def test_stats_count_lookups_and_downloads_per_run(sb: SandboxServer, api: httpx.Client, http):
    run_id = ready(start=1)
    url = file_url(api, run_id)
    bulk(api, [run_id, run_id + 1])
    assert http.get(url).status_code == 200
    stats = sb.stats()
    assert stats["lookups_by_run"] == {run_id: 2, run_id + 1: 1}
    assert stats["downloads_by_run"] == {run_id: 1}


def test_max_in_flight_counts_api_requests_and_downloads_together(
    sb: SandboxServer, api: httpx.Client, http: httpx.Client
) -> None:
    urls = [file_url(api, ready(start=i)) for i in (1, 30, 60)]
    sb.set_faults(latency_s=0.4, download_latency_s=0.4)
    sb.reset_stats()
    calls = [lambda i=i: bulk(api, [i]).status_code for i in (1, 2)]
    calls += [lambda url=url: http.get(url).status_code for url in urls]
    with ThreadPoolExecutor(len(calls)) as pool:
        codes = list(pool.map(lambda call: call(), calls))
    assert codes == [200] * 5
    stats = sb.stats()
    assert (stats["max_in_flight"], stats["max_in_flight_api"], stats["downloads"]) == (5, 2, 3)


# -- the CLI --------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_prints_its_url_serves_with_http_control_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--port",
            "0",
            "--api-key",
            "k",
            "--seed",
            "3",
            "--audio-mb",
            "0.1-0.2",
            "--download-latency",
            "0.01",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        match = re.fullmatch(r"SANDBOX_URL=(http://127\.0\.0\.1:\d+/apis)\n", line)
        assert match, line
        base = match[1]
        root = base.removesuffix("/apis")
        with httpx.Client(headers={"x-api-key": "k"}, timeout=5) as c:
            bulk_answer = c.post(f"{base}/text-to-sound-results", json={"run_ids": [1]})
            assert bulk_answer.status_code == 200
            delivered = c.get(bulk_answer.json()["1"]["output_url"]).content
            assert delivered == render_audio(1, AudioSizes.parse_mb("0.1-0.2"))
            assert c.post(
                f"{root}/_sandbox/script", json={"target": "api", "kinds": ["503"]}
            ).json()
            assert c.get(f"{base}/text-to-sound-result/1").status_code == 503
            bad = c.post(f"{root}/_sandbox/script", json={"target": "api", "kinds": ["expire"]})
            assert bad.status_code == 400
            faults = c.post(f"{root}/_sandbox/faults", json={"throttle_rate": 1.0}).json()
            assert (faults["throttle_rate"], faults["seed"]) == (1.0, 3)
            assert faults["download_latency_s"] == 0.01
            assert c.get(f"{base}/text-to-sound-result/1").status_code == 429
            assert c.post(f"{root}/_sandbox/faults", json={"drop_rate": 7}).status_code == 400
            stats = c.get(f"{root}/_sandbox/stats").json()
            assert stats["api_requests"] == 3
            assert stats["faults_injected"] == {"503": 1, "429": 1}
            assert c.post(f"{root}/_sandbox/reset").status_code == 200
            assert c.get(f"{root}/_sandbox/stats").json()["api_requests"] == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        out, err = proc.communicate()
        assert out == ""  # the URL line was the only output
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_cli_rejects_bad_flags_without_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sandbox", "--throttle-rate", "2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "throttle_rate must be within [0, 1]" in done.stderr
    assert "Traceback" not in done.stderr


# -- faithfulness to the vendor SDK ---------------------------------------------------------


def test_the_official_sdk_parses_every_answer(sb: SandboxServer) -> None:
    from camb.client import CambAI
    from camb.core.api_error import ApiError
    from camb.errors.unprocessable_entity_error import UnprocessableEntityError

    sb.set_faults(generation_s=0.2)
    tta = CambAI(api_key=KEY, base_url=sb.base_url, timeout=5).text_to_audio
    task = tta.create_text_to_audio(prompt="rain on a tin roof", duration=2.0, audio_type="sound")
    assert tta.get_text_to_audio_status(task.task_id).status == "PENDING"
    time.sleep(0.25)
    status = tta.get_text_to_audio_status(task.task_id)
    assert status.status == "SUCCESS"
    run_id = status.run_id
    assert b"".join(tta.get_text_to_audio_result(run_id)) == render_audio(run_id)
    as_url = json.loads(b"".join(tta.get_text_to_audio_result(run_id, output_type="file_url")))
    assert httpx.get(as_url.get("output_url") or as_url["file_url"]).content == render_audio(run_id)

    results = tta.get_text_to_sound_results(run_ids=[run_id, ready("FLAC"), PENDING_MISSING])
    assert set(results) == {str(run_id), str(ready("FLAC"))}
    assert httpx.get(results[str(run_id)].output_url).content == render_audio(run_id)

    # The SDK models a bulk value as {"output_url": str} only: a failed run or a null value
    # makes it reject the whole batch, so a client has to parse the bulk JSON itself.
    for not_ready in (FAILED, PENDING_NULL):
        with pytest.raises(pydantic.ValidationError):
            tta.get_text_to_sound_results(run_ids=[run_id, not_ready])
    with pytest.raises(UnprocessableEntityError) as too_many:
        tta.get_text_to_sound_results(run_ids=[1, 2, 3, 4, 5, 6])
    assert too_many.value.body.detail[0].loc == ["body", "run_ids"]
    with pytest.raises(ApiError) as wrong:
        tta.get_text_to_sound_results(run_ids=[WRONG_TYPE])
    assert wrong.value.status_code == 400
