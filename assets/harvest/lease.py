"""One run per day: a lease in the catalog storage, taken before a day's runs are fetched.

Runs launched by the daemon or the UI queue per day (`deploy/dagster.yaml`); anything that
bypasses the queue (the CLI, `dg launch`, a second instance) meets this lease instead, at
`{CATALOG_ROOT}/_state/lease/date=D.json`. A run that finds the day held waits, at most
`SOUNDHARVEST_LEASE_WAIT_S`, then stops that day with a message naming the holder (run id,
host, pid). The holder renews its lease every third of `SOUNDHARVEST_LEASE_TTL_S` while it
works; a crashed holder's lease expires after that long and the next run takes it over (at
once when the holder ran on the same host and its process is gone).

How the storages make "take it if free or expired" atomic:

- local disk: each change happens under an exclusive `flock` of a sidecar file
  (`date=D.lock`), which the kernel releases if the process dies;
- S3: conditional PUTs: `If-None-Match: *` creates it only where none exists, `If-Match:
  <ETag>` replaces only the version that was read (a takeover or a renewal), so of two
  runs only one wins;
- any other storage has no such primitive here: the lease is not enforced there, and the
  step says so once (`Lease.supported`).
"""

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from resources.storage import Storage


@dataclass(frozen=True)
class Holder:
    run_id: str
    host: str
    pid: int
    expires_at: float  # epoch seconds

    def __str__(self) -> str:
        until = datetime.fromtimestamp(self.expires_at, UTC).strftime("%H:%M:%S UTC")
        return f"run {self.run_id} on {self.host} (pid {self.pid}), lease until {until}"


class LeaseHeld(Exception):
    """The day is being harvested (or the prompt sheets submitted) by another run."""

    def __init__(self, day: str, holder: Holder, waited_s: float, doing: str = "harvested") -> None:
        super().__init__(
            f"{day} is being {doing} by {holder}; waited {waited_s:.0f} s "
            f"(SOUNDHARVEST_LEASE_WAIT_S). Run this day again once that run has ended."
        )
        self.holder = holder


class LeaseLost(Exception):
    """Another run took the day over: this run's lease had expired."""


def process_alive(pid: int, started_by: float | None = None) -> bool:
    """Whether a process of this host runs under `pid` (a zombie does not run), and, given
    `started_by` (epoch seconds), one that already existed then: a younger process has only
    taken over the pid. A holder killed here (kill -9, OOM) frees its day at once instead of
    after the TTL."""
    import psutil  # on use: the lease is read by every harvest, psutil only here

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started_by is None or process.create_time() <= started_by + 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # someone else's process: alive
        return True


def _decode(data: bytes | None) -> Holder | None:
    if not data:
        return None
    try:
        return Holder(**json.loads(data))
    except (ValueError, TypeError):
        return None  # unreadable: treated as expired, so a stray file never blocks a day


