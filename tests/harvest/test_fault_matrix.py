"""The fault matrix of docs/reliability.md, one test per row, asserting the pipeline's outcome.

Every test materializes the three assets in process with Dagster against the sandbox on
loopback (storage local under `tmp_path`, or S3 on moto's server mode) and asserts what the
table promises in catalog rows and files on disk. The client-level versions of the API rows
live in tests/api_client/test_client_faults.py; these check what reaches the catalog.

- 429 with Retry-After 0, 2, an HTTP date, absurdly large:
  `test_429_waits_for_retry_after_then_everything_is_ingested`
- bursts of 5xx: shorter than the budget:
  `test_a_5xx_burst_shorter_than_the_budget_is_absorbed`
- bursts of 5xx: longer than the budget:
  `test_5xx_longer_than_the_budget_fail_the_step_retriably`
- one run's result endpoint answering 5xx or 4xx forever:
  `test_one_runs_result_endpoint_failing_forever_fails_that_run_only`
- connection reset; connect and read timeouts; a server that accepts and never answers:
  `test_resets_and_timeouts_are_retried_in_bounded_time`,
  `test_an_api_that_never_answers_fails_the_step_in_bounded_time`
- truncated body; Content-Length larger than the body:
  `test_truncated_bodies_are_retried_leaving_no_file_or_row`
- body complete but wrong:
  `test_complete_but_wrong_bodies_end_failed_without_an_ok_row`
- expired URL (403):
  `test_expired_urls_are_refreshed_and_never_retried`
- bulk answer missing ids; ids never asked for:
  `test_bulk_answers_missing_or_extra_ids_give_one_row_per_id`
- a 4xx that poisons a batch:
  `test_a_4xx_poisoning_a_batch_sinks_only_the_bad_id`
- malformed manifests (the operator's: never retried):
  `test_a_malformed_manifest_fails_naming_file_and_line`
- non-positive, huge or path-like ids:
  `test_bad_ids_are_rejected_and_nothing_is_written_outside_the_roots`
- disk full (the audio root's, the scratch space's: the operator's):
  `test_disk_full_fails_clearly_keeps_the_catalog_and_a_rerun_completes`
- unwritable storage:
  `test_unwritable_storage_fails_clearly_and_keeps_the_catalog`
- S3 endpoint that accepts the connection and never answers:
  `test_a_mute_s3_endpoint_fails_the_day_in_bounded_time`
- S3 endpoint lost mid-day (down from the start: tests/harvest/test_operator_errors.py):
  `test_an_s3_endpoint_lost_mid_day_is_retried_after_a_short_wait`
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from dagster import DagsterInstance

from assets.harvest.records import read_state
from resources.audio import inspect_audio
from resources.error_kinds import ERROR_KIND_KEY, OPERATOR
from sandbox import Decoy, full_backlog, run_state

from support import PROJECT
from support.moto_s3 import S3Bucket, proxy_to
from support.mounts import fill, tmpfs
from support.pipeline_kit import (
    DAY,
    assert_ok_rows_verify,
    catalog_path,
    failure_messages,
    files_under,
    leftovers,
    local_storage,
    read_catalog,
    run,
    run_range,
    scratch_fixture,  # noqa: F401  (the `scratch` fixture)
    step_events,
    write_manifest,
)
from support.sandbox_api import SANDBOX_KEY


def ready_ids(start: int, count: int) -> list[int]:
    """`count` run ids from `start` on that the sandbox serves as ready."""
    ids, run_id = [], start
    while len(ids) < count:
        if run_state(run_id) == "ready":
            ids.append(run_id)
        run_id += 1
    return ids


def day_with(tmp_path: Path, run_ids: list[int]):
    write_manifest(tmp_path / "manifests", DAY, run_ids)
    return local_storage(tmp_path)


def statuses(storage) -> dict[int, str]:
    catalog = read_catalog(storage)
    assert catalog.run_id.is_unique  # one row per id
    return dict(zip(catalog.run_id, catalog.status, strict=True))


@pytest.fixture
def quick_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-call retries and timeouts short enough for a test (the defaults take minutes)."""
    for name, value in {
        "CAMB_RETRY_ATTEMPTS": "3",
        "CAMB_RETRY_BUDGET_S": "10",
        "CAMB_CONNECT_TIMEOUT_S": "1",
        "CAMB_READ_TIMEOUT_S": "1",
    }.items():
        monkeypatch.setenv(name, value)


