"""Each partition of a range run carries its own day's figures, read back from the instance."""

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from assets.core.day_summary import DaySummary
from assets.core.reasons import reason_group
from assets.metadata import failure_reasons
from pipelines.instance_home import prepare
from sandbox import Faults

from pipeline_kit import local_storage, read_catalog, run_range, write_manifest

# Three days of different sizes and mixes: ready, pending (x7), failed (x13), wrong type (99).
DAYS = {
    "2026-11-01": list(range(1000, 1040)),
    "2026-11-02": list(range(2090, 2102)),
    "2026-11-03": list(range(3010, 3016)),
}
PROJECT = Path(__file__).resolve().parent.parent
BAD_ROW = "12abc,bad,sound,1.0,demo\n"


def latest(instance: DagsterInstance, asset: str, day: str):
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[day]), limit=1
    ).records
    return records[0].asset_materialization.metadata


@pytest.fixture(scope="module")
def ranged(sandbox_server, tmp_path_factory):
    """One range run of DAYS on a fresh instance with the project's config (its SQLite event
    log writes a range's events in batches): its storage and instance."""
    sandbox_server.set_faults(**dataclasses.asdict(Faults()))
    tmp_path = tmp_path_factory.mktemp("ranged")
    for day, run_ids in DAYS.items():
        write_manifest(tmp_path / "manifests", day, run_ids, BAD_ROW if day.endswith("2") else "")
    home = prepare(tmp_path / "dagster_home", PROJECT / "pipelines" / "dagster.yaml")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DAGSTER_HOME", str(home))
        storage, instance = local_storage(tmp_path), DagsterInstance.from_config(str(home))
        first, *_, last = DAYS
        assert run_range(sandbox_server, storage, first, last, instance=instance).success
        yield storage, instance
    instance.dispose()


@pytest.mark.parametrize("asset", ["sound_files", "sound_catalog"])
def test_each_partition_carries_its_own_days_figures(ranged, asset):
    storage, instance = ranged
    totals = {"ok": 0, "runs": 0}
    for day in DAYS:
        catalog = read_catalog(storage, day)
        metadata = latest(instance, asset, day)
        counts = catalog["status"].value_counts()
        ok = catalog[catalog.status == "ok"]
        for status in ("ok", "pending", "failed", "rejected"):
            assert metadata[status].value == counts.get(status, 0), (day, status)
        assert metadata["runs"].value == len(catalog)
        assert metadata["stored_bytes"].value == ok["size_bytes"].sum()
        assert metadata["audio (h)"].value == pytest.approx(ok["duration_s"].sum() / 3600, abs=5e-5)
        reasons = {r.data["reason"]: r.data["runs"] for r in metadata["failure reasons"].records}
        assert sum(reasons.values()) == (catalog.status != "ok").sum()
        assert metadata["location"].value.endswith(
            f"date={day}/part-0.parquet" if asset == "sound_catalog" else day
        )
        for name in ("ok", "runs"):
            totals[name] += metadata[name].value
    # The step's totals ride along under their own key, the same on every partition.
    ranges = [latest(instance, asset, day)["range"].value for day in DAYS]
    assert ranges[0] == ranges[1] == ranges[2]
    assert ranges[0]["days"] == 3 and {k: ranges[0][k] for k in totals} == totals


def test_run_manifest_partitions_count_their_own_rows(ranged):
    _, instance = ranged
    for day, run_ids in DAYS.items():
        metadata = latest(instance, "run_manifest", day)
        rejected = 1 if day.endswith("2") else 0
        assert (metadata["rows"].value, metadata["rejected"].value) == (
            len(run_ids) + rejected,
            rejected,
        )


def test_reasons_group_variants_and_count_them():
    rows = pd.DataFrame(
        {
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
    assert [(r.data["reason"], r.data["runs"]) for r in table.records] == [
        ("the API gave no answer about run N after N attempts", 2),
        ("not ready yet", 1),
        ("line N: run_id '…' is not an integer", 1),
        ("download failed: HTTP 404", 1),
    ]
    assert table.records[0].data["example"].endswith("run 2001 after 8 attempts")
    assert reason_group("HTTP 503 after 2.5 s") == "HTTP 503 after N s"
