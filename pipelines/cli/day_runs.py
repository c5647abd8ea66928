"""What the Dagster instance says about days: dead runs marked failed first, then the latest run
of each day, and how it went for that day.

Every `soundharvest` command calls `mark_dead` (one query of the runs in progress; see
`assets/steps/dead_runs.py`); `soundharvest status` reads `latest_runs` beside the catalog.
"""

import os
from pathlib import Path

from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus

from assets.partitions import run_days
from assets.steps.dead_runs import GONE, Gone, mark_dead_runs
from pipelines.cli.launch import failure
from pipelines.cli.output import err_console
from pipelines.cli.report import DayRun
from resources.storage import Storage
from resources.storage.roots import root_url

RUNS_READ = 2000  # the latest runs looked at for `status`: weeks of daily runs and their sweeps
IN_PROGRESS = {
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
}


def existing_instance() -> DagsterInstance | None:
    """The instance at DAGSTER_HOME if there is one (a dagster.yaml or its storage), else None:
    a reader never creates an instance."""
    home = os.environ.get("DAGSTER_HOME", "").strip()
    if not home or not ((Path(home) / "dagster.yaml").is_file() or Path(home, "storage").is_dir()):
        return None
    return DagsterInstance.get()


def mark_dead(instance: DagsterInstance, by: str) -> list[Gone]:
    """Mark the runs whose process is gone failed, and say so on the console."""
    try:
        catalog = Storage(root_url("catalog"))
    except Exception:  # the day leases cannot be read: the runs on this host are still judged
        catalog = None
    gone = mark_dead_runs(instance, catalog, by=by)
    for run in gone:
        err_console.print(f"[yellow]![/] marked failed: {run}", soft_wrap=True)
    return gone


def latest_runs(instance: DagsterInstance) -> dict[str, DayRun]:
    """Per day, the latest of the last RUNS_READ runs that covered it, and how it went."""
    latest: dict[str, DayRun] = {}
    for record in instance.get_run_records(limit=RUNS_READ):
        run = record.dagster_run
        days = [day for day in run_days(run.tags) if day not in latest]
        if not days:
            continue
        if run.status != DagsterRunStatus.FAILURE:
            latest.update(dict.fromkeys(days, DayRun(_state(run.status), run.run_id)))
            continue
        done, state, reason = _failure(instance, run)
        for day in days:  # a day the failed run completed anyway went well
            ended = DayRun("ok", run.run_id) if day in done else DayRun(state, run.run_id, reason)
            latest[day] = ended
    return latest


def _state(status: DagsterRunStatus) -> str:
    if status == DagsterRunStatus.SUCCESS:
        return "ok"
    if status == DagsterRunStatus.QUEUED:
        return "queued"
    if status == DagsterRunStatus.CANCELED:
        return "canceled"
    return "running" if status in IN_PROGRESS else status.value.lower()


def _failure(instance: DagsterInstance, run: DagsterRun) -> tuple[set[str], str, str]:
    """The days the failed run completed anyway (a range run goes on past a failed day), whether
    it failed or was killed, and why (the first failed step's reason, else the run's)."""
    events = instance.get_records_for_run(
        run.run_id,
        of_type={
            DagsterEventType.ASSET_MATERIALIZATION,
            DagsterEventType.STEP_FAILURE,
            DagsterEventType.PIPELINE_FAILURE,
        },
    ).records
    materialized: dict[str, set[AssetKey]] = {}
    step_reason = run_reason = None
    killed = False
    for record in events:
        event = record.event_log_entry.dagster_event
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            keys = materialized.setdefault(materialization.partition, set())
            keys.add(materialization.asset_key)
        elif event.event_type == DagsterEventType.STEP_FAILURE and step_reason is None:
            step_reason = failure(event.step_key or "run", event.step_failure_data).message
        elif event.event_type == DagsterEventType.PIPELINE_FAILURE:
            data = event.event_specific_data
            killed = killed or bool(data and data.error and data.error.cls_name == GONE)
            run_reason = (data.error.message if killed else event.message) or run_reason
    selected = set(run.asset_selection or ()) or set().union(*materialized.values())
    done = {day for day, keys in materialized.items() if selected and selected <= keys}
    reason = (run_reason if killed else step_reason or run_reason) or "no reason recorded"
    return done, "killed" if killed else "failed", reason.strip().splitlines()[0]
