"""Prompt sheets read and checked, as plain files on disk: every bad row with its reason, the
defaults, the key's normalization, takes, duplicates within a day, and sheets that cannot be
parsed."""

import json

import fsspec
import pandas as pd
import pytest

from assets.generation.keys import Request, normalize_prompt
from assets.generation.limits import GenerationLimits
from assets.generation.prompt_sheets import PromptSheetError, load_sheets
from resources.error_kinds import SettingError

from support import PROJECT
from support.generation_kit import DAY, write_sheet

LIMITS = GenerationLimits()
DEMO_DAY = "2026-11-04"  # pipelines/demo.py's PROMPT_DAY


def load(tmp_path, limits: GenerationLimits = LIMITS):
    return load_sheets(fsspec.filesystem("file"), str(tmp_path), DAY, limits)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": "  \t "}, "prompt is empty"),
        ({"prompt": "x" * 1001}, "prompt of 1001 characters (at most 1000: "
         "SOUNDHARVEST_GENERATE_MAX_PROMPT_CHARS)"),
        ({"prompt": "bell\x07 rings"}, "prompt holds a control character ('\\x07')"),
        ({"prompt": "rain", "duration": "long"}, "duration 'long' is not a number"),
        ({"prompt": "rain", "duration": "0.2"}, "duration 0.2 s is outside 0.5..30 s"),
        ({"prompt": "rain", "duration": "45"}, "duration 45 s is outside 0.5..30 s"),
        ({"prompt": "rain", "duration": "nan"}, "duration 'nan' is not a number"),
        ({"prompt": "rain", "audio_type": "speech"}, "audio_type 'speech' is not sound or music"),
        ({"prompt": "rain", "takes": "0"}, "takes 0 is not within 1..10"),
        ({"prompt": "rain", "takes": "11"}, "takes 11 is not within 1..10"),
        ({"prompt": "rain", "takes": "2.5"}, "takes '2.5' is not a whole number"),
        ({"prompt": "rain", "takes": "many"}, "takes 'many' is not a whole number"),
    ],
)  # fmt: skip
def test_a_bad_row_is_rejected_with_its_reason_and_no_request(tmp_path, row, reason) -> None:
    write_sheet(tmp_path, DAY, [row, {"prompt": "a good row"}])
    bad, good = load(tmp_path)
    assert bad.request is None and bad.error.startswith(reason)
    assert bad.line == 2 and good.request is not None and good.error is None


def test_empty_cells_take_the_defaults_and_other_columns_are_carried(tmp_path) -> None:
    write_sheet(tmp_path, DAY, [{"prompt": "rain", "mood": "calm", "source": ""}])
    [row] = load(tmp_path)
    assert row.request == Request("rain", None, "sound", 1)  # no duration: the API's default
    assert json.loads(row.extra) == {"mood": "calm"}


def test_a_row_asks_for_its_takes_each_its_own_generation(tmp_path) -> None:
    write_sheet(tmp_path, DAY, [{"prompt": "door slam", "duration": 1.5, "takes": 3}])
    rows = load(tmp_path)
    assert [row.request.take for row in rows] == [1, 2, 3]
    assert {row.line for row in rows} == {2}
    assert len({row.request.base for row in rows}) == 3


def test_the_key_forgives_spacing_and_unicode_forms_not_case(tmp_path) -> None:
    composed, decomposed = "caf\u00e9 ambience", "cafe\u0301 ambience"
    write_sheet(
        tmp_path,
        DAY,
        [
            {"prompt": composed, "duration": "2"},
            {"prompt": f"  {decomposed}\n", "duration": "2.04"},  # the same generation
            {"prompt": "CAF\u00c9 AMBIENCE", "duration": "2"},  # another one
            {"prompt": composed, "duration": "2", "audio_type": "Music"},  # another type
        ],
    )
    first, twin, shouting, music = load(tmp_path)
    assert normalize_prompt(f"  {decomposed}\n") == composed
    assert twin.duplicate_of == f"{tmp_path / DAY}.csv:2"
    assert first.duplicate_of is shouting.duplicate_of is music.duplicate_of is None
    assert music.request.audio_type == "music"


def test_duplicates_across_the_sheets_of_one_day_name_the_first(tmp_path) -> None:
    write_sheet(tmp_path, DAY, ["rain", "wind"], name="a.csv")
    write_sheet(tmp_path, DAY, ["wind", {"prompt": "rain", "takes": 2}], name="b.csv")
    rows = load(tmp_path)
    assert [(r.request.prompt, r.duplicate_of) for r in rows] == [
        ("rain", None),
        ("wind", None),
        ("wind", f"{tmp_path / DAY / 'a.csv'}:3"),
        ("rain", f"{tmp_path / DAY / 'a.csv'}:2"),  # take 1 is a's row
        ("rain", None),  # take 2 is new
    ]


