"""A rerun skips complete days whose inputs did not change, and only those."""

import pandas as pd
from dagster import DagsterInstance

from assets.harvest.day_fingerprint import Fingerprints
from assets.harvest.day_summary import DaySummary
from resources.storage import Storage

from support.pipeline_kit import local_storage, read_catalog, run_range, write_manifest

# run_state: ids ending in 7 are pending, all others here ready.
DAYS = {
    "2026-11-01": [4000, 4001, 4002],  # its manifest gains a run
    "2026-11-02": [4020, 4021, 4022],  # loses a WAV file
    "2026-11-03": [4030, 4037],  # keeps a pending run
    "2026-11-04": [4040, 4041],  # untouched
}
A, B, C, D = DAYS


def unchanged_lines(instance: DagsterInstance, result) -> list[str]:
    return [
        log.user_message
        for log in instance.all_logs(result.run_id)
        if "complete and unchanged" in log.user_message
    ]


def test_a_rerun_redoes_exactly_the_days_that_changed_or_are_not_complete(sandbox, tmp_path):
    for day, run_ids in DAYS.items():
        write_manifest(tmp_path / "manifests", day, run_ids, "bad,row,sound,1,demo\n")
    storage, instance = local_storage(tmp_path), DagsterInstance.ephemeral()
    assert run_range(sandbox, storage, A, D, instance=instance).success
    before = {day: read_catalog(storage, day) for day in DAYS}

    write_manifest(tmp_path / "manifests", A, [*DAYS[A], 4003])
    (tmp_path / "audio" / B / "4021.wav").unlink()
    sandbox.reset()
    second = run_range(sandbox, storage, A, D, instance=instance)

    assert second.success
    stats = sandbox.stats()
    # A's new run, B's lost file and C's pending run: nothing else reached the API.
    assert stats["downloads_by_run"] == {4003: 1, 4021: 1}
    assert set(stats["lookups_by_run"]) == {4003, 4021, 4037}
    assert unchanged_lines(instance, second) == [
        f"1 day complete and unchanged since their last run ({D}): 2 ok, 1 rejected; "
        f"0 new files, {read_catalog(storage, D).size_bytes.sum() / 2**20:.1f} MiB stored"
    ]
    assert sorted(read_catalog(storage, A).run_id.dropna()) == [4000, 4001, 4002, 4003]
    assert set(read_catalog(storage, B).status) == {"ok", "rejected"}
    assert (tmp_path / "audio" / B / "4021.wav").exists()
    pd.testing.assert_frame_equal(read_catalog(storage, D), before[D])

    sandbox.reset()
    third = run_range(sandbox, storage, A, D, instance=instance)

    assert third.success
    assert set(sandbox.stats()["lookups_by_run"]) == {4037}  # only the pending run, again
    [line] = unchanged_lines(instance, third)
    assert line.startswith(f"3 days complete and unchanged since their last run ({A}...{B}, {D})")


def test_a_deleted_catalog_or_record_is_written_again(sandbox, tmp_path):
    for day in (A, B):
        write_manifest(tmp_path / "manifests", day, DAYS[day])
    storage, instance = local_storage(tmp_path), DagsterInstance.ephemeral()
    assert run_range(sandbox, storage, A, B, instance=instance).success
    catalog = tmp_path / "catalog" / "sound_catalog" / f"date={A}" / "part-0.parquet"
    catalog.unlink()
    (tmp_path / "catalog" / "_state" / "run_manifest" / f"date={A}" / "part-0.parquet").unlink()

    assert run_range(sandbox, storage, A, B, instance=instance).success
    assert catalog.exists() and sorted(read_catalog(storage, A).run_id) == DAYS[A]


def test_new_parameters_or_code_never_reuse_a_record(tmp_path):
    state = Storage(str(tmp_path))
    summary = DaySummary({"ok": 3})
    prints = Fingerprints(state, "sound_files", audio="/data/audio")
    prints.record(A, prints.stamp(["inputs"]), summary)

    assert prints.unchanged(A, prints.stamp(["inputs"])) == summary
    assert prints.unchanged(A, prints.stamp(["other inputs"])) is None
    moved = Fingerprints(state, "sound_files", audio="/elsewhere/audio")
    assert moved.unchanged(A, moved.stamp(["inputs"])) is None
    new_code = Fingerprints(state, "sound_files", audio="/data/audio")
    new_code.parameters["code"] = "another digest"
    assert new_code.unchanged(A, new_code.stamp(["inputs"])) is None
    # A day with failed or pending rows is never skipped, whatever its stamp.
    prints.record(B, prints.stamp(["inputs"]), DaySummary({"ok": 2, "failed": 1}))
    assert prints.unchanged(B, prints.stamp(["inputs"])) is None
