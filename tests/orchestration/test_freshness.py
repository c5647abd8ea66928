"""A day's catalog is expected by the deadline (02:00 UTC the next day): before it, or once the
day is there, the check passes; after it, without the day, it fails with a WARN naming it."""

from datetime import UTC, datetime

import pytest
from dagster import (
    AssetCheckSeverity,
    AssetMaterialization,
    AssetSelection,
    DagsterInstance,
    Definitions,
    define_asset_job,
)
from dagster._core.test_utils import freeze_time  # what Dagster's own clock docs point to

from assets.sound_catalog import sound_catalog
from pipelines.freshness import DEADLINE_ENV, catalog_freshness, deadline_cron
from resources.storage_resource import StorageResource


def evaluate(instance: DagsterInstance, now: datetime):
    checks, _ = catalog_freshness()
    job = define_asset_job("freshness", selection=AssetSelection.checks(*checks))
    defs = Definitions(
        assets=[sound_catalog],
        asset_checks=checks,
        jobs=[job],
        resources={"storage": StorageResource()},  # sound_catalog's; the check needs none
    )
    with freeze_time(now):
        result = defs.resolve_job_def("freshness").execute_in_process(instance=instance)
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_a_late_day_warns_and_an_on_time_day_passes():
    instance = DagsterInstance.ephemeral()
    instance.report_runless_asset_event(
        AssetMaterialization("sound_catalog", partition="2026-11-01")
    )

    on_time = evaluate(instance, datetime(2026, 11, 2, 2, 30, tzinfo=UTC))  # 11-01 is there
    late = evaluate(instance, datetime(2026, 11, 3, 2, 30, tzinfo=UTC))  # 11-02 is not

    assert on_time.passed and "2026-11-01" in on_time.description
    assert not late.passed and late.severity == AssetCheckSeverity.WARN
    assert "expected partition 2026-11-02" in late.description
    instance.report_runless_asset_event(
        AssetMaterialization("sound_catalog", partition="2026-11-02")
    )
    assert evaluate(instance, datetime(2026, 11, 3, 2, 31, tzinfo=UTC)).passed  # arrived late


def test_the_deadline_is_a_time_of_day(monkeypatch):
    assert deadline_cron() == "0 2 * * *"
    monkeypatch.setenv(DEADLINE_ENV, "06:30")
    assert deadline_cron() == "30 6 * * *"
    monkeypatch.setenv(DEADLINE_ENV, "25:00")
    with pytest.raises(ValueError, match="SOUNDHARVEST_CATALOG_DEADLINE='25:00'"):
        deadline_cron()
