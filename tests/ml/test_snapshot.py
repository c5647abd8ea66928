"""Dataset snapshots on disk: HF Parquet through `datasets`, NeMo, WebDataset, card, LATEST."""

import hashlib
import io
import json
from pathlib import Path

import datasets
import pandas as pd
import pytest
import soundfile as sf
import webdataset as wds
import yaml

from assets.ml.dataset import exports, snapshot
from assets.ml.dataset.exports import SnapshotError
from assets.ml.dataset.snapshot import LATEST, MANIFEST, build_snapshot, read_latest
from assets.ml.dataset.spec import SPLITS, DatasetSpec
from resources.storage import Storage

from support.ml_clips import Clip, storage, write_catalog_day, write_features_day

DAYS = ("2026-11-01", "2026-11-02", "2026-11-03")
SOUNDS = ["a dog barks", "rain on a tin roof", "door creaks", "crowd cheering"]


def clips_of(day_index: int) -> list[Clip]:
    base = 1000 * (day_index + 1)
    clips = [
        Clip(
            base + i,
            seconds=0.5 + 0.25 * (i % 4),
            rate=(16000, 22050, 44100)[i % 3],
            channels=1 + i % 2,
            prompt=f"{SOUNDS[i % 4]} {(base + i) % 11}" if i % 7 else None,
            audio_type="music" if i % 6 == 0 else "sound",
        )
        for i in range(10)
    ]
    clips[3].silent = True
    return clips


def add_day(resource, index: int) -> pd.DataFrame:
    rows = write_catalog_day(resource, DAYS[index], clips_of(index))
    write_features_day(resource, DAYS[index], rows)
    return rows


@pytest.fixture
def catalog(tmp_path):
    """Two days of clips with their features; returns (storage resource, catalog rows)."""
    resource = storage(tmp_path)
    rows = pd.concat([add_day(resource, 0), add_day(resource, 1)], ignore_index=True)
    return resource, rows.set_index("run_id")


EVEN = {"train_ratio": 0.5, "validation_ratio": 0.25, "test_ratio": 0.25}


def build(tmp_path, resource, **config):
    """A snapshot under tmp_path/datasets; even splits, so that a few clips fill all three."""
    config = {**EVEN, **config}
    out = Storage(str(tmp_path / "datasets"))
    return out, build_snapshot(resource.catalog(), out, DatasetSpec(**config))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def text_of(stored: pd.Series) -> str:
    return "" if pd.isna(stored["prompt"]) else stored["prompt"]


def hf_split(path: Path, split: str, cache: Path) -> datasets.Dataset:
    files = sorted(str(p) for p in (path / "hf").glob(f"{split}-*.parquet"))
    return datasets.load_dataset(
        "parquet", data_files={split: files}, split=split, cache_dir=str(cache)
    )


@pytest.mark.parametrize("mode", ["reference", "embedded"])
def test_hf_parquet_loads_through_datasets_typed_as_audio(tmp_path, catalog, mode):
    resource, rows = catalog
    _, built = build(tmp_path, resource, mode=mode, shard_max_bytes=100_000)
    path = Path(built.uri)

    assert all(built.manifest["counts"].values())
    seen = []
    for split in SPLITS:
        shards = sorted((path / "hf").glob(f"{split}-*.parquet"))
        if not built.manifest["counts"][split]:
            assert not shards
            continue
        assert [p.name for p in shards] == [
            f"{split}-{i:05d}-of-{len(shards):05d}.parquet" for i in range(len(shards))
        ]
        loaded = hf_split(path, split, tmp_path / "hf-cache")
        assert isinstance(loaded.features["audio"], datasets.Audio)  # typed with no cast
        assert len(loaded) == built.manifest["counts"][split]
        for row in loaded.cast_column("audio", datasets.Audio(decode=False)):
            stored = rows.loc[row["run_id"]]
            audio = row["audio"]
            if mode == "reference":
                assert audio["bytes"] is None and audio["path"] == stored["uri"]
                data = Path(audio["path"]).read_bytes()
            else:
                assert audio["path"] == f"{row['run_id']}.wav"
                data = audio["bytes"]
            assert sha256(data) == stored["sha256"] == row["sha256"]
            samples, rate = sf.read(io.BytesIO(data))
            assert (rate, len(samples)) == (stored["sample_rate"], stored["frames"])
            assert row["text"] == text_of(stored)
            assert row["duration"] == pytest.approx(stored["duration_s"])
            assert row["lufs"] is not None and row["is_silent"] is False
            seen.append(row["run_id"])
    assert sorted(seen) == sorted(built.selection.rows["run_id"].to_pylist())
    if mode == "embedded":  # 100 kB shards: the train split needs several
        assert len(list((path / "hf").glob("train-*.parquet"))) > 1


