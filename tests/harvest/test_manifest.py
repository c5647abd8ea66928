"""Manifest discovery, parsing and validation on local disk and on fsspec's memory filesystem."""

import importlib.util
import json
import pickle
import uuid
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.harvest.catalog_schema import MANIFEST_COLUMNS, MANIFEST_SCHEMA
from assets.harvest.manifest_files import (
    ManifestError,
    load_day,
    manifest_files,
    read_manifest,
)

from support import PROJECT

DAY = "2026-11-01"


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    """(fs, root) on local disk or in memory; the memory root is unique and removed after."""
    if request.param == "local":
        yield fsspec.filesystem("file"), str(tmp_path)
        return
    fs = fsspec.filesystem("memory")
    root = f"memory://manifests-{uuid.uuid4().hex}"
    yield fs, root
    fs.rm(root, recursive=True)


@pytest.fixture
def local(tmp_path):
    return fsspec.filesystem("file"), str(tmp_path)


def put(fs, root: str, name: str, content: str | bytes) -> str:
    path = f"{root}/{name}"
    fs.makedirs(fs._parent(path), exist_ok=True)
    fs.pipe(path, content.encode() if isinstance(content, str) else content)
    return path


def put_parquet(fs, root: str, name: str, table: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return put(fs, root, name, sink.getvalue().to_pybytes())


def jsonl(*records) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def expected_name(fs, path: str) -> str:
    """The name rows and errors use for a file (checked independently in its own test)."""
    stripped = fs._strip_protocol(path)
    return stripped if fs.protocol != "memory" else f"memory://{stripped}"


# --- discovery ------------------------------------------------------------------------------


def test_manifest_files_finds_both_layouts_and_skips_temporary_names(store):
    fs, root = store
    for name in [
        f"{DAY}/b.csv",
        f"{DAY}/a.jsonl",
        f"{DAY}/nested/c.ndjson",
        f"{DAY}/d.PARQUET",
        f"{DAY}/.e.csv.tmp-123",  # skipped: dot file (an upload in progress)
        f"{DAY}/_SUCCESS",  # skipped: underscore file
        f"{DAY}/.hidden/f.csv",  # skipped: inside a dot folder
        f"{DAY}/_tmp/g.csv",  # skipped: inside an underscore folder
        f"{DAY}/nested/.h.csv",  # skipped at any depth
        f"{DAY}/nested/_i/j.csv",
        f"{DAY}.csv",
        f"{DAY}.jsonl",
        f"{DAY}.parquet",
        f"{DAY}.txt",  # not a day file
        "2026-11-02.csv",  # another day
        "2026-11-011.csv",
        f"{DAY}-old.csv",
    ]:
        put(fs, root, name, "run_id\n1\n")
    base = fs._strip_protocol(root)
    expected = [
        f"{DAY}.csv",
        f"{DAY}.jsonl",
        f"{DAY}.parquet",
        f"{DAY}/a.jsonl",
        f"{DAY}/b.csv",
        f"{DAY}/d.PARQUET",
        f"{DAY}/nested/c.ndjson",
    ]
    assert manifest_files(fs, root, DAY) == [f"{base}/{name}" for name in expected]


def test_a_day_without_manifests_is_an_empty_frame_of_the_right_types(store):
    fs, root = store
    put(fs, root, "2026-11-02.csv", "run_id\n1\n")
    assert manifest_files(fs, root, DAY) == []
    frame = load_day(fs, root, DAY)
    assert frame.empty
    assert tuple(frame.columns) == MANIFEST_COLUMNS
    assert frame["run_id"].dtype == "Int64"
    assert frame["line"].dtype == "int64"
    assert frame["requested_duration_s"].dtype == "float64"
    assert pa.Table.from_pandas(frame, preserve_index=False).cast(MANIFEST_SCHEMA).num_rows == 0


def test_unknown_file_in_the_day_folder_fails_naming_it(store):
    fs, root = store
    put(fs, root, f"{DAY}/a.csv", "run_id\n1\n")
    put(fs, root, f"{DAY}/notes.txt", "remember the milk")
    with pytest.raises(ManifestError, match=r"notes\.txt: unknown manifest format") as caught:
        load_day(fs, root, DAY)
    assert caught.value.line is None


@pytest.mark.parametrize("day", ["2026-13-01", "2026-11-1", "../2026-11-01", "yesterday"])
def test_a_bad_day_is_refused(local, day):
    fs, root = local
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        manifest_files(fs, root, day)


# --- validation -----------------------------------------------------------------------------

RUN_ID_CASES = [
    # (value in a JSON Lines record, expected run_id, expected error)
    (42, 42, None),
    ("43", 43, None),
    (" 44 ", 44, None),
    ("+45", 45, None),
    (7.0, 7, None),
    ("8.0", 8, None),
    (2**63 - 1, 2**63 - 1, None),
    ("12a", None, "run_id '12a' is not an integer"),
    (1.5, None, "run_id 1.5 is not an integer"),
    ("1.5", None, "run_id '1.5' is not an integer"),
    (True, None, "run_id true is not an integer"),
    ([3], None, "run_id [3] is not an integer"),
    ("٤٢", None, "run_id '٤٢' is not an integer"),  # Arabic-Indic digits are not an id
    (-5, -5, "run_id -5 is not positive"),
    ("-5", -5, "run_id -5 is not positive"),
    (0, 0, "run_id 0 is not positive"),
    (None, None, "missing run_id"),
    ("", None, "missing run_id"),
    ("   ", None, "missing run_id"),
    (2**63, None, "run_id 9223372036854775808 is too large (over 2**63 - 1)"),
]


def test_run_ids_are_validated_with_a_reason(store):
    fs, root = store
    records = [{"run_id": value} for value, _, _ in RUN_ID_CASES] + [{"prompt": "no id at all"}]
    put(fs, root, f"{DAY}.jsonl", jsonl(*records))
    frame = load_day(fs, root, DAY)
    assert frame["line"].tolist() == list(range(1, len(records) + 1))
    got = [
        (None if pd.isna(row.run_id) else row.run_id, None if pd.isna(row.error) else row.error)
        for row in frame.itertuples()
    ]
    assert got == [(run_id, error) for _, run_id, error in RUN_ID_CASES] + [
        (None, "missing run_id")
    ]
    assert frame["status"].tolist() == ["rejected" if e else "accepted" for _, e in got]


def test_duplicates_across_files_point_at_the_accepted_row(store):
    fs, root = store
    put(fs, root, f"{DAY}/a.csv", "run_id,prompt\n4,rain\n5,thunder\n-5,bad\n")
    put(fs, root, f"{DAY}/b.jsonl", jsonl({"run_id": 6}, {"run_id": "5", "prompt": "again"}))
    put(fs, root, f"{DAY}.csv", "run_id\n-5\n6\n")  # read first: its name sorts first
    frame = load_day(fs, root, DAY)
    first = frame[frame["manifest"].str.endswith("/a.csv")]["manifest"].iloc[0]
    day_file = frame[frame["manifest"].str.endswith(f"/{DAY}.csv")]["manifest"].iloc[0]
    rows = {(Path(r["manifest"]).name, r["line"]): r for r in frame.to_dict("records")}

    again = rows[("b.jsonl", 2)]
    assert again["status"] == "rejected"
    assert again["error"] == f"duplicate of run_id 5 at {first}:3"
    assert again["run_id"] == 5 and again["prompt"] == "again"  # a rejected row keeps its data
    assert rows[("b.jsonl", 1)]["error"] == f"duplicate of run_id 6 at {day_file}:3"
    # An invalid id claims nothing: both -5 rows are rejected for being negative.
    assert (
        rows[(f"{DAY}.csv", 2)]["error"]
        == rows[("a.csv", 4)]["error"]
        == ("run_id -5 is not positive")
    )
    accepted = frame[frame["status"] == "accepted"]["run_id"].tolist()
    assert sorted(accepted) == [4, 5, 6]


def test_carried_columns_and_extra(store):
    fs, root = store
    put(
        fs,
        root,
        f"{DAY}.csv",
        "zeta,run_id,prompt,audio_type,duration,task_id,project\n"
        "z1,1,pluie sur un toit en tôle 🌧,sound,4.5,t-1,foley\n"
        ",2,,,,,\n"
        "z3,3,lo-fi loop,music,abc,t-3,beds\n",
    )
    put(fs, root, f"{DAY}.jsonl", jsonl({"run_id": 4, "task_id": 17, "duration": 3, "n": None}))
    rows = {row["run_id"]: row for row in load_day(fs, root, DAY).to_dict("records")}

    one = rows[1]
    assert one["status"] == "accepted"
    assert (one["prompt"], one["audio_type"], one["requested_duration_s"], one["task_id"]) == (
        "pluie sur un toit en tôle 🌧",
        "sound",
        4.5,
        "t-1",
    )
    assert one["extra"] == '{"project": "foley", "zeta": "z1"}'  # sorted keys
    two = rows[2]  # empty CSV cells are "no value"
    assert two["status"] == "accepted"
    assert all(pd.isna(two[c]) for c in ("prompt", "requested_duration_s", "task_id", "extra"))
    assert rows[3]["status"] == "rejected"
    assert rows[3]["error"] == "duration 'abc' is not a number"
    four = rows[4]
    assert (four["task_id"], four["requested_duration_s"]) == ("17", 3.0)
    assert pd.isna(four["extra"])  # a null value is no value


def test_rows_name_their_manifest_as_a_usable_path(store):
    fs, root = store
    put(fs, root, f"{DAY}/batch.csv", "run_id\n1\n")
    (name,) = load_day(fs, root, DAY)["manifest"]
    if fs.protocol == "memory":
        assert name.startswith("memory://")
    else:
        assert Path(name).is_absolute()
    assert fs.cat(name) == b"run_id\n1\n"


# --- CSV ------------------------------------------------------------------------------------


def test_csv_lines_are_physical_lines(store):
    fs, root = store
    text = (
        "\ufeffrun_id,prompt\r\n"  # BOM and CRLF, as spreadsheet exports write them
        "1,rain\r\n"
        "\r\n"
        '2,"a prompt\r\nover two lines"\r\n'
        "3,wind\r\n"
    )
    put(fs, root, f"{DAY}.csv", text)
    frame = load_day(fs, root, DAY)
    assert frame["run_id"].tolist() == [1, 2, 3]
    assert frame["line"].tolist() == [2, 4, 6]
    assert frame["prompt"].tolist() == ["rain", "a prompt\r\nover two lines", "wind"]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("run_id,a,b\n1,2,3\n" + "4,5,6\n" * 4 + "7,8,9,10\n", 7, "expected 3 fields, saw 4"),
        ("run_id,a,b\n1,2\n", 2, "expected 3 fields, saw 2"),
        ('run_id,a\n1,"quoted"tail\n', 2, "malformed CSV"),
        ('run_id,a\n1,ok\n2,"never closed\n3,x\n', 4, "malformed CSV"),
        ("id,prompt\n1,x\n", 1, "no run_id or task_id column (columns: 'id', 'prompt')"),
        ("", 1, "no run_id or task_id column (columns: none)"),
        ("run_id,a,a\n1,2,3\n", 1, "column 'a' appears more than once"),
        ("run_id,,b\n1,2,3\n", 1, "a column has no name"),
        ("run_id,line\n1,2\n", 1, "column 'line' is reserved"),
    ],
)
def test_malformed_csv_names_file_and_line(store, text, line, reason):
    fs, root = store
    path = put(fs, root, f"{DAY}.csv", text)
    with pytest.raises(ManifestError) as caught:
        load_day(fs, root, DAY)
    error = caught.value
    assert (error.line, error.path) == (line, expected_name(fs, path))
    assert str(error).startswith(f"{error.path}, line {line}: {reason}")


