"""`deploy/dagster.yaml` against a real PostgreSQL server on loopback.

The instance loads with every setting the deployment relies on, a harvest's run and events
land in PostgreSQL, pool limits live there for every process to share, and the password
stays in the environment.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from dagster import DagsterInstance
from dagster._serdes import serialize_value

from resources.camb.limits import POOL, pool_limit

from support import PROJECT
from support.pipeline_kit import local_storage, read_catalog, run_range, write_manifest

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_home(postgres_server, tmp_path, monkeypatch) -> tuple[Path, str]:
    """A DAGSTER_HOME holding deploy/dagster.yaml, and a fresh database it points at."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    db_name = postgres_server.create_database("dagster")
    for name, value in postgres_server.env(db_name).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home, postgres_server.url(db_name)


def query(url: str, sql: str, *args: object) -> list[tuple]:
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(sql, args)
        return cursor.fetchall()


def test_the_deployment_instance_loads_with_its_settings(pg_home, postgres_server):
    home, _ = pg_home
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs == 8
        assert concurrency.pool_config.default_pool_limit == 4
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 300
        # Run monitoring sees a dead run worker through the project's launcher (dead runs).
        assert type(instance.run_launcher).__name__ == "HostRunLauncher"
        assert instance.run_launcher.supports_check_run_worker_health
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        # What travels to run workers and Celery tasks names the variable, not the password.
        ref = serialize_value(instance.get_ref())
        assert "DAGSTER_PG_PASSWORD" in ref and postgres_server.password not in ref


def env_example(name: str) -> str:
    """A variable's value in deploy/env.example."""
    for line in (PROJECT / "deploy" / "env.example").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].split("#")[0].strip()
    raise AssertionError(f"{name} is not in deploy/env.example")


def test_a_harvest_lands_in_postgres_and_pool_limits_are_shared(
    pg_home, sandbox, tmp_path, monkeypatch
):
    home, url = pg_home
    days = ("2026-11-01", "2026-11-02")
    for offset, day in enumerate(days):
        write_manifest(
            tmp_path / "manifests", day, list(range(1000 + 20 * offset, 1012 + 20 * offset))
        )
    storage = local_storage(tmp_path)
    # As deployed: a range's materializations reach PostgreSQL as one batch per output.
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", env_example("DAGSTER_EVENT_BATCH_SIZE"))

    with DagsterInstance.from_config(str(home)) as instance:
        result = run_range(sandbox, storage, *days, instance=instance)
        assert result.success
        assert pool_limit(instance) == 4  # the default of deploy/dagster.yaml

    assert [len(read_catalog(storage, day)) for day in days] == [12, 12]
    [(status,)] = query(url, "select status from runs where run_id = %s", result.run_id)
    assert status == "SUCCESS"
    [(events,)] = query(url, "select count(*) from event_logs where run_id = %s", result.run_id)
    assert events > 10
    materialized = query(
        url,
        "select distinct partition from event_logs where run_id = %s"
        " and dagster_event_type = 'ASSET_MATERIALIZATION' order by partition",
        result.run_id,
    )
    assert materialized == [(day,) for day in days]
    # The pool and its limit live in PostgreSQL, where every process counts its slots.
    limits = 'select "limit" from concurrency_limits where concurrency_key = %s'
    assert query(url, limits, POOL) == [(4,)]

    # The operator's command sets the limit every process then reads (and the limiter splits).
    subprocess.run(
        [sys.executable, "-m", "dagster", "instance", "concurrency", "set", POOL, "3"],
        check=True,
        capture_output=True,
    )
    with DagsterInstance.from_config(str(home)) as instance:
        assert pool_limit(instance) == 3
