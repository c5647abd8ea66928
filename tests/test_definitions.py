"""The Definitions load as `workspace.yaml` loads them, and the schedule asks for finished days."""

from datetime import UTC, datetime

from dagster import build_schedule_context

from pipelines.definitions import defs
from pipelines.schedules import daily_harvest_schedule


def test_definitions_load_with_the_three_assets_and_their_checks():
    job = defs.resolve_job_def("daily_harvest")
    keys = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert keys == {"run_manifest", "sound_files", "sound_catalog"}
    checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert checks == {
        "one_row_per_manifest_row",
        "catalog_contract",
        "ok_files_exist",
        "no_pending_runs",
        "manifest_present",
        "freshness_check",  # pipelines/freshness.py
    }


def test_the_schedule_harvests_the_day_that_just_ended():
    context = build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 21, 1, 0, tzinfo=UTC)
    )
    request = daily_harvest_schedule(context)
    assert (request.partition_key, request.run_key) == ("2026-11-20", "2026-11-20")
    assert "2026-11-20" in defs.resolve_job_def("daily_harvest").partitions_def.get_partition_keys()
