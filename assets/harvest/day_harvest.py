"""One day's runs into storage: fetched, normalised, published, and recorded in its ledger.

For each accepted run id of the day there is one row in the day's *files ledger* (the
asset's own record of what storage holds); `day_plan.py` decides per run whether its earlier
row is kept, its stored file adopted, or the run fetched. `DayHarvest` then adopts and
fetches: fetched audio arrives as verified local temporary files; non-WAV deliveries are
decoded to PCM WAV, then each file is published under its final name only once complete.

The ledger is saved as the day goes (at most every `checkpoint_s`) and once more when the day
ends or fails, so a crash loses only the last moments of records rather than a day of them
(their files would be found, verified and hashed again). The day's fetching stops at its
deadline: runs not finished by then become `pending` rows that say so.
"""

import contextlib
import logging
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from assets.harvest.catalog_schema import LEDGER_COLUMNS, STATUSES
from assets.harvest.day_plan import Plan, audio_relpath, plan_day, stored_sizes
from assets.harvest.scratch import scratch_dir, scratch_root
from resources.audio import (
    WAV_CONTAINER,
    AudioFileError,
    AudioInfo,
    inspect_audio,
    transcode_to_wav,
)
from resources.camb import Failed, Fetched, Pending, RunOutcome
from resources.storage import FULL, Storage, StorageError, cause_of, sha256_file
from resources.storage.operator_faults import SCRATCH_SETTING, full, operator_error, size_text


class Fetch(Protocol):
    """`CambResource.harvest`: one outcome per run id, none started after `deadline`."""

    def __call__(
        self, run_ids: Sequence[int], workdir: Path, *, deadline: float | None = None
    ) -> Generator[RunOutcome, None, None]: ...


Save = Callable[[pd.DataFrame], object]


@dataclass
class Progress:
    """Logs done/total, rate and ETA at most every `interval_s` seconds."""

    total: int
    log: logging.Logger | Any
    label: str
    interval_s: float = 10.0
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    _last: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def advance(self) -> None:
        with self._lock:
            self.done += 1
            now = time.monotonic()
            if now - self._last < self.interval_s and self.done < self.total:
                return
            self._last = now
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate else float("inf")
        self.log.info(
            f"{self.label}: {self.done}/{self.total} runs ({100 * self.done / self.total:.1f}%), "
            f"{rate:.1f} runs/s, ETA {eta:.0f} s"
        )


