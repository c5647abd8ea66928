"""The schedule, the manifest sensor and the pending sweep through Dagster's own contexts.

Each evaluation gets a persistent instance and a fresh context carrying only the cursor the
previous tick returned, as the daemon does after a restart. The clock the sensors read
(`pipelines.sensors.utc_now`) is set per tick.
"""

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from dagster import (
    AssetCheckSeverity,
    DagsterInstance,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from assets.harvest.catalog_rows import parquet_bytes
from assets.harvest.records import read_state
from assets.harvest.sweep import GAVE_UP, DayPending, SweepPolicy, mark_given_up, plan_sweeps
from pipelines import sensors
from pipelines.definitions import defs
from pipelines.schedules import daily_harvest_schedule
from pipelines.sensors import ManifestListingError, manifest_sensor, pending_sweep, prompt_sensor
from resources.storage import Storage
from resources.storage_resource import StorageResource

from support.pipeline_kit import (
    ASSETS,
    local_storage,
    read_catalog,
    resources,
    run_range,
    write_manifest,
)

D1, D2, D3 = "2026-10-01", "2026-10-02", "2026-10-03"


@pytest.fixture
def instance(tmp_path):
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


def at(monkeypatch, when: datetime) -> None:
    monkeypatch.setattr(sensors, "utc_now", lambda: when)


def tick(sensor, instance, storage: StorageResource, cursor: str | None):
    # A new instance object over the same storage: nothing survives but the stored cursor.
    with DagsterInstance.from_ref(instance.get_ref()) as restarted:
        context = build_sensor_context(
            instance=restarted, cursor=cursor, resources={"storage": storage}, definitions=defs
        )
        return sensor.evaluate_tick(context)  # as the daemon does: run requests resolved


def write(path: Path, text: str, mtime: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def requested(result) -> dict[str, str]:
    return {r.partition_key: r.run_key for r in result.run_requests or []}


# -- the schedule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tick_at", "day"),
    [
        (datetime(2026, 11, 21, 1, tzinfo=UTC), "2026-11-20"),
        (datetime(2027, 1, 1, 1), "2026-12-31"),
    ],
)
def test_each_schedule_tick_asks_for_the_day_that_ended(instance, tick_at, day):
    context = build_schedule_context(
        instance=instance,
        scheduled_execution_time=tick_at,
        repository_def=defs.get_repository_def(),
    )

    [request] = daily_harvest_schedule.evaluate_tick(context).run_requests

    assert (request.partition_key, request.run_key) == (day, day)
    job = defs.resolve_job_def("daily_harvest")
    assert day in job.partitions_def.get_partition_keys(current_time=tick_at.replace(tzinfo=UTC))


# -- the manifest sensor ------------------------------------------------------------------------


def test_new_changed_and_unchanged_manifests(instance, tmp_path, monkeypatch):
    at(monkeypatch, datetime(2026, 10, 10, tzinfo=UTC))
    storage, root = local_storage(tmp_path), tmp_path / "manifests"
    write(root / f"{D1}.csv", "run_id\n1001\n", mtime=1_000)
    write(root / D2 / "batch-a.jsonl", '{"run_id": 1002}\n', mtime=1_000)
    write(root / D2 / "_notes" / "ignored.txt", "not a manifest")

    first = tick(manifest_sensor, instance, storage, None)
    again = tick(manifest_sensor, instance, storage, first.cursor)

    assert set(requested(first)) == {D1, D2}
    assert all(r.tags["soundharvest/trigger"] == "manifest" for r in first.run_requests)
    assert not again.run_requests and "no new or changed" in again.skip_message

    write(root / D2 / "batch-b.csv", "run_id\n1003\n")  # a new file for D2
    write(root / f"{D1}.csv", "run_id\n1001\n1004\n", mtime=1_000)  # D1 grew
    changed = tick(manifest_sensor, instance, storage, again.cursor)

    assert set(requested(changed)) == {D1, D2}
    assert requested(changed)[D1] != requested(first)[D1]

    write(root / f"{D1}.csv", "run_id\n1001\n1004\n", mtime=2_000)  # same bytes, rewritten
    touched = tick(manifest_sensor, instance, storage, changed.cursor)

    assert set(requested(touched)) == {D1}


def test_a_day_first_seen_after_its_harvest_is_not_harvested_again(instance, tmp_path, monkeypatch):
    """A new cursor over a catalog written after the manifests (a new instance after a
    harvest, `dg dev` after `make demo`) requests only the days whose manifests are newer."""
    at(monkeypatch, datetime(2026, 10, 10, tzinfo=UTC))
    storage, root, catalog = local_storage(tmp_path), tmp_path / "manifests", tmp_path / "catalog"
    write(root / f"{D1}.csv", "run_id\n1001\n", mtime=1_000)
    write(root / D2 / "a.csv", "run_id\n1002\n", mtime=1_000)
    write(root / D2 / "b.csv", "run_id\n1003\n", mtime=3_000)  # came after D2's catalog
    write(root / f"{D3}.csv", "run_id\n1004\n", mtime=1_000)  # no catalog yet
    for day in (D1, D2):
        write(catalog / "sound_catalog" / f"date={day}" / "part-0.parquet", "x", mtime=2_000)

    first = tick(manifest_sensor, instance, storage, None)

    assert set(requested(first)) == {D2, D3}
    write(root / f"{D1}.csv", "run_id\n1001\n1005\n", mtime=4_000)  # D1 changes later
    again = tick(manifest_sensor, instance, storage, first.cursor)
    assert set(requested(again)) == {D1}


def test_a_repeated_tick_asks_with_the_same_run_key(instance, tmp_path, monkeypatch):
    """A tick whose cursor never got stored asks again, with a run key Dagster already ran."""
    at(monkeypatch, datetime(2026, 10, 10, tzinfo=UTC))
    storage = local_storage(tmp_path)
    write(tmp_path / "manifests" / f"{D1}.csv", "run_id\n1001\n")

    one = tick(manifest_sensor, instance, storage, None)
    two = tick(manifest_sensor, instance, storage, None)

    assert requested(one) == requested(two) and requested(one)[D1].startswith(f"manifest:{D1}:")


def test_a_manifest_for_today_waits_for_the_day_to_end(instance, tmp_path, monkeypatch):
    storage = local_storage(tmp_path)
    write(tmp_path / "manifests" / D3 / "early.csv", "run_id\n1001\n")

    at(monkeypatch, datetime(2026, 10, 3, 12, tzinfo=UTC))  # D3 is today: no partition yet
    today = tick(manifest_sensor, instance, storage, None)
    at(monkeypatch, datetime(2026, 10, 3, 18, tzinfo=UTC))
    later = tick(manifest_sensor, instance, storage, today.cursor)
    at(monkeypatch, datetime(2026, 10, 4, 0, 5, tzinfo=UTC))  # the day has ended
    ended = tick(manifest_sensor, instance, storage, later.cursor)
    after = tick(manifest_sensor, instance, storage, ended.cursor)

    assert not today.run_requests and not later.run_requests
    assert D3 in json.loads(later.cursor)["waiting"] and D3 in later.skip_message
    assert set(requested(ended)) == {D3}
    assert not after.run_requests and json.loads(after.cursor)["waiting"] == {}


def test_a_malformed_manifest_is_requested_and_left_to_the_run(instance, tmp_path, monkeypatch):
    at(monkeypatch, datetime(2026, 10, 10, tzinfo=UTC))
    write(tmp_path / "manifests" / D1 / "broken.jsonl", '{"run_id": 1\n')

    result = tick(manifest_sensor, instance, local_storage(tmp_path), None)

    assert set(requested(result)) == {D1}


def test_a_listing_error_fails_the_tick_and_keeps_the_cursor(
    instance, tmp_path, monkeypatch, s3_bucket
):
    at(monkeypatch, datetime(2026, 10, 10, tzinfo=UTC))
    monkeypatch.setenv(
        "SOUNDHARVEST_STORAGE_OPTIONS", json.dumps({"s3": {"endpoint_url": s3_bucket.endpoint_url}})
    )
    storage = StorageResource(manifest_root=f"{s3_bucket.url}/manifests")
    s3 = Storage(f"{s3_bucket.url}/manifests")
    s3.write_bytes(b"run_id\n1001\n", f"{D1}.csv")
    first = tick(manifest_sensor, instance, storage, None)
    assert set(requested(first)) == {D1}

    s3.write_bytes(b"run_id\n1002\n", f"{D2}.csv")
    missing = StorageResource(manifest_root="s3://no-such-bucket-soundharvest/manifests")
    with pytest.raises(ManifestListingError, match="no-such-bucket-soundharvest"):
        tick(manifest_sensor, instance, missing, first.cursor)
    # The failed tick returned no cursor: the next one starts from the last good one.
    recovered = tick(manifest_sensor, instance, storage, first.cursor)

    assert set(requested(recovered)) == {D2}


# -- the prompt sensor --------------------------------------------------------------------------


def test_new_and_changed_prompt_sheets_ask_for_the_daily_job(instance, tmp_path, monkeypatch):
    """The manifest sensor's rules over the prompt root: a day runs when its sheets appear or
    change, a day first seen whose generations were recorded after its sheets does not."""
    at(monkeypatch, datetime(2026, 10, 10, tzinfo=UTC))
    storage = StorageResource(
        prompt_root=str(tmp_path / "prompts"), catalog_root=str(tmp_path / "catalog")
    )
    root, state = tmp_path / "prompts", tmp_path / "catalog" / "_state" / "generation_rows"
    write(root / f"{D1}.csv", "prompt\nrain\n", mtime=1_000)
    write(root / D2 / "sheet.jsonl", '{"prompt": "wind"}\n', mtime=1_000)
    write(root / f"{D3}.csv", "prompt\nhail\n", mtime=3_000)
    write(state / f"date={D2}" / "part-0.parquet", "x", mtime=2_000)  # D2 already generated
    write(state / f"date={D3}" / "part-0.parquet", "x", mtime=2_000)  # before D3's sheet

    first = tick(prompt_sensor, instance, storage, None)
    assert set(requested(first)) == {D1, D3}
    assert all(r.tags["soundharvest/trigger"] == "prompts" for r in first.run_requests)
    assert all(r.run_key.startswith("prompts:") for r in first.run_requests)
    assert all(r.job_name in (None, "daily_harvest") for r in first.run_requests)
    again = tick(prompt_sensor, instance, storage, first.cursor)
    assert not again.run_requests and "no new or changed prompt sheets" in again.skip_message

    write(root / D2 / "sheet.jsonl", '{"prompt": "wind"}\n{"prompt": "snow"}\n', mtime=4_000)
    changed = tick(prompt_sensor, instance, storage, again.cursor)
    assert set(requested(changed)) == {D2}


def test_the_daily_job_submits_the_sheets_before_it_harvests():
    job = defs.resolve_job_def("daily_harvest")
    assert "sound_generations" in {node.name for node in job.graph.node_defs}


# -- the pending sweep --------------------------------------------------------------------------


def test_sweeps_come_back_after_growing_intervals_then_give_up():
    policy = SweepPolicy(
        (timedelta(hours=1), timedelta(hours=4), timedelta(days=1)), timedelta(days=3)
    )
    pending = {D1: DayPending(pending=2, given_up=0)}
    start = datetime(2026, 10, 2, 1, 10, tzinfo=UTC)  # after D1's daily run
    state: dict = {}
    asked = []
    for minutes in range(0, 5 * 24 * 60, 10):  # a tick every 10 minutes for five days
        now = start + timedelta(minutes=minutes)
        sweeps, state = plan_sweeps(pending, state, now, policy)
        asked += [(now, s.run_key) for s in sweeps]

    times = [now for now, _ in asked]
    gaps = [b - a for a, b in zip([start, *times], times, strict=False)]
    keys = [key for _, key in asked]
    assert keys[:5] == [f"sweep:{D1}:{n}" for n in (1, 2, 3, 4)] + [f"sweep:{D1}:final"]
    assert set(keys[5:]) == {f"sweep:{D1}:final"}  # asked again each tick, one run key
    assert gaps[:4] == [
        timedelta(hours=1),
        timedelta(hours=4),
        timedelta(days=1),
        timedelta(days=1),
    ]
    assert times[4] == datetime(2026, 10, 5, tzinfo=UTC)  # three days after D1 ended

    done = {D1: DayPending(pending=2, given_up=2)}  # the last run wrote that it gave up
    assert plan_sweeps(done, state, times[4] + timedelta(days=1), policy) == ([], {})


def test_by_default_a_day_still_generating_is_swept_within_twenty_minutes():
    # Generations and runs just finishing are ready in minutes: under the daemon a new prompt
    # sheet's clips must not wait an hour for the sweep to fetch them.
    policy = SweepPolicy.from_env({})
    pending = {D1: DayPending(pending=5, given_up=0)}
    harvested = datetime(2026, 10, 2, 1, 3, tzinfo=UTC)
    state: dict = {}
    tick = timedelta(minutes=10) - timedelta(milliseconds=300)  # the daemon's ticks drift
    for n in range(6):
        now = harvested + timedelta(minutes=7) + n * tick  # the first tick after the harvest
        sweeps, state = plan_sweeps(pending, state, now, policy)
        if sweeps:
            break
    assert [s.run_key for s in sweeps] == [f"sweep:{D1}:1"]
    assert now - harvested <= timedelta(minutes=20)


def write_catalog(storage: StorageResource, day: str, statuses: list[str], error: str = "") -> None:
    rows = pd.DataFrame(
        {
            "run_id": range(1, len(statuses) + 1),
            "status": statuses,
            "error": [None if s == "ok" else error or f"{s} for now" for s in statuses],
        }
    )
    storage.catalog().write_bytes(parquet_bytes(rows), f"sound_catalog/date={day}/part-0.parquet")


def test_the_sweep_sensor_across_ticks(instance, tmp_path, monkeypatch):
    monkeypatch.setenv("SOUNDHARVEST_SWEEP_INTERVALS", "1h,4h")
    monkeypatch.setenv("SOUNDHARVEST_GIVE_UP_AFTER_DAYS", "2")
    storage = local_storage(tmp_path)
    write_catalog(storage, D1, ["ok", "pending", "pending"])
    write_catalog(storage, D2, ["ok", "failed"])  # nothing to wait for
    write_catalog(storage, "2026-09-01", ["pending"])  # long past the horizon: not read
    ticks, cursor = [], None
    for when in ("02T01:10", "02T01:50", "02T02:15", "02T06:20", "02T10:00", "02T10:30"):
        at(monkeypatch, datetime.fromisoformat(f"2026-10-{when}+00:00"))
        result = tick(pending_sweep, instance, storage, cursor)
        ticks.append(requested(result))
        cursor = result.cursor

    assert ticks == [
        {},
        {},
        {D1: f"sweep:{D1}:1"},
        {D1: f"sweep:{D1}:2"},
        {},
        {D1: f"sweep:{D1}:3"},
    ]

    at(monkeypatch, datetime(2026, 10, 4, 0, 1, tzinfo=UTC))  # two days after D1 ended
    final = tick(pending_sweep, instance, storage, cursor)
    assert requested(final) == {D1: f"sweep:{D1}:final"}
    write_catalog(storage, D1, ["ok", "pending", "pending"], error=f"{GAVE_UP}: ...")
    after = tick(pending_sweep, instance, storage, final.cursor)
    assert not after.run_requests and json.loads(after.cursor) == {"days": {}}


def test_only_the_final_sweep_gives_up_and_the_answer_stays_at_the_end():
    policy = SweepPolicy(give_up_after=timedelta(days=7))
    catalog = pd.DataFrame(
        {
            "run_id": pd.array([1, 2, 3, 4, None], dtype="Int64"),
            "task_id": [None, None, None, None, "never-resolved"],
            "status": ["ok", "pending", "failed", "pending", "pending"],
            "error": [None, "API status PENDING", "x", "no result yet", "task status PENDING"],
        }
    )
    past = datetime(2026, 10, 20, tzinfo=UTC)

    early = mark_given_up(
        catalog, D1, datetime(2026, 10, 8, 23, tzinfo=UTC), policy, final_sweep=True
    )
    by_hand = mark_given_up(catalog, D1, past, policy)
    final = mark_given_up(catalog, D1, past, policy, final_sweep=True)
    kept = mark_given_up(catalog, D1, past, policy, given_up={"run_id 2"})

    assert early.equals(catalog) and by_hand.equals(catalog)  # nobody gave up on these
    gave_up = final["error"].str.startswith(GAVE_UP).tolist()
    assert gave_up == [False, True, False, True, True]  # every pending row, tasks too
    assert final.loc[1, "error"].startswith(f"{GAVE_UP}: still pending 18 days after the day")
    assert final.loc[1, "error"].endswith("last answer: API status PENDING")
    assert pd.isna(final.loc[0, "error"]) and final.loc[2, "error"] == "x"
    assert kept["error"].str.startswith(GAVE_UP).tolist() == [False, True, False, False, False]
    again = mark_given_up(final, D1, past + timedelta(days=1), policy, final_sweep=True)
    assert again["error"].equals(final["error"])


def pending_check(result):
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "no_pending_runs"]
    return check


