"""The three assets materialized in process with Dagster, against the sandbox over loopback."""

import hashlib
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest
from dagster import AssetCheckSeverity, AssetKey, DagsterInstance, materialize

from assets.harvest.catalog_publish import check_day
from assets.harvest.records import state_relpath
from resources.storage import Storage
from resources.storage_resource import StorageResource
from sandbox import run_state

from support.pipeline_kit import (
    ASSETS,
    DAY,
    catalog_path,
    failure_messages,
    local_storage,
    read_catalog,
    resources,
    run,
    run_range,
    step_events,
    write_manifest,
)

RANGE = ["2026-11-01", "2026-11-02", "2026-11-03"]


def test_a_day_becomes_files_and_a_catalog(sandbox, tmp_path):
    run_ids = list(range(1090, 1115))  # ready, pending, failed, a wrong-type run
    bad_rows = (
        "12a,bad id,sound,1.0,demo\n-5,negative,sound,1.0,demo\n1090,duplicate,sound,1,demo\n"
    )
    manifest = write_manifest(tmp_path / "manifests", DAY, run_ids, bad_rows)
    storage = local_storage(tmp_path)

    result = run(sandbox, storage)

    assert result.success
    catalog = read_catalog(storage)
    assert len(catalog) == len(run_ids) + 3
    assert "date" not in catalog.columns  # the day lives in the path only
    rejected = catalog[catalog.status == "rejected"]
    assert sorted(rejected.error.str.extract(r"^line (\d+)")[0].astype(int)) == [27, 28, 29]
    assert any("not an integer" in e for e in rejected.error)
    assert any("duplicate of run_id 1090" in e for e in rejected.error)
    live = catalog[catalog.status != "rejected"].set_index("run_id")
    for run_id in run_ids:
        expected = {"ready": "ok", "pending": "pending"}.get(run_state(run_id), "failed")
        assert live.loc[run_id, "status"] == expected, run_id
    for row in live[live.status == "ok"].itertuples():
        data = Path(row.uri).read_bytes()
        assert Path(row.uri).is_absolute() and row.uri.endswith(f"/{DAY}/{row.Index}.wav")
        assert (len(data), hashlib.sha256(data).hexdigest()) == (row.size_bytes, row.sha256)
        assert data[:4] == b"RIFF" and row.sample_rate > 0 and row.frames > 0
        assert row.attempts == 1 and row.manifest == str(manifest)
    assert set(live.loc[live.status == "ok", "source_format"]) == {"WAV", "FLAC", "MP3"}
    assert (
        live.loc[1091, "prompt"] == "sound 1091" and '"project": "demo"' in live.loc[1091, "extra"]
    )
    checks = result.get_asset_check_evaluations()
    assert all(c.passed for c in checks if c.severity == AssetCheckSeverity.ERROR)
    assert sandbox.stats()["downloads_with_api_key"] == 0


def test_a_rerun_fetches_nothing_that_is_stored(sandbox, tmp_path):
    run_ids = list(range(1200, 1230))
    write_manifest(tmp_path / "manifests", DAY, run_ids)
    storage = local_storage(tmp_path)
    assert run(sandbox, storage).success
    first = read_catalog(storage).set_index("run_id")
    sandbox.reset()

    assert run(sandbox, storage).success

    second = read_catalog(storage).set_index("run_id")
    assert sandbox.stats()["downloads"] == 0
    not_ok = second.status != "ok"
    assert (second.loc[~not_ok, "attempts"] == 1).all()  # kept, not tried again
    assert (second.loc[not_ok, "attempts"] == 2).all()  # pending and failed: tried again
    pd.testing.assert_series_equal(first.sha256, second.sha256)


