"""Each partition of a range run carries its own day's figures, read back from the instance."""

import dataclasses
import re

import pandas as pd
import pytest
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    IntMetadataValue,
    JsonMetadataValue,
    MarkdownMetadataValue,
)

from assets.harvest.catalog_publish import CHECKS, DayCatalog, check_results
from assets.harvest.day_summary import DaySummary
from assets.harvest.reasons import reason_group
from assets.sound_features import sound_features
from assets.steps.metadata import RANGE_TOTALS, failure_reasons
from pipelines.instance_home import prepare
from sandbox import Faults

from support import PROJECT
from support.pipeline_kit import (
    ASSETS,
    DAY,
    local_storage,
    markdown_rows,
    read_catalog,
    run,
    run_range,
    write_manifest,
)

# Three days of different sizes and mixes: ready, pending (x7), failed (x13), wrong type (99).
DAYS = {
    "2026-11-01": list(range(1000, 1040)),
    "2026-11-02": list(range(2090, 2102)),
    "2026-11-03": list(range(3010, 3016)),
}
BAD_ROW = "12abc,bad,sound,1.0,demo\n"
EVERY_DAY = [*ASSETS, sound_features]  # every partitioned asset
EVERY_DAY_NAMES = ["run_manifest", "sound_files", "sound_catalog", "sound_features"]
ONE_PROCESS = {"ops": {"sound_features": {"config": {"workers": 1}}}}
# The figures that count something (metadata entries and table columns): integers.
COUNTS = {
    "ok", "pending", "failed", "rejected", "accepted", "rows", "distinct runs", "clips", "kept",
    "from harvest", "measured", "file missing", "unreadable", "run_id", "sample_rate",
    "channels", "size_bytes", "pending rows", "runs", "count",
}  # fmt: skip


def latest(instance: DagsterInstance, asset: str, day: str):
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[day]), limit=1
    ).records
    return records[0].asset_materialization.metadata


@pytest.fixture(scope="module")
def ranged(sandbox_server, tmp_path_factory):
    """One range run of DAYS through every partitioned asset, on a fresh instance with the
    project's config (its SQLite event log writes a range's events in batches): its storage,
    instance and result."""
    sandbox_server.set_faults(**dataclasses.asdict(Faults()))
    tmp_path = tmp_path_factory.mktemp("ranged")
    for day, run_ids in DAYS.items():
        write_manifest(tmp_path / "manifests", day, run_ids, BAD_ROW if day.endswith("2") else "")
    home = prepare(tmp_path / "dagster_home", PROJECT / "pipelines" / "dagster.yaml")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DAGSTER_HOME", str(home))
        storage, instance = local_storage(tmp_path), DagsterInstance.from_config(str(home))
        first, *_, last = DAYS
        result = run_range(
            sandbox_server, storage, first, last, assets=EVERY_DAY, run_config=ONE_PROCESS,
            instance=instance,
        )  # fmt: skip
        assert result.success
        yield storage, instance, result
    instance.dispose()


def range_totals(instance, asset: str) -> dict[str, str]:
    """The `range totals` table every partition of the range run shows (the same on each)."""
    tables = [latest(instance, asset, day)[RANGE_TOTALS].value for day in DAYS]
    assert tables[0] == tables[1] == tables[2]
    return dict(markdown_rows(tables[0]))


@pytest.mark.parametrize("asset", ["sound_files", "sound_catalog"])
def test_each_partition_carries_its_own_days_figures(ranged, asset):
    storage, instance, _ = ranged
    totals = {"ok": 0, "rows": 0}
    for day in DAYS:
        catalog = read_catalog(storage, day)
        metadata = latest(instance, asset, day)
        counts = catalog["status"].value_counts()
        ok = catalog[catalog.status == "ok"]
        for status in ("ok", "pending", "failed", "rejected"):
            assert metadata[status].value == counts.get(status, 0), (day, status)
        assert metadata["rows"].value == len(catalog)
        assert (
            metadata["distinct runs"].value
            == catalog.loc[catalog.status != "rejected", "run_id"].nunique()
        )
        assert metadata["stored (MiB)"].value == round(ok["size_bytes"].sum() / 2**20, 2)
        assert metadata["audio (h)"].value == pytest.approx(ok["duration_s"].sum() / 3600, abs=5e-5)
        reasons = {r.data["reason"]: r.data["rows"] for r in metadata["failure reasons"].records}
        assert sum(reasons.values()) == (catalog.status != "ok").sum()
        assert metadata["location"].value.endswith(
            f"date={day}/part-0.parquet" if asset == "sound_catalog" else day
        )
        for name in ("ok", "rows"):
            totals[name] += metadata[name].value
    # The step's totals ride along under their own key, a table no day takes for its own.
    whole = range_totals(instance, asset)
    assert whole["days"] == "3" and {k: int(whole[k].replace(",", "")) for k in totals} == totals


def test_run_manifest_partitions_count_their_own_rows(ranged):
    storage, instance, _ = ranged
    for day, run_ids in DAYS.items():
        metadata = latest(instance, "run_manifest", day)
        rejected = 1 if day.endswith("2") else 0
        assert (metadata["rows"].value, metadata["rejected"].value) == (
            len(run_ids) + rejected,
            rejected,
        )
        assert metadata["files"].value == f"- `{storage.manifests().uri(day)}.csv`"
    assert range_totals(instance, "run_manifest")["rows"] == str(sum(map(len, DAYS.values())) + 1)


