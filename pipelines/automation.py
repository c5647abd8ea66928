"""Declarative automation of the ML feed: features follow each catalog day, snapshots follow a
cadence. The harvest itself keeps its schedule and sensors (docs/operations.md says why).

- `sound_features` of a day is requested once that day's `sound_catalog` has been
  materialized, whichever day it is, and for any day whose catalog exists without features.
  Dagster's `eager()` looks only at the latest time partition (a backfilled or swept day
  would never get its features) and only at updates it saw happen (a day harvested while the
  daemon was down neither): see `features_condition`.
- `ml_dataset` is requested on the first tick at or after each tick of
  `SOUNDHARVEST_DATASET_CRON` (default `0 3 * * *`, UTC) when the catalog or the features
  changed since the last snapshot was requested, and waits while any of their days is in
  progress (or about to start). Nothing changed: nothing is requested until the next tick.

`ml_feed_automation` evaluates both every `SOUNDHARVEST_AUTOMATION_INTERVAL_S` (default 30 s)
once the daemon runs; it starts running (`SOUNDHARVEST_AUTOMATION=off` starts it stopped):
Dagster's default automation sensor would start stopped, and features that need a switch
turned on in the UI are features most deployments would not have.
"""

import os

from dagster import (
    AssetsDefinition,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
)
from dagster._utils.schedules import is_valid_cron_string

from pipelines.deployment import sensor_status

DATASET_CRON_ENV = "SOUNDHARVEST_DATASET_CRON"
INTERVAL_ENV = "SOUNDHARVEST_AUTOMATION_INTERVAL_S"
DEFAULT_DATASET_CRON = "0 3 * * *"  # after the 01:00 harvest and the 02:00 catalog deadline


def dataset_cron() -> str:
    """The snapshot cadence (UTC), read when the definitions load."""
    cron = os.environ.get(DATASET_CRON_ENV, "").strip() or DEFAULT_DATASET_CRON
    if not is_valid_cron_string(cron):
        raise ValueError(f"{DATASET_CRON_ENV}={cron!r}: expected a cron string such as '0 3 * * *'")
    return cron


def automation_interval_s() -> int:
    raw = os.environ.get(INTERVAL_ENV, "").strip() or "30"
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{INTERVAL_ENV}={raw!r}: expected whole seconds >= 1")
    return int(raw)


def features_condition() -> AutomationCondition:
    """Any day whose catalog was updated (not in progress), not only the latest; and on the
    condition's first evaluation, every day whose catalog exists without features.

    This is `eager()` without its `in_latest_time_window()` operand, plus that first sweep:
    `since_last_handled()` counts the first evaluation as handled, so days harvested before
    the daemon's first tick (or before automation was switched on) would otherwise never get
    features. Each day is requested once per trigger: a failed features run is not retried
    in a loop.
    """
    is_due = (
        AutomationCondition.newly_missing() | AutomationCondition.any_deps_updated()
    ).since_last_handled() | (
        AutomationCondition.initial_evaluation() & AutomationCondition.missing()
    )
    return (
        is_due
        & ~AutomationCondition.any_deps_missing()
        & ~AutomationCondition.any_deps_in_progress()
        & ~AutomationCondition.in_progress()
    ).with_label("eager, any day; at first every day without features")


def dataset_condition(cron: str) -> AutomationCondition:
    """At a cron tick, if an upstream day changed since the last request; then held until no
    upstream day is in progress or being requested, and the request resets it."""
    changed = AutomationCondition.any_deps_updated().since_last_handled()
    due = (AutomationCondition.cron_tick_passed(cron, "UTC") & changed).since_last_handled()
    upstream_busy = AutomationCondition.any_deps_match(
        AutomationCondition.in_progress() | AutomationCondition.will_be_requested()
    )
    return (
        due.with_label(f"upstream changed at a tick of {cron}")
        & ~upstream_busy.with_label("an upstream day in progress")
        & ~AutomationCondition.in_progress()
    ).with_label(f"snapshot on {cron} (UTC) when upstream changed")


def with_automation(assets: list[AssetsDefinition]) -> list[AssetsDefinition]:
    """The assets with the ML feed's conditions (the harvest's assets as they are)."""
    conditions = {
        "sound_features": features_condition(),
        "ml_dataset": dataset_condition(dataset_cron()),
    }
    return [
        a.with_attributes(automation_condition=conditions[a.key.to_user_string()])
        if a.key.to_user_string() in conditions
        else a
        for a in assets
    ]


ml_feed_automation = AutomationConditionSensorDefinition(
    "ml_feed_automation",
    target=AssetSelection.assets("sound_features", "ml_dataset"),
    default_status=sensor_status(),
    minimum_interval_seconds=automation_interval_s(),
    description="Features after each catalog day; an ml_dataset snapshot on its cadence.",
)