def test_a_rerun_of_an_unchanged_day_rewrites_no_record(sandbox, tmp_path):
    """Manifest state, files ledger and catalog keep their inodes: nothing was rewritten."""
    run_ids = [i for i in range(1240, 1290) if run_state(i) == "ready"][:10]
    write_manifest(tmp_path / "manifests", DAY, run_ids)
    storage = local_storage(tmp_path)
    assert run(sandbox, storage).success
    catalog = storage.catalog()
    records = [
        Path(catalog.path(relpath))
        for relpath in (
            state_relpath("run_manifest", DAY),
            state_relpath("sound_files", DAY),
            f"sound_catalog/date={DAY}/part-0.parquet",
        )
    ]
    stamps = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in records]
    sandbox.reset()

    assert run(sandbox, storage).success

    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in records] == stamps
    assert sandbox.stats()["downloads"] == 0
    write_manifest(tmp_path / "manifests", DAY, [*run_ids, 1239])  # one more run: rewritten
    assert run(sandbox, storage).success
    assert all(p.stat().st_ino != stamp[0] for p, stamp in zip(records, stamps, strict=True))


def test_files_without_a_record_are_adopted_and_missing_files_fetched(sandbox, tmp_path):
    run_ids = list(range(1300, 1320))
    write_manifest(tmp_path / "manifests", DAY, run_ids)
    storage = local_storage(tmp_path)
    assert run(sandbox, storage).success
    first = read_catalog(storage).set_index("run_id")
    # A crash between publishing files and recording them: the ledger is gone.
    Path(storage.catalog().path(state_relpath("sound_files", DAY))).unlink()
    lost = first[first.status == "ok"].index[0]
    Path(first.loc[lost, "uri"]).unlink()
    sandbox.reset()

    assert run(sandbox, storage).success

    second = read_catalog(storage).set_index("run_id")
    assert sandbox.stats()["downloads"] == 1  # only the file that really went missing
    pd.testing.assert_series_equal(first.sha256, second.sha256)
    assert (second.status == first.status).all()


def test_an_unparsable_manifest_fails_naming_file_and_line(sandbox, tmp_path):
    day_dir = tmp_path / "manifests" / DAY
    day_dir.mkdir(parents=True)
    (day_dir / "batch.jsonl").write_text('{"run_id": 1001}\n{"run_id": 1002\n')
    storage = local_storage(tmp_path)

    result = run(sandbox, storage, raise_on_error=False)

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert "batch.jsonl" in message and "line 2" in message
    assert sandbox.stats()["api_requests"] == 0
    assert not storage.catalog().exists(f"sound_catalog/date={DAY}/part-0.parquet")


def test_a_range_of_days_runs_in_one_step(sandbox, tmp_path):
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    for offset, day in enumerate(days):
        write_manifest(
            tmp_path / "manifests", day, list(range(1400 + 10 * offset, 1405 + 10 * offset))
        )
    storage = local_storage(tmp_path)

    result = run_range(sandbox, storage, days[0], days[-1])

    assert result.success
    dataset = ds.dataset(storage.catalog().path("sound_catalog"), partitioning="hive")
    table = dataset.to_table().to_pandas()
    assert sorted(table["date"].astype(str).unique()) == days
    assert len(table) == 15


def test_s3_storage_and_a_download_dying_mid_stream(sandbox, tmp_path, s3_bucket, monkeypatch):
    monkeypatch.setenv(
        "SOUNDHARVEST_STORAGE_OPTIONS", f'{{"s3": {{"endpoint_url": "{s3_bucket.endpoint_url}"}}}}'
    )
    run_ids = list(range(1500, 1520))
    write_manifest(tmp_path / "manifests", DAY, run_ids)
    storage = StorageResource(
        manifest_root=str(tmp_path / "manifests"),
        audio_root=f"{s3_bucket.url}/audio",
        catalog_root=f"{s3_bucket.url}/catalog",
    )
    sandbox.set_faults(truncate_rate=1.0)  # every download dies mid-stream

    assert run(sandbox, storage).success

    catalog = read_catalog(storage)
    assert set(catalog.status) <= {"failed", "pending"}
    assert not [key for key in s3_bucket.keys() if key.startswith("audio/")]  # noqa: SIM118
    assert not s3_bucket.pending_uploads()

    sandbox.set_faults(truncate_rate=0.0)
    assert run(sandbox, storage).success

    catalog = read_catalog(storage)
    ok = catalog[catalog.status == "ok"]
    assert len(ok) == sum(run_state(i) == "ready" for i in run_ids)
    client = s3_bucket.client()
    for row in ok.itertuples():
        assert row.uri.startswith(f"{s3_bucket.url}/audio/{DAY}/")
        key = row.uri.removeprefix(f"{s3_bucket.url}/")
        body = client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read()
        assert (len(body), hashlib.sha256(body).hexdigest()) == (row.size_bytes, row.sha256)