def test_csv_error_message_matches_the_documented_form(local):
    fs, root = local
    put(fs, root, f"{DAY}.csv", "run_id,a,b\n" + "1,2,3\n" * 5 + "7,8,9,10\n")
    with pytest.raises(ManifestError) as caught:
        load_day(fs, root, DAY)
    assert str(caught.value) == f"{root}/{DAY}.csv, line 7: expected 3 fields, saw 4"


def test_undecodable_utf8_names_the_line(store):
    fs, root = store
    put(fs, root, f"{DAY}.csv", b"run_id,prompt\n1,caf\xc3\xa9\n2,caf\xe9\n")
    with pytest.raises(ManifestError, match=r"line 3: not valid UTF-8") as caught:
        load_day(fs, root, DAY)
    assert caught.value.line == 3


# --- JSON Lines -----------------------------------------------------------------------------


def test_jsonl_skips_blank_lines_and_counts_them(store):
    fs, root = store
    put(fs, root, f"{DAY}/a.ndjson", '\ufeff{"run_id": 1}\n\n   \n{"run_id": 2, "x": {"k": [1]}}')
    frame = load_day(fs, root, DAY)
    assert frame["line"].tolist() == [1, 4]
    assert frame["extra"].tolist()[1] == '{"x": {"k": [1]}}'


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('{"run_id": 1}\n{"run_id": 2,}\n', 2, "invalid JSON"),
        ('{"run_id": 1}\n\n[1, 2]\n', 3, "expected a JSON object, got list"),
        ('{"run_id": 1}\n"just text"\n', 2, "expected a JSON object, got str"),
        ('{"id": 1}\n{"id": 2}\n', None, "no record has a run_id or task_id key"),
        ('{"run_id": 1, "manifest": "x"}\n', 1, "key 'manifest' is reserved"),
        (b'{"run_id": 1}\n{"run_id": "\xff"}\n', 2, "not valid UTF-8"),
    ],
)
def test_malformed_jsonl_names_file_and_line(store, text, line, reason):
    fs, root = store
    path = put(fs, root, f"{DAY}.jsonl", text)
    with pytest.raises(ManifestError, match=reason) as caught:
        load_day(fs, root, DAY)
    assert (caught.value.path, caught.value.line) == (expected_name(fs, path), line)


