"""Selection, splits and versions of ml_dataset, on catalog rows made up in memory."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pydantic
import pytest

from assets.ml.dataset.selection import select, snapshot_version
from assets.ml.dataset.spec import DatasetConfigError, DatasetSpec
from assets.ml.dataset.splits import normalise_prompt, split_of

from support import PROJECT
from support.ml_clips import feature_rows

PROMPTS = ["a dog barks", "rain on a tin roof", "door creaks", "crowd cheering", "sea waves"]
PROMPT_RULE = DatasetSpec(group_by="prompt")  # the rule before similarity groups


def rows(day: str, run_ids, **overrides) -> pd.DataFrame:
    """`ok` catalog rows with features, prompts of five sounds numbered up to 40."""
    run_ids = list(run_ids)
    prompts = [f"{PROMPTS[i % len(PROMPTS)]} {i % 40}" for i in run_ids]
    return feature_rows(day, run_ids, prompts, **overrides)


def chosen(frame: pd.DataFrame, spec: DatasetSpec):
    """select() on a pandas frame; its rows back as pandas."""
    selection = select(pl.from_pandas(frame), spec)
    return selection, selection.rows.to_pandas()


def splits_of(frame: pd.DataFrame, spec: DatasetSpec = PROMPT_RULE) -> dict[int, str]:
    _, picked = chosen(frame, spec)
    return dict(zip(picked["run_id"], picked["split"], strict=True))


def test_a_run_keeps_its_split_when_days_are_added_or_others_filtered_out():
    two_days = pd.concat([rows("2026-11-01", range(1, 301)), rows("2026-11-02", range(301, 601))])
    first = splits_of(two_days)
    assert set(first.values()) == {"train", "validation", "test"}

    three_days = pd.concat([two_days, rows("2026-11-03", range(601, 901))])
    later = splits_of(three_days)
    assert {run: later[run] for run in first} == first

    short = three_days.assign(duration_s=[0.5 if i % 3 else 2.0 for i in three_days["run_id"]])
    filtered = splits_of(short, DatasetSpec(group_by="prompt", min_duration_s=1.0))
    assert 0 < len(filtered) < len(later)
    assert {run: later[run] for run in filtered} == filtered


def test_no_prompt_lands_in_two_splits_however_it_is_written():
    frame = rows("2026-11-01", range(1, 1001))
    variants = ["{}", "  {} ", "{}".upper(), "{}\t", "{}".title()]
    frame["prompt"] = [
        variants[i % len(variants)].format(f"{PROMPTS[i % 5]} {i % 97}").replace(" ", "  ", i % 2)
        for i in range(1, 1001)
    ]
    frame.loc[frame.index[:10], "prompt"] = None  # no prompt: grouped by run id
    _, selected = chosen(frame, PROMPT_RULE)

    by_prompt = selected.groupby(selected["text"].map(normalise_prompt))["split"].nunique()
    assert by_prompt.drop(index="", errors="ignore").max() == 1
    assert by_prompt.drop(index="", errors="ignore").size == 5 * 97
    assert set(selected["split"]) == {"train", "validation", "test"}
    no_prompt = selected[selected["text"] == ""]  # grouped by run id: each its own draw
    assert len(no_prompt) == 10
    for row in no_prompt.itertuples():
        assert row.split == split_of(f"run:{row.run_id}", PROMPT_RULE)
    # the group id: one per normalised prompt, however written; the run id for none
    prompted = selected[selected["text"] != ""]
    ids = prompted.groupby(prompted["text"].map(normalise_prompt))["group_id"].agg(set)
    assert ids.map(len).max() == 1 and len(set().union(*ids)) == 5 * 97
    assert (no_prompt["group_id"] == no_prompt["run_id"]).all()
    assert not set(no_prompt["group_id"]) & set().union(*ids)
    _, alone = chosen(frame, DatasetSpec(group_by="run_id"))
    assert (alone["group_id"] == alone["run_id"]).all()


def test_normalised_prompts():
    got = [normalise_prompt(p) for p in ["A  Dog\tBarks ", "ａ dog barks", "STRASSE", None, " "]]
    assert got == ["a dog barks", "a dog barks", "strasse", "", ""]
    frame = rows("2026-11-01", [1, 2, 3], prompt=["Straße", "STRASSE", "strasse "])
    expected = split_of("prompt:strasse", PROMPT_RULE)
    assert set(splits_of(frame).values()) == {expected}


def test_splits_do_not_depend_on_the_interpreter_hash_seed():
    script = (
        f"import sys; sys.path[:0] = {[str(Path(__file__).parent), str(PROJECT / 'tests')]!r};"
        "from test_dataset import rows, splits_of;"
        "print(sorted(splits_of(rows('2026-11-01', range(1, 200))).items()))"
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=PROJECT,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in ("1", "2")
    ]
    outputs = {run.communicate(timeout=120)[0] for run in runs}
    assert [run.returncode for run in runs] == [0, 0]
    assert len(outputs) == 1 and "train" in outputs.pop()


def test_the_earliest_day_of_a_run_wins_and_exact_duplicates_go():
    day1 = rows("2026-11-01", [10, 11, 12])
    day2 = rows("2026-11-02", [11, 13, 14])  # run 11 again, a day later
    day2.loc[day2["run_id"] == 14, "sha256"] = day1.loc[day1["run_id"] == 10, "sha256"].iloc[0]
    frame = pd.concat([day2, day1])  # order of reading must not matter

    deduped, picked = chosen(frame, DatasetSpec())
    got = picked.set_index("run_id")
    assert sorted(got.index) == [10, 11, 12, 13]
    assert got.loc[11, "date"] == "2026-11-01"
    assert deduped.considered == 5
    assert deduped.dropped["same audio as an earlier run"] == 1

    _, kept = chosen(frame, DatasetSpec(dedupe_audio=False))
    assert sorted(kept["run_id"]) == [10, 11, 12, 13, 14]


def test_filters_drop_what_they_name_and_count_it():
    frame = rows("2026-11-01", range(1, 11))
    frame["duration_s"] = [0.5, 1, 2, 3, 4, 5, 6, 7, 8, 30]
    frame["audio_type"] = ["music", *["sound"] * 9]
    frame["sample_rate"] = pd.array([16000] * 9 + [48000], dtype="Int32")
    frame["channels"] = pd.array([1] * 8 + [2, 1], dtype="Int32")
    frame["is_silent"] = pd.array([False, True, *[False] * 8], dtype="boolean")
    frame["clipped_fraction"] = [0, 0, 0.5, *[0] * 7]
    frame["lufs"] = [-20, -20, -20, -60, -5, *[-20] * 5]
    frame.loc[5, "peak_dbfs"] = None  # never measured
    spec = DatasetSpec(
        min_duration_s=1,
        max_duration_s=10,
        audio_types=["sound"],
        sample_rates=[16000],
        channels=[1],
        max_clipped_fraction=0.1,
        min_lufs=-40,
        max_lufs=-10,
    )
    selection, picked = chosen(frame, spec)
    assert sorted(picked["run_id"]) == [7, 8]
    assert {why: n for why, n in selection.dropped.items() if n} == {
        "shorter than 1.0 s": 1,
        "longer than 10.0 s": 1,
        "another channel count": 1,
        "not measured yet (materialize sound_features)": 1,
        "silent": 1,
        "clipped": 1,
        "quieter than -40.0 LUFS": 1,
        "louder than -10.0 LUFS": 1,
    }


def test_rows_without_features_stay_when_no_quality_filter_asks_for_them():
    missing = {name: pd.array([None] * 5, dtype="Float64") for name in ("peak_dbfs", "lufs")}
    frame = rows("2026-11-01", range(1, 6), **missing, is_silent=pd.array([None] * 5, "boolean"))
    assert len(chosen(frame, DatasetSpec())[1]) == 0
    assert len(chosen(frame, DatasetSpec(drop_silent=False))[1]) == 5


def test_an_empty_selection_says_why():
    frame = rows("2026-11-01", range(1, 6))
    selection, picked = chosen(frame, DatasetSpec(audio_types=["music"]))
    assert picked.empty and selection.rows.num_rows == 0
    assert selection.why_empty() == "every one of 5 ok runs was filtered out: 5 another audio type"
    assert "no ok rows" in chosen(frame.iloc[:0], DatasetSpec())[0].why_empty()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"train_ratio": 0.7}, "train_ratio, validation_ratio, test_ratio: must sum to 1, not 0.9"),
        ({"validation_ratio": -0.1, "train_ratio": 1.0}, "validation_ratio: must be between"),
        ({"min_duration_s": 5, "max_duration_s": 2}, "min_duration_s: 5.0 is above max_dur"),
        ({"min_lufs": -10, "max_lufs": -30}, "min_lufs: -10.0 is above max_lufs -30.0"),
        ({"audio_types": ["sound", "speech"]}, "audio_types: unknown 'speech' (known: sound"),
        ({"formats": ["hf", "tfrecord"]}, "formats: unknown 'tfrecord' (known: hf, nemo, web"),
        ({"formats": []}, "formats: name at least one"),
        ({"target_sample_rate": 16000}, "target_sample_rate/mono: reference mode points at"),
        ({"mono": True}, "target_sample_rate/mono: reference mode"),
        ({"shard_max_bytes": 0, "mode": "embedded"}, "shard_max_bytes: must be above 0"),
        ({"max_clipped_fraction": 2.0}, "max_clipped_fraction: must be between 0 and 1"),
    ],
)
def test_bad_config_fails_naming_the_field(config, message):
    with pytest.raises(DatasetConfigError, match=message.replace("(", r"\(")):
        DatasetSpec(**config).check()


def test_unknown_choices_are_refused_when_the_spec_is_built():
    with pytest.raises(pydantic.ValidationError, match="mode"):
        DatasetSpec(mode="inline")
    assert DatasetSpec(mode="embedded", target_sample_rate=16000, mono=True).check()


def version_of(frame: pd.DataFrame, spec: DatasetSpec) -> str:
    return snapshot_version(chosen(frame, spec)[0].rows, spec)


def test_the_version_follows_the_content_and_nothing_else():
    frame = pd.concat([rows("2026-11-01", range(1, 51)), rows("2026-11-02", range(51, 101))])
    spec = DatasetSpec()
    version = version_of(frame, spec)
    assert len(version) == 16
    # Same rows read in another order, or arriving in other Arrow chunks: same version.
    assert version_of(frame.sample(frac=1, random_state=3), spec) == version
    table = chosen(frame, spec)[0].rows
    rechunked = pa.concat_tables([table.slice(0, 7), table.slice(7)])
    assert snapshot_version(rechunked, spec) == version
    # Another file for one run, another split config, another row: new versions.
    changed = frame.copy()
    changed.loc[changed["run_id"] == 7, "sha256"] = "e" * 64
    assert version_of(changed, spec) != version
    assert version_of(frame, DatasetSpec(split_seed="other")) != version
    assert version_of(frame.iloc[1:], spec) != version
