"""sound_features and ml_dataset materialized with Dagster, on made-up catalogs and after a
real harvest from the sandbox."""

import io
from pathlib import Path

import datasets
import pandas as pd
import pytest
import soundfile as sf
from dagster import AssetCheckSeverity, materialize

from assets.harvest.catalog_rows import read_partition
from assets.harvest.records import state_relpath
from assets.ml.clip_features import (
    ENV_HARVEST_FEATURES,
    HARVEST_STATE,
    HarvestFeatures,
    features_relpath,
)
from assets.ml.dataset.snapshot import LATEST
from assets.ml.dataset.spec import SPLITS
from assets.ml_dataset import ml_dataset
from assets.run_manifest import run_manifest
from assets.sound_catalog import sound_catalog
from assets.sound_features import sound_features
from assets.sound_files import sound_files
from resources.camb_resource import CambResource
from resources.storage import Storage
from resources.storage_resource import StorageResource
from sandbox import run_state

from support.ml_clips import Clip, storage, write_catalog_day, write_features_day
from support.pipeline_kit import markdown_rows
from support.sandbox_api import SANDBOX_KEY

DAY = "2026-11-01"
ONE_PROCESS = {"ops": {"sound_features": {"config": {"workers": 1}}}}


@pytest.fixture
def dataset_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "datasets"
    monkeypatch.setenv("SOUNDHARVEST_DATASET_ROOT", str(root))
    return root


def read_features(resource, day: str = DAY) -> pd.DataFrame:
    with resource.catalog().open(features_relpath(day)) as file:
        return pd.read_parquet(file).set_index("run_id")


def dataset_config(**config) -> dict:
    return {"ops": {"ml_dataset": {"config": config}}}


def metadata_of(result, name: str) -> dict:
    [event] = result.asset_materializations_for_node(name)
    return {key: getattr(value, "value", value) for key, value in event.metadata.items()}


def test_features_then_a_snapshot_and_reruns_that_redo_nothing(tmp_path, dataset_root):
    resource = storage(tmp_path)
    clips = [Clip(i, prompt=f"sound number {i}") for i in range(1, 9)] + [Clip(9, silent=True)]
    failed = pd.DataFrame([{"run_id": 10, "status": "failed", "error": "API says failed"}])
    rows = write_catalog_day(resource, DAY, clips, extra=failed)
    broken = rows.set_index("run_id").loc[8, "uri"]
    Path(broken).write_bytes(b"RIFF\x24\x00\x00\x00WAVEnot audio at all" + bytes(16))

    result = materialize(
        [sound_features], partition_key=DAY, resources={"storage": resource}, run_config=ONE_PROCESS
    )
    features = read_features(resource)
    assert sorted(features.index) == list(range(1, 10))  # every ok row, not the failed one
    assert features.loc[8, "error"].startswith("cannot decode")
    assert features.drop(index=8)["error"].isna().all()
    assert bool(features.loc[9, "is_silent"]) and not features.loc[1:7, "is_silent"].any()
    assert set(features["computed_by"]) == {"sound_features"}
    assert metadata_of(result, "sound_features")["measured"] == 9

    again = materialize(
        [sound_features], partition_key=DAY, resources={"storage": resource}, run_config=ONE_PROCESS
    )
    meta = metadata_of(again, "sound_features")
    assert (meta["measured"], meta["kept"]) == (1, 8)  # only the undecodable one, tried again
    assert (meta["unreadable"], meta["file missing"]) == (1, 0)

    first = materialize([ml_dataset], resources={"storage": resource})
    meta = metadata_of(first, "ml_dataset")
    version = meta["version"]
    assert (dataset_root / LATEST).read_text().strip() == version
    assert Path(meta["card"]) == dataset_root / f"v={version}" / "README.md"
    clips = {split: meta[f"{split} clips"] for split in ("train", "validation", "test")}
    assert sum(clips.values()) == 7
    splits = {split: n for split, n, _ in markdown_rows(meta["splits"])}  # integers, not 7.0000
    assert splits == {**{split: str(n) for split, n in clips.items()}, "total": "7"}
    assert meta["written"] is True and meta["size (MiB)"] > 0
    assert meta["durations"].startswith("![clip durations](data:image/png;base64,iVBOR")
    assert dict(markdown_rows(meta["runs dropped"])) == {
        "file unreadable when measured": "1",
        "silent": "1",
    }

    second = metadata_of(materialize([ml_dataset], resources={"storage": resource}), "ml_dataset")
    assert (second["version"], second["written"]) == (version, False)