def test_read_manifest_keeps_raw_values(store):
    fs, root = store
    path = put(fs, root, f"{DAY}.jsonl", jsonl({"run_id": 1}, {"run_id": True, "a": "x"}))
    frame = read_manifest(fs, path)
    assert list(frame.columns) == ["manifest", "line", "run_id", "a"]
    assert frame["run_id"].tolist() == [1, True]
    assert type(frame["run_id"].tolist()[0]) is int  # not 1.0, not coerced
    assert frame["a"].tolist() == [None, "x"]
    assert frame["manifest"].tolist() == [expected_name(fs, path)] * 2
    assert frame["line"].tolist() == [1, 2]


# --- Parquet --------------------------------------------------------------------------------


def test_parquet_rows_are_numbered_from_one(store):
    fs, root = store
    table = pa.table(
        {
            "run_id": pa.array([10, None, -1, 10], pa.int64()),
            "duration": [1.0, 2.0, 3.0, 4.0],
            "project": ["a", "b", None, "d"],
        }
    )
    path = put_parquet(fs, root, f"{DAY}/part-0.parquet", table)
    frame = load_day(fs, root, DAY)
    assert frame["line"].tolist() == [1, 2, 3, 4]
    assert frame["error"].tolist()[1:] == [
        "missing run_id",
        "run_id -1 is not positive",
        f"duplicate of run_id 10 at {expected_name(fs, path)}:1",
    ]
    assert frame["extra"].tolist()[0] == '{"project": "a"}'