def test_jsonl_and_parquet_sheets_read_as_csv_does(tmp_path) -> None:
    folder = tmp_path / DAY
    folder.mkdir()
    (folder / "s.jsonl").write_text(
        json.dumps({"prompt": "rain", "duration": 3, "takes": 2}) + "\n"
        + json.dumps({"prompt": "wind", "audio_type": "music", "tags": ["a", "b"]}) + "\n"
    )  # fmt: skip
    pd.DataFrame({"prompt": ["hail", None], "duration": [1.0, 2.0]}).to_parquet(
        folder / "t.parquet"
    )
    rows = load(tmp_path)
    assert [(r.request and r.request.prompt, r.error) for r in rows] == [
        ("rain", None), ("rain", None), ("wind", None), ("hail", None), (None, "prompt is empty"),
    ]  # fmt: skip
    assert json.loads(rows[2].extra) == {"tags": ["a", "b"]}


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        ('prompt,duration\n"rain,2\n', 2, "malformed CSV"),
        ("prompt,duration\nrain,2,3\n", 2, "expected 2 fields, saw 3"),
        ("text,duration\nrain,2\n", 1, "no prompt column"),
    ],
)
def test_a_sheet_that_cannot_be_parsed_names_its_file_and_line(
    tmp_path, content, line, reason
) -> None:
    (tmp_path / f"{DAY}.csv").write_text(content)
    with pytest.raises(PromptSheetError) as raised:
        load(tmp_path)
    assert (raised.value.line, raised.value.path) == (line, str(tmp_path / f"{DAY}.csv"))
    assert reason in raised.value.reason
    assert (
        raised.value.fix
        == f"fix line {line} of that file (or remove it), then generate the day again"
    )


def test_a_file_of_unknown_format_in_the_day_folder_fails_the_day(tmp_path) -> None:
    (tmp_path / DAY).mkdir()
    (tmp_path / DAY / "notes.txt").write_text("hello")
    with pytest.raises(PromptSheetError, match="unknown manifest format"):
        load(tmp_path)


def test_a_day_without_sheets_has_no_rows(tmp_path) -> None:
    assert load(tmp_path) == []


def test_row_rules_follow_their_settings(tmp_path) -> None:
    limits = GenerationLimits.from_env(
        {
            "SOUNDHARVEST_GENERATE_MAX_PROMPT_CHARS": "5",
            "SOUNDHARVEST_GENERATE_MAX_DURATION_S": "60",
            "SOUNDHARVEST_GENERATE_MAX_TAKES": "2",
        }
    )
    write_sheet(tmp_path, DAY, [{"prompt": "rainy", "duration": 45, "takes": 2}, "stormy"])
    first, take2, long = load(tmp_path, limits)
    assert first.request.duration == 45.0 and take2.request.take == 2
    assert long.error.startswith("prompt of 6 characters (at most 5")


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"SOUNDHARVEST_GENERATE_PER_DAY": "lots"}, "SOUNDHARVEST_GENERATE_PER_DAY"),
        ({"SOUNDHARVEST_GENERATE_PER_DAY": "2.5"}, "SOUNDHARVEST_GENERATE_PER_DAY"),
        ({"SOUNDHARVEST_GENERATE_SECONDS_PER_MONTH": "-1"}, "SECONDS_PER_MONTH"),
        ({"SOUNDHARVEST_GENERATE_MIN_DURATION_S": "40"}, "MIN_DURATION_S"),
        ({"SOUNDHARVEST_GENERATE_MAX_TAKES": "0"}, "MAX_TAKES"),
    ],
)
def test_a_bad_setting_is_the_operators_mistake_naming_it(environ, named) -> None:
    with pytest.raises(SettingError) as raised:
        GenerationLimits.from_env(environ)
    assert named in str(raised.value) and raised.value.setting.endswith(named)


def test_the_demos_sheet_holds_what_make_demo_says() -> None:
    """`make demo` and the README show this sheet: two takes, one bad row, one duplicate."""
    rows = load_sheets(fsspec.filesystem("file"), str(PROJECT / "data/prompts"), DEMO_DAY, LIMITS)

    sent = [(row.line, row.request.take) for row in rows if row.request and not row.duplicate_of]
    assert sent == [(2, 1), (2, 2), (3, 1), (4, 1), (5, 1)]
    [bad] = [row for row in rows if row.request is None]
    assert bad.line == 6 and bad.error.startswith("duration 90 s is outside 0.5..30 s")
    assert bad.text == "a crowd cheering in a stadium"
    [twin] = [row for row in rows if row.duplicate_of]
    assert twin.line == 7 and twin.duplicate_of.endswith("2026-11-04.csv:3")
    assert json.loads(twin.extra) == {"project": "game-sfx"}