def test_webdataset_shards_read_back_equal_to_the_stored_files(tmp_path, catalog):
    resource, rows = catalog
    limit = 100_000
    _, built = build(tmp_path, resource, formats=["webdataset"], shard_max_bytes=limit)
    shards = sorted((Path(built.uri) / "webdataset").glob("*.tar"))
    assert len(shards) > len([n for n in built.manifest["counts"].values() if n])

    seen = []
    for shard in shards:
        samples = list(wds.WebDataset(str(shard), shardshuffle=False, empty_check=False))
        wav_bytes = [len(s["wav"]) for s in samples]
        assert sum(wav_bytes) <= limit or len(samples) == 1
        for sample in samples:
            meta = json.loads(sample["json"])
            run_id = int(sample["__key__"])
            assert meta["run_id"] == run_id and meta["split"] == shard.name.split("-")[0]
            assert sha256(sample["wav"]) == rows.loc[run_id, "sha256"] == meta["sha256"]
            seen.append(run_id)
    assert sorted(seen) == sorted(built.selection.rows["run_id"].to_pylist())


def test_nemo_lines_point_at_files_that_exist_with_their_durations(tmp_path, catalog):
    resource, rows = catalog
    _, built = build(tmp_path, resource, formats=["nemo"])
    total = 0
    for split in SPLITS:
        path = Path(built.uri) / "nemo" / f"{split}.jsonl"
        if not built.manifest["counts"][split]:
            assert not path.exists()
            continue
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(lines) == built.manifest["counts"][split]
        for line in lines:
            assert set(line) == {
                "audio_filepath",
                "duration",
                "text",
                "run_id",
                "group_id",
                "audio_type",
                "task_id",
            }
            info = sf.info(line["audio_filepath"])
            assert line["duration"] == pytest.approx(info.duration)
            assert line["text"] == text_of(rows.loc[line["run_id"]])
        total += len(lines)
    assert total == built.selection.rows.num_rows
    assert not (Path(built.uri) / "hf").exists()


def exported_groups(root: Path, cache: Path) -> dict[str, dict[int, int]]:
    """run id -> group id as each export of the snapshot at ``root`` says."""
    found: dict[str, dict[int, int]] = {"hf": {}, "nemo": {}, "webdataset": {}}
    for split in SPLITS:
        if list((root / "hf").glob(f"{split}-*.parquet")):
            loaded = hf_split(root, split, cache).cast_column("audio", datasets.Audio(decode=False))
            found["hf"] |= dict(zip(loaded["run_id"], loaded["group_id"], strict=True))
        nemo = root / "nemo" / f"{split}.jsonl"
        if nemo.exists():
            lines = [json.loads(line) for line in nemo.read_text().splitlines()]
            found["nemo"] |= {line["run_id"]: line["group_id"] for line in lines}
    for shard in sorted((root / "webdataset").glob("*.tar")):
        for sample in wds.WebDataset(str(shard), shardshuffle=False, empty_check=False):
            meta = json.loads(sample["json"])
            found["webdataset"][meta["run_id"]] = meta["group_id"]
    return found


def test_every_export_carries_a_group_id_that_stays_across_snapshots(tmp_path, catalog):
    """HF Parquet (read back with `datasets`), NeMo JSONL and WebDataset samples carry the
    group id of the snapshot's own rows, which the assignments file keeps; a run keeps its
    id in the next snapshot, and new runs of a group (day 3: the same four sounds, other
    takes) take its id."""
    resource, _ = catalog
    formats = {"formats": ["hf", "nemo", "webdataset"]}
    out, first = build(tmp_path, resource, **formats)
    add_day(resource, 2)
    _, second = build(tmp_path, resource, **formats)

    groups = []
    for built in (first, second):
        rows = built.selection.rows
        own = dict(zip(rows["run_id"].to_pylist(), rows["group_id"].to_pylist(), strict=True))
        exported = exported_groups(Path(built.uri), tmp_path / "hf-cache")
        assert exported == {"hf": own, "nemo": own, "webdataset": own}
        groups.append(own)
    state = snapshot.read_assignments(out, DatasetSpec(**EVEN))
    assert state is not None
    assert dict(zip(state["run_id"], state["group_id"], strict=True)) == groups[1]
    before, after = groups
    assert {run: after[run] for run in before} == before
    text = dict(
        zip(*(second.selection.rows[c].to_pylist() for c in ("run_id", "text")), strict=True)
    )
    prompted = {run: group for run, group in after.items() if run not in before and text[run]}
    assert prompted and set(prompted.values()) <= set(before.values())  # they joined
    sizes = pd.Series(list(after.values())).value_counts()
    assert sizes.max() > 1 and len(sizes) > 3  # groups of several runs, and several groups


