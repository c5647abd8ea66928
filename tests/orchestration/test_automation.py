"""The ML feed's automation conditions, evaluated tick by tick by Dagster's own evaluator.

A harvested day is stood for by the materialization event its run would write
(`report_runless_asset_event`); `tests/orchestration/test_daemon.py` runs the real thing under
the daemon.
"""

from datetime import UTC, datetime

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    evaluate_automation_conditions,
)

from pipelines.automation import DATASET_CRON_ENV, dataset_cron
from pipelines.definitions import defs

FEATURES, DATASET = AssetKey("sound_features"), AssetKey("ml_dataset")


class Ticks:
    """One evaluation per call, carrying the cursor as the daemon does."""

    def __init__(self, instance: DagsterInstance) -> None:
        self.instance, self.cursor = instance, None

    def __call__(self, *at: int) -> dict[str, set]:
        result = evaluate_automation_conditions(
            defs=defs,
            instance=self.instance,
            evaluation_time=datetime(*at, tzinfo=UTC),
            cursor=self.cursor,
        )
        self.cursor = result.cursor
        return {
            key.to_user_string(): result.get_requested_partitions(key)
            for key in (FEATURES, DATASET)
            if result.get_num_requested(key)
        }


def updated(instance: DagsterInstance, asset: str, *days: str) -> None:
    for day in days:
        instance.report_runless_asset_event(AssetMaterialization(asset, partition=day))


def test_features_follow_any_catalog_day_once_and_snapshots_keep_their_cadence():
    instance = DagsterInstance.ephemeral()
    tick = Ticks(instance)

    assert tick(2026, 11, 2, 0, 30) == {}  # first tick: nothing harvested, nothing to do
    updated(instance, "sound_catalog", "2026-11-01", "2025-03-01")  # yesterday and a backfill
    assert tick(2026, 11, 2, 0, 31) == {"sound_features": {"2026-11-01", "2025-03-01"}}
    assert tick(2026, 11, 2, 0, 32) == {}  # requested once, not again
    updated(instance, "sound_features", "2026-11-01", "2025-03-01")
    assert tick(2026, 11, 2, 2, 59) == {}  # upstream changed, but the cadence has not come
    assert tick(2026, 11, 2, 3, 0, 30) == {"ml_dataset": {None}}  # the 03:00 tick passed
    assert tick(2026, 11, 2, 3, 1) == {}
    assert tick(2026, 11, 3, 3, 0, 30) == {}  # nothing changed in a day: no snapshot

    updated(instance, "sound_catalog", "2026-11-02")  # a change after the tick...
    assert tick(2026, 11, 3, 3, 2) == {"sound_features": {"2026-11-02"}}
    updated(instance, "sound_features", "2026-11-02")
    assert tick(2026, 11, 3, 12, 0) == {}  # ...waits for the next one
    assert tick(2026, 11, 4, 3, 0, 30) == {"ml_dataset": {None}}


def test_days_harvested_before_the_first_tick_get_their_features_once():
    """A daemon started after the harvest saw no update happen: on its first tick, days with a
    catalog and no features are requested, once; days without a catalog never."""
    instance = DagsterInstance.ephemeral()
    updated(instance, "sound_catalog", "2026-10-30", "2026-11-01")
    updated(instance, "sound_features", "2026-10-30")
    tick = Ticks(instance)

    assert tick(2026, 11, 2, 0, 30) == {"sound_features": {"2026-11-01"}}
    assert tick(2026, 11, 2, 0, 31) == {}  # requested once: no loop, even if that run fails
    assert tick(2026, 11, 2, 0, 32) == {}
    updated(instance, "sound_catalog", "2026-11-01")  # then as before: once per update
    assert tick(2026, 11, 2, 0, 33) == {"sound_features": {"2026-11-01"}}


def test_the_cadence_is_configurable_and_checked(monkeypatch):
    monkeypatch.setenv(DATASET_CRON_ENV, "*/5 * * * *")
    assert dataset_cron() == "*/5 * * * *"
    monkeypatch.setenv(DATASET_CRON_ENV, "at three")
    with pytest.raises(ValueError, match="SOUNDHARVEST_DATASET_CRON='at three'"):
        dataset_cron()


def test_a_snapshot_waits_while_an_upstream_day_is_in_progress():
    instance = DagsterInstance.ephemeral()
    tick = Ticks(instance)
    assert tick(2026, 11, 2, 2, 0) == {}
    updated(instance, "sound_catalog", "2026-11-01")
    updated(instance, "sound_features", "2026-11-01")
    # A harvest of the next day was created (queued or running) before the 03:00 tick.
    harvest = instance.create_run_for_job(
        defs.resolve_implicit_global_asset_job_def(),
        asset_selection=frozenset(map(AssetKey, ("run_manifest", "sound_files", "sound_catalog"))),
        tags={"dagster/partition": "2026-11-02"},
    )
    assert tick(2026, 11, 3, 3, 0, 30) == {}  # the tick passed, but 11-02 is in progress
    assert tick(2026, 11, 3, 3, 5) == {}
    instance.report_run_failed(harvest)  # the harvest ends (here: fails, catalog untouched)
    assert tick(2026, 11, 3, 3, 6) == {"ml_dataset": {None}}  # the change at 03:00 is served
    assert tick(2026, 11, 3, 3, 7) == {}