def test_one_giant_group_is_written_to_train_and_the_check_warns_naming_it(tmp_path, dataset_root):
    """Forty takes of one prompt and four other clips: the snapshot is written all the same,
    train holds the group, and the WARN check names it with its prompts, its size and the
    shares got against those asked. New groups then fill validation and test (stickiness
    keeps the group in train), and the check passes."""
    resource = storage(tmp_path)
    others = ["rain on a tin roof", "a cat purring", "door creaking", "owl hooting"]
    clips = [Clip(i, prompt=f"Explosion, take {i}") for i in range(1, 41)]
    clips += [Clip(100 + i, prompt=prompt) for i, prompt in enumerate(others)]
    write_features_day(resource, DAY, write_catalog_day(resource, DAY, clips))

    result = materialize([ml_dataset], resources={"storage": resource})

    meta = metadata_of(result, "ml_dataset")
    version = meta["version"]
    assert (dataset_root / LATEST).read_text().strip() == version
    assert meta["train clips"] >= 40 and sum(meta[f"{s} clips"] for s in SPLITS) == 44
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "split_shares" and not check.passed
    assert check.severity == AssetCheckSeverity.WARN
    assert check.description.startswith("Split shares more than 5 points off: train holds")
    assert "group 1: 40 runs (90.9%) in train, prompts 'Explosion, take 1' (1)" in check.description
    assert "and 37 more" in check.description and "(asked 80%)" in check.description
    largest = markdown_rows(check.metadata["largest groups"].value)
    assert largest[0][:4] == ["1", "40", "90.9%", "train"]
    card = (dataset_root / f"v={version}" / "README.md").read_text()
    assert "> **Warning:** Split shares more than 5 points off" in card
    assert "| 10-99            |        1 |     40 |" in card  # the group-size distribution

    day2 = [Clip(1000 + i, prompt=f"sound number {i} of a new kind") for i in range(60)]
    write_features_day(resource, "2026-11-02", write_catalog_day(resource, "2026-11-02", day2))
    again = materialize([ml_dataset], resources={"storage": resource})
    [check] = again.get_asset_check_evaluations()
    assert check.passed and check.description is None
    hf = dataset_root / f"v={metadata_of(again, 'ml_dataset')['version']}" / "hf"
    train = pd.concat(pd.read_parquet(path) for path in hf.glob("train-*.parquet"))
    assert set(range(1, 41)) <= set(train["run_id"])


@pytest.mark.parametrize("take_numbers", ["all", "trailing"])
def test_a_templated_sheet_is_one_group_in_train_only_when_every_number_is_left_out(
    tmp_path, dataset_root, take_numbers
):
    """Forty prompts that differ only in a number, two takes each. With every number left
    out (`take_numbers: all`, the rule before) they are one group: the snapshot is written,
    train holds all 80 clips (its HF Parquet and NeMo files there, the other splits' not),
    and the check warns naming the group and its prompts; the card shows one group of 10-99
    runs. By default the numbers ask for forty prompts: forty groups, shares as asked."""
    resource = storage(tmp_path)
    clips = [
        Clip(i + 1, prompt=f"prompt group {1 + i % 40}: thunder over a lake, take {1 + i // 40}")
        for i in range(80)
    ]
    write_features_day(resource, DAY, write_catalog_day(resource, DAY, clips))

    result = materialize(
        [ml_dataset],
        resources={"storage": resource},
        run_config=dataset_config(take_numbers=take_numbers),
    )

    meta = metadata_of(result, "ml_dataset")
    root = dataset_root / f"v={meta['version']}"
    assert (dataset_root / LATEST).read_text().strip() == meta["version"]
    [check] = result.get_asset_check_evaluations()
    card = (root / "README.md").read_text()
    sizes = markdown_rows(card.split("### Group sizes")[1].split("The largest groups")[0])
    if take_numbers == "trailing":
        assert check.passed
        assert [meta[f"{s} clips"] for s in SPLITS] == [64, 8, 8]
        assert sizes[-1] == ["2-9", "40", "80"]
        return
    assert [meta[f"{s} clips"] for s in SPLITS] == [80, 0, 0]
    assert [p.name for p in sorted((root / "hf").iterdir())] == ["train-00000-of-00001.parquet"]
    assert [p.name for p in sorted((root / "nemo").iterdir())] == ["train.jsonl"]
    assert not check.passed and check.severity == AssetCheckSeverity.WARN
    assert "validation is empty (asked 10%), test is empty (asked 10%)" in check.description
    named = "group 1: 80 runs (100.0%) in train, prompts 'prompt group 10: thunder over a lake"
    assert f"{named}, take 1' (1), 'prompt group 10: thunder" in check.description  # ties: A-Z
    assert "and 77 more" in check.description
    assert "> **Warning:** Split shares more than 5 points off" in card
    assert sizes[-1] == ["10-99", "1", "80"]


