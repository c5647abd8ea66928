"""Downloading one ready run: streamed to a local file while hashed, inspected, refreshed.

`Downloads.fetch` turns a `Ready` run into a `Fetched` file or the run's `Failed`: it GETs the
presigned URL through the download pool (no key, no automatic redirect, only where `netguard`
allows), follows the redirects the policy admits, decodes gzip or deflate within the byte cap,
hashes the bytes as it writes them, and inspects the audio. A URL that expires, or bytes that
do not verify, get a fresh URL from the API (`url_refreshes` times); a download that gets no
answer is retried (`download_retry`), and the storage host's health decides whether the
runs it fails are an outage (`CambOutageError`).
"""

import asyncio
import hashlib
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urljoin

import aiohttp
import httpx
import yarl

from resources.audio import AudioFileError, inspect_audio
from resources.camb.api_health import CallHealth
from resources.camb.errors import CambOutageError, DownloadRefused, UrlExpired
from resources.camb.first_contact import DownloadPolicyVerdict
from resources.camb.limits import RequestGate
from resources.camb.netguard import DownloadPolicy, UnsafeDownload
from resources.camb.redact import SecretUrl, redact_url
from resources.camb.results import Failed, Fetched, Ready, RunOutcome, RunResult
from resources.camb.retry import RetryableStatus, async_retrying, describe_failure, retryable_status
from resources.camb.settings import ClientSettings

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
# Waits before asking again for a run whose fresh URL was the one that just expired: a few
# seconds in all per refresh, past any re-signing within one second.
SAME_URL_WAITS_S = (0.25, 0.5, 1.0, 2.0)

_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class DownloadPool(Protocol):
    """What the downloads use of `CambClient`: its settings, request gate and download pool."""

    settings: ClientSettings
    gate: RequestGate
    download_policy: DownloadPolicy

    @property
    def downloads(self) -> aiohttp.ClientSession: ...


@dataclass
class _Tries:
    """What went wrong so far with the downloads of one run."""

    dead: set[str] = field(default_factory=set)  # URLs the storage host refused as expired
    problems: list[str] = field(default_factory=list)  # one reason per failed round
    no_answer: bool = False  # did the storage host fail to answer the last attempt?


class Downloads:
    """One day's downloads, and what they taught about the storage host's health."""

    def __init__(
        self,
        client: DownloadPool,
        workdir: Path,
        results: Callable[[Sequence[int]], Awaitable[list[RunResult]]],
    ) -> None:
        self.client = client
        self.settings = client.settings
        self.workdir = workdir
        self.results = results  # the API's results calls, for fresh URLs
        self.storage_health = CallHealth(self.settings.health)
        self.policy_verdict = DownloadPolicyVerdict()  # every download refused: a wrong list

    async def fetch(self, ready: Ready) -> RunOutcome:
        """Download and inspect one ready run, asking for a fresh URL when one goes bad."""
        tries = _Tries()
        current: RunResult = ready
        for round_ in range(self.settings.url_refreshes + 1):
            if round_:
                current = await self._fresh_result(ready.run_id, tries.dead)
                if not isinstance(current, Ready):
                    return current
                if current.url.value in tries.dead:  # the same dead URL again: never re-requested
                    tries.problems.append("the API handed out an expired URL again")
                    continue
            outcome = await self._attempt(current, round_, tries)
            if outcome is not None:
                return outcome
        return self._given_up(ready.run_id, tries)

    async def _attempt(self, ready: Ready, round_: int, tries: _Tries) -> RunOutcome | None:
        """One download of `ready`'s URL: the run's outcome, or None (noted in `tries`) when a
        fresh URL may still do."""
        run_id = ready.run_id
        dest = self.workdir / f"{run_id}.{round_}.download"
        tries.no_answer = False
        try:
            size, sha256 = await self._download(ready.url, dest)
            audio = await asyncio.to_thread(inspect_audio, dest)
        except UnsafeDownload as exc:
            dest.unlink(missing_ok=True)
            self.policy_verdict.refuse(exc)  # raises when no download was ever allowed
            return Failed(run_id, f"download refused: {exc}")
        except DownloadRefused as exc:
            dest.unlink(missing_ok=True)
            return Failed(run_id, f"download refused: {exc}")
        except UrlExpired as exc:
            tries.dead.add(ready.url.value)
            tries.problems.append(str(exc))
        except AudioFileError as exc:
            tries.problems.append(str(exc))
        except (RetryableStatus, httpx.TransportError) as exc:
            tries.no_answer = True
            tries.problems.append(describe_failure(exc))
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        else:
            self.storage_health.answered()
            return Fetched(run_id, dest, size, sha256, audio, downloads=round_ + 1)
        dest.unlink(missing_ok=True)
        return None

    def _given_up(self, run_id: int, tries: _Tries) -> Failed:
        """The run's `Failed` once its refreshes are spent, or an outage of the storage host."""
        # One outcome per run for the storage host's health: refreshes multiply no failure.
        if not tries.no_answer:
            self.storage_health.answered()
        elif self.storage_health.failed():
            health = self.storage_health
            raise CambOutageError(
                "an outage of the storage host of the downloads, not a problem of single runs: "
                f"the downloads of {health.failures} of the last {health.calls} runs got no "
                f"answer after retries (last: {tries.problems[-1]}); try again later"
            )
        problems = tries.problems
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
                    self.policy_verdict.allow()  # a storage host the policy admitted answered
                    log.debug("download GET %s: HTTP %d", redact_url(target), status)
                    if status in _REDIRECTS and "location" in headers:
                        target = urljoin(target, headers["location"])
                        continue
                    if status in (401, 403, 404, 410):
                        raise UrlExpired(f"storage answered HTTP {status}")
                    retryable_status(status, headers.get("retry-after"), "download")
                    if status != 200:
                        raise DownloadRefused(f"storage answered HTTP {status}")
                    return await self._write_body(response, dest)
            except aiohttp.InvalidURL:  # e.g. a legacy numeric IPv4 host (2130706433)
                raise DownloadRefused(f"download URL {redact_url(target)} is invalid") from None
            except (aiohttp.ClientError, aiohttp.ServerTimeoutError) as exc:
                raise _as_httpx_error(exc) from None  # aiohttp's text may hold the URL
        raise DownloadRefused(f"more than {MAX_REDIRECTS} redirects")

    async def _write_body(self, response: aiohttp.ClientResponse, dest: Path) -> tuple[int, str]:
        cap = self.settings.max_download_bytes
        announced = response.headers.get("content-length", "")
        expected = int(announced) if announced.isdigit() else None  # bytes on the wire
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity") and expected is not None and expected > cap:
            raise DownloadRefused(f"announced {expected} bytes, more than the cap of {cap}")
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
                    raise DownloadRefused(f"more than the cap of {cap} bytes")
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
        raise DownloadRefused(f"storage sent an unsupported Content-Encoding: {encoding[:40]}")
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
        raise DownloadRefused(f"a {encoding} body that does not decode ({exc})") from None
    if not inflate.eof:
        raise httpx.RemoteProtocolError(f"a {encoding} body that ends early")