class DayLease:
    """The lease of one day for one run: `acquire`, then `renew` while working, `release`.

    `name` gives a lease of something else than a day's harvest its own file (the
    submission of prompt sheets, one run at a time whatever the day); `doing` says what its
    holder is doing, for the message of a run that waited in vain."""

    def __init__(
        self,
        storage: Storage,
        day: str,
        run_id: str,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
        *,
        name: str | None = None,
        doing: str = "harvested",
    ) -> None:
        self.storage = storage
        self.day = day
        self.ttl_s = ttl_s
        self.clock = clock
        self.doing = doing
        self.me = Holder(run_id, socket.gethostname(), os.getpid(), 0.0)
        self.path = storage.path(f"_state/lease/{name or f'date={day}'}.json")
        self._etag: str | None = None  # S3: the version this run wrote last

    @staticmethod
    def supported(storage: Storage) -> bool:
        return storage.is_local() or "s3" in storage.fs.protocol

    def _mine(self) -> bytes:
        me = Holder(self.me.run_id, self.me.host, self.me.pid, self.clock() + self.ttl_s)
        return json.dumps(asdict(me)).encode()

    def _free(self, holder: Holder | None) -> bool:
        return (
            holder is None
            or holder.expires_at <= self.clock()
            or self._is_me(holder)
            or (holder.host == self.me.host and not process_alive(holder.pid))
        )

    def _is_me(self, holder: Holder | None) -> bool:
        return holder is not None and holder.run_id == self.me.run_id

    # -- the three operations ---------------------------------------------------------------

    def try_acquire(self) -> Holder | None:
        """Take the lease if it is free, expired or already ours; else return its holder."""
        if self.storage.is_local():
            return self._local(lambda held: self._free(held), self._mine())
        return self._s3_acquire()

    def renew(self) -> None:
        """Extend the lease; LeaseLost when another run holds it now."""
        holder = (
            self._local(self._is_me, self._mine()) if self.storage.is_local() else self._s3_renew()
        )
        if holder is not None:
            raise LeaseLost(f"{self.day}: the lease passed to {holder}")

    def release(self) -> None:
        """Give the lease up if it is still ours."""
        if self.storage.is_local():
            self._local(self._is_me, None)
            return
        with contextlib.suppress(FileNotFoundError):
            if self._is_me(_decode(self.storage.fs.cat_file(self.path))):
                self.storage.fs.rm_file(self.path)

    # -- local disk: read, decide and write under an exclusive lock ------------------------

    def _local(
        self, may_write: Callable[[Holder | None], bool], data: bytes | None
    ) -> Holder | None:
        # Every read and write of the lease happens under the lock, so it is written in place
        # (a crash mid-write leaves unreadable JSON, which counts as free).
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path.removesuffix(".json") + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released on close, or when the process dies
            try:
                with open(self.path, "rb") as file:
                    held = _decode(file.read())
            except FileNotFoundError:
                held = None
            if not may_write(held):
                return held
            if data is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            else:
                with open(self.path, "wb") as file:
                    file.write(data)
            return None

    # -- S3: conditional PUTs ---------------------------------------------------------------

    def _s3_put(self, **condition: str | None) -> bool:
        """One conditional PUT of this run's lease; False when the condition did not hold."""
        try:
            self._etag = self.storage.fs.pipe_file(self.path, self._mine(), **condition)["ETag"]
            return True
        except (FileExistsError, FileNotFoundError):  # If-None-Match failed, or gone (If-Match)
            return False
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # s3fs's 412 Precondition Failed (If-Match)
                return False
            raise

    def _s3_read(self) -> tuple[str | None, Holder | None]:
        """ETag and holder; the ETag first: a body newer than it fails the If-Match after."""
        try:
            etag = self.storage.fs.info(self.path)["ETag"]
            return etag, _decode(self.storage.fs.cat_file(self.path))
        except FileNotFoundError:
            return None, None

    def _s3_acquire(self) -> Holder | None:
        for _ in range(3):  # each round lost to another run changing the lease meanwhile
            if self._s3_put(mode="create"):
                return None
            etag, held = self._s3_read()
            if etag is None:
                continue  # released meanwhile
            if not self._free(held):
                return held
            if self._s3_put(IfMatch=etag):
                return None
        return self._s3_read()[1] or Holder("(changing hands)", "?", 0, self.clock())

    def _s3_renew(self) -> Holder | None:
        if self._s3_put(IfMatch=self._etag):
            return None
        return self._s3_read()[1] or Holder("(none: released)", "?", 0, self.clock())


def held_leases(storage: Storage) -> list[tuple[str, Holder]]:
    """(day, holder) of every lease file in `storage`, expired or not: released leases are
    removed, so these are the days being harvested, or whose holder died."""
    found = []
    for path in storage.fs.glob(storage.path("_state/lease/date=*.json")):
        with contextlib.suppress(FileNotFoundError):  # released meanwhile
            holder = _decode(storage.fs.cat_file(path))
            if holder is not None:
                day = os.path.basename(path).removeprefix("date=").removesuffix(".json")
                found.append((day, holder))
    return found


@contextlib.contextmanager
def holding(
    lease: DayLease,
    wait_s: float,
    poll_s: float = 1.0,
    on_wait: Callable[[Holder], None] | None = None,
) -> Iterator[None]:
    """Hold the day's lease for the block, renewed in the background; LeaseHeld after
    `wait_s` seconds of finding it held by another run."""
    started = time.monotonic()
    told = False
    while (holder := lease.try_acquire()) is not None:
        if on_wait is not None and not told:  # said even when the wait is up at once
            on_wait(holder)
            told = True
        waited = time.monotonic() - started
        if waited >= wait_s:
            raise LeaseHeld(lease.day, holder, waited, lease.doing)
        time.sleep(min(poll_s, max(wait_s - waited, 0.01)))
    stop = threading.Event()
    lost: list[Exception] = []

    def heartbeat() -> None:
        while not stop.wait(lease.ttl_s / 3):
            try:
                lease.renew()
            except Exception as exc:  # kept for the end of the block; the work goes on
                lost.append(exc)
                return

    beating = threading.Thread(target=heartbeat, name=f"lease-{lease.day}", daemon=True)
    beating.start()
    try:
        yield
    finally:
        stop.set()
        beating.join()
        lease.release()
    if lost:
        raise LeaseLost(f"{lease.day}: the lease could not be renewed: {lost[0]}")
