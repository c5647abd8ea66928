"""Many creates, `concurrency` at a time, none sent before its intent is durable.

A create whose answer is lost may have been charged, so the caller writes down what it is
about to create before it is sent (`intend`), and what came of it after (`record`); a create
intended and never recorded is in doubt, whatever the reason (a kill -9 included).

`Submission.run` goes window by window, a window being `concurrency` creates: the intents of
window k+1 are written while window k is in flight, and its creates start as soon as a slot
frees, so writing costs no throughput. At most two windows are intended without a recorded
outcome at any moment (the next window waits for the one before it to be recorded), so a
crash leaves at most that many intents without an outcome, of which at most one window was
in flight. Outcomes are recorded in batches (a window's worth, when the next window waits
for them, or every `flush_s`), off the event loop.

It stops at once (nothing more intended, nothing more sent, the creates in flight answered)
when the API is out of credits (402) or a create meets a run-wide error (`creates.Attempt`):
the intended creates that were not sent are recorded `not sent`, then the error is raised.
Told to stop from outside (a cancel), the creates in flight are abandoned: `leftovers` gives
what the caller should still record (answers not recorded yet, intents never sent).
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from resources.camb.calls import ApiCalls, ApiPool
from resources.camb.creates import OUT_OF_CREDITS, Attempt, CreateOutcome, Creation, create

Intend = Callable[[Sequence[Creation]], Awaitable[None]]
Record = Callable[[Sequence[CreateOutcome]], Awaitable[None]]
STOPPED = "not sent: the run was stopped before it was sent"


class Submission:
    """One run of creates through the client's API pool and request gate, under the day's
    health rules (`calls.ApiCalls`); its intents and outcomes handed to the caller."""

    def __init__(
        self,
        client: ApiPool,
        *,
        concurrency: int,
        intend: Intend,
        record: Record,
        flush_s: float = 0.5,
    ) -> None:
        self.calls = ApiCalls(client)
        self.window = concurrency
        self.intend = intend
        self.record = record
        self.flush_s = flush_s
        self.attempts: dict[str, Attempt] = {}  # intended, by key
        self.answered: set[str] = set()
        self.stop_reason: str | None = None  # why it stopped early: no more creates
        self.stop_error: BaseException | None = None  # ... raised once the outcomes are in
        self._queue: asyncio.Queue[Attempt | None] = asyncio.Queue()
        self._progress = asyncio.Event()  # a create taken, a batch recorded, a stop
        self.recorded = 0  # outcomes recorded so far
        self._buffer: list[CreateOutcome] = []
        self._full = asyncio.Event()  # the buffer holds a window's worth
        self._closing = False

    async def run(self, creations: Sequence[Creation]) -> None:
        """Create them all (or until it stops); every intended create's outcome recorded."""
        if len({c.key for c in creations}) != len(creations):
            raise ValueError("the keys of a submission must be unique")
        flusher = asyncio.create_task(self._flushing())
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._feed(creations))
                for _ in range(self.window):
                    group.create_task(self._worker())
        finally:
            # The batch being recorded is finished, never cut: a cancel waits for one write.
            self._closing = True
            self._full.set()
            await asyncio.gather(flusher, return_exceptions=True)
            await self.calls.close()
        await flusher  # its error (the records cannot be written) ends the run
        await self._flush(self.leftovers())
        if self.stop_error is not None:
            raise self.stop_error

    def leftovers(self) -> list[CreateOutcome]:
        """What is still to record: answers not recorded yet, and creates intended but never
        sent (`not sent`). A create sent and never answered stays intended: in doubt."""
        out, self._buffer = self._buffer, []
        reason = f"not sent: {self.stop_reason}" if self.stop_reason else STOPPED
        for key, attempt in self.attempts.items():
            if key not in self.answered and not attempt.sent:
                out.append(CreateOutcome(key, "not sent", reason=reason))
                self.answered.add(key)
        return out

    # -- the parts ----------------------------------------------------------------------------

    async def _feed(self, creations: Sequence[Creation]) -> None:
        """Intend window after window, each once the one before is all taken."""
        try:
            for start in range(0, len(creations), self.window):
                await self._room()
                if self.stop_reason is not None:
                    break
                window = creations[start : start + self.window]
                await self.intend(window)
                for creation in window:
                    attempt = self.attempts[creation.key] = Attempt(creation)
                    self._queue.put_nowait(attempt)
        finally:
            for _ in range(self.window):
                self._queue.put_nowait(None)  # one end for each worker

    async def _room(self) -> None:
        """Until the window before is all taken, and all but the window in flight recorded:
        then at most two windows are intended without a recorded outcome."""
        while self.stop_reason is None:
            unrecorded = len(self.attempts) - self.recorded
            if self._queue.empty() and unrecorded <= self.window:
                return
            self._progress.clear()
            if self._queue.empty():
                self._full.set()  # record what is answered now, rather than when due
            await self._progress.wait()

    async def _worker(self) -> None:
        while (attempt := await self._queue.get()) is not None:
            self._progress.set()
            if self.stop_reason is not None:
                continue  # not sent: `leftovers` records it
            outcome = await create(self.calls, attempt)
            self._answer(outcome)
            if attempt.stop is not None:
                self._stop(str(attempt.stop), attempt.stop)
            elif outcome.state == "out of credits":
                self._stop(OUT_OF_CREDITS)
        self._progress.set()

    def _answer(self, outcome: CreateOutcome) -> None:
        self.answered.add(outcome.key)
        self._buffer.append(outcome)
        if len(self._buffer) >= self.window:
            self._full.set()

    def _stop(self, reason: str, error: BaseException | None = None) -> None:
        if self.stop_reason is None:
            self.stop_reason, self.stop_error = reason, error
            self._progress.set()  # the feed stops waiting

    async def _flushing(self) -> None:
        """Record the answers a window at a time, or every `flush_s`."""
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.flush_s)
            self._full.clear()
            batch, self._buffer = self._buffer, []
            await self._flush(batch)

    async def _flush(self, batch: list[CreateOutcome]) -> None:
        if batch:
            await self.record(batch)
            self.recorded += len(batch)
            self._progress.set()