def test_unchanged_input_gives_the_same_version_and_writes_nothing(tmp_path, catalog):
    resource, _ = catalog
    out, first = build(tmp_path, resource, formats=["hf", "nemo", "webdataset"])
    files = {p: p.stat().st_mtime_ns for p in Path(out.root).rglob("*") if p.is_file()}

    _, again = build(tmp_path, resource, formats=["hf", "nemo", "webdataset"])

    assert (again.version, again.written, first.written) == (first.version, False, True)
    assert {p: p.stat().st_mtime_ns for p in Path(out.root).rglob("*") if p.is_file()} == files
    assert read_latest(out) == first.version


class Crash(Exception):
    pass


def test_a_crash_mid_snapshot_leaves_latest_on_the_previous_version(tmp_path, catalog, monkeypatch):
    resource, _ = catalog
    config = {"formats": ["hf", "nemo", "webdataset"]}
    out, first = build(tmp_path, resource, **config)
    add_day(resource, 2)
    published = []
    real_publish = exports.SnapshotFiles.publish

    def publish_then_crash(self, local, path):
        if len(published) == 4:
            raise Crash("killed mid-snapshot")
        published.append(path)
        return real_publish(self, local, path)

    monkeypatch.setattr(exports.SnapshotFiles, "publish", publish_then_crash)
    with pytest.raises(Crash):
        build(tmp_path, resource, **config)

    assert read_latest(out) == first.version
    unfinished = [p for p in Path(out.root).glob("v=*") if p.name != f"v={first.version}"]
    assert len(unfinished) == 1 and not (unfinished[0] / MANIFEST).exists()
    assert len(list(unfinished[0].rglob("*.*"))) == 4  # whole files only, no temporaries

    monkeypatch.undo()
    _, second = build(tmp_path, resource, **config)
    assert unfinished[0].name == f"v={second.version}" and second.written
    assert read_latest(out) == second.version
    for entry in second.manifest["files"]:
        data = (unfinished[0] / entry["path"]).read_bytes()
        assert (len(data), sha256(data)) == (entry["size"], entry["sha256"])


def test_latest_does_not_move_when_a_written_file_is_not_in_place(tmp_path, catalog, monkeypatch):
    resource, _ = catalog
    out, first = build(tmp_path, resource)
    add_day(resource, 2)
    monkeypatch.setattr(snapshot, "misplaced", lambda out, prefix, manifest: ["nemo/test.jsonl"])
    with pytest.raises(SnapshotError, match=r"not in place after writing: \['nemo/test.jsonl'\]"):
        build(tmp_path, resource)
    assert read_latest(out) == first.version


def test_a_stored_file_changed_behind_the_catalog_fails_the_snapshot(tmp_path, catalog):
    resource, rows = catalog
    out, first = build(tmp_path, resource)
    run_id = int(rows.index[0])
    Path(rows.loc[run_id, "uri"]).write_bytes(b"RIFF....WAVE not the same any more")
    with pytest.raises(SnapshotError, match=f"run {run_id}: the stored file .* no longer matches"):
        build(tmp_path, resource, mode="embedded")
    assert read_latest(out) == first.version