def test_the_catalog_warns_of_pending_days_naming_them(sandbox, tmp_path):
    day = "2026-11-01"  # the sandbox leaves ids ending in 7 pending
    write_manifest(tmp_path / "manifests", day, [1001, 1007, 1017])
    storage = local_storage(tmp_path)

    result = materialize(ASSETS, partition_key=day, resources=resources(sandbox, storage))

    check = pending_check(result)
    assert not check.passed and check.severity == AssetCheckSeverity.WARN
    assert check.description == f"2 pending rows on 1 day: {day} (2)"
    [record] = check.metadata["pending rows by day"].records
    assert record.data == {"day": day, "pending rows": 2}


def test_a_reason_says_soundharvest_gave_up_only_once_the_sweep_did(sandbox, tmp_path, monkeypatch):
    """Was: a day past the horizon, rerun by hand, said "soundharvest gave up waiting" at once,
    though no sweep had run on it (the sweep starts stopped)."""
    day = "2026-11-01"  # long past a 1-day horizon; ids ending in 7 stay pending
    write_manifest(tmp_path / "manifests", day, [1001, 1007, 1017])
    storage = local_storage(tmp_path)
    monkeypatch.setenv("SOUNDHARVEST_GIVE_UP_AFTER_DAYS", "1")

    def run(**tags: str) -> pd.DataFrame:
        """The pending rows' errors in the catalog, beside the answers the run got (ledger)."""
        result = materialize(
            ASSETS, partition_key=day, resources=resources(sandbox, storage), tags=tags
        )
        assert result.success
        catalog = read_catalog(storage, day).set_index("run_id")["error"]
        ledger = read_state(storage.catalog(), "sound_files", day).set_index("run_id")["error"]
        assert pd.isna(catalog[1001])
        return pd.DataFrame({"said": catalog, "answer": ledger}).loc[[1007, 1017]]

    first, rerun = run(), run()
    final = run(
        **{"dagster/run_key": f"sweep:{day}:final", "soundharvest/trigger": "pending-sweep"}
    )
    rerun_after = run()
    monkeypatch.setenv("SOUNDHARVEST_GIVE_UP_AFTER_DAYS", "36500")  # the sweep would come back
    moved_out = run()

    for rows in (first, rerun, moved_out):
        assert rows["said"].tolist() == rows["answer"].tolist()  # the API's answer, nothing more
    for rows in (final, rerun_after):  # the rerun tried them again: the sweep still will not
        assert rows["said"].str.startswith(f"{GAVE_UP}: still pending").all()
        for said, answer in rows.itertuples(index=False):
            assert said.endswith(f"last answer: {answer}")
        assert not rows["answer"].str.contains(GAVE_UP).any()  # only the catalog says it


