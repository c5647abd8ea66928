"""Runs whose process is gone: found, and marked failed with the reason, so that the queued runs
of their day start.

A run killed with kill -9 (the OOM killer, a lost machine) stays STARTED in Dagster forever: its
process never wrote its end, and the run queue's limit of one run per day
(`dagster/partition`) then holds every later run of that day. Dagster's run monitoring fails
such a run only where the run launcher can check its workers (Kubernetes, ECS, ...); its default
launcher cannot, and the runs `soundharvest` and `dg launch` execute in their own process were
launched by no launcher at all.

Where a run's process is, from the run's own records (tags are copied to a re-executed run,
events are not):

- its pid: the first engine event of the run that carries one, written by Dagster ("Started
  process for run (pid: N)" in a launched run worker, "Executing steps in process (pid: N)"
  in a process that executes the run itself);
- its host: the engine event the project's run launcher writes before a code server of its own
  machine starts the run (`pipelines/run_launcher.py`), or the `soundharvest/host` and
  `soundharvest/pid` tags the `soundharvest` command gives the runs it executes (believed for a
  run of no parent whose recorded pid, if any yet, is the tagged one);
- the days it harvests: their leases (`assets/harvest/lease.py`) name run, host and pid, and
  expire when the holder stops renewing them.

A run whose process is on this host is gone when no process runs under its pid any more (a
zombie, or a younger process that took the pid over, is none). A run elsewhere is gone when a
lease it holds has expired. Anything else may be alive, or cannot be told: it is never marked.
"""

import functools
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.events import JobFailureData, RunFailureReason
from dagster._core.storage.dagster_run import RunRecord
from dagster._utils.error import SerializableErrorInfo

from assets.harvest.lease import DayLease, Holder, held_leases, process_alive
from assets.partitions import run_days
from resources.storage import Storage

HOST_TAG, PID_TAG = "soundharvest/host", "soundharvest/pid"
LAUNCHED_ON = "launched on host"  # metadata key of the run launcher's engine event
GONE = "RunProcessGone"  # class name of the failure's error: how a marked run is told apart
WATCHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]
EVENTS_READ = 20  # the pid comes with the run's first engine events


def this_host() -> str:
    return socket.gethostname()


def process_tags() -> dict[str, str]:
    """Tags of a run executed in this process (what `soundharvest harvest` starts)."""
    return {HOST_TAG: this_host(), PID_TAG: str(os.getpid())}


@dataclass(frozen=True)
class Gone:
    run_id: str
    days: list[str]  # the days the run covered (none: not partitioned)
    reason: str

    def __str__(self) -> str:
        if not self.days:
            return f"run {self.run_id[:8]}: {self.reason}"
        span = self.days[0] if len(self.days) == 1 else f"{self.days[0]}...{self.days[-1]}"
        return f"run {self.run_id[:8]} ({span}): {self.reason}"


@dataclass(frozen=True)
class Place:
    host: str
    pid: int


def place(instance: DagsterInstance, record: RunRecord) -> Place | None:
    """The host and pid of the run's process, where its records say them."""
    run = record.dagster_run
    pid = launched_on = None
    events = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=EVENTS_READ
    )
    for event in events.records:
        data = event.event_log_entry.dagster_event.engine_event_data
        metadata = data.metadata if data else {}
        if pid is None and "pid" in metadata:
            pid = int(metadata["pid"].value)
        if LAUNCHED_ON in metadata:
            launched_on = str(metadata[LAUNCHED_ON].value)
    if launched_on is not None:
        return Place(launched_on, pid) if pid is not None else None  # not started yet
    tagged = run.tags.get(PID_TAG, "")
    if run.parent_run_id is not None or HOST_TAG not in run.tags or not tagged.isdigit():
        return None  # a re-executed run carries its parent's tags
    if pid is not None and pid != int(tagged):
        return None
    return Place(run.tags[HOST_TAG], int(tagged))


def why_gone(
    instance: DagsterInstance,
    record: RunRecord,
    leases: Callable[[], list[tuple[str, Holder]]],
) -> str | None:
    """Why the run's process is gone, or None while it may be alive."""
    here = this_host()
    # Its own clock: a pid taken over by a process younger than the run is not the run's.
    started = record.start_time
    where = place(instance, record)
    if where is not None and where.host == here:
        if process_alive(where.pid, started):
            return None
        return f"process {where.pid} on {here} is gone (killed?)"
    for day, holder in leases():
        if holder.run_id != record.dagster_run.run_id:
            continue
        if holder.host == here and not process_alive(holder.pid, started):
            return f"process {holder.pid} on {here}, holding {day}, is gone (killed?)"
        if holder.host != here and holder.expires_at <= time.time():
            until = datetime.fromtimestamp(holder.expires_at, UTC).strftime("%H:%M:%S UTC")
            return (
                f"its lease of {day} (process {holder.pid} on {holder.host}) expired at {until} "
                "without renewal (SOUNDHARVEST_LEASE_TTL_S): its process is gone or stuck"
            )
    return None


def mark_dead_runs(instance: DagsterInstance, catalog: Storage | None, *, by: str) -> list[Gone]:
    """Mark failed every run not ended whose process is gone, saying why and `by` whom; their
    pool slots are freed at once. One query when no run is in progress."""
    records = instance.get_run_records(RunsFilter(statuses=WATCHED))
    if not records:
        return []
    leases = functools.cache(lambda: leases_in(catalog))
    gone = []
    for record in records:
        reason = why_gone(instance, record, leases)
        if reason is not None and mark_failed(instance, record.dagster_run.run_id, reason, by):
            gone.append(Gone(record.dagster_run.run_id, run_days(record.dagster_run.tags), reason))
    return gone


def mark_failed(instance: DagsterInstance, run_id: str, reason: str, by: str) -> bool:
    """Mark the run failed unless it ended meanwhile (its process wrote its end, then exited)."""
    run = instance.get_run_by_id(run_id)
    if run is None or run.status not in WATCHED:
        return False
    error = SerializableErrorInfo(reason, [], GONE)
    instance.report_run_failed(
        run,
        f"{reason}: marked failed by {by}",
        JobFailureData(error=error, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION),
    )
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return True


def leases_in(catalog: Storage | None) -> list[tuple[str, Holder]]:
    """The day leases in the catalog storage; none where it has none, or cannot be read (then
    nothing can be told from them)."""
    if catalog is None or not DayLease.supported(catalog):
        return []
    try:
        return held_leases(catalog)
    except Exception:  # storage unreachable: nothing can be told from the leases
        return []
