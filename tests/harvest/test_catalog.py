"""The catalog contract: schema, validation, one Parquet file per day, hive-readable root."""

import io
import uuid

import duckdb
import fsspec
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from assets.harvest.catalog_rows import (
    parquet_bytes,
    partition_path,
    read_partition,
    to_table,
    validate_invariants,
)
from assets.harvest.catalog_schema import CATALOG_SCHEMA, STATUSES

from support.catalog_contract import CONTRACT

DAYS = ("2026-11-01", "2026-11-02", "2026-11-03")


def catalog_rows(day: str, first_id: int = 1000) -> pd.DataFrame:
    """A realistic day: two stored files, one pending, one failed, one rejected duplicate."""
    seen = pd.Timestamp(f"{day}T06:00:00", tz="UTC")
    ids = [first_id, first_id + 1, first_id + 7, first_id + 13, first_id]
    return pd.DataFrame(
        {
            "run_id": ids,
            "status": ["ok", "ok", "pending", "failed", "rejected"],
            "error": [
                None,
                None,
                "not ready yet",
                "API says the run failed: out of credits",
                f"duplicate of run_id {first_id} at s3://m/{day}.csv:2",
            ],
            "uri": [f"s3://audio/{day}/{i}.wav" for i in ids[:2]] + [None] * 3,
            "size_bytes": pd.array([44_144, 88_244, None, None, None], dtype="Int64"),
            "sha256": ["a" * 64, "b" * 64, None, None, None],
            "sample_rate": pd.array([44_100, 48_000, None, None, None], dtype="Int32"),
            "channels": pd.array([1, 2, None, None, None], dtype="Int32"),
            "frames": pd.array([22_050, 22_050, None, None, None], dtype="Int64"),
            "duration_s": [0.5, 0.459375, None, None, None],
            "subtype": ["PCM_16", "PCM_16", None, None, None],
            "source_format": ["WAV", "FLAC", None, None, None],
            "prompt": ["rain on a tin roof", "lo-fi loop", None, "wind", "rain again"],
            "audio_type": ["sound", "music", None, "sound", "sound"],
            "requested_duration_s": [3.0, 5.0, None, 2.0, 3.0],
            "task_id": ["t-1", "t-2", None, "t-4", "t-5"],
            "extra": ['{"project": "foley"}', None, None, None, None],
            "manifest": [f"s3://m/{day}.csv"] * 5,
            "attempts": pd.array([1, 2, 3, 1, 0], dtype="Int32"),
            "first_seen_at": [seen] * 5,
            "fetched_at": [seen + pd.Timedelta(minutes=5)] * 2 + [pd.NaT] * 3,
        }
    )


@pytest.fixture
def memory_root():
    fs = fsspec.filesystem("memory")
    root = f"memory://catalog-{uuid.uuid4().hex}"
    yield fs, root
    fs.rm(root, recursive=True)


def test_schema_is_the_design_table():
    assert [(field.name, field.type) for field in CATALOG_SCHEMA] == CONTRACT
    assert "date" not in CATALOG_SCHEMA.names  # the day lives in the hive path only
    assert STATUSES == ("ok", "pending", "failed", "rejected")


def test_partition_path():
    assert partition_path("s3://bucket/cat/", "2026-11-01") == (
        "s3://bucket/cat/sound_catalog/date=2026-11-01/part-0.parquet"
    )
    assert partition_path("/data/catalog", "2026-11-02") == (
        "/data/catalog/sound_catalog/date=2026-11-02/part-0.parquet"
    )
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        partition_path("/data/catalog", "2026-02-30")


# --- to_table -------------------------------------------------------------------------------


def test_to_table_fills_absent_optional_columns_with_nulls():
    table = to_table(pd.DataFrame({"run_id": [5, 6], "status": ["pending", "rejected"]}))
    assert table.schema == CATALOG_SCHEMA
    assert table["run_id"].to_pylist() == [5, 6]
    for name in CATALOG_SCHEMA.names[2:]:
        assert table[name].null_count == 2, name


def test_to_table_casts_every_column_to_the_contract():
    df = catalog_rows("2026-11-01")
    df["size_bytes"] = df["size_bytes"].astype("float64")  # NaN-holed ints, as pandas makes them
    table = to_table(df)
    assert table.schema == CATALOG_SCHEMA
    assert table["size_bytes"].to_pylist()[:3] == [44_144, 88_244, None]
    assert table["fetched_at"].to_pylist()[0] == pd.Timestamp("2026-11-01T06:05:00", tz="UTC")


def test_to_table_keeps_the_instant_of_other_time_zones_and_nanoseconds():
    stamp = pd.Timestamp("2026-11-01T07:00:00.123456789", tz="Europe/Paris")
    df = pd.DataFrame({"run_id": [1], "status": ["pending"], "first_seen_at": [stamp]})
    (value,) = to_table(df)["first_seen_at"].to_pylist()
    assert value == pd.Timestamp("2026-11-01T06:00:00.123456", tz="UTC")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"date": ["2026-11-01"]}, "unknown catalog columns: date"),
        ({"status": ["done"]}, "status must be one of ok, pending, failed, rejected; got 'done'"),
        ({"status": [None]}, "got None"),
        ({"sample_rate": [2**40]}, "catalog column sample_rate: cannot store int64 as int32"),
        ({"size_bytes": [1.5]}, "catalog column size_bytes"),
        ({"first_seen_at": [pd.Timestamp("2026-11-01")]}, "need time-zone-aware timestamps"),
        ({"fetched_at": ["2026-11-01T00:00:00Z"]}, "need time-zone-aware timestamps"),
    ],
)
def test_to_table_refuses_what_breaks_the_contract(change, message):
    df = pd.DataFrame({"run_id": [1], "status": ["ok"]}).assign(**change)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        to_table(df)