def failure_message(result) -> str:
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.step_failure_data.error.message


def test_bad_dataset_config_fails_at_once_naming_the_field(tmp_path, dataset_root):
    resource = storage(tmp_path)
    result = materialize(
        [ml_dataset],
        resources={"storage": resource},
        run_config=dataset_config(train_ratio=0.9, min_duration_s=3.0, max_duration_s=1.0),
        raise_on_error=False,
    )
    assert not result.success
    message = failure_message(result)
    assert "train_ratio, validation_ratio, test_ratio: must sum to 1, not 1.1" in message
    assert "min_duration_s: 3.0 is above max_duration_s 1.0" in message
    assert not dataset_root.exists()


def test_an_empty_selection_materializes_nothing_and_says_why(tmp_path, dataset_root):
    resource = storage(tmp_path)
    write_catalog_day(resource, DAY, [Clip(1), Clip(2)])
    result = materialize(
        [ml_dataset],
        resources={"storage": resource},
        run_config=dataset_config(audio_types=["music"], drop_silent=False),
    )
    assert result.success
    assert not result.asset_materializations_for_node("ml_dataset")
    [observation] = result.asset_observations_for_node("ml_dataset")
    why = observation.metadata["no_snapshot"].value
    assert why == "every one of 2 ok runs was filtered out: 2 another audio type"
    [check] = result.get_asset_check_evaluations()  # the check says so too
    assert not check.passed and check.severity == AssetCheckSeverity.WARN
    assert check.description == f"no snapshot written: {why}"
    assert not dataset_root.exists()


