"""One day's harvest as it runs: the run ids in batches, and the workers that take them.

`Feed` hands out batches of at most five run ids: those known up front, then any a `resolve`
hook adds (the task resolver). `Day` runs the workers under the day's deadline, each taking
a batch, asking the API about it (`calls.ApiCalls.results`), downloading every ready run at
once (`downloads.Downloads.fetch`) and handing each outcome over; it ends with a `Done` that
carries the error, if any, that stopped the day.
"""

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from resources.camb.calls import BULK_LIMIT, ApiCalls, ApiPool
from resources.camb.downloads import DownloadPool, Downloads
from resources.camb.errors import CambApiError
from resources.camb.results import Fetched, Ready, Resolve, RunOutcome
from resources.error_kinds import OperatorError

# How long a part-filled batch waits for more ids while a `resolve` hook is still adding some.
_BATCH_LINGER_S = 0.1


class Feed:
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


@dataclass(frozen=True)
class Done:
    """The last item of a day's outcomes: the error that stopped it, None if none did."""

    error: BaseException | None


Put = Callable[[RunOutcome | Done], Awaitable[None]]


class Pools(ApiPool, DownloadPool, Protocol):
    """What the day uses of `CambClient`: both pools, the gate, the settings."""


class Day:
    """One harvest: its calls, its downloads, the health of their peers, the runs' outcomes."""

    def __init__(self, client: Pools, workdir: Path) -> None:
        self.settings = client.settings
        self.calls = ApiCalls(client)
        self.downloads = Downloads(client, workdir, self.calls.results)

    async def run(
        self, feed: Feed, put: Put, *, deadline: float | None, resolve: Resolve | None
    ) -> None:
        """Workers take batches from `feed` until it is empty or `deadline` passes (with
        `resolve` adding ids beside them); every outcome goes to `put`, then a `Done`."""
        budget = asyncio.timeout_at(deadline)
        error: BaseException | None = None
        try:
            async with budget, asyncio.TaskGroup() as group:
                if resolve is not None:
                    group.create_task(self._resolving(resolve, feed))
                for _ in range(self.settings.max_concurrency):
                    group.create_task(self._worker(feed, put))
        except TimeoutError as exc:
            error = None if budget.expired() else exc  # the day budget ends the day quietly
        except BaseExceptionGroup as group_error:
            error = first_error(group_error)
        await put(Done(error))

    async def close(self) -> None:
        await self.calls.close()

    async def _worker(self, feed: Feed, put: Put) -> None:
        while (batch := await feed.batch()) is not None:  # workers share the feed
            await self.harvest_batch(batch, put)

    async def _resolving(self, hook: Resolve, feed: Feed) -> None:
        try:
            await hook(self.calls.ask, feed.add)
        finally:
            feed.close()

    async def harvest_batch(self, batch: Sequence[int], put: Put) -> None:
        # A task group: when the day stops, every download is cancelled *and* finished
        # (its temporary removed) before the harvest reports back.
        async with asyncio.TaskGroup() as group:
            for result in await self.calls.results(batch):
                if isinstance(result, Ready):
                    group.create_task(self._fetch_and_put(result, put))
                else:
                    await put(result)

    async def _fetch_and_put(self, ready: Ready, put: Put) -> None:
        outcome = await self.downloads.fetch(ready)
        try:
            await put(outcome)
        except BaseException:
            if isinstance(outcome, Fetched):
                outcome.path.unlink(missing_ok=True)  # never handed over: not the caller's
            raise


def first_error(group: BaseExceptionGroup) -> BaseException:
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
