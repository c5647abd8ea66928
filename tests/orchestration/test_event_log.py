"""`pipelines/event_log.py`: a range run stores the same events as Dagster's own SQLite event log,
in a few transactions instead of two per event; steps of many processes never share a slot.

The range tests run one small range on two fresh SQLite instances: the stock one (no
`event_log_storage`, Dagster's batching off) and the project's (`pipelines/dagster.yaml`); what
each stored is read back through the instance, as the UI and the automation read it.
"""

import multiprocessing
import os
import shutil
from collections import Counter

import pytest
import sqlalchemy
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetRecordsFilter,
    BackfillPolicy,
    DagsterEventType,
    DagsterInstance,
    DailyPartitionsDefinition,
    EventRecordsFilter,
    MaterializeResult,
    MetadataValue,
    asset,
    materialize,
)

from assets.partitions import run_tags
from pipelines.event_log import BATCH_SIZE_ENV, LocalEventLogStorage
from pipelines.instance_home import prepare
from resources.camb.limits import POOL, pool_limit
from resources.error_kinds import OperatorError

from support import PROJECT

DAYS = DailyPartitionsDefinition(start_date="2025-01-01")
FIRST, LAST = "2025-01-01", "2025-01-12"
BROKEN_DAY = "2025-01-05"


@asset(
    partitions_def=DAYS,
    backfill_policy=BackfillPolicy.single_run(),
    check_specs=[AssetCheckSpec("has_rows", asset="upstream")],
)
def upstream(context: AssetExecutionContext) -> MaterializeResult:
    for day in context.partition_keys:  # each day's own figures, as assets/steps/metadata.py does
        context.add_asset_metadata({"rows": MetadataValue.int(int(day[-2:]))}, partition_key=day)
    return MaterializeResult(
        metadata={"days": len(context.partition_keys)},
        check_results=[AssetCheckResult(passed=True)],
    )


@asset(partitions_def=DAYS, backfill_policy=BackfillPolicy.single_run(), deps=[upstream])
def downstream(context: AssetExecutionContext) -> MaterializeResult:
    return MaterializeResult(metadata={"days": len(context.partition_keys)})


@asset(partitions_def=DAYS, backfill_policy=BackfillPolicy.single_run())
def partly_broken(context: AssetExecutionContext) -> None:
    """Reports its good days one by one, then fails, as assets/steps/days.py does on a bad day."""
    for day in context.partition_keys:
        if day != BROKEN_DAY:
            context.log_event(AssetMaterialization("partly_broken", partition=day))
    raise RuntimeError(f"{BROKEN_DAY} is broken")


def fresh_home(path, project_config: bool, monkeypatch) -> DagsterInstance:
    """A new SQLite instance at `path`: the project's config, or Dagster's stock storage."""
    path.mkdir()
    if project_config:
        shutil.copyfile(PROJECT / "pipelines" / "dagster.yaml", path / "dagster.yaml")
        monkeypatch.delenv(BATCH_SIZE_ENV, raising=False)  # the storage turns batching on
    else:
        monkeypatch.setenv(BATCH_SIZE_ENV, "0")  # Dagster's default: no batches
    monkeypatch.setenv("DAGSTER_HOME", str(path))  # what the project's config reads
    return DagsterInstance.from_config(str(path))


def commits_during(run):
    """Transactions SQLAlchemy committed (on any engine) while `run()` ran, and its result."""
    commits = []

    def count(_connection):
        commits.append(1)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "commit", count)
    try:
        result = run()
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "commit", count)
    return len(commits), result


def stored(instance: DagsterInstance, assets) -> dict:
    """What the UI and the automation read of each asset, run ids aside."""
    seen = {}
    for key in (a.key for a in assets):
        materializations = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key), limit=1000
        ).records
        planned = instance.get_event_records(
            EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION_PLANNED, asset_key=key)
        )
        record = instance.get_asset_records([key])
        seen[key.to_user_string()] = {
            "materialized": sorted(instance.get_materialized_partitions(key)),
            "metadata": sorted(
                (r.partition_key, repr(sorted(r.asset_materialization.metadata.items())))
                for r in materializations
            ),
            "planned": sorted(
                r.event_log_entry.dagster_event.event_specific_data.partition for r in planned
            ),
            "last": record[0].asset_entry.last_materialization.dagster_event.partition
            if record
            else None,
            "checks": [
                (c.status.value, c.event.dagster_event.event_type_value if c.event else None)
                for spec in getattr(assets_def(assets, key), "check_specs", [])
                for c in instance.event_log_storage.get_asset_check_execution_history(
                    spec.key, limit=10
                )
            ],
        }
    return seen


