"""Schedules: harvest each day once it has ended (UTC)."""

from dagster import build_schedule_from_partitioned_job

from pipelines.jobs import daily_harvest

# 01:00 UTC leaves an hour for the last manifests of the day to land.
daily_harvest_schedule = build_schedule_from_partitioned_job(
    daily_harvest, hour_of_day=1, minute_of_hour=0
)