# -- the API ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "at_least_s"),
    [("0", 0.0), ("2", 2.0), ("date:2", 1.0), ("86400", None)],
    ids=["zero", "seconds", "http-date", "absurd"],
)
def test_429_waits_for_retry_after_then_everything_is_ingested(
    sandbox, tmp_path, scratch, monkeypatch, retry_after, at_least_s
):
    run_ids = ready_ids(3000, 5)
    storage = day_with(tmp_path, run_ids)
    sandbox.set_faults(retry_after=retry_after)
    sandbox.script("api", "429")
    monkeypatch.setenv("CAMB_MAX_RETRY_AFTER_S", "3")  # a day is waited for 3 s, no more
    started = time.monotonic()

    assert run(sandbox, storage).success

    assert time.monotonic() - started >= (3.0 if at_least_s is None else at_least_s)
    assert set(statuses(storage).values()) == {"ok"}
    assert sandbox.stats()["faults_injected"] == {"429": 1}
    assert not leftovers(tmp_path, scratch)


def test_a_5xx_burst_shorter_than_the_budget_is_absorbed(sandbox, tmp_path, scratch):
    run_ids = ready_ids(3100, 12)
    storage = day_with(tmp_path, run_ids)
    sandbox.script("api", "500", "502", "503", "500")

    assert run(sandbox, storage).success

    assert set(statuses(storage).values()) == {"ok"}
    assert sum(sandbox.stats()["faults_injected"].values()) == 4
    assert not leftovers(tmp_path, scratch)


def test_5xx_longer_than_the_budget_fail_the_step_retriably(
    sandbox, tmp_path, scratch, monkeypatch, quick_client
):
    run_ids = ready_ids(3200, 10)
    storage = day_with(tmp_path, run_ids)
    assert run(sandbox, storage).success
    before = Path(catalog_path(storage)).read_bytes()
    write_manifest(tmp_path / "manifests", DAY, run_ids + ready_ids(3300, 120))
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRIES", "1")
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRY_DELAY_S", "0")
    sandbox.set_faults(server_error_rate=1.0)

    result = run(sandbox, storage, raise_on_error=False)

    assert not result.success
    assert len(step_events(result, "STEP_UP_FOR_RETRY")) == 1  # retried, then given up
    [message] = failure_messages(result)
    assert message.startswith(f"{DAY}: ") and "outage" in message.lower()
    assert Path(catalog_path(storage)).read_bytes() == before  # the catalog is unchanged
    assert not leftovers(tmp_path, scratch)

    sandbox.set_faults(server_error_rate=0.0)
    assert run(sandbox, storage).success
    assert set(statuses(storage).values()) == {"ok"}


@pytest.mark.parametrize("status", [500, 404])
def test_one_runs_result_endpoint_failing_forever_fails_that_run_only(
    sandbox, tmp_path, scratch, quick_client, status
):
    run_ids = ready_ids(3400, 9)
    stuck = run_ids[4]
    storage = day_with(tmp_path, run_ids)
    # Its first URL has expired; the API refuses a bulk call of one id, so the fresh URL is
    # asked of its single-result endpoint, which always fails.
    sandbox.set_faults(expired_runs=(stuck,), result_errors={stuck: status}, bulk_min_ids=2)

    assert run(sandbox, storage).success

    catalog = read_catalog(storage).set_index("run_id")
    assert catalog.loc[stuck, "status"] == "failed"
    assert str(status) in catalog.loc[stuck, "error"]
    assert (catalog.drop(stuck).status == "ok").all()
    assert not leftovers(tmp_path, scratch)