class Ledger:
    """The day's ledger rows by run id, saved through `save` at most every `interval_s`.

    Rows are recorded from the publishing threads; `checkpoint` and `save` run in the thread
    that drives the day, so a save that fails fails the day.
    """

    def __init__(
        self,
        rows: Iterable[dict[str, Any]],
        save: Save | None,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rows = {int(row["run_id"]): row for row in rows}
        self._save = save
        self._interval_s = interval_s
        self._clock = clock
        self._saved_at = clock()
        self._unsaved = 0
        self._lock = threading.Lock()

    def record(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._rows[int(row["run_id"])] = row
            self._unsaved += 1

    def frame(self) -> pd.DataFrame:
        with self._lock:
            rows = [self._rows[run_id] for run_id in sorted(self._rows)]
        return pd.DataFrame(rows, columns=list(LEDGER_COLUMNS))

    def checkpoint(self) -> None:
        """Save if rows changed and the last save is at least `interval_s` old."""
        if self._unsaved and self._clock() - self._saved_at >= self._interval_s:
            self.save()

    def save(self, *, only_changes: bool = False) -> None:
        """Save the rows; with `only_changes`, only if rows were recorded since the last save."""
        with self._lock:
            if only_changes and not self._unsaved:
                return
            self._unsaved = 0
        if self._save is not None:
            self._save(self.frame())
        self._saved_at = self._clock()


class _Publishing:
    """Publishing (decode, upload) in threads beside the downloads.

    At most `in_hand` finished downloads wait on local disk for it; each task's row goes to
    the ledger as it ends, and the first failure stops the day at the next submit.
    """

    def __init__(
        self, pool: ThreadPoolExecutor, in_hand: int, ledger: Ledger, progress: Progress
    ) -> None:
        self._pool = pool
        self._in_hand = threading.BoundedSemaphore(in_hand)
        self._ledger = ledger
        self._progress = progress
        self._errors: list[BaseException] = []  # a publishing failure stops the day at once
        self._futures: list[Future[dict[str, Any]]] = []

    def submit(self, task: Callable[..., dict[str, Any]], *args: Any) -> None:
        """Run `task(*args)` in the pool, once a place is free; then raise the first failure
        of any task so far, or save the ledger if its checkpoint is due."""
        self._in_hand.acquire()
        future = self._pool.submit(task, *args)
        self._futures.append(future)
        future.add_done_callback(self._finished)
        if self._errors:
            raise self._errors[0]
        self._ledger.checkpoint()

    def rows(self) -> list[dict[str, Any]]:
        """Every submitted task's row once all have ended (the first failure raised); the
        tasks are forgotten then."""
        rows = [future.result() for future in self._futures]
        self._futures.clear()
        return rows

    def cancel(self) -> None:
        """Cancel the tasks not started yet."""
        for future in self._futures:
            future.cancel()

    def _finished(self, future: Future[dict[str, Any]]) -> None:
        self._in_hand.release()
        self._progress.advance()
        if future.cancelled():
            return
        if (error := future.exception()) is not None:
            self._errors.append(error)
        elif (row := future.result())["status"] in STATUSES:
            self._ledger.record(row)


class DayHarvest:
    """Fetches, normalises and publishes the runs of one day; returns its ledger rows."""

    def __init__(
        self,
        day: str,
        storage: Storage,
        fetch: Fetch,
        *,
        log: logging.Logger | Any,
        save: Save | None = None,
        budget_s: float | None = None,
        checkpoint_s: float = 60.0,
        workers: int = 4,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_fresh_file: Callable[[int, Path, str], None] | None = None,
        resolving: int = 0,
        dagster_run_id: str | None = None,
    ) -> None:
        self.day = day
        self.storage = storage
        self.fetch = fetch
        self.log = log
        self.save = save
        self.budget_s = budget_s
        self.checkpoint_s = checkpoint_s
        self.workers = workers
        self.now = now
        # Called with (run id, verified local WAV, sha256) before each fetched file is
        # published: the ML features are measured there, saving a second read of the file
        # (on an object store, a second download).
        # It runs in the publishing threads; an error in it is logged, the file published.
        self.on_fresh_file = on_fresh_file
        # Tasks `fetch` resolves beside the harvest, adding their runs as it learns them: it
        # is called even with no run id of its own.
        self.resolving = resolving
        self._sizes: list[int] = []  # of the files fetched in this run (publishing threads)
        self._published: list[int] = []  # runs fetched and published in this run
        # The Dagster run doing this, recorded on each file it stores or adopts: the files of
        # another run of the day (one that held the day's lease before) are not its own.
        self.dagster_run_id = dagster_run_id

    def run(self, run_ids: Sequence[int], previous: Mapping[int, dict[str, Any]]) -> pd.DataFrame:
        deadline = None if self.budget_s is None else time.monotonic() + self.budget_s
        self.storage.remove_stale_temporaries(self.day)
        plan = plan_day(run_ids, previous, stored_sizes(self.storage, self.day))
        if not (plan.adopt or plan.fetch or self.resolving) and len(plan.keep) == len(previous):
            # Every row kept as it was: the saved ledger already says all of it, and a log
            # line per unchanged day (an event in Dagster's storage) tells nobody anything.
            return Ledger(plan.keep, None, self.checkpoint_s).frame()
        self.log.info(
            f"{self.day}: {len(run_ids)} runs: {len(plan.keep)} already stored, "
            f"{len(plan.adopt)} to adopt, {len(plan.fetch)} to fetch"
        )
        # Until a run is decided again its earlier row stands, bar an ok row whose file is
        # gone or changed: a saved ledger never claims a file that is not there.
        undecided = (previous[i] for i in [*plan.adopt, *plan.fetch] if i in previous)
        ledger = Ledger(
            [*plan.keep, *(row for row in undecided if row["status"] != "ok")],
            self.save,
            self.checkpoint_s,
        )
        try:
            self._work(plan, previous, ledger, deadline)
        except BaseException as exc:
            # Keep the records of every file published before the failure (or the stop); a
            # day stopped before any outcome leaves its ledger as it was.
            try:
                ledger.save(only_changes=True)
            except Exception as save_error:
                self.log.warning(f"{self.day}: the files ledger could not be saved: {save_error}")
            said = self._said(exc, len(plan.fetch), ledger)
            if said is exc:
                raise
            raise said from exc
        ledger.save()
        return ledger.frame()

    def _said(self, exc: BaseException, to_fetch: int, ledger: Ledger) -> BaseException:
        """`exc` as the day's failure: a full disk (the audio root's or the scratch space's)
        is the operator's, saying what the day still needs; local disk trouble names the
        scratch space (storage errors are StorageError, so an OSError is local disk)."""
        if isinstance(exc, StorageError) and exc.cause == FULL:
            need = self._need(to_fetch, ledger)
            return operator_error(exc, first_contact=False, need=need) or exc
        if isinstance(exc, OSError) and cause_of(exc) == FULL:
            where, path = f"the scratch space {scratch_root()}", str(scratch_root())
            return full(where, SCRATCH_SETTING, path, exc.errno, self._need(to_fetch, ledger))
        if isinstance(exc, OSError):
            return StorageError(f"the scratch space {scratch_root()} failed: {exc}")
        return exc

    def _need(self, to_fetch: int, ledger: Ledger) -> str:
        """What the day still needs: the runs left to fetch times the median size of its files
        so far (stored earlier, or fetched in this run); an estimate that leans high, as some
        runs will turn out pending or failed."""
        left = max(to_fetch - len(self._published), 1)  # the write that failed is one of them
        rows = ledger.frame()
        earlier = rows[(rows["status"] == "ok") & ~rows["run_id"].isin(self._published)]
        sizes = [*earlier["size_bytes"].dropna(), *self._sizes]
        if not sizes:
            return f"{self.day} still has {left} runs to fetch (of a size not known yet)"
        each = statistics.median(sizes)
        return (
            f"{self.day} still has {left} runs to fetch, about {size_text(left * each)} "
            f"({size_text(each)} each, the median of its {len(sizes)} files so far)"
        )

    def _work(
        self,
        plan: Plan,
        previous: Mapping[int, dict[str, Any]],
        ledger: Ledger,
        deadline: float | None,
    ) -> None:
        """Adopt the stored files, then fetch the rest and those found unusable, each file
        published as it comes; every publishing task has ended when this returns."""
        progress = Progress(len(plan.adopt) + len(plan.fetch) + self.resolving, self.log, self.day)
        with (
            scratch_dir() as workdir,
            ThreadPoolExecutor(self.workers, thread_name_prefix="publish") as pool,
        ):
            publishing = _Publishing(pool, 2 * self.workers, ledger, progress)
            try:
                for run_id in plan.adopt:
                    publishing.submit(self._adopt, run_id, previous.get(run_id), workdir)
                adopted = publishing.rows()
                refetch = [row["run_id"] for row in adopted if row["status"] == "refetch"]
                self._fetch_all(plan.fetch + refetch, previous, workdir, deadline, publishing)
                publishing.rows()
            except BaseException:
                publishing.cancel()
                raise

    def _fetch_all(
        self,
        run_ids: list[int],
        previous: Mapping[int, dict[str, Any]],
        workdir: Path,
        deadline: float | None,
        publishing: _Publishing,
    ) -> None:
        """Fetch `run_ids` (and the tasks resolved beside them), publishing each outcome."""
        if not (run_ids or self.resolving):
            return
        with contextlib.closing(self.fetch(run_ids, workdir, deadline=deadline)) as outcomes:
            for outcome in outcomes:
                publishing.submit(self._finish, outcome, previous.get(outcome.run_id))

    def _row(self, run_id: int, previous: dict[str, Any] | None, **values: Any) -> dict[str, Any]:
        """A ledger row carrying attempts and first_seen_at over from the earlier row."""
        now = self.now()
        row = dict.fromkeys(LEDGER_COLUMNS)
        row.update(
            run_id=run_id,
            attempts=(int(previous["attempts"]) if previous else 0) + 1,
            first_seen_at=previous["first_seen_at"] if previous else now,
            **values,
        )
        if row["status"] == "ok":
            row["fetched_at"], row["dagster_run_id"] = now, self.dagster_run_id
        return row

    def _ok_row(
        self, run_id: int, previous: dict[str, Any] | None, uri: str, size: int, sha256: str,
        audio: AudioInfo, source_format: str | None,
    ) -> dict[str, Any]:  # fmt: skip
        return self._row(
            run_id,
            previous,
            status="ok",
            uri=uri,
            size_bytes=size,
            sha256=sha256,
            sample_rate=audio.sample_rate,
            channels=audio.channels,
            frames=audio.frames,
            duration_s=audio.duration_s,
            subtype=audio.subtype,
            source_format=source_format,
        )

    def _finish(self, outcome: RunOutcome, previous: dict[str, Any] | None) -> dict[str, Any]:
        if isinstance(outcome, Pending | Failed):
            return self._row(outcome.run_id, previous, status=outcome.status, error=outcome.reason)
        assert isinstance(outcome, Fetched)
        path, size, sha256, audio = outcome.path, outcome.size_bytes, outcome.sha256, outcome.audio
        try:
            if audio.container != WAV_CONTAINER:
                wav = path.with_suffix(".wav")
                transcoded = transcode_to_wav(path, wav)
                path.unlink()
                path, size, sha256 = wav, transcoded.size_bytes, transcoded.sha256
                audio_out = transcoded.audio
            else:
                audio_out = audio
        except AudioFileError as exc:
            path.unlink(missing_ok=True)
            return self._row(outcome.run_id, previous, status="failed", error=f"undecodable: {exc}")
        if self.on_fresh_file is not None:
            try:
                self.on_fresh_file(outcome.run_id, path, sha256)
            except Exception as exc:  # an extra: never a reason to lose the run's file
                self.log.warning(f"{self.day}: run {outcome.run_id}: on_fresh_file: {exc}")
        relpath = audio_relpath(self.day, outcome.run_id)
        self._sizes.append(size)  # what a file of the day takes, should the disk fill up
        # The sha256 was taken as the bytes were written (download or transcoder) to this
        # private file: publishing checks the size and does not read the file again.
        uri = self.storage.publish_file(
            str(path), relpath, size=size, sha256=sha256, move=True, hashed=True
        )
        self._published.append(outcome.run_id)
        path.unlink(missing_ok=True)
        return self._ok_row(outcome.run_id, previous, uri, size, sha256, audio_out, audio.container)

    def _adopt(self, run_id: int, previous: dict[str, Any] | None, workdir: Path) -> dict[str, Any]:
        """Verify a file found under its final name; a bad one is fetched again."""
        relpath = audio_relpath(self.day, run_id)
        if self.storage.is_local():
            local, copied = Path(self.storage.path(relpath)), False
        else:
            local, copied = workdir / f"adopt-{run_id}.wav", True
            with self.storage.open(relpath) as remote, local.open("wb") as out:
                shutil.copyfileobj(remote, out, 1 << 20)
        try:
            audio = inspect_audio(local)
            if audio.container != WAV_CONTAINER:
                raise AudioFileError(f"stored file is {audio.container}, not WAV")
            size, sha256 = local.stat().st_size, sha256_file(local)
        except AudioFileError as exc:
            self.log.warning(
                f"{self.day}: stored file of run {run_id} is unusable ({exc}); refetching"
            )
            return {"run_id": run_id, "status": "refetch"}
        finally:
            if copied:
                local.unlink(missing_ok=True)
        # What the API delivered is known only from an earlier record; don't guess it.
        source = previous["source_format"] if previous else None
        return self._ok_row(
            run_id, previous, self.storage.uri(relpath), size, sha256, audio, source
        )
