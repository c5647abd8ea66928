"""`CambResource`, the Dagster resource around the CAMB.AI results client (`resources/camb/`).

One of the two Dagster resources of the project, with `storage_resource.StorageResource`;
every other module under `resources/` is plain Python the resources and assets call.

Configuration comes from the environment, so a deployment changes no code:

| variable                   | default                       |
|----------------------------|-------------------------------|
| `CAMB_API_KEY`             | required                      |
| `CAMB_API_BASE_URL`        | `https://client.camb.ai/apis` |
| `CAMB_MAX_CONCURRENCY`     | 8                             |
| `CAMB_REQUESTS_PER_SECOND` | unset (no client-side limit)  |
| `CAMB_DOWNLOAD_ALLOW_HOSTS`| unset: downloads must be https from public addresses |
| `CAMB_TOTAL_CONCURRENCY`   | unset: requests in flight across all runs (camb/limits.py) |
| `CAMB_RATE_LIMIT_REDIS_URL`| unset: the rate is kept per process                      |
| `CAMB_RETRY_ATTEMPTS`      | 8 per API call, 4 per download (tries, the first included) |
| `CAMB_RETRY_BUDGET_S`      | 300 per API call, 60 per download (waits included) |
| `CAMB_MAX_RETRY_AFTER_S`   | 120: a longer `Retry-After` is waited for this long     |
| `CAMB_CONNECT_TIMEOUT_S`   | 10                            |
| `CAMB_READ_TIMEOUT_S`      | 60 (between two reads, not for a whole body)            |

The retry variables set both policies, the API calls' and the downloads'; a day as a whole
is bounded by the `deadline` its caller passes to `harvest()`, which also cuts short any
wait for a slot or a rate token of the request gate.

`CAMB_DOWNLOAD_ALLOW_HOSTS` names (comma-separated) the storage hosts exempt from the download
policy of `resources.camb.netguard`: they may serve plain http and resolve to private or loopback
addresses (the sandbox's `127.0.0.1`, a MinIO on the LAN). Nothing else is ever connected to.

A field set explicitly on the resource wins over the environment. The async client and its
connection pools live on an event loop in a helper thread for exactly one run (one step in
the multiprocess executor), opened and closed by the resource lifecycle; assets call the
plain, blocking `harvest()` and `submit()` (the creates of prompt sheets).
"""

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal
from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from resources.camb import DEFAULT_BASE_URL, CambClient, ClientSettings, RunOutcome
from resources.camb.creates import CreateOutcome, Creation
from resources.camb.limits import pool_limit, request_gate, step_in_flight
from resources.camb.submissions import Submission
from resources.camb.task_resolver import TaskAnswer, TaskResolver
from resources.error_kinds import OperatorError, SettingError

T = TypeVar("T")

# Environment-only tuning: variable -> (field, type).
_RETRY_ENV = {
    "CAMB_RETRY_ATTEMPTS": ("max_attempts", int),
    "CAMB_RETRY_BUDGET_S": ("budget_s", float),
    "CAMB_MAX_RETRY_AFTER_S": ("max_retry_after_s", float),
}
_TIMEOUT_ENV = {
    "CAMB_CONNECT_TIMEOUT_S": ("connect_timeout_s", float),
    "CAMB_READ_TIMEOUT_S": ("read_timeout_s", float),
}


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _parse(name: str, value: str, kind: type) -> Any:
    try:
        return kind(value)
    except ValueError:
        noun = "whole number" if kind is int else "number"
        raise SettingError(
            f"{name}={value!r} is not a valid {kind.__name__}", fix=f"set a {noun}", setting=name
        ) from None


def _from_env(table: dict[str, tuple[str, type]]) -> dict[str, Any]:
    return {
        field: _parse(name, raw, kind)
        for name, (field, kind) in table.items()
        if (raw := _env(name))
    }