@pytest.mark.parametrize("fault", ["reset", "read-timeout"])
def test_resets_and_timeouts_are_retried_in_bounded_time(
    sandbox, tmp_path, scratch, quick_client, fault
):
    run_ids = ready_ids(3500, 8)
    storage = day_with(tmp_path, run_ids)
    if fault == "reset":
        sandbox.script("api", "reset", "reset")
        sandbox.script("download", "reset", "reset")
    else:  # nothing more after the headers or half the body; an API call never answered
        sandbox.script("download", "stall", "hang")
        sandbox.script("api", "hang")

    assert run(sandbox, storage).success

    assert set(statuses(storage).values()) == {"ok"}  # retried
    assert sum(sandbox.stats()["faults_injected"].values()) >= 3
    assert not leftovers(tmp_path, scratch)


@pytest.mark.parametrize("peer", ["connect-timeout", "mute"])
def test_an_api_that_never_answers_fails_the_step_in_bounded_time(
    sandbox, tmp_path, scratch, monkeypatch, quick_client, peer
):
    storage = day_with(tmp_path, ready_ids(3550, 3))
    assert run(sandbox, storage).success
    before = Path(catalog_path(storage)).read_bytes()
    write_manifest(tmp_path / "manifests", DAY, ready_ids(3550, 110))  # 22 bulk calls
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRIES", "0")
    monkeypatch.setenv("CAMB_RETRY_ATTEMPTS", "2")  # two tries per call, half a second each
    monkeypatch.setenv("CAMB_CONNECT_TIMEOUT_S", "0.5")
    monkeypatch.setenv("CAMB_READ_TIMEOUT_S", "0.5")

    with Decoy("127.0.0.1") as mute, full_backlog() as port:
        origin = f"http://127.0.0.1:{port}" if peer == "connect-timeout" else mute.origin()
        result = run(sandbox, storage, camb={"base_url": f"{origin}/apis"}, raise_on_error=False)
        accepted = mute.accepted

    assert not result.success
    [message] = failure_messages(result)
    assert message.startswith(f"{DAY}: ") and "outage" in message.lower()
    if peer == "mute":
        assert accepted > 22  # every call was tried again before the API was given up on
    assert Path(catalog_path(storage)).read_bytes() == before
    assert not leftovers(tmp_path, scratch)


def test_truncated_bodies_are_retried_leaving_no_file_or_row(sandbox, tmp_path, scratch):
    run_ids = ready_ids(3600, 6)
    storage = day_with(tmp_path, run_ids)
    sandbox.script("download", "truncate", "truncate", "drop")

    assert run(sandbox, storage).success

    catalog = read_catalog(storage)
    assert sorted(catalog.run_id) == run_ids and set(catalog.status) == {"ok"}
    assert (catalog.attempts == 1).all()
    assert_ok_rows_verify(catalog)
    assert sandbox.stats()["downloads"] == len(run_ids) + 3
    assert not leftovers(tmp_path, scratch)


@pytest.mark.parametrize("kind", ["short", "corrupt"])
def test_complete_but_wrong_bodies_end_failed_without_an_ok_row(sandbox, tmp_path, scratch, kind):
    [bad] = ready_ids(3700, 1)
    storage = day_with(tmp_path, [bad])
    sandbox.script("download", *[kind] * 10)  # every download of its URLs, fresh ones too

    assert run(sandbox, storage).success

    [row] = read_catalog(storage).itertuples()
    assert row.status == "failed" and row.error.startswith("download failed 4 times")
    assert not (tmp_path / "audio" / DAY / f"{bad}.wav").exists()
    assert not leftovers(tmp_path, scratch)


def test_expired_urls_are_refreshed_and_never_retried(sandbox, tmp_path, scratch):
    run_ids = ready_ids(3800, 5)
    dead = run_ids[2]
    storage = day_with(tmp_path, run_ids)
    sandbox.set_faults(expired_runs=(dead,))
    sandbox.script("download", "expire")  # the first download, of whichever run

    assert run(sandbox, storage).success

    catalog = read_catalog(storage).set_index("run_id")
    assert catalog.loc[dead, "status"] == "failed" and "403" in catalog.loc[dead, "error"]
    assert (catalog.drop(dead).status == "ok").all()
    stats = sandbox.stats()
    # Every URL handed out (one per id of a bulk answer, one per single-result call) was
    # downloaded exactly once: a dead URL is never asked for again.
    issued = sum(stats["bulk_batch_sizes"]) + stats["single_requests"]
    assert stats["downloads"] == issued > len(run_ids) + 2
    assert not leftovers(tmp_path, scratch)