def test_parquet_string_run_ids_are_parsed_like_csv(store):
    fs, root = store
    put_parquet(fs, root, f"{DAY}.parquet", pa.table({"run_id": ["1", "x"]}))
    frame = load_day(fs, root, DAY)
    assert frame["status"].tolist() == ["accepted", "rejected"]
    assert frame["error"].tolist()[1] == "run_id 'x' is not an integer"


def test_unreadable_or_wrong_parquet_fails_naming_the_file(store):
    fs, root = store
    path = put(fs, root, f"{DAY}/bad.parquet", b"this is not parquet at all")
    with pytest.raises(ManifestError, match="not a readable Parquet file") as caught:
        load_day(fs, root, DAY)
    assert caught.value.path == expected_name(fs, path)
    fs.rm(path)
    put_parquet(fs, root, f"{DAY}/ok.parquet", pa.table({"id": [1]}))
    with pytest.raises(ManifestError, match=r"ok\.parquet: no run_id or task_id column"):
        load_day(fs, root, DAY)


# --- the error type, speed, the demo data ---------------------------------------------------


def test_manifest_error_is_a_picklable_value_error():
    error = ManifestError("s3://b/m/2026-11-01.csv", 7, "expected 3 fields, saw 4")
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.line, copy.reason) == (error.path, error.line, error.reason)
    assert str(copy) == "s3://b/m/2026-11-01.csv, line 7: expected 3 fields, saw 4"
    assert str(ManifestError("x.parquet", None, "broken")) == "x.parquet: broken"