def test_to_table_needs_run_id_and_status():
    with pytest.raises(ValueError, match="need the columns: status"):
        to_table(pd.DataFrame({"run_id": [1]}))


# --- one file per day -----------------------------------------------------------------------


def test_parquet_bytes_round_trip_through_read_partition(memory_root):
    fs, root = memory_root
    df = catalog_rows("2026-11-01")
    data = parquet_bytes(df)
    metadata = pq.ParquetFile(io.BytesIO(data)).metadata
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert metadata.num_rows == len(df)
    assert read_partition(fs, root, "2026-11-01") is None

    fs.pipe(partition_path(root, "2026-11-01"), data)
    back = read_partition(fs, root, "2026-11-01")
    assert list(back.columns) == CATALOG_SCHEMA.names
    assert back["run_id"].dtype == "Int64" and back["attempts"].dtype == "Int32"
    assert to_table(back).equals(to_table(df))
    assert read_partition(fs, root, "2026-11-02") is None


def test_read_partition_refuses_a_file_outside_the_contract(memory_root):
    fs, root = memory_root
    sink = io.BytesIO()
    pq.write_table(pa.table({"run_id": [1], "status": ["ok"], "bucket": ["x"]}), sink)
    fs.pipe(partition_path(root, "2026-11-01"), sink.getvalue())
    with pytest.raises(ValueError, match="unknown catalog columns: bucket"):
        read_partition(fs, root, "2026-11-01")


def test_hive_root_reads_in_pyarrow_pandas_duckdb_and_polars(tmp_path):
    root = str(tmp_path)
    fs = fsspec.filesystem("file")
    for offset, day in enumerate(DAYS):
        path = partition_path(root, day)
        fs.makedirs(fs._parent(path), exist_ok=True)
        fs.pipe(path, parquet_bytes(catalog_rows(day, first_id=1000 * (offset + 1))))
        # Leftovers of writers that crashed: not Parquet at all, so reading one would fail.
        fs.pipe(f"{fs._parent(path)}/.part-0.parquet.tmp-xyz", b"half a file")
        fs.pipe(f"{fs._parent(path)}/_tmp", b"half a file")
    expected = {(day, 1000 * (k + 1) + d) for k, day in enumerate(DAYS) for d in (0, 1, 7, 13)}
    expected_rows = 5 * len(DAYS)
    catalog = f"{root}/sound_catalog"

    def check(frame: pd.DataFrame) -> None:
        days = frame["date"].astype(str).str[:10]
        assert len(frame) == expected_rows
        assert set(zip(days, frame["run_id"].astype(int), strict=True)) == expected
        assert set(frame.columns) == {*CATALOG_SCHEMA.names, "date"}

    check(ds.dataset(catalog, partitioning="hive").to_table().to_pandas())
    check(pd.read_parquet(catalog))
    glob = f"{catalog}/*/*.parquet"
    check(
        duckdb.sql(f"select * from read_parquet('{glob}', hive_partitioning=true)")
        .to_arrow_table()
        .to_pandas()
    )
    check(pl.scan_parquet(glob, hive_partitioning=True).collect().to_pandas())


# --- invariants -----------------------------------------------------------------------------


def test_a_sound_day_has_no_invariant_problems():
    assert validate_invariants(catalog_rows("2026-11-01")) == []
    assert validate_invariants(read_back(catalog_rows("2026-11-01"))) == []


def read_back(df: pd.DataFrame) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(parquet_bytes(df)))


def test_every_broken_invariant_is_reported_without_echoing_secrets():
    df = catalog_rows("2026-11-01")
    secret_url = "https://bucket.s3.amazonaws.com/a.wav?X-Amz-Signature=abc123"
    df.loc[1, "status"] = "pending"  # pending, but has no error and repeats no id
    df.loc[1, "error"] = None
    df.loc[2, "run_id"] = 1000  # a second live row for run 1000
    df.loc[2, "error"] = f"download failed: {secret_url}"
    df.loc[3, "error"] = "401 with x-api-key sk-live-123"
    df.loc[0, "sha256"] = None  # ok without a hash
    df.loc[4, "status"] = "done"  # no longer rejected, so a third live row for run 1000
    problems = validate_invariants(df)
    assert problems == [
        "status outside ok/pending/failed/rejected: run_id 1000 (1 row)",
        "run id (task id if none) on more than one row that is not rejected: run_id 1000 (3 rows)",
        "ok without sha256: run_id 1000 (1 row)",
        "not ok but no error: run_id 1001 (1 row)",
        "error holds a URL query or an API key: run_id 1000, run_id 1013 (2 rows)",
    ]
    assert not any("abc123" in p or "sk-live" in p for p in problems)


@pytest.mark.parametrize(
    ("error", "leaks"),
    [
        ("GET s3://bucket/key?versionId=3 failed", True),
        ("HTTP://HOST/x?a=1", True),
        ("X-Api-Key rejected", True),
        ("download of https://cdn.example.com/a.wav failed: 403", False),
        ("is this ready? no", False),
    ],
)
def test_secret_detection(error, leaks):
    df = pd.DataFrame({"run_id": [1], "status": ["failed"], "error": [error]})
    assert bool(validate_invariants(df)) is leaks


def test_rejected_rows_without_run_id_are_fine_but_live_ones_are_not():
    df = pd.DataFrame(
        {
            "run_id": pd.array([None, None], dtype="Int64"),
            "status": ["rejected", "failed"],
            "error": ["missing run_id", "gone"],
        }
    )
    assert validate_invariants(df) == ["not rejected but no run_id: run_id <none> (1 row)"]
