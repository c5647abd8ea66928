"""Dagster's default run launcher, plus what run monitoring needs to fail a dead run.

`DefaultRunLauncher` starts each run in a process of a code server and supports no run-worker
health check, so Dagster's run monitoring only fails runs that never start, never those whose
worker died (kill -9, the OOM killer): such a run stays STARTED and holds its day's place in
the run queue. This launcher, named in `pipelines/dagster.yaml` and `deploy/dagster.yaml`:

- writes an engine event naming this host into each run it starts through a code server on
  this machine (its own socket or loopback port: what `workspace.yaml`, `dg dev` and
  `dagster-daemon` start), before the run worker starts; Dagster records the worker's pid itself;
- answers run monitoring's health check with the rules of `assets/steps/dead_runs.py`, for every
  run in progress, the ones `soundharvest` and `dg launch` execute in their own process too: a
  run whose process is gone is marked failed there with the reason, so the daemon frees the day
  within `run_monitoring.poll_interval_seconds`. A run it cannot judge is reported running.
"""

from dagster import DagsterInstance, DagsterRun, DefaultRunLauncher
from dagster._core.events import EngineEventData
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus

from assets.steps.dead_runs import LAUNCHED_ON, leases_in, mark_failed, this_host, why_gone
from resources.storage import Storage
from resources.storage.roots import root_url

LOOPBACK = {"localhost", "127.0.0.1", "::1"}


class HostRunLauncher(DefaultRunLauncher):
    """`DefaultRunLauncher` that records each run worker's host and checks its health."""

    def launch_run(self, context: LaunchRunContext) -> None:
        if _code_server_is_here(context):
            self._instance.report_engine_event(
                f"Starting the run worker on {this_host()}",
                context.dagster_run,
                EngineEventData(metadata={LAUNCHED_ON: this_host()}),
                cls=self.__class__,
            )
        super().launch_run(context)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        instance: DagsterInstance = self._instance
        record = instance.get_run_record_by_id(run.run_id)
        reason = record and why_gone(instance, record, lambda: leases_in(_catalog()))
        if not reason:  # alive, or not to be told: monitoring fails any other answer
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        # Marked here rather than by the monitoring daemon, so every dead run carries the same
        # words and frees its pool slots, whoever found it; the daemon then sees it ended.
        mark_failed(instance, run.run_id, reason, "the daemon's run monitoring")
        return CheckRunHealthResult(WorkerStatus.FAILED, reason)


def _code_server_is_here(context: LaunchRunContext) -> bool:
    origin = context.dagster_run.remote_job_origin
    if context.workspace is None or origin is None:
        return False
    name = origin.repository_origin.code_location_origin.location_name
    location = context.workspace.get_code_location(name)
    if getattr(location, "socket", None):
        return True
    host = getattr(location, "host", None)
    return host in LOOPBACK or host == this_host()


def _catalog() -> Storage | None:
    try:
        return Storage(root_url("catalog"))
    except Exception:  # a bad setting: the runs say so; here, nothing can be told
        return None
