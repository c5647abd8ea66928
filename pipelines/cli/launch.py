"""Materialize days through the one Definitions and the instance at `DAGSTER_HOME`.

What `dagster asset materialize` does (the implicit asset job, `execute_job`, the partition
or the single-run range tags), so the run shows in the UI as any other; in addition the
run's events are followed from a helper thread while the run executes in this one (where
Dagster handles SIGINT/SIGTERM), and the failures are read back as plain `StepFailure`s.
"""

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    EventLogEntry,
    RunsFilter,
    execute_job,
)
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository

from assets.partitions import run_tags
from assets.steps.dead_runs import process_tags
from resources.error_kinds import ERROR_KIND_KEY, OPERATOR

INVOCATION_TAG = "soundharvest/cli_invocation"
POLL_S = 0.5
INTERRUPTS = {"DagsterExecutionInterruptedError", "KeyboardInterrupt"}
# Dagster's console logger prints every event; the command shows its own progress instead.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def harvest_job() -> ReconstructableJob:
    """The implicit asset job of `pipelines.definitions.defs`, as the Dagster CLI finds it
    (`-m pipelines.definitions`): loading it raises when a structural setting is bad."""
    from pipelines.definitions import defs

    name = defs.resolve_implicit_global_asset_job_def().name
    return ReconstructableRepository.for_module(
        "pipelines.definitions", "defs"
    ).get_reconstructable_job(name)


@dataclass(frozen=True)
class StepFailure:
    step: str
    message: str  # the Failure's description, else the deepest cause's message
    operator: bool  # an operator's mistake (resources/error_kinds.py): fix a setting, run again
    traceback: str
    interrupted: bool = False  # stopped as told (SIGINT, SIGTERM, terminate in the UI)
    setting: str | None = None  # the variable an operator's mistake names, if a setting


@dataclass(frozen=True)
class Launched:
    run_id: str
    success: bool
    failures: list[StepFailure]


def launch(
    job: ReconstructableJob,
    instance: DagsterInstance,
    days: Sequence[str],
    assets: Sequence[str],
    *,
    on_event: Callable[[EventLogEntry], None],
    quiet: bool = True,
    ops: Mapping[str, Any] | None = None,
) -> Launched:
    """One run materializing `assets` for `days` (consecutive); `on_event` sees its events;
    `ops` is the run config of the assets' ops (`{"sound_generations": {"config": ...}}`)."""
    token = uuid.uuid4().hex
    tags = run_tags(days[0]) if len(days) == 1 else run_tags(days[0], days[-1])
    watcher = _Watcher(instance, token, on_event)
    watcher.start()
    try:
        result = execute_job(
            job,
            instance,
            run_config={**(QUIET if quiet else {}), **({"ops": dict(ops)} if ops else {})},
            # Where the run's process is: a kill -9 of this command leaves it to be marked
            # failed by the next command or the daemon (assets/steps/dead_runs.py).
            tags={**tags, **process_tags(), INVOCATION_TAG: token},
            asset_selection=[AssetKey(name) for name in assets],
        )
    finally:
        watcher.finish()
    failures = [
        failure(event.step_key or "run", event.step_failure_data)
        for event in result.all_events
        if event.event_type == DagsterEventType.STEP_FAILURE
    ]
    return Launched(result.run_id, result.success, failures)


def failure(step: str, data) -> StepFailure:
    """A failed step's reason: its `Failure`'s description, else its deepest cause."""
    error, user = data.error, data.user_failure_data
    root = error
    while root is not None and root.cause is not None:
        root = root.cause
    kind = user.metadata.get(ERROR_KIND_KEY) if user else None
    operator = getattr(kind, "value", kind) == OPERATOR or (
        root is not None and root.cls_name == "OperatorError"
    )
    setting = user.metadata.get("setting") if user else None
    if user and user.description:
        message = user.description
    elif root is not None:
        message = root.message.strip()
        if root.cls_name and message.startswith(root.cls_name + ": "):
            message = message.removeprefix(root.cls_name + ": ")
    else:
        message = "the step failed without a message"
    interrupted = any(e.cls_name in INTERRUPTS for e in _chain(error))
    return StepFailure(
        step,
        message,
        operator,
        error.to_string() if error else "",
        interrupted,
        getattr(setting, "value", setting),
    )


def _chain(error):
    while error is not None:
        yield error
        error = error.cause or error.context


class _Watcher(threading.Thread):
    """Follows the run's events from the event log while the run executes."""

    def __init__(
        self, instance: DagsterInstance, token: str, on_event: Callable[[EventLogEntry], None]
    ) -> None:
        super().__init__(name="soundharvest-watcher", daemon=True)
        self.instance, self.token, self.on_event = instance, token, on_event
        self.done = threading.Event()
        self.run_id: str | None = None
        self.cursor: str | None = None

    def run(self) -> None:
        while not self.done.wait(POLL_S):
            self.poll()

    def finish(self) -> None:
        self.done.set()
        self.join(timeout=10)
        self.poll()  # whatever came after the last poll

    def poll(self) -> None:
        try:
            if self.run_id is None:
                found = self.instance.get_run_records(
                    RunsFilter(tags={INVOCATION_TAG: self.token}), limit=1
                )
                if not found:
                    return
                self.run_id = found[0].dagster_run.run_id
            connection = self.instance.get_records_for_run(self.run_id, cursor=self.cursor)
        except Exception:  # a busy SQLite: the next poll catches up
            return
        for record in connection.records:
            self.on_event(record.event_log_entry)
        self.cursor = connection.cursor