@pytest.mark.parametrize("root", ["audio", "catalog"])
def test_storage_roots_come_from_the_environment(monkeypatch, tmp_path, root):
    monkeypatch.setenv(f"SOUNDHARVEST_{root.upper()}_ROOT", str(tmp_path / "x"))
    storage: Storage = getattr(StorageResource(), root)()
    assert storage.uri("a.wav") == str(tmp_path / "x" / "a.wav")


def test_the_checks_report_what_breaks_the_contract(tmp_path):
    manifest = pd.DataFrame({"manifest": ["m.csv"] * 3, "run_id": pd.array([1, 2, 3], "Int64")})
    catalog = pd.DataFrame(
        {
            "manifest": ["m.csv"] * 3,
            "run_id": pd.array([1, 2, 2], "Int64"),
            "status": ["ok", "failed", "failed"],
            "error": [None, "see https://s/x.wav?X-Amz-Signature=abc", "boom"],
            "uri": ["/nowhere/1.wav", None, None],
            "size_bytes": pd.array([10, None, None], "Int64"),
            "sha256": ["0" * 64, None, None],
        }
    )
    found = check_day(DAY, manifest, catalog, Storage(str(tmp_path / "audio")))

    assert "catalog rows" in found["one_row_per_manifest_row"]
    assert "more than one row" in found["catalog_contract"]
    assert "URL query" in found["catalog_contract"] and "abc" not in found["catalog_contract"]
    assert "1 ok rows without their file" in found["ok_files_exist"]


# -- range runs: one day's failure keeps the others ------------------------------------------


def three_days(tmp_path: Path, first_id: int) -> dict[str, list[int]]:
    """Three days of five ids each (all ready, none wrong-type), manifests written."""
    days = {}
    for offset, day in enumerate(RANGE):
        ids = [i for i in range(first_id + 20 * offset, first_id + 20 * offset + 12)]
        days[day] = [i for i in ids if run_state(i) == "ready"][:5]
        write_manifest(tmp_path / "manifests", day, days[day])
    return days


def materialized(instance: DagsterInstance, asset: str) -> set[str]:
    """The partitions Dagster counts as materialized (what its UI shows)."""
    return set(instance.get_materialized_partitions(AssetKey(asset)))


def test_a_storage_failure_in_a_range_keeps_the_days_before_it(sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRIES", "0")
    days = three_days(tmp_path, 2000)
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / RANGE[1]).write_text("a file where the day's folder belongs")
    storage = local_storage(tmp_path)
    instance = DagsterInstance.ephemeral()

    result = run_range(
        sandbox, storage, RANGE[0], RANGE[-1], raise_on_error=False, instance=instance
    )

    assert not result.success
    [message] = failure_messages(result)
    assert message.startswith(f"{RANGE[1]}: cannot publish {tmp_path / 'audio' / RANGE[1]}/")
    assert f"completed: {RANGE[0]}\n" in message and message.endswith(f"not tried: {RANGE[2]}")
    # The completed day has its files ledger and its catalog, and Dagster knows it.
    first = read_catalog(storage, RANGE[0])
    assert sorted(first.run_id) == days[RANGE[0]] and set(first.status) == {"ok"}
    assert materialized(instance, "sound_files") == {RANGE[0]}
    assert materialized(instance, "sound_catalog") == {RANGE[0]}
    for day in RANGE[1:]:
        assert not Path(catalog_path(storage, day)).exists()

    (tmp_path / "audio" / RANGE[1]).unlink()
    sandbox.reset()
    assert run_range(sandbox, storage, RANGE[0], RANGE[-1]).success
    for day in RANGE:
        assert set(read_catalog(storage, day).status) == {"ok"}
    assert sandbox.stats()["downloads"] == 10  # the first day's files were kept