def test_a_failed_range_keeps_the_give_up_text_of_its_completed_days(
    sandbox, tmp_path, monkeypatch
):
    """sound_catalog does not run after sound_files fails, so sound_files publishes the days
    it completed itself: days the sweep gave up on must keep saying so."""
    monkeypatch.setenv("SOUNDHARVEST_GIVE_UP_AFTER_DAYS", "1")
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    for day in days:  # the sandbox leaves ids ending in 7 pending
        write_manifest(tmp_path / "manifests", day, [1001, 1007])
    storage = local_storage(tmp_path)
    [_, sound_files, sound_catalog] = ASSETS
    for day in (days[0], days[2]):  # the sweep's last runs; the middle day's manifest is lost
        final = {"dagster/run_key": f"sweep:{day}:final"}
        materialize(ASSETS, partition_key=day, resources=resources(sandbox, storage), tags=final)
        assert read_catalog(storage, day).set_index("run_id").loc[1007, "error"].startswith(GAVE_UP)

    result = run_range(
        sandbox,
        storage,
        days[0],
        days[-1],
        assets=[sound_files, sound_catalog],
        raise_on_error=False,
    )

    assert not result.success
    assert not result.get_asset_check_evaluations()  # sound_catalog itself never ran
    for day in (days[0], days[2]):
        catalog = read_catalog(storage, day).set_index("run_id")
        assert catalog.loc[1001, "status"] == "ok"
        assert catalog.loc[1007, "status"] == "pending"
        assert catalog.loc[1007, "error"].startswith(f"{GAVE_UP}: still pending")
        assert catalog.loc[1007, "attempts"] == 2  # tried again by the range