def test_tens_of_thousands_of_rows_across_formats_load_with_duplicates_rejected(local):
    fs, root = local
    header = "run_id,prompt,audio_type,duration,task_id,project\n"
    put(
        fs,
        root,
        f"{DAY}.csv",
        header + "".join(f"{i},rain,sound,3,t{i},p\n" for i in range(1, 30_001)),
    )
    put(
        fs,
        root,
        f"{DAY}.jsonl",
        jsonl(*({"run_id": i, "prompt": "x"} for i in range(29_001, 50_001))),
    )
    frame = load_day(fs, root, DAY)

    assert len(frame) == 51_000
    rejected = frame[frame["status"] == "rejected"]
    assert sorted(rejected["run_id"]) == list(range(29_001, 30_001))  # the JSONL repeats
    assert rejected["manifest"].str.endswith(".jsonl").all()


def load_generator():
    spec = importlib.util.spec_from_file_location(
        "make_demo", PROJECT / "data/make_demo_manifests.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_manifests_are_what_the_generator_writes(tmp_path):
    committed = PROJECT / "data/manifests"
    written = load_generator().write_demo_manifests(tmp_path)
    names = sorted(str(path.relative_to(tmp_path)) for path in written)
    assert names == sorted(
        str(p.relative_to(committed)) for p in committed.rglob("*") if p.is_file()
    )
    for name in names:
        if name.endswith(".parquet"):  # bytes carry the writer's version; compare content
            assert pq.read_table(tmp_path / name).equals(pq.read_table(committed / name))
        else:
            assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name
    assert (committed / "2026-11-03/part-0.parquet").stat().st_size < 20_000


@pytest.mark.parametrize("day", ["2026-11-01", "2026-11-03"])
def test_each_demo_day_has_every_outcome_and_bad_rows(day):
    frame = load_day(fsspec.filesystem("file"), str(PROJECT / "data/manifests"), day)
    accepted = frame[frame["status"] == "accepted"]["run_id"].astype(int)
    assert (frame["task_id"] == "task-" + frame["run_id"].astype("string")).sum() >= 100
    assert accepted.between(1000, 5000).all()
    # The sandbox decides outcomes from the id: another run type, failed, pending, ready.
    assert (accepted % 100 == 99).any() and (accepted % 50 == 13).any()
    assert (accepted % 10 == 7).any() and (accepted % 10 < 7).any()
    errors = frame["error"].dropna().tolist()
    assert any("is not an integer" in e or e == "missing run_id" for e in errors)
    assert any("is not positive" in e for e in errors)
    assert any(e.startswith("duplicate of run_id") for e in errors)
    assert frame["extra"].str.contains('"project"').all()
    assert set(frame["audio_type"]) == {"sound", "music"}


def test_the_task_id_demo_day_names_runs_by_task_only_and_rejects_absurd_ids():
    frame = load_day(fsspec.filesystem("file"), str(PROJECT / "data/manifests"), "2026-11-02")
    assert frame["run_id"].isna().all()
    accepted = frame[frame["status"] == "accepted"]
    assert len(accepted) > 100 and accepted["task_id"].str.startswith("task-").sum() > 100
    errors = frame.loc[frame["status"] == "rejected", "error"].tolist()
    assert sorted(e.split(" ")[0] + " " + e.split(" ")[1] for e in errors) == [
        "duplicate of",
        "task_id holds",
        "task_id is",
        "task_id of",
    ]