def test_resampled_mono_exports_leave_the_originals_alone(tmp_path, catalog):
    resource, rows = catalog
    before = {uri: Path(uri).read_bytes() for uri in rows["uri"]}
    _, built = build(
        tmp_path,
        resource,
        mode="embedded",
        formats=["hf", "webdataset"],
        target_sample_rate=8000,
        mono=True,
    )
    samples = [
        s
        for shard in sorted((Path(built.uri) / "webdataset").glob("*.tar"))
        for s in wds.WebDataset(str(shard), shardshuffle=False, empty_check=False)
    ]
    assert samples
    for sample in samples:
        stored = rows.loc[int(sample["__key__"])]
        audio, rate = sf.read(io.BytesIO(sample["wav"]), always_2d=True)
        assert (rate, audio.shape[1]) == (8000, 1)
        assert len(audio) == pytest.approx(stored["frames"] * 8000 / stored["sample_rate"], abs=2)
        meta = json.loads(sample["json"])
        assert (meta["sample_rate"], meta["channels"]) == (8000, 1)
    loaded = hf_split(Path(built.uri), "train", tmp_path / "hf-cache")
    assert set(loaded["sample_rate"]) == {8000} and set(loaded["channels"]) == {1}
    assert {uri: Path(uri).read_bytes() for uri in rows["uri"]} == before


def test_the_card_has_hf_front_matter_counts_and_plots(tmp_path, catalog):
    resource, _ = catalog
    _, built = build(tmp_path, resource)
    root = Path(built.uri)
    text = (root / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["task_categories"] == ["text-to-audio"]
    assert meta["size_categories"] == ["n<1K"]
    [config] = meta["configs"]
    for entry in config["data_files"]:
        assert built.manifest["counts"][entry["split"]] > 0
        assert list(root.glob(entry["path"]))
    assert {e["split"] for e in config["data_files"]} == {
        s for s, n in built.manifest["counts"].items() if n
    }
    for split, count in built.manifest["counts"].items():
        assert f"| {split}" in body and str(count) in body
    for png in ("plots/duration.png", "plots/loudness.png"):
        assert f"({png})" in body
        assert (root / png).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    listed = {entry["path"] for entry in built.manifest["files"]}
    assert {"README.md", "plots/duration.png", "plots/loudness.png"} <= listed


def test_an_empty_selection_writes_nothing_and_leaves_latest_alone(tmp_path, catalog):
    resource, _ = catalog
    out, first = build(tmp_path, resource)
    before = sorted(Path(out.root).rglob("*"))

    _, empty = build(tmp_path, resource, audio_types=["music"], min_duration_s=100)

    assert empty.version is None and empty.uri is None
    assert "filtered out" in empty.selection.why_empty()
    assert sorted(Path(out.root).rglob("*")) == before
    assert (Path(out.root) / LATEST).read_text().strip() == first.version


def test_the_card_says_why_a_clip_has_no_features(tmp_path):
    """Was: 44 clips "without features (materialize sound_features)", though they had been
    measured: their files had gone missing."""
    resource = storage(tmp_path)
    measured = write_catalog_day(resource, DAYS[0], clips_of(0)).set_index("run_id")
    Path(measured.loc[1001, "uri"]).unlink()  # gone before the day was measured
    Path(measured.loc[1002, "uri"]).unlink()
    Path(measured.loc[1004, "uri"]).write_bytes(b"RIFF\x24\x00\x00\x00WAVEnot audio" + bytes(16))
    write_features_day(resource, DAYS[0], measured.reset_index())
    write_catalog_day(resource, DAYS[1], clips_of(1))  # a day not measured yet

    _, dropped = build(tmp_path, resource)  # drop_silent: clips need features
    _, kept = build(tmp_path, resource, drop_silent=False, formats=["nemo"])

    reasons = {
        "file missing when measured (rerun its day's harvest)": 2,
        "file unreadable when measured": 1,
        "not measured yet (materialize sound_features)": 10,
    }
    assert {why: dropped.selection.dropped[why] for why in reasons} == reasons
    card = (Path(dropped.uri) / "README.md").read_text()
    assert ", ".join(f"{why}: {n}" for why, n in reasons.items()) in card
    assert "materialize sound_features): 13" not in card
    # Kept without a quality filter (the second day's silent clip is the first day's audio).
    assert kept.selection.dropped["same audio as an earlier run"] == 1
    unmeasured = {**reasons, "not measured yet (materialize sound_features)": 9}
    assert kept.selection.without_features == unmeasured
    quality = (Path(kept.uri) / "README.md").read_text().split("## Quality")[1]
    assert quality.startswith(
        "\n\n7 of 19 clips measured, 1 silent. Without features: "
        + ", ".join(f"{n} {why}" for why, n in unmeasured.items())
    )