def assets_def(assets, key: AssetKey):
    return next(a for a in assets if a.key == key)


def run_events(instance: DagsterInstance, run_id: str) -> Counter:
    return Counter(
        (e.dagster_event.event_type_value, e.dagster_event.partition)
        for e in instance.all_logs(run_id)
        if e.is_dagster_event
    )


@pytest.mark.parametrize(
    "assets", [[upstream, downstream], [partly_broken]], ids=["range", "failing range"]
)
def test_a_range_run_stores_what_the_stock_storage_stores(tmp_path, monkeypatch, assets):
    outcome = {}
    for name, project_config in (("stock", False), ("project", True)):
        with fresh_home(tmp_path / name, project_config, monkeypatch) as instance:
            if project_config:
                storage = instance.event_log_storage
                assert isinstance(storage, LocalEventLogStorage)
                assert (tmp_path / name / "history" / "runs" / "index.db").exists()
            commits, result = commits_during(
                lambda instance=instance: materialize(
                    assets, instance=instance, tags=run_tags(FIRST, LAST), raise_on_error=False
                )
            )
            outcome[name] = (
                commits,
                stored(instance, assets),
                run_events(instance, result.run_id),
                result.success,
            )
    (stock_commits, stock, stock_events, stock_ok), (commits, project, events, ok) = (
        outcome["stock"],
        outcome["project"],
    )
    assert ok == stock_ok == (assets != [partly_broken])
    assert project == stock
    assert events == stock_events
    days = 12
    if ok:
        assert stock["upstream"]["materialized"] == sorted(DAYS.get_partition_keys()[:days])
        assert dict(stock["upstream"]["metadata"])[LAST].count("rows") == 1
    else:
        assert BROKEN_DAY not in stock["partly_broken"]["materialized"]
        assert len(stock["partly_broken"]["materialized"]) == days - 1
    # Stock: two commits per asset event (the run's file, then the index). The planned events
    # of a run come as one batch: two commits in all. So do a range output's materializations.
    planned = sum(n for (kind, _), n in events.items() if kind == "ASSET_MATERIALIZATION_PLANNED")
    assert planned == days * len(assets)
    assert stock_commits - commits >= 2 * (planned - 1), (commits, stock_commits)
    if ok:
        assert commits < stock_commits / 2, (commits, stock_commits)


def test_an_instance_opened_by_path_under_another_home_is_refused(tmp_path, monkeypatch):
    """`{env: DAGSTER_HOME}` names the process's home: opening another instance by path must
    not put its events there, and says what to set."""
    home = prepare(tmp_path / "home", PROJECT / "pipelines" / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "elsewhere"))
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(OperatorError) as refused:
        DagsterInstance.from_config(str(home))
    assert str(refused.value).endswith(f"export DAGSTER_HOME={home}")


def claim_at_once(home: str, start, run_id: str, claims) -> None:
    """One process: open the instance, wait for the others, claim a `camb_api` slot."""
    # A fork server keeps the environment it started with (perhaps before this test's).
    os.environ["DAGSTER_HOME"] = home
    with DagsterInstance.from_config(home) as instance:
        start.wait()
        status = instance.event_log_storage.claim_concurrency_slot(POOL, run_id, "sound_files")
        claims.put(status.is_claimed)


def test_steps_starting_at_once_in_many_processes_never_share_a_slot(tmp_path, monkeypatch):
    """Six processes claim a slot of the pool of two at the same instant, ten times over.
    (Dagster's own SQLite claim let five of them in, in this same harness.)"""
    home = prepare(tmp_path / "home", PROJECT / "pipelines" / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    # Not fork: a test process that ran others holds threads (and their locks), and a forked
    # child of it can hang on one. A fork server starts clean and forks every claimant.
    processes_ = multiprocessing.get_context("forkserver")
    processes_.set_forkserver_preload(["dagster", __name__])
    most = 0
    with DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default(POOL)
        assert pool_limit(instance) == 2
        for round_ in range(10):
            start, claims = processes_.Barrier(6), processes_.Queue()
            run_ids = [f"round-{round_}-{n}" for n in range(6)]
            workers = [
                processes_.Process(target=claim_at_once, args=(str(home), start, run_id, claims))
                for run_id in run_ids
            ]
            for worker in workers:
                worker.start()
            claimed = sum(claims.get(timeout=60) for _ in workers)
            for worker in workers:
                worker.join(timeout=60)
                assert worker.exitcode == 0
            most = max(most, claimed)
            assert claimed >= 1  # someone always gets a free slot
            for run_id in run_ids:
                storage.free_concurrency_slots_for_run(run_id)
    assert most == 2
