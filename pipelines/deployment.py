"""What a deployment chooses when the code location loads: the executor, the backfill size, and
whether the schedule and sensors start running.

Both are structural (Dagster reads them from the definitions, not from run config), so they
come from the environment every process of a deployment shares:

- `SOUNDHARVEST_EXECUTOR`: `in_process` (default) or `celery`, whose steps run on Celery
  workers (`deploy/celery.yaml`) reached through `CELERY_BROKER_URL` and
  `CELERY_RESULT_BACKEND` (e.g. `redis://redis:6379/0` and `.../1`).
- `SOUNDHARVEST_BACKFILL_DAYS_PER_RUN`: N makes a UI/daemon backfill run N days per run;
  unset (default), a backfill runs its whole range in one run.
- `SOUNDHARVEST_AUTOMATION`: `on` (default): the daily schedule, the manifest sensor, the
  pending sweep, the ML feed's automation and the freshness sensor start running with the
  daemon, since a pipeline that waits for switches in the UI does not run unattended; `off`:
  they start stopped (a staging copy, a laptop). Either way the UI's toggles win once used.
"""

import os
from collections.abc import Sequence

from dagster import (
    AssetsDefinition,
    BackfillPolicy,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    ExecutorDefinition,
    in_process_executor,
)

AUTOMATION_ENV = "SOUNDHARVEST_AUTOMATION"


def executor_from_env() -> ExecutorDefinition:
    # Steps of one run follow each other in process by default; several days run in parallel
    # as separate runs, where the multiprocess executor's ~2 s per step would buy nothing.
    name = os.environ.get("SOUNDHARVEST_EXECUTOR", "in_process").strip() or "in_process"
    if name == "in_process":
        return in_process_executor
    if name == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(
            {"broker": {"env": "CELERY_BROKER_URL"}, "backend": {"env": "CELERY_RESULT_BACKEND"}},
            name="celery",
        )
    raise ValueError(f"SOUNDHARVEST_EXECUTOR={name!r}: expected in_process or celery")


def backfill_policy_from_env() -> BackfillPolicy:
    """single_run unless SOUNDHARVEST_BACKFILL_DAYS_PER_RUN says how many days a run takes.

    `dg launch --partition-range` needs single_run on every selected asset
    (Dagster 1.13 refuses multi_run there, whatever N), so the default keeps CLI ranges; a
    deployment with a daemon sets N so that a year of backfill becomes runs of N days.
    """
    raw = os.environ.get("SOUNDHARVEST_BACKFILL_DAYS_PER_RUN", "").strip()
    if not raw:
        return BackfillPolicy.single_run()
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"SOUNDHARVEST_BACKFILL_DAYS_PER_RUN={raw!r}: expected a number >= 1")
    return BackfillPolicy.multi_run(int(raw))


def with_backfill_policy(assets: Sequence[AssetsDefinition]) -> list[AssetsDefinition]:
    """The partitioned assets with the deployment's backfill policy (the others as they are)."""
    policy = backfill_policy_from_env()
    return [
        a.with_attributes(backfill_policy=policy) if a.partitions_def is not None else a
        for a in assets
    ]


def automation_on() -> bool:
    """Whether schedules and sensors start running (`SOUNDHARVEST_AUTOMATION`, default on)."""
    raw = os.environ.get(AUTOMATION_ENV, "").strip().lower() or "on"
    if raw not in ("on", "off"):
        raise ValueError(f"{AUTOMATION_ENV}={raw!r}: expected on or off")
    return raw == "on"


def sensor_status() -> DefaultSensorStatus:
    return DefaultSensorStatus.RUNNING if automation_on() else DefaultSensorStatus.STOPPED


def schedule_status() -> DefaultScheduleStatus:
    return DefaultScheduleStatus.RUNNING if automation_on() else DefaultScheduleStatus.STOPPED