def test_a_day_without_its_manifest_fails_alone(sandbox, tmp_path):
    three_days(tmp_path, 2100)
    storage = local_storage(tmp_path)
    [run_manifest, sound_files, sound_catalog] = ASSETS
    instance = DagsterInstance.ephemeral()
    for day in (RANGE[0], RANGE[2]):
        manifest_only = materialize(
            [run_manifest], partition_key=day, resources=resources(sandbox, storage)
        )
        assert manifest_only.success

    result = run_range(
        sandbox,
        storage,
        RANGE[0],
        RANGE[-1],
        assets=[sound_files, sound_catalog],
        raise_on_error=False,
        instance=instance,
    )

    assert not result.success
    assert not step_events(result, "STEP_UP_FOR_RETRY")  # a retry would change nothing
    [message] = failure_messages(result)
    assert message.startswith(f"{RANGE[1]}: its run_manifest is missing")
    assert f"completed: {RANGE[0]}, {RANGE[2]}" in message
    assert materialized(instance, "sound_catalog") == {RANGE[0], RANGE[2]}
    assert Path(catalog_path(storage, RANGE[2])).exists()


def test_a_rejected_key_stops_a_range_with_one_message(sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRIES", "3")
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRY_DELAY_S", "0")
    three_days(tmp_path, 2200)
    storage = local_storage(tmp_path)
    wrong_key = {"api_key": "not-the-key-7d1e"}

    result = run_range(sandbox, storage, RANGE[0], RANGE[-1], camb=wrong_key, raise_on_error=False)

    assert not result.success
    assert not step_events(result, "STEP_UP_FOR_RETRY")  # never retried: it cannot pass
    [message] = failure_messages(result)
    # No day's own trouble: the days not tried first, the line saying what to fix last.
    assert message.startswith(f"not tried: {RANGE[0]}...{RANGE[2]}\n")
    assert message.endswith("check CAMB_API_KEY")
    assert "not-the-key" not in message
    assert sandbox.stats()["downloads"] == 0


def test_a_day_stops_fetching_when_its_budget_is_spent(sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv("SOUNDHARVEST_DAY_BUDGET_S", "2")
    sandbox.set_faults(latency_s=0.4)  # one request at a time: about 2.5 batches a second
    run_ids = [i for i in range(2300, 2400) if run_state(i) == "ready"][:60]
    write_manifest(tmp_path / "manifests", DAY, run_ids)
    storage = local_storage(tmp_path)
    camb = {"max_concurrency": 1}

    result = materialize(ASSETS, partition_key=DAY, resources=resources(sandbox, storage, **camb))

    assert result.success
    catalog = read_catalog(storage).set_index("run_id")
    left = catalog[catalog.status != "ok"]
    assert len(left) > 0 and (left.status == "pending").all()
    assert left.error.str.contains("budget").all()
    assert (catalog.attempts == 1).all()

    monkeypatch.setenv("SOUNDHARVEST_DAY_BUDGET_S", "600")
    sandbox.set_faults(latency_s=0)
    assert run(sandbox, storage).success
    again = read_catalog(storage).set_index("run_id")
    assert (again.status == "ok").all()
    assert (again.loc[left.index, "attempts"] == 2).all()