class CambResource(ConfigurableResource):
    """CAMB.AI text-to-sound: results (batches, retries, downloads) and creates (each at most
    once); one connection pool per run."""

    api_key: str | None = Field(
        default=None,
        description="Sent as x-api-key. Default: $CAMB_API_KEY (read when a step starts, so a "
        "missing key fails that step with one line instead of the whole run with a traceback).",
    )
    base_url: str | None = Field(default=None, description="Default: $CAMB_API_BASE_URL.")
    max_concurrency: int | None = Field(
        default=None,
        description="HTTP requests in flight at once. Default: $CAMB_MAX_CONCURRENCY or 8.",
    )
    requests_per_second: float | None = Field(
        default=None, description="Client-side API call limit. Default: $CAMB_REQUESTS_PER_SECOND."
    )
    download_allow_hosts: str | None = Field(
        default=None,
        description="Comma-separated download hosts exempt from the policy (https only, public "
        "addresses only). Default: $CAMB_DOWNLOAD_ALLOW_HOSTS.",
    )

    total_concurrency: int | None = Field(
        default=None,
        description="Requests in flight across all runs; each step of the camb_api pool gets "
        "an equal share. Default: $CAMB_TOTAL_CONCURRENCY.",
    )
    rate_limit_redis_url: str | None = Field(
        default=None,
        description="Redis that holds one requests-per-second window for every process. "
        "Default: $CAMB_RATE_LIMIT_REDIS_URL.",
    )

    _portal: BlockingPortal | None = PrivateAttr(default=None)
    _client: CambClient | None = PrivateAttr(default=None)
    _error: OperatorError | None = PrivateAttr(default=None)

    def settings(self, pool_slots: int | None = None) -> ClientSettings:
        """Fields first, then the environment, then the defaults; with a total, this step's
        share of it among the `pool_slots` steps that may run at once."""
        concurrency = self.max_concurrency
        if concurrency is None and (raw := _env("CAMB_MAX_CONCURRENCY")):
            concurrency = _parse("CAMB_MAX_CONCURRENCY", raw, int)
        total = self.total_concurrency
        if total is None and (raw := _env("CAMB_TOTAL_CONCURRENCY")):
            total = _parse("CAMB_TOTAL_CONCURRENCY", raw, int)
        if total is not None:
            share = step_in_flight(total, pool_slots)
            concurrency = min(concurrency, share) if concurrency else share
        rps = self.requests_per_second
        if rps is None and (raw := _env("CAMB_REQUESTS_PER_SECOND")):
            rps = _parse("CAMB_REQUESTS_PER_SECOND", raw, float)
        hosts = self.download_allow_hosts or _env("CAMB_DOWNLOAD_ALLOW_HOSTS") or ""
        retry = _from_env(_RETRY_ENV)
        api_key = self.api_key or _env("CAMB_API_KEY") or ""
        defaults = ClientSettings(api_key=api_key)
        return ClientSettings(
            api_key=api_key,
            base_url=self.base_url or _env("CAMB_API_BASE_URL") or DEFAULT_BASE_URL,
            max_concurrency=concurrency or 8,
            requests_per_second=rps,
            download_allow_hosts=frozenset(h.strip() for h in hosts.split(",") if h.strip()),
            api_retry=replace(defaults.api_retry, **retry),
            download_retry=replace(defaults.download_retry, **retry),
            **_from_env(_TIMEOUT_ENV),
        )

    @contextmanager
    def yield_for_execution(self, context: InitResourceContext) -> Iterator["CambResource"]:
        slots = pool_limit(context.instance)
        try:
            settings = self.settings(slots)
        except OperatorError as exc:
            # Raised here, Dagster would fail the whole run with its own traceback: the
            # steps that use the client raise it themselves (`check`), as one line.
            self._error = exc
            try:
                yield self
            finally:
                self._error = None
            return
        redis_url = self.rate_limit_redis_url or _env("CAMB_RATE_LIMIT_REDIS_URL")
        gate = request_gate(
            settings.max_concurrency,
            settings.requests_per_second,
            redis_url=redis_url,
            pool_slots=slots,
        )
        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(CambClient(settings, gate)) as client,
        ):
            self._portal, self._client = portal, client
            try:
                yield self
            finally:
                self._portal = self._client = None

    def check(self) -> None:
        """Raise the operator's mistake found in the settings (a missing key, a bad number)."""
        if self._error is not None:
            raise self._error

    def harvest(
        self,
        run_ids: Iterable[int],
        workdir: Path,
        *,
        deadline: float | None = None,
        task_ids: Sequence[str] = (),
        on_task: Callable[[TaskAnswer], None] | None = None,
        task_joins: Callable[[TaskAnswer], bool] | None = None,
    ) -> Iterator[RunOutcome]:
        """Outcomes as they complete (see `CambClient.harvest`), from blocking code.

        `deadline` is a `time.monotonic()` value: the same clock in this thread and the loop's.
        `task_ids` are resolved beside the harvest (`resources.camb.task_resolver`), each answer
        reported to `on_task` (from the client's event loop thread) before its run id joins
        (when `task_joins(answer)` says so: by default every resolved run).
        """
        self.check()
        if self._portal is None or self._client is None:
            raise RuntimeError("CambResource.harvest() runs only inside a Dagster execution")
        portal, client = self._portal, self._client
        resolve = None
        if task_ids:
            if on_task is None:
                raise ValueError("task ids need an on_task callback to report their answers")
            concurrency = client.settings.max_concurrency
            resolve = TaskResolver(task_ids, on_task, concurrency=concurrency, joins=task_joins)
        outcomes = client.harvest(run_ids, workdir, deadline=deadline, resolve=resolve)
        try:
            while True:
                try:
                    yield _next_or_stop(portal, outcomes)
                except StopAsyncIteration:
                    return
        finally:
            portal.call(outcomes.aclose)

    def submit(
        self,
        creations: Sequence[Creation],
        *,
        intend: Callable[[Sequence[Creation]], None],
        record: Callable[[Sequence[CreateOutcome]], None],
    ) -> None:
        """Create each of `creations` at most once (`resources.camb.submissions`), from
        blocking code: `intend(window)` must make the window's intents durable before any
        of them is sent, `record(outcomes)` their outcomes (both run in worker threads).

        Returns when every create was answered; stops early, and raises, on a run-wide error
        (a refused key, a wrong base URL, an API never reached, an outage) once the outcomes
        are recorded; out of credits it stops without raising (`out of credits`, the rest
        `not sent`). Told to stop (SIGINT, SIGTERM), the creates in flight are abandoned
        (their intents stay: in doubt) and the rest is recorded `not sent`, here.
        """
        self.check()
        if self._portal is None or self._client is None:
            raise RuntimeError("CambResource.submit() runs only inside a Dagster execution")
        portal, client = self._portal, self._client
        submission = Submission(
            client,
            concurrency=client.settings.max_concurrency,
            intend=partial(asyncio.to_thread, intend),
            record=partial(asyncio.to_thread, record),
        )
        task = portal.call(_begin, submission.run(list(creations)))
        try:
            portal.call(_outcome, task)
        except BaseException:
            portal.call(_cancel, task)
            if leftovers := submission.leftovers():
                record(leftovers)
            raise


def _next_or_stop(portal: BlockingPortal, outcomes: AsyncIterator[RunOutcome]) -> RunOutcome:
    """The next outcome; a stop while waiting for it stops the harvest before it is raised.

    Told to stop (SIGINT, SIGTERM, terminate in the UI), Dagster raises in this thread from
    its signal handler, whatever the event loop is waiting on (a Retry-After, a backoff, a
    slow download). The harvest is then cancelled as a plain asyncio task, once, so that its
    own cleanup (downloads cancelled, their temporaries removed) runs to the end before the
    stop goes on; left alone, it would keep fetching until the resource is torn down.
    """
    task = portal.call(_begin, anext(outcomes))
    try:
        return portal.call(_outcome, task)
    except BaseException:
        portal.call(_cancel, task)
        raise


async def _begin(work: Awaitable[T]) -> "asyncio.Future[T]":
    return asyncio.ensure_future(work)  # returned from a coroutine: not awaited


async def _outcome(task: "asyncio.Future[T]") -> T:
    return await task


async def _cancel(task: "asyncio.Future[Any]") -> None:
    task.cancel()
    await asyncio.wait([task])