def test_sound_features_partitions_carry_their_own_days_figures(ranged):
    """Was: every day of a range showed the range's totals ("files 11407, computed 11407")."""
    storage, instance, _ = ranged
    clips, measured_bytes = {}, {}
    for day in DAYS:
        catalog = read_catalog(storage, day)
        ok = sorted(catalog.loc[catalog.status == "ok", "run_id"])
        metadata = latest(instance, "sound_features", day)
        assert metadata["clips"].value == metadata["measured"].value == len(ok), day
        assert (metadata["kept"].value, metadata["from harvest"].value) == (0, 0)
        assert (metadata["file missing"].value, metadata["unreadable"].value) == (0, 0)
        assert metadata["measured (MiB)"].value == round(
            catalog.loc[catalog.status == "ok", "size_bytes"].sum() / 2**20, 2
        )
        preview = [int(row[0]) for row in markdown_rows(metadata["preview"].value)]
        assert preview == ok[:10]  # the day's own clips
        assert metadata["location"].value.endswith(f"sound_features/date={day}/part-0.parquet")
        clips[day] = len(ok)
        measured_bytes[day] = catalog.loc[catalog.status == "ok", "size_bytes"].sum()
    assert len(set(clips.values())) == 3  # the days differ, so no day can pass for another
    whole = range_totals(instance, "sound_features")
    assert whole["clips"] == str(sum(clips.values()))
    assert whole["measured (MiB)"] == f"{round(sum(measured_bytes.values()) / 2**20, 2):,}"


def all_metadata(instance) -> dict[tuple[str, str], dict]:
    return {(a, d): latest(instance, a, d) for a in EVERY_DAY_NAMES for d in DAYS}


def test_figures_are_typed_and_readable(ranged):
    _, instance, _ = ranged
    for (asset, day), metadata in all_metadata(instance).items():
        for name, value in metadata.items():
            where = (asset, day, name)
            assert not isinstance(value, JsonMetadataValue), where  # tables, not raw JSON
            assert "bytes" not in name, where  # sizes once, in MiB
            if name in COUNTS:
                assert isinstance(value, IntMetadataValue), where
            if isinstance(value, MarkdownMetadataValue):
                columns, *rows = markdown_rows(value.value, header=True) or [[]]
                cells = {cell for row in rows for cell in row}
                assert not cells & {"nan", "<NA>", "None"}, where
                counted = [row[i] for row in rows for i, c in enumerate(columns) if c in COUNTS]
                assert all(re.fullmatch(r"-?[\d,]*", cell) for cell in counted), where
    preview = latest(instance, "sound_catalog", "2026-11-01")["preview"].value
    assert markdown_rows(preview)[0][1:3] == ["ok", ""]  # blank, not nan


def test_failing_checks_name_their_days(ranged):
    storage, _, result = ranged
    pending = {day: int((read_catalog(storage, day).status == "pending").sum()) for day in DAYS}
    waiting = {day: n for day, n in pending.items() if n}
    assert len(waiting) == 2  # by construction: the third day has no pending run
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "no_pending_runs"]
    listed = ", ".join(f"{day} ({n})" for day, n in waiting.items())
    assert check.description == f"{sum(waiting.values())} pending rows on 2 days: {listed}"
    by_day = {
        r.data["day"]: r.data["pending rows"] for r in check.metadata["pending rows by day"].records
    }
    assert by_day == waiting


def test_the_catalog_checks_name_the_days_that_fail(tmp_path):
    """An ERROR check's description names each failing day and what is wrong there."""
    healthy = DayCatalog(DaySummary({"ok": 1}), dict.fromkeys(CHECKS, ""))
    missing = {**healthy.findings, "ok_files_exist": "2026-11-02: 1 ok rows without their file"}
    results = check_results(
        {"2026-11-01": healthy, "2026-11-02": DayCatalog(DaySummary({"ok": 1}), missing)}
    )
    by_name = {r.check_name: r for r in results}
    assert not by_name["ok_files_exist"].passed
    assert by_name["ok_files_exist"].description == "2026-11-02: 1 ok rows without their file"
    assert all(
        r.passed and r.description is None for n, r in by_name.items() if n != "ok_files_exist"
    )


def test_rows_and_distinct_runs_are_told_apart(sandbox, tmp_path):
    """Was: "runs 20000" for a day of 10,000 runs, each named on two rows (the copies
    rejected as duplicates)."""
    run_ids = list(range(1000, 1010))
    write_manifest(tmp_path / "manifests", DAY, run_ids + run_ids)
    storage = local_storage(tmp_path)

    result = run(sandbox, storage)

    for asset in ("sound_files", "sound_catalog"):
        [event] = result.asset_materializations_for_node(asset)
        figures = {
            name: event.metadata[name].value for name in ("rows", "distinct runs", "rejected")
        }
        assert figures == {"rows": 20, "distinct runs": 10, "rejected": 10}, asset
        assert "runs" not in event.metadata


def test_reasons_group_variants_and_count_them():
    rows = pd.DataFrame(
        {
            "run_id": pd.array([2001, 2002, 2003, 2004, None, 2006], dtype="Int64"),
            "status": ["failed", "failed", "pending", "ok", "rejected", "failed"],
            "error": [
                "the API gave no answer about run 2001 after 8 attempts",
                "the API gave no answer about run 2002 after 3 attempts",
                "not ready yet",
                None,
                "line 4: run_id '12abc' is not an integer",
                "download failed: HTTP 404",
            ],
        }
    )
    table = failure_reasons(DaySummary.of(rows))
    assert [(r.data["reason"], r.data["rows"]) for r in table.records] == [
        ("the API gave no answer about run N after N attempts", 2),
        ("not ready yet", 1),
        ("line N: run_id '…' is not an integer", 1),
        ("download failed: HTTP 404", 1),
    ]
    assert table.records[0].data["example"].endswith("run 2001 after 8 attempts")
    assert reason_group("HTTP 503 after 2.5 s") == "HTTP 503 after N s"
