"""What the Definitions decide as they load: the schedule asks for finished days, and schedules
and sensors start running unless automation is off. (Everything loading: test_code_location.py.)"""

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from dagster import build_schedule_context

from pipelines.definitions import defs
from pipelines.schedules import daily_harvest_schedule

from support import PROJECT


def test_the_schedule_harvests_the_day_that_just_ended():
    context = build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 21, 1, 0, tzinfo=UTC)
    )
    request = daily_harvest_schedule(context)
    assert (request.partition_key, request.run_key) == ("2026-11-20", "2026-11-20")
    assert "2026-11-20" in defs.resolve_job_def("daily_harvest").partitions_def.get_partition_keys()


@pytest.mark.parametrize(("setting", "running"), [(None, True), ("on", True), ("off", False)])
def test_schedules_and_sensors_start_running_unless_automation_is_off(setting, running):
    """`dg dev` runs the harvest unattended by default; SOUNDHARVEST_AUTOMATION=off stops it.

    Loaded in a fresh interpreter: the default status is read when the definitions load."""
    env = {k: v for k, v in os.environ.items() if k != "SOUNDHARVEST_AUTOMATION"}
    if setting is not None:
        env["SOUNDHARVEST_AUTOMATION"] = setting
    script = (
        "from pipelines.definitions import defs\n"
        "repo = defs.get_repository_def()\n"
        "for s in [*repo.schedule_defs, *repo.sensor_defs]:\n"
        "    print(s.name, s.default_status.value)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=PROJECT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    statuses = dict(line.split() for line in out.stdout.splitlines())
    assert set(statuses) >= {
        "daily_harvest_schedule",
        "manifest_sensor",
        "pending_sweep",
        "ml_feed_automation",
    }
    assert set(statuses.values()) == {"RUNNING" if running else "STOPPED"}
