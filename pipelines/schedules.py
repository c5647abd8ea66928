"""Schedules: harvest each day once it has ended (UTC)."""

from datetime import timedelta

from dagster import RunRequest, ScheduleEvaluationContext, schedule

from pipelines.deployment import schedule_status
from pipelines.jobs import daily_harvest


# 01:00 UTC leaves an hour for the last manifests of the day to land.
@schedule(
    job=daily_harvest,
    cron_schedule="0 1 * * *",
    execution_timezone="UTC",
    default_status=schedule_status(),  # SOUNDHARVEST_AUTOMATION=off: stopped
)
def daily_harvest_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    """The day that ended before this tick; its run key makes a repeated tick a no-op."""
    day = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
    return RunRequest(run_key=day, partition_key=day)