def test_a_sandbox_harvest_feeds_features_and_a_dataset(sandbox, tmp_path, dataset_root):
    """WAV, FLAC and MP3 deliveries, stored as WAV, measured and exported."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    run_ids = list(range(3000, 3024))
    lines = ["run_id,prompt,audio_type"] + [f"{i},sound {i % 6},sound" for i in run_ids]
    (manifests / f"{DAY}.csv").write_text("\n".join(lines) + "\n")
    resource = storage(tmp_path)
    camb = CambResource(
        api_key=SANDBOX_KEY, base_url=sandbox.base_url, download_allow_hosts="127.0.0.1"
    )
    harvest = materialize(
        [run_manifest, sound_files, sound_catalog, sound_features],
        partition_key=DAY,
        resources={"camb": camb, "storage": resource},
        run_config=ONE_PROCESS,
    )
    assert harvest.success
    ready = [i for i in run_ids if run_state(i) == "ready"]
    features = read_features(resource)
    assert sorted(features.index) == ready
    assert features["error"].isna().all() and features["lufs"].notna().all()
    assert set(features["computed_by"]) == {"sound_features"}  # local disk: not at harvest

    result = materialize(
        [ml_dataset],
        resources={"storage": resource},
        run_config=dataset_config(mode="embedded", formats=["hf"], drop_silent=False),
    )
    version = metadata_of(result, "ml_dataset")["version"]
    shards = sorted(str(p) for p in (dataset_root / f"v={version}" / "hf").glob("*.parquet"))
    loaded = datasets.load_dataset(
        "parquet", data_files=shards, split="train", cache_dir=str(tmp_path / "hf-cache")
    ).cast_column("audio", datasets.Audio(decode=False))
    assert sorted(loaded["run_id"]) == ready
    for row in loaded:
        audio, rate = sf.read(io.BytesIO(row["audio"]["bytes"]))
        assert rate == row["sample_rate"] and len(audio) > 0


def test_on_object_storage_the_harvest_measures_each_fresh_file(
    sandbox, tmp_path, s3_bucket, monkeypatch
):
    options = f'{{"s3": {{"endpoint_url": "{s3_bucket.endpoint_url}"}}}}'
    monkeypatch.setenv("SOUNDHARVEST_STORAGE_OPTIONS", options)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    run_ids = list(range(3100, 3112))
    (manifests / f"{DAY}.csv").write_text("run_id\n" + "\n".join(map(str, run_ids)) + "\n")
    resource = StorageResource(
        manifest_root=str(manifests),
        audio_root=f"{s3_bucket.url}/audio",
        catalog_root=f"{s3_bucket.url}/catalog",
    )
    camb = CambResource(
        api_key=SANDBOX_KEY, base_url=sandbox.base_url, download_allow_hosts="127.0.0.1"
    )
    resources = {"camb": camb, "storage": resource}
    ready = [i for i in run_ids if run_state(i) == "ready"]

    result = materialize(
        [run_manifest, sound_files, sound_catalog, sound_features],
        partition_key=DAY,
        resources=resources,
        run_config=ONE_PROCESS,
    )

    meta = metadata_of(result, "sound_features")
    assert (meta["from harvest"], meta["measured"]) == (len(ready), 0)  # nothing read back
    features = read_features(resource)
    assert sorted(features.index) == ready
    assert set(features["computed_by"]) == {"harvest"} and features["lufs"].notna().all()

    # Other thresholds: the stored files are read back from the bucket and measured again.
    stricter = {"ops": {"sound_features": {"config": {"workers": 1, "silence_window_ms": 20}}}}
    again = materialize(
        [sound_features], partition_key=DAY, resources=resources, run_config=stricter
    )
    meta = metadata_of(again, "sound_features")
    assert (meta["from harvest"], meta["measured"], meta["unreadable"]) == (0, len(ready), 0)
    remeasured = read_features(resource)
    assert set(remeasured["computed_by"]) == {"sound_features"}
    assert remeasured["lufs"].tolist() == pytest.approx(features["lufs"].tolist())

    # The snapshot reads the catalog from the bucket and writes back to it, clips included.
    monkeypatch.setenv("SOUNDHARVEST_DATASET_ROOT", f"{s3_bucket.url}/datasets")
    config = dataset_config(formats=["hf", "nemo", "webdataset"], drop_silent=False)
    built = metadata_of(
        materialize([ml_dataset], resources=resources, run_config=config), "ml_dataset"
    )
    latest = Storage(f"{s3_bucket.url}/datasets").read_bytes(LATEST).decode().strip()
    assert latest == built["version"]
    assert sum(built[f"{split} clips"] for split in ("train", "validation", "test")) == len(ready)
    tars = [k for k in s3_bucket.keys() if k.startswith(f"datasets/v={latest}/webdataset/")]  # noqa: SIM118
    assert tars and all(k.endswith(".tar") for k in tars)


def harvest_day(sandbox, tmp_path: Path, run_ids: list[int]):
    manifests = tmp_path / "manifests"
    manifests.mkdir(exist_ok=True)
    (manifests / f"{DAY}.csv").write_text("run_id\n" + "\n".join(map(str, run_ids)) + "\n")
    resources = {
        "camb": CambResource(
            api_key=SANDBOX_KEY, base_url=sandbox.base_url, download_allow_hosts="127.0.0.1"
        ),
        "storage": storage(tmp_path),
    }
    return materialize(
        [run_manifest, sound_files, sound_catalog],
        partition_key=DAY,
        resources=resources,
        raise_on_error=False,
    )


@pytest.mark.parametrize("where", ["measuring", "saving"])
def test_features_failing_at_harvest_never_fail_the_day(sandbox, tmp_path, monkeypatch, where):
    monkeypatch.setenv(ENV_HARVEST_FEATURES, "always")
    harvested = tmp_path / "catalog" / state_relpath(HARVEST_STATE, DAY)
    if where == "measuring":
        monkeypatch.setattr(HarvestFeatures, "add", lambda *args: 1 / 0)
    else:
        harvested.mkdir(parents=True)  # a directory where the file goes: it cannot be written
    run_ids = list(range(3200, 3212))

    result = harvest_day(sandbox, tmp_path, run_ids)

    assert result.success
    catalog = read_partition(storage(tmp_path).catalog().fs, str(tmp_path / "catalog"), DAY)
    ready = [i for i in run_ids if run_state(i) == "ready"]
    assert sorted(catalog.loc[catalog.status == "ok", "run_id"]) == ready
    assert not harvested.is_file()


def test_a_bad_harvest_features_setting_fails_at_once_naming_it(sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_HARVEST_FEATURES, "sometimes")

    result = harvest_day(sandbox, tmp_path, [3300, 3301])

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.user_failure_data.description
    assert message == f"{ENV_HARVEST_FEATURES} must be auto, always or never, not 'sometimes'"
    assert sandbox.stats()["api_requests"] == 0 and not (tmp_path / "audio").exists()