def test_bulk_answers_missing_or_extra_ids_give_one_row_per_id(sandbox, tmp_path, scratch):
    run_ids = ready_ids(3900, 7)
    omitted, stranger = run_ids[3], ready_ids(3990, 1)[0]
    storage = day_with(tmp_path, run_ids)
    sandbox.set_faults(bulk_omit=(omitted,), bulk_strangers=(stranger,))

    assert run(sandbox, storage).success

    found = statuses(storage)
    assert sorted(found) == run_ids  # the stranger got no row, every asked id one
    assert found.pop(omitted) == "pending"
    assert set(found.values()) == {"ok"}
    assert not (tmp_path / "audio" / DAY / f"{stranger}.wav").exists()


def test_a_4xx_poisoning_a_batch_sinks_only_the_bad_id(sandbox, tmp_path, scratch):
    run_ids = [4195, 4196, 4198, 4199, 4200]  # 4199 is not a text-to-sound run: 400 for all
    assert [run_state(i) for i in run_ids].count("ready") == 4
    storage = day_with(tmp_path, run_ids)

    assert run(sandbox, storage).success

    catalog = read_catalog(storage).set_index("run_id")
    assert catalog.loc[4199, "status"] == "failed"
    assert "not a text-to-sound run" in catalog.loc[4199, "error"]
    assert (catalog.drop(4199).status == "ok").all()
    assert 5 in sandbox.stats()["bulk_batch_sizes"]  # they were asked about together


# -- manifests --------------------------------------------------------------------------------


def test_a_malformed_manifest_fails_naming_file_and_line(sandbox, tmp_path, monkeypatch):
    """Only fixing the file helps: the operator's, never retried (was: a failure retried
    like an outage, exit 1), while the range's other days are still read."""
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRIES", "2")  # a retry would show; none may happen
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRY_DELAY_S", "0")
    days = ["2026-11-01", "2026-11-02"]
    write_manifest(tmp_path / "manifests", days[0], ready_ids(4300, 3))
    bad = tmp_path / "manifests" / days[1] / "batch.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text('run_id,prompt\n4310,fine\n4311,"never closed\n')
    storage = local_storage(tmp_path)

    result = run_range(sandbox, storage, days[0], days[1], raise_on_error=False)

    assert not result.success
    [message] = failure_messages(result)
    assert message == (
        f"{days[1]}: manifest cannot be read: {bad}, line 3: malformed CSV: unexpected end of "
        "data: fix line 3 of that file (or remove it), then harvest the day again\n"
        f"completed: {days[0]}"
    )
    assert not step_events(result, "STEP_UP_FOR_RETRY")
    assert failure_metadata(result)[ERROR_KIND_KEY] == OPERATOR
    assert sandbox.stats()["api_requests"] == 0  # nothing reached the API
    assert not Path(catalog_path(storage, days[1])).exists()


BAD_IDS = {
    "../../etc/passwd": "not an integer",
    "1/../2": "not an integer",
    "1e3": "not an integer",
    "0x10": "not an integer",
    "１２": "not an integer",  # fullwidth digits
    "0": "not positive",
    "-7": "not positive",
    str(2**63): "too large",
    "99999999999999999999999": "too large",
    "": "missing run_id",
}


def test_bad_ids_are_rejected_and_nothing_is_written_outside_the_roots(sandbox, tmp_path):
    good = ready_ids(4400, 2)
    manifests = tmp_path / "manifests"
    write_manifest(manifests, DAY, good)
    day_dir = manifests / DAY
    day_dir.mkdir()
    (day_dir / "bad.csv").write_text(
        "run_id,prompt\n" + "".join(f"{run_id},bad\n" for run_id in BAD_IDS)
    )
    json_ids = ["../x", 1e30, True, [1], {"a": 1}, -(2**70)]
    (day_dir / "bad.jsonl").write_text("".join(json.dumps({"run_id": v}) + "\n" for v in json_ids))
    before = set(files_under(tmp_path))
    storage = local_storage(tmp_path)

    assert run(sandbox, storage).success

    catalog = read_catalog(storage)
    rejected = catalog[catalog.status == "rejected"]
    assert len(rejected) == len(BAD_IDS) + len(json_ids)
    by_line = rejected[rejected.manifest == str(day_dir / "bad.csv")].sort_values("error")
    for run_id, reason in BAD_IDS.items():
        assert by_line.error.str.contains(reason).any(), (run_id, reason)
    assert rejected.error.str.match(r"line \d+: ").all()
    assert set(catalog[catalog.status != "rejected"].run_id) == set(good)
    written = set(files_under(tmp_path)) - before
    assert written and all(name.split("/")[0] in ("audio", "catalog") for name in written)
    assert {name for name in written if name.startswith("audio/")} == {
        f"audio/{DAY}/{run_id}.wav" for run_id in good
    }


