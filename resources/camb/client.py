"""Async client for the CAMB.AI text-to-sound results API.

`CambClient.harvest(run_ids, workdir, deadline=...)` is the whole job: it asks the bulk
endpoint about batches of at most five runs, downloads each presigned URL the moment it
arrives (streamed to a temporary file while hashing), inspects the audio, and yields exactly
one outcome per run: `Fetched` (a verified local file), `Pending` or `Failed`. The day's work
is in the package's other modules: `feed` (the batches and the workers), `calls` (the API
calls), `downloads` (one run's download), `results` (what the answers mean).

Whatever belongs to one run ends as that run's outcome, with a reason: a result call that
keeps failing or is refused, a URL that keeps expiring, bytes that never verify. Only
trouble of the whole API raises, a `CambApiError` (`errors`). The operator's mistakes
(`resources.error_kinds.OperatorError`: the key, the configuration, and those of
`first_contact`: an API never reached, every download refused by the policy) are never worth
a retry. Retries are bounded per call (`retry.RetryPolicy`), per run (`url_refreshes`) and per
day (`deadline`).

Two HTTP connection pools live as long as the client: one for the API (httpx), which carries
the key, and one for downloads (aiohttp: its C parser costs about a quarter of httpx's CPU per
megabyte, and a day's bytes all pass through it), which never does (httpx would forward
`x-api-key` across a redirect to the storage host), follows no redirect by itself, and
connects only where `netguard` allows.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp
import httpx

from resources.camb.feed import Day, Done, Feed
from resources.camb.limits import RequestGate, request_gate
from resources.camb.netguard import DownloadPolicy, GuardedResolver
from resources.camb.redact import install_http_log_redaction
from resources.camb.results import DAY_BUDGET_SPENT, Pending, Resolve, RunOutcome
from resources.camb.settings import ClientSettings

USER_AGENT = "soundharvest/0.1"
_READ_BUFFER = 1 << 20  # aiohttp's read buffer per download (its default is 64 KiB)


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
                auto_decompress=False,  # `downloads._decoded` inflates, within the cap
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
        spent = deadline is not None and time.monotonic() >= deadline  # then not one request
        day = Day(self, workdir)
        feed = Feed([] if spent else ids, more=resolve is not None and not spent)
        queue: asyncio.Queue[RunOutcome | Done] = asyncio.Queue(4 * self.settings.max_concurrency)
        hook = None if spent else resolve
        producer = asyncio.create_task(day.run(feed, queue.put, deadline=deadline, resolve=hook))
        done: set[int] = set()
        try:
            while not isinstance(item := await queue.get(), Done):
                done.add(item.run_id)
                yield item
            if item.error is not None:
                raise item.error
            day.downloads.policy_verdict.check()  # every download refused by the policy
            for run_id in ids + feed.added:  # only runs the day budget cut short are left
                if run_id not in done:
                    yield Pending(run_id, DAY_BUDGET_SPENT)
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            await day.close()