# -- storage ----------------------------------------------------------------------------------

_MATERIALIZE_WITH_FILE_SIZE_LIMIT = """
import json, resource, signal, sys
from dagster import materialize
from assets.sound_files import sound_files
from assets.sound_catalog import sound_catalog
from assets.run_manifest import run_manifest
from resources.camb_resource import CambResource
from resources.storage_resource import StorageResource
root, base_url, key, day, limit = sys.argv[1:]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), resource.RLIM_INFINITY))
storage = StorageResource(manifest_root=root + "/manifests", audio_root=root + "/audio",
                          catalog_root=root + "/catalog")
camb = CambResource(api_key=key, base_url=base_url, download_allow_hosts="127.0.0.1")
result = materialize([run_manifest, sound_files, sound_catalog], partition_key=day,
                     resources={"camb": camb, "storage": storage}, raise_on_error=False)
failures = [e.step_failure_data.user_failure_data.description
            for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
print(json.dumps({"success": result.success, "failures": failures}))
"""


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 32 MiB tmpfs, unmounted afterwards (root only: elsewhere skipped, in CI failed)."""
    with tmpfs(tmp_path / "tiny", "size=32m") as disk:
        yield disk


# What a full disk's failure says: which disk, how much is free, what the day still needs.
_FULL = (
    r"^the (?P<where>audio root|scratch space) (?P<path>\S+) is full \(No space left on "
    r"device\): (?P<free>[\d.]+ (B|KiB|MiB)) free; 2026-11-01 still has (?P<left>\d+) runs to "
    r"fetch, about [\d.]+ (KiB|MiB) \([\d.]+ (KiB|MiB) each, the median of its \d+ files so far\): "
    r"free space there, or point (?P<setting>\S+) at a disk with room$"
)


@pytest.mark.parametrize("where", ["audio-tmpfs", "scratch-tmpfs", "scratch-rlimit"])
def test_disk_full_fails_clearly_keeps_the_catalog_and_a_rerun_completes(
    sandbox, tmp_path, scratch, monkeypatch, request, where
):
    """Was: 300 s step retries of "[Errno 28] No space left on device", then exit 1 after
    614 s. A full disk (the audio root's or the scratch space's) is the operator's: no step
    retry, one line saying how much is free and what the day still needs."""
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRIES", "2")  # a retry would show; none may happen
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRY_DELAY_S", "0")
    disk = request.getfixturevalue("tiny_disk") if where.endswith("tmpfs") else None
    root = disk if where == "audio-tmpfs" else tmp_path
    first = ready_ids(4500, 3)
    write_manifest(root / "manifests", DAY, first)
    storage = local_storage(root)
    assert run(sandbox, storage).success
    before = Path(catalog_path(storage)).read_bytes()
    more = first + ready_ids(4520, 25)
    write_manifest(root / "manifests", DAY, more)

    if where != "scratch-rlimit":
        if where == "scratch-tmpfs":
            monkeypatch.setattr(tempfile, "tempdir", str(disk))
            scratch = disk / "soundharvest"
        filler = fill(disk, leave=64 << 10)  # less than one of the day's files
        result = run(sandbox, storage, raise_on_error=False)
        [message] = failure_messages(result)
        found = re.match(_FULL, message)
        assert found, message
        expected = (str(disk / "audio"), "SOUNDHARVEST_AUDIO_ROOT")
        if where == "scratch-tmpfs":
            expected = (str(disk / "soundharvest"), "TMPDIR")
        assert (found["path"], found["setting"]) == expected
        assert 0 < int(found["left"]) <= 25  # the 3 first runs are stored already
        assert not step_events(result, "STEP_UP_FOR_RETRY")  # never retried
        assert failure_metadata(result)[ERROR_KIND_KEY] == OPERATOR  # exit 3 from the CLI
        filler.unlink()  # space returns
    else:
        child = subprocess.run(
            [
                sys.executable, "-c", _MATERIALIZE_WITH_FILE_SIZE_LIMIT, str(root),
                sandbox.base_url, SANDBOX_KEY, DAY, str(200 * 1024),
            ],
            capture_output=True, text=True, cwd=PROJECT,
            env=os.environ | {"TMPDIR": str(scratch.parent)},
        )  # fmt: skip
        assert child.returncode == 0, child.stderr[-3000:]
        outcome = json.loads(child.stdout.strip().splitlines()[-1])
        assert not outcome["success"]
        [message] = outcome["failures"]
        assert message.startswith(f"{DAY}: the scratch space {scratch} failed: ")
        assert "File too large" in message

    assert "\n" not in message  # one clear error
    assert Path(catalog_path(storage)).read_bytes() == before  # the catalog is intact
    assert not leftovers(root, scratch) and not leftovers(tmp_path, scratch)
    assert_ledger_files_verify(storage)  # every file under a final name is whole
    sandbox.reset()
    assert run(sandbox, storage).success
    assert set(statuses(storage).values()) == {"ok"} and len(statuses(storage)) == len(more)


def assert_ledger_files_verify(storage) -> None:
    """Every file under a final name of the day is recorded ok in its ledger (the record the
    failed day kept) with exactly its size and sha256, or is a whole WAV a rerun adopts."""
    audio = Path(storage.audio().path(DAY))
    ledger = read_state(storage.catalog(), "sound_files", DAY)
    rows = {} if ledger is None else {int(r.run_id): r for r in ledger.itertuples()}
    for path in audio.glob("*.wav"):
        row = rows.get(int(path.stem))
        if row is not None and row.status == "ok":
            data = path.read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (row.size_bytes, row.sha256)
        else:
            assert inspect_audio(path).frames > 0, path  # published whole, not yet recorded


def failure_metadata(result) -> dict:
    [event] = step_events(result, "STEP_FAILURE")
    metadata = event.step_failure_data.user_failure_data.metadata
    return {key: value.value for key, value in metadata.items()}


@pytest.mark.parametrize("where", ["a-file-as-root", "missing-bucket"])
def test_unwritable_storage_fails_clearly_and_keeps_the_catalog(
    sandbox, tmp_path, scratch, monkeypatch, s3_bucket: S3Bucket, where
):
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRIES", "0")
    storage = day_with(tmp_path, ready_ids(4600, 3))
    assert run(sandbox, storage).success
    before = Path(catalog_path(storage)).read_bytes()
    if where == "a-file-as-root":
        (tmp_path / "not-a-folder").write_text("a file")
        audio_root = str(tmp_path / "not-a-folder" / "audio")
    else:
        monkeypatch.setenv(
            "SOUNDHARVEST_STORAGE_OPTIONS", json.dumps({"s3": s3_bucket.storage_options})
        )
        audio_root = f"s3://missing-{uuid.uuid4().hex[:12]}/audio"
    broken = local_storage(tmp_path, audio_root)
    sandbox.reset()

    result = run(sandbox, broken, raise_on_error=False)

    assert not result.success
    [message] = failure_messages(result)  # found by the write probe before any API call
    assert message.startswith(f"the audio root {audio_root} cannot be written")
    assert "SOUNDHARVEST_AUDIO_ROOT" in message and "\n" not in message
    assert Path(catalog_path(storage)).read_bytes() == before
    assert not leftovers(tmp_path, scratch)


def test_a_mute_s3_endpoint_fails_the_day_in_bounded_time(
    sandbox, tmp_path, scratch, monkeypatch, s3_bucket: S3Bucket
):
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRIES", "0")
    storage = day_with(tmp_path, ready_ids(4700, 3))
    assert run(sandbox, storage).success
    before = Path(catalog_path(storage)).read_bytes()
    quick = {"connect_timeout": 0.5, "read_timeout": 0.5, "retries": {"max_attempts": 1}}
    with Decoy("127.0.0.1") as mute:
        options = {**s3_bucket.storage_options, "endpoint_url": mute.origin()}
        monkeypatch.setenv(
            "SOUNDHARVEST_STORAGE_OPTIONS", json.dumps({"s3": {**options, "config_kwargs": quick}})
        )
        broken = local_storage(tmp_path, f"{s3_bucket.url}/audio")

        result = run(sandbox, broken, raise_on_error=False)

        assert mute.accepted > 0
    assert not result.success
    [message] = failure_messages(result)
    assert message.startswith(f"{DAY}: cannot ") and "timeout" in message.lower()
    assert Path(catalog_path(storage)).read_bytes() == before
    assert not leftovers(tmp_path, scratch)


def test_an_s3_endpoint_lost_mid_day_is_retried_after_a_short_wait(
    sandbox, tmp_path, scratch, monkeypatch, s3_bucket: S3Bucket
):
    """The connection refused that fails a step at once when met before the root took any
    write (`tests/harvest/test_operator_errors.py`) is a blip once files were written: the step is
    retried, after a first wait of seconds (the delay set to 0.2 s here; 10 s by default)."""
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRIES", "1")
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRY_DELAY_S", "0.2")
    proxy = proxy_to(s3_bucket)  # the endpoint the harvest knows, until it goes away
    quick = {"connect_timeout": 1, "read_timeout": 2, "retries": {"max_attempts": 1}}
    endpoint = {"endpoint_url": f"http://127.0.0.1:{proxy.port}", "config_kwargs": quick}
    monkeypatch.setenv(
        "SOUNDHARVEST_STORAGE_OPTIONS", json.dumps({"s3": s3_bucket.storage_options | endpoint})
    )
    run_ids = ready_ids(4800, 30)
    write_manifest(tmp_path / "manifests", DAY, run_ids)
    storage = local_storage(tmp_path, f"{s3_bucket.url}/audio")
    sandbox.set_faults(download_latency_s=0.2)  # files arrive one by one, over seconds
    watcher = threading.Thread(target=cut_after_the_first_file, args=(s3_bucket, proxy))
    watcher.start()
    instance = DagsterInstance.ephemeral()

    result = run(sandbox, storage, raise_on_error=False, instance=instance)

    watcher.join()
    assert not result.success
    assert len(step_events(result, "STEP_UP_FOR_RETRY")) == 1  # retriable, as a blip is
    [retrying] = [
        log.user_message
        for log in instance.all_logs(result.run_id)
        if "retrying in" in log.user_message
    ]
    assert "EndpointConnectionError" in retrying, retrying
    wait = float(re.search(r"retrying in ([\d.]+) s \(retry 1 of 1\)", retrying)[1])
    assert 0.2 <= wait <= 0.3  # the delay, plus a jitter of up to half of it
    [message] = failure_messages(result)  # the retry's probe: still gone, still not an error
    assert "cannot be reached" in message  # of the operator's (that is the first attempt's)
    assert ERROR_KIND_KEY not in failure_metadata(result)
    assert not Path(catalog_path(storage)).exists()
    assert not leftovers(tmp_path, scratch) and s3_bucket.pending_uploads() == []
    audio = stored_audio(s3_bucket)
    assert audio and len(audio) < len(run_ids)
    for key in audio:  # every object under a final name is a whole WAV
        body = s3_bucket.client().get_object(Bucket=s3_bucket.name, Key=key)["Body"].read()
        (tmp_path / "object.wav").write_bytes(body)
        assert inspect_audio(tmp_path / "object.wav").frames > 0, key


def cut_after_the_first_file(bucket: S3Bucket, proxy, timeout_s: float = 60.0) -> None:
    """Cut the proxy (the endpoint goes away: connections refused) once the first audio file
    is stored, asking moto directly."""
    deadline = time.monotonic() + timeout_s
    while not stored_audio(bucket) and time.monotonic() < deadline:
        time.sleep(0.05)
    proxy.cut()


def stored_audio(bucket: S3Bucket) -> list[str]:
    return [key for key in bucket.keys() if key.endswith(".wav")]  # noqa: SIM118 - objects
